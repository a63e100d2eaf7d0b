"""A faithful vast.ai emulator: the REST API's endpoints, shapes and quirks on a loopback HTTP server.

    emulator = Emulator(offers=None, api_key="k")      # None: three RTX 5090 offers
    url = emulator.start()                             # http://127.0.0.1:PORT, the client's VAST_URL
    emulator.faults.rate_limit(3)                      # faults, for the next requests or instances
    emulator.stop()                                    # also removes every container it made

or `python -m runner.testing.vast_emulator --port 0 --api-key-file FILE [--offers offers.json]`, which
prints `listening on URL` first and serves until SIGTERM or SIGINT; its faults are set through the
control API under /_emulator/ (with the API key, like everything but a log's result_url).

What a client meets on vast is here on purpose: 401 `auth_error`, 429 in its three body shapes
without Retry-After, the v0 list answering `deprecated_endpoint` with `success: false`, `env` that
must be an object, `public_ipaddr` with a trailing space, `ports` null until running with HostPort
strings, instances that pass through null, created and loading, and a create that answers at once.
Account ssh keys are stored but never reach instances (the docs disagree whether they do): attach
keys per instance. The instance side (records, containers) is in `vast_instances`, the offers,
filters, order keys, page tokens and request checks in `vast_queries`, the faults in `vast_faults`.
"""

from __future__ import annotations

import argparse
import hmac
import json
import re
import secrets
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

from runner.testing.vast_faults import Faults
from runner.testing.vast_instances import LABEL, ApiError, Delays, Instance, Provisioner, docker, parse_launch
from runner.testing.vast_queries import (  # default_offers: also imported from here
    default_offers,
    list_terms,
    matches,
    ordered,
    page,
    parse_body,
    public_key,
    search_terms,
)  # fmt: skip

JSON = "application/json"


class RecordedRequest(NamedTuple):
    method: str
    path: str  # without the query string, which may carry the API key
    status: int


