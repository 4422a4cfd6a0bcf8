"""Datadriven interaction scripts (etcd `interaction_test.go` style) over tests/raft/harness.py.

A script is a sequence of blocks:

    # comment lines are kept on rewrite
    command arg key=value
    ----
    expected output (no blank lines)

Commands (ids are node ids):
    add-nodes N [pre-vote=b] [check-quorum=b] [joiner=b] [min=] [max=] [heartbeat=]
               [inflight=] [size=] [uncommitted=] [reads=] [bugs=a,b]
    campaign ID | propose ID DATA | conf-change ID add-voter|remove-voter|add-learner NODE
    read-index ID CTX | transfer-leader ID TARGET | compact ID INDEX
    tick ID N | tick-election ID... | tick-heartbeat ID...
    process-ready ID... | deliver-msgs ID... [drop=ID,ID] | stabilize [ID...]
    partition ID... | heal | crash ID | restart ID | status ID... | log ID | drop-msgs
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from real.raft import Bug, ConfChange, ConfChangeType, ProposalDropped, RaftConfig
from tests.raft.harness import Network, fmt_entries, fmt_msg, fmt_ready, fmt_status

Block = tuple[str, str]  # (command, output); command "" with output = comment text


def parse(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if line.startswith("#"):
            blocks.append(("", line))
            i += 1
            continue
        assert i + 1 < len(lines) and lines[i + 1] == "----", f"line {i + 2}: expected ----"
        i += 2
        out = []
        while i < len(lines) and lines[i].strip():
            out.append(lines[i])
            i += 1
        blocks.append((line, "\n".join(out)))
    return blocks


def render(blocks: list[Block]) -> str:
    parts = []
    for cmd, out in blocks:
        if not cmd:
            parts.append(out + "\n")
        else:
            parts.append(f"{cmd}\n----\n{out}\n\n")
    return "".join(parts)


class Interpreter:
    def __init__(self) -> None:
        self.net = Network(RaftConfig(), seed=1)
        self.next_id = 1

    def run(self, command: str) -> str:
        words = command.split()
        args = [w for w in words[1:] if "=" not in w]
        kw = dict(w.split("=", 1) for w in words[1:] if "=" in w)
        handler: Callable[[list[str], dict[str, str]], list[str]] = getattr(
            self, "cmd_" + words[0].replace("-", "_")
        )
        try:
            out = handler(args, kw)
        except ProposalDropped as e:
            out = [f"error: ProposalDropped: {e}"]
        return "\n".join(out) if out else "ok"

    def _ids(self, args: list[str]) -> list[int]:
        return [int(a) for a in args] if args else self.net.up()

    def cmd_add_nodes(self, args: list[str], kw: dict[str, str]) -> list[str]:
        n = int(args[0])
        flag = {"true": True, "false": False}
        bugs = frozenset(Bug(b) for b in kw["bugs"].split(",")) if "bugs" in kw else frozenset()
        cfg = RaftConfig(
            election_tick_min=int(kw.get("min", 5)),
            election_tick_max=int(kw.get("max", 9)),
            heartbeat_tick=int(kw.get("heartbeat", 2)),
            pre_vote=flag[kw.get("pre-vote", "false")],
            check_quorum=flag[kw.get("check-quorum", "false")],
            max_inflight_msgs=int(kw.get("inflight", 256)),
            max_size_per_msg=int(kw.get("size", 1 << 20)),
            max_uncommitted_bytes=int(kw.get("uncommitted", 64 << 20)),
            max_pending_reads=int(kw.get("reads", 4096)),
            bugs=bugs,
        )
        ids = tuple(range(self.next_id, self.next_id + n))
        self.next_id += n
        peers = () if flag[kw.get("joiner", "false")] else ids
        return [fmt_status(self.net.add_node(i, peers, cfg)) for i in ids]

    def cmd_campaign(self, args: list[str], kw: dict[str, str]) -> list[str]:
        self.net.nodes[int(args[0])].campaign()
        return []

    def cmd_propose(self, args: list[str], kw: dict[str, str]) -> list[str]:
        self.net.nodes[int(args[0])].propose(args[1].encode())
        return []

    def cmd_conf_change(self, args: list[str], kw: dict[str, str]) -> list[str]:
        cc = ConfChange(ConfChangeType(args[1]), int(args[2]))
        self.net.nodes[int(args[0])].propose_conf_change(cc)
        return []

    def cmd_read_index(self, args: list[str], kw: dict[str, str]) -> list[str]:
        self.net.nodes[int(args[0])].read_index(args[1].encode())
        return []

    def cmd_transfer_leader(self, args: list[str], kw: dict[str, str]) -> list[str]:
        self.net.nodes[int(args[0])].transfer_leadership(int(args[1]))
        return []

    def cmd_compact(self, args: list[str], kw: dict[str, str]) -> list[str]:
        self.net.compact(int(args[0]), int(args[1]))
        return [fmt_status(self.net.nodes[int(args[0])])]

    def cmd_tick(self, args: list[str], kw: dict[str, str]) -> list[str]:
        self.net.nodes[int(args[0])].tick(int(args[1]))
        return []

    def cmd_tick_election(self, args: list[str], kw: dict[str, str]) -> list[str]:
        for nid in self._ids(args):
            self.net.nodes[nid].tick(self.net.configs[nid].election_tick_max)
        return []

    def cmd_tick_heartbeat(self, args: list[str], kw: dict[str, str]) -> list[str]:
        for nid in self._ids(args):
            self.net.nodes[nid].tick(self.net.configs[nid].heartbeat_tick)
        return []

    def cmd_process_ready(self, args: list[str], kw: dict[str, str]) -> list[str]:
        out: list[str] = []
        for nid in self._ids(args):
            for rd in self.net.process_ready(nid):
                out += fmt_ready(nid, rd)
        return out

    def cmd_deliver_msgs(self, args: list[str], kw: dict[str, str]) -> list[str]:
        drop = frozenset(int(x) for x in kw["drop"].split(",")) if "drop" in kw else frozenset()
        out: list[str] = []
        for nid in self._ids(args):
            pending = [m for m in self.net.msgs if m.dst == nid]
            delivered = self.net.deliver(nid, drop)
            for m in pending:
                tag = "deliver" if any(m is d for d in delivered) else "drop"
                out.append(f"{tag}: {fmt_msg(m)}")
        return out

    def cmd_drop_msgs(self, args: list[str], kw: dict[str, str]) -> list[str]:
        out = [f"drop: {fmt_msg(m)}" for m in self.net.msgs]
        self.net.msgs = []
        return out

    def cmd_stabilize(self, args: list[str], kw: dict[str, str]) -> list[str]:
        out: list[str] = []
        for _ in range(100):
            ids = [i for i in self._ids(args) if i not in self.net.down]
            progress = False
            for nid in ids:
                for rd in self.net.process_ready(nid):
                    out += fmt_ready(nid, rd)
                    progress = True
            for nid in ids:
                pending = [m for m in self.net.msgs if m.dst == nid]
                if pending:
                    progress = True
                    delivered = self.net.deliver(nid)
                    for m in pending:
                        tag = "deliver" if any(m is d for d in delivered) else "drop"
                        out.append(f"{tag}: {fmt_msg(m)}")
            if not progress:
                return out
        raise AssertionError("stabilize did not converge")

    def cmd_partition(self, args: list[str], kw: dict[str, str]) -> list[str]:
        self.net.partition({int(a) for a in args})
        return []

    def cmd_heal(self, args: list[str], kw: dict[str, str]) -> list[str]:
        self.net.heal()
        return []

    def cmd_crash(self, args: list[str], kw: dict[str, str]) -> list[str]:
        self.net.crash(int(args[0]))
        return []

    def cmd_restart(self, args: list[str], kw: dict[str, str]) -> list[str]:
        return [fmt_status(self.net.restart(int(args[0])))]

    def cmd_status(self, args: list[str], kw: dict[str, str]) -> list[str]:
        return [fmt_status(self.net.nodes[nid]) for nid in self._ids(args)]

    def cmd_log(self, args: list[str], kw: dict[str, str]) -> list[str]:
        node = self.net.nodes[int(args[0])]
        return [fmt_entries(node.entries(node.first_index(), node.last_index() + 1))]


def run_script(path: Path, rewrite: bool) -> tuple[str, str]:
    """Returns (expected text, actual text); rewrites the file when asked."""
    text = path.read_text()
    interp = Interpreter()
    actual = [(cmd, interp.run(cmd) if cmd else out) for cmd, out in parse(text)]
    rendered = render(actual)
    if rewrite:
        path.write_text(rendered)
    return text, rendered
