"""The admin HTTP/1.1 server: `h11` (python-hyper's sans-I/O HTTP) on asyncio streams.

    GET /health       200 {"status", "node_id", "raft": {...}, "meta": {...}}
    GET /meta/nodes   200 [{"node_id", "addr", ...}]
    GET /meta/config  200 {"key": value}
    GET /meta/topics  200 [{"name", "engine", "config", "shards": [[leader, epoch(, replicas,
                      isr, version)]]}]
    GET /replication  200 {"leads": [...], "follows": [...], "stats": {...}, "controller": ...}
    GET /storage      200 {"default_engine", ..., "shards": [...]}
    GET /node         200 {"node_id", "listeners", "uptime_s", ...}
    GET /mqtt/clients | /mqtt/sessions | /mqtt/subscriptions | /mqtt/topics | /mqtt/retained
                      200 [...] (the broker's live state, sorted)
    GET /metrics      200 Prometheus text exposition format 0.0.4 (see real/node/metrics.py)
    POST /mqtt/clients/<client id, URL-quoted>/disconnect   200 / 404
    POST /faults/net?peer=N&drop_out=0|1&drop_in=0|1&loss=P&delay_ms=M&jitter_ms=J
                      200 {"faults": {...}}: this node's link to peer N now drops, loses a
                      fraction P of, or delays what crosses it (real/node/peers.py); GET lists
    POST /faults/heal 200: every link of this node clean again
    GET /cluster/members  200 {"leader", "term", "voters", "learners", "addresses", "change"}:
                      the meta Raft configuration as this node knows it
    POST /cluster/members?id=N&raft_addr=HOST:PORT   add node N (started with `--join`, its
                      peer port at HOST:PORT) to the meta group: a learner, then a voter once
                      it caught up; answers when done (real/server/membership.py)
    POST /cluster/members/N/remove   unregister node N and remove it from the meta group
                      Both: 200 done, 421 {"leader", "leader_admin"} when this node does not
                      lead meta (ask there), 409 another change runs, 503 failed: ask again
    Any GET with `?consistency=linearizable` first waits for meta's read index (Raft's
    ReadIndex through the leader), so it sees every meta change acknowledged before it began,
    whichever node answers; 503 when no meta leader answers within 2 s. `local` (the default)
    answers from the node's applied state at once.
    Every POST needs `Authorization: Bearer <token>` when the node has `admin.token_file` (it
    must, when its admin port is not on loopback): else 401, logged.
    Before the node serves (it is still opening its storage), every request gets 503.
    anything else     404 (unknown path), 405 (method), 400 (malformed, or a request body),
                      431 (head over `request_bytes_max`), 503 (over `connections_max`)

h11 parses the requests and frames the responses; what stays here is the routing (`route`, a pure
function of an `AdminView`) and the bounds: the request head (`request_bytes_max`), concurrent
connections (`connections_max`), requests per connection and idle time. Persistent connections
follow HTTP/1.1 (and `Connection: close`, HTTP/1.0). A bad request gets its error response as JSON
{"error": ...} and only that connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import unquote

import h11

REQUESTS_PER_CONNECTION_MAX = 100
IDLE_SECONDS_MAX = 10.0


class AdminView(Protocol):
    """What the node passes in. Views without an MQTT broker may lack the optional methods:
    node_info, mqtt_clients, mqtt_sessions, mqtt_subscriptions, mqtt_topics, mqtt_retained,
    metrics (returns `Text`) and mqtt_disconnect(client_id) -> bool."""

    def health(self) -> dict[str, Any]: ...
    def meta_nodes(self) -> list[dict[str, Any]]: ...
    def meta_config(self) -> dict[str, Any]: ...
    def meta_topics(self) -> list[dict[str, Any]]: ...
    def replication(self) -> dict[str, Any]: ...
    def storage(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Text:
    """A non-JSON response body (the Prometheus exposition)."""

    body: str | bytes
    content_type: str = "text/plain; version=0.0.4; charset=utf-8"


_DISCONNECT = re.compile(r"^/mqtt/clients/([^/]+)/disconnect$")
_REMOVE_MEMBER = re.compile(r"^/cluster/members/(\d{1,9})/remove$")
_FAULT_KEYS = {"peer": int, "drop_out": int, "drop_in": int, "loss": float, "delay_ms": float,
               "jitter_ms": float}
_OPTIONAL_GETS = {"/node": "node_info", "/mqtt/clients": "mqtt_clients",
                  "/mqtt/sessions": "mqtt_sessions", "/mqtt/subscriptions": "mqtt_subscriptions",
                  "/mqtt/topics": "mqtt_topics", "/mqtt/retained": "mqtt_retained",
                  "/metrics": "metrics"}


def route(view: AdminView, method: str, path: str, query: str = "") -> tuple[int, Any]:
    """(status, JSON body or `Text`) for `method` on `path` (the target without its `query`).

    Pure apart from reading `view` (and the POSTs, which act through it)."""
    faults = getattr(view, "net_faults", None)
    if path in ("/faults/net", "/faults/heal") and faults is not None:
        if method == "GET" and path == "/faults/net":
            try:
                return 200, {"faults": faults(None)}
            except ValueError as exc:
                return 400, {"error": str(exc)}
        if method != "POST":
            return 405, {"error": f"method {method} not allowed on {path}; use POST"}
        if path == "/faults/heal":
            try:
                return 200, {"faults": faults({})}
            except ValueError as exc:
                return 400, {"error": str(exc)}
        args: dict[str, Any] = {}
        for item in (part for part in query.split("&") if part):
            key, _, value = item.partition("=")
            kind = _FAULT_KEYS.get(key)
            if kind is None:
                return 400, {"error": f"unknown fault parameter {key!r} (known: "
                                      f"{', '.join(sorted(_FAULT_KEYS))})"}
            try:
                args[key] = kind(unquote(value))
            except ValueError:
                return 400, {"error": f"fault parameter {key!r} must be a number, got {value!r}"}
        if "peer" not in args:
            return 400, {"error": "fault needs peer=N"}
        try:
            return 200, {"faults": faults(args)}
        except ValueError as exc:
            return 400, {"error": str(exc)}
    members = getattr(view, "cluster_members", None)
    if path == "/cluster/members" and members is not None and method == "GET":
        return 200, members()
    routes = {"/health": view.health, "/meta/nodes": view.meta_nodes,
              "/meta/config": view.meta_config,
              "/meta/topics": view.meta_topics, "/replication": view.replication,
              "/storage": view.storage}
    for route_path, name in _OPTIONAL_GETS.items():  # views without an MQTT broker lack these
        getter = getattr(view, name, None)
        if getter is not None:
            routes[route_path] = getter
    kick = _DISCONNECT.match(path)
    disconnect = getattr(view, "mqtt_disconnect", None)
    if kick is not None and disconnect is not None:
        if method != "POST":
            return 405, {"error": f"method {method} not allowed on {path}; use POST"}
        client_id = unquote(kick.group(1))
        if disconnect(client_id):
            return 200, {"disconnected": client_id}
        return 404, {"error": f"no connected client {client_id!r}"}
    handler = routes.get(path)
    if handler is None:
        return 404, {"error": f"no such path {path!r}", "paths": sorted(routes)}
    if method != "GET":
        return 405, {"error": f"method {method} not allowed on {path}; use GET"}
    return 200, handler()


def response_events(status: int, body: Any, *, close: bool) -> list[h11.Response | h11.Data]:
    """The h11 events of one response: JSON (sorted keys, one line) or a `Text` body."""
    if isinstance(body, Text):
        raw = body.body
        payload = raw.encode() if isinstance(raw, str) else raw
        content_type = body.content_type
    else:
        payload = (json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n").encode()
        content_type = "application/json"
    headers = [("Content-Type", content_type), ("Content-Length", str(len(payload)))]
    if close:
        headers.append(("Connection", "close"))
    if status == 405:
        headers.append(("Allow", "GET, POST"))
    if status == 401:
        headers.append(("WWW-Authenticate", 'Bearer realm="twinmq-admin"'))
    reason = HTTPStatus(status).phrase.encode()
    return [h11.Response(status_code=status, headers=headers, reason=reason),
            h11.Data(data=payload)]


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        assert 400 <= status < 600, status
        self.status = status
        self.message = message


class AdminServer:
    def __init__(self, view: AdminView, host: str, port: int, *, request_bytes_max: int,
                 connections_max: int, token: bytes | None = None,
                 log: Callable[[str], None] = lambda _line: None) -> None:
        assert request_bytes_max >= 256, request_bytes_max
        assert connections_max >= 1, connections_max
        self.view = view
        self.token = token
        """With a token, every POST must carry `Authorization: Bearer <token>` (else 401)."""
        self.log = log
        self.refused = 0
        self.host, self.port = host, port
        self.request_bytes_max = request_bytes_max
        self.connections_max = connections_max
        self.active = 0
        self._server: asyncio.Server | None = None
        self._writers: dict[int, asyncio.StreamWriter] = {}

    async def start(self) -> int:
        """Bind and listen; return the bound port (useful with port 0)."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        port = self._server.sockets[0].getsockname()[1]
        assert port > 0
        return port

    async def serve_until(self, stop: asyncio.Event) -> None:
        assert self._server is not None, "start() first"
        await stop.wait()
        self._server.close()
        for writer in list(self._writers.values()):
            writer.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.request_bytes_max)
        if self.active >= self.connections_max:
            body = {"error": f"too many admin connections (max {self.connections_max})"}
            _send(writer, conn, 503, body, close=True)
            await _close(writer)
            return
        self.active += 1
        key = id(writer)
        self._writers[key] = writer
        try:
            await self._serve_connection(reader, writer, conn)
        finally:
            self.active -= 1
            del self._writers[key]
            await _close(writer)

    async def _serve_connection(self, reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter, conn: h11.Connection) -> None:
        for served in range(1, REQUESTS_PER_CONNECTION_MAX + 1):
            try:
                request = await self._next_request(reader, conn)
            except _Refused as refusal:
                _send(writer, conn, refusal.status, {"error": refusal.message}, close=True)
                return
            if request is None:
                return
            target, _, query = request.target.decode("ascii").partition("?")
            method = request.method.decode("ascii")
            if not getattr(self.view, "ready", True):
                status, body = 503, {"error": "the node is starting; ask again"}
            elif method != "GET" and not self._authorized(request):
                self.refused += 1
                self.log(f"admin: refused an unauthenticated {method} {target} from "
                         f"{writer.get_extra_info('peername')}")
                status, body = 401, {"error": "this request needs Authorization: Bearer <token>"}
            elif method == "POST" and (target == "/cluster/members"
                                       or _REMOVE_MEMBER.match(target)):
                status, body = await self._member_change(target, query)
            else:
                status, body = await self._consistent(method, query)
                if status == 200:
                    status, body = route(self.view, method, target, query)
            _send(writer, conn, status, body, close=served == REQUESTS_PER_CONNECTION_MAX)
            await writer.drain()
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return  # h11 says the connection ends here (Connection: close, HTTP/1.0)
            conn.start_next_cycle()

    async def _consistent(self, method: str, query: str) -> tuple[int, Any]:
        """`?consistency=linearizable` on a GET: first wait for meta's read index (a read that
        sees every write acknowledged before it began, on any node); 503 when no meta leader
        answers in time. `consistency=local` (the default) answers from this node's state."""
        wanted = [v for k, _, v in (p.partition("=") for p in query.split("&") if p)
                  if k == "consistency"]
        if not wanted or wanted[-1] == "local":
            return 200, None
        if wanted[-1] != "linearizable" or method != "GET":
            return 400, {"error": f"consistency={wanted[-1]!r}: expected local or linearizable "
                                  "(on a GET)"}
        barrier = getattr(self.view, "read_barrier", None)
        if barrier is None:
            return 400, {"error": "this node offers no linearizable reads"}
        try:
            await barrier()
        except TimeoutError:
            return 503, {"error": "no linearizable read: no meta leader answered in time"}
        except Exception as exc:  # noqa: BLE001 - ProposalDropped and friends: retry later
            return 503, {"error": f"no linearizable read: {exc}"}
        return 200, None

    async def _member_change(self, target: str, query: str) -> tuple[int, Any]:
        change = getattr(self.view, "member_change", None)
        if change is None:
            return 404, {"error": f"no such path {target!r}"}
        removal = _REMOVE_MEMBER.match(target)
        if removal is not None:
            node_id = int(removal.group(1))
            if node_id < 1:
                return 400, {"error": "a node id is at least 1"}
            self.log(f"admin: remove meta member {node_id}")
            return await change("remove", node_id, "")
        args = dict(p.partition("=")[::2] for p in query.split("&") if p)
        unknown = sorted(set(args) - {"id", "raft_addr"})
        if unknown:
            return 400, {"error": f"unknown parameter(s) {', '.join(unknown)} (known: id, "
                                  "raft_addr)"}
        try:
            node_id = int(args.get("id", ""))
        except ValueError:
            return 400, {"error": "adding a member needs id=N (a node id >= 1)"}
        addr = unquote(args.get("raft_addr", ""))
        host, _, port = addr.rpartition(":")
        if node_id < 1 or not host or not port.isdigit() or not 0 < int(port) < 65536:
            return 400, {"error": "adding a member needs id=N (>= 1) and raft_addr=HOST:PORT"}
        self.log(f"admin: add meta member {node_id} at {addr}")
        return await change("add", node_id, addr)

    def _authorized(self, request: h11.Request) -> bool:
        if self.token is None:
            return True
        for name, value in request.headers:
            if name.lower() == b"authorization":
                return hmac.compare_digest(value, b"Bearer " + self.token)
        return False

    async def _next_request(self, reader: asyncio.StreamReader,
                            conn: h11.Connection) -> h11.Request | None:
        """The next request, its (empty) body read; None when the client leaves or idles."""
        fed = len(conn.trailing_data[0])  # pipelined bytes already buffered count too
        request: h11.Request | None = None
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as err:
                raise self._refusal(err.error_status_hint, str(err)) from err
            if event is h11.NEED_DATA:
                if request is None and fed > self.request_bytes_max:
                    raise self._refusal(431, "head too long")
                data = await _read(reader, self.request_bytes_max)
                if data is None:
                    return None
                fed += len(data)
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                if fed - len(conn.trailing_data[0]) > self.request_bytes_max:
                    raise self._refusal(431, "head too long")
                _check_no_body(event)
                request = event
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return request
            else:  # ConnectionClosed (or PAUSED, which needs a response first)
                return None

    def _refusal(self, status: int, message: str) -> _Refused:
        if status == 431:
            return _Refused(431, f"request head exceeds {self.request_bytes_max} bytes")
        return _Refused(status, f"malformed request: {message}")


def _check_no_body(request: h11.Request) -> None:
    for name, value in request.headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            raise _Refused(400, "request bodies are not accepted")


async def _read(reader: asyncio.StreamReader, size: int) -> bytes | None:
    """Up to `size` bytes (b"" at EOF), or None when the client stays silent too long."""
    try:
        async with asyncio.timeout(IDLE_SECONDS_MAX):
            return await reader.read(size)
    except (TimeoutError, ConnectionError):
        return None


def _send(writer: asyncio.StreamWriter, conn: h11.Connection, status: int, body: Any, *,
          close: bool) -> None:
    events = [*response_events(status, body, close=close), h11.EndOfMessage()]
    writer.write(b"".join(conn.send(event) or b"" for event in events))


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
