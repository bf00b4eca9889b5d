"""Tasks enqueued only after the transaction that made their rows visible has committed.

A worker never looks for rows it cannot see yet, and a transaction that rolls back enqueues
nothing. The queue a task goes to is chosen here: a broadcast's planning, gate checks and the
first tier's batches go to the urgent queue, which an urgent lane consumes alone (broker.LANE_QUEUES);
a first-tier batch that comes back later goes to its channel's queue, still at urgent priority.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from channels.base import ChannelName
from dispatcher.engine.broker import CONTROL_QUEUE, PRIORITY_LATER, PRIORITY_URGENT, URGENT_QUEUE, app

URGENT_TIER = 0  # the first tier (admins): its batches jump every queue


@dataclass
class Outbox:
    """Tasks to enqueue once the current transaction has committed."""

    items: list[tuple[str, list[Any], str, float, int | None]] = field(default_factory=list)

    def add(
        self, task: str, args: list[Any], queue: str, countdown: float = 0.0, priority: int | None = None
    ) -> None:
        """`priority`: None lets the router decide from the task and queue (broker.route_priority)."""
        self.items.append((task, args, queue, countdown, priority))

    def send_batch(
        self,
        broadcast_id: int,
        channel: ChannelName | str,
        ids: list[int],
        tier: int,
        countdown: float = 0.0,
        slots: dict[int, list[float]] | None = None,
    ) -> None:
        """A batch of one channel's deliveries, on the queue `batch_queue` picks, at its tier's
        priority; `slots`: rate-limit slots kept for some of its rows (engine/ratelimit.py)."""
        channel = ChannelName(channel)
        args: list[Any] = [broadcast_id, channel.value, ids]
        if slots:
            args.append({str(i): slot for i, slot in slots.items()})
        queue = batch_queue(channel, tier, countdown)
        self.add("dispatcher.send_batch", args, queue, countdown, batch_priority(tier))

    def plan_broadcast(self, broadcast_id: int) -> None:
        """The broadcast's first task (engine/planner.py run_broadcast): it plans the first tier."""
        self.add("dispatcher.run_broadcast", [broadcast_id], URGENT_QUEUE)

    def plan_tier(self, broadcast_id: int, tier: int, after: int | None = None) -> None:
        """A later tier's next page of planning: later work, on the control queue (never the lane)."""
        args = [broadcast_id, tier] if after is None else [broadcast_id, tier, after]
        self.add("dispatcher.plan_tier", args, CONTROL_QUEUE)

    def finish_tier(self, broadcast_id: int, tier: int) -> None:
        """The first tier's tail (engine/planner.py finish_tier): urgent, behind its batches."""
        self.add("dispatcher.finish_tier", [broadcast_id, tier], URGENT_QUEUE)

    def check_gate(self, broadcast_id: int, tier: int, countdown: float = 0.0) -> None:
        """A tier's gate check (engine/tier_gates.py check_gate): it may release the next tier."""
        self.add("dispatcher.check_gate", [broadcast_id, tier], URGENT_QUEUE, countdown)

    def flush(self) -> None:
        for task, args, queue, countdown, priority in self.items:
            extra = {} if priority is None else {"priority": priority}
            app.send_task(task, args=args, queue=queue, countdown=countdown or None, **extra)
        self.items.clear()

    def hand_off(self) -> bool:
        """`flush` for callers that already committed and must not fail for it (an API answer): a
        broker that is down is logged, and the sweeper queues what this could not (see
        sweeper.requeue_unqueued). Returns whether everything reached the broker."""
        try:
            self.flush()
        except Exception as exc:  # whatever the broker raised, the records are committed
            logging.getLogger(__name__).warning(
                "broker unreachable after commit; the sweeper will queue %d task(s): %s: %s",
                len(self.items),
                type(exc).__name__,
                exc,
            )
            self.items.clear()
            return False
        return True


def batch_queue(channel: ChannelName, tier: int, countdown: float = 0.0) -> str:
    """The first tier's batches go to the urgent queue, which the lane takes alone: admins never
    wait behind another broadcast's customers. One that comes back later (a handed-back row, a
    retry, a breaker's wait) goes to its channel's queue, still first in line (`batch_priority`):
    the lane is kept for work that goes out at once. The rest go to their channel's queue."""
    return URGENT_QUEUE if tier == URGENT_TIER and not countdown else channel.value


def batch_priority(tier: int) -> int:
    """The first tier's batches are urgent on whatever queue they wait; later tiers' are not."""
    return PRIORITY_URGENT if tier == URGENT_TIER else PRIORITY_LATER
