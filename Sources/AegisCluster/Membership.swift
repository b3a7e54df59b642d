#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// SWIM (Das, Gupta, Motivala 2002) with Lifeguard (Dadgar, Phillips, Currey
/// 2018), in the shape hashicorp/memberlist gave them, adapted to AegisKV's
/// settings:
///
/// - Probing. Each protocol period the node pings members in a shuffled
///   round-robin order, enough of them that every member is probed at least
///   once every `probeCycle` periods (see `probesPerPeriod`). A ping
///   unanswered after `probeTimeout` is retried through k other members
///   (ping-req). A round with no ack at all marks the member `failing`: it is
///   probed every period from then on.
/// - Suspicion. A failing member becomes `suspect` once nothing has been heard
///   from it for `suspect_timeout`; so a crashed node is suspected within
///   suspect_timeout + 2 gossip intervals. Suspicion turns into `dead` after
///   `dead_timeout - suspect_timeout`; with Lifeguard that is the floor, and
///   the timeout starts at `suspicionStretch` times it, shrinking as other
///   members independently confirm (log(C+1)/log(K+1) of the way down).
/// - Refutation. A probe of a suspect carries its suspicion (Lifeguard's
///   buddy system). A node told it is suspect or dead raises its incarnation and
///   gossips `alive`; newer incarnations win, and at equal incarnation
///   dead/left > suspect > alive.
/// - Local health (Lifeguard). Failed probes, late timers, reported lag and
///   having to refute raise a score (0...8); answered probes lower it. The
///   probe interval and timeout are multiplied by score + 1, and a round that
///   started late accuses nobody: a slow node stretches its own timeouts
///   instead of calling healthy peers dead.
/// - Dissemination. Updates ride on pings, ping-reqs and acks, up to the
///   control message size, fewest-sent first, each sent
///   `retransmitMultiplier · ⌈log10(n + 1)⌉` times. A full push/pull over the
///   bulk lane at join and every `push_pull_interval` repairs whatever gossip
///   missed.
extension ClusterNode {
    static let healthMax = 8
    static let suspicionStretch: Int64 = 3
    static let retransmitMultiplier = 4

    var scale: Int64 { settings.lifeguard ? Int64(state.health + 1) : 1 }

    /// Lateness past which this node counts itself unhealthy, whether its own
    /// timer fired late or its driver reports lag (`.localHealth`): half a
    /// gossip interval. Below it the node still answers a probe before the
    /// prober's probe timeout (also half an interval) runs out, so nobody
    /// could have suspected anyone on its account; above it that is no longer
    /// sure, and the node stretches its own timeouts instead.
    var lateThresholdMs: Int64 { settings.gossipIntervalMs / 2 }
    var periodMs: Int64 { settings.gossipIntervalMs * scale }
    var probeTimeoutMs: Int64 { max(1, settings.gossipIntervalMs / 2) * scale }

    /// Periods within which every member is probed at least once, chosen so
    /// that a member first probed after it crashes is probed within
    /// suspect_timeout + 1 interval: a pass takes at most `probeCycle` periods
    /// and two probes of one member are at most 2·probeCycle − 1 apart.
    var probeCycle: Int {
        max(1, Int((settings.suspectTimeoutMs + 2 * settings.gossipIntervalMs) / (2 * settings.gossipIntervalMs)))
    }

    var aliveOthers: [NodeID] {
        state.members.values.filter { $0.status == .alive }.map(\.node).sorted()
    }

    var probeCandidates: [NodeID] {
        state.members.values.filter { $0.status == .alive || $0.status == .suspect }.map(\.node).sorted()
    }

    var selfUpdate: MemberUpdate {
        MemberUpdate(node: settings.nodeID, status: state.phase == .left ? .left : .alive,
                     incarnation: state.incarnation, gossipAddress: settings.gossipAddress,
                     clientAddress: settings.clientAddress)
    }

    // MARK: - Start, leave, seeds

