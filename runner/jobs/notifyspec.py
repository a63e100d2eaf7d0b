"""`notify:` in the job file (and in the config dir's settings.yaml, the default for jobs without one):
where notifications go (apprise URLs) and which events are sent.

A URL carries its service's token, so it is a secret: no error message here repeats it (only its
index), it is left out of every dump of the spec but the store's (see JobSpec.stored_document), and
`repr` hides it.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field

from runner.base.yamlfile import StrictModel
from runner.jobs.notifyevents import ALL_EVENTS, NotifyEvent

SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$")


def _one_or_many(value: object) -> object:
    return [value] if isinstance(value, str) else value


def _apprise_url(url: str) -> str:
    # The message never holds the URL: it is a secret, and this line reaches the terminal.
    if not SCHEME.match(url):
        raise ValueError("is not an apprise URL (scheme://..., e.g. ntfy://topic, json://host/path)")
    return url


NotifyUrl = Annotated[str, AfterValidator(_apprise_url)]


class Notify(StrictModel):
    """Notifications through apprise: each event is sent once, by whichever runner process sees it first."""

    urls: Annotated[list[NotifyUrl], BeforeValidator(_one_or_many)] = Field(
        min_length=1,
        repr=False,
        description="apprise URLs (ntfy://, slack://, discord://, tgram://, mailto://, json://, ...): secrets,"
        " never shown",
    )
    events: list[NotifyEvent] = Field(
        default_factory=lambda: list(ALL_EVENTS),  # every event
        min_length=1,
        description="what to send (default all): started, succeeded, failed, lost, stopped, each alert kind (oom,"
        " nan_loss, traceback, exited, stalled, gpu_hot, disk_full, gpu_unsupported, corrupt_labels), max_cost,"
        " max_duration, instance_destroyed, api_unreachable",
    )
