"""The events a job's `notify:` may name: plain names, importable without pydantic (observe and the
notification delivery read them on every `runner status`; the spec itself is validated only where read)."""

from __future__ import annotations

from typing import Literal, get_args

# The job's states that are news, as the user names them (`running` is `started`).
STATE_EVENTS = ("started", "succeeded", "failed", "lost", "stopped")
# The host monitor's alert kinds (runner/hostside/alerts.py and monitor.py): each is an event of its own.
ALERT_EVENTS = (
    "oom",
    "nan_loss",
    "traceback",
    "exited",
    "stalled",
    "gpu_hot",
    "disk_full",
    "gpu_unsupported",
    "corrupt_labels",
)
# Rented jobs: the budget reached, the time limit reached, the instance destroyed, the keeper waiting on vast.ai.
RENTED_EVENTS = ("max_cost", "max_duration", "instance_destroyed", "api_unreachable")
NotifyEvent = Literal[
    "started",
    "succeeded",
    "failed",
    "lost",
    "stopped",
    "oom",
    "nan_loss",
    "traceback",
    "exited",
    "stalled",
    "gpu_hot",
    "disk_full",
    "gpu_unsupported",
    "corrupt_labels",
    "max_cost",
    "max_duration",
    "instance_destroyed",
    "api_unreachable",
]
ALL_EVENTS: tuple[NotifyEvent, ...] = get_args(NotifyEvent)
assert ALL_EVENTS == STATE_EVENTS + ALERT_EVENTS + RENTED_EVENTS
