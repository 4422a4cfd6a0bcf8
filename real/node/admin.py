"""A minimal HTTP/1.1 admin server on asyncio streams.

    GET /health       200 {"status", "node_id", "raft": {...}, "meta": {...}}
    GET /meta/nodes   200 [{"node_id", "addr", ...}]
    GET /meta/config  200 {"key": value}
    GET /storage      200 {"default_engine", ..., "shards": [...]}
    GET /node         200 {"node_id", "listeners", "uptime_s", ...}
    GET /mqtt/clients | /mqtt/sessions | /mqtt/subscriptions | /mqtt/topics | /mqtt/retained
                      200 [...] (the broker's live state, sorted)
    GET /metrics      200 Prometheus text exposition format 0.0.4
    POST /mqtt/clients/<client id, URL-quoted>/disconnect   200 / 404
    anything else     404 (unknown path), 405 (method), 400 (malformed), 431 (head too large)

The request head is parsed by a pure function (`parse_head`); the routes are a pure function of an
`AdminView`. Persistent connections are supported with bounds (requests per connection, idle time,
head bytes, concurrent connections). A bad request gets its error response and only that connection
is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote

REQUESTS_PER_CONNECTION_MAX = 100
IDLE_SECONDS_MAX = 10.0
HEADERS_MAX = 64
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large", 503: "Service Unavailable"}


class AdminView(Protocol):
    def health(self) -> dict[str, Any]: ...
    def meta_nodes(self) -> list[dict[str, Any]]: ...
    def meta_config(self) -> dict[str, Any]: ...
    def storage(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Text:
    """A non-JSON response body (the Prometheus exposition)."""

    body: str
    content_type: str = "text/plain; version=0.0.4; charset=utf-8"


_DISCONNECT = re.compile(r"^/mqtt/clients/([^/]+)/disconnect$")
_OPTIONAL_GETS = {"/node": "node_info", "/mqtt/clients": "mqtt_clients",
                  "/mqtt/sessions": "mqtt_sessions", "/mqtt/subscriptions": "mqtt_subscriptions",
                  "/mqtt/topics": "mqtt_topics", "/mqtt/retained": "mqtt_retained",
                  "/metrics": "metrics"}


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        assert status in _REASONS, status
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    version: str
    headers: tuple[tuple[str, str], ...]
    """Lower-cased names, in order."""

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def keep_alive(self) -> bool:
        conn = (self.header("connection") or "").lower()
        if self.version == "HTTP/1.0":
            return conn == "keep-alive"
        return conn != "close"


def parse_head(head: bytes) -> Request:
    """Parse a request head ending in CRLF CRLF. Raises HttpError(400) naming the problem."""
    assert head.endswith(b"\r\n\r\n"), head[-4:]
    lines = head[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise HttpError(400, f"malformed request line {lines[0][:80]!r}")
    method, target, version = parts
    if not _TOKEN.match(method):
        raise HttpError(400, f"malformed method {method[:20]!r}")
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise HttpError(400, f"unsupported HTTP version {version[:20]!r}")
    if not target.startswith("/"):
        raise HttpError(400, f"request target must start with '/', got {target[:80]!r}")
    if len(lines) - 1 > HEADERS_MAX:
        raise HttpError(431, f"more than {HEADERS_MAX} header fields")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.match(name):
            raise HttpError(400, f"malformed header line {line[:80]!r}")
        headers.append((name.lower(), value.strip(" \t")))
    req = Request(method, target.split("?", 1)[0], version, tuple(headers))
    if req.header("transfer-encoding") is not None or (req.header("content-length") or "0") != "0":
        raise HttpError(400, "request bodies are not accepted")
    return req


def route(view: AdminView, req: Request) -> tuple[int, Any]:
    """(status, JSON body) for a parsed request. Pure apart from reading `view`."""
    routes = {"/health": view.health, "/meta/nodes": view.meta_nodes,
              "/meta/config": view.meta_config, "/storage": view.storage}
    for path, name in _OPTIONAL_GETS.items():  # views without an MQTT broker lack these
        method = getattr(view, name, None)
        if method is not None:
            routes[path] = method
    kick = _DISCONNECT.match(req.path)
    disconnect = getattr(view, "mqtt_disconnect", None)
    if kick is not None and disconnect is not None:
        if req.method != "POST":
            return 405, {"error": f"method {req.method} not allowed on {req.path}; use POST"}
        client_id = unquote(kick.group(1))
        if disconnect(client_id):
            return 200, {"disconnected": client_id}
        return 404, {"error": f"no connected client {client_id!r}"}
    handler = routes.get(req.path)
    if handler is None:
        return 404, {"error": f"no such path {req.path!r}", "paths": sorted(routes)}
    if req.method != "GET":
        return 405, {"error": f"method {req.method} not allowed on {req.path}; use GET"}
    return 200, handler()


def render(status: int, body: Any, *, keep_alive: bool) -> bytes:
    if isinstance(body, Text):
        payload, content_type = body.body.encode(), body.content_type
    else:
        payload = (json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n").encode()
        content_type = "application/json"
    head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(payload)}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n")
    if status == 405:
        head += "Allow: GET, POST\r\n"
    return head.encode("latin-1") + b"\r\n" + payload


class AdminServer:
    def __init__(self, view: AdminView, host: str, port: int, *, request_bytes_max: int,
                 connections_max: int) -> None:
        assert request_bytes_max >= 256 and connections_max >= 1
        self.view = view
        self.host, self.port = host, port
        self.request_bytes_max = request_bytes_max
        self.connections_max = connections_max
        self.active = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        """Bind and listen; return the bound port (useful with port 0)."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port,
                                                  limit=self.request_bytes_max)
        port = self._server.sockets[0].getsockname()[1]
        assert port > 0
        return port

    async def serve_until(self, stop: asyncio.Event) -> None:
        assert self._server is not None, "start() first"
        await stop.wait()
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.active >= self.connections_max:
            body = {"error": f"too many admin connections (max {self.connections_max})"}
            writer.write(render(503, body, keep_alive=False))
            await _close(writer)
            return
        self.active += 1
        self._writers.add(writer)
        try:
            await self._serve_connection(reader, writer)
        finally:
            self.active -= 1
            self._writers.discard(writer)
            await _close(writer)

    async def _serve_connection(self, reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
        for _ in range(REQUESTS_PER_CONNECTION_MAX):
            try:
                async with asyncio.timeout(IDLE_SECONDS_MAX):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                return
            except asyncio.LimitOverrunError:
                msg = f"request head exceeds {self.request_bytes_max} bytes"
                writer.write(render(431, {"error": msg}, keep_alive=False))
                return
            try:
                req = parse_head(head)
            except HttpError as err:
                writer.write(render(err.status, {"error": err.message}, keep_alive=False))
                return
            status, body = route(self.view, req)
            writer.write(render(status, body, keep_alive=req.keep_alive))
            await writer.drain()
            if not req.keep_alive:
                return


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
