"""The faults the vast.ai emulator injects (emulator.faults, or the control API under /_emulator/):
slow loading, a start that fails, a 429 storm, an instance killed, one cut off, destroys answered 500."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

JSON = "application/json"
RATE_LIMITED = [  # the three 429 bodies seen from vast, served in turn
    ("text/plain", "API requests too frequent"),
    (JSON, {"detail": "API requests too frequent endpoint threshold=4.5"}),
    (JSON, {"success": False, "error": "rate_limit_exceeded", "msg": "API requests too frequent"}),
]


class Faults:
    """Faults to inject; the control API under /_emulator/ sets the same ones."""

    def __init__(self, lock: threading.RLock, kill: Callable[[int], None], cut_off: Callable[[int], None]) -> None:
        self._lock, self._kill, self._cut_off = lock, kill, cut_off
        self._loading_s, self._fail_starts, self._rate_limited, self._failed_destroys, self._shape = 0.0, 0, 0, 0, 0

    def slow_loading(self, seconds: float) -> None:
        """Every instance created from now on stays `loading` this much longer (0 ends it)."""
        with self._lock:
            self._loading_s = float(seconds)

    def fail_next_start(self) -> None:
        """The next created instance ends `created`, status_msg "OCI runtime create failed: ...", no container."""
        with self._lock:
            self._fail_starts += 1

    def rate_limit(self, count: int) -> None:
        """The next `count` API requests, whatever the endpoint, get 429 (the three body shapes in turn)."""
        with self._lock:
            self._rate_limited += count

    def kill_instance(self, instance_id: int) -> None:
        """The instance's machine dies: docker kill of its container, actual_status `exited` on return.
        An instance still starting is killed once its start is done. KeyError for an unknown id."""
        self._kill(instance_id)

    def cut_off_instance(self, instance_id: int) -> None:
        """The instance's machine drops off the network: its container leaves its network, so its ports
        stop answering, while the API goes on calling it running (what vast shows of a host whose
        link died). KeyError for an unknown id or one without a container yet."""
        self._cut_off(instance_id)

    def fail_destroy(self, count: int) -> None:
        """The next `count` DELETEs answer 500 and destroy nothing."""
        with self._lock:
            self._failed_destroys += count

    def take_start(self) -> tuple[float, bool]:
        with self._lock:
            failing, self._fail_starts = self._fail_starts > 0, max(0, self._fail_starts - 1)
            return self._loading_s, failing

    def take_rate_limit(self) -> tuple[str, Any] | None:
        with self._lock:
            if self._rate_limited <= 0:
                return None
            self._rate_limited, self._shape = self._rate_limited - 1, self._shape + 1
            return RATE_LIMITED[(self._shape - 1) % len(RATE_LIMITED)]

    def take_failed_destroy(self) -> bool:
        with self._lock:
            failing, self._failed_destroys = self._failed_destroys > 0, max(0, self._failed_destroys - 1)
            return failing
