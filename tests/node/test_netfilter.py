"""Kernel network faults (real/node/netfilter.py): the nftables rules each fault makes, the
checks before any rule is written, and (as root, with nft) a real 3-node cluster on 127.0.0.N
whose meta leader is cut off in the kernel: the others elect a new leader, and after `heal` the
old one follows it; client traffic is never cut."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from real.node import cluster as cluster_ctl
from real.node import netfilter
from scenarios.chaos.drills import RealCluster

NODES = [{"id": 1, "host": "127.0.0.1", "raft": 7001}, {"id": 2, "host": "127.0.0.2",
                                                        "raft": 7002},
         {"id": 3, "host": "127.0.0.3", "raft": 7003}]


def test_a_cut_drops_the_senders_segments_to_the_receivers_peer_port_only() -> None:
    ends = netfilter.endpoints(NODES)
    assert netfilter.cut_rules([(1, 2)], ends) == [
        "ip saddr 127.0.0.1 ip daddr 127.0.0.2 tcp dport 7002 drop"]


def test_loss_drops_both_directions_of_a_nodes_connection_to_its_peer() -> None:
    rules = netfilter.loss_rules([(1, 3)], netfilter.endpoints(NODES), 12.4)
    assert rules == [
        "ip saddr 127.0.0.1 ip daddr 127.0.0.3 tcp dport 7003 numgen random mod 100 < 12 drop",
        "ip saddr 127.0.0.3 ip daddr 127.0.0.1 tcp sport 7003 numgen random mod 100 < 12 drop"]
    with pytest.raises(ValueError, match="percent"):
        netfilter.loss_rules([(1, 3)], netfilter.endpoints(NODES), 0)


def test_nodes_sharing_an_address_cannot_be_told_apart() -> None:
    shared = [{**n, "host": "127.0.0.1"} for n in NODES]
    with pytest.raises(netfilter.KernelFaultError, match="--distinct-hosts"):
        netfilter.endpoints(shared)
    with pytest.raises(netfilter.KernelFaultError, match="IPv4"):
        netfilter.endpoints([{**NODES[0], "host": "::1"}])


def test_the_script_makes_one_table_per_cluster_directory(tmp_path: Path) -> None:
    a, b = netfilter.table_name(tmp_path / "a"), netfilter.table_name(tmp_path / "b")
    assert a != b and a.startswith("twinmq_")
    text = netfilter.script(a, ["ip saddr 127.0.0.1 drop"])
    assert text.splitlines() == [
        f"add table inet {a}",
        f"add chain inet {a} out {{ type filter hook output priority 0; policy accept; }}",
        f"add rule inet {a} out ip saddr 127.0.0.1 drop"]


def _leader_among(c: RealCluster, ids: list[int], timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leader = cluster_ctl.settled([c.nodes[i] for i in ids])
        if leader:
            return leader
        time.sleep(0.05)  # polling the nodes' admin API: no event to wait on from here
    raise AssertionError(f"no leader among {ids} within {timeout} s")


@pytest.mark.integration
@pytest.mark.skipif(netfilter.unavailable() is not None,
                    reason=str(netfilter.unavailable()))
def test_a_kernel_partition_isolates_the_meta_leader_and_heal_brings_it_back(
        tmp_path: Path) -> None:
    c = RealCluster(tmp_path / "c", distinct_hosts=True)
    try:
        assert [c.nodes[i]["host"] for i in (1, 2, 3)] == ["127.0.0.1", "127.0.0.2",
                                                          "127.0.0.3"]
        old = c.meta_leader()
        rest = [i for i in (1, 2, 3) if i != old]
        cluster_ctl.partition(c.work, [old], rest, kernel=True)
        listing = netfilter.listing(c.work)
        assert listing.count(" drop") == 4, listing  # 2 links, both ways
        new = _leader_among(c, rest)
        assert new != old
        # clients still reach the cut-off node (only the peer ports are cut)
        node = c.nodes[old]
        with socket.create_connection((node["host"], node["kafka"]), timeout=5):
            pass
        with urllib.request.urlopen(f"http://{node['host']}:{node['admin']}/health",
                                    timeout=5) as resp:
            assert json.loads(resp.read())["node_id"] == old
        cluster_ctl.heal(c.work)
        assert netfilter.listing(c.work) == ""
        assert _leader_among(c, [1, 2, 3], timeout=60) in (1, 2, 3)
    finally:
        netfilter.heal(c.work)
        c.stop()
