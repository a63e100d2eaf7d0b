"""The vast.ai REST API, called directly with httpx: the only module that speaks HTTP to vast.ai.

About ten endpoints are needed (shared/reference/vast-api.md); the `vastai` package is heavy, changes its
API often and its older versions swallowed errors. Here every `"success": false` is an error, whatever
the HTTP status: a swallowed error reads as "no instances" while instances keep billing.

    RunnerError
    ├── VastError             exit 1   vast.ai refused a request (.status, .code: the body's "error")
    │   ├── VastAuthError     exit 2   401/403: the API key is wrong (bad input, not a passing failure)
    │   └── OfferGone         exit 1   the offer was rented or withdrawn before the create (404 no_such_ask, 410)
    └── HostUnreachable
        └── VastUnavailable   exit 3   429s, 502/503/504 or no connection for longer than retry_seconds
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_random_exponential

from runner.base.errors import HostUnreachable, RunnerError
from runner.provision.vast.key import load_api_key

if TYPE_CHECKING:
    from runner.jobs.spec import Resources

__all__ = [
    "OfferGone", "VastAuthError", "VastClient", "VastError", "VastUnavailable", "api_url", "load_api_key",
    "offer_query",
]  # fmt: skip

DEFAULT_URL = "https://console.vast.ai"
PAGE_SIZE = 25  # the v1 list's largest page
RETRIED_STATUSES = frozenset({429, 502, 503, 504})  # what the official CLI retries too
# Jittered exponential waits between tries; read at each call so a test can shorten them.
FIRST_WAIT_SECONDS = 0.5
LONGEST_WAIT_SECONDS = 8.0
MB_PER_GB = 1000  # vast.ai's own CLI converts GB to gpu_ram MB by 1000: a "32 GB" RTX 5090 has 32607 MB


class VastError(RunnerError):
    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class VastAuthError(VastError):
    exit_code = 2


class OfferGone(VastError):
    pass


class VastUnavailable(HostUnreachable):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _Secret(str):
    """The API key, as a str whose repr hides it: a traceback with locals or a debug print shows no key."""

    def __repr__(self) -> str:
        return "'[api key]'"


class _Transient(Exception):
    """A failure worth another try. may_have_acted: the request reached vast.ai, which may have done it."""

    def __init__(self, reason: str, may_have_acted: bool, status: int | None = None) -> None:
        super().__init__(reason)
        self.may_have_acted = may_have_acted
        self.status = status


def api_url() -> str:
    return (os.environ.get("VAST_URL") or DEFAULT_URL).rstrip("/")


class VastClient:
    """One HTTP connection pool to vast.ai; `with VastClient() as vast: vast.search_offers(...)`."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 30.0,
        retry_seconds: float = 90.0,
    ) -> None:
        key = load_api_key() if api_key is None else api_key
        self.base_url = (base_url or api_url()).rstrip("/")
        self.retry_seconds = retry_seconds
        self.answers = 0  # answers from vast.ai (errors included, not 429s/5xx): whether it is reachable
        self._api_key = _Secret(key)  # scrubbed from any text a server echoes back
        # The key travels in a header only: URLs end up in logs and messages, headers do not.
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout,
            headers={"Authorization": f"Bearer {key}", "Accept": "application/json"},
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"VastClient({self.base_url!r})"

    def __enter__(self) -> VastClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def search_offers(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        document = self._call("POST", "/api/v0/bundles/", body=query)
        return _list_field(document, "offers", "POST /api/v0/bundles/")

    def create_instance(self, offer_id: int, body: dict[str, Any]) -> int:
        """Rent the offer; the new instance's id. A create is not idempotent: a blind retry after vast.ai
        may have acted rents a second machine, billed and unseen. So only a 429 (refused before acting) or
        no connection at all is retried as it is; after a 5xx or a lost answer the instances are looked up
        by the body's label first, and an instance found there is the answer."""
        path = f"/api/v0/asks/{offer_id}/"
        label = body.get("label")

        def attempt() -> dict[str, Any]:
            try:
                return self._attempt("PUT", path, body, None, retry_500=False)
            except (_Transient, VastError) as error:
                if not _may_have_created(error):
                    raise
                existing = self._created_meanwhile(label, path, error)
                if existing is None:
                    raise  # nothing was created: a _Transient is tried again, a plain 500 is reported
                return existing

        document = self._retrying(attempt, "PUT", path)
        contract = document.get("new_contract")
        if not isinstance(contract, int):
            raise VastError(f"vast.ai: the create answer names no instance (PUT {path})", code=document.get("error"))
        return contract

    def _created_meanwhile(self, label: str | None, path: str, error: Exception) -> dict[str, Any] | None:
        """The instance a failed create made after all, found by its label; None: it made none (yet)."""
        if not label:
            reason = str(error).removeprefix("vast.ai: ")
            raise VastError(f"vast.ai: {reason}; the create may have gone through and has no label to look it up"
                            f" by: check the account's instances before trying again (PUT {path})")  # fmt: skip
        found = [instance["id"] for instance in self.instances() if instance.get("label") == label]
        return {"success": True, "new_contract": found[0]} if found else None

    def instance(self, instance_id: int) -> dict[str, Any] | None:
        path = f"/api/v0/instances/{instance_id}/"
        document = self._call("GET", path, params={"owner": "me"})
        if "instances" not in document:
            raise VastError(f"vast.ai: the answer has no instances field (GET {path})")
        record = document["instances"]
        return None if record is None else _cleaned(record)

    def instances(self) -> list[dict[str, Any]]:
        """Every instance of the account, all pages. Never the v0 list: it is deprecated and answers an
        error that a careless client reads as zero instances."""
        path = "/api/v1/instances/"
        found: list[dict[str, Any]] = []
        token: str | None = None
        seen_tokens: set[str] = set()
        while True:
            params: dict[str, Any] = {"limit": PAGE_SIZE, **({"after_token": token} if token else {})}
            document = self._call("GET", path, params=params)
            page = _list_field(document, "instances", f"GET {path}")
            found += [_cleaned(record) for record in page]
            token = document.get("next_token") or None
            if not token or not page:
                return found
            if token in seen_tokens:  # a server repeating itself would page forever
                raise VastError(f"vast.ai: the instance list repeats its next_token (GET {path})")
            seen_tokens.add(token)

    def destroy(self, instance_id: int) -> None:
        """Destroy the instance; one already gone counts as destroyed. Retried on any 5xx: destroying
        twice does no harm, and an instance left behind keeps billing."""
        try:
            self._call("DELETE", f"/api/v0/instances/{instance_id}/", retry_500=True)
        except VastError as error:
            if error.status != 404 and "not_found" not in (error.code or "") and "no_such" not in (error.code or ""):
                raise

    def attach_ssh_key(self, instance_id: int, public_key: str) -> None:
        self._call("POST", f"/api/v0/instances/{instance_id}/ssh/", body={"ssh_key": public_key})

    def start(self, instance_id: int) -> None:
        """Start a stopped or exited instance again (its disk is where it was; its ports are new)."""
        self._call("PUT", f"/api/v0/instances/{instance_id}/", body={"state": "running"})

    def request_logs(self, instance_id: int, tail: int) -> dict[str, Any]:
        """Ask for the container log's last lines: the answer names a URL where vast uploads them shortly."""
        return self._call("PUT", f"/api/v0/instances/request_logs/{instance_id}/", body={"tail": str(tail)})

    def set_label(self, instance_id: int, label: str) -> None:
        self._call("PUT", f"/api/v0/instances/{instance_id}/", body={"label": label})

    def _call(
        self, method: str, path: str, body: dict[str, Any] | None = None, params: dict[str, Any] | None = None,
        retry_500: bool = False,
    ) -> dict[str, Any]:  # fmt: skip
        return self._retrying(lambda: self._attempt(method, path, body, params, retry_500), method, path)

    def _retrying(self, attempt: Callable[[], dict[str, Any]], method: str, path: str) -> dict[str, Any]:
        retrying = Retrying(
            retry=retry_if_exception_type(_Transient),
            stop=stop_after_delay(self.retry_seconds),
            wait=wait_random_exponential(multiplier=FIRST_WAIT_SECONDS, max=LONGEST_WAIT_SECONDS),
            reraise=True,
        )
        try:
            return retrying(attempt)
        except _Transient as error:
            raise VastUnavailable(
                f"vast.ai: {error} ({method} {path}); still failing after {self.retry_seconds:g}s of retries",
                error.status,
            ) from None

    def _attempt(
        self, method: str, path: str, body: dict[str, Any] | None, params: dict[str, Any] | None, retry_500: bool
    ) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, json=body, params=params)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
            raise _Transient(f"cannot connect: {self._scrub(str(error)) or type(error).__name__}", False) from None
        except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as error:
            # Sent, but the answer was lost: vast.ai may have done it.
            raise _Transient(f"no answer: {self._scrub(str(error)) or type(error).__name__}", True) from None
        return self._answer(method, path, response, retry_500)

    def _answer(self, method: str, path: str, response: httpx.Response, retry_500: bool) -> dict[str, Any]:
        status = response.status_code
        document = _json_or_none(response)
        code = document.get("error") if isinstance(document, dict) else None
        reason = self._reason(document, response)
        if status in RETRIED_STATUSES or code == "rate_limit_exceeded" or (retry_500 and status >= 500):
            # 429 is refused before anything happens; a 5xx may come after the work was done.
            rate_limited = status == 429 or code == "rate_limit_exceeded"
            raise _Transient(f"HTTP {status}: {reason}", not rate_limited, status)
        self.answers += 1
        if response.is_success and isinstance(document, dict) and document.get("success") is not False:
            return document
        message = f"vast.ai: {reason} ({method} {path})"
        if status in (401, 403):
            raise VastAuthError(message, status, code)
        if status == 410 or code == "no_such_ask":
            raise OfferGone(message, status, code)
        raise VastError(message, status, code)

    def _reason(self, document: Any, response: httpx.Response) -> str:
        """What went wrong, in vast.ai's words: msg, message or detail, else the error code or the text."""
        if isinstance(document, dict):
            for field in ("msg", "message", "detail", "error"):
                if document.get(field):
                    return self._scrub(str(document[field]))
        text = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
        if response.is_success and not isinstance(document, dict):
            text = f"the answer is not a JSON object: {text or 'empty'}"
        return self._scrub(text) or f"HTTP {response.status_code}"

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "[api key]") if self._api_key else text


