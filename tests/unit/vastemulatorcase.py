"""What the tests of the vast.ai emulator's API share: a bare HTTP client written against the reference, the
emulator as a fixture (records only, no containers), offers to rent."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from runner.testing.vast_emulator import Emulator, default_offers
from runner.testing.vast_instances import Delays
from tests.conftest import wait_for

KEY = "emulator-test-key-5f2c"
FAST = Delays(scheduling=0.05, created=0.05, loading=0.05)
OFFER_FIELDS = {"id", "machine_id", "gpu_name", "num_gpus", "gpu_ram", "cuda_max_good", "dph_total", "min_bid",
                "reliability", "reliability2", "inet_down", "inet_up", "disk_space", "direct_port_count",
                "geolocation", "score", "gpu_arch"}  # fmt: skip
RECORD_FIELDS = {"id", "machine_id", "label", "actual_status", "intended_status", "cur_state", "status_msg",
                 "image_uuid", "image_runtype", "extra_env", "ssh_host", "ssh_port", "public_ipaddr", "ports",
                 "direct_port_start", "direct_port_end", "gpu_name", "num_gpus", "gpu_ram", "gpu_util", "gpu_temp",
                 "dph_total", "start_date", "end_date", "uptime_mins"}  # fmt: skip
CLI_FILTERS = {"verified": {"eq": True}, "external": {"eq": False}, "rentable": {"eq": True}, "rented": {"eq": False}}


class Api:
    """A bare HTTP client, as one written against the reference would be."""

    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, method: str, path: str, body: Any = None, key: str | None = KEY, bearer: bool = True,
             raw: bytes | None = None) -> tuple[int, Any, dict[str, str]]:  # fmt: skip
        headers = {"Content-Type": "application/json"}
        if key is not None and bearer:
            headers["Authorization"] = f"Bearer {key}"
        elif key is not None:
            path += ("&" if "?" in path else "?") + f"api_key={key}"
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, decode(answer), dict(answer.headers)
        except urllib.error.HTTPError as error:
            return error.code, decode(error), dict(error.headers)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, answer, headers = self.call(method, path, body)
        assert status == 200, (status, answer)
        assert headers["Content-Type"] == "application/json"
        return answer

    def create(self, offer_id: int, **body: Any) -> int:
        answer = self.ok("PUT", f"/api/v0/asks/{offer_id}/", {"client_id": "me", "image": "img:1", "disk": 16, **body})
        return answer["new_contract"]

    def show(self, instance_id: int) -> dict[str, Any] | None:
        return self.ok("GET", f"/api/v0/instances/{instance_id}/?owner=me")["instances"]

    def wait_status(self, instance_id: int, status: str, timeout: float = 10) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            record = self.show(instance_id)
            return record if record and record["actual_status"] == status else None

        return wait_for(reached, timeout, interval=0.02, what=f"instance {instance_id} {status}")


def decode(answer: Any) -> Any:
    text = answer.read().decode()
    return json.loads(text) if answer.headers["Content-Type"] == "application/json" else text


def offers(count: int) -> list[dict[str, Any]]:
    template = default_offers()[0]
    return [
        {**template, "id": 1000 + n, "machine_id": 500 + n, "dph_total": round(0.30 + n / 100, 2)} for n in range(count)
    ]


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    running = Emulator(None, KEY, containers=False, delays=FAST)
    running.start()
    yield running
    running.stop()


@pytest.fixture
def api(emulator: Emulator) -> Api:
    return Api(emulator.url)


def started(emulator_offers: list[dict[str, Any]], delays: Delays = FAST) -> Emulator:
    running = Emulator(emulator_offers, KEY, containers=False, delays=delays)
    running.start()
    return running