    mutating func start(now: Milliseconds, into output: inout ActionBuffer) {
        state.phase = .running
        state.startedAt = now
        output.append(.memberChanged(MemberChange(node: settings.nodeID, from: nil, to: .alive,
                                                  incarnation: state.incarnation,
                                                  reason: "this node started with incarnation \(state.incarnation)")))
        enqueueBroadcast(selfUpdate)
        // Jitter spreads the nodes' periods so that probes do not all go out at once.
        let jitter = Int64.random(in: 0..<settings.gossipIntervalMs, using: &state.random)
        armPeriod(at: now + jitter, into: &output)
        output.append(.setTimer(.pushPull, at: now + settings.pushPullIntervalMs))
        output.append(.setTimer(.reconnect, at: now + jitter + settings.gossipIntervalMs / 2))
        contactSeeds(now: now, into: &output)
    }

    mutating func contactSeeds(now: Milliseconds, into output: inout ActionBuffer) {
        let seeds = state.seeds.filter { $0 != settings.gossipAddress }
        guard !seeds.isEmpty else { return }
        for seed in seeds { sendPushPull(to: seed, isReply: false, into: &output) }
        output.append(.setTimer(.seedRetry, at: now + settings.seedRetryIntervalMs))
    }

    mutating func seedRetry(now: Milliseconds, into output: inout ActionBuffer) {
        let seeds = state.seeds.filter { $0 != settings.gossipAddress }
        guard aliveOthers.isEmpty else {
            // Groups that formed apart (each joined through a seed while the
            // other side was unreachable) never probe or gossip to each
            // other: nobody in one knows anybody in the other. A seed that
            // is no member of this node's view is the only bridge left, so
            // it is asked again, quietly, until it answers.
            let known = Set(state.members.values.map(\.gossipAddress))
            for seed in seeds where !known.contains(seed) { sendPushPull(to: seed, isReply: false, into: &output) }
            output.append(.setTimer(.seedRetry, at: now + settings.seedRetryIntervalMs))
            return
        }
        guard !seeds.isEmpty else { return }
        output.append(.log(.warning, "no live member known; asking seeds \(seeds.joined(separator: ", ")) again"))
        contactSeeds(now: now, into: &output)
    }

    /// New timings from a reload. Everything judged from now on uses them;
    /// a suspicion already running keeps the deadline it was given (shortening
    /// it could declare a member dead that was promised longer to refute). A
    /// period armed at the old interval is moved earlier when the new one is
    /// shorter, so that a shorter interval takes effect at once.
    mutating func changeTimings(_ timings: MembershipTimings, now: Milliseconds, into output: inout ActionBuffer) {
        var next = settings
        next.timings = timings
        if let problem = next.problem {
            output.append(.log(.warning, "membership timings not changed: \(problem); still \(settings.timings)"))
            return
        }
        guard timings != settings.timings else { return }
        let before = settings.timings
        settings = next
        if let due = state.periodDueAt, due > now + periodMs { armPeriod(at: now + periodMs, into: &output) }
        output.append(.log(.notice, "membership timings changed from \(before) to \(timings)"))
    }

    mutating func leave(now: Milliseconds, into output: inout ActionBuffer) {
        state.incarnation += 1
        state.phase = .left
        let farewell = selfUpdate
        let told = probeCandidates.count
        output.append(.memberChanged(MemberChange(node: settings.nodeID, from: .alive, to: .left,
                                                  incarnation: state.incarnation,
                                                  reason: "this node is stopping; told \(told) member(s) directly")))
        // Sent to each member directly rather than left to gossip: after this
        // the node stops taking part, so it cannot retransmit.
        for node in probeCandidates {
            guard let member = state.members[node] else { continue }
            let seq = takeSeq()
            send(.ping(seq: seq, target: node, updates: [farewell]), to: member.gossipAddress,
                 lane: .control, into: &output)
        }
    }

    // MARK: - Timers

    mutating func timerFired(_ timer: TimerID, now: Milliseconds, into output: inout ActionBuffer) {
        switch timer {
        case .protocolPeriod: protocolPeriod(now: now, into: &output)
        case .probeTimeout: probeTimedOut(now: now, into: &output)
        case .suspicion: expireSuspicions(now: now, into: &output)
        case .pushPull: pushPull(now: now, into: &output)
        case .seedRetry: seedRetry(now: now, into: &output)
        case .relayTimeout: sendNacks(now: now, into: &output)
        case .reconnect: remindUnreachable(now: now, into: &output)
        }
    }

    /// Most members one reconnect round tells: a table full of long-dead
    /// members costs at most this many pings per interval.
    static let reconnectPingsMax = 16

