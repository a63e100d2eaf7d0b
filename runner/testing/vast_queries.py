"""The query side of the vast.ai emulator: its offers and how requests ask for records.

The default offers, vast's filter dicts (`field: {operator: value}`) and order keys, the v1 list's
page tokens, and the checks vast makes on request bodies and query strings, each answering the
`ApiError` vast answers. No state here: `vast_emulator` holds the offers and instances and calls these.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from typing import Any

from runner.testing.vast_instances import ApiError

PAGE_MAX = 25
SEARCH_TYPES = {"on-demand", "ondemand", "bid", "reserved"}
OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b, "neq": lambda a, b: a != b, "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b, "in": lambda a, b: a in b, "notin": lambda a, b: a not in b,
}  # fmt: skip


def default_offers() -> list[dict[str, Any]]:
    """Three RTX 5090 offers as vast lists them, cheapest first."""
    rows = [(20_114_301, 41_203, 0.42, 0.99, 12.9, "Sweden, SE", 903.2, 812.4, 24, 231.7),
            (20_114_302, 38_771, 0.51, 0.97, 12.8, "Texas, US", 1530.8, 1204.3, 12, 198.2),
            (20_114_303, 40_190, 0.60, 0.96, 12.8, "Quebec, CA", 640.5, 590.1, 6, 160.9)]  # fmt: skip
    return [{"id": id_, "machine_id": machine, "gpu_name": "RTX 5090", "num_gpus": 1, "gpu_ram": 32607,
             "gpu_arch": "nvidia", "compute_cap": 1200, "cuda_max_good": cuda, "dph_total": price,
             "min_bid": round(price * 0.55, 3), "reliability": reliability, "reliability2": reliability,
             "inet_down": down, "inet_up": up, "disk_space": 100.0, "direct_port_count": ports,
             "geolocation": where, "score": score, "cpu_cores_effective": 16.0, "cpu_ram": 64215,
             "verified": True, "rentable": True, "external": False, "rented": False}
            for id_, machine, price, reliability, cuda, where, down, up, ports, score in rows]  # fmt: skip


def matches(item: dict[str, Any], filters: dict[str, Any]) -> bool:
    """vast's filter dicts: field -> {operator: value}; a value of another type than the field's never matches."""
    for name, condition in filters.items():
        if not isinstance(condition, dict):
            raise ApiError(400, "invalid_args", f"filter on {name} must be an object of operator: value")
        for operator, wanted in condition.items():
            if operator not in OPERATORS:
                raise ApiError(400, "invalid_args", f"unknown operator {operator!r} on {name}")
            if operator in ("in", "notin") and not isinstance(wanted, list):
                raise ApiError(400, "invalid_args", f"{operator} on {name} takes a list")
            try:
                if not OPERATORS[operator](item.get(name), wanted):
                    return False
            except TypeError:
                return False
    return True


def ordered(items: list[dict[str, Any]], keys: list[tuple[str, str]]) -> list[dict[str, Any]]:
    for name, direction in reversed(keys):  # stable sorts, last key first
        if direction not in ("asc", "desc"):
            raise ApiError(400, "invalid_args", f"order direction must be asc or desc, not {direction!r}")
        present = [item for item in items if item.get(name) is not None]
        present.sort(key=lambda item: item[name], reverse=direction == "desc")
        items = present + [item for item in items if item.get(name) is None]  # nulls last, either way
    return items


def search_terms(body: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]], int | None]:
    """An offer search body's filters, order keys and limit, checked."""
    filters = {name: value for name, value in body.items() if name not in ("order", "type", "limit")}
    if body.get("type", "on-demand") not in SEARCH_TYPES:
        raise ApiError(400, "invalid_args", f"type must be one of {sorted(SEARCH_TYPES)}")
    keys, limit = order_keys(body.get("order")), body.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ApiError(400, "invalid_args", "limit must be a positive integer")
    return filters, keys, limit


def list_terms(query: dict[str, str]) -> tuple[dict[str, Any], list[tuple[str, str]], int, int]:
    """The v1 instance list's query string: its filters, order keys, page size and offset, checked."""
    filters = json_param(query, "select_filters", {})
    keys = order_keys(json_param(query, "order_by", [{"col": "id", "dir": "asc"}]))
    if not isinstance(filters, dict) or not query.get("limit", "1").isdigit():
        raise ApiError(400, "invalid_args", "select_filters must be an object and limit a number")
    limit, offset = max(1, min(PAGE_MAX, int(query.get("limit", PAGE_MAX)))), decode_token(query.get("after_token"))
    return filters, keys, limit, offset


def page(found: list[dict[str, Any]], offset: int, limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """The records of one page, and the token of the next page (None on the last)."""
    next_token = encode_token(offset + limit) if offset + limit < len(found) else None
    return found[offset : offset + limit], next_token


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise ApiError(400, "invalid_args", "the request body is not JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_args", "the request body must be a JSON object")
    return body


def json_param(query: dict[str, str], name: str, default: Any) -> Any:
    try:
        return json.loads(query[name]) if name in query else default
    except ValueError:
        raise ApiError(400, "invalid_args", f"{name} is not JSON") from None


def order_keys(value: Any) -> list[tuple[str, str]]:
    """[["score", "desc"]] (search) or [{"col": "id", "dir": "asc"}] (the v1 list)."""
    keys = []
    for key in value or []:
        pair = [key.get("col"), key.get("dir", "asc")] if isinstance(key, dict) else key
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(part, str) for part in pair)):
            raise ApiError(400, "invalid_args", "order must list [field, asc|desc] pairs")
        keys.append((pair[0], pair[1]))
    return keys


def encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def decode_token(token: str | None) -> int:
    if not token:
        return 0
    try:
        return int(json.loads(base64.urlsafe_b64decode(token.encode()))["offset"])
    except (ValueError, KeyError, TypeError):
        raise ApiError(400, "invalid_args", "after_token is not a token this endpoint gave") from None


def public_key(body: dict[str, Any]) -> str:
    key = body.get("ssh_key")
    if not isinstance(key, str) or not re.match(r"(ssh-|ecdsa-|sk-)\S+ \S+", key.strip()):
        raise ApiError(400, "invalid_args", "ssh_key must be an OpenSSH public key")
    return key.strip()
