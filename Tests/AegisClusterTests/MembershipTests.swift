import AegisCluster
import AegisSimulation
import Testing

func testSettings(_ name: String, seeds: [String] = [], lifeguard: Bool = true) -> ClusterSettings {
    ClusterSettings(nodeID: NodeID(name)!, gossipAddress: "\(name):7701", clientAddress: "\(name):6380",
                    seeds: seeds, gossipIntervalMs: 1000, suspectTimeoutMs: 4000, deadTimeoutMs: 10_000,
                    lifeguard: lifeguard, pushPullIntervalMs: 30_000, seedRetryIntervalMs: 2000)
}

/// A few nodes on a perfect, instant network with one clock: messages are
/// delivered in send order before the next timer fires. `silenced` nodes
/// neither send nor receive, which is how a crash looks to the others.
struct Harness {
    var nodes: [String: ClusterNode] = [:]
    var timers: [String: [TimerID: Int64]] = [:]
    var inFlight: [(to: String, frame: [UInt8], from: String)] = []
    var silenced: Set<String> = []
    /// Cut off from everyone else (messages both ways are lost) while their
    /// timers keep running: one side of a partition.
    var isolated: Set<String> = []
    var changes: [(observer: String, change: MemberChange)] = []
    var logs: [(node: String, line: String)] = []
    var now: Int64 = 0

    mutating func add(_ name: String, seeds: [String] = [], incarnation: UInt64 = 1, lifeguard: Bool = true) {
        let seedAddresses = seeds.map { "\($0):7701" }
        nodes[name] = ClusterNode(settings: testSettings(name, seeds: seedAddresses, lifeguard: lifeguard),
                                  incarnation: incarnation, randomSeed: UInt64(name.utf8.count) &* 977,
                                  authenticator: testKey)
        timers[name] = [:]
        step(name, .start(now: now))
    }

    mutating func step(_ name: String, _ event: ClusterEvent) {
        guard let actions = nodes[name]?.step(event) else { return }
        for action in actions {
            switch action {
            case let .send(frame, to, _):
                let target = String(to.prefix { $0 != ":" })
                inFlight.append((target, frame, "\(name):7701"))
            case let .setTimer(id, at):
                timers[name]?[id] = at
            case let .memberChanged(change):
                changes.append((name, change))
            case let .log(_, line):
                logs.append((name, line))
            }
        }
    }

    mutating func run(until end: Int64) {
        while true {
            while !inFlight.isEmpty {
                let message = inFlight.removeFirst()
                let sender = String(message.from.prefix { $0 != ":" })
                guard !silenced.contains(message.to), !silenced.contains(sender),
                      isolated.contains(message.to) == isolated.contains(sender) else { continue }
                step(message.to, .received(frame: message.frame, fromAddress: message.from, now: now))
            }
            let due = timers.filter { !silenced.contains($0.key) }
                .flatMap { name, armed in armed.map { (name, $0.key, $0.value) } }
                .min { ($0.2, $0.0, "\($0.1)") < ($1.2, $1.0, "\($1.1)") }
            guard let (name, id, at) = due, at <= end else { break }
            now = max(now, at)
            timers[name]?[id] = nil
            step(name, .timerFired(id, now: now))
        }
        now = end
    }

    func status(of member: String, at observer: String) -> MemberStatus? {
        nodes[observer]?.members.first { $0.nodeID.name == member }?.status
    }
}

@Suite struct MembershipTests {
    @Test func nodesJoinThroughASeedAndSeeEachOtherAlive() {
        var harness = Harness()
        harness.add("node-a")
        harness.add("node-b", seeds: ["node-a"])
        harness.add("node-c", seeds: ["node-b"])
        harness.run(until: 10_000)
        for observer in ["node-a", "node-b", "node-c"] {
            #expect(harness.nodes[observer]?.aliveMembers.map(\.name) == ["node-a", "node-b", "node-c"])
        }
    }

