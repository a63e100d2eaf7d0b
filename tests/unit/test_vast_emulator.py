"""The vast.ai emulator's API, records only (no containers): every endpoint, shape and quirk of the reference."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest

from runner.testing.vast_emulator import Emulator
from runner.testing.vast_instances import Delays
from tests.conftest import wait_for
from tests.unit.vastemulatorcase import (  # noqa: F401  (api and emulator are fixtures, found by name)
    CLI_FILTERS,
    OFFER_FIELDS,
    RECORD_FIELDS,
    Api,
    api,
    emulator,
    offers,
    started,
)

# Auth and transport


def test_the_key_is_accepted_as_a_bearer_header_or_as_api_key_in_the_query(api: Api) -> None:
    assert "offers" in api.ok("POST", "/api/v0/bundles/", {})
    status, answer, _ = api.call("POST", "/api/v0/bundles/", {}, bearer=False)
    assert status == 200 and "offers" in answer


@pytest.mark.parametrize("key", [None, "wrong-key", ""])
def test_anything_else_is_401_with_the_exact_auth_error(api: Api, key: str | None) -> None:
    for bearer in (True, False):
        status, answer, headers = api.call("GET", "/api/v1/instances/", key=key, bearer=bearer)
        assert status == 401
        assert headers["Content-Type"] == "application/json"
        assert answer == {"success": False, "error": "auth_error", "msg": "Invalid user key"}


def test_the_control_api_needs_the_key_too(api: Api, emulator: Emulator) -> None:
    assert api.call("POST", "/_emulator/rate_limit", {"count": 5}, key="wrong")[0] == 401
    assert api.call("GET", "/_emulator/requests", key=None)[0] == 401
    assert api.ok("POST", "/api/v0/bundles/", {})  # no fault was set by the refused calls


def test_unknown_endpoints_and_bad_bodies_answer_json(api: Api) -> None:
    status, answer, headers = api.call("GET", "/api/v0/nowhere/")
    assert status == 404 and headers["Content-Type"] == "application/json" and answer["success"] is False
    status, answer, _ = api.call("POST", "/api/v0/bundles/", raw=b"{not json")
    assert status == 400 and answer["error"] == "invalid_args"


def test_requests_are_recorded_without_the_query_string(api: Api, emulator: Emulator) -> None:
    api.call("POST", "/api/v0/bundles/", {}, bearer=False)
    api.call("GET", "/api/v1/instances/", key="wrong")
    assert [tuple(r) for r in emulator.requests] == [
        ("POST", "/api/v0/bundles/", 200),
        ("GET", "/api/v1/instances/", 401),
    ]
    assert api.ok("GET", "/_emulator/requests")["requests"][:2] == [
        {"method": "POST", "path": "/api/v0/bundles/", "status": 200},
        {"method": "GET", "path": "/api/v1/instances/", "status": 401},
    ]


# Offer search


def test_default_offers_are_three_realistic_rtx_5090s(api: Api) -> None:
    found = api.ok("POST", "/api/v0/bundles/", CLI_FILTERS)["offers"]
    assert len(found) == 3
    for offer in found:
        assert offer.keys() >= OFFER_FIELDS
        assert (offer["gpu_name"], offer["num_gpus"], offer["gpu_ram"], offer["disk_space"]) == (
            "RTX 5090",
            1,
            32607,
            100,
        )
        assert 0.42 <= offer["dph_total"] <= 0.60 and 0.96 <= offer["reliability"] <= 0.99
        assert offer["cuda_max_good"] in (12.8, 12.9) and offer["direct_port_count"] > 0 and offer["verified"]


@pytest.mark.parametrize(("condition", "expected"), [
    ({"dph_total": {"eq": 0.42}}, {20_114_301}),
    ({"dph_total": {"neq": 0.42}}, {20_114_302, 20_114_303}),
    ({"dph_total": {"gt": 0.51}}, {20_114_303}),
    ({"dph_total": {"gte": 0.51}}, {20_114_302, 20_114_303}),
    ({"reliability": {"lt": 0.97}}, {20_114_303}),
    ({"reliability": {"lte": 0.97}}, {20_114_302, 20_114_303}),
    ({"geolocation": {"in": ["Texas, US", "Quebec, CA"]}}, {20_114_302, 20_114_303}),
    ({"geolocation": {"notin": ["Texas, US"]}}, {20_114_301, 20_114_303}),
    ({"gpu_name": {"eq": "RTX 5090"}, "cuda_max_good": {"gte": 12.9}}, {20_114_301}),
    ({"direct_port_count": {"gte": 1}, "reliability": {"gte": 0.9}, "inet_down": {"gt": 128}},
     {20_114_301, 20_114_302, 20_114_303}),
    ({"gpu_name": {"eq": "H100 SXM"}}, set()),
])  # fmt: skip
def test_search_filters_with_every_operator(api: Api, condition: dict[str, Any], expected: set[int]) -> None:
    found = api.ok("POST", "/api/v0/bundles/", {**CLI_FILTERS, **condition})["offers"]
    assert {offer["id"] for offer in found} == expected


def test_search_orders_and_limits(api: Api) -> None:
    by_price = api.ok("POST", "/api/v0/bundles/", {"order": [["dph_total", "asc"]], "type": "on-demand"})["offers"]
    assert [o["dph_total"] for o in by_price] == [0.42, 0.51, 0.60]
    by_score = api.ok("POST", "/api/v0/bundles/", {"order": [["score", "desc"]], "limit": 2, "type": "ondemand"})[
        "offers"
    ]
    assert [o["score"] for o in by_score] == sorted((o["score"] for o in by_price), reverse=True)[:2]


@pytest.mark.parametrize("body", [{"type": "spot"}, {"dph_total": {"about": 1}}, {"geolocation": {"in": "US"}},
                                  {"order": "score"}, {"order": [["score", "up"]]}, {"limit": "2"}])  # fmt: skip
def test_bad_queries_are_400(api: Api, body: dict[str, Any]) -> None:
    status, answer, _ = api.call("POST", "/api/v0/bundles/", body)
    assert status == 400 and answer["error"] == "invalid_args"


def test_verified_rentable_and_external_are_honoured() -> None:
    mixed = offers(4)
    mixed[1]["verified"], mixed[2]["rentable"], mixed[3]["external"] = False, False, True
    emulator = started(mixed)
    try:
        found = Api(emulator.url).ok("POST", "/api/v0/bundles/", CLI_FILTERS)["offers"]
        assert [offer["id"] for offer in found] == [1000]
    finally:
        emulator.stop()


def test_a_rented_offer_is_left_out_when_rented_eq_false(api: Api) -> None:
    api.create(20_114_301)
    visible = api.ok("POST", "/api/v0/bundles/", CLI_FILTERS)["offers"]
    assert {offer["id"] for offer in visible} == {20_114_302, 20_114_303}
    everything = {offer["id"]: offer for offer in api.ok("POST", "/api/v0/bundles/", {})["offers"]}
    assert everything[20_114_301]["rented"] is True and everything[20_114_302]["rented"] is False


# Create


def test_create_answers_the_contract_at_once(api: Api) -> None:
    answer = api.ok("PUT", "/api/v0/asks/20114301/", {"client_id": "me", "image": "ghcr.io/acme/train:cu128",
                                                      "disk": 40, "label": "runner:abc",
                                                      "runtype": "ssh_direc ssh_proxy",
                                                      "env": {"-p 6006:6006": "1", "RUNNER_JOB": "abc"},
                                                      "price": None, "cancel_unavail": True})  # fmt: skip
    assert answer["success"] is True and isinstance(answer["new_contract"], int) and answer["instance_api_key"]
    record = api.show(answer["new_contract"])
    assert record is not None and record["actual_status"] is None and record["ports"] is None


def test_renting_the_same_offer_twice_fails_the_second_time(api: Api) -> None:
    api.create(20_114_302)
    status, answer, _ = api.call("PUT", "/api/v0/asks/20114302/", {"image": "img:1"})
    assert status == 404
    assert answer == {"success": False, "error": "no_such_ask", "msg": "Instance type by id 20114302 is not available."}


def test_an_unknown_offer_is_404_no_such_ask(api: Api) -> None:
    status, answer, _ = api.call("PUT", "/api/v0/asks/77/", {"image": "img:1"})
    assert status == 404 and answer["error"] == "no_such_ask"


def test_destroy_then_rent_the_same_offer_again(api: Api) -> None:
    first = api.create(20_114_303)
    assert api.ok("DELETE", f"/api/v0/instances/{first}/") == {"success": True}
    second = api.create(20_114_303)
    assert second != first and api.show(second) is not None


def test_env_must_be_a_json_object(api: Api) -> None:
    status, answer, _ = api.call("PUT", "/api/v0/asks/20114301/", {"image": "img:1", "env": "-p 6006:6006 -e A=1"})
    assert status == 400
    assert answer["success"] is False and answer["msg"] == "invalid env type: env must be a dict"


@pytest.mark.parametrize("bad", [{"disk": 7}, {"disk": "40"}, {"label": "x" * 257}, {"onstart": "x" * 4097},
                                 {"runtype": "ssh_tunnel"}, {"image": ""}, {"env": {"-p sixty": "1"}}])  # fmt: skip
def test_invalid_create_bodies_are_400(api: Api, bad: dict[str, Any]) -> None:
    status, answer, _ = api.call("PUT", "/api/v0/asks/20114301/", {"image": "img:1", **bad})
    assert status == 400 and answer["error"] == "invalid_args"
    assert api.ok("POST", "/api/v0/bundles/", CLI_FILTERS)["offers"][0]["id"] == 20_114_301  # still free


def test_a_bid_below_min_bid_is_invalid_price(api: Api) -> None:
    status, answer, _ = api.call("PUT", "/api/v0/asks/20114301/", {"image": "img:1", "price": 0.01})
    assert status == 400 and answer["error"] == "invalid_price"
    bid = api.show(api.create(20_114_301, price=0.3))
    assert bid and bid["dph_total"] == 0.3


@pytest.mark.parametrize("runtype", ["ssh", "ssh_proxy", "ssh_direc", "ssh_direct", "ssh_direc ssh_proxy",
                                     "jupyter_direc ssh_direc ssh_proxy", "jupyter_direct ssh_direct",
                                     "args"])  # fmt: skip
def test_every_runtype_spelling_is_accepted(api: Api, runtype: str) -> None:
    record = api.show(api.create(20_114_301, runtype=runtype))
    assert record and record["image_runtype"] == runtype


# Instance records


def test_status_moves_from_null_through_created_and_loading_to_running() -> None:
    emulator = started(offers(1), Delays(scheduling=0.3, created=0.3, loading=0.3))
    api = Api(emulator.url)
    try:
        instance_id, seen = api.create(1000), []

        def running() -> bool:
            record = api.show(instance_id)
            assert record is not None
            if not seen or seen[-1][0] != record["actual_status"]:
                seen.append((record["actual_status"], record["ports"]))
            return record["actual_status"] == "running"

        wait_for(running, 10, interval=0.02, what="running")
        assert [status for status, _ in seen] == [None, "created", "loading", "running"]
        assert all(ports is None for _, ports in seen[:-1])  # ports stay null until running
    finally:
        emulator.stop()


def test_a_running_record_has_the_reference_fields_and_quirks(api: Api) -> None:
    env = {"-p 6006:6006": "1", "RUNNER_JOB": "abc"}
    instance_id = api.create(20_114_302, label="runner:abc", runtype="ssh_direc ssh_proxy", env=env)
    record = api.wait_status(instance_id, "running")
    assert record.keys() >= RECORD_FIELDS and "image" not in record
    assert record["public_ipaddr"] == "127.0.0.1 "  # the trailing space clients must strip
    assert (record["ssh_host"], record["image_uuid"], record["label"]) == ("127.0.0.1", "img:1", "runner:abc")
    assert record["extra_env"] == [["-p 6006:6006", "1"], ["RUNNER_JOB", "abc"]]
    assert set(record["ports"]) == {"22/tcp", "6006/tcp"}
    ssh = record["ports"]["22/tcp"][0]
    assert (
        ssh["HostIp"] == "0.0.0.0" and isinstance(ssh["HostPort"], str) and int(ssh["HostPort"]) == record["ssh_port"]
    )
    assert record["direct_port_start"] <= int(ssh["HostPort"]) <= record["direct_port_end"]
    assert (record["intended_status"], record["cur_state"]) == ("running", "running")
    assert (record["gpu_name"], record["num_gpus"], record["gpu_ram"], record["dph_total"]) == (
        "RTX 5090",
        1,
        32607,
        0.51,
    )
    assert record["gpu_util"] is None and record["gpu_temp"] is None
    assert isinstance(record["start_date"], float) and record["end_date"] > record["start_date"]


def test_a_proxy_only_instance_has_no_direct_ports(api: Api) -> None:
    record = api.wait_status(api.create(20_114_301, runtype="ssh_proxy"), "running")
    assert record["ports"] == {} and (record["direct_port_start"], record["direct_port_end"]) == (-1, -1)
    assert isinstance(record["ssh_port"], int)


def test_show_of_an_unknown_instance_is_null(api: Api) -> None:
    assert api.ok("GET", "/api/v0/instances/424242/?owner=me") == {"instances": None}


def test_the_v0_list_answers_deprecated_endpoint(api: Api) -> None:
    api.create(20_114_301)
    answer = api.ok("GET", "/api/v0/instances/?owner=me")
    assert answer["success"] is False and answer["error"] == "deprecated_endpoint"
    assert "Use /api/v1/instances/ instead." in answer["msg"] and "instances" not in answer


def test_the_v1_list_pages_60_instances_25_at_a_time() -> None:
    emulator = started(offers(60))
    api = Api(emulator.url)
    try:
        created = [api.create(1000 + n, label=f"job-{n % 2}") for n in range(60)]
        pages, token = [], None
        while True:
            query = "?select_filters=%7B%7D&order_by=" + urllib.request.quote(json.dumps([{"col": "id", "dir": "asc"}]))
            answer = api.ok("GET", f"/api/v1/instances/{query}&limit=25" + (f"&after_token={token}" if token else ""))
            assert answer["success"] is True and answer["total_instances"] == 60
            pages.append([record["id"] for record in answer["instances"]])
            token = answer["next_token"]
            if not token:
                break
        assert [len(page) for page in pages] == [25, 25, 10]
        assert [instance for page in pages for instance in page] == sorted(created)
        assert len(api.ok("GET", "/api/v1/instances/?limit=100")["instances"]) == 25  # 25 at most
        filters = urllib.request.quote(json.dumps({"label": {"eq": "job-1"}}))
        order = urllib.request.quote(json.dumps([{"col": "id", "dir": "desc"}]))
        odd = api.ok("GET", f"/api/v1/instances/?select_filters={filters}&order_by={order}&limit=25")
        assert odd["instances_found"] == 30 and odd["next_token"]
        assert [r["id"] for r in odd["instances"]] == sorted(created[1::2], reverse=True)[:25]
        assert api.call("GET", "/api/v1/instances/?after_token=garbage")[0] == 400
    finally:
        emulator.stop()


def test_stop_start_and_label(api: Api) -> None:
    instance_id = api.create(20_114_301, runtype="ssh_direc ssh_proxy")
    api.wait_status(instance_id, "running")
    assert api.ok("PUT", f"/api/v0/instances/{instance_id}/", {"state": "stopped"}) == {"success": True}
    stopped = api.wait_status(instance_id, "stopped")
    assert (stopped["intended_status"], stopped["cur_state"], stopped["ports"]) == ("stopped", "stopped", None)
    api.ok("PUT", f"/api/v0/instances/{instance_id}/", {"state": "running"})
    assert api.wait_status(instance_id, "running")["intended_status"] == "running"
    assert api.ok("PUT", f"/api/v0/instances/{instance_id}/", {"label": "y" * 1024})["success"] is True
    assert api.show(instance_id)["label"] == "y" * 1024  # type: ignore[index]
    assert api.call("PUT", f"/api/v0/instances/{instance_id}/", {"label": "y" * 1025})[0] == 400
    assert api.call("PUT", f"/api/v0/instances/{instance_id}/", {"state": "paused"})[0] == 400
    assert api.call("PUT", "/api/v0/instances/424242/", {"state": "stopped"})[0] == 404


def test_a_destroyed_instance_is_gone_from_show_and_list(api: Api) -> None:
    keep, drop = api.create(20_114_301), api.create(20_114_302)
    assert api.ok("DELETE", f"/api/v0/instances/{drop}/") == {"success": True}
    assert api.show(drop) is None
    assert [record["id"] for record in api.ok("GET", "/api/v1/instances/")["instances"]] == [keep]
    assert api.call("DELETE", f"/api/v0/instances/{drop}/")[0] == 404


def test_attach_ssh_key(api: Api) -> None:
    instance_id = api.create(20_114_301)
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBfT0vAbHy7i7S6dHdSh/3Md7xeF+ZP2Sx0w0nY0Rk2v test"
    assert api.ok("POST", f"/api/v0/instances/{instance_id}/ssh/", {"ssh_key": key}) == {"success": True}
    assert api.call("POST", f"/api/v0/instances/{instance_id}/ssh/", {"ssh_key": "hunter2"})[0] == 400
    assert api.call("POST", "/api/v0/instances/424242/ssh/", {"ssh_key": key})[0] == 404
    assert api.ok("POST", "/api/v0/ssh/", {"ssh_key": key})["success"] is True
    assert [entry["public_key"] for entry in api.ok("GET", "/api/v0/ssh/")["keys"]] == [key]


def test_request_logs_gives_a_result_url_to_poll(api: Api) -> None:
    instance_id = api.create(20_114_301)
    api.wait_status(instance_id, "running")
    answer = api.ok("PUT", f"/api/v0/instances/request_logs/{instance_id}/", {"tail": "1000"})
    assert answer["success"] is True and answer["result_url"].startswith(api.url)
    path = answer["result_url"].removeprefix(api.url)
    log = wait_for(lambda: (lambda s, text, _: text if s == 200 else None)(*api.call("GET", path, key=None)), 5,
                   what="the log upload")  # fmt: skip
    assert "actual_status running" in log


def test_creates_from_many_threads_rent_each_offer_once() -> None:
    emulator = started(offers(10))
    api, results = Api(emulator.url), []

    def rent(offer_id: int) -> None:
        results.append((offer_id, api.call("PUT", f"/api/v0/asks/{offer_id}/", {"image": "img:1"})))

    try:
        threads = [threading.Thread(target=rent, args=(1000 + n % 10,)) for n in range(40)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        won = [(offer, answer["new_contract"]) for offer, (status, answer, _) in results if status == 200]
        assert sorted(offer for offer, _ in won) == [1000 + n for n in range(10)]
        assert len({contract for _, contract in won}) == 10
    finally:
        emulator.stop()
