"""The node's byte transports for MQTT: TCP, TLS, WebSocket and secure WebSocket listeners.

    listener = await start_listener("ws", "127.0.0.1", 0, handler)   # port 0: pick a free port
    listener.port                                                    # the bound port
    listener.close(); await listener.wait_closed()

Each accepted connection is a `Conn` handed to a `Handler` (the MQTT shell), whatever the kind:

    connection_made(conn)          once; for ws/wss after the WebSocket handshake succeeded
    data_received(conn, data)      MQTT bytes in arbitrary chunks (WebSocket framing removed)
    writable(conn)                 the write buffer fell below its low-water mark after having
                                   gone above `write_high_water` (asyncio pause/resume_writing)
    connection_lost(conn, exc)     once, after connection_made; exc is None on a clean close

Writes never block: `conn.write` queues in the asyncio transport, and a handler that cares about a
slow reader watches `conn.write_buffer_size()` (it grows past `write_high_water` only if the
handler keeps writing) and waits for `writable`. The low-water mark is a quarter of the high one.

`conn.close()` on TCP or TLS shuts the write side after the queued bytes and keeps reading (and
dropping) input until the client closes or `CLOSE_LINGER_S` passes: closing a socket with unread
input sends a reset, which can destroy the last bytes written (a DISCONNECT's reason code).

Built on asyncio Protocols rather than streams: for TCP and TLS, `data_received` is the handler's
bound method (no copy, no extra frame). TCP_NODELAY is set on every accepted socket.

WebSocket listeners (RFC 6455, MQTT 5 section 6) run `wsproto`, python-hyper's sans-I/O
WebSocket library (its handshake parsing is `h11`). What stays ours is the policy around it:

* The request head is bounded (`HEAD_BYTES_MAX`, 431 past it) and must complete within
  `handshake_timeout_s`, else the connection is dropped. Bytes that cannot start an HTTP request
  (raw MQTT sent to a WebSocket port) are refused with 400 at once, not at the timeout.
* A refused handshake gets an HTTP error with a text/plain reason and only that connection closes:
  404 for a path other than `ws_path`, 426 for a Sec-WebSocket-Version other than 13, 400 for the
  rest (wsproto's choice: malformed head, not GET, missing Host/Upgrade/Connection/key/version) and
  for a client offering no MQTT subprotocol (MQTT-6.0.0-3).
* Subprotocol: "mqtt" if offered (MQTT-6.0.0-4); else "mqttv3.1" for old MQTT 3.1 clients, which
  would fail a connection answered with a subprotocol they did not offer (RFC 6455 4.1).
* Each `conn.write(data)` becomes one binary frame (dropped once the client's close frame is
  read). MQTT bytes from the client are delivered as they arrive, whatever the framing
  (MQTT-6.0.0-2); the data frames of one read reach the handler in one call (per-frame calls
  cost the broker more than wsproto itself). A frame error closes only that connection, with
  wsproto's close code (1002 protocol error, 1007 bad UTF-8) or ours: 1003 for a text frame
  (MQTT-6.0.0-1), 1009 for a frame whose payload passes `ws_frame_max` (counted as it arrives).
* `conn.close()` sends a close frame (1000), drops further input, and closes the TCP connection
  when the client answers with its close frame, or after `WS_CLOSE_TIMEOUT_S`.
  `Listener.close()` closes every connection (WebSocket ones with 1001 "going away") and
  `wait_closed()` aborts any still open after a grace period.

TLS (tls, wss) needs an `ssl.SSLContext`; `make_ssl_context` builds a server one, TLS 1.2 or later.
The TLS handshake is bounded by `handshake_timeout_s` too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import itertools
import socket
import ssl
from dataclasses import dataclass
from typing import Any, Protocol

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import RemoteProtocolError

KINDS = ("tcp", "tls", "ws", "wss")
HEAD_BYTES_MAX = 8 << 10  # a WebSocket request head, request line to blank line inclusive
FRAME_MAX_DEFAULT = 16 << 20  # ws_frame_max: the payload bytes of one client frame
FRAME_MAX_MIN = 125  # a control frame's payload limit (RFC 6455 5.5)
SUBPROTOCOLS = ("mqtt", "mqttv3.1")  # in order of preference
WS_CLOSE_TIMEOUT_S = 5.0  # how long a closing WebSocket waits for the client's close frame
CLOSE_GRACE_S = 5.0  # Listener.wait_closed aborts connections still open after this long
CLOSE_LINGER_S = 2.0
"""How long a TCP or TLS connection the node closed keeps reading (and dropping) its input, until
the client closes its side: see `Conn.close`."""
_conn_ids = itertools.count(1)
_serials = itertools.count(1)


class Handler(Protocol):
    """What a listener calls; implemented by the MQTT shell. Calls come from the event loop."""

    def connection_made(self, conn: Conn) -> None: ...
    def data_received(self, conn: Conn, data: bytes) -> None: ...
    def connection_lost(self, conn: Conn, exc: Exception | None) -> None: ...
    def writable(self, conn: Conn) -> None: ...


class Conn:
    """One accepted client connection, any transport kind.

    `id` is unique in the process and increasing; `peer` is "ip:port" ("[ip]:port" for IPv6);
    `listener` is the kind; `loopback` says the listener is bound only to loopback addresses.
    `closed` turns True when `close()` or `abort()` is called or the connection is lost; writes
    after that are dropped.
    """

    __slots__ = ("_transport", "closed", "id", "listener", "loopback", "peer")

    def __init__(self, transport: asyncio.Transport, peer: str, listener: str,
                 loopback: bool) -> None:
        self.id = next(_conn_ids)
        self.peer = peer
        self.listener = listener
        self.loopback = loopback
        self.closed = False
        self._transport = transport

    def __repr__(self) -> str:
        return f"Conn(id={self.id}, peer={self.peer!r}, listener={self.listener!r})"

    def write(self, data: bytes) -> None:
        """Queue MQTT bytes for sending (dropped once closed)."""
        if not self.closed:
            self._transport.write(data)

    def close(self) -> None:
        """Send what was written, then close. `connection_lost` follows.

        Not at once: a socket closed with unread input answers with a reset, which can destroy
        the last bytes written (a DISCONNECT and its reason code, say 0x93 while the client is
        still sending) before the client reads them. So the write side is shut after the
        queued bytes (a FIN; TLS cannot half-close and sends its close_notify at the end), the
        input is read and dropped, and the socket closes when the client closes its side, or
        after CLOSE_LINGER_S."""
        if not self.closed:
            self.closed = True
            _Lingering.start(self._transport)

    def abort(self) -> None:
        """Close now, dropping unsent bytes. `connection_lost` follows."""
        self.closed = True
        self._transport.abort()

    def pause_reading(self) -> None:
        """Stop `data_received` calls (a chunk already being delivered finishes first)."""
        if not self.closed:
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if not self.closed:
            self._transport.resume_reading()

    def write_buffer_size(self) -> int:
        """Bytes queued in the transport (TLS: before encryption, too), not yet sent."""
        return self._transport.get_write_buffer_size()


class _Lingering(asyncio.Protocol):
    """The protocol of a connection the node closed (`Conn.close`): input is dropped; the
    client's EOF or the linger timer closes the transport; `connection_lost` reaches the
    connection's own protocol as before."""

    def __init__(self, transport: asyncio.Transport, inner: asyncio.BaseProtocol) -> None:
        self.transport = transport
        self.inner = inner
        self.timer = asyncio.get_running_loop().call_later(CLOSE_LINGER_S, transport.abort)

    @classmethod
    def start(cls, transport: asyncio.Transport) -> None:
        if transport.is_closing():
            return
        transport.set_protocol(cls(transport, transport.get_protocol()))
        if transport.can_write_eof():
            try:
                transport.write_eof()  # after what is queued
            except OSError:  # the client reset the connection already (not read yet)
                transport.abort()
                return
        if not transport.is_reading():
            transport.resume_reading()  # a paused reader would never see the client's EOF

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False  # the transport closes (once what is queued has gone out)

    def connection_lost(self, exc: Exception | None) -> None:
        self.timer.cancel()
        self.inner.connection_lost(exc)


