"""Small readers the agent's modules share. Standard library only, Python >= 3.7."""

import json
import os

# The agent's protocol: in every answer it prints and every document it writes for the controller
# (status.json, telemetry.jsonl, hash caches). Raised when their meaning changes, so a controller that
# meets a job's agent of another protocol knows, says so, and installs its own.
PROTOCOL = 1
TAIL_BYTES = 64 * 1024  # a log's last progress line is in its tail: reading it must not cost the whole log


def read_json(path):
    """The document in path, or None when it is missing or not JSON (a reader never raises)."""
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def read_int(path):
    try:
        with open(path) as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None


def read_tail(path, size=TAIL_BYTES):
    """The last size bytes of path, decoded (bad bytes replaced); None when it cannot be read."""
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - size))
            return log.read().decode("utf-8", "replace")
    except OSError:
        return None
