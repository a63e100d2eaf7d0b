"""`runner offers`, the installed command against the vast.ai emulator (records only, no containers)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from runner.testing.vast_emulator import Emulator, default_offers
from tests.conftest import Runner

API_KEY = "vk-e2e-7d1f0b6c2a9e4f58b3c1d0e9a8f7b6c5"


def offer(offer_id: int, gpu: str, price: float, where: str) -> dict[str, Any]:
    return {**default_offers()[0], "id": offer_id, "gpu_name": gpu, "dph_total": price, "geolocation": where}


OFFERS = [
    offer(501, "RTX 5090", 0.48, "Texas, US"),
    offer(502, "RTX 5090", 0.31, "Sweden, SE"),
    offer(503, "RTX 5090", 0.72, "Quebec, CA"),  # too dear
    offer(504, "RTX 4090", 0.22, "Oregon, US"),  # another GPU
    offer(505, "RTX 5090", 0.40, "Ohio, US"),
]


@pytest.fixture
def vast(runner: Runner) -> Iterator[Emulator]:
    with Emulator(OFFERS, api_key=API_KEY, containers=False) as emulator:
        runner.env.update(VAST_URL=emulator.url, VAST_API_KEY=API_KEY)
        yield emulator


def assert_no_key(*texts: str) -> None:
    for text in texts:
        assert API_KEY not in text


def test_json_lists_only_matching_offers_cheapest_first(runner: Runner, vast: Emulator) -> None:
    result = runner.run("offers", "--gpu", "RTX 5090", "--max-price", "0.5", "--json", check=True)
    document = json.loads(result.stdout)  # stdout is the one document
    assert [item["id"] for item in document["offers"]] == [502, 505, 501]
    assert document["query"]["gpu_name"] == {"eq": "RTX 5090"} and document["query"]["dph_total"] == {"lte": 0.5}
    assert [(r.method, r.path, r.status) for r in vast.requests] == [("POST", "/api/v0/bundles/", 200)]
    assert_no_key(result.stdout, result.stderr)


def test_the_table_shows_the_offers(runner: Runner, vast: Emulator) -> None:
    result = runner.run("offers", "--gpu", "RTX 5090", "--max-price", "0.5", check=True)
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "ID",
        "GPU",
        "N",
        "VRAM",
        "$/H",
        "RELIABILITY",
        "CUDA",
        "DISK",
        "NET",
        "DOWN",
        "LOCATION",
    ]
    assert [line.split()[0] for line in lines[1:]] == ["502", "505", "501"]
    assert "RTX 5090" in lines[1] and "0.310" in lines[1] and "Sweden, SE" in lines[1] and "32 GB" in lines[1]
    assert "RTX 4090" not in result.stdout and "Quebec" not in result.stdout
    assert "3 offers" in result.stderr
    assert_no_key(result.stdout, result.stderr)


def test_a_wrong_key_exits_2_without_showing_it(runner: Runner, vast: Emulator) -> None:
    wrong = "vk-wrong-0123456789abcdef0123456789ab"
    runner.env["VAST_API_KEY"] = wrong
    result = runner.run("offers", "--gpu", "RTX 5090")
    assert result.returncode == 2
    assert result.stderr.strip() == "runner: vast.ai: Invalid user key (POST /api/v0/bundles/)"
    assert result.stdout == "" and wrong not in result.stderr
    assert_no_key(result.stdout, result.stderr)


def test_no_key_at_all_exits_2_saying_where_to_put_one(runner: Runner, vast: Emulator) -> None:
    del runner.env["VAST_API_KEY"]
    result = runner.run("offers", "--json")
    assert result.returncode == 2 and result.stdout == ""
    assert "VAST_API_KEY" in result.stderr and "vast_api_key" in result.stderr
    assert not vast.requests