class WsConn(Conn):
    """A WebSocket connection: each write is one binary frame; close is the close handshake."""

    __slots__ = ("_proto",)

    def __init__(self, transport: asyncio.Transport, peer: str, listener: str, loopback: bool,
                 proto: _WsProtocol) -> None:
        super().__init__(transport, peer, listener, loopback)
        self._proto = proto

    def write(self, data: bytes) -> None:
        """One binary frame; dropped once closed or once the client's close frame was read."""
        ws = self._proto.ws
        if not self.closed and ws.state is ConnectionState.OPEN:
            self._transport.write(ws.send(BytesMessage(data)))

    def close(self, code: int = CloseReason.NORMAL_CLOSURE, reason: str = "") -> None:
        """Send a close frame after what was written; the TCP close follows the client's reply."""
        if not self.closed:
            self.closed = True
            self._proto.start_close(code, reason)


@dataclass(frozen=True, slots=True)
class _Settings:
    kind: str
    ws_path: str
    ws_frame_max: int
    handshake_timeout_s: float
    write_high_water: int


class Listener:
    """A listening socket of one kind and the connections it accepted."""

    def __init__(self, settings: _Settings, handler: Handler) -> None:
        self.kind = settings.kind
        self.port = 0
        self.loopback = False
        self.settings = settings
        self.handler = handler
        self._server: asyncio.Server | None = None
        self._conns: dict[int, Conn] = {}  # by id: connections the handler knows
        self._protocols: dict[int, _BaseProtocol] = {}  # every open connection, by serial
        self._closing = False
        self._idle = asyncio.Event()  # set once closing and no connection is left

    def connections(self) -> list[Conn]:
        """The open connections the handler was told about, oldest first."""
        return list(self._conns.values())

    def close(self) -> None:
        """Stop accepting and close every connection (handshakes in progress are dropped)."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for proto in list(self._protocols.values()):
            proto.shutdown()
        self._check_idle()

    async def wait_closed(self, grace_s: float = CLOSE_GRACE_S) -> None:
        """Wait until every connection is lost; abort those still open after `grace_s`."""
        assert self._closing, "call close() first"
        if self._server is not None:
            await self._server.wait_closed()
        try:
            await asyncio.wait_for(self._idle.wait(), grace_s)
        except TimeoutError:
            for proto in list(self._protocols.values()):
                proto.transport.abort()
            await asyncio.wait_for(self._idle.wait(), grace_s)
        assert not self._protocols and not self._conns, (self._protocols, self._conns)

    @property
    def serving(self) -> bool:
        return self._server is not None and self._server.is_serving()

    async def start_serving(self) -> None:
        """Start accepting (for a listener started with `start_serving=False`)."""
        assert self._server is not None and not self._closing
        await self._server.start_serving()

    def _started(self, server: asyncio.Server) -> None:
        self._server = server
        names = [sock.getsockname() for sock in server.sockets]
        assert names, "a server without sockets"
        self.port = names[0][1]
        self.loopback = all(_is_loopback(name[0]) for name in names)

    def _accepted(self, proto: _BaseProtocol, transport: asyncio.Transport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=self.settings.write_high_water)
        self._protocols[proto.serial] = proto
        if self._closing:
            proto.shutdown()

    def _new_conn(self, proto: _BaseProtocol, cls: type[Conn], *extra: Any) -> Conn:
        peer = _format_peer(proto.transport.get_extra_info("peername"))
        conn = cls(proto.transport, peer, self.kind, self.loopback, *extra)
        self._conns[conn.id] = conn
        return conn

    def _lost(self, proto: _BaseProtocol, conn: Conn | None, exc: Exception | None) -> None:
        self._protocols.pop(proto.serial, None)
        if conn is not None:
            conn.closed = True
            del self._conns[conn.id]
            self.handler.connection_lost(conn, exc)
        self._check_idle()

    def _check_idle(self) -> None:
        if self._closing and not self._protocols:
            self._idle.set()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _format_peer(peername: Any) -> str:
    if not isinstance(peername, tuple) or len(peername) < 2:
        return str(peername)
    host, port = peername[0], peername[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _announce(handler: Handler, conn: Conn) -> None:
    """`handler.connection_made(conn)`; if it raises, the connection is aborted (and the error
    propagates to asyncio, which logs it): only that connection suffers."""
    try:
        handler.connection_made(conn)
    except Exception:
        conn.abort()
        raise


class _BaseProtocol(asyncio.Protocol):
    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.handler = listener.handler
        self.serial = next(_serials)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.conn: Conn | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.listener._lost(self, self.conn, exc)

    def pause_writing(self) -> None:
        pass  # the handler sees write_buffer_size() above the high-water mark

    def resume_writing(self) -> None:
        conn = self.conn
        if conn is not None and not conn.closed:
            self.handler.writable(conn)

    def shutdown(self) -> None:
        raise NotImplementedError


class _StreamProtocol(_BaseProtocol):
    """TCP and TLS: bytes go straight to the handler."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport), transport
        self.transport = transport
        self.listener._accepted(self, transport)
        if transport.is_closing():
            return
        conn = self.listener._new_conn(self, Conn)
        self.conn = conn
        # The hot path: asyncio calls the handler's method with no frame of ours in between.
        self.data_received = functools.partial(self.handler.data_received, conn)  # type: ignore
        _announce(self.handler, conn)

    def data_received(self, data: bytes) -> None:  # replaced in connection_made
        raise AssertionError("data before connection_made")

    def shutdown(self) -> None:
        if self.conn is not None:
            self.conn.close()
        else:
            self.transport.abort()


