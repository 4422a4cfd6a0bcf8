"""Admin HTTP: the pure parser/router, and the asyncio server's connection handling."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from real.node.admin import AdminServer, HttpError, Request, parse_head, render, route


class View:
    def health(self) -> dict[str, Any]:
        return {"status": "ok"}

    def meta_nodes(self) -> list[dict[str, Any]]:
        return [{"node_id": 1}]

    def meta_config(self) -> dict[str, Any]:
        return {"k": 1}

    def storage(self) -> dict[str, Any]:
        return {"default_engine": "file", "shards": []}


def test_parse_head() -> None:
    req = parse_head(b"GET /health?x=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert req == Request("GET", "/health", "HTTP/1.1", (("host", "a"), ("connection", "close")))
    assert not req.keep_alive
    assert parse_head(b"GET / HTTP/1.1\r\n\r\n").keep_alive
    assert not parse_head(b"GET / HTTP/1.0\r\n\r\n").keep_alive


@pytest.mark.parametrize(
    ("head", "status", "needle"),
    [
        (b"GET /health\r\n\r\n", 400, "malformed request line"),
        (b"GET  /health HTTP/1.1\r\n\r\n", 400, "malformed request line"),
        (b"G(T /health HTTP/1.1\r\n\r\n", 400, "malformed method"),
        (b"GET /health HTTP/2.0\r\n\r\n", 400, "unsupported HTTP version"),
        (b"GET health HTTP/1.1\r\n\r\n", 400, "must start with '/'"),
        (b"GET / HTTP/1.1\r\nno colon\r\n\r\n", 400, "malformed header line"),
        (b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", 400, "bodies are not accepted"),
        (b"GET / HTTP/1.1\r\n" + b"a: b\r\n" * 65 + b"\r\n", 431, "header fields"),
    ],
)
def test_parse_head_rejects(head: bytes, status: int, needle: str) -> None:
    with pytest.raises(HttpError) as info:
        parse_head(head)
    assert info.value.status == status and needle in info.value.message


def test_route() -> None:
    get = parse_head(b"GET /meta/nodes HTTP/1.1\r\n\r\n")
    assert route(View(), get) == (200, [{"node_id": 1}])
    assert route(View(), parse_head(b"GET /meta/config HTTP/1.1\r\n\r\n")) == (200, {"k": 1})
    status, body = route(View(), parse_head(b"GET /storage HTTP/1.1\r\n\r\n"))
    assert status == 200 and body["default_engine"] == "file"
    status, body = route(View(), parse_head(b"GET /x HTTP/1.1\r\n\r\n"))
    assert status == 404 and "'/x'" in body["error"]
    status, body = route(View(), parse_head(b"DELETE /health HTTP/1.1\r\n\r\n"))
    assert status == 405 and "use GET" in body["error"]


def test_render() -> None:
    raw = render(200, {"b": 1, "a": 2}, keep_alive=False)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close" in head
    assert body == b'{"a":2,"b":1}\n' and f"Content-Length: {len(body)}".encode() in head


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], Any]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if line)
    body = await reader.readexactly(int(headers["content-length"]))
    return int(lines[0].split(" ")[1]), headers, json.loads(body)


async def with_server(test, **kw: int) -> None:
    server = AdminServer(View(), "127.0.0.1", 0, request_bytes_max=kw.get("limit", 1024),
                         connections_max=kw.get("conns", 4))
    port = await server.start()
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(server.serve_until(stop))
        try:
            async with asyncio.timeout(10):
                await test(port)
        finally:
            stop.set()


def test_keep_alive_and_bad_request_closes_only_its_connection() -> None:
    async def test(port: int) -> None:
        r1, w1 = await asyncio.open_connection("127.0.0.1", port)
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)
        for path in (b"/health", b"/meta/config"):
            w1.write(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, _ = await read_response(r1)
            assert status == 200 and headers["connection"] == "keep-alive"
        w2.write(b"BOGUS\r\n\r\n")
        status, headers, body = await read_response(r2)
        assert status == 400 and headers["connection"] == "close"
        assert "malformed request line" in body["error"]
        assert await r2.read() == b""  # closed by the server
        w1.write(b"GET /meta/nodes HTTP/1.1\r\n\r\n")  # the good connection still works
        assert (await read_response(r1))[2] == [{"node_id": 1}]
        w1.close()
        w2.close()

    asyncio.run(with_server(test))


def test_oversized_head_gets_431() -> None:
    async def test(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nX: " + b"a" * 2000 + b"\r\n\r\n")
        status, _, body = await read_response(reader)
        assert status == 431 and "exceeds 512 bytes" in body["error"]
        writer.close()

    asyncio.run(with_server(test, limit=512))


def test_connection_limit_gets_503() -> None:
    async def test(port: int) -> None:
        first = await asyncio.open_connection("127.0.0.1", port)
        first[1].write(b"GET /health HTTP/1.1\r\n\r\n")
        await read_response(first[0])  # the first connection is now counted as active
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        status, _, body = await read_response(reader)
        assert status == 503 and "max 1" in body["error"]
        writer.close()
        first[1].close()

    asyncio.run(with_server(test, conns=1))