    /// Gossip to the dead (memberlist's GossipToTheDeadTime), without its
    /// time limit. Nobody probes a member held dead, and a suspect is probed
    /// only when its turn comes in the (health-stretched) rotation; after a
    /// partition heals, each side would keep the other dead until a push/pull
    /// happened to pick it (up to push_pull_interval, 30 s by default).
    /// Here each such member gets, every gossip_interval, a
    /// ping that carries what this node believes of it plus this node's own
    /// `alive`: a member that can hear it refutes in its ack (as a suspect
    /// does for Lifeguard's buddy probe), which makes it `alive` here one
    /// round trip later, and it learns of this node if it did not know it.
    /// The interval is not stretched by local health: these pings accuse
    /// nobody, they can only bring members back. A member that is really
    /// gone costs one small frame per interval (its link's dial backs off
    /// to one attempt per 2 s on its own).
    mutating func remindUnreachable(now: Milliseconds, into output: inout ActionBuffer) {
        output.append(.setTimer(.reconnect, at: now + settings.gossipIntervalMs))
        let unreachable = state.members.values.filter {
            $0.status == .dead || (settings.lifeguard && $0.status == .suspect)
        }.map(\.node).sorted()
        guard !unreachable.isEmpty else { return }
        let count = min(unreachable.count, Self.reconnectPingsMax)
        let start = state.reconnectCursor % unreachable.count
        state.reconnectCursor = (start + count) % unreachable.count
        for offset in 0..<count {
            let node = unreachable[(start + offset) % unreachable.count]
            guard let member = state.members[node] else { continue }
            let news = MemberUpdate(node: node, status: member.status, incarnation: member.incarnation,
                                    gossipAddress: member.gossipAddress, clientAddress: member.clientAddress,
                                    accuser: member.suspicion?.accusers.min())
            let seq = takeSeq()
            let updates = [news, selfUpdate]
            send(.ping(seq: seq, target: node, updates: updates), to: member.gossipAddress, lane: .control, into: &output)
        }
    }

    /// A full exchange with one live member, and one with a member held dead
    /// (as Serf's reconnect does): it repairs what gossip and the reconnect
    /// pings (`remindUnreachable`) missed, such as members one side learned
    /// of while the other could not hear.
    mutating func pushPull(now: Milliseconds, into output: inout ActionBuffer) {
        if let partner = aliveOthers.randomElement(using: &state.random), let member = state.members[partner] {
            sendPushPull(to: member.gossipAddress, isReply: false, into: &output)
        }
        let dead = state.members.values.filter { $0.status == .dead }.map(\.node).sorted()
        if let partner = dead.randomElement(using: &state.random), let member = state.members[partner] {
            sendPushPull(to: member.gossipAddress, isReply: false, into: &output)
        }
        output.append(.setTimer(.pushPull, at: now + settings.pushPullIntervalMs))
    }

    mutating func armPeriod(at time: Milliseconds, into output: inout ActionBuffer) {
        state.periodDueAt = time
        output.append(.setTimer(.protocolPeriod, at: time))
    }

    mutating func protocolPeriod(now: Milliseconds, into output: inout ActionBuffer) {
        let lateMs = now - (state.periodDueAt ?? now)
        let startedLate = settings.lifeguard && lateMs > lateThresholdMs
        if startedLate { adjustHealth(+1) }
        closeRound(now: now, trustFailures: !startedLate, into: &output)

        for target in chooseProbeTargets() {
            guard let member = state.members[target] else { continue }
            let seq = takeSeq()
            state.pendingProbes.append(PendingProbe(target: target, seq: seq))
            var budget = piggybackBudget(fixedPayloadBytes: 4 + 1 + target.name.utf8.count + 1)
            // Lifeguard's buddy system: a suspect hears of its suspicion from
            // the very probe, rather than hoping gossip reaches it in time.
            var updates: [MemberUpdate] = []
            if settings.lifeguard && member.status == .suspect {
                let news = MemberUpdate(node: target, status: .suspect, incarnation: member.incarnation,
                                        gossipAddress: member.gossipAddress, clientAddress: member.clientAddress,
                                        accuser: member.suspicion?.accusers.min())
                updates.append(news)
                budget -= news.encodedBytes
            }
            updates += takeBroadcasts(budget: budget)
            send(.ping(seq: seq, target: target, updates: updates), to: member.gossipAddress, lane: .control,
                 into: &output)
        }
        if !state.pendingProbes.isEmpty { output.append(.setTimer(.probeTimeout, at: now + probeTimeoutMs)) }
        armPeriod(at: now + periodMs, into: &output)
    }