class _WsProtocol(_BaseProtocol):
    """WebSocket: our bounds on the request head, then `wsproto` for the handshake and frames."""

    def __init__(self, listener: Listener) -> None:
        super().__init__(listener)
        self.ws = WSConnection(ConnectionType.SERVER)
        self._head = bytearray()
        self._frame_bytes = 0  # payload bytes of the client frame being received
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport), transport
        self.transport = transport
        self.listener._accepted(self, transport)
        if not transport.is_closing():
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.listener.settings.handshake_timeout_s,
                                          transport.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn is None:
            self._handshake(data)
        else:
            self._frames(data)

    def shutdown(self) -> None:
        if isinstance(self.conn, WsConn):
            self.conn.close(CloseReason.GOING_AWAY, "server shutting down")
        else:
            self.transport.abort()

    def start_close(self, code: int, reason: str) -> None:
        """Send our close frame; close the TCP connection on the reply or after a timeout."""
        if self.ws.state is not ConnectionState.OPEN:
            return
        self.transport.write(self.ws.send(CloseConnection(code, reason)))
        self.transport.resume_reading()  # the client's close frame must be read
        self._cancel_timer()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(WS_CLOSE_TIMEOUT_S, self.transport.close)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _handshake(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        self._head += data
        if not _may_start_http(self._head):
            self._refuse(400, "not an HTTP request (expected a WebSocket upgrade GET)")
            return
        end = self._head.find(b"\r\n\r\n", 0, HEAD_BYTES_MAX)
        if end < 0:
            if len(self._head) >= HEAD_BYTES_MAX:
                self._refuse(431, f"request head longer than {HEAD_BYTES_MAX} bytes")
            return
        head, rest = bytes(self._head[:end + 4]), bytes(self._head[end + 4:])
        self._head = bytearray()
        try:
            self.ws.receive_data(head)
            [request] = self.ws.events()
        except RemoteProtocolError as err:
            hint = err.event_hint
            assert isinstance(hint, RejectConnection), hint
            self._refuse(hint.status_code, f"WebSocket handshake refused: {err}", hint.headers)
            return
        except UnicodeError as err:  # wsproto decodes Host as IDNA
            self._refuse(400, f"WebSocket handshake refused: bad Host header ({err})")
            return
        assert isinstance(request, Request), request
        self._accept(request, rest)

    def _accept(self, request: Request, rest: bytes) -> None:
        path = request.target.partition("?")[0]
        ws_path = self.listener.settings.ws_path
        if path != ws_path:
            self._refuse(404, f"no WebSocket endpoint at {path[:100]!r} (it is {ws_path!r})")
            return
        subprotocol = select_subprotocol(request.subprotocols)
        if subprotocol is None:
            self._refuse(400, "no MQTT subprotocol offered: Sec-WebSocket-Protocol must list "
                              f"'mqtt' (MQTT-6.0.0-3), got {request.subprotocols}")
            return
        self._cancel_timer()
        self.transport.write(self.ws.send(AcceptConnection(subprotocol=subprotocol)))
        self.conn = self.listener._new_conn(self, WsConn, self)
        _announce(self.handler, self.conn)
        if rest:
            self._frames(rest)

    def _refuse(self, status: int, reason: str, headers: Any = ()) -> None:
        """Answer the handshake with HTTP `status` and `reason` as the body, then close."""
        assert 400 <= status < 500, status
        self._cancel_timer()
        body = (reason + "\n").encode()
        head = [(b"Content-Type", b"text/plain; charset=utf-8"),
                (b"Content-Length", b"%d" % len(body)), (b"Connection", b"close"), *headers]
        refusal = RejectConnection(status_code=status, headers=head, has_body=True)
        self.transport.write(self.ws.send(refusal) + self.ws.send(RejectData(body)))
        self.transport.close()

    def _frames(self, data: bytes) -> None:
        """Feed wsproto; hand the handler the payload of consecutive data frames in one call."""
        if self.transport.is_closing():
            return  # wsproto refuses input after the close handshake
        self.ws.receive_data(data)
        pending: list[bytes | bytearray] = []
        for event in self.ws.events():
            if type(event) is BytesMessage:
                if not self._frame_data(event, pending):
                    return
                continue
            self._deliver(pending)
            if self.transport.is_closing():
                return
            self._control(event)
        self._deliver(pending)

    def _frame_data(self, event: BytesMessage, pending: list[bytes | bytearray]) -> bool:
        """Queue a data frame's bytes; False (and the connection failed) past `ws_frame_max`."""
        self._frame_bytes += len(event.data)
        limit = self.listener.settings.ws_frame_max
        if self._frame_bytes > limit:
            self._deliver(pending)
            self._fail(CloseReason.MESSAGE_TOO_BIG, f"frame exceeds {limit} bytes")
            return False
        if event.frame_finished:
            self._frame_bytes = 0
        if event.data:
            pending.append(event.data)
        return True

    def _deliver(self, pending: list[bytes | bytearray]) -> None:
        conn = self.conn
        assert conn is not None
        if pending and not conn.closed and not self.transport.is_closing():
            # bytes(x) of a bytes object is the object itself: no copy for one frame
            self.handler.data_received(conn, bytes(pending[0]) if len(pending) == 1 else
                                       b"".join(pending))
        pending.clear()

    def _control(self, event: Event) -> None:
        if isinstance(event, Ping):
            if self.ws.state is ConnectionState.OPEN:  # nothing may follow our close frame
                self.transport.write(self.ws.send(event.response()))
        elif isinstance(event, TextMessage):
            self._fail(CloseReason.UNSUPPORTED_DATA, "text frame (MQTT-6.0.0-1: binary only)")
        elif isinstance(event, CloseConnection):
            self._closed(event)
        # a Pong needs nothing

    def _closed(self, event: CloseConnection) -> None:
        """The client's close frame (echoed, or the reply to ours), or wsproto's parse error."""
        state = self.ws.state
        if state is ConnectionState.REMOTE_CLOSING:
            self.transport.write(self.ws.send(event.response()))
        elif state is not ConnectionState.CLOSED:  # a frame error: close with its code
            self._fail(event.code, event.reason or "protocol error")
            return
        self._drop()

    def _fail(self, code: int, reason: str) -> None:
        """Close with `code` (unless our close frame is already out), then drop the TCP link."""
        if self.ws.state is ConnectionState.OPEN:
            self.transport.write(self.ws.send(CloseConnection(code, reason)))
        self._drop()

    def _drop(self) -> None:
        assert self.conn is not None
        self.conn.closed = True
        self._cancel_timer()
        self.transport.close()


def _may_start_http(head: bytearray) -> bool:
    """Whether `head` can still begin an HTTP request line: an upper-case method, then a space."""
    method = bytes(head[:8]).split(b" ", 1)[0]
    if not method:
        return False
    return method.isalpha() and method.isupper() and (len(method) < 8 or b" " in head[:8])


def select_subprotocol(offered: list[str] | tuple[str, ...]) -> str | None:
    """The subprotocol to answer: "mqtt" if offered, else "mqttv3.1" if offered, else None."""
    for name in SUBPROTOCOLS:
        if name in offered:
            return name
    return None


async def stop_serving(listeners: list[Any], conns: dict[int, Any]) -> None:
    """Close `listeners` (and wait for them), then abort every connection in `conns`."""
    for listener in listeners:
        listener.close()
    for listener in listeners:
        with contextlib.suppress(Exception):
            await listener.wait_closed()
    for conn in list(conns.values()):
        conn.abort()


async def start_listener(kind: str, host: str, port: int, handler: Handler, *,
                         ssl_context: ssl.SSLContext | None = None, ws_path: str = "/mqtt",
                         ws_frame_max: int = FRAME_MAX_DEFAULT,
                         handshake_timeout_s: float = 10.0,
                         write_high_water: int = 1 << 20,
                         start_serving: bool = True) -> Listener:
    """Listen on `host:port` (port 0 picks a free one; see `.port`) for `kind` connections.

    With `start_serving=False` the port is bound (and `.port` known) but connections are refused
    until `await listener.start_serving()`.

    `kind` is "tcp", "ws" (no `ssl_context`) or "tls", "wss" (`ssl_context` required). With a
    host name that resolves to several addresses and port 0, each address gets its own port and
    `.port` is the first; pass an IP address to avoid that.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    secure = kind in ("tls", "wss")
    if secure and not isinstance(ssl_context, ssl.SSLContext):
        raise ValueError(f"a {kind!r} listener needs ssl_context (see make_ssl_context)")
    if not secure and ssl_context is not None:
        raise ValueError(f"a {kind!r} listener takes no ssl_context (use 'tls' or 'wss')")
    if not ws_path.startswith("/"):
        raise ValueError(f"ws_path must start with '/', got {ws_path!r}")
    if not handshake_timeout_s > 0:
        raise ValueError(f"handshake_timeout_s must be > 0, got {handshake_timeout_s!r}")
    if write_high_water < 1:
        raise ValueError(f"write_high_water must be >= 1, got {write_high_water!r}")
    if ws_frame_max < FRAME_MAX_MIN:
        raise ValueError(f"ws_frame_max must be >= {FRAME_MAX_MIN}, got {ws_frame_max!r}")
    settings = _Settings(kind, ws_path, ws_frame_max, handshake_timeout_s, write_high_water)
    listener = Listener(settings, handler)
    protocol = _WsProtocol if kind in ("ws", "wss") else _StreamProtocol
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        functools.partial(protocol, listener), host, port, ssl=ssl_context,
        ssl_handshake_timeout=handshake_timeout_s if secure else None,
        start_serving=start_serving)
    listener._started(server)
    return listener


def make_ssl_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2 or later) with the PEM certificate chain and key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context
