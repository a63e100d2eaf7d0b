"""The vast.ai client against the vast.ai emulator in this process (records only, no containers)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.base.errors import RunnerError, SpecError
from runner.jobs.spec import Resources
from runner.provision.vast import api as vastapi
from runner.provision.vast.api import (
    OfferGone,
    VastAuthError,
    VastClient,
    VastError,
    VastUnavailable,
    api_url,
    load_api_key,
    offer_query,
)  # fmt: skip
from runner.testing.vast_emulator import Emulator, RecordedRequest, default_offers

API_KEY = "vk-3f9c1e7a55d04b2b9a1e0c8d7f6a5b4c"
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOv1Tq9QkqkOGuHn0V2cRBvHYzBTSp0mCTc0Z+fFTxwr runner@test"
INSTANCE_LIST = "/api/v1/instances/"


def offer(offer_id: int, gpu: str = "RTX 5090", price: float = 0.4, **fields: Any) -> dict[str, Any]:
    return {**default_offers()[0], "id": offer_id, "machine_id": offer_id + 7, "gpu_name": gpu, "dph_total": price,
            **fields}  # fmt: skip


def create_body(label: str = "runner:job1") -> dict[str, Any]:
    return {"client_id": "me", "image": "ghcr.io/acme/train:cu128", "disk": 40, "label": label,
            "onstart": "touch ~/.no_auto_tmux", "runtype": "ssh_direc ssh_proxy", "env": {"-p 6006:6006": "1"},
            "price": None, "cancel_unavail": True}  # fmt: skip


@pytest.fixture(autouse=True)
def quick_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same jittered exponential backoff, in milliseconds: the tests count tries, not seconds."""
    monkeypatch.setattr(vastapi, "FIRST_WAIT_SECONDS", 0.005)
    monkeypatch.setattr(vastapi, "LONGEST_WAIT_SECONDS", 0.05)


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    offers = [offer(100 + n, price=round(0.30 + 0.01 * n, 2)) for n in range(60)] + [
        offer(900, gpu="RTX 4090", price=0.25),
        offer(901, price=0.35, verified=False),
    ]
    with Emulator(offers, api_key=API_KEY, containers=False) as running:
        yield running


@pytest.fixture
def client(emulator: Emulator) -> Iterator[VastClient]:
    with VastClient(API_KEY, emulator.url, timeout=5, retry_seconds=10) as vast:
        yield vast


def raised(kind: type[BaseException], call: Callable[[], object]) -> BaseException:
    """The error `call` raises; its message, repr and causes must never carry the API key."""
    with pytest.raises(kind) as caught:
        call()
    error: BaseException | None = caught.value
    while error is not None:
        assert API_KEY not in str(error) and API_KEY not in repr(error) and API_KEY not in repr(error.args)
        error = error.__cause__ or error.__context__
    return caught.value


def requests_to(emulator: Emulator, method: str, path_start: str) -> list[int]:
    return [r.status for r in emulator.requests if r.method == method and r.path.startswith(path_start)]


def answer_instead(
    emulator: Emulator, method: str, status: int, body: Any, times: int = 1, after_acting: bool = False
) -> None:
    """The next `times` requests with `method` get `status` and `body` instead of the emulator's answer, as
    from a gateway in front of vast.ai; after_acting: the emulator does the work first (the answer is lost)."""
    real_handle, left = emulator.handle, [times]

    def handle(verb: str, target: str, authorization: str | None, raw_body: bytes) -> tuple[int, str, Any]:
        if verb != method or left[0] <= 0:
            return real_handle(verb, target, authorization, raw_body)
        left[0] -= 1
        if after_acting:
            real_handle(verb, target, authorization, raw_body)
            emulator.requests[-1] = emulator.requests[-1]._replace(status=status)
        else:
            emulator.requests.append(RecordedRequest(verb, target.split("?")[0], status))
        return status, "application/json", body

    emulator.handle = handle  # type: ignore[method-assign]


