"""Kernel-level network faults between the nodes of a local cluster, with nftables.

`twinmq cluster partition --kernel` and `twinmq cluster loss --kernel` drop real TCP packets
in the kernel instead of whole messages in the nodes' transport: a cut connection stalls and
retransmits, a lossy one retransmits, exactly what a real network does to the nodes' TCP
connections (heal: the packets flow again and TCP recovers by itself).

The nodes must sit on distinct addresses (`twinmq cluster up --distinct-hosts`: node N on
127.0.0.N, dialling its peers from that address) so that a rule can tell who sends. Every rule
also names the receiver's peer (Raft) port, so client traffic and other clusters on the same
addresses are never touched:

- the link A -> B is the connection A dials to B's peer port: `ip saddr A ip daddr B tcp dport
  PORT_B` (a one-way cut drops A's segments to B; B's acknowledgements of its own connection to
  A still flow, so only A -> B is cut);
- loss on a link drops that fraction of the segments of both connections between A and B, in
  both directions (`numgen random mod 100 < P`), as a lossy wire does.

Each cluster gets its own table (`table_name`), created on first use and deleted by `heal`.
Needs root and the `nft` command (Debian's nftables; `make tools` installs it). Without them,
use the transport faults (the commands without `--kernel`), which need neither.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

NFT_TIMEOUT_S = 10.0


class KernelFaultError(RuntimeError):
    """Kernel faults cannot be used here (why is in the message), or nft refused a rule."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    node: int
    host: str
    peer_port: int


def table_name(work: Path) -> str:
    """One nftables table per cluster directory."""
    digest = hashlib.sha256(str(work.resolve()).encode()).hexdigest()[:12]
    return f"twinmq_{digest}"


def unavailable() -> str | None:
    """Why kernel faults cannot run on this machine (None: they can)."""
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return "kernel network faults need root (nftables rules); use the transport faults"
    if shutil.which("nft") is None:
        return ("kernel network faults need the nft command (Debian package nftables; `make "
                "tools` installs it); use the transport faults")
    return None


def endpoints(nodes: Sequence[dict]) -> dict[int, Endpoint]:
    """The nodes of cluster.json as rule endpoints; they must have distinct IPv4 addresses."""
    out = {int(n["id"]): Endpoint(int(n["id"]), str(n["host"]), int(n["raft"])) for n in nodes}
    hosts = [e.host for e in out.values()]
    for host in hosts:
        try:
            if ipaddress.ip_address(host).version != 4:
                raise ValueError(host)
        except ValueError:
            raise KernelFaultError(f"kernel network faults need IPv4 node addresses, got "
                                   f"{host!r}") from None
    if len(set(hosts)) != len(hosts):
        raise KernelFaultError("kernel network faults need every node on its own address: "
                               "start the cluster with `twinmq cluster up --distinct-hosts`")
    return out


def cut_rules(pairs: Sequence[tuple[int, int]], ends: dict[int, Endpoint]) -> list[str]:
    """Rules that cut each directed link (a, b): a's segments to b's peer port."""
    rules = []
    for a, b in pairs:
        src, dst = ends[a], ends[b]
        rules.append(f"ip saddr {src.host} ip daddr {dst.host} tcp dport {dst.peer_port} drop")
    return rules


def loss_rules(pairs: Sequence[tuple[int, int]], ends: dict[int, Endpoint],
               percent: float) -> list[str]:
    """Rules that drop `percent` % of the segments on each directed link (a, b): both ways on
    a's connection to b (its data and b's acknowledgements)."""
    if not 0 < percent <= 100:
        raise ValueError(f"--percent must be in (0, 100] for kernel loss, got {percent}")
    p = max(1, round(percent))
    rules = []
    for a, b in pairs:
        src, dst = ends[a], ends[b]
        rules.append(f"ip saddr {src.host} ip daddr {dst.host} tcp dport {dst.peer_port} "
                     f"numgen random mod 100 < {p} drop")
        rules.append(f"ip saddr {dst.host} ip daddr {src.host} tcp sport {dst.peer_port} "
                     f"numgen random mod 100 < {p} drop")
    return rules


def script(table: str, rules: Sequence[str]) -> str:
    """An nft script that creates the table and its output chain if needed and adds `rules`.
    (On loopback every packet passes the output hook once.)"""
    lines = [f"add table inet {table}",
             f"add chain inet {table} out {{ type filter hook output priority 0; "
             f"policy accept; }}"]
    lines += [f"add rule inet {table} out {rule}" for rule in rules]
    return "\n".join(lines) + "\n"


def _nft(args: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nft", *args], input=stdin, text=True, capture_output=True,
                          timeout=NFT_TIMEOUT_S, check=False)


def apply(work: Path, rules: Sequence[str]) -> None:
    why = unavailable()
    if why:
        raise KernelFaultError(why)
    done = _nft(["-f", "-"], script(table_name(work), rules))
    if done.returncode != 0:
        raise KernelFaultError(f"nft refused the rules: {done.stderr.strip()}")


def listing(work: Path) -> str:
    """The cluster's table as nft lists it ('' if there is none)."""
    if unavailable():
        return ""
    done = _nft(["list", "table", "inet", table_name(work)])
    return done.stdout if done.returncode == 0 else ""


def heal(work: Path) -> bool:
    """Delete the cluster's table; True if there was one."""
    if unavailable():
        return False
    return _nft(["delete", "table", "inet", table_name(work)]).returncode == 0
