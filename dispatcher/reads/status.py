"""The public status page's read: the snapshot (dispatcher/engine/snapshot.py, where the
incidents floor can rebuild it too), under the name the page, the feeds and the JSON import."""

from __future__ import annotations

from dispatcher.engine.snapshot import (
    Snapshot,
    SnapshotUnavailable,
    build_snapshot,
    current_snapshot,
    held_snapshot,
    rebuild_snapshot,
)

__all__ = [
    "Snapshot",
    "SnapshotUnavailable",
    "build_snapshot",
    "current_snapshot",
    "held_snapshot",
    "rebuild_snapshot",
]