def test_offer_query_asks_for_careful_offers_cheapest_first() -> None:
    query = offer_query(Resources(gpu="RTX 5090", min_vram_gb=32, max_price=0.6, disk_gb=80), image_kind="cu128")
    assert query["gpu_name"] == {"eq": "RTX 5090"} and query["num_gpus"] == {"eq": 1}
    assert query["gpu_ram"] == {"gte": 32000}  # MB: a 32 GB card's 32607 MB passes
    assert query["dph_total"] == {"lte": 0.6} and query["disk_space"] == {"gte": 80}
    assert query["cuda_max_good"] == {"gte": 12.8}
    assert query["verified"] == {"eq": True} and query["external"] == {"eq": False}
    assert query["rentable"] == {"eq": True} and query["rented"] == {"eq": False}
    assert query["direct_port_count"] == {"gte": 1} and query["reliability"] == {"gte": 0.95}
    assert query["order"] == [["dph_total", "asc"]] and query["type"] == "on-demand" and query["limit"] == 20
    interruptible = offer_query(Resources(interruptible=True), image_kind=None, limit=5)
    assert interruptible["type"] == "bid" and interruptible["limit"] == 5
    assert "cuda_max_good" not in interruptible and "gpu_name" not in interruptible


def test_api_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VAST_URL", raising=False)
    assert api_url() == "https://console.vast.ai"
    monkeypatch.setenv("VAST_URL", "http://127.0.0.1:8080/")
    assert api_url() == "http://127.0.0.1:8080"


def test_search_offers_returns_matching_offers_in_price_order(client: VastClient) -> None:
    found = client.search_offers(offer_query(Resources(gpu="RTX 5090", max_price=0.35), image_kind=None))
    prices = [item["dph_total"] for item in found]
    assert prices == sorted(prices) and prices[0] == 0.30 and max(prices) <= 0.35
    assert {item["gpu_name"] for item in found} == {"RTX 5090"}
    assert 901 not in {item["id"] for item in found}  # not verified


def test_create_show_label_attach_and_destroy(client: VastClient, emulator: Emulator) -> None:
    instance_id = client.create_instance(100, create_body("runner:abc"))
    shown = client.instance(instance_id)
    assert shown is not None and shown["id"] == instance_id and shown["label"] == "runner:abc"
    assert shown["public_ipaddr"] == "127.0.0.1"  # the emulator, like vast, adds a trailing space
    client.set_label(instance_id, "runner:renamed")
    assert client.instance(instance_id)["label"] == "runner:renamed"  # type: ignore[index]
    client.attach_ssh_key(instance_id, PUBLIC_KEY)
    assert requests_to(emulator, "POST", f"/api/v0/instances/{instance_id}/ssh/") == [200]
    client.destroy(instance_id)
    assert client.instance(instance_id) is None
    client.destroy(instance_id)  # already gone: done, not an error
    assert requests_to(emulator, "DELETE", "/api/v0/instances/") == [200, 404]


def test_create_on_a_rented_offer_is_offer_gone(client: VastClient) -> None:
    client.create_instance(100, create_body("runner:first"))
    error = raised(OfferGone, lambda: client.create_instance(100, create_body("runner:second")))
    assert error.status == 404 and error.code == "no_such_ask"  # type: ignore[attr-defined]
    assert str(error).startswith(
        "vast.ai: Instance type by id 100 is not available."
    ) and "(PUT /api/v0/asks/100/)" in str(error)


def test_invalid_create_body_is_an_error_with_vasts_words(client: VastClient) -> None:
    error = raised(VastError, lambda: client.create_instance(100, {**create_body(), "env": "-p 6006:6006"}))
    assert error.status == 400 and error.code == "invalid_args" and "env must be a dict" in str(error)  # type: ignore[attr-defined]
    assert error.exit_code == 1  # type: ignore[attr-defined]


def test_sixty_instances_come_back_over_three_pages_never_from_v0(client: VastClient, emulator: Emulator) -> None:
    created = [client.create_instance(100 + n, create_body(f"runner:job{n}")) for n in range(60)]
    listed = client.instances()
    assert sorted(item["id"] for item in listed) == sorted(created)
    assert all(item["public_ipaddr"] == "127.0.0.1" for item in listed)
    assert requests_to(emulator, "GET", INSTANCE_LIST) == [200, 200, 200]  # 25 + 25 + 10
    assert not [r for r in emulator.requests if r.method == "GET" and r.path.rstrip("/") == "/api/v0/instances"]


