"""Opt-in long fuzz run against a live node: `python -m scenarios.fuzz.mqtt --inputs 100000`.

Starts `twinmq serve` on free loopback ports, then sends `--inputs` malformed or mutated MQTT byte
streams, each on its own TCP connection (`--concurrency` at a time; a mutated CONNECT, then
mutated packets, split at random points). Every `--canary-every` inputs a well-behaved client
publishes a QoS 1 message to a persistent subscriber and must get it back: the broker keeps
serving. At the end the node must still be running and `/health` must answer. Writes
`reports/fuzz-mqtt.json` and exits non-zero on any crash or canary failure.

Mutations (seeded, reproducible with --seed): bit flips, byte deletions and insertions, boundary
bytes (0x00, 0x7F, 0x80, 0xFF), splices of valid packets of every type in MQTT 3.1.1 and 5, and
plain random bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from real.mqtt import (
    MQTT_3_1_1,
    MQTT_5,
    Connect,
    Decoder,
    Disconnect,
    Properties,
    PropertyId,
    Puback,
    Publish,
    Subscribe,
    Subscription,
    Unsubscribe,
    Will,
    encode,
)
from scenarios.provenance import provenance


def _seeds() -> list[bytes]:
    out = []
    for v in (MQTT_3_1_1, MQTT_5):
        props = Properties.of((PropertyId.SESSION_EXPIRY_INTERVAL, 30)) if v == 5 else Properties()
        out.append(encode(Connect("fz", protocol_version=v, clean_start=False, keep_alive=3,
                                  will=Will("fz/w", b"x", 1, True), username="u",
                                  password=b"p", properties=props), v))
        alias = Properties.of((PropertyId.TOPIC_ALIAS, 1)) if v == 5 else Properties()
        out.append(encode(Publish("fz/a", b"p" * 20, 1, True, False, 7, alias), v))
        out.append(encode(Publish("fz/b", b"q", 2, False, False, 9), v))
        out.append(encode(Subscribe(3, (Subscription("$share/g/fz/#", 2),
                                        Subscription("fz/+", 1))), v))
        out.append(encode(Unsubscribe(4, ("fz/+",)), v))
        out.append(encode(Disconnect(), v))
    out += [bytes([0x62, 2, 0, 9]), bytes([0x40, 2, 0, 1]), bytes([0x50, 2, 0, 9]),
            bytes([0x70, 2, 0, 9]), bytes([0xC0, 0]), bytes([0xF0, 0])]
    return out


SEEDS = _seeds()
CONNECTS = [s for s in SEEDS if s[0] == 0x10]


def mutate(rng: random.Random, data: bytes, splices: list[bytes], count: int) -> bytes:
    """`count` random edits of `data`: a bit flip, a deleted or inserted byte, a boundary byte
    (0x00, 0x7F, 0x80, 0xFF), or one of `splices` inserted at a random point."""
    buf = bytearray(data)
    for _ in range(count):
        op = rng.randrange(5)
        if op == 0 and buf:
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            del buf[rng.randrange(len(buf))]
        elif op == 2:
            buf.insert(rng.randrange(len(buf) + 1), rng.randrange(256))
        elif op == 3 and buf:
            buf[rng.randrange(len(buf))] = rng.choice([0x00, 0x7F, 0x80, 0xFF])
        else:
            cut = rng.randrange(len(buf) + 1)
            buf = buf[:cut] + bytearray(rng.choice(splices)) + buf[cut:]
    return bytes(buf)


def make_input(rng: random.Random) -> list[bytes]:
    """One hostile stream, as the chunks to write."""
    if rng.random() < 0.1:
        data = bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))
    else:
        parts = [rng.choice(CONNECTS)] + [rng.choice(SEEDS) for _ in range(rng.randint(0, 6))]
        data = mutate(rng, b"".join(parts), SEEDS, rng.randint(1, 5))
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 3))))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def free_port() -> int:
    """A free port outside the ephemeral range (real/node/ports.py)."""
    from real.node.ports import free_port as pick

    return pick()


async def send_one(port: int, chunks: list[bytes]) -> str:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        return f"connect: {exc}"
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()
        async with asyncio.timeout(5):
            while await reader.read(65536):
                pass
    except (OSError, TimeoutError):
        pass
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
    return ""


async def canary(port: int, n: int) -> None:
    """A persistent subscriber gets a QoS 1 message from a publisher (raises on failure)."""
    async def session(packets: list) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Decoder]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(encode(p, MQTT_3_1_1) for p in packets))
        return reader, writer, Decoder(version=MQTT_3_1_1)

    async def expect(reader, decoder, kind) -> object:
        while True:
            data = await reader.read(65536)
            if not data:
                raise RuntimeError(f"canary {n}: connection closed waiting for {kind.__name__}")
            for packet in decoder.feed(data):
                if isinstance(packet, kind):
                    return packet

    async with asyncio.timeout(10):
        sr, sw, sd = await session([Connect("canary-sub", clean_start=False),
                                    Subscribe(1, (Subscription("canary/t", 1),))])
        from real.mqtt import Suback
        await expect(sr, sd, Suback)
        pr, pw, pd = await session([Connect(f"canary-pub-{n}"),
                                    Publish("canary/t", b"%d" % n, 1, packet_id=1)])
        await expect(pr, pd, Puback)
        while True:
            got = await expect(sr, sd, Publish)
            assert isinstance(got, Publish)
            sw.write(encode(Puback(got.packet_id), MQTT_3_1_1))  # type: ignore[arg-type]
            if got.payload == b"%d" % n:
                break
        for w in (sw, pw):
            w.write(encode(Disconnect(), MQTT_3_1_1))
            w.close()


async def run(args: argparse.Namespace) -> dict:
    rng = random.Random(args.seed)  # noqa: S311 - seeded, reproducible fuzz inputs
    data_dir = tempfile.mkdtemp(prefix="twinmq-fuzz-")
    port, admin = free_port(), free_port()
    log_path = Path(data_dir) / "node.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "real", "serve", "--data-dir", data_dir, "--mqtt-port", str(port),
         "--admin-port", str(admin), "--kafka-port", str(free_port()), "--ws-port", "0"],
        stdout=log, stderr=subprocess.STDOUT)
    result = {"inputs": args.inputs, "seed": args.seed, "canaries": 0, "crashed": False,
              "errors": []}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("node did not start") from None
                await asyncio.sleep(0.1)
        started = time.monotonic()
        sem = asyncio.Semaphore(args.concurrency)
        tasks: list[asyncio.Task] = []

        async def guarded(chunks: list[bytes]) -> None:
            async with sem:
                error = await send_one(port, chunks)
                if error and len(result["errors"]) < 20:
                    result["errors"].append(error)

        for i in range(args.inputs):
            await sem.acquire()
            sem.release()
            tasks.append(asyncio.create_task(guarded(make_input(rng))))
            if (i + 1) % args.canary_every == 0:
                await asyncio.gather(*tasks)
                tasks.clear()
                if proc.poll() is not None:
                    result["crashed"] = True
                    break
                await canary(port, i + 1)
                result["canaries"] += 1
        await asyncio.gather(*tasks)
        result["seconds"] = round(time.monotonic() - started, 1)
        result["alive"] = proc.poll() is None
        if result["alive"]:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
                metrics = r.read().decode()
            result["protocol_errors"] = next(
                (int(float(line.split()[-1])) for line in metrics.splitlines()
                 if line.startswith("twinmq_mqtt_protocol_errors_total")), None)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    result["exit_code"] = proc.returncode
    text = log_path.read_text()
    result["tracebacks"] = text.count("Traceback")
    if result["tracebacks"]:
        result["log_tail"] = text[-3000:]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scenarios.fuzz.mqtt")
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--canary-every", type=int, default=1000)
    parser.add_argument("--out", default="reports/fuzz-mqtt.json")
    args = parser.parse_args(argv)
    prov = provenance()  # the tree as the run starts
    result = asyncio.run(run(args))
    result["provenance"] = prov
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    ok = (result.get("alive") and not result["crashed"] and not result["tracebacks"]
          and result["canaries"] == args.inputs // args.canary_every)
    print(json.dumps({k: v for k, v in result.items() if k != "log_tail"}))
    print("fuzz-mqtt:", "OK" if ok else "FAILED", f"({args.inputs} inputs, seed {args.seed})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