    @Test func aSilentMemberBecomesSuspectThenDead() {
        var harness = Harness()
        for name in ["node-a", "node-b", "node-c", "node-d"] { harness.add(name, seeds: name == "node-a" ? [] : ["node-a"]) }
        harness.run(until: 10_000)
        harness.silenced.insert("node-d")
        let crashedAt = harness.now
        harness.run(until: crashedAt + 4000 + 2000)
        #expect(["node-a", "node-b", "node-c"].contains { harness.status(of: "node-d", at: $0) == .suspect })
        harness.run(until: crashedAt + 40_000)
        for observer in ["node-a", "node-b", "node-c"] { #expect(harness.status(of: "node-d", at: observer) == .dead) }
        let reasons = harness.changes.filter { $0.change.node.name == "node-d" && $0.change.to == .dead }.map(\.change.reason)
        #expect(!reasons.isEmpty)
    }

    @Test func aSuspectedNodeRefutesWithAHigherIncarnation() {
        var harness = Harness()
        harness.add("node-a")
        harness.add("node-b", seeds: ["node-a"])
        harness.run(until: 5000)
        let before = harness.nodes["node-b"]!.incarnation
        // node-c tells node-b that node-b is suspect, at node-b's current incarnation.
        let rumour = encoded(.ping(seq: 1, target: NodeID("node-b")!,
                                   updates: [MemberUpdate(node: NodeID("node-b")!, status: .suspect, incarnation: before,
                                                          gossipAddress: "node-b:7701", clientAddress: "node-b:6380",
                                                          accuser: NodeID("node-c"))]),
                             sender: "node-c")
        harness.step("node-b", .received(frame: rumour, fromAddress: "node-c:7701", now: harness.now))
        #expect(harness.nodes["node-b"]!.incarnation == before + 1)
        harness.run(until: 15_000)
        let seenByA = harness.nodes["node-a"]!.members.first { $0.nodeID.name == "node-b" }
        #expect(seenByA?.status == .alive)
        #expect(seenByA?.incarnation == before + 1)
    }

    /// A prober still acting on a suspicion the suspect already refuted (the
    /// refutation missed it) must get the refutation in the ack to its probe,
    /// not a bare ack that leaves its suspicion to run out.
    @Test func anAckToAProbeCarryingAStaleSuspicionCarriesTheRefutation() {
        var harness = Harness()
        harness.add("node-a")
        harness.add("node-b", seeds: ["node-a"])
        harness.run(until: 60_000)
        let current = harness.nodes["node-b"]!.incarnation
        let staleSuspicion = MemberUpdate(node: NodeID("node-b")!, status: .suspect, incarnation: current - 1,
                                          gossipAddress: "node-b:7701", clientAddress: "node-b:6380",
                                          accuser: NodeID("node-c"))
        let probe = encoded(.ping(seq: 77, target: NodeID("node-b")!, updates: [staleSuspicion]), sender: "node-c")
        harness.inFlight = []
        harness.step("node-b", .received(frame: probe, fromAddress: "node-c:7701", now: harness.now))
        #expect(harness.nodes["node-b"]!.incarnation == current)
        let acks = harness.inFlight.filter { $0.to == "node-c" }.compactMap { sent -> [MemberUpdate]? in
            guard case let .message(message) = MessageCodec.decode(frame: sent.frame, parameters: testParameters,
                                                                   authenticator: testKey),
                  case let .ack(seq, updates) = message.payload, seq == 77 else { return nil }
            return updates
        }
        #expect(acks.count == 1)
        #expect(acks.first?.contains { $0.node.name == "node-b" && $0.status == .alive && $0.incarnation == current } == true)
    }

    /// Issue 11: after a partition heals, each side held the other dead
    /// until a push/pull happened to pick it (every 30 s here). Reconnect
    /// pings tell a member held dead so every gossip interval; it refutes in
    /// the ack, so both sides see each other alive within two intervals.
    @Test func aHealedPartitionIsAliveAgainWithinTwoIntervals() {
        var harness = Harness()
        harness.add("node-a")
        harness.add("node-b", seeds: ["node-a"])
        harness.add("node-c", seeds: ["node-a"])
        harness.run(until: 10_000)
        harness.isolated = ["node-c"]
        harness.run(until: 70_000)
        #expect(harness.status(of: "node-c", at: "node-a") == .dead)
        #expect(harness.status(of: "node-c", at: "node-b") == .dead)
        #expect(harness.status(of: "node-a", at: "node-c") == .dead)
        #expect(harness.status(of: "node-b", at: "node-c") == .dead)

        harness.isolated = []
        let healedAt = harness.now
        harness.run(until: healedAt + 2 * 1000)
        for observer in ["node-a", "node-b", "node-c"] {
            for member in ["node-a", "node-b", "node-c"] where member != observer {
                #expect(harness.status(of: member, at: observer) == .alive, "\(observer) holds \(member)")
            }
        }
        // Each side brought the other back. node-c's own verdicts on node-a
        // and node-b, still in its gossip queue at the heal, may briefly make
        // them dead on each other's side too, until their refutation (the
        // second round the bound allows for).
        let cameBack = Set(harness.changes.filter { $0.change.from == .dead && $0.change.to == .alive }
            .map { "\($0.observer)<-\($0.change.node.name)" })
        #expect(cameBack.isSuperset(of: ["node-a<-node-c", "node-b<-node-c", "node-c<-node-a", "node-c<-node-b"]),
                "\(cameBack.sorted())")
    }