    /// Judges last period's probes. A round that began late (the node itself
    /// was paused or overloaded) is not trusted: its acks may be sitting unread.
    mutating func closeRound(now: Milliseconds, trustFailures: Bool, into output: inout ActionBuffer) {
        let round = state.pendingProbes
        state.pendingProbes = []
        for probe in round where !probe.answered {
            guard var member = state.members[probe.target],
                  member.status == .alive || member.status == .suspect else { continue }
            counters.probesFailed += 1
            guard trustFailures else { continue }
            // Lifeguard: helpers that did not even nack point at this node's
            // own links; a target nobody reaches says nothing about us.
            if probe.nacks < probe.helpersAsked { adjustHealth(+1) }
            if member.status == .suspect {
                confirmSuspicion(of: probe.target, by: settings.nodeID, now: now, into: &output)
            } else if now - member.silenceStart >= settings.suspectTimeoutMs {
                member.failing = false
                state.members[probe.target] = member
                let update = MemberUpdate(node: member.node, status: .suspect, incarnation: member.incarnation,
                                          gossipAddress: member.gossipAddress, clientAddress: member.clientAddress,
                                          accuser: settings.nodeID)
                applyUpdate(update, now: now, reasonSource: "no answer for \(now - member.silenceStart) ms",
                            into: &output)
            } else {
                member.failing = true
                state.members[probe.target] = member
            }
        }
    }

    func probesPerPeriod(candidates: Int) -> Int {
        max(1, (candidates + probeCycle - 1) / probeCycle)
    }

    /// Failing members first (they must be judged within suspect_timeout),
    /// then the shuffled round-robin pass.
    mutating func chooseProbeTargets() -> [NodeID] {
        let candidates = probeCandidates
        guard !candidates.isEmpty else { return [] }
        var chosen = candidates.filter { state.members[$0]?.failing == true && state.members[$0]?.status == .alive }
        let wanted = probesPerPeriod(candidates: candidates.count)
        var attempts = 0
        while chosen.count < min(wanted, candidates.count) && attempts < 2 * candidates.count + 2 {
            attempts += 1
            if state.probeOrder.isEmpty { state.probeOrder = candidates.shuffled(using: &state.random) }
            let next = state.probeOrder.removeFirst()
            let status = state.members[next]?.status
            guard status == .alive || status == .suspect, !chosen.contains(next) else { continue }
            chosen.append(next)
        }
        return chosen
    }

    mutating func probeTimedOut(now: Milliseconds, into output: inout ActionBuffer) {
        for index in state.pendingProbes.indices where !state.pendingProbes[index].answered
            && !state.pendingProbes[index].indirectSent {
            sendIndirectProbes(forPendingAt: index, into: &output)
        }
    }

    mutating func sendIndirectProbes(forPendingAt index: Int, into output: inout ActionBuffer) {
        state.pendingProbes[index].indirectSent = true
        let probe = state.pendingProbes[index]
        guard let target = state.members[probe.target] else { return }
        var helpers = aliveOthers.filter { $0 != probe.target }
        helpers.shuffle(using: &state.random)
        for helper in helpers.prefix(settings.indirectProbes) {
            guard let member = state.members[helper] else { continue }
            state.pendingProbes[index].helpersAsked += 1
            let budget = piggybackBudget(fixedPayloadBytes: 4 + 1 + probe.target.name.utf8.count
                                         + 1 + target.gossipAddress.utf8.count + 1)
            send(.pingReq(seq: probe.seq, target: probe.target, targetAddress: target.gossipAddress,
                          updates: takeBroadcasts(budget: budget)),
                 to: member.gossipAddress, lane: .control, into: &output)
        }
    }

    mutating func linkBroken(address: String, now: Milliseconds, into output: inout ActionBuffer) {
        for index in state.pendingProbes.indices {
            let probe = state.pendingProbes[index]
            guard !probe.answered, !probe.indirectSent,
                  state.members[probe.target]?.gossipAddress == address else { continue }
            sendIndirectProbes(forPendingAt: index, into: &output)
        }
    }