def offer_query(resources: Resources, image_kind: str | None, limit: int = 20) -> dict[str, Any]:
    """The search body for offers that fit `resources`, cheapest first. The defaults are careful: verified
    machines with direct ports (SSH without vast.ai's proxy) and a record of staying up."""
    query: dict[str, Any] = {
        "verified": {"eq": True}, "external": {"eq": False}, "rentable": {"eq": True}, "rented": {"eq": False},
        "direct_port_count": {"gte": 1}, "reliability": {"gte": 0.95},
        "disk_space": {"gte": resources.disk_gb},
    }  # fmt: skip
    if resources.gpu:
        query["gpu_name"] = {"eq": resources.gpu}
    if resources.num_gpus:
        query["num_gpus"] = {"eq": resources.num_gpus}
    if resources.min_vram_gb:
        query["gpu_ram"] = {"gte": resources.min_vram_gb * MB_PER_GB}
    if resources.max_price:
        query["dph_total"] = {"lte": resources.max_price}
    if image_kind == "cu128":
        query["cuda_max_good"] = {"gte": 12.8}  # the driver must run CUDA 12.8 (what an RTX 5090 needs)
    query.update(order=[["dph_total", "asc"]], type="bid" if resources.interruptible else "on-demand", limit=limit)
    return query


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:  # plain text, such as one shape of vast.ai's 429
        return None


def _list_field(document: dict[str, Any], field: str, where: str) -> list[dict[str, Any]]:
    value = document.get(field)
    if not isinstance(value, list):
        raise VastError(f"vast.ai: the answer has no {field} list ({where})", code=document.get("error"))
    return value


def _cleaned(record: dict[str, Any]) -> dict[str, Any]:
    """vast.ai's public_ipaddr may carry trailing whitespace (a newline) that breaks ssh."""
    address = record.get("public_ipaddr")
    return {**record, "public_ipaddr": address.strip()} if isinstance(address, str) else record


def _may_have_created(error: Exception) -> bool:
    if isinstance(error, _Transient):
        return error.may_have_acted
    return isinstance(error, VastError) and (error.status or 0) >= 500