    /// A member that is really gone costs at most `reconnectPingsMax` pings
    /// per interval however many are dead, and every dead one gets its turn.
    @Test func reconnectPingsAreBoundedPerIntervalAndReachEveryDeadMember() {
        var node = ClusterNode(settings: testSettings("node-a"), incarnation: 1, randomSeed: 7, authenticator: testKey)
        _ = node.step(.start(now: 0))
        let deadCount = 40
        var dead: [MemberUpdate] = []
        for index in 0..<deadCount {
            dead.append(MemberUpdate(node: NodeID("gone-\(index)")!, status: .dead, incarnation: 1,
                                     gossipAddress: "gone-\(index):7701", clientAddress: "gone-\(index):6380"))
        }
        let teller = ClusterMessage(sender: NodeID("node-z")!, senderGossipAddress: "node-z:7701",
                                    payload: .pushPull(isReply: true, members: dead))
        _ = node.step(.received(frame: MessageCodec.encode(teller, parameters: node.parameters, authenticator: testKey),
                                fromAddress: "node-z:7701", now: 10))
        var reached: Set<String> = []
        var rounds = 0
        var now: Int64 = 1000
        while reached.count < deadCount && rounds < 10 {
            rounds += 1
            now += 1000
            let sends = node.step(.timerFired(.reconnect, now: now)).compactMap { action -> String? in
                if case let .send(_, to, _) = action { to } else { nil }
            }
            #expect(sends.count <= 16)
            reached.formUnion(sends.filter { $0.hasPrefix("gone-") })
        }
        #expect(reached.count == deadCount)
        #expect(rounds == (deadCount + 15) / 16)
    }

    @Test func aGracefulStopIsSeenAsLeft() {
        var harness = Harness()
        harness.add("node-a")
        harness.add("node-b", seeds: ["node-a"])
        harness.run(until: 5000)
        harness.step("node-b", .leave(now: harness.now))
        harness.run(until: 6000)
        #expect(harness.status(of: "node-b", at: "node-a") == .left)
        let change = harness.changes.last { $0.observer == "node-a" && $0.change.node.name == "node-b" }
        #expect(change?.change.from == .alive)
        #expect(change?.change.to == .left)
    }

    @Test func aRestartedNodeIsAliveAgainWithItsNewIncarnation() {
        var harness = Harness()
        harness.add("node-a")
        harness.add("node-b", seeds: ["node-a"], incarnation: 1000)
        harness.add("node-c", seeds: ["node-a"])
        harness.run(until: 5000)
        harness.silenced.insert("node-b")
        harness.run(until: 40_000)
        #expect(harness.status(of: "node-b", at: "node-a") == .dead)
        harness.silenced.remove("node-b")
        harness.add("node-b", seeds: ["node-a"], incarnation: 50_000)
        harness.run(until: 50_000)
        for observer in ["node-a", "node-c"] {
            #expect(harness.status(of: "node-b", at: observer) == .alive)
        }
    }

    @Test func aBadMACChangesNothingAndIsLoggedOncePerMinute() {
        var harness = Harness()
        harness.add("node-a")
        harness.add("node-b", seeds: ["node-a"])
        harness.run(until: 5000)
        let before = harness.nodes["node-a"]!.state
        let forged = MessageCodec.encode(
            ClusterMessage(sender: NodeID("node-b")!, senderGossipAddress: "node-b:7701",
                           payload: .ping(seq: 1, target: NodeID("node-a")!,
                                          updates: [update("node-b", .dead, incarnation: .max)])),
            parameters: testParameters, authenticator: KeyedMixAuthenticator(key: 999))
        var logLines = 0
        for offset in 0..<100 {
            let actions = harness.nodes["node-a"]!.step(.received(frame: forged, fromAddress: "10.9.9.9:5555",
                                                                  now: harness.now + Int64(offset) * 100))
            for action in actions {
                guard case .log = action else {
                    Issue.record("a refused frame produced \(action)")
                    continue
                }
                logLines += 1
            }
        }
        #expect(harness.nodes["node-a"]!.state == before)
        #expect(harness.nodes["node-a"]!.counters.droppedByReason[.badMAC] == 100)
        #expect(logLines == 1)
        let afterAMinute = harness.nodes["node-a"]!.step(.received(frame: forged, fromAddress: "10.9.9.9:5555",
                                                                   now: harness.now + 61_000))
        #expect(afterAMinute.count == 1)
    }

