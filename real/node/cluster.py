"""`twinmq cluster up|status|down`: a cluster of `twinmq serve` processes on this machine.

    twinmq cluster up --nodes 3 --dir DIR [--storage ENGINE] [--distinct-hosts]
                      [-- more serve flags]
    twinmq cluster status --dir DIR [--json]
    twinmq cluster kill|stop|cont|restart --dir DIR NODE
    twinmq cluster partition --dir DIR 1,2/3 [--oneway] [--kernel]
    twinmq cluster loss --dir DIR --percent P [--between 1/2,3] [--kernel]
    twinmq cluster heal --dir DIR
    twinmq cluster delay --dir DIR --ms M [--jitter J] [--between 1/2,3]
    twinmq cluster join --dir DIR
    twinmq cluster leave --dir DIR NODE
    twinmq cluster down --dir DIR

`up` writes a fresh cluster secret (DIR/secret, mode 0600), picks free loopback ports, starts N
nodes in the background (each with its data directory DIR/nN and log DIR/nN.log, in a session
of its own so they outlive this command), waits until the meta Raft group has one leader that
every node follows and every node is registered, writes DIR/cluster.json and prints a table.
A node that exits because another process took one of its ports in the meantime makes `up`
start again on fresh ports (UP_ATTEMPTS tries); any other exit fails `up`, which prints the end
of that node's log.
`status` asks every node's admin API; `down` stops them (SIGINT, then SIGKILL after
STOP_TIMEOUT_S). The faults, each also a Python function for scripts: `kill` (SIGKILL), `stop`
(SIGSTOP: the process freezes, its sockets stay open), `cont` (SIGCONT), `restart` (start a
killed node again on its data, with its original command). Exit codes: 0 done, 1 the
cluster did not come up (its logs are in DIR), 2 a usage error (or a fault that does not
apply: restarting a node that runs, signalling one that does not).

Membership: `join` starts one more node (the next id, fresh ports, the same serve flags as node
1, plus `--join true`), asks the meta leader to add it (`POST /cluster/members`: a learner,
then a voter once it caught up) and waits until it is registered; `leave` asks the leader to
remove a node (`POST /cluster/members/N/remove`: unregistered, then out of the Raft group),
then stops it. Both follow the leader (421) and ask again while it changes (503, 409), and
update DIR/cluster.json (a node that left is listed under "left").

Network faults between nodes act on each node's peer transport through its admin API
(`POST /faults/net`, real/node/peers.py): `partition A/B` makes every link between a node of A
and a node of B drop what crosses it at both ends (`--oneway`: only A -> B), so it holds while
either side restarts; `loss` drops a percentage of the messages and `delay` holds each for M ms
plus up to J ms, on every link or only those between the two groups of `--between`; `heal`
clears every fault. Client traffic is never touched. A frozen (SIGSTOPped) node cannot take
the command: its peers still enforce their end.

With `--kernel`, `partition` and `loss` drop real TCP segments with nftables rules instead
(real/node/netfilter.py: root and the nft command; the cluster must have been started with
`--distinct-hosts`, node N on 127.0.0.N); `heal` removes those rules too.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from real.node import netfilter

ROOT = Path(__file__).resolve().parents[2]
UP_TIMEOUT_S = 60.0
UP_ATTEMPTS = 3
"""`up` starts again on fresh ports when a node found one of its ports taken (at most this many
tries in all)."""
STOP_TIMEOUT_S = 10.0
NODES_MAX = 9


def _free_ports(host: str, count: int) -> list[int]:
    """`count` distinct free ports outside the ephemeral range (real/node/ports.py)."""
    from real.node.ports import free_ports

    return free_ports(host, count)


def _get(port: int, path: str, host: str = "127.0.0.1") -> Any:
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=1) as resp:
        return json.loads(resp.read())


def _alive(pid: int) -> bool:
    """Whether `pid` still runs: a zombie (exited, not yet reaped by its parent) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone meanwhile; or no /proc (not Linux), then trust the signal
        return not Path("/proc").is_dir()
    return stat[stat.rfind(")") + 2:][:1] != "Z"


