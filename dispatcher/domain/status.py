"""What the status page says, from what is open: each component's status and the page's overall
indicator, in Atlassian Statuspage's words (their public v2 API is what aggregators, exporters and
chat bots already read, so we use its vocabulary one to one).

Pure: no clock, no database. The rules:

- an open incident's impact sets the status of each component it names (an incident that names
  none affects every component): none -> operational, minor -> degraded_performance,
  major -> partial_outage, critical -> major_outage;
- an active maintenance puts the components it names (or every one) `under_maintenance`;
- a component takes the worst of what affects it; one nothing names is operational;
- the indicator is the worst open impact; with none above `none` and a maintenance active it is
  `maintenance`, "Service Under Maintenance".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

OPERATIONAL = "operational"
DEGRADED = "degraded_performance"
PARTIAL = "partial_outage"
MAJOR_OUTAGE = "major_outage"
UNDER_MAINTENANCE = "under_maintenance"

# worst last: a component shows the worst of what affects it
COMPONENT_STATUSES = (OPERATIONAL, UNDER_MAINTENANCE, DEGRADED, PARTIAL, MAJOR_OUTAGE)
IMPACTS = ("none", "minor", "major", "critical")
INDICATORS = (*IMPACTS, "maintenance")

IMPACT_TO_COMPONENT = {"none": OPERATIONAL, "minor": DEGRADED, "major": PARTIAL, "critical": MAJOR_OUTAGE}
DESCRIPTIONS = {
    "none": "All Systems Operational",
    "minor": "Minor Service Outage",
    "major": "Partial System Outage",
    "critical": "Major System Outage",
    "maintenance": "Service Under Maintenance",
}


@dataclass(frozen=True)
class ComponentSpec:
    """One configured component (DISPATCHER_STATUS_COMPONENTS)."""

    name: str
    description: str | None = None
    group: str | None = None
    order: int = 0


@dataclass(frozen=True)
class Affecting:
    """Something open that affects components: an unresolved incident (its impact) or an active
    maintenance (`maintenance=True`). Empty `components` means every component."""

    impact: str
    components: tuple[str, ...] = ()
    maintenance: bool = False


def default_components(public_components: Sequence[str], service_name: str) -> list[ComponentSpec]:
    """One component per name offered on the public pages, else one named after the service."""
    names = list(public_components) or [service_name]
    return [ComponentSpec(name=n, order=i) for i, n in enumerate(names)]


def _names(components: Iterable[str]) -> set[str]:
    return {c.strip().casefold() for c in components}


def worst(statuses: Iterable[str]) -> str:
    """The worst of component statuses (operational for none)."""
    return max(statuses, key=COMPONENT_STATUSES.index, default=OPERATIONAL)


def affects(item: Affecting, component: str) -> bool:
    return not item.components or component.strip().casefold() in _names(item.components)


def component_statuses(components: Iterable[str], open_items: Iterable[Affecting]) -> dict[str, str]:
    """Each component's status from what is open (names compare case-insensitively)."""
    items = list(open_items)
    result: dict[str, str] = {}
    for name in components:
        found = [
            UNDER_MAINTENANCE if item.maintenance else IMPACT_TO_COMPONENT.get(item.impact, OPERATIONAL)
            for item in items
            if affects(item, name)
        ]
        result[name] = worst(found)
    return result


def indicator(open_items: Iterable[Affecting]) -> str:
    """The page's indicator: the worst open incident impact, else `maintenance` while one is active."""
    items = list(open_items)
    impacts = [i.impact for i in items if not i.maintenance and i.impact in IMPACTS]
    top = max(impacts, key=IMPACTS.index, default="none")
    if top == "none" and any(i.maintenance for i in items):
        return "maintenance"
    return top


def overall(open_items: Iterable[Affecting]) -> dict[str, str]:
    """Statuspage's `status` object: {indicator, description}."""
    value = indicator(open_items)
    return {"indicator": value, "description": DESCRIPTIONS[value]}
