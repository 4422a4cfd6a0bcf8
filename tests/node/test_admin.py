"""Admin HTTP: the pure router, and the h11 server's connection handling over loopback."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from real.node.admin import REQUESTS_PER_CONNECTION_MAX, AdminServer, Text, route


class View:
    def __init__(self) -> None:
        self.kicked: list[str] = []

    def health(self) -> dict[str, Any]:
        return {"status": "ok"}

    def meta_nodes(self) -> list[dict[str, Any]]:
        return [{"node_id": 1}]

    def meta_config(self) -> dict[str, Any]:
        return {"k": 1}

    def meta_topics(self) -> list[dict[str, Any]]:
        return [{"name": "t", "shards": [[1, 1, [1, 2], [1, 2], 1]]}]

    def replication(self) -> dict[str, Any]:
        return {"leads": [], "follows": []}

    def storage(self) -> dict[str, Any]:
        return {"default_engine": "file", "shards": []}


class MqttView(View):
    def metrics(self) -> Text:
        return Text("# TYPE up gauge\nup 1.0\n")

    def mqtt_disconnect(self, client_id: str) -> bool:
        self.kicked.append(client_id)
        return client_id == "c/1"


def test_route() -> None:
    assert route(View(), "GET", "/meta/nodes") == (200, [{"node_id": 1}])
    assert route(View(), "GET", "/meta/config") == (200, {"k": 1})
    assert route(View(), "GET", "/meta/topics")[1][0]["name"] == "t"
    assert route(View(), "GET", "/replication") == (200, {"leads": [], "follows": []})
    status, body = route(View(), "GET", "/storage")
    assert status == 200
    assert body["default_engine"] == "file"
    status, body = route(View(), "GET", "/x")
    assert status == 404
    assert "'/x'" in body["error"]
    assert body["paths"] == ["/health", "/meta/config", "/meta/nodes", "/meta/topics",
                             "/replication", "/storage"]
    status, body = route(View(), "DELETE", "/health")
    assert status == 405
    assert "use GET" in body["error"]


def test_route_optional_methods() -> None:
    view = MqttView()
    assert route(view, "GET", "/metrics") == (200, Text("# TYPE up gauge\nup 1.0\n"))
    assert route(view, "POST", "/mqtt/clients/c%2F1/disconnect") == (200, {"disconnected": "c/1"})
    status, body = route(view, "POST", "/mqtt/clients/other/disconnect")
    assert status == 404
    assert "'other'" in body["error"]
    status, body = route(view, "GET", "/mqtt/clients/c%2F1/disconnect")
    assert status == 405
    assert "use POST" in body["error"]
    assert view.kicked == ["c/1", "other"]
    assert route(View(), "GET", "/metrics")[0] == 404  # a view without a broker


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if line)
    body = await reader.readexactly(int(headers["content-length"]))
    return int(lines[0].split(" ")[1]), headers, body


async def read_json(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], Any]:
    status, headers, body = await read_response(reader)
    assert headers["content-type"] == "application/json"
    return status, headers, json.loads(body)


async def with_server(test, view: Any = None, token: bytes | None = None, **kw: int) -> None:
    server = AdminServer(view or View(), "127.0.0.1", 0, request_bytes_max=kw.get("limit", 1024),
                         connections_max=kw.get("conns", 4), token=token)
    port = await server.start()
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(server.serve_until(stop))
        try:
            async with asyncio.timeout(10):
                await test(port)
        finally:
            stop.set()
    assert server.active == 0


def test_keep_alive_and_bad_request_closes_only_its_connection() -> None:
    async def test(port: int) -> None:
        r1, w1 = await asyncio.open_connection("127.0.0.1", port)
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        for path in (b"/health", b"/meta/config"):
            w1.write(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, _ = await read_json(r1)
            assert status == 200
            assert "connection" not in headers  # HTTP/1.1: persistent
        w2.write(b"BOGUS\r\n\r\n")
        status, headers, body = await read_json(r2)
        assert status == 400
        assert headers["connection"] == "close"
        assert "malformed request" in body["error"]
        assert await r2.read() == b""  # closed by the server
        w1.write(b"GET /meta/nodes HTTP/1.1\r\nHost: x\r\n\r\n")  # the good one still works
        assert (await read_json(r1))[2] == [{"node_id": 1}]
        w1.close()
        w2.close()

    asyncio.run(with_server(test))


@pytest.mark.parametrize(
    ("request_bytes", "status", "needle"),
    [
        (b"GET /health\r\n\r\n", 400, "malformed request"),
        (b"G(T /health HTTP/1.1\r\nHost: x\r\n\r\n", 400, "malformed request"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n", 400, "malformed request"),
        (b"GET / HTTP/1.1\r\n\r\n", 400, "malformed request"),  # HTTP/1.1 needs Host
        (b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 400,
         "bodies are not accepted"),
        (b"POST /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
         400, "bodies are not accepted"),
    ],
)
def test_bad_requests(request_bytes: bytes, status: int, needle: str) -> None:
    async def test(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_bytes)
        got, headers, body = await read_json(reader)
        assert (got, headers["connection"]) == (status, "close")
        assert needle in body["error"]
        assert await reader.read() == b""
        writer.close()

    asyncio.run(with_server(test))


@pytest.mark.parametrize("split", [False, True])
def test_oversized_head_gets_431(split: bool) -> None:
    big = b"GET /health HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 2000 + b"\r\n\r\n"

    async def test(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if split:  # arrives in pieces: refused before the head completes
            writer.write(big[:700])
            await writer.drain()
        else:  # arrives whole: refused all the same
            writer.write(big)
        status, _, body = await read_json(reader)
        assert status == 431
        assert "exceeds 512 bytes" in body["error"]
        writer.close()

    asyncio.run(with_server(test, limit=512))


def test_head_at_the_limit_is_served() -> None:
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX: "
    head += b"a" * (512 - len(head) - 4) + b"\r\n\r\n"
    assert len(head) == 512

    async def test(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head + head)  # pipelined: each is measured on its own
        assert (await read_json(reader))[2] == {"status": "ok"}
        assert (await read_json(reader))[2] == {"status": "ok"}
        writer.close()

    asyncio.run(with_server(test, limit=512))


def test_connection_limit_gets_503() -> None:
    async def test(port: int) -> None:
        first = await asyncio.open_connection("127.0.0.1", port)
        first[1].write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        await read_json(first[0])  # the first connection is now counted as active
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        status, headers, body = await read_json(reader)
        assert (status, headers["connection"]) == (503, "close")
        assert "max 1" in body["error"]
        writer.close()
        first[1].close()

    asyncio.run(with_server(test, conns=1))


def test_http10_and_connection_close_end_the_connection() -> None:
    async def test(port: int) -> None:
        for request in (b"GET /health HTTP/1.0\r\n\r\n",
                        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            status, headers, body = await read_json(reader)
            assert (status, body) == (200, {"status": "ok"})
            assert headers["connection"] == "close"
            assert await reader.read() == b""
            writer.close()

    asyncio.run(with_server(test))


def test_requests_per_connection_bound() -> None:
    async def test(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * (REQUESTS_PER_CONNECTION_MAX + 1))
        for i in range(REQUESTS_PER_CONNECTION_MAX):
            status, headers, _ = await read_json(reader)
            assert status == 200
            last = i == REQUESTS_PER_CONNECTION_MAX - 1
            assert (headers.get("connection") == "close") == last
        assert await reader.read() == b""
        writer.close()

    asyncio.run(with_server(test))


def test_text_body_405_allow_and_disconnect_post() -> None:
    async def test(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = await read_response(reader)
        assert (status, body) == (200, b"# TYPE up gauge\nup 1.0\n")
        assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        writer.write(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        status, headers, body = await read_json(reader)
        assert (status, headers["allow"]) == (405, "get, post")  # (read lower-cased)
        writer.write(b"POST /mqtt/clients/c%2F1/disconnect HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 0\r\n\r\n")
        status, _, body = await read_json(reader)
        assert (status, body) == (200, {"disconnected": "c/1"})
        writer.close()

    asyncio.run(with_server(test, MqttView()))


def test_a_token_guards_every_post_and_strangers_are_refused() -> None:
    view = MqttView()
    token = b"s3cret-token-0123456789"

    async def test(port: int) -> None:
        async def post(auth: bytes | None) -> int:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            head = b"POST /mqtt/clients/c%2F1/disconnect HTTP/1.1\r\nHost: x\r\n"
            if auth is not None:
                head += b"Authorization: " + auth + b"\r\n"
            w.write(head + b"\r\n")
            status, headers, body = await read_json(r)
            w.close()
            if status == 401:
                assert "bearer" in headers["www-authenticate"].lower() and "token" in body["error"]
            return status

        assert await post(None) == 401
        assert await post(b"Bearer wrong-token-0123456789") == 401
        assert await post(b"Basic " + token) == 401
        assert view.kicked == [], "a refused request acted"
        assert await post(b"Bearer " + token) == 200
        assert view.kicked == ["c/1"]
        r, w = await asyncio.open_connection("127.0.0.1", port)  # reads need no token
        w.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_json(r))[0] == 200
        w.close()

    asyncio.run(with_server(test, view, token=token))


def test_an_admin_api_off_loopback_needs_a_token_file(tmp_path: Any) -> None:
    from real.node.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="admin.token_file"):
        load_config(overrides={"bind": "0.0.0.0"})
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(ConfigError, match="at least 16"):
        load_config(overrides={"bind": "0.0.0.0", "admin_token_file": str(short)})
    good = tmp_path / "token"
    good.write_text("0123456789abcdef0123\n")
    assert load_config(overrides={"bind": "0.0.0.0", "admin_token_file": str(good)})
    assert load_config(overrides={"bind": "127.0.0.1"})


def test_link_fault_routes() -> None:
    class FaultView(View):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[Any] = []

        def net_faults(self, args: Any) -> dict[str, Any]:
            self.calls.append(args)
            if args and args.get("peer") == 9:
                raise ValueError("no peer 9")
            return {}

    v = FaultView()
    assert route(v, "POST", "/faults/net", "peer=2&drop_out=1&loss=0.5")[0] == 200
    assert v.calls[-1] == {"peer": 2, "drop_out": 1, "loss": 0.5}
    assert route(v, "POST", "/faults/net", "peer=9")[0] == 400
    assert route(v, "POST", "/faults/net", "drop_out=1")[0] == 400
    assert route(v, "POST", "/faults/net", "peer=2&bogus=1")[0] == 400
    assert route(v, "POST", "/faults/net", "peer=x")[0] == 400
    assert route(v, "POST", "/faults/heal")[0] == 200 and v.calls[-1] == {}
    assert route(v, "GET", "/faults/net")[0] == 200 and v.calls[-1] is None
    assert route(v, "DELETE", "/faults/net")[0] == 405


def test_membership_routes_validate_follow_the_leader_and_need_the_token() -> None:
    class MemberView(View):
        def __init__(self) -> None:
            super().__init__()
            self.changes: list[tuple[str, int, str]] = []

        def cluster_members(self) -> dict[str, Any]:
            return {"voters": [1, 2, 3], "learners": []}

        async def member_change(self, kind: str, node_id: int, addr: str) -> tuple[int, Any]:
            self.changes.append((kind, node_id, addr))
            if node_id == 7:
                return 421, {"error": "not the leader", "leader": 2, "leader_admin": "h:1"}
            return 200, {"message": "done"}

    view = MemberView()
    token = b"s3cret-token-0123456789"

    async def test(port: int) -> None:
        async def call(method: str, target: str, auth: bool = True) -> tuple[int, Any]:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            head = f"{method} {target} HTTP/1.1\r\nHost: x\r\n".encode()
            if auth:
                head += b"Authorization: Bearer " + token + b"\r\n"
            w.write(head + b"\r\n")
            status, _headers, body = await read_json(r)
            w.close()
            return status, body

        assert await call("GET", "/cluster/members", auth=False) == (
            200, {"voters": [1, 2, 3], "learners": []})
        assert (await call("POST", "/cluster/members?id=4&raft_addr=h:7004", auth=False))[0] \
            == 401
        assert (await call("POST", "/cluster/members/4/remove", auth=False))[0] == 401
        assert view.changes == [], "a refused request acted"
        for bad in ("id=x&raft_addr=h:1", "id=4", "id=4&raft_addr=h", "id=0&raft_addr=h:1",
                    "id=4&raft_addr=h:99999", "id=4&raft_addr=h:1&extra=1"):
            status, body = await call("POST", f"/cluster/members?{bad}")
            assert status == 400 and body["error"], bad
        assert view.changes == []
        assert (await call("POST", "/cluster/members?id=4&raft_addr=10.0.0.4%3A7004"))[0] == 200
        assert (await call("POST", "/cluster/members/3/remove"))[0] == 200
        status, body = await call("POST", "/cluster/members/7/remove")
        assert status == 421 and body["leader"] == 2
        assert view.changes == [("add", 4, "10.0.0.4:7004"), ("remove", 3, ""),
                                ("remove", 7, "")]

    asyncio.run(with_server(test, view, token=token))