def _reap(pids: Sequence[int]) -> None:
    """Collect the exit status of those of `pids` that are this process's children."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def _wait_gone(pids: Sequence[int], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        _reap(pids)
        if not any(_alive(p) for p in pids):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:  # exited since we looked
        pass


def _terminate(pids: Sequence[int], sig: signal.Signals) -> None:
    """Send `sig` to every live one of `pids`, give them STOP_TIMEOUT_S to exit, SIGKILL the
    rest and wait until they are gone too (reaped if they are our children)."""
    pids = [p for p in pids if _alive(p)]
    for pid in pids:
        _signal(pid, sig)
    if _wait_gone(pids, STOP_TIMEOUT_S):
        return
    for pid in pids:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
    if not _wait_gone(pids, STOP_TIMEOUT_S):
        raise RuntimeError(f"processes {[p for p in pids if _alive(p)]} outlived SIGKILL")


def health(node: dict[str, Any]) -> dict[str, Any] | None:
    """The node's `/health` (None while it does not answer)."""
    try:
        return _get(node["admin"], "/health", node.get("host", "127.0.0.1"))
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
        return None


def node_status(node: dict[str, Any]) -> dict[str, Any]:
    """What one node says about itself (alive, meta role, term, leader, meta digest, registered
    nodes)."""
    out: dict[str, Any] = {"id": node["id"], "pid": node["pid"], "alive": _alive(node["pid"])}
    view = health(node)
    try:
        nodes = (_get(node["admin"], "/meta/nodes", node.get("host", "127.0.0.1"))
                 if view is not None else None)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, ValueError):
        nodes = None
    if view is None or nodes is None:
        return {**out, "serving": False}
    raft = view.get("raft", {})
    return {**out, "serving": True, "role": raft.get("role"), "term": raft.get("term"),
            "leader": raft.get("leader"), "commit": raft.get("commit"),
            "digest": view.get("meta", {}).get("digest"),
            "registered": sorted(n["node_id"] for n in nodes)}


def settled(nodes: list[dict[str, Any]]) -> int:
    """The leader every one of `nodes` follows once they are all registered, else 0 (pass the
    survivors to see whether they agree while another node is down or frozen)."""
    views = [node_status(n) for n in nodes]
    if not all(v.get("serving") for v in views):
        return 0
    leaders = {(v["leader"], v["term"]) for v in views}
    ids = sorted(n["id"] for n in nodes)
    if len(leaders) != 1 or any(not set(ids) <= set(v["registered"]) for v in views):
        return 0
    leader = leaders.pop()[0]
    return int(leader) if leader in ids else 0