def test_a_storm_of_429s_during_create_rents_one_instance(client: VastClient, emulator: Emulator) -> None:
    emulator.faults.rate_limit(5)  # the three body shapes in turn: text, {"detail"}, {"success": false}
    instance_id = client.create_instance(100, create_body())
    assert list(emulator.instances) == [instance_id]
    assert requests_to(emulator, "PUT", "/api/v0/asks/") == [429, 429, 429, 429, 429, 200]
    assert not requests_to(emulator, "GET", INSTANCE_LIST)  # a 429 acted on nothing: no need to look


def test_502_then_success(client: VastClient, emulator: Emulator) -> None:
    answer_instead(emulator, "POST", 502, {"detail": "Bad Gateway"})
    found = client.search_offers({"gpu_name": {"eq": "RTX 4090"}})
    assert [item["id"] for item in found] == [900]
    assert requests_to(emulator, "POST", "/api/v0/bundles/") == [502, 200]


def test_a_502_before_acting_is_looked_up_then_retried(client: VastClient, emulator: Emulator) -> None:
    answer_instead(emulator, "PUT", 502, {"detail": "Bad Gateway"})
    instance_id = client.create_instance(100, create_body("runner:once"))
    assert list(emulator.instances) == [instance_id]
    assert requests_to(emulator, "PUT", "/api/v0/asks/") == [502, 200]
    assert requests_to(emulator, "GET", INSTANCE_LIST) == [200]  # looked for it before renting again


def test_a_502_after_acting_returns_the_instance_made_without_renting_another(
    client: VastClient, emulator: Emulator
) -> None:
    answer_instead(emulator, "PUT", 502, {"detail": "Bad Gateway"}, after_acting=True)
    instance_id = client.create_instance(100, create_body("runner:once"))
    assert list(emulator.instances) == [instance_id]
    assert requests_to(emulator, "PUT", "/api/v0/asks/") == [502]


def test_a_lost_answer_to_create_finds_the_instance_by_label(emulator: Emulator) -> None:
    real_handle = emulator.handle

    def slow_create(verb: str, target: str, authorization: str | None, raw_body: bytes) -> tuple[int, str, Any]:
        reply = real_handle(verb, target, authorization, raw_body)
        if verb == "PUT" and "/asks/" in target:
            time.sleep(1.0)  # done, but the answer comes after the client's read timeout
        return reply

    emulator.handle = slow_create  # type: ignore[method-assign]
    with VastClient(API_KEY, emulator.url, timeout=0.3, retry_seconds=10) as vast:
        instance_id = vast.create_instance(100, create_body("runner:slow"))
    assert list(emulator.instances) == [instance_id]
    assert requests_to(emulator, "PUT", "/api/v0/asks/") == [200]  # one create, never a second


def test_a_create_without_label_is_not_retried_after_vast_may_have_acted(
    client: VastClient, emulator: Emulator
) -> None:
    answer_instead(emulator, "PUT", 502, {"detail": "Bad Gateway"}, after_acting=True)
    body = {key: value for key, value in create_body().items() if key != "label"}
    error = raised(VastError, lambda: client.create_instance(100, body))
    assert "may have gone through" in str(error)
    assert requests_to(emulator, "PUT", "/api/v0/asks/") == [502] and len(emulator.instances) == 1


def test_retries_exhausted_is_vast_unavailable(emulator: Emulator) -> None:
    emulator.faults.rate_limit(10_000)
    with VastClient(API_KEY, emulator.url, retry_seconds=0.5) as vast:
        started = time.monotonic()
        error = raised(VastUnavailable, lambda: vast.search_offers({}))
    assert time.monotonic() - started < 3
    assert error.exit_code == 3 and error.status == 429 and "(POST /api/v0/bundles/)" in str(error)  # type: ignore[attr-defined]
    assert isinstance(error, RunnerError) and len(requests_to(emulator, "POST", "/api/v0/bundles/")) > 1