    @Test func aPeerWithOtherPlacementParametersIsRefused() {
        var node = ClusterNode(settings: testSettings("node-a"), incarnation: 1, randomSeed: 1, authenticator: testKey)
        _ = node.step(.start(now: 0))
        let frame = MessageCodec.encode(
            ClusterMessage(sender: NodeID("node-x")!, senderGossipAddress: "node-x:7701",
                           payload: .pushPull(isReply: false, members: [update("node-x")])),
            parameters: ClusterParameters(numShards: 256, virtualNodes: 64, replicationFactor: 3),
            authenticator: testKey)
        let before = node.state
        _ = node.step(.received(frame: frame, fromAddress: "node-x:7701", now: 10))
        #expect(node.state == before)
        #expect(node.counters.droppedByReason[.clusterMismatch] == 1)
        #expect(node.aliveMembers.map(\.name) == ["node-a"])
    }

    @Test func aLaggingNodeStretchesItsOwnProbeIntervalOnlyWithLifeguard() {
        for lifeguard in [true, false] {
            var node = ClusterNode(settings: testSettings("node-a", lifeguard: lifeguard), incarnation: 1,
                                   randomSeed: 3, authenticator: testKey)
            _ = node.step(.start(now: 0))
            _ = node.step(.localHealth(lagMs: 2500, now: 100))
            let actions = node.step(.timerFired(.protocolPeriod, now: 5000))
            let next = actions.compactMap { action -> Int64? in
                if case let .setTimer(.protocolPeriod, at) = action { at } else { nil }
            }
            #expect(node.localHealth == (lifeguard ? 2 : 0), "lag, then a period that fired late")
            #expect(next == [5000 + (lifeguard ? 3000 : 1000)])
        }
    }

    /// Reported lag (reactors running late) counts like a late timer: only
    /// past half a gossip interval, and never for plain SWIM.
    @Test func reportedLagRaisesHealthOnlyPastHalfAnInterval() {
        for lifeguard in [true, false] {
            var node = ClusterNode(settings: testSettings("node-a", lifeguard: lifeguard), incarnation: 1,
                                   randomSeed: 3, authenticator: testKey)
            _ = node.step(.start(now: 0))
            _ = node.step(.localHealth(lagMs: 500, now: 100))
            #expect(node.localHealth == 0, "exactly half an interval is still on time")
            _ = node.step(.localHealth(lagMs: 501, now: 200))
            _ = node.step(.localHealth(lagMs: 4000, now: 300))
            #expect(node.localHealth == (lifeguard ? 2 : 0))
        }
    }

    /// While the lag lasts the acks the cluster loop still gets cannot take
    /// the score below 1; once a report says the lag is over, they bring it
    /// back to 0, and the probe interval with it.
    @Test func healthRaisedByLagIsHeldWhileItLastsAndRecoversAfter() {
        var harness = Harness()
        harness.add("node-a")
        harness.add("node-b", seeds: ["node-a"])
        harness.run(until: 5000)
        for offset in Int64(0)..<4 { harness.step("node-a", .localHealth(lagMs: 2000, now: harness.now + offset)) }
        #expect(harness.nodes["node-a"]!.localHealth == 4)
        harness.run(until: harness.now + 60_000)
        #expect(harness.nodes["node-a"]!.localHealth == 1, "acks came, but the lag was not reported over")
        harness.step("node-a", .localHealth(lagMs: 0, now: harness.now))
        harness.run(until: harness.now + 10_000)
        #expect(harness.nodes["node-a"]!.localHealth == 0)
        #expect(harness.status(of: "node-b", at: "node-a") == .alive)
        #expect(harness.status(of: "node-a", at: "node-b") == .alive)
        let due = harness.timers["node-a"]![.protocolPeriod]!
        #expect(due - harness.now <= 1000, "the probe interval is back to one gossip interval")
    }