def launch(count: int, work: Path, serve_args: Sequence[str] = (),
           storage: str | None = None, distinct_hosts: bool = False) -> list[dict[str, Any]]:
    """Write the secret, start `count` nodes in the background and DIR/cluster.json; returns
    the nodes (id, pid, host, ports, data_dir, log, cmd) without waiting for them. With
    `distinct_hosts` node N binds (and dials its peers from) 127.0.0.N, so that kernel network
    faults can tell the nodes apart."""
    work.mkdir(parents=True, exist_ok=True)
    secret = work / "secret"
    secret.write_text(os.urandom(32).hex() + "\n")
    secret.chmod(0o600)
    ids = list(range(1, count + 1))
    hosts = {i: f"127.0.0.{i}" if distinct_hosts else "127.0.0.1" for i in ids}
    # The store first: it picks its own free ports, and picking the nodes' after it has bound
    # them keeps the two sets apart (the other order could hand a node a port SeaweedFS took).
    shared: dict[str, Any] = _start_store(work) if storage == "s3" else {}
    if distinct_hosts:
        ports = {i: dict(zip(("admin", "mqtt", "kafka", "raft"), _free_ports(hosts[i], 4),
                             strict=True)) for i in ids}
    else:
        free = _free_ports("127.0.0.1", 4 * count)
        ports = {i: dict(zip(("admin", "mqtt", "kafka", "raft"), free[4 * (i - 1):4 * i],
                             strict=True)) for i in ids}
    peers = ",".join(f"{i}={hosts[i]}:{ports[i]['raft']}" for i in ids)
    nodes: list[dict[str, Any]] = []
    for i in ids:
        host = hosts[i]
        cmd = [sys.executable, "-m", "real", "serve", "--node-id", str(i),
               "--data-dir", str(work / f"n{i}"), "--bind", host,
               "--admin-port", str(ports[i]["admin"]), "--mqtt-port", str(ports[i]["mqtt"]),
               "--ws-port", "0", "--kafka-port", str(ports[i]["kafka"]), "--peers", peers,
               "--cluster-secret-file", str(secret),
               "--replication-factor", str(min(3, count)),
               "--min-insync-replicas", str(min(2, count)),
               *(("--storage", storage) if storage else ()),
               *(("--s3-endpoint", shared["endpoint"]) if shared else ()), *serve_args]
        log = work / f"n{i}.log"
        nodes.append({"id": i, "pid": _spawn(cmd, log), "host": host, **ports[i], "ws": 0,
                      "data_dir": str(work / f"n{i}"), "log": str(log), "cmd": cmd})
    info: dict[str, Any] = {"nodes": nodes, "peers": peers, "secret_file": str(secret)}
    if shared:
        info["store"] = shared
    (work / "cluster.json").write_text(json.dumps(info, indent=1) + "\n")
    return nodes


def _start_store(work: Path) -> dict[str, Any]:
    """One SeaweedFS every node uses (`--storage s3`): the shared storage of the S3 partitions
    (any node can lead one) and, under each node's own prefix, the nodes' own S3 shards. It
    runs in a session of its own until `down`; its data stays in DIR/seaweedfs."""
    from real.node.seaweed import SeaweedServer

    server = SeaweedServer(data_dir=work / "seaweedfs", new_session=True)
    server.start()
    assert server.process is not None
    return {"pid": server.process.pid, "endpoint": server.endpoint_url,
            "data_dir": server.data_dir, "log": server.log_path}


def up(count: int, work: Path, serve_args: Sequence[str], storage: str | None = None,
       out: Any = sys.stdout, distinct_hosts: bool = False) -> int:
    if (work / "cluster.json").exists():
        info = json.loads((work / "cluster.json").read_text())
        if any(_alive(n["pid"]) for n in info["nodes"]):
            print(f"twinmq cluster: a cluster runs in {work} already (twinmq cluster down "
                  f"--dir {work})", file=sys.stderr)
            return 2
    try:
        start(count, work, serve_args, storage, distinct_hosts)
    except UpError as exc:
        print(f"twinmq cluster: {exc}", file=sys.stderr)
        return 1
    return status(work, as_json=False, out=out)


class UpError(RuntimeError):
    """The cluster did not come up; the message says why (a dead node's log tail)."""


def start(count: int, work: Path, serve_args: Sequence[str] = (), storage: str | None = None,
          distinct_hosts: bool = False, timeout_s: float = UP_TIMEOUT_S) -> list[dict[str, Any]]:
    """`launch` and wait until the nodes settle on one meta leader; returns the nodes. Free ports
    are picked, released, then bound by the nodes, so another process (a test running beside
    this one) may bind one in between: a node that died of that makes it start again on fresh
    ports (UP_ATTEMPTS tries). Any other death, or no settled leader within `timeout_s`, stops
    what runs and raises UpError (with the end of each dead node's log)."""
    for attempt in range(1, UP_ATTEMPTS + 1):
        nodes = launch(count, work, serve_args, storage, distinct_hosts)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            dead = [n for n in nodes if not _alive(n["pid"])]
            if dead:
                break
            if settled(nodes):
                return nodes
            time.sleep(0.05)
        else:
            down(work, out=open(os.devnull, "w"))  # noqa: SIM115 - discarded output
            raise UpError(f"no settled meta leader within {timeout_s:g} s; logs in {work}")
        down(work, out=open(os.devnull, "w"))  # noqa: SIM115 - discarded output
        collided = all(_port_taken(Path(n["log"])) for n in dead)
        if collided and attempt < UP_ATTEMPTS:
            print(f"twinmq cluster: node(s) {[n['id'] for n in dead]} found a port taken; "
                  "starting again on fresh ports", file=sys.stderr)
            continue
        raise UpError("\n".join(f"node {n['id']} exited; the end of {n['log']}:\n"
                                + _tail(Path(n["log"]), 15) for n in dead))
    raise AssertionError("unreachable: the last attempt returns or raises")


