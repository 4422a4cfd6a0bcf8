"""The nemesis: a random schedule of faults plus scheduled ones, then a heal phase.

**Random schedule.** From `start_ms` until `heal_ms` it waits a random gap (`interval_ms`) and
injects one fault kind
chosen by `weights`: crash the leader / a random node (restart after `downtime_ms`), pause a node
(`pause_ms`), a symmetric or asymmetric partition (`partition_ms`), a message-loss window
(`loss`, `loss_ms`), extra delay on one node's outgoing links (`delay_extra_ms`, `delay_ms`), or
clock skew on one node (`skew_ppm`, `skew_ms`), or cutting the current leader off from every
other node in both directions (`isolate_leader`, `partition_ms`; a deposed leader that keeps
its uncommitted tail is what Figure 8 style bugs need), or a meta membership change
(`membership`: the next spare node joins, else a member leaves; `World.change_membership`).
Each fault undoes itself after its duration (a membership change is not undone).

**Scheduled faults** (the client workloads' studies): at listed times (`*_at_ms`) and Poisson
arrivals (`*_rate_per_s`) within [start_ms, heal_ms): a node crash (power loss of the clients'
node, or of any node with `crash_targets = "any"`; restart after `restart`), an abrupt drop of
one connected client (`client_drop_targets`; it reconnects after `[clients] reconnect`), a delay
spike on every client connection, a pause of one group consumer (longer than its session
timeout, to force a rebalance). Their times are drawn when the run starts, from their own stream.

At `heal_ms` the world undoes everything (`World.heal`) and no fault occurs afterwards.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from model.scenario import FAULT_KINDS, FaultConfig
from model.sim.clock import now_us
from model.sim.dist import Dist

if TYPE_CHECKING:
    from model.world import World

US_PER_MS = 1000


class Nemesis:
    def __init__(self, world: World, config: FaultConfig, rng: random.Random,
                 scheduled_rng: random.Random) -> None:
        self.world = world
        self.env = world.env
        self.config = config
        self.rng = rng
        self.scheduled_rng = scheduled_rng
        self.count = 0
        self.counts: dict[str, int] = {}
        self.healed = False
        self.spike_active = False
        self.kinds = [k for k in FAULT_KINDS if config.weights.get(k, 0) > 0]
        self.weights = [config.weights[k] for k in self.kinds]
        self._actions: dict[str, Callable[[], None]] = {
            "crash_leader": self._crash_leader, "crash_random": self._crash_random,
            "pause": self._pause, "partition": self._partition,
            "partition_asym": self._partition_asym, "loss": self._loss, "delay": self._delay,
            "skew": self._skew, "isolate_leader": self._isolate_leader,
            "membership": self._membership,
        }
        assert sorted(self._actions) == sorted(FAULT_KINDS)

    def start(self) -> None:
        if not self.config.enabled:
            return
        if self.kinds:
            self.env.process(self._run())
        self._schedule()
        if self.config.heal_ms > 0:
            heal = self.env.timeout(self._us(self.config.heal_ms))
            heal.callbacks.append(lambda _ev: self._heal())

    def _heal(self) -> None:
        self.healed = True
        self.heal()
        self.world.heal()

    def _us(self, ms: float) -> int:
        return max(1, round(ms * US_PER_MS))

    def _draw_ms(self, bounds: tuple[float, float]) -> int:
        return self._us(self.rng.uniform(bounds[0], bounds[1]))

    def _run(self) -> Generator[Any, Any, None]:
        cfg = self.config
        yield self.env.timeout(self._us(cfg.start_ms))
        heal_us = self._us(cfg.heal_ms) if cfg.heal_ms > 0 else 1 << 62
        while self.kinds:
            gap = self._draw_ms(cfg.interval_ms)
            if self.env.now + gap >= heal_us:
                return
            yield self.env.timeout(gap)
            kind = self.rng.choices(self.kinds, self.weights)[0]
            self._counted(kind)
            self._actions[kind]()

    def _counted(self, kind: str) -> None:
        self.count += 1
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def _after(self, duration_us: int, undo: Callable[[], None]) -> None:
        timer = self.env.timeout(duration_us)
        timer.callbacks.append(lambda _ev: None if self.healed else undo())

    # -- scheduled faults -----------------------------------------------------------------------

    def _times(self, at_ms: tuple[float, ...], rate: float) -> list[int]:
        """Listed times plus Poisson arrivals at `rate`, all within [start, heal), in µs."""
        cfg = self.config
        low = cfg.start_ms * US_PER_MS
        end_ms = cfg.heal_ms if cfg.heal_ms > 0 else self.world.scenario.duration_ms
        high = end_ms * US_PER_MS
        times = [round(t * US_PER_MS) for t in at_ms if low <= t * US_PER_MS < high]
        if rate > 0:
            t = low + self.scheduled_rng.expovariate(rate) * 1e6
            while t < high:
                times.append(round(t))
                t += self.scheduled_rng.expovariate(rate) * 1e6
        return sorted(times)

    def _schedule(self) -> None:
        f = self.config
        plan = [(self._times(f.crash_at_ms, f.crash_rate_per_s), self._scheduled_crash),
                (self._times(f.client_drop_at_ms, f.client_drop_rate_per_s), self._client_drop),
                (self._times(f.delay_spike_at_ms, f.delay_spike_rate_per_s), self._spike),
                (self._times(f.consumer_pause_at_ms, f.consumer_pause_rate_per_s),
                 self._consumer_pause)]
        for times, action in plan:
            for t in times:
                timer = self.env.timeout(max(0, t - self.env.now))
                timer.callbacks.append(self._unless_healed(action))

    def _unless_healed(self, action: Callable[[], None]) -> Callable[[Any], None]:
        def fire(_ev: Any) -> None:
            if not self.healed:
                action()

        return fire

    def _sample(self, dist: Dist) -> int:
        return max(1, dist.sample_us(self.scheduled_rng))

    def _scheduled_crash(self) -> None:
        w = self.world
        nid = w.clients_node
        if self.config.crash_targets == "any":
            nid = w.node_ids[self.scheduled_rng.randrange(len(w.node_ids))]
        if not w.nodes[nid].up:
            return
        self._counted("crash")
        down = self._sample(self.config.restart)
        self._emit("crash", nid, down_us=down)
        w.crash(nid)
        self._after(down, lambda: None if w.nodes[nid].up else w.start(nid))

    def _client_drop(self) -> None:
        label = self.world.drop_client(self.scheduled_rng, self.config.client_drop_targets)
        if label is not None:
            self._counted("client_drop")
            self._emit("client_drop", client=label)

    def _spike(self) -> None:
        if self.spike_active:
            return
        f = self.config
        self.spike_active = True
        net = self.world.client_net
        assert net is not None, "delay spikes need client connections"
        net.extra_us = f.delay_spike_extra.sample_us(self.scheduled_rng)
        length = self._sample(f.delay_spike_ms)
        self._counted("delay_spike")
        self._emit("delay_spike", extra_us=net.extra_us, length_us=length)
        self.env.timeout(length).callbacks.append(lambda _ev: self._spike_end())

    def _spike_end(self) -> None:
        net = self.world.client_net
        if self.spike_active and net is not None:
            self.spike_active = False
            net.extra_us = 0
            self._emit("delay_spike_end")

    def _consumer_pause(self) -> None:
        length = self._sample(self.config.consumer_pause_ms)
        label = self.world.pause_consumer(self.scheduled_rng, length)
        if label is not None:
            self._counted("consumer_pause")
            self._emit("consumer_pause", client=label, length_us=length)

    def heal(self) -> None:
        """Faults of the client network end now too."""
        self._spike_end()

    def _emit(self, kind: str, node: int = 0, **fields: Any) -> None:
        self.world.trace.emit(now_us(self.env), node, "fault", fault=kind, **fields)

    def _alive(self) -> list[int]:
        w = self.world
        return [n for n in w.node_ids if w.nodes[n].up]

    # -- fault kinds ----------------------------------------------------------------------------

    def _crash(self, nid: int, why: str) -> None:
        w = self.world
        down = self._draw_ms(self.config.downtime_ms)
        self._emit(why, nid, down_us=down)
        w.crash(nid)
        self._after(down, lambda: None if w.nodes[nid].up else w.start(nid))

    def _crash_leader(self) -> None:
        leader = self.world.find_leader()
        if leader is None:
            self._crash_random()
            return
        self._crash(leader, "crash_leader")

    def _crash_random(self) -> None:
        alive = self._alive()
        if alive:
            self._crash(self.rng.choice(alive), "crash_random")

    def _pause(self) -> None:
        w = self.world
        candidates = [n for n in self._alive() if not w.nodes[n].paused]
        if not candidates:
            return
        nid = self.rng.choice(candidates)
        dur = self._draw_ms(self.config.pause_ms)
        self._emit("pause", nid, dur_us=dur)
        w.pause(nid)
        self._after(dur, lambda: w.resume(nid))

    def _partition(self) -> None:
        ids = list(self.world.node_ids)
        self.rng.shuffle(ids)
        k = self.rng.randint(1, max(1, len(ids) // 2))
        side_a, side_b = sorted(ids[:k]), sorted(ids[k:])
        dur = self._draw_ms(self.config.partition_ms)
        self._emit("partition", a=side_a, b=side_b, dur_us=dur)
        net = self.world.net
        net.partition(side_a, side_b)
        self._after(dur, lambda: net.unpartition(side_a, side_b))

    def _partition_asym(self) -> None:
        ids = self.world.node_ids
        nid = self.rng.choice(ids)
        others = [n for n in ids if n != nid]
        k = self.rng.randint(1, len(others))
        cut = sorted(self.rng.sample(others, k))
        outbound = self.rng.random() < 0.5
        pairs = [(nid, o) if outbound else (o, nid) for o in cut]
        dur = self._draw_ms(self.config.partition_ms)
        self._emit("partition_asym", nid, pairs=[list(p) for p in pairs], dur_us=dur)
        net = self.world.net
        for src, dst in pairs:
            net.block(src, dst)

        def undo() -> None:
            for src, dst in pairs:
                net.unblock(src, dst)

        self._after(dur, undo)

    def _loss(self) -> None:
        p = round(self.rng.uniform(*self.config.loss), 4)
        dur = self._draw_ms(self.config.loss_ms)
        self._emit("loss", p=p, dur_us=dur)
        self.world.net.set_loss(p)
        self._after(dur, lambda: self.world.net.set_loss(0.0))

    def _delay(self) -> None:
        ids = self.world.node_ids
        nid = self.rng.choice(ids)
        extra = self._draw_ms(self.config.delay_extra_ms)
        dur = self._draw_ms(self.config.delay_ms)
        self._emit("delay", nid, extra_us=extra, dur_us=dur)
        net = self.world.net
        for dst in ids:
            if dst != nid:
                net.set_extra_delay(nid, dst, extra)

        def undo() -> None:
            for dst in ids:
                if dst != nid:
                    net.set_extra_delay(nid, dst, 0)

        self._after(dur, undo)

    def _skew(self) -> None:
        nid = self.rng.choice(self.world.node_ids)
        ppm = round(self.rng.uniform(*self.config.skew_ppm), 1)
        dur = self._draw_ms(self.config.skew_ms)
        self._emit("skew", nid, ppm=ppm, dur_us=dur)
        node = self.world.nodes[nid]
        node.set_skew(ppm)
        self._after(dur, lambda: node.set_skew(0.0))

    def _isolate_leader(self) -> None:
        leader = self.world.find_leader()
        if leader is None:
            self._partition()
            return
        others = [n for n in self.world.node_ids if n != leader]
        dur = self._draw_ms(self.config.partition_ms)
        self._emit("isolate_leader", leader, b=others, dur_us=dur)
        net = self.world.net
        net.partition([leader], others)
        self._after(dur, lambda: net.unpartition([leader], others))

    def _membership(self) -> None:
        change = self.world.change_membership(self.rng)
        if change is not None:
            self._emit("membership", change[1], change=change[0])