    /// SIGHUP's new timings: a shorter interval starts at once, and a member
    /// that falls silent afterwards is suspected on the new suspect_timeout
    /// (the old 4 s would leave it alive at this point).
    @Test func reloadedTimingsTakeEffectAtOnce() {
        var harness = Harness()
        harness.add("node-a")
        harness.add("node-b", seeds: ["node-a"])
        harness.run(until: 5000)
        let faster = MembershipTimings(gossipIntervalMs: 200, suspectTimeoutMs: 1000, deadTimeoutMs: 3000)
        harness.step("node-a", .timingsChanged(faster, now: harness.now))
        #expect(harness.nodes["node-a"]!.settings.timings == faster)
        #expect(harness.timers["node-a"]![.protocolPeriod]! <= harness.now + 200)
        #expect(harness.logs.contains { $0.node == "node-a" && $0.line.contains("membership timings changed") })
        harness.silenced.insert("node-b")
        harness.run(until: harness.now + 1000 + 2 * 200 + 200)
        #expect(harness.status(of: "node-b", at: "node-a") == .suspect)
        harness.run(until: harness.now + 3 * 3000)
        #expect(harness.status(of: "node-b", at: "node-a") == .dead)
    }

    /// Timings that could not run are refused whole, with one warning, and
    /// nothing the node decides on changes.
    @Test func reloadedTimingsThatCannotRunAreRefused() {
        var node = ClusterNode(settings: testSettings("node-a"), incarnation: 1, randomSeed: 3, authenticator: testKey)
        _ = node.step(.start(now: 0))
        let before = node.state
        let oldTimings = node.settings.timings
        for bad in [MembershipTimings(gossipIntervalMs: 5000, suspectTimeoutMs: 4000, deadTimeoutMs: 10_000),
                    MembershipTimings(gossipIntervalMs: 1000, suspectTimeoutMs: 4000, deadTimeoutMs: 4000),
                    MembershipTimings(gossipIntervalMs: 0, suspectTimeoutMs: 4000, deadTimeoutMs: 10_000)] {
            let actions = node.step(.timingsChanged(bad, now: 10))
            #expect(actions.count == 1)
            guard case let .log(level, line)? = actions.first else { Issue.record("no log line: \(actions)"); continue }
            #expect(level == .warning)
            #expect(line.contains("not changed") && line.contains("gossip_interval 1000 ms"), "\(line)")
            #expect(node.settings.timings == oldTimings)
            #expect(node.state == before)
        }
    }

    @Test func aRoundThatStartedLateAccusesNobody() {
        var harness = Harness()
        harness.add("node-a")
        harness.add("node-b", seeds: ["node-a"])
        harness.run(until: 5000)
        harness.silenced.insert("node-b")
        // node-a probes node-b on time, then is paused for 8 s: the next
        // period, which judges that probe, fires long after it was due.
        for lateMs: Int64 in [0, 8000] {
            let due = harness.timers["node-a"]![.protocolPeriod]!
            harness.timers["node-a"]![.protocolPeriod] = nil
            harness.now = due + lateMs
            harness.step("node-a", .timerFired(.protocolPeriod, now: harness.now))
        }
        #expect(harness.nodes["node-a"]!.counters.probesFailed == 1)
        #expect(harness.status(of: "node-b", at: "node-a") == .alive)
        #expect(harness.nodes["node-a"]!.localHealth > 0)
    }

