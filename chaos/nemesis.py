"""The faults: one at a time, chosen by the seeded generator, each healed
before the cluster is given time to agree again. Every fault is one line in
the history with its start, end, target and the time to re-agree."""
import signal
import time

# Longer than a lease (5 s in the spec's design), so a paused primary's lease runs out.
PAUSE_SECONDS = 6.0
SKEW = "30s"
AGREEMENT_TIMEOUT_SECONDS = 60
FAULTS = ("kill9", "pause", "partition-one", "partition-halves", "partition-one-way", "partition-ring", "clock-skew", "wipe",
          "leave", "join")


class Nemesis:
    def __init__(self, cluster, history, rng, faults, say):
        self.cluster = cluster
        self.history = history
        self.random = rng
        self.faults = faults
        self.say = say
        self.injected = []

    def inject(self):
        fault = self.random.choice(self.faults)
        hold = round(self.random.uniform(3.0, 8.0), 1)
        event = {"type": "fault", "fault": fault, "start": self.history.now()}
        event["hold_seconds"] = getattr(self, "_" + fault.replace("-", "_"))(event, hold)
        event["end"] = self.history.now()
        healed = self.cluster.wait_agreed(timeout=AGREEMENT_TIMEOUT_SECONDS)
        event["healed_in_seconds"] = None if healed is None else round(healed, 2)
        self.history.write(event)
        self.injected.append(event)
        where = event.get("node") or (f"minority {event['minority']}" if "minority" in event else f"ring {event.get('ring')}")
        agreed = f"not agreed within {AGREEMENT_TIMEOUT_SECONDS} s" if healed is None else f"agreed after {healed:.1f} s"
        self.say(f"fault {len(self.injected)}: {fault} {where} for {event['hold_seconds']} s, "
                 f"at {event['start']:.1f} s; {agreed}")

    def _target(self, event):
        node = self.random.choice(self.cluster.nodes)
        event["node"] = node.name
        return node

    def _partitioned(self, pairs, hold):
        self.cluster.drop(pairs)
        time.sleep(hold)
        self.cluster.heal_network()
        return hold

    def _kill9(self, event, hold):
        node = self._target(event)
        node.kill9()
        time.sleep(hold)
        node.start()
        return hold

    def _pause(self, event, hold):
        node = self._target(event)
        node.signal(signal.SIGSTOP)
        time.sleep(PAUSE_SECONDS)
        node.signal(signal.SIGCONT)
        return PAUSE_SECONDS

    def _partition_one(self, event, hold):
        node = self._target(event)
        nodes = self.cluster.nodes
        return self._partitioned([(a, b) for a in nodes for b in nodes if a is not b and node in (a, b)], hold)

    def _partition_halves(self, event, hold):
        nodes = list(self.cluster.nodes)
        self.random.shuffle(nodes)
        minority = nodes[: (len(nodes) - 1) // 2]
        event["minority"] = [n.name for n in minority]
        event["majority"] = [n.name for n in nodes[len(minority):]]
        return self._partitioned([(a, b) for a in nodes for b in nodes if (a in minority) != (b in minority)], hold)

    def _partition_one_way(self, event, hold):
        node = self._target(event)
        event["detail"] = f"packets from {node.name} to every other node dropped; it still hears them"
        return self._partitioned([(node, b) for b in self.cluster.nodes if b is not node], hold)

    def _partition_ring(self, event, hold):
        # Each node reaches its two neighbours only: each sees a majority, no two the same one.
        ring = list(self.cluster.nodes)
        self.random.shuffle(ring)
        event["ring"] = [n.name for n in ring]
        near = {(ring[i], ring[(i + 1) % len(ring)]) for i in range(len(ring))}
        near |= {(b, a) for a, b in near}
        return self._partitioned([(a, b) for a in ring for b in ring if a is not b and (a, b) not in near], hold)

    def _clock_skew(self, event, hold):
        node = self._target(event)
        offset = self.random.choice(("+", "-")) + SKEW
        event["detail"] = f"kill -9, restarted with its wall clock at {offset}; healed by stepping it back"
        node.kill9()
        node.start(clock_offset=offset)
        time.sleep(hold)
        node.set_clock("+0")
        return hold

    def _wipe(self, event, hold):
        node = self._target(event)
        node.kill9()
        node.wipe()
        time.sleep(hold)
        node.start()
        return hold

    def _leave(self, event, hold):
        # A rolling restart's step: SIGTERM hands the node's shards off and
        # says `left`; the others stream the third copies meanwhile, and hand
        # shards back when it returns on its data directory.
        node = self._target(event)
        event["detail"] = "SIGTERM (hands its shards off, leaves), restarted on its data directory"
        node.stop()
        time.sleep(hold)
        node.start()
        return hold

    def _join(self, event, hold):
        # Shards move to a fresh node (streams, catch-up, hand-offs), and it
        # leaves again after the hold, perhaps while still receiving some:
        # the shards move back. Wiped before each join, as a new machine.
        spare = self.cluster.spare
        event["node"] = spare.name
        event["detail"] = "a fresh node joins, then stops with SIGTERM (hands off, leaves) after the hold and is wiped"
        spare.wipe()
        spare.start()
        time.sleep(hold)
        spare.stop()
        spare.wipe()
        return hold
