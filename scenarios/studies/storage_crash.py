"""SIGKILL crash test for the storage engines: a child appends in a tight loop, is killed, restarts.

    python -m scenarios.studies.storage_crash [--engines file,rocksdb,s3]
                                              [--fsync always,group,never] [--kills 10]
                                              [--record-bytes 100] [--out reports/...]

The child (`--child`) opens one engine in a directory, appends one-record batches as fast as it
can and reports on stdout, line by line and flushed:

    A <end>      every record below <end> was accepted (append returned)
    D <end>      every record below <end> reached the engine's durability point (durable_end)

The parent reads until a random point (seeded), freezes the child there (SIGSTOP), SIGKILLs it and
reads the rest of what the child wrote before the freeze, so every append that returned is counted
and at most one (stored, its line unwritten) is in flight. Then it reopens the engine itself and
checks, for every record: payloads are what the child wrote (a function of the offset, so nothing
needs to be remembered), and

- every record below the last `D` survived: no acknowledged record is lost (any policy);
- with `always`, every accepted record survived (accepted == durable for that policy);
- with `group`, the records lost are those accepted after the last durable point, and the loss is
  measured (records and the window they span in ms);

then the next round continues appending to the same log (so recovery must leave it appendable).
`--out` writes {"provenance", "argv", "results": one summary per engine x policy}.
SIGKILL kills the process, not the machine: the OS page cache survives, so only data still in the
engine's own memory can be lost. Machine crashes are the simulator's job (model/devices/fs.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SHARD = "crash/test"
RECORDS_READ_MAX = 10_000


def payload_for(offset: int, size: int) -> bytes:
    head = f"r{offset}:".encode()
    return (head * (size // len(head) + 1))[:size] if size > len(head) else head


def _devices(engine: str, data_dir: Path, fsync: str, s3_endpoint: str) -> Any:
    """For S3, `always` = one PUT per append, `group` = 5 ms linger (each round's data_dir names
    its own bucket, so rounds of different policies do not share a log)."""
    from real.node.engines import Devices, StorageSettings

    settings = StorageSettings(
        engine=engine, fsync=fsync, group_commit_ms=5, s3_endpoint=s3_endpoint,
        s3_bucket=f"crash-{fsync}", s3_linger_ms=5 if fsync == "group" else 0,
    )
    return Devices(data_dir, settings)


def child(engine: str, data_dir: Path, fsync: str, record_bytes: int, s3_endpoint: str) -> None:
    from real.node.engines import monotonic_ms
    from real.storage import Record

    devices = _devices(engine, data_dir, fsync, s3_endpoint)
    eng: Any = devices.open(engine, SHARD)
    out = sys.stdout
    durable = eng.durable_end()
    out.write(f"D {durable}\nA {eng.end_offset()}\n")
    out.flush()
    while True:
        offset = eng.end_offset()
        eng.append([Record(-1, offset, None, payload_for(offset, record_bytes))])
        line = f"A {offset + 1}\n"
        due = eng.next_flush_ms()
        if due is not None and due <= monotonic_ms():
            eng.poll(monotonic_ms())
        if eng.durable_end() != durable:
            durable = eng.durable_end()
            line += f"D {durable}\n"
        out.write(line)
        out.flush()


class _Progress:
    """What the child reported: its last `A` and `D` values and when each `A` line was read
    (an upper bound on when that append returned: the child wrote the line no later)."""

    def __init__(self) -> None:
        self.accepted = self.durable = -1
        self.times: dict[int, float] = {}
        self.lines = 0

    def line(self, raw: bytes, now: float) -> None:
        if not raw.endswith(b"\n"):
            return  # cut by the kill mid-write: that append's report never completed
        kind, value = raw.split()
        if kind == b"A":
            self.accepted = int(value)
            self.times[self.accepted] = now
        else:
            self.durable = int(value)
        self.lines += 1


@dataclass
class Round:
    kill_after_lines: int
    accepted: int
    durable: int
    recovered_end: int
    lost_accepted: int
    lost_window_ms: float
    lost_durable: int


def run_rounds(engine: str, fsync: str, data_dir: Path, kills: int, record_bytes: int,
               seed: int, s3_endpoint: str = "") -> list[Round]:
    rng = random.Random(seed)  # noqa: S311 - seeded by design
    rounds = []
    for _ in range(kills):
        kill_after = rng.randint(200, 3000)
        cmd = [sys.executable, "-m", "scenarios.studies.storage_crash", "--child",
               "--engines", engine, "--fsync", fsync, "--dir", str(data_dir),
               "--record-bytes", str(record_bytes), "--s3-endpoint", s3_endpoint]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None
        progress = _Progress()
        for raw in proc.stdout:
            progress.line(raw, time.monotonic())
            if progress.lines >= kill_after:
                break
        # The child runs ahead of this reader by up to a pipe buffer of lines. Freeze it (the
        # crash point), kill it, then read what it wrote before the freeze: every append that
        # returned before the kill is then counted, and at most one (stored, its `A` line not
        # yet written) is in flight.
        proc.send_signal(signal.SIGSTOP)
        kill_time = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for raw in proc.stdout:
            progress.line(raw, kill_time)
        accepted, durable, accept_times = progress.accepted, progress.durable, progress.times
        if accepted < 0:
            raise RuntimeError(f"child died early: {proc.stderr.read().decode()[-2000:]}")
        result = _verify(engine, fsync, data_dir, record_bytes, accepted, durable,
                         accept_times, kill_time, s3_endpoint)
        result.kill_after_lines = kill_after
        rounds.append(result)
    return rounds


def _verify(engine: str, fsync: str, data_dir: Path, record_bytes: int, accepted: int,
            durable: int, accept_times: dict[int, float], kill_time: float,
            s3_endpoint: str) -> Round:
    devices = _devices(engine, data_dir, fsync, s3_endpoint)
    try:
        eng: Any = devices.open(engine, SHARD)
        end = eng.end_offset()
        offset = eng.start_offset()
        while offset < end:
            for rec in eng.read(offset, RECORDS_READ_MAX, 1 << 30):
                if rec.payload != payload_for(rec.offset, record_bytes):
                    raise AssertionError(f"{engine}/{fsync}: record {rec.offset} has wrong payload")
                offset = rec.offset + 1
        eng.close()
    finally:
        devices.close()
    lost_accepted = max(0, accepted - end)
    first_lost = end + 1  # the `A` line for record `end` says end+1
    window = (kill_time - accept_times[first_lost]) * 1000 if first_lost in accept_times else 0.0
    return Round(kill_after_lines=0, accepted=accepted, durable=durable, recovered_end=end,
                 lost_accepted=lost_accepted, lost_window_ms=round(window, 2),
                 lost_durable=max(0, durable - end))


def summarize(engine: str, fsync: str, rounds: list[Round]) -> dict[str, Any]:
    lost = [r.lost_accepted for r in rounds]
    return {
        "engine": engine, "fsync": fsync, "kills": len(rounds),
        "records_accepted": rounds[-1].accepted if rounds else 0,
        "lost_durable_total": sum(r.lost_durable for r in rounds),
        "lost_accepted_max": max(lost, default=0),
        "lost_accepted_mean": round(sum(lost) / len(lost), 2) if lost else 0.0,
        "lost_window_ms_max": max((r.lost_window_ms for r in rounds), default=0.0),
        "rounds": [asdict(r) for r in rounds],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--engines", default="file,rocksdb")
    parser.add_argument("--fsync", default="always,group,never")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--record-bytes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--s3-endpoint", default="")
    parser.add_argument("--out", type=Path, default=None, help="write a JSON summary here")
    args = parser.parse_args(argv)
    if args.child:
        child(args.engines, args.dir, args.fsync, args.record_bytes, args.s3_endpoint)
        return 0
    import tempfile

    from scenarios.provenance import provenance

    prov = provenance()  # the tree as the run starts
    results = []
    endpoint, seaweed = args.s3_endpoint, None
    if "s3" in args.engines.split(",") and not endpoint:
        from real.node.seaweed import SeaweedServer

        seaweed = SeaweedServer()
        seaweed.start()
        endpoint = seaweed.endpoint_url
    with tempfile.TemporaryDirectory(prefix="twinmq-crash-") as tmp:
        for engine in args.engines.split(","):
            for fsync in args.fsync.split(","):
                if engine == "s3" and fsync == "never":
                    continue  # S3 has no such policy: always (PUT per append) or group (linger)
                data_dir = Path(tmp) / f"{engine}-{fsync}"
                rounds = run_rounds(engine, fsync, data_dir, args.kills, args.record_bytes,
                                    args.seed, endpoint)
                summary = summarize(engine, fsync, rounds)
                results.append(summary)
                print(f"{engine:8} {fsync:6} kills={summary['kills']} "
                      f"accepted={summary['records_accepted']} "
                      f"lost_durable={summary['lost_durable_total']} "
                      f"lost_accepted max={summary['lost_accepted_max']} "
                      f"mean={summary['lost_accepted_mean']} "
                      f"window_ms max={summary['lost_window_ms_max']}")
    if seaweed is not None:
        seaweed.stop()
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report = {"provenance": prov, "argv": list(sys.argv[1:] if argv is None else argv),
                  "results": results}
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 1 if any(r["lost_durable_total"] for r in results) else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