def test_no_connection_is_vast_unavailable() -> None:
    with Emulator([], api_key=API_KEY, containers=False) as stopped:
        url = stopped.url
    with VastClient(API_KEY, url, retry_seconds=0.3) as vast:
        error = raised(VastUnavailable, vast.instances)
    assert "cannot connect" in str(error) and error.exit_code == 3  # type: ignore[attr-defined]


def test_success_false_on_200_is_an_error_never_an_empty_list(client: VastClient, emulator: Emulator) -> None:
    deprecated = {"success": False, "error": "deprecated_endpoint", "msg": "Use /api/v1/instances/ instead."}
    answer_instead(emulator, "GET", 200, deprecated)
    error = raised(VastError, client.instances)
    assert error.code == "deprecated_endpoint" and error.status == 200  # type: ignore[attr-defined]
    assert str(error) == f"vast.ai: Use /api/v1/instances/ instead. (GET {INSTANCE_LIST})"


def test_a_wrong_key_is_vast_auth_error_exit_2(emulator: Emulator) -> None:
    with VastClient("not-the-key", emulator.url) as vast:
        error = raised(VastAuthError, lambda: vast.search_offers({}))
    assert error.exit_code == 2 and error.status == 401 and error.code == "auth_error"  # type: ignore[attr-defined]
    assert str(error) == "vast.ai: Invalid user key (POST /api/v0/bundles/)"
    assert requests_to(emulator, "POST", "/api/v0/bundles/") == [401]  # a bad key is not retried


def test_destroy_answered_500_twice_then_gone(client: VastClient, emulator: Emulator) -> None:
    instance_id = client.create_instance(100, create_body())
    emulator.faults.fail_destroy(2)
    client.destroy(instance_id)
    assert requests_to(emulator, "DELETE", f"/api/v0/instances/{instance_id}/") == [500, 500, 200]
    assert emulator.instances == {}


def test_errors_from_every_method_never_carry_the_key(client: VastClient, emulator: Emulator) -> None:
    answer_instead(emulator, "POST", 400, {"success": False, "error": "invalid_args", "msg": f"bad key {API_KEY}"})
    echoed = raised(VastError, lambda: client.search_offers({}))
    assert "[api key]" in str(echoed)  # scrubbed even where a server echoes it
    raised(VastError, lambda: client.attach_ssh_key(1, PUBLIC_KEY))
    raised(VastError, lambda: client.set_label(1, "x"))
    emulator.faults.fail_destroy(1000)
    instance_id = client.create_instance(100, create_body())
    with VastClient(API_KEY, emulator.url, retry_seconds=0.2) as impatient:
        raised(VastUnavailable, lambda: impatient.destroy(instance_id))
    assert API_KEY not in repr(client) and API_KEY not in str(vars(client))


@pytest.fixture
def key_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv("VAST_API_KEY", raising=False)
    monkeypatch.setenv("RUNNER_CONFIG_DIR", str(tmp_path))
    return tmp_path / "vast_api_key"


def test_the_key_comes_from_the_environment_first(key_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAST_API_KEY", API_KEY)
    assert load_api_key() == API_KEY


def test_the_key_file_is_read_when_private(key_env: Path) -> None:
    key_env.write_text(API_KEY + "\n")
    key_env.chmod(0o600)
    assert load_api_key() == API_KEY


def test_a_key_file_others_can_read_is_refused(key_env: Path) -> None:
    key_env.write_text(API_KEY + "\n")
    key_env.chmod(0o644)
    error = raised(SpecError, load_api_key)
    assert error.exit_code == 2 and str(key_env) in str(error) and f"chmod 600 {key_env}" in str(error)  # type: ignore[attr-defined]


def test_no_key_at_all_says_where_to_put_one(key_env: Path) -> None:
    error = raised(SpecError, VastClient)
    assert "VAST_API_KEY" in str(error) and str(key_env) in str(error)
    assert not os.path.exists(key_env)