    /// A node paused past a suspicion's deadline reads what arrived during the
    /// pause (the suspect's refutation) before it declares anyone dead: with
    /// Lifeguard the late timer only moves the verdict one probe timeout on.
    @Test func aSuspicionTimerThatFiresLateWaitsForTheRefutation() {
        for lifeguard in [true, false] {
            var node = ClusterNode(settings: testSettings("node-a", lifeguard: lifeguard), incarnation: 1,
                                   randomSeed: 9, authenticator: testKey)
            _ = node.step(.start(now: 0))
            let rumour = encoded(.pushPull(isReply: true, members: [update("node-c"),
                                                                     update("node-b", .suspect, accuser: "node-c")]),
                                 sender: "node-c")
            let armed = node.step(.received(frame: rumour, fromAddress: "node-c:7701", now: 100))
            let deadline = armed.compactMap { action -> Int64? in
                if case let .setTimer(.suspicion, at) = action { at } else { nil }
            }.last!
            let late = node.step(.timerFired(.suspicion, now: deadline + 8000))
            let statusOfB = { (node: ClusterNode) in node.members.first { $0.nodeID.name == "node-b" }?.status }
            guard lifeguard else {
                #expect(statusOfB(node) == .dead, "plain SWIM judges at once")
                continue
            }
            #expect(statusOfB(node) == .suspect)
            let grace = late.compactMap { action -> Int64? in
                if case let .setTimer(.suspicion, at) = action { at } else { nil }
            }
            #expect(grace.count == 1 && grace[0] > deadline + 8000)

            var refuted = node
            let refutation = encoded(.ack(seq: 1, updates: [update("node-b", incarnation: 8)]), sender: "node-b")
            _ = refuted.step(.received(frame: refutation, fromAddress: "node-b:7701", now: deadline + 8001))
            #expect(statusOfB(refuted) == .alive)

            var silent = node
            _ = silent.step(.timerFired(.suspicion, now: grace[0]))
            #expect(statusOfB(silent) == .dead, "nothing arrived during the grace: the verdict stands")
        }
    }

    @Test func aFloodOfProbeRequestsGetsBoundedHelp() {
        var node = ClusterNode(settings: testSettings("node-a"), incarnation: 1, randomSeed: 5, authenticator: testKey)
        _ = node.step(.start(now: 0))
        var relayed = 0
        for seq in 0..<2000 {
            let request = encoded(.pingReq(seq: UInt32(seq), target: NodeID("node-c")!, targetAddress: "node-c:7701",
                                           updates: []), sender: "node-b")
            relayed += node.step(.received(frame: request, fromAddress: "node-b:7701", now: 10)).filter {
                if case .send(_, "node-c:7701", _) = $0 { true } else { false }
            }.count
        }
        #expect(relayed == 1024)
    }

    /// A member that probes us knows us; one we never heard of gets a full
    /// exchange at once instead of waiting out push_pull_interval, at most
    /// one per gossip interval, and none once it is known.
    @Test func aProbeFromANodeNeverHeardOfStartsOneFullExchange() {
        var node = ClusterNode(settings: testSettings("node-a"), incarnation: 1, randomSeed: 5, authenticator: testKey)
        _ = node.step(.start(now: 0))
        func pushPullsSent(_ actions: [ClusterAction]) -> [String] {
            actions.compactMap { action -> String? in
                guard case let .send(frame, to, _) = action,
                      case let .message(message) = MessageCodec.decode(frame: frame, parameters: testParameters, authenticator: testKey),
                      case .pushPull(isReply: false, _) = message.payload else { return nil }
                return to
            }
        }
        let probe = encoded(.ping(seq: 1, target: NodeID("node-a")!, updates: []), sender: "node-b")
        let first = node.step(.received(frame: probe, fromAddress: "node-b:7701", now: 10))
        #expect(pushPullsSent(first) == ["node-b:7701"])
        #expect(first.contains { if case let .log(_, line) = $0 { line.contains("heard from node-b") } else { false } })
        let second = node.step(.received(frame: probe, fromAddress: "node-b:7701", now: 500))
        #expect(pushPullsSent(second).isEmpty, "one exchange per gossip interval")
        #expect(node.members.allSatisfy { $0.nodeID.name != "node-b" }, "a bare probe teaches nothing by itself")

        let reply = encoded(.pushPull(isReply: true, members: [update("node-b", .alive)]), sender: "node-b")
        _ = node.step(.received(frame: reply, fromAddress: "node-b:7701", now: 600))
        #expect(node.aliveMembers.map(\.name) == ["node-a", "node-b"])
        #expect(pushPullsSent(node.step(.received(frame: probe, fromAddress: "node-b:7701", now: 5000))).isEmpty,
                "a known member gets no extra exchange")
    }

    @Test func aNodeAloneKeepsAskingItsSeedsWithOneLogLinePerAttempt() {
        var harness = Harness()
        harness.silenced.insert("node-gone")
        harness.add("node-a", seeds: ["node-gone"])
        harness.run(until: 10_500)
        let retries = harness.logs.filter { $0.node == "node-a" && $0.line.contains("asking seeds") }
        #expect(retries.count == 5)
    }
}
