"""Server ports are picked outside the kernel's ephemeral range, where no outgoing connection
can take them between the pick and the bind (real/node/ports.py)."""

from __future__ import annotations

import socket

import pytest

from real.node import ports


def test_ports_come_from_below_the_ephemeral_range_and_are_free() -> None:
    low, _ = ports.ephemeral_range()
    got = ports.free_ports("127.0.0.1", 12)
    assert len(set(got)) == 12
    assert all(ports.LOWEST <= p < low for p in got), (got, low)
    for port in got:  # each can be bound now
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_range_leaving_no_room_falls_back_to_the_kernels_choice(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "ephemeral_range", lambda: (ports.LOWEST + 10, 65_000))
    got = ports.free_ports("127.0.0.1", 3)
    assert len(set(got)) == 3 and all(p > 0 for p in got)


def test_a_taken_port_is_never_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        taken = busy.getsockname()[1]
        busy.listen()
        monkeypatch.setattr(ports, "LOWEST", taken)  # the range is the taken port and the next
        monkeypatch.setattr(ports, "ephemeral_range", lambda: (taken + 2 + ports.ROOM_MIN, 0))
        monkeypatch.setattr(ports, "ROOM_MIN", 1)
        assert taken not in ports.free_ports("127.0.0.1", 1)