    mutating func sendNacks(now: Milliseconds, into output: inout ActionBuffer) {
        state.relayDueAt = nil
        for seq in state.relays.keys.sorted() {
            guard let relay = state.relays[seq], relay.nackAt <= now else { continue }
            state.relays[seq] = nil
            send(.nack(seq: relay.requesterSeq, updates: takeBroadcasts(budget: piggybackBudget(fixedPayloadBytes: 5))),
                 to: relay.requesterAddress, lane: .control, into: &output)
        }
        armRelayTimer(into: &output)
    }

    mutating func armRelayTimer(into output: inout ActionBuffer) {
        guard let earliest = state.relays.values.map(\.nackAt).min(), earliest != state.relayDueAt else { return }
        state.relayDueAt = earliest
        output.append(.setTimer(.relayTimeout, at: earliest))
    }

    mutating func expireSuspicions(now: Milliseconds, into output: inout ActionBuffer) {
        let lateMs = now - (state.suspicionDueAt ?? now)
        state.suspicionDueAt = nil
        // Lifeguard: a suspicion timer that fires late means this node was
        // stalled (paused, swapped, overloaded), and the suspect's refutation
        // may be sitting unread in its socket. Judging now would declare a
        // node dead on what we knew before the stall; instead the overdue
        // suspicions wait one probe timeout, long enough to read what arrived.
        if settings.lifeguard && lateMs > lateThresholdMs {
            adjustHealth(+1)
            let grace = now + probeTimeoutMs
            for node in state.members.keys.sorted() {
                guard var member = state.members[node], member.status == .suspect,
                      let deadline = member.suspicion?.deadline, deadline <= now else { continue }
                member.suspicion?.deadline = grace
                state.members[node] = member
            }
            armSuspicionTimer(into: &output)
            return
        }
        for node in state.members.keys.sorted() {
            guard let member = state.members[node], member.status == .suspect,
                  let suspicion = member.suspicion, suspicion.deadline <= now else { continue }
            let update = MemberUpdate(node: node, status: .dead, incarnation: member.incarnation,
                                      gossipAddress: member.gossipAddress, clientAddress: member.clientAddress)
            applyUpdate(update, now: now,
                        reasonSource: "suspected for \(now - suspicion.start) ms by \(suspicion.accusers.count) member(s) without refuting",
                        into: &output)
        }
        armSuspicionTimer(into: &output)
    }

    mutating func armSuspicionTimer(into output: inout ActionBuffer) {
        let earliest = state.members.values.compactMap { $0.status == .suspect ? $0.suspicion?.deadline : nil }.min()
        guard let earliest, earliest != state.suspicionDueAt else { return }
        state.suspicionDueAt = earliest
        output.append(.setTimer(.suspicion, at: earliest))
    }

    /// Lifeguard's dynamic suspicion timeout.
    func suspicionTimeout(confirmations: Int) -> Int64 {
        let floor = settings.deadTimeoutMs - settings.suspectTimeoutMs
        let expected = min(settings.indirectProbes, aliveOthers.count)
        guard settings.lifeguard, expected > 0 else { return floor }
        let ceiling = floor * Self.suspicionStretch
        let fraction = log(Double(confirmations + 1)) / log(Double(expected + 1))
        let timeout = Double(ceiling) - Double(ceiling - floor) * min(1, fraction)
        return max(floor, Int64(timeout.rounded(.down)))
    }

    mutating func adjustHealth(_ delta: Int) {
        guard settings.lifeguard else { return }
        state.health = min(Self.healthMax, max(state.healthHeldByLag ? 1 : 0, state.health + delta))
    }

    /// A lag report counts like a late timer (+1 past the threshold). Unlike a
    /// late timer, which the node sees itself, lagging reactors say nothing
    /// about the probes the cluster loop answers meanwhile: their acks would
    /// take the point off again within the period that earned it. So the
    /// score is held at 1 or more until a report under the threshold.
    mutating func reportedLag(_ lagMs: Int64) {
        guard settings.lifeguard else { return }
        let lagging = lagMs > lateThresholdMs
        state.healthHeldByLag = lagging
        if lagging { adjustHealth(+1) }
    }

    mutating func takeSeq() -> UInt32 {
        defer { state.nextSeq = state.nextSeq &+ 1 }
        return state.nextSeq
    }
}