def _tail(log: Path, lines: int) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError as exc:
        return f"  (unreadable: {exc})"
    return "\n".join("  " + line for line in text.splitlines()[-lines:])


def _port_taken(log: Path) -> bool:
    """Whether the node's log ends in a failed bind (`serve` reports EADDRINUSE and exits 1):
    asyncio's listeners say "... address already in use", the peer listener "[Errno 98] Address
    already in use"."""
    return "address already in use" in _tail(log, 3).lower()


def _spawn(cmd: list[str], log: Path) -> int:
    with log.open("ab") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return proc.pid


def _node(work: Path, node_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
    info = json.loads((work / "cluster.json").read_text())
    for node in info["nodes"]:
        if node["id"] == node_id:
            return info, node
    raise KeyError(f"no node {node_id} in {work} (nodes: "
                   f"{[n['id'] for n in info['nodes']]})")


def signal_node(work: Path, node_id: int, sig: signal.Signals) -> int:
    """Send `sig` to node `node_id` (kill: SIGKILL, stop: SIGSTOP, cont: SIGCONT); returns its
    pid. Raises ProcessLookupError if the node is not running."""
    _, node = _node(work, node_id)
    if not _alive(node["pid"]):
        raise ProcessLookupError(f"node {node_id} (pid {node['pid']}) is not running")
    os.kill(node["pid"], sig)
    if sig == signal.SIGKILL:
        _wait_gone([node["pid"]], STOP_TIMEOUT_S)
    return int(node["pid"])


def restart(work: Path, node_id: int) -> int:
    """Start node `node_id` again on its data dir with its original command; returns the new
    pid. Raises RuntimeError if it still runs (kill or down it first)."""
    info, node = _node(work, node_id)
    if _alive(node["pid"]):
        raise RuntimeError(f"node {node_id} (pid {node['pid']}) still runs")
    node["pid"] = _spawn(node["cmd"], Path(node["log"]))
    (work / "cluster.json").write_text(json.dumps(info, indent=1) + "\n")
    return int(node["pid"])


def status(work: Path, as_json: bool, out: Any = sys.stdout) -> int:
    info = json.loads((work / "cluster.json").read_text())
    rows = [{**node_status(n), "mqtt": n["mqtt"], "kafka": n["kafka"], "admin": n["admin"],
             "raft": n["raft"]} for n in info["nodes"]]
    if as_json:
        print(json.dumps({"dir": str(work), "nodes": rows}, indent=1), file=out)
        return 0
    print(f"{'node':>4} {'pid':>7} {'alive':>5} {'role':>13} {'term':>5} {'leader':>6} "
          f"{'mqtt':>6} {'kafka':>6} {'admin':>6} {'raft':>6}", file=out)
    for r in rows:
        print(f"{r['id']:>4} {r['pid']:>7} {'yes' if r['alive'] else 'no':>5} "
              f"{r.get('role') or '-':>13} {r.get('term') or '-':>5} "
              f"{r.get('leader') or '-':>6} {r['mqtt']:>6} {r['kafka']:>6} {r['admin']:>6} "
              f"{r['raft']:>6}", file=out)
    return 0


def _post(port: int, path: str, host: str = "127.0.0.1", timeout: float = 5) -> Any:
    req = urllib.request.Request(f"http://{host}:{port}{path}", method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def _save(work: Path, info: dict[str, Any]) -> None:
    info["peers"] = ",".join(f"{n['id']}={n['host']}:{n['raft']}" for n in info["nodes"])
    tmp = work / "cluster.json.tmp"
    tmp.write_text(json.dumps(info, indent=1) + "\n")
    tmp.replace(work / "cluster.json")


def member_change(work: Path, path: str, timeout_s: float = UP_TIMEOUT_S) -> dict[str, Any]:
    """POST a membership change to the meta leader: start at whichever node names a leader,
    follow 421 answers to the leader, ask again on 409/503 or while no leader answers. Returns
    the leader's answer; RuntimeError when none came in `timeout_s` (the last error)."""
    deadline = time.monotonic() + timeout_s
    last = "no node answered"
    target: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        nodes = {n["id"]: n for n in _nodes(work)}
        if target is None:
            leaders = [v["raft"]["leader"] for v in map(health, nodes.values()) if v]
            target = nodes.get(max(leaders, key=leaders.count)) if leaders else None
        if target is None:
            time.sleep(0.2)
            continue
        try:
            return dict(_post(target["admin"], path, target.get("host", "127.0.0.1"),
                              timeout=max(1.0, deadline - time.monotonic())))
        except urllib.error.HTTPError as exc:
            try:
                body = json.loads(exc.read())
            except ValueError:
                body = {}
            last = f"{exc.code} {body.get('error', exc.reason)}"
            if exc.code == 421 and body.get("leader") in nodes:
                target = nodes[body["leader"]]
                continue
            if exc.code not in (409, 421, 503):
                raise RuntimeError(last) from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            last = str(exc)
        target = None
        time.sleep(0.2)
    raise RuntimeError(f"membership change {path} not done in {timeout_s:g} s: {last}")


def join(work: Path, out: Any = sys.stdout) -> dict[str, Any]:
    """Start one more node and add it to the cluster; returns its cluster.json entry.
    RuntimeError if it cannot be done (the new node is stopped again then)."""
    info = json.loads((work / "cluster.json").read_text())
    nodes = info["nodes"]
    taken = [n["id"] for n in nodes] + [n["id"] for n in info.get("left", [])]
    node_id = max(taken) + 1
    if node_id > NODES_MAX:
        raise RuntimeError(f"node ids go up to {NODES_MAX}")
    distinct = len({n["host"] for n in nodes}) > 1
    host = f"127.0.0.{node_id}" if distinct else "127.0.0.1"
    ports = dict(zip(("admin", "mqtt", "kafka", "raft"), _free_ports(host, 4), strict=True))
    peers = ",".join([f"{n['id']}={n['host']}:{n['raft']}" for n in nodes]
                     + [f"{node_id}={host}:{ports['raft']}"])
    own = {"--node-id": str(node_id), "--data-dir": str(work / f"n{node_id}"), "--bind": host,
           "--admin-port": str(ports["admin"]), "--mqtt-port": str(ports["mqtt"]),
           "--kafka-port": str(ports["kafka"]), "--peers": peers}
    template = nodes[0]["cmd"]
    cmd = list(template[:template.index("serve") + 1])
    rest = template[len(cmd):]
    i = 0
    while i < len(rest):
        if rest[i] in own:
            i += 2
            continue
        cmd.append(rest[i])
        i += 1
    for flag, value in own.items():
        cmd += [flag, value]
    cmd += ["--join", "true"]
    log = work / f"n{node_id}.log"
    node = {"id": node_id, "pid": _spawn(cmd, log), "host": host, **ports, "ws": 0,
            "data_dir": str(work / f"n{node_id}"), "log": str(log), "cmd": cmd}
    try:
        deadline = time.monotonic() + UP_TIMEOUT_S
        while health(node) is None:
            if not _alive(node["pid"]) or time.monotonic() > deadline:
                raise RuntimeError(f"node {node_id} did not start; see {log}")
            time.sleep(0.05)
        member_change(work, f"/cluster/members?id={node_id}&raft_addr={host}:{ports['raft']}")
        nodes.append(node)
        _save(work, info)
        while not settled(nodes):
            if time.monotonic() > deadline + UP_TIMEOUT_S:
                raise RuntimeError(f"node {node_id} joined but the cluster did not settle")
            time.sleep(0.05)
    except RuntimeError:
        _terminate([node["pid"]], signal.SIGKILL)
        raise
    print(f"twinmq cluster: node {node_id} joined (mqtt {ports['mqtt']}, kafka "
          f"{ports['kafka']}, admin {ports['admin']}, raft {ports['raft']})", file=out)
    return node


def leave(work: Path, node_id: int, out: Any = sys.stdout) -> None:
    """Remove node `node_id` from the cluster, then stop it (its data stays)."""
    info, node = _node(work, node_id)
    if len(info["nodes"]) == 1:
        raise RuntimeError("the last node cannot leave (twinmq cluster down)")
    member_change(work, f"/cluster/members/{node_id}/remove")
    _stop(node["pid"])
    info["nodes"] = [n for n in info["nodes"] if n["id"] != node_id]
    info.setdefault("left", []).append(node)
    _save(work, info)
    print(f"twinmq cluster: node {node_id} left and stopped (its data stays in "
          f"{node['data_dir']})", file=out)


def _stop(pid: int) -> None:
    _terminate([pid], signal.SIGINT)


def parse_groups(text: str, ids: Sequence[int]) -> tuple[list[int], list[int]]:
    """"1,2/3" -> ([1, 2], [3]); one group alone ("1") is set against every other node."""
    left, sep, right = text.partition("/")
    try:
        a = sorted({int(x) for x in left.split(",") if x.strip()})
        b = sorted({int(x) for x in right.split(",") if x.strip()}) if sep else \
            [n for n in ids if n not in a]
    except ValueError:
        raise ValueError(f"groups {text!r} must look like 1,2/3") from None
    unknown = [n for n in a + b if n not in ids]
    if unknown or not a or not b or set(a) & set(b):
        raise ValueError(f"groups {text!r}: two disjoint, non-empty sets of node ids among "
                         f"{list(ids)} (unknown {unknown})")
    return a, b


def _set_links(work: Path, pairs: list[tuple[int, int]], **fault: Any) -> list[str]:
    """Set `fault` on each directed link (a, b): at a for what it sends to b, and (for drops)
    at b for what arrives from a. Returns the nodes that could not be told (down, frozen)."""
    info = json.loads((work / "cluster.json").read_text())
    nodes = {n["id"]: n for n in info["nodes"]}
    per_node: dict[int, dict[int, dict[str, Any]]] = {}
    for a, b in pairs:
        out = per_node.setdefault(a, {}).setdefault(b, {})
        for key in ("loss", "delay_ms", "jitter_ms"):
            if key in fault:
                out[key] = fault[key]
        if fault.get("drop"):
            out["drop_out"] = 1
            per_node.setdefault(b, {}).setdefault(a, {})["drop_in"] = 1
    missed = []
    for nid in sorted(per_node):
        for peer, spec in sorted(per_node[nid].items()):
            query = "&".join([f"peer={peer}"] + [f"{k}={v}" for k, v in sorted(spec.items())])
            try:
                _post(nodes[nid]["admin"], f"/faults/net?{query}",
                      nodes[nid].get("host", "127.0.0.1"))
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                missed.append(f"node {nid}: {exc}")
                break
    return missed


def _nodes(work: Path) -> list[dict[str, Any]]:
    return list(json.loads((work / "cluster.json").read_text())["nodes"])


def partition(work: Path, a: Sequence[int], b: Sequence[int], oneway: bool = False,
              kernel: bool = False) -> list[str]:
    """Cut every link between groups `a` and `b` (only a -> b if `oneway`): in the nodes'
    transport, or with `kernel` in the kernel (nftables; KernelFaultError if it cannot)."""
    pairs = [(x, y) for x in a for y in b] + ([] if oneway else [(y, x) for x in a for y in b])
    if kernel:
        netfilter.apply(work, netfilter.cut_rules(pairs, netfilter.endpoints(_nodes(work))))
        return []
    return _set_links(work, pairs, drop=True)


def _pairs(work: Path, between: str | None) -> list[tuple[int, int]]:
    ids = [n["id"] for n in json.loads((work / "cluster.json").read_text())["nodes"]]
    if between is None:
        return [(x, y) for x in ids for y in ids if x != y]
    a, b = parse_groups(between, ids)
    return [(x, y) for x in a for y in b] + [(y, x) for x in a for y in b]


def loss(work: Path, percent: float, between: str | None = None,
         kernel: bool = False) -> list[str]:
    if not 0 <= percent <= 100:
        raise ValueError(f"--percent must be in [0, 100], got {percent}")
    if kernel:
        netfilter.apply(work, netfilter.loss_rules(_pairs(work, between),
                                                   netfilter.endpoints(_nodes(work)), percent))
        return []
    return _set_links(work, _pairs(work, between), loss=percent / 100)


def delay(work: Path, ms: float, jitter: float = 0.0, between: str | None = None) -> list[str]:
    return _set_links(work, _pairs(work, between), delay_ms=ms, jitter_ms=jitter)


def heal(work: Path) -> list[str]:
    """Clear every link fault on every node that answers, and the kernel rules if any."""
    netfilter.heal(work)
    missed = []
    for n in json.loads((work / "cluster.json").read_text())["nodes"]:
        try:
            _post(n["admin"], "/faults/heal", n.get("host", "127.0.0.1"))
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            missed.append(f"node {n['id']}: {exc}")
    return missed


def down(work: Path, out: Any = sys.stdout) -> int:
    info = json.loads((work / "cluster.json").read_text())
    pids = [n["pid"] for n in info["nodes"] if _alive(n["pid"])]
    _terminate(pids, signal.SIGINT)
    store = info.get("store")
    if store:  # after the nodes: they flush to it as they stop
        _terminate([store["pid"]], signal.SIGTERM)
    print(f"twinmq cluster: stopped {len(pids)} node(s) in {work}"
          + (" and its shared store" if store else ""), file=out)
    return 0


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    serve_args: list[str] = []
    if "--" in args:
        cut = args.index("--")
        args, serve_args = args[:cut], args[cut + 1:]
    p = argparse.ArgumentParser(prog="twinmq cluster", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="action", required=True)
    u = sub.add_parser("up", help="start N nodes and wait for a meta leader")
    u.add_argument("--nodes", type=int, default=3)
    u.add_argument("--dir", type=Path, required=True)
    u.add_argument("--storage", choices=("memory", "file", "rocksdb", "s3"))
    u.add_argument("--distinct-hosts", action="store_true",
                   help="node N on 127.0.0.N (needed by the --kernel network faults)")
    s = sub.add_parser("status", help="each node's view")
    s.add_argument("--dir", type=Path, required=True)
    s.add_argument("--json", action="store_true")
    d = sub.add_parser("down", help="stop every node")
    d.add_argument("--dir", type=Path, required=True)
    j = sub.add_parser("join", help="start one more node and add it to the meta group")
    j.add_argument("--dir", type=Path, required=True)
    le = sub.add_parser("leave", help="remove a node from the cluster, then stop it")
    le.add_argument("--dir", type=Path, required=True)
    le.add_argument("node", type=int)
    for action, what in (("kill", "SIGKILL a node"), ("stop", "SIGSTOP a node (freeze it)"),
                         ("cont", "SIGCONT a stopped node"),
                         ("restart", "start a killed node again on its data")):
        f = sub.add_parser(action, help=what)
        f.add_argument("--dir", type=Path, required=True)
        f.add_argument("node", type=int)
    pa = sub.add_parser("partition", help="cut the links between two groups of nodes")
    pa.add_argument("--dir", type=Path, required=True)
    pa.add_argument("groups", help="A/B, e.g. 1,2/3 (or one group: against all the others)")
    pa.add_argument("--oneway", action="store_true", help="only A -> B")
    pa.add_argument("--kernel", action="store_true",
                    help="drop TCP segments with nftables (root; up --distinct-hosts)")
    he = sub.add_parser("heal", help="clear every network fault")
    he.add_argument("--dir", type=Path, required=True)
    lo = sub.add_parser("loss", help="drop a percentage of the inter-node messages")
    lo.add_argument("--dir", type=Path, required=True)
    lo.add_argument("--percent", type=float, required=True)
    lo.add_argument("--between", help="only between these groups (A/B)")
    lo.add_argument("--kernel", action="store_true",
                    help="drop TCP segments with nftables (root; up --distinct-hosts)")
    de = sub.add_parser("delay", help="delay the inter-node messages")
    de.add_argument("--dir", type=Path, required=True)
    de.add_argument("--ms", type=float, required=True)
    de.add_argument("--jitter", type=float, default=0.0)
    de.add_argument("--between", help="only between these groups (A/B)")
    try:
        ns = p.parse_args(args)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    if ns.action == "up":
        if not 1 <= ns.nodes <= NODES_MAX:
            print(f"twinmq cluster: --nodes must be 1..{NODES_MAX}", file=sys.stderr)
            return 2
        return up(ns.nodes, ns.dir, serve_args, ns.storage, distinct_hosts=ns.distinct_hosts)
    if not (ns.dir / "cluster.json").exists():
        print(f"twinmq cluster: no cluster in {ns.dir} (twinmq cluster up)", file=sys.stderr)
        return 2
    if ns.action == "status":
        return status(ns.dir, ns.json)
    if ns.action == "down":
        return down(ns.dir)
    if ns.action in ("join", "leave"):
        try:
            if ns.action == "join":
                join(ns.dir)
            else:
                leave(ns.dir, ns.node)
        except (KeyError, RuntimeError) as exc:
            print(f"twinmq cluster: {exc.args[0]}", file=sys.stderr)
            return 1
        return 0
    if ns.action in ("partition", "heal", "loss", "delay"):
        try:
            if ns.action == "partition":
                ids = [n["id"] for n in json.loads((ns.dir / "cluster.json").read_text())["nodes"]]
                a, b = parse_groups(ns.groups, ids)
                missed = partition(ns.dir, a, b, ns.oneway, kernel=ns.kernel)
            elif ns.action == "heal":
                missed = heal(ns.dir)
            elif ns.action == "loss":
                missed = loss(ns.dir, ns.percent, ns.between, kernel=ns.kernel)
            else:
                missed = delay(ns.dir, ns.ms, ns.jitter, ns.between)
        except (ValueError, netfilter.KernelFaultError) as exc:
            print(f"twinmq cluster: {exc}", file=sys.stderr)
            return 2
        for line in missed:
            print(f"twinmq cluster: not applied on {line}", file=sys.stderr)
        print(f"twinmq cluster: {ns.action} done" + (" (partly)" if missed else ""))
        return 1 if missed else 0
    sigs = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP, "cont": signal.SIGCONT}
    try:
        if ns.action == "restart":
            pid = restart(ns.dir, ns.node)
            print(f"twinmq cluster: node {ns.node} started again (pid {pid})")
        else:
            pid = signal_node(ns.dir, ns.node, sigs[ns.action])
            print(f"twinmq cluster: {ns.action} node {ns.node} (pid {pid})")
    except (KeyError, ProcessLookupError, RuntimeError) as exc:
        print(f"twinmq cluster: {exc.args[0]}", file=sys.stderr)
        return 2
    return 0