class Emulator:
    """vast.ai's API on 127.0.0.1 and, with `containers`, every instance a docker container with sshd.

    `host_image_ssh_user` is the user whose authorized_keys and login shell the emulator prepares in
    the container: root, as on vast.
    """

    def __init__(self, offers: list[dict[str, Any]] | None, api_key: str, containers: bool = True,
                 host_image_ssh_user: str = "root", *, delays: Delays = Delays()) -> None:  # fmt: skip
        if not api_key:
            raise ValueError("the emulator needs an API key")
        self._api_key = api_key
        self._lock = threading.RLock()  # the one lock around the state below
        defaults = {"verified": True, "rentable": True, "external": False}
        self._offers = {int(o["id"]): {**defaults, **o} for o in (default_offers() if offers is None else offers)}
        self._instances: dict[int, Instance] = {}
        self._ids = count(31_500_001)
        self._account_keys: list[dict[str, Any]] = []
        self._logs: dict[str, str | None] = {}  # result_url token -> the log, None until captured
        self._containers = containers
        self._provisioner = Provisioner(self._lock, delays, containers, host_image_ssh_user, secrets.token_hex(4))
        self._server: _Server | None = None
        self.faults = Faults(self._lock, self._kill, self._cut_off)
        self.requests: list[RecordedRequest] = []
        self.url = ""

    def start(self, port: int = 0) -> str:
        """Serve on 127.0.0.1:port (0: a free one); returns the base URL."""
        server = _Server(("127.0.0.1", port), _Handler)
        server.emulator = self
        self._server, self.url = server, f"http://127.0.0.1:{server.server_address[1]}"
        # A short poll interval: stop() waits for the loop to notice, up to one interval.
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True, name="vast-emulator-http").start()
        return self.url

    def stop(self) -> None:
        """Stop serving, then remove every container this emulator made."""
        self.pause()
        with self._lock:
            instances = list(self._instances.values())
        self._provisioner.close(instances)

    def pause(self) -> None:
        """An API outage: the port refuses connections, while the instances (their containers) run on."""
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def resume(self) -> str:
        """The API back, on the port it had, with every instance as it was."""
        return self.start(int(self.url.rsplit(":", 1)[1]))

    def __enter__(self) -> Emulator:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def instances(self) -> dict[int, dict[str, Any]]:
        """Every instance not destroyed, by id, as the API shows it (a snapshot)."""
        with self._lock:
            return {id_: instance.record() for id_, instance in self._instances.items()}

    def exited_at(self, instance_id: int) -> float | None:
        """When the instance's container last ended on its own (None: it has not), by this machine's clock."""
        with self._lock:
            instance = self._instances.get(instance_id)
            return instance.exited_at if instance else None

    def container_ids(self, instance_id: int | None = None) -> list[str]:
        """The containers this emulator made and has not removed yet (those of one instance, given its id)."""
        if not self._containers:
            return []
        owner = f"label={LABEL}={self._provisioner.owner}"
        one = ["--filter", f"label={LABEL}.instance={instance_id}"] if instance_id is not None else []
        return docker("ps", "-aq", "--filter", owner, *one).stdout.split()

    def handle(self, method: str, target: str, authorization: str | None, raw_body: bytes) -> tuple[int, str, Any]:
        """One HTTP request: (status, content type, body as a str or JSON-able object)."""
        url = urlsplit(target)
        query = {name: values[-1] for name, values in parse_qs(url.query).items()}
        try:
            reply = self._route(method, url.path, query, authorization, raw_body)
        except ApiError as error:
            reply = (error.status, JSON, error.body)
        except Exception as error:  # a bug here must still answer JSON; its traceback never shows the key
            print(traceback.format_exc().replace(self._api_key, "<api key>"), file=sys.stderr)
            reply = (500, JSON, {"success": False, "error": "emulator_error", "msg": type(error).__name__})
        with self._lock:
            self.requests.append(RecordedRequest(method, url.path, reply[0]))
        return reply

    def _route(self, method: str, path: str, query: dict[str, str], authorization: str | None,
               raw_body: bytes) -> tuple[int, str, Any]:  # fmt: skip
        if method == "GET" and (log := re.fullmatch(r"/logs/(\w+)\.log", path)):
            return self._log_file(log[1])  # a presigned storage URL on vast: no key
        if not self._authorized(authorization, query):
            raise ApiError(401, "auth_error", "Invalid user key")
        if not path.startswith("/_emulator/") and (limited := self.faults.take_rate_limit()):
            return (429, *limited)
        for verb, pattern, operation in ROUTES:
            if verb == method and (found := re.fullmatch(pattern, path)):
                ident = found[1] if found.groups() else None
                return 200, JSON, operation(self, ident, query, parse_body(raw_body))
        raise ApiError(404, "not_found", f"no endpoint {method} {path}")

    def _authorized(self, authorization: str | None, query: dict[str, str]) -> bool:
        offered = query.get("api_key", "")
        if authorization and authorization.startswith("Bearer "):
            offered = authorization.removeprefix("Bearer ").strip()
        return hmac.compare_digest(offered.encode(), self._api_key.encode())

    def _instance(self, ident: str | None) -> Instance:
        with self._lock:
            instance = self._instances.get(int(ident or 0))
        if instance is None:
            raise ApiError(404, "no_such_instance", f"Instance {ident} not found.")
        return instance

    def _kill(self, instance_id: int) -> None:
        self._provisioner.kill(self._faulted(instance_id))

    def _cut_off(self, instance_id: int) -> None:
        self._provisioner.cut_off(self._faulted(instance_id))

    def _faulted(self, instance_id: int) -> Instance:
        """The instance a fault names; KeyError (the faults' contract) where _instance answers 404."""
        try:
            return self._instance(str(instance_id))
        except ApiError:
            raise KeyError(f"no instance {instance_id}") from None

    def search(self, _: None, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        filters, keys, limit = search_terms(body)
        with self._lock:
            rented = {instance.offer["id"] for instance in self._instances.values()}
            offers = [{**offer, "rented": taken, "rentable": offer["rentable"] and not taken}
                      for offer in self._offers.values() for taken in [offer["id"] in rented]]  # fmt: skip
        found = ordered([offer for offer in offers if matches(offer, filters)], keys)
        return {"offers": found[:limit] if limit else found}

    def create(self, offer_id: str, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        spec = parse_launch(body)
        with self._lock:
            offer = self._offers.get(int(offer_id))
            if offer is None or any(instance.offer["id"] == offer["id"] for instance in self._instances.values()):
                raise ApiError(404, "no_such_ask", f"Instance type by id {offer_id} is not available.")
            if spec.price is not None and spec.price < offer.get("min_bid", 0):
                raise ApiError(400, "invalid_price", f"bid {spec.price} is below the min_bid {offer['min_bid']}")
            loading_s, failing = self.faults.take_start()
            instance = Instance(next(self._ids), dict(offer), spec, spec.label, loading_s, failing)
            self._instances[instance.id] = instance
        self._provisioner.launch(instance)  # the create answers at once; the instance moves on by itself
        return {"success": True, "new_contract": instance.id, "instance_api_key": secrets.token_hex(32)}

    def list_v1(self, _: None, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        filters, keys, limit, offset = list_terms(query)
        with self._lock:
            records = [instance.record() for instance in self._instances.values()]
        found = ordered([record for record in records if matches(record, filters)], [*keys, ("id", "asc")])
        instances, next_token = page(found, offset, limit)
        return {"success": True, "instances_found": len(found), "total_instances": len(records),
                "next_token": next_token, "instances": instances}  # fmt: skip

    def list_v0(self, _: None, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        # 200 and success false, as vast answers: a client that ignores `success` sees no instances at all.
        return {"success": False, "error": "deprecated_endpoint",
                "msg": "GET /api/v0/instances/ is deprecated. Use /api/v1/instances/ instead."}  # fmt: skip

    def show(self, ident: str, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            instance = self._instances.get(int(ident))
            return {"instances": instance.record() if instance else None}

    def update(self, ident: str, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        instance, state, label = self._instance(ident), body.get("state"), body.get("label")
        if "state" not in body and "label" not in body:
            raise ApiError(400, "invalid_args", "give state (running or stopped) or label")
        if "state" in body and state not in ("running", "stopped"):
            raise ApiError(400, "invalid_args", f"state must be running or stopped, not {state!r}")
        if "label" in body and not (label is None or (isinstance(label, str) and len(label) <= 1024)):
            raise ApiError(400, "invalid_args", "label must be a string of at most 1024 characters")
        reply: dict[str, Any] = {"success": True}
        with self._lock:
            if "label" in body:
                instance.label, reply["msg"] = label, "Instance label changed."
            if state:
                instance.intended_status = instance.cur_state = state
        if state == "stopped":
            self._provisioner.stop(instance)
        elif state == "running":
            self._provisioner.start(instance)
        return reply

    def destroy(self, ident: str, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        if self.faults.take_failed_destroy():
            raise ApiError(500, "server_error", "Internal server error: the instance was not destroyed")
        with self._lock:
            instance = self._instances.pop(int(ident), None)  # gone at once: show null, the offer rentable again
        if instance is None:
            raise ApiError(404, "no_such_instance", f"Instance {ident} not found.")
        self._provisioner.destroy(instance)
        return {"success": True}

    def attach_key(self, ident: str, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        key = public_key(body)
        self._provisioner.attach_key(self._instance(ident), key)
        return {"success": True}

    def add_account_key(self, _: None, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            entry = {"id": len(self._account_keys) + 1, "public_key": public_key(body), "created_at": time.time()}
            self._account_keys.append(entry)
        return {"success": True, "key": entry}

    def account_keys(self, _: None, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            return {"success": True, "keys": list(self._account_keys)}

    def request_logs(self, ident: str, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        instance, tail = self._instance(ident), str(body.get("tail") or "1000")
        if not tail.isdigit():
            raise ApiError(400, "invalid_args", "tail must be a number of lines")
        token = secrets.token_hex(16)
        with self._lock:
            self._logs[token] = None

        def capture() -> None:  # vast uploads the log a moment later: clients GET result_url until 200
            text = self._provisioner.logs(instance, int(tail))
            with self._lock:
                self._logs[token] = text

        threading.Thread(target=capture, daemon=True, name=f"vast-logs-{ident}").start()
        return {"success": True, "result_url": f"{self.url}/logs/{token}.log"}

    def _log_file(self, token: str) -> tuple[int, str, Any]:
        with self._lock:
            text = self._logs.get(token)
        if text is None:
            raise ApiError(404, "not_found", "no such log, or not uploaded yet")
        return 200, "text/plain; charset=utf-8", text  # a file on vast's storage, not an API answer

    def control(self, name: str, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        faults = self.faults
        actions: dict[str, Callable[[], None]] = {
            "slow_loading": lambda: faults.slow_loading(float(body["seconds"])),
            "fail_next_start": faults.fail_next_start,
            "rate_limit": lambda: faults.rate_limit(int(body["count"])),
            "kill_instance": lambda: faults.kill_instance(int(body["id"])),
            "cut_off_instance": lambda: faults.cut_off_instance(int(body["id"])),
            "fail_destroy": lambda: faults.fail_destroy(int(body["count"])),
        }
        if name not in actions:
            raise ApiError(404, "not_found", f"no fault {name!r}; faults: {sorted(actions)}")
        try:
            actions[name]()
        except (KeyError, TypeError, ValueError) as error:
            raise ApiError(400, "invalid_args", f"{name}: {error}") from None
        return {"success": True}

    def control_read(self, name: str, query: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
        if name == "requests":
            with self._lock:
                return {"requests": [request._asdict() for request in self.requests]}
        if name == "containers":
            return {"containers": self.container_ids(int(query["instance"]) if "instance" in query else None)}
        return {"instances": list(self.instances.values())}


ROUTES: list[tuple[str, str, Callable[..., dict[str, Any]]]] = [
    ("POST", r"/api/v0/bundles/?", Emulator.search),
    ("PUT", r"/api/v0/asks/(\d+)/?", Emulator.create),
    ("GET", r"/api/v1/instances/?", Emulator.list_v1),
    ("GET", r"/api/v0/instances/?", Emulator.list_v0),
    ("PUT", r"/api/v0/instances/request_logs/(\d+)/?", Emulator.request_logs),
    ("GET", r"/api/v0/instances/(\d+)/?", Emulator.show),
    ("PUT", r"/api/v0/instances/(\d+)/?", Emulator.update),
    ("DELETE", r"/api/v0/instances/(\d+)/?", Emulator.destroy),
    ("POST", r"/api/v0/instances/(\d+)/ssh/?", Emulator.attach_key),
    ("POST", r"/api/v0/ssh/?", Emulator.add_account_key),
    ("GET", r"/api/v0/ssh/?", Emulator.account_keys),
    ("POST", r"/_emulator/(\w+)/?", Emulator.control),
    ("GET", r"/_emulator/(requests|instances|containers)/?", Emulator.control_read),
]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 resets connections when a client fires requests from many threads
    emulator: Emulator


class _Handler(BaseHTTPRequestHandler):
    server_version = "vast-emulator"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        emulator = self.server.emulator  # type: ignore[attr-defined]  # the _Server this handler serves
        status, content_type, body = emulator.handle(self.command, self.path, self.headers.get("Authorization"), raw)
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request line may carry ?api_key=: the emulator logs nothing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runner.testing.vast_emulator", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0, the default: a free one)")
    parser.add_argument("--offers", type=Path, help="a JSON file: the list of offers (default: three RTX 5090 offers)")
    parser.add_argument("--api-key-file", type=Path, required=True, help="a file holding the API key clients must send")
    parser.add_argument("--no-containers", action="store_true", help="instances are records only, no docker")
    args = parser.parse_args(argv)
    offers = json.loads(args.offers.read_text()) if args.offers else None
    emulator = Emulator(offers, args.api_key_file.read_text().strip(), containers=not args.no_containers)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    print(f"listening on {emulator.start(args.port)}", flush=True)
    stopping.wait()
    emulator.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
