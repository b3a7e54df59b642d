import AegisSimulation
import AegisStore
import Testing
@testable import AegisCluster

/// A few lease machines wired by hand: frames go into a list and are
/// delivered when the test says, at the time it says.
struct LeaseCluster {
    static let parameters = ClusterParameters(numShards: 4, virtualNodes: 16, replicationFactor: 3)
    static let authenticator = KeyedMixAuthenticator(key: 7)
    static let durationMs: Int64 = 4000
    static let tickMs: Int64 = 1000

    var ids: [NodeID]
    var machines: [LeaseMachine]
    let map: ShardMap
    var inFlight: [(from: Int, to: Int, frame: [UInt8])] = []
    /// Every action of every node, in order.
    var log: [[LeaseAction]]

    static func settings(_ id: NodeID) -> LeaseSettings {
        LeaseSettings(nodeID: id, leaseDurationMs: durationMs, tickIntervalMs: tickMs, electionTimeoutMs: 4000,
                      clockDriftBoundPPM: 20_000, parameters: parameters)
    }

    static var margin: Int64 { settings(NodeID("x")!).marginMs(for: durationMs) }
    /// When a node started at 0 may first grant or campaign.
    static var quietEnd: Int64 { durationMs + margin }

    /// `blank`: the nodes that start with an empty data_dir, as on a real
    /// first start (`startedBlank`); the others start as if they had kept
    /// terms from a life that voted in none.
    init(count: Int = 3, persisted: [[Int: PersistedTerm]]? = nil, learners: Set<Int> = [], blank: Set<Int> = [],
         startAt: Int64 = 0) {
        ids = (0..<count).map { NodeID("node\($0)")! }
        map = try! ShardMap(members: ids, numShards: Int(Self.parameters.numShards),
                            virtualNodes: Int(Self.parameters.virtualNodes), replicationFactor: 3)
        machines = []
        log = Array(repeating: [], count: count)
        for index in 0..<count {
            machines.append(Self.machine(ids[index], persisted: persisted?[index] ?? [:],
                                         learner: learners.contains(index), blank: blank.contains(index), life: 1))
            start(index, at: startAt)
        }
    }

    static func machine(_ id: NodeID, persisted: [Int: PersistedTerm], learner: Bool, restarted: Bool = false,
                        blank: Bool = false, stillBlank: Set<Int> = [], life: UInt64) -> LeaseMachine {
        LeaseMachine(settings: settings(id), persisted: persisted, emptyLearner: learner, restarted: restarted,
                     startedBlank: blank, stillBlank: stillBlank, life: life, randomSeed: 99, authenticator: authenticator)
    }

    /// The terms node `index` persisted from its action number `since` on.
    func persisted(by index: Int, since: Int) -> [Int: PersistedTerm] {
        var terms: [Int: PersistedTerm] = [:]
        for case let .persistTerm(shard, record) in log[index][since...] { terms[shard] = record }
        return terms
    }

    mutating func start(_ index: Int, at now: Int64) {
        machines[index].peersDecodingCopyState(Set(ids))
        machines[index].peersDecodingConfig(Set(ids))
        step(index, .start(now: now))
        step(index, .placementChanged(map, now: now))
        step(index, .membersChanged(alive: ids, now: now))
    }

    @discardableResult
    mutating func step(_ index: Int, _ event: LeaseEvent) -> [LeaseAction] {
        let actions = machines[index].step(event)
        log[index].append(contentsOf: actions)
        for case let .send(frame, to) in actions { inFlight.append((index, ids.firstIndex(of: to)!, frame)) }
        return actions
    }

    mutating func tick(_ index: Int, at now: Int64) -> [LeaseAction] {
        step(index, .timerFired(.tick, now: now))
    }

    /// Ticks every node not in `cut` from `from` to `to` (inclusive), one
    /// tick apart, delivering at each.
    mutating func run(from: Int64, to: Int64, cut: Set<Int> = [], oneWay: (from: Int, to: Int)? = nil) {
        var now = from
        while now <= to {
            for index in machines.indices where !cut.contains(index) { _ = tick(index, at: now) }
            deliver(at: now, cut: cut, oneWay: oneWay)
            now += Self.tickMs
        }
    }

    /// Delivers everything in flight (and what that produces) at `now`,
    /// except frames to or from the nodes in `cut`.
    mutating func deliver(at now: Int64, cut: Set<Int> = [], oneWay: (from: Int, to: Int)? = nil) {
        var rounds = 0
        while !inFlight.isEmpty && rounds < 10 {
            rounds += 1
            let batch = inFlight
            inFlight = []
            for (from, to, frame) in batch where !cut.contains(from) && !cut.contains(to)
                && !(oneWay?.from == from && oneWay?.to == to) {
                step(to, .received(frame: frame, now: now))
            }
        }
    }

    /// What node `voter` answers a one-shard request for shard 0 from
    /// `requester`, delivered to it alone; nil when it sends no reply.
    mutating func verdictAskedDirectly(of voter: Int, from requester: Int, term: UInt32, at now: Int64) -> LeaseVerdict? {
        answerAskedDirectly(of: voter, from: requester, term: term, at: now)?.verdict
    }

    /// The whole answer behind `verdictAskedDirectly`. `mayHaveHole` nil
    /// sends the form 0.2.0 decodes, which says nothing of the copy;
    /// `withConfig` the form this release sends its peers.
    mutating func answerAskedDirectly(of voter: Int, from requester: Int, term: UInt32, at now: Int64,
                                      lastVersion: EntryVersion = .zero, mayHaveHole: Bool? = nil,
                                      withConfig: Bool = false) -> LeaseAnswer? {
        let asks = [LeaseAsk(shard: 0, term: term, lastVersion: lastVersion, mayHaveHole: mayHaveHole ?? false)]
        let ask = LeaseMessage(sender: ids[requester], payload: withConfig
            ? .requestWithConfig(round: 1, life: 1, durationMs: 1000, asks: asks)
            : mayHaveHole == nil
            ? .request(round: 1, life: 1, durationMs: 1000, asks: asks)
            : .requestWithCopyState(round: 1, life: 1, durationMs: 1000, asks: asks))
        let frame = LeaseCodec.encode(ask, parameters: Self.parameters, authenticator: Self.authenticator)
        let reply = sends(step(voter, .received(frame: frame, now: now))).first.flatMap { decodeLease($0.frame) }
        guard let answers = reply?.payload.answers else { return nil }
        return answers.first
    }

    /// The preferred replica of a shard: its primary in the map.
    func primary(_ shard: Int) -> Int { ids.firstIndex(of: map.primary(ofShard: shard))! }

    /// Every node that holds `shard` at `now` on the shared test clock.
    func holders(_ shard: Int, at now: Int64) -> [Int] {
        machines.indices.filter { machines[$0].holdsLease(shard, now: now) }
    }
}

func sends(_ actions: [LeaseAction]) -> [(frame: [UInt8], to: NodeID)] {
    actions.compactMap { if case let .send(frame, to) = $0 { (frame, to) } else { nil } }
}

func decodeLease(_ frame: [UInt8]) -> LeaseMessage? {
    if case let .message(message) = LeaseCodec.decode(frame: frame, parameters: LeaseCluster.parameters,
                                                       authenticator: LeaseCluster.authenticator) { return message }
    return nil
}

func encodeLease(_ message: LeaseMessage, parameters: ClusterParameters = LeaseCluster.parameters) -> [UInt8] {
    LeaseCodec.encode(message, parameters: parameters, authenticator: LeaseCluster.authenticator)
}

/// Why the decoder drops `frame`; nil when it decodes.
func leaseDropReason(_ frame: [UInt8]) -> DropReason? {
    if case let .dropped(reason) = LeaseCodec.decode(frame: frame, parameters: LeaseCluster.parameters,
                                                     authenticator: LeaseCluster.authenticator) { return reason }
    return nil
}

/// Re-signs a frame whose body a test changed, so that the check under
/// test is the one past the MAC.
func resignedLeaseFrame(_ body: [UInt8]) -> [UInt8] {
    var frame = body
    let length = frame.count - 4 + MessageCodec.tagBytes
    for offset in 0..<4 { frame[offset] = UInt8((length >> (24 - 8 * offset)) & 0xFF) }
    frame.append(contentsOf: LeaseCluster.authenticator.tag(for: frame[...]))
    return frame
}

/// Any prefix and any single flipped byte of a valid frame: a drop, never
/// a trap, and no change to the machine that receives it.
func expectEveryDamagedFrameRefused(_ message: LeaseMessage) {
    var cluster = LeaseCluster()
    let frame = encodeLease(message)
    for length in 0..<frame.count {
        let before = cluster.machines[2].state
        #expect(cluster.step(2, .received(frame: Array(frame.prefix(length)), now: 10)).isEmpty)
        #expect(cluster.machines[2].state == before)
    }
    for position in frame.indices {
        var damaged = frame
        damaged[position] ^= 0x5A
        let before = cluster.machines[2].state
        #expect(cluster.step(2, .received(frame: damaged, now: 10)).isEmpty)
        #expect(cluster.machines[2].state == before)
    }
    #expect(cluster.machines[2].counters.droppedByReason.values.reduce(0, +) == UInt64(2 * frame.count))
}

@Suite struct LeaseCodecTests {
    static let request = LeaseMessage(sender: NodeID("node1")!, payload: .request(
        round: 7, life: 1_767_225_600_000, durationMs: 4000,
        asks: [LeaseAsk(shard: 0, term: 3, lastVersion: EntryVersion(term: 2, seq: 99)),
               LeaseAsk(shard: 3, term: 1, lastVersion: .zero)]))
    static let reply = LeaseMessage(sender: NodeID("node2")!, payload: .reply(
        round: 7, life: 1_767_225_600_000,
        answers: LeaseVerdict.allCases.prefix(4).enumerated().map {
            LeaseAnswer(shard: UInt32($0.offset), term: 5, verdict: $0.element, voterTerm: 6)
        }))

    func encode(_ message: LeaseMessage, parameters: ClusterParameters = LeaseCluster.parameters) -> [UInt8] {
        encodeLease(message, parameters: parameters)
    }

    static let requestWithCopyState = LeaseMessage(sender: NodeID("node1")!, payload: .requestWithCopyState(
        round: 8, life: 1_767_225_600_000, durationMs: 4000,
        asks: [LeaseAsk(shard: 0, term: 3, lastVersion: EntryVersion(term: 2, seq: 99), mayHaveHole: true),
               LeaseAsk(shard: 3, term: 1, lastVersion: .zero, mayHaveHole: false)]))

    @Test(arguments: [request, reply, requestWithCopyState]) func roundTrips(_ message: LeaseMessage) {
        let frame = encode(message)
        #expect(LeaseCodec.isLeaseFrame(frame))
        #expect(decodeLease(frame) == message)
    }

    @Test func membershipFramesAreNotLeaseFrames() {
        let ping = MessageCodec.encode(ClusterMessage(sender: NodeID("a")!, senderGossipAddress: "a:7701",
                                                      payload: .ping(seq: 1, target: NodeID("b")!, updates: [])),
                                       parameters: LeaseCluster.parameters, authenticator: LeaseCluster.authenticator)
        #expect(!LeaseCodec.isLeaseFrame(ping))
        #expect(!LeaseCodec.isLeaseFrame([0, 0]))
    }

    func dropReason(_ frame: [UInt8]) -> DropReason? { leaseDropReason(frame) }

    func resigned(_ body: [UInt8]) -> [UInt8] { resignedLeaseFrame(body) }

    @Test func badInputIsRefusedWithItsReason() {
        let good = encode(Self.request)
        var flipped = good
        flipped[good.count - 40] ^= 0x01
        #expect(dropReason(flipped) == .badMAC)
        var version = good
        version[4] = 2
        #expect(dropReason(version) == .unknownVersion)
        #expect(dropReason(Array(good.dropLast())) == .malformed)
        #expect(dropReason([]) == .malformed)
        let other = ClusterParameters(numShards: 8, virtualNodes: 16, replicationFactor: 3)
        #expect(dropReason(encode(Self.request, parameters: other)) == .clusterMismatch)
        #expect(dropReason(LeaseCodec.encode(Self.request, parameters: LeaseCluster.parameters,
                                             authenticator: KeyedMixAuthenticator(key: 8))) == .badMAC)
    }

    @Test func askOutsideTheShardsTwiceOrAtTermZeroIsMalformed() {
        func withAsks(_ asks: [LeaseAsk]) -> [UInt8] {
            encode(LeaseMessage(sender: NodeID("node1")!, payload: .request(round: 1, life: 1, durationMs: 10, asks: asks)))
        }
        #expect(decodeLease(withAsks([LeaseAsk(shard: 3, term: 1, lastVersion: .zero)])) != nil)
        #expect(dropReason(withAsks([LeaseAsk(shard: 4, term: 1, lastVersion: .zero)])) == .malformed)
        #expect(dropReason(withAsks([LeaseAsk(shard: 1, term: 0, lastVersion: .zero)])) == .malformed)
        let twice = LeaseAsk(shard: 2, term: 1, lastVersion: .zero)
        #expect(dropReason(withAsks([twice, twice])) == .malformed)
        #expect(dropReason(withAsks([])) == .malformed)
        // An unknown verdict byte in an otherwise well-formed reply, and a
        // granted term above the voter's own.
        let reply = encode(LeaseMessage(sender: NodeID("node2")!, payload: .reply(
            round: 1, life: 1, answers: [LeaseAnswer(shard: 1, term: 1, verdict: .granted, voterTerm: 1)])))
        var body = Array(reply.dropLast(MessageCodec.tagBytes))
        #expect(decodeLease(resigned(body)) != nil)
        body[body.count - 9] = 200
        #expect(dropReason(resigned(body)) == .malformed)
        body = Array(reply.dropLast(MessageCodec.tagBytes))
        body[body.count - 1] = 2
        #expect(dropReason(resigned(body)) == .malformed)
    }

    /// The form 0.2.0 decodes has no room for the copy state: it is not
    /// sent (the ask decodes as saying nothing), and a byte appended to an
    /// ask, which is what carrying it in that form would take, makes the
    /// frame malformed, as it is on a 0.2.0 node.
    @Test func theOldRequestFormCarriesNoCopyStateAndCannotBeExtended() {
        guard case let .requestWithCopyState(round, life, durationMs, asks) = Self.requestWithCopyState.payload else {
            Issue.record("not a request with copy state")
            return
        }
        let old = LeaseMessage(sender: NodeID("node1")!, payload: .request(round: round, life: life, durationMs: durationMs, asks: asks))
        guard case let .request(_, _, _, decoded)? = decodeLease(encode(old))?.payload else {
            Issue.record("the old form did not decode as a request")
            return
        }
        #expect(decoded.map(\.mayHaveHole) == [false, false])
        #expect(decoded.map(\.lastVersion) == asks.map(\.lastVersion))
        var body = Array(encode(old).dropLast(MessageCodec.tagBytes))
        body.append(LeaseAsk.mayHaveHoleBit)
        #expect(dropReason(resigned(body)) == .malformed)
        #expect(LeaseCodec.isLeaseFrame(encode(Self.requestWithCopyState)))
    }

    /// The copy byte: present for every ask, only bit 0 defined.
    @Test func aCopyStateByteMissingOrWithUnknownBitsIsMalformed() {
        let good = Array(encode(Self.requestWithCopyState).dropLast(MessageCodec.tagBytes))
        #expect(decodeLease(resigned(good)) == Self.requestWithCopyState)
        // The last ask's copy byte is the body's last byte.
        for copy: UInt8 in [2, 0x80, 0xFF] {
            var body = good
            body[body.count - 1] = copy
            #expect(dropReason(resigned(body)) == .malformed, "copy byte \(copy)")
        }
        #expect(dropReason(resigned(Array(good.dropLast()))) == .malformed)
        var extra = good
        extra.append(0)
        #expect(dropReason(resigned(extra)) == .malformed)
    }

    /// Any prefix and any single flipped byte of a valid frame: a message or
    /// a drop, never a trap; and a frame the machine drops changes nothing.
    @Test(arguments: [request, requestWithCopyState]) func everyDamagedFrameIsRefusedWithoutAStateChange(_ message: LeaseMessage) {
        expectEveryDamagedFrameRefused(message)
    }
}

@Suite struct LeaseMarginTests {
    /// The margin makes a granter's promise outlast the holder's lease at the
    /// worst drift: the holder's clock slow by ρ, the granter's fast by ρ.
    @Test(arguments: [Int64(1), 100, 2000, 4000, 30_000]) func marginCoversTheWorstDrift(_ durationMs: Int64) {
        for ppm: Int64 in [0, 1000, 20_000, 100_000] {
            let margin = LeaseSettings.marginMs(for: durationMs, clockDriftBoundPPM: ppm)
            let rho = Double(ppm) / 1e6
            let holderRealMax = Double(durationMs) / (1 - rho)
            let granterRealMin = Double(durationMs + margin) / (1 + rho)
            #expect(granterRealMin >= holderRealMax, "D \(durationMs) ppm \(ppm) margin \(margin)")
            // And it is not wasteful: a few ms less would not do at a large drift.
            if ppm >= 20_000 && durationMs >= 2000 {
                #expect(Double(durationMs + margin - 3) / (1 + rho) < holderRealMax)
            }
        }
    }

    @Test func settingsThatCannotRunSaySo() {
        var settings = LeaseCluster.settings(NodeID("a")!)
        #expect(settings.problem == nil)
        settings.tickIntervalMs = 2001
        #expect(settings.problem != nil)
        settings = LeaseCluster.settings(NodeID("a")!)
        settings.clockDriftBoundPPM = 600_000
        #expect(settings.problem != nil)
        settings = LeaseCluster.settings(NodeID("a")!)
        settings.leaseDurationMs = 0
        #expect(settings.problem != nil)
    }
}

@Suite struct LeaseMachineTests {
    let shard = 0

    /// The preferred replica wins the shard after the quiet period and
    /// writes 40 records that every replica holds (2 s after `quietEnd`).
    func holderWithWritesEveryoneHolds(_ cluster: inout LeaseCluster) -> (primary: Int, version: EntryVersion) {
        let primary = cluster.primary(shard)
        let start = LeaseCluster.quietEnd
        cluster.run(from: start, to: start + 2000)
        #expect(cluster.holders(shard, at: start + 2000) == [primary])
        let version = EntryVersion(term: cluster.machines[primary].term(ofShard: shard), seq: 40)
        for index in cluster.machines.indices {
            _ = cluster.step(index, .localVersion(shard: shard, version: version, now: start + 2000))
        }
        return (primary, version)
    }

    @Test func thePreferredReplicaIsElectedByAMajorityAfterTheQuietPeriod() {
        var cluster = LeaseCluster()
        let primary = cluster.primary(shard)
        // Within one lease plus margin of start nobody campaigns: they may
        // have granted leases before a restart that they no longer remember.
        cluster.run(from: 1000, to: LeaseCluster.quietEnd - 1)
        #expect(cluster.holders(shard, at: LeaseCluster.quietEnd - 1).isEmpty)
        let at = LeaseCluster.quietEnd
        let actions = cluster.tick(primary, at: at)
        let persistIndex = actions.firstIndex { if case .persistTerm(0, PersistedTerm(term: 1, votedFor: cluster.ids[primary])) = $0 { true } else { false } }
        let sendIndex = actions.firstIndex { if case .send = $0 { true } else { false } }
        #expect(persistIndex != nil && sendIndex != nil && persistIndex! < sendIndex!)
        #expect(actions.contains(.termChanged(shard: 0, old: 0, new: 1, reason: "campaign: no live lease and this node is the preferred replica")))
        cluster.deliver(at: at + 5)
        #expect(cluster.log[primary].contains(.leaseAcquired(shard: 0, term: 1, until: at + LeaseCluster.durationMs)))
        #expect(cluster.holders(shard, at: at + 5) == [primary])
        // The voters persisted their vote before replying.
        for voter in cluster.machines.indices where voter != primary {
            let log = cluster.log[voter]
            let persisted = log.firstIndex(of: .persistTerm(shard: 0, PersistedTerm(term: 1, votedFor: cluster.ids[primary])))
            let replied = log.firstIndex { if case .send = $0 { true } else { false } }
            #expect(persisted != nil && replied != nil && persisted! < replied!)
        }
    }

    @Test func theLeaseIsCountedFromTheRequestAndEndsOnTheHoldersClock() {
        var cluster = LeaseCluster()
        let primary = cluster.primary(shard)
        let sentAt = LeaseCluster.quietEnd
        _ = cluster.tick(primary, at: sentAt)
        // Replies arrive late: the lease still ends one duration after the send.
        cluster.deliver(at: sentAt + 1500)
        let until = sentAt + LeaseCluster.durationMs
        #expect(cluster.machines[primary].holdsLease(shard, now: until - 1))
        #expect(!cluster.machines[primary].holdsLease(shard, now: until))
        let expired = cluster.step(primary, .timerFired(.expiry, now: until))
        #expect(expired.contains(.leaseLost(shard: shard, reason: .expired)))
    }

    @Test func renewalsKeepTheLeaseAndGoOneFramePerPeerForAllShards() {
        var cluster = LeaseCluster()
        cluster.run(from: LeaseCluster.quietEnd, to: LeaseCluster.quietEnd + 20_000)
        let end = LeaseCluster.quietEnd + 20_000
        for shard in 0..<4 { #expect(cluster.holders(shard, at: end) == [cluster.primary(shard)]) }
        // One tick of a node that holds several shards: one frame per peer.
        guard let busiest = cluster.machines.indices.max(by: { a, b in
            (0..<4).filter { cluster.primary($0) == a }.count < (0..<4).filter { cluster.primary($0) == b }.count
        }) else { return }
        let held = (0..<4).filter { cluster.primary($0) == busiest }
        let frames = sends(cluster.tick(busiest, at: end + 1000))
        #expect(frames.count == 2)
        for (frame, _) in frames {
            guard let asks = decodeLease(frame)?.payload.asks else {
                Issue.record("not a request")
                continue
            }
            #expect(asks.map { Int($0.shard) }.sorted() == held)
        }
        // Terms stayed at 1: renewals do not start elections.
        #expect((0..<4).allSatisfy { shard in cluster.machines.allSatisfy { $0.term(ofShard: shard) == 1 } })
    }

    @Test func aGranterPromisesNobodyElseUntilItsGrantExpiresPlusTheMargin() {
        var cluster = LeaseCluster()
        let primary = cluster.primary(shard)
        let at = LeaseCluster.quietEnd
        _ = cluster.tick(primary, at: at)
        cluster.deliver(at: at)
        let voter = cluster.machines.indices.first { $0 != primary }!
        let other = cluster.machines.indices.first { $0 != primary && $0 != voter }!
        let ask = LeaseMessage(sender: cluster.ids[other], payload: .request(
            round: 1, life: 5, durationMs: UInt32(LeaseCluster.durationMs),
            asks: [LeaseAsk(shard: 0, term: 2, lastVersion: .zero)]))
        let frame = LeaseCodec.encode(ask, parameters: LeaseCluster.parameters, authenticator: LeaseCluster.authenticator)
        let grantEnd = at + LeaseCluster.durationMs + LeaseCluster.margin
        for (now, verdict) in [(grantEnd - 1, LeaseVerdict.leaseHeld), (grantEnd, .granted)] {
            let reply = sends(cluster.step(voter, .received(frame: frame, now: now))).first.flatMap { decodeLease($0.frame) }
            guard let answers = reply?.payload.answers else {
                Issue.record("no reply")
                continue
            }
            #expect(answers.first?.verdict == verdict)
        }
        #expect(cluster.machines[voter].term(ofShard: 0) == 2)
    }

    /// The preferred replica holds the shard for 4 s, then membership
    /// declares it dead and it is cut off; the survivors run for 12 s more.
    /// `beforeFailure` runs at its last renewal (versions, say).
    func failPrimary(_ cluster: inout LeaseCluster,
                     beforeFailure: (inout LeaseCluster, _ primary: Int, _ lastRenewal: Int64) -> Void = { _, _, _ in })
        -> (primary: Int, lastRenewal: Int64) {
        let primary = cluster.primary(shard)
        let start = LeaseCluster.quietEnd
        cluster.run(from: start, to: start + 4000)
        #expect(cluster.holders(shard, at: start + 4000) == [primary])
        let lastRenewal = start + 4000
        beforeFailure(&cluster, primary, lastRenewal)
        let survivors = cluster.ids.filter { $0 != cluster.ids[primary] }
        for index in cluster.machines.indices where index != primary {
            cluster.step(index, .membersChanged(alive: survivors, now: lastRenewal + 1))
        }
        cluster.run(from: lastRenewal + 1000, to: lastRenewal + 12_000, cut: [primary])
        return (primary, lastRenewal)
    }

    @Test func aFailedPrimaryIsReplacedAndTheNewHolderStartsAfterTheOldLeaseEnds() {
        var cluster = LeaseCluster()
        let (primary, lastRenewal) = failPrimary(&cluster)
        let oldEnd = lastRenewal + LeaseCluster.durationMs
        let acquired = cluster.machines.indices.filter { $0 != primary }.flatMap { index in
            cluster.log[index].compactMap { action -> (Int, UInt32, Int64)? in
                if case let .leaseAcquired(0, term, until) = action { (index, term, until) } else { nil }
            }
        }
        #expect(acquired.count == 1)
        if let (holder, term, until) = acquired.first {
            #expect(term == 2)
            #expect(cluster.ids[holder] == cluster.map.followers(ofShard: 0).first)
            // Its lease began after the old one could have ended anywhere.
            #expect(until - LeaseCluster.durationMs >= oldEnd)
        }
        #expect(!cluster.machines[primary].holdsLease(shard, now: oldEnd))
    }

    /// Membership declares the dead primary gone between two ticks, after
    /// its promises ran out: the preferred survivor campaigns in that step,
    /// not at its next tick. Before, it waited up to a tick (about 0.8 s in
    /// perf/shard-move --scenario failure), and the writes to the dead
    /// node's shards waited on the new map primary meanwhile, with every
    /// client connection that sent one stalled behind it.
    @Test func aMemberDeclaredGoneAfterItsPromisesRanOutIsReplacedInThatStep() {
        var cluster = LeaseCluster()
        let primary = cluster.primary(shard)
        let preferred = cluster.ids.firstIndex(of: cluster.map.followers(ofShard: 0)[0])!
        let start = LeaseCluster.quietEnd
        cluster.run(from: start, to: start + 4000)
        let lastRenewal = start + 4000
        #expect(cluster.holders(shard, at: lastRenewal) == [primary])
        let promisesEnd = lastRenewal + LeaseCluster.durationMs + LeaseCluster.margin
        let lastTick = lastRenewal + (promisesEnd - lastRenewal) / LeaseCluster.tickMs * LeaseCluster.tickMs
        // Still alive as far as membership knows: no campaign, though the primary is cut off.
        cluster.run(from: lastRenewal + LeaseCluster.tickMs, to: lastTick, cut: [primary])
        #expect(cluster.holders(shard, at: lastTick).isEmpty || cluster.holders(shard, at: lastTick) == [primary])
        let suspectedAt = lastTick + LeaseCluster.tickMs / 2
        #expect(suspectedAt > promisesEnd && suspectedAt < lastTick + LeaseCluster.tickMs)
        let survivors = cluster.ids.filter { $0 != cluster.ids[primary] }
        for index in cluster.machines.indices where index != primary {
            cluster.step(index, .membersChanged(alive: survivors, now: suspectedAt))
        }
        cluster.deliver(at: suspectedAt, cut: [primary])
        #expect(cluster.holders(shard, at: suspectedAt + 1) == [preferred], "won when the primary was declared gone")
        // A member that joins changes nothing at once.
        let before = cluster.log[preferred].count
        cluster.step(preferred, .membersChanged(alive: cluster.ids, now: suspectedAt + 10))
        #expect(cluster.log[preferred].count == before)
    }

    /// The primary dies; the survivor the rank puts first is behind the
    /// other. The newer one refuses it, and campaigns at once at a term
    /// above the refused one's (whose vote for itself it would meet at that
    /// term), so the shard has a holder a tick after the refusal. Before,
    /// both campaigns failed and the shard waited for their backoffs: 13 s
    /// in perf/shard-move's failure run.
    @Test func theNewerSurvivorWinsAtOnceAfterRefusingAPreferredOneBehindIt() {
        var cluster = LeaseCluster()
        let preferred = cluster.ids.firstIndex(of: cluster.map.followers(ofShard: 0)[0])!
        let newer = cluster.machines.indices.first { $0 != cluster.primary(shard) && $0 != preferred }!
        let (_, lastRenewal) = failPrimary(&cluster) { cluster, _, lastRenewal in
            cluster.step(preferred, .localVersion(shard: 0, version: EntryVersion(term: 1, seq: 9), now: lastRenewal))
            cluster.step(newer, .localVersion(shard: 0, version: EntryVersion(term: 1, seq: 10), now: lastRenewal))
        }
        let acquired = cluster.log[newer].compactMap { action -> (UInt32, Int64)? in
            if case let .leaseAcquired(0, term, until) = action { (term, until) } else { nil }
        }
        let refusedAt = cluster.log[preferred].contains { if case .termChanged(0, _, 2, _) = $0 { true } else { false } }
        #expect(refusedAt, "the preferred survivor campaigned first, at term 2")
        #expect(cluster.machines[newer].counters.answersByVerdict[.candidateBehind] == 1)
        #expect(acquired.first?.0 == 3, "the newer survivor won at term 3: \(acquired)")
        // Its grant is dated from its ask: the ask went out within a tick or
        // two of the refusal, long before its rank's wait (electionTimeout) ended.
        let preferredAsk = lastRenewal + LeaseCluster.durationMs + LeaseCluster.margin
        if let until = acquired.first?.1 {
            #expect(until - LeaseCluster.durationMs <= preferredAsk + 2 * LeaseCluster.tickMs,
                    "won \(until - LeaseCluster.durationMs - preferredAsk) ms after the old promises ended")
        }
        #expect(acquired.count == 1 && cluster.holders(shard, at: lastRenewal + 12_000) == [newer])
    }

    @Test func votesGoOnlyToACandidateAtLeastAsUpToDate() {
        var cluster = LeaseCluster()
        let primary = cluster.primary(shard)
        let voters = cluster.machines.indices.filter { $0 != primary }
        for voter in voters {
            cluster.step(voter, .localVersion(shard: 0, version: EntryVersion(term: 1, seq: 10), now: 0))
        }
        cluster.step(primary, .localVersion(shard: 0, version: EntryVersion(term: 1, seq: 9), now: 0))
        let at = LeaseCluster.quietEnd
        _ = cluster.tick(primary, at: at)
        cluster.deliver(at: at)
        #expect(cluster.holders(shard, at: at) == [])
        #expect(voters.allSatisfy { cluster.machines[$0].counters.answersByVerdict[.candidateBehind] == 1 })
        // Caught up (equal is enough): somebody wins, whoever campaigns first.
        cluster.step(primary, .localVersion(shard: 0, version: EntryVersion(term: 1, seq: 10), now: at))
        let later = at + 2 * LeaseCluster.durationMs + 2000
        cluster.run(from: at + 1000, to: later)
        #expect(cluster.holders(shard, at: later).count == 1)
    }

    /// A holder cut off in a minority campaigns alone, raising its term above
    /// the new holder's; back, it refuses the new holder's renewals for their
    /// term, so it neither grants nor learns who holds the shard (a server
    /// then routes the shard's writes to itself and refuses them). The
    /// holder renews at a term above it without losing its lease, and the
    /// returning node promises it the shard instead of campaigning on.
    @Test func aHolderRenewsAboveAReturningReplicaStuckAtAHigherTerm() {
        var cluster = LeaseCluster()
        let old = cluster.primary(shard)
        let start = LeaseCluster.quietEnd
        cluster.run(from: start, to: start + 4000)
        #expect(cluster.holders(shard, at: start + 4000) == [old])
        let others = cluster.ids.filter { $0 != cluster.ids[old] }
        for index in cluster.machines.indices {
            cluster.step(index, .membersChanged(alive: index == old ? [cluster.ids[old]] : others, now: start + 4001))
        }
        // Cut off both ways; every node ticks, the old holder campaigning alone.
        var now = start + 5000
        while now <= start + 40_000 {
            for index in cluster.machines.indices { _ = cluster.tick(index, at: now) }
            cluster.deliver(at: now, cut: [old])
            now += LeaseCluster.tickMs
        }
        guard let holder = cluster.holders(shard, at: now - LeaseCluster.tickMs).first, holder != old else {
            Issue.record("no new holder in the majority")
            return
        }
        let stuckTerm = cluster.machines[old].term(ofShard: shard)
        #expect(stuckTerm > cluster.machines[holder].term(ofShard: shard), "the old holder's campaigns raised its term")
        let logged = cluster.log[holder].count
        for index in cluster.machines.indices { cluster.step(index, .membersChanged(alive: cluster.ids, now: now)) }
        let healed = now
        while now <= healed + 10_000 {
            for index in cluster.machines.indices { _ = cluster.tick(index, at: now) }
            cluster.deliver(at: now)
            now += LeaseCluster.tickMs
        }
        let end = now - LeaseCluster.tickMs
        #expect(cluster.holders(shard, at: end) == [holder])
        #expect(!cluster.log[holder].dropFirst(logged).contains { if case .leaseLost(0, _) = $0 { true } else { false } },
                "the holder kept its lease while it moved to a new term")
        #expect(cluster.machines[holder].term(ofShard: shard) > stuckTerm)
        #expect(cluster.machines[holder].heldTerm(ofShard: shard, now: end) == cluster.machines[holder].term(ofShard: shard))
        #expect(cluster.machines[old].believedHolder(shard, now: end) == cluster.ids[holder])
    }

    /// A candidate that cannot win (the others are bound to a live holder)
    /// bumps only its own term; the holder keeps its lease.
    @Test func aFailedCandidateDoesNotDeposeALiveHolder() {
        var cluster = LeaseCluster()
        let primary = cluster.primary(shard)
        let start = LeaseCluster.quietEnd
        cluster.run(from: start, to: start + 2000)
        let challenger = cluster.machines.indices.first { $0 != primary }!
        // The challenger stops hearing the primary (a one-way cut), believes
        // it dead, and campaigns once its promise runs out.
        cluster.step(challenger, .membersChanged(alive: cluster.ids.filter { $0 != cluster.ids[primary] }, now: start + 2000))
        cluster.run(from: start + 3000, to: start + 30_000, oneWay: (primary, challenger))
        #expect(cluster.machines[challenger].counters.electionsStarted > 0)
        #expect(cluster.holders(shard, at: start + 30_000) == [primary])
        #expect(cluster.machines[primary].term(ofShard: shard) == 1)
        #expect(!cluster.log[primary].contains { if case .leaseLost(0, _) = $0 { true } else { false } })
    }

    @Test func anAskForAnOldTermIsRefusedAndCounted() {
        var cluster = LeaseCluster(persisted: [[0: PersistedTerm(term: 5, votedFor: nil)], [:], [:]])
        let ask = LeaseMessage(sender: NodeID("node1")!, payload: .request(
            round: 1, life: 1, durationMs: 1000, asks: [LeaseAsk(shard: 0, term: 4, lastVersion: .zero)]))
        let frame = LeaseCodec.encode(ask, parameters: LeaseCluster.parameters, authenticator: LeaseCluster.authenticator)
        let before = cluster.machines[0].state
        let reply = sends(cluster.step(0, .received(frame: frame, now: LeaseCluster.quietEnd))).first.flatMap { decodeLease($0.frame) }
        guard let answers = reply?.payload.answers else {
            Issue.record("no reply")
            return
        }
        // Term 5 was persisted with no vote: nothing says it was granted.
        #expect(answers == [LeaseAnswer(shard: 0, term: 4, verdict: .staleTerm, voterTerm: 5, grantedTerm: 0)])
        #expect(cluster.machines[0].counters.staleTermAsks == 1)
        #expect(cluster.machines[0].state == before)
    }

    @Test func persistedTermsAndVotesSurviveARestart() {
        let ids = (0..<3).map { NodeID("node\($0)")! }
        var cluster = LeaseCluster(persisted: [[0: PersistedTerm(term: 5, votedFor: ids[2])], [:], [:]])
        #expect(cluster.machines[0].term(ofShard: 0) == 5)
        // A vote cast in term 5 before the restart is not cast again for another.
        let ask = LeaseMessage(sender: ids[1], payload: .request(
            round: 1, life: 1, durationMs: 1000, asks: [LeaseAsk(shard: 0, term: 5, lastVersion: .zero)]))
        let frame = LeaseCodec.encode(ask, parameters: LeaseCluster.parameters, authenticator: LeaseCluster.authenticator)
        let reply = sends(cluster.step(0, .received(frame: frame, now: LeaseCluster.quietEnd))).first.flatMap { decodeLease($0.frame) }
        guard let answers = reply?.payload.answers else {
            Issue.record("no reply")
            return
        }
        #expect(answers.first?.verdict == .votedOther)
        // Its own campaign goes above the persisted term.
        if cluster.primary(0) == 0 {
            let actions = cluster.tick(0, at: LeaseCluster.quietEnd)
            #expect(actions.contains(.persistTerm(shard: 0, PersistedTerm(term: 6, votedFor: ids[0]))))
        }
    }

    @Test func aRestartedGranterRefusesUntilOneLeasePlusMarginHasPassed() {
        var cluster = LeaseCluster()
        let restarted = 1
        cluster.machines[restarted] = LeaseCluster.machine(cluster.ids[restarted], persisted: [:], learner: false, life: 2)
        cluster.start(restarted, at: 50_000)
        let ask = LeaseMessage(sender: cluster.ids[0], payload: .request(
            round: 1, life: 1, durationMs: 1000, asks: [LeaseAsk(shard: 0, term: 1, lastVersion: .zero)]))
        let frame = LeaseCodec.encode(ask, parameters: LeaseCluster.parameters, authenticator: LeaseCluster.authenticator)
        for (now, verdict) in [(50_000 + LeaseCluster.quietEnd - 1, LeaseVerdict.restarting), (50_000 + LeaseCluster.quietEnd, .granted)] {
            let reply = sends(cluster.step(restarted, .received(frame: frame, now: now))).first.flatMap { decodeLease($0.frame) }
            guard let answers = reply?.payload.answers else {
                Issue.record("no reply")
                continue
            }
            #expect(answers.first?.verdict == verdict)
        }
    }

    /// A map that leaves a replica out of a shard makes the server drop its
    /// copy; the shard's versions are then no longer the node's claim, nor
    /// are acknowledgements noted late for it, and a map that takes it back
    /// gives it an empty copy that claims nothing. Kept, the claim won the
    /// node the shard with the grant of a replica that held less, and it
    /// streamed its empty copy over the writes (chaos seed 109, 5 nodes).
    @Test func aReplicaTheMapLeavesOutClaimsNothingOfTheCopyItDropped() {
        var cluster = LeaseCluster()
        let (primary, version) = holderWithWritesEveryoneHolds(&cluster)
        let dropped = (primary + 1) % 3
        let now = LeaseCluster.quietEnd + 2500
        #expect(cluster.machines[dropped].state.shards[shard].lastVersion == version)
        var others = cluster.ids
        others.remove(at: dropped)
        let without = try! ShardMap(members: others, numShards: Int(LeaseCluster.parameters.numShards),
                                    virtualNodes: Int(LeaseCluster.parameters.virtualNodes), replicationFactor: 3)
        cluster.step(dropped, .placementChanged(without, now: now))
        #expect(cluster.machines[dropped].state.shards[shard].lastVersion == .zero)
        cluster.step(dropped, .localVersion(shard: shard, version: EntryVersion(term: version.term, seq: version.seq + 1), now: now))
        #expect(cluster.machines[dropped].state.shards[shard].lastVersion == .zero, "a late acknowledgement claims nothing")
        cluster.step(dropped, .placementChanged(cluster.map, now: now + 100))
        #expect(cluster.machines[dropped].state.shards[shard].lastVersion == .zero, "taken back, the copy is empty")
        // The holder and the third replica keep their claims.
        for kept in cluster.machines.indices where kept != dropped {
            #expect(cluster.machines[kept].state.shards[shard].lastVersion == version)
        }
    }

    /// A holder whose data_dir was removed whole starts again as on a first
    /// start (term 0, nothing held, a new process life) and, as the
    /// preferred replica, asks for term 1 again: the term its earlier life
    /// won, voted for it on every replica. Taken for that holder's renewal,
    /// the ask was granted past the election restriction, and the node won
    /// the shard with an empty copy it then streamed over the replicas
    /// holding its writes. Only the life a vote was given to renews.
    @Test func aHolderBackWithoutItsTermsIsNotTakenForItsEarlierLifesRenewals() {
        var cluster = LeaseCluster()
        let (primary, version) = holderWithWritesEveryoneHolds(&cluster)
        #expect(cluster.machines[primary].term(ofShard: shard) == 1)
        let voters = cluster.machines.indices.filter { $0 != primary }
        // The holder's own renewals (same life) still renew.
        for voter in voters {
            let answer = cluster.answerAskedDirectly(of: voter, from: primary, term: 1, at: LeaseCluster.quietEnd + 2100,
                                                     lastVersion: version, mayHaveHole: false)
            #expect(answer?.verdict == .granted)
        }
        let wipedAt = LeaseCluster.quietEnd + 3000
        cluster.machines[primary] = LeaseCluster.machine(cluster.ids[primary], persisted: [:], learner: false, life: 2)
        cluster.start(primary, at: wipedAt)
        let asksAt = wipedAt + LeaseCluster.quietEnd + 10
        let actions = cluster.tick(primary, at: asksAt)
        #expect(actions.contains(.persistTerm(shard: shard, PersistedTerm(term: 1, votedFor: cluster.ids[primary]))),
                "the wiped node asks for term 1 again")
        cluster.deliver(at: asksAt)
        #expect(!cluster.machines[primary].holdsLease(shard, now: asksAt + 1))
        for voter in voters {
            #expect(cluster.machines[voter].counters.answersByVerdict[.candidateBehind] == 1,
                    "node\(voter): \(cluster.machines[voter].counters.answersByVerdict)")
        }
    }

    /// A node new to the cluster (a join, or a wiped node's first start)
    /// that is a shard's preferred replica: the holder's renewals it refused
    /// in its quiet tell it the shard has a live lease, so its first tick
    /// after the quiet does not campaign over it (which made it refuse the
    /// holder's next renewal at its own term, and the shard churned through
    /// terms for seconds). A node that heard nothing campaigns at once.
    @Test func aNewNodeThatHeardRenewalsInItsQuietLetsTheHolderRenewInsteadOfCampaigning() {
        for heardHolder in [true, false] {
            var cluster = LeaseCluster()
            let newcomer = cluster.primary(0)
            let holder = (newcomer + 1) % 3
            cluster.machines[newcomer] = LeaseCluster.machine(cluster.ids[newcomer], persisted: [:], learner: false, life: 2)
            let startedAt: Int64 = 50_000
            cluster.start(newcomer, at: startedAt)
            if heardHolder {
                #expect(cluster.verdictAskedDirectly(of: newcomer, from: holder, term: 3, at: startedAt + 2_000) == .restarting)
            }
            let firstTick = startedAt + LeaseCluster.quietEnd + 10
            let campaigned = cluster.tick(newcomer, at: firstTick).contains {
                if case let .persistTerm(shard, persisted) = $0 { shard == 0 && persisted.votedFor == cluster.ids[newcomer] } else { false }
            }
            #expect(campaigned == !heardHolder, "heard the holder: \(heardHolder)")
            guard heardHolder else { continue }
            // The holder's next renewal, after the quiet, is granted.
            #expect(cluster.verdictAskedDirectly(of: newcomer, from: holder, term: 3, at: firstTick + 400) == .granted)
            #expect(cluster.verdictAskedDirectly(of: newcomer, from: holder, term: 3, at: firstTick + 1_400) == .granted)
            let later = cluster.tick(newcomer, at: firstTick + 2 * LeaseCluster.tickMs + 10)
            #expect(!later.contains { if case .persistTerm(0, _) = $0 { true } else { false } }, "promised to the holder")
        }
    }

    @Test func aLongerLeaseThanTheGrantersOwnIsRefused() {
        var cluster = LeaseCluster()
        let ask = LeaseMessage(sender: cluster.ids[0], payload: .request(
            round: 1, life: 1, durationMs: UInt32(LeaseCluster.durationMs + 1), asks: [LeaseAsk(shard: 0, term: 1, lastVersion: .zero)]))
        let frame = LeaseCodec.encode(ask, parameters: LeaseCluster.parameters, authenticator: LeaseCluster.authenticator)
        let reply = sends(cluster.step(1, .received(frame: frame, now: LeaseCluster.quietEnd))).first.flatMap { decodeLease($0.frame) }
        guard let answers = reply?.payload.answers else {
            Issue.record("no reply")
            return
        }
        #expect(answers.first?.verdict == .durationTooLong)
    }

    @Test func aReturningOldHolderThatSeesAHigherTermDemotesItself() {
        var cluster = LeaseCluster()
        let primary = cluster.primary(shard)
        let start = LeaseCluster.quietEnd
        cluster.run(from: start, to: start + 2000)
        #expect(cluster.holders(shard, at: start + 2000) == [primary])
        // The others elected one of themselves at term 7 while the primary was
        // paused (its lease is still running on its own clock: it was paused,
        // not expired).
        let elected = cluster.ids[(primary + 1) % 3]
        for index in cluster.machines.indices where index != primary {
            cluster.machines[index] = LeaseCluster.machine(cluster.ids[index], persisted: [0: PersistedTerm(term: 7, votedFor: elected)],
                                                           learner: false, life: 2)
            cluster.start(index, at: 0)
        }
        _ = cluster.tick(primary, at: start + 2500)
        cluster.deliver(at: start + 2500)
        let log = cluster.log[primary]
        let persist = log.lastIndex(of: .persistTerm(shard: 0, PersistedTerm(term: 7, votedFor: nil)))
        let lost = log.lastIndex(of: .leaseLost(shard: 0, reason: .higherTerm(7)))
        #expect(persist != nil && lost != nil && persist! < lost!)
        #expect(log.contains { if case .termChanged(0, 1, 7, _) = $0 { true } else { false } })
        #expect(!cluster.machines[primary].holdsLease(shard, now: start + 2501))
    }

    @Test func anEmptyLearnerNeverCampaignsNeverVotesAndSaysSo() {
        var cluster = LeaseCluster(learners: [0, 1, 2])
        for index in 0..<3 {
            #expect(cluster.machines[index].isEmptyLearner)
            #expect(cluster.log[index].contains { if case .log(.notice, let line) = $0 { line.contains("empty learner") } else { false } })
        }
        cluster.run(from: 1000, to: 40_000)
        #expect(cluster.log.allSatisfy { log in !log.contains { if case .persistTerm = $0 { true } else { false } } })
        #expect((0..<4).allSatisfy { cluster.holders($0, at: 40_000).isEmpty })
        // Asked directly, it refuses.
        #expect(cluster.verdictAskedDirectly(of: 0, from: 1, term: 1, at: 50_000) == .emptyLearner)
    }

    /// The log replay tells a restarted node its newest versions before the
    /// cluster loop starts its lease machine; they must count for its votes
    /// (chaos seed 12: a restarted holder granted a candidate lacking its
    /// logged writes, which the candidate's stream then erased).
    @Test func versionsToldBeforeTheStartCountForTheVote() {
        var cluster = LeaseCluster()
        cluster.machines[0] = LeaseCluster.machine(cluster.ids[0], persisted: [:], learner: false, life: 2)
        _ = cluster.machines[0].step(.localVersion(shard: 0, version: EntryVersion(term: 3, seq: 7), now: 0))
        cluster.start(0, at: 0)
        #expect(cluster.verdictAskedDirectly(of: 0, from: 1, term: 4, at: LeaseCluster.quietEnd + 1) == .candidateBehind)
    }

    /// The holder of writes everyone holds is cut off 3 s after they were
    /// made and comes back 3 s later as a new machine with its persisted
    /// term, told the newest version its log replayed; not started yet.
    func restartTheHolderWithItsWrites(_ cluster: inout LeaseCluster, restarted: Bool) -> (primary: Int, backAt: Int64) {
        let (primary, version) = holderWithWritesEveryoneHolds(&cluster)
        let start = LeaseCluster.quietEnd
        let crashedAt = start + 3000, backAt = start + 6000
        cluster.run(from: crashedAt, to: backAt - 1, cut: [primary])
        cluster.inFlight.removeAll { $0.from == primary || $0.to == primary }
        let persisted = [shard: PersistedTerm(term: cluster.machines[primary].term(ofShard: shard),
                                              votedFor: cluster.ids[primary])]
        cluster.machines[primary] = LeaseCluster.machine(cluster.ids[primary], persisted: persisted, learner: false,
                                                         restarted: restarted, life: 2)
        // Its log replay: the newest version it wrote, told before the start.
        _ = cluster.step(primary, .localVersion(shard: shard, version: version, now: backAt))
        return (primary, backAt)
    }

    /// A voter that restarted grants nothing for a lease and a margin, so it
    /// knows no promise and no holder; it routes the shard's writes to the
    /// node that keeps asking it (the holder's renewals), not to itself as
    /// the map's primary would have it, also between the end of its quiet
    /// and the next renewal it grants; then the promise says the same.
    @Test func aRestartedVoterRoutesToTheHolderThatRenewsWhileItIsQuiet() {
        var cluster = LeaseCluster()
        let (primary, _) = holderWithWritesEveryoneHolds(&cluster)
        let voter = (primary + 1) % cluster.ids.count
        let restartAt = LeaseCluster.quietEnd + 3000
        cluster.run(from: restartAt - 1000, to: restartAt - 1)
        cluster.inFlight.removeAll { $0.from == voter || $0.to == voter }
        cluster.machines[voter] = LeaseCluster.machine(cluster.ids[voter], persisted: [:], learner: false, restarted: true, life: 2)
        cluster.start(voter, at: restartAt)
        #expect(cluster.machines[voter].routingHolder(shard, now: restartAt) == nil, "nobody asked yet")
        cluster.run(from: restartAt, to: restartAt + 2000)
        let quiet = restartAt + 2000
        #expect(cluster.holders(shard, at: quiet) == [primary])
        #expect(cluster.machines[voter].believedHolder(shard, now: quiet) == nil, "quiet: it promised nothing")
        #expect(cluster.machines[voter].routingHolder(shard, now: quiet) == cluster.ids[primary])
        // Just past the quiet, before the next renewal: no promise yet, the
        // hint still runs.
        let quietEnded = restartAt + LeaseCluster.quietEnd + 1
        cluster.run(from: quiet + 1000, to: quietEnded)
        #expect(cluster.machines[voter].believedHolder(shard, now: quietEnded) == nil)
        #expect(cluster.machines[voter].routingHolder(shard, now: quietEnded) == cluster.ids[primary])
        let afterQuiet = restartAt + LeaseCluster.quietEnd + 2000
        cluster.run(from: quietEnded + 1000, to: afterQuiet)
        #expect(cluster.holders(shard, at: afterQuiet) == [primary])
        #expect(cluster.machines[voter].believedHolder(shard, now: afterQuiet) == cluster.ids[primary], "granted the renewal")
        #expect(cluster.machines[voter].routingHolder(shard, now: afterQuiet) == cluster.ids[primary])
        // The hint ends with the last ask's lease: a holder that stopped
        // asking is not named by it afterwards.
        var silent = cluster
        let later = afterQuiet + 2 * LeaseCluster.durationMs
        silent.run(from: afterQuiet + 1000, to: later, cut: [primary])
        #expect(silent.machines[voter].routingHolder(shard, now: later) != silent.ids[primary])
    }

    /// A restarted holder's log holds only the writes it made as holder, yet
    /// its newest version claims everything below (chaos seed 12 at W = 2:
    /// it won with a claim equal to a complete replica's and streamed its
    /// holed copy over it). It stands back, and a replica that stayed up
    /// takes over; the same schedule without the stand-back elects the
    /// restarted holder again, which is what the second argument shows.
    @Test(arguments: [true, false]) func aRestartedHolderStandsBackWhileAReplicaThatStayedUpTakesOver(_ standsBack: Bool) {
        var cluster = LeaseCluster()
        let (primary, backAt) = restartTheHolderWithItsWrites(&cluster, restarted: standsBack)
        cluster.start(primary, at: backAt)
        let standBackEnds = backAt + LeaseCluster.settings(cluster.ids[primary]).restartStandBackMs
        cluster.run(from: backAt, to: standBackEnds + 20_000)
        let holders = cluster.holders(shard, at: standBackEnds + 20_000)
        #expect(holders.count == 1)
        if standsBack {
            #expect(holders.first != primary, "a replica that stayed up holds the shard")
            let restartLog = cluster.log[primary]
            #expect(restartLog.contains { if case .log(.notice, let line) = $0 { line.contains("campaigns for none of them") } else { false } })
        } else {
            #expect(holders == [primary], "without the stand-back the restarted holder wins again")
        }
    }

    /// A restarted holder whose log replay proved its copy of the shard
    /// whole (`ReplayedCopy`, told as `copyComplete` before the start, as
    /// the server and the simulator do) claims nothing it lacks: it neither
    /// stands back nor is refused, and wins the shard again once the old
    /// promises have run out, well inside the stand-back. Its other shards,
    /// with no such proof, still may have holes and stand back.
    @Test func aRestartedHolderWhoseReplayIsWholeDoesNotStandBack() {
        var cluster = LeaseCluster()
        let (primary, backAt) = restartTheHolderWithItsWrites(&cluster, restarted: true)
        _ = cluster.step(primary, .copyComplete(shard: shard, now: backAt))
        cluster.start(primary, at: backAt)
        let otherShards = (0..<Int(LeaseCluster.parameters.numShards)).filter { $0 != shard }
        #expect(!cluster.machines[primary].copyMayHaveHole(shard))
        #expect(otherShards.allSatisfy { cluster.machines[primary].copyMayHaveHole($0) })
        let restartLog = cluster.log[primary]
        #expect(restartLog.contains { if case .log(.notice, let line) = $0 { line.contains("1 of \(otherShards.count + 1) shards replayed whole") } else { false } })

        let lookAt = backAt + LeaseCluster.quietEnd + 2 * LeaseCluster.tickMs
        #expect(lookAt < backAt + LeaseCluster.settings(cluster.ids[primary]).restartStandBackMs)
        cluster.run(from: backAt, to: lookAt)
        #expect(cluster.holders(shard, at: lookAt) == [primary], "the whole copy wins again without standing back")
    }

    /// A whole-cluster restart after the preferred replica had handed the
    /// shard on (a rolling restart, then a crash of all three): its log is
    /// whole through its own writes at term 4, but it granted `newer` term
    /// 5, and `newer` wrote at term 5 (logged there only). The third replayed
    /// nothing. Campaigning at once, the preferred one won with the third's
    /// vote and its stream replaced the term-5 writes; now it stands back
    /// and `newer` wins. With its last vote its own (a term it bumped with
    /// no write since), nothing says anyone wrote after it, and it wins at once.
    @Test(arguments: [true, false]) func aWholeCopyThatGrantedALaterTermToAnotherLetsThatOneWinAfterAFullRestart(_ grantedAnother: Bool) {
        var cluster = LeaseCluster()
        let preferred = cluster.primary(shard), newer = (preferred + 1) % 3, empty = (preferred + 2) % 3
        let lastVote = grantedAnother ? cluster.ids[newer] : cluster.ids[preferred]
        for index in 0..<3 {
            cluster.machines[index] = LeaseCluster.machine(cluster.ids[index], persisted: [shard: PersistedTerm(term: 5, votedFor: lastVote)],
                                                           learner: false, restarted: true, life: 2)
            cluster.inFlight.removeAll()
        }
        let backAt: Int64 = 100_000
        _ = cluster.step(preferred, .localVersion(shard: shard, version: EntryVersion(term: 4, seq: 10), now: backAt))
        _ = cluster.step(preferred, .copyComplete(shard: shard, now: backAt))
        if grantedAnother {
            _ = cluster.step(newer, .localVersion(shard: shard, version: EntryVersion(term: 5, seq: 14), now: backAt))
        }
        for index in [preferred, newer, empty] { cluster.start(index, at: backAt) }
        let standBack = LeaseCluster.settings(cluster.ids[preferred]).restartStandBackMs
        var winners: Set<Int> = []
        var now = backAt
        while now <= backAt + 2 * standBack + 10 * LeaseCluster.tickMs && winners.isEmpty {
            cluster.run(from: now, to: now)
            winners.formUnion(cluster.holders(shard, at: now))
            now += LeaseCluster.tickMs
        }
        #expect(winners == [grantedAnother ? newer : preferred], "won by \(winners)")
        if !grantedAnother {
            #expect(now < backAt + standBack, "the last holder, whole, does not stand back")
        }
    }

    /// Chaos seed 14: a replica restarted and was streamed the holder's whole
    /// copy, yet stood back for the rest of its 24-48 s, while a replica that
    /// restarted later with a hole waited less and won. A complete copy ends
    /// the stand-back: with it the whole replica takes over once the holder
    /// is gone; without it (no stream arrived) both restarted replicas are
    /// still standing back at the same moment.
    @Test(arguments: [true, false]) func aRestartedReplicaStreamedWholeStopsStandingBack(_ streamed: Bool) {
        var cluster = LeaseCluster()
        let (primary, version) = holderWithWritesEveryoneHolds(&cluster)
        let start = LeaseCluster.quietEnd
        let replicas = cluster.machines.indices.filter { $0 != primary }
        let term = cluster.machines[primary].term(ofShard: shard)
        // Both other replicas restart quickly; as followers their logs hold
        // nothing of the shard.
        let backAt = start + 3000
        for replica in replicas {
            cluster.inFlight.removeAll { $0.from == replica || $0.to == replica }
            cluster.machines[replica] = LeaseCluster.machine(cluster.ids[replica],
                                                             persisted: [shard: PersistedTerm(term: term, votedFor: cluster.ids[primary])],
                                                             learner: false, restarted: true, life: 2)
            cluster.start(replica, at: backAt)
        }
        let whole = replicas[0]
        if streamed {
            // The holder's stream of the shard finished on this replica.
            _ = cluster.step(whole, .localVersion(shard: shard, version: version, now: backAt + 100))
            _ = cluster.step(whole, .copyComplete(shard: shard, now: backAt + 100))
        }
        #expect(cluster.machines[whole].copyMayHaveHole(shard) == !streamed)
        cluster.run(from: backAt, to: backAt + 1000)
        // The holder is gone for good; well inside the replicas' stand-back.
        let goneAt = backAt + 1000, lookAt = goneAt + 15_000
        #expect(lookAt < backAt + LeaseCluster.settings(cluster.ids[whole]).restartStandBackMs)
        cluster.inFlight.removeAll { $0.from == primary || $0.to == primary }
        cluster.run(from: goneAt, to: lookAt, cut: [primary])
        if streamed {
            #expect(cluster.holders(shard, at: lookAt) == [whole], "the replica streamed whole took over")
        } else {
            #expect(cluster.holders(shard, at: lookAt).isEmpty, "both restarted replicas still stand back")
        }
    }

    /// A voter whose copy is whole refuses a candidate whose copy may have a
    /// hole, even one that claims newer writes: the hole may be writes only
    /// the voter holds (chaos seed 12 at W = 2 lost 188 acknowledged writes
    /// to such a grant). The same ask without the flag, or in the form that
    /// says nothing of the copy, is granted as before.
    @Test func aWholeVoterRefusesACandidateWhoseCopyMayHaveAHole() {
        var cluster = LeaseCluster()
        let voter = 1, candidate = 0
        cluster.step(voter, .localVersion(shard: shard, version: EntryVersion(term: 2, seq: 30), now: 0))
        let newer = EntryVersion(term: 2, seq: 31)
        let at = LeaseCluster.quietEnd + 1
        #expect(cluster.verdictAskedDirectly(of: voter, from: candidate, term: 3, at: at) != nil)
        let holed = cluster.answerAskedDirectly(of: voter, from: candidate, term: 3, at: at, lastVersion: newer, mayHaveHole: true)
        #expect(holed?.verdict == .candidateBehind)
        #expect(cluster.machines[voter].counters.holedCandidatesRefused == 1)
        // A refusal casts no vote; it takes the asker's term, so that its own
        // campaign goes above the asker's vote for itself.
        #expect(cluster.machines[voter].term(ofShard: shard) == 3)
        #expect(cluster.machines[voter].state.shards[shard].votedFor == nil, "a refusal casts no vote")
        let whole = cluster.answerAskedDirectly(of: voter, from: candidate, term: 3, at: at, lastVersion: newer, mayHaveHole: false)
        #expect(whole?.verdict == .granted)

        var old = LeaseCluster()
        old.step(voter, .localVersion(shard: shard, version: EntryVersion(term: 2, seq: 30), now: 0))
        #expect(old.answerAskedDirectly(of: voter, from: candidate, term: 3, at: at, lastVersion: newer)?.verdict == .granted)
    }

    /// A voter that restarted itself, or holds nothing of the shard, votes
    /// on versions alone: after a whole replica set restarted every copy may
    /// have a hole, and refusing each other nobody would win.
    @Test func aVoterWithAHoleOrWithNothingVotesOnVersionsAlone() {
        var cluster = LeaseCluster()
        let voter = 1, candidate = 0
        cluster.machines[voter] = LeaseCluster.machine(cluster.ids[voter], persisted: [:], learner: false, restarted: true, life: 2)
        cluster.step(voter, .localVersion(shard: shard, version: EntryVersion(term: 2, seq: 30), now: 0))
        cluster.start(voter, at: 0)
        #expect(cluster.machines[voter].copyMayHaveHole(shard))
        let at = LeaseCluster.quietEnd + 1
        #expect(cluster.answerAskedDirectly(of: voter, from: candidate, term: 3, at: at, lastVersion: EntryVersion(term: 2, seq: 30),
                                            mayHaveHole: true)?.verdict == .granted)
        #expect(cluster.answerAskedDirectly(of: 2, from: candidate, term: 4, at: at, lastVersion: EntryVersion(term: 2, seq: 30),
                                            mayHaveHole: true)?.verdict == .granted, "node2 holds nothing")
    }

    /// When the candidate is needed for every majority (the third replica is
    /// dead, or an empty learner), refusing it would leave the shard with no
    /// holder: the holed candidate, ahead of the voter, refuses the voter as
    /// behind. The voter then votes on versions, as before the check, and
    /// the shard gets a holder (the simulator's liveness check).
    @Test(arguments: [false, true]) func aHoledCandidateThatEveryMajorityNeedsIsElected(_ thirdIsLearner: Bool) {
        let third = 2, voter = 1, candidate = 0
        var cluster = LeaseCluster(learners: thirdIsLearner ? [third] : [])
        cluster.machines[candidate] = LeaseCluster.machine(cluster.ids[candidate], persisted: [:], learner: false,
                                                           restarted: true, life: 2)
        cluster.step(candidate, .localVersion(shard: shard, version: EntryVersion(term: 2, seq: 31), now: 0))
        cluster.start(candidate, at: 0)
        cluster.step(voter, .localVersion(shard: shard, version: EntryVersion(term: 2, seq: 30), now: 0))
        let cut: Set<Int> = thirdIsLearner ? [] : [third]
        if !thirdIsLearner {
            for index in [voter, candidate] {
                cluster.step(index, .membersChanged(alive: [cluster.ids[voter], cluster.ids[candidate]], now: 0))
            }
        }
        let end = 2 * LeaseCluster.settings(cluster.ids[candidate]).restartStandBackMs + 30_000
        cluster.run(from: 1000, to: end, cut: cut)
        #expect(cluster.holders(shard, at: end) == [candidate])
        #expect(cluster.machines[voter].counters.holedCandidatesRefused == 0)
        if thirdIsLearner { #expect(cluster.machines[voter].state.learners == [cluster.ids[third]]) }
    }

    /// The third replica is gone, so the holed candidate is in every
    /// majority; still, one that claims no more than the voter holds whole
    /// is refused: the voter can win with the candidate's grant and has all
    /// the candidate claims (simulator seed 7000367). One that claims more is
    /// granted, as above.
    @Test func aHoledCandidateClaimingNoMoreThanTheWholeVoterHoldsIsRefusedEvenWhenEveryMajorityNeedsIt() {
        let third = 2, voter = 1, candidate = 0
        var cluster = LeaseCluster()
        cluster.step(voter, .localVersion(shard: shard, version: EntryVersion(term: 2, seq: 30), now: 0))
        cluster.step(voter, .membersChanged(alive: [cluster.ids[voter], cluster.ids[candidate]], now: 0))
        #expect(!cluster.machines[voter].state.alive.contains(cluster.ids[third]))
        let at = LeaseCluster.quietEnd + 1
        for (claim, verdict) in [(EntryVersion(term: 2, seq: 30), LeaseVerdict.candidateBehind),
                                 (EntryVersion(term: 1, seq: 40), .candidateBehind),
                                 (EntryVersion(term: 2, seq: 31), .granted)] {
            let answer = cluster.answerAskedDirectly(of: voter, from: candidate, term: 3, at: at, lastVersion: claim, mayHaveHole: true)
            #expect(answer?.verdict == verdict, "claim \(claim)")
        }
        #expect(cluster.machines[voter].counters.holedCandidatesRefused == 1, "a claim below the voter's is refused on versions first")
    }

    /// A voter that restarted too cannot tell whether its own copy is whole,
    /// but it knows of a whole one that asked it with a claim at least as
    /// new as the holed candidate's and its own: that one can win with its
    /// grant, so it refuses the holed candidate for as long as a whole
    /// candidate may take between two campaigns (simulator seed 1001238:
    /// such a voter, whose log held all it had, elected the holed copy
    /// while the whole one backed off).
    @Test func aHoledVoterRefusesAHoledCandidateWhileAWholeOneAtLeastAsNewIsAsking() {
        let whole = 0, voter = 1, holed = 2
        func cluster(voterClaim: EntryVersion) -> LeaseCluster {
            var cluster = LeaseCluster()
            cluster.machines[voter] = LeaseCluster.machine(cluster.ids[voter], persisted: [:], learner: false, restarted: true, life: 2)
            cluster.step(voter, .localVersion(shard: shard, version: voterClaim, now: 0))
            cluster.start(voter, at: 0)
            return cluster
        }
        let claim = EntryVersion(term: 5, seq: 22)
        let at = LeaseCluster.quietEnd + 1
        var asked = cluster(voterClaim: EntryVersion(term: 4, seq: 22))
        #expect(asked.answerAskedDirectly(of: voter, from: whole, term: 6, at: at, lastVersion: claim, mayHaveHole: false)?.verdict == .granted)
        let promiseOver = at + 1000 + LeaseCluster.margin + 1
        #expect(asked.answerAskedDirectly(of: voter, from: holed, term: 7, at: promiseOver, lastVersion: claim, mayHaveHole: true)?.verdict
                == .candidateBehind)
        let settings = LeaseCluster.settings(asked.ids[voter])
        let remembered = settings.leaseDurationMs + 7 * settings.electionTimeoutMs
        #expect(asked.answerAskedDirectly(of: voter, from: holed, term: 8, at: at + remembered, lastVersion: claim, mayHaveHole: true)?.verdict
                == .granted, "a whole replica that stopped asking is forgotten")

        // Not when this voter claims more than the whole one (it would refuse
        // that one as behind, and nobody would win), nor after an ask in the
        // form that says nothing of the copy.
        var ahead = cluster(voterClaim: EntryVersion(term: 5, seq: 23))
        _ = ahead.answerAskedDirectly(of: voter, from: whole, term: 6, at: at, lastVersion: claim, mayHaveHole: false)
        #expect(ahead.answerAskedDirectly(of: voter, from: holed, term: 7, at: promiseOver, lastVersion: EntryVersion(term: 5, seq: 23),
                                          mayHaveHole: true)?.verdict == .granted)
        var unknown = cluster(voterClaim: EntryVersion(term: 4, seq: 22))
        #expect(unknown.answerAskedDirectly(of: voter, from: whole, term: 6, at: at, lastVersion: claim)?.verdict == .granted)
        #expect(unknown.answerAskedDirectly(of: voter, from: holed, term: 7, at: promiseOver, lastVersion: claim, mayHaveHole: true)?.verdict
                == .granted)
    }

    /// A restarted node's copies may have holes until a complete copy of the
    /// shard arrives (the holder's stream finished): then it is a candidate
    /// like any other. Winning clears it too: its copy is then the one its
    /// followers are brought to.
    @Test func theHoleFlagClearsWhenACompleteCopyArrivesOrTheShardIsWon() {
        var machine = LeaseCluster.machine(NodeID("node0")!, persisted: [:], learner: false, restarted: true, life: 2)
        _ = machine.step(.start(now: 0))
        #expect((0..<4).allSatisfy { machine.copyMayHaveHole($0) })
        _ = machine.step(.copyComplete(shard: 2, now: 10))
        #expect((0..<4).map { machine.copyMayHaveHole($0) } == [true, true, false, true])
        let fresh = LeaseCluster.machine(NodeID("node0")!, persisted: [:], learner: false, life: 1)
        #expect(!(0..<4).contains { fresh.copyMayHaveHole($0) }, "a first start has lost nothing")
        let learner = LeaseCluster.machine(NodeID("node0")!, persisted: [:], learner: true, restarted: true, life: 2)
        #expect(!(0..<4).contains { learner.copyMayHaveHole($0) }, "a learner has nothing to claim")

        // Its asks carry the flag, and the one after the copy arrived does not.
        var cluster = LeaseCluster()
        let restarted = cluster.primary(shard)
        let voter = (restarted + 1) % 3
        cluster.machines[restarted] = LeaseCluster.machine(cluster.ids[restarted], persisted: [:], learner: false, restarted: true, life: 2)
        for index in 0..<3 {
            cluster.step(index, .localVersion(shard: shard, version: EntryVersion(term: 1, seq: 5), now: 0))
        }
        cluster.start(restarted, at: 0)
        let asked = LeaseCluster.settings(cluster.ids[restarted]).restartStandBackMs + 1
        let verdicts = { (cluster: inout LeaseCluster, at: Int64) -> [LeaseVerdict] in
            _ = cluster.tick(restarted, at: at)
            let requests = cluster.inFlight.filter { $0.from == restarted }
            cluster.inFlight.removeAll()
            var verdicts: [LeaseVerdict] = []
            for request in requests where request.to == voter {
                guard let asks = decodeLease(request.frame)?.payload.asks else { continue }
                let flagged = asks.first { Int($0.shard) == shard }?.mayHaveHole
                let reply = sends(cluster.step(voter, .received(frame: request.frame, now: at))).first.flatMap { decodeLease($0.frame) }
                guard let answers = reply?.payload.answers,
                      let answer = answers.first(where: { Int($0.shard) == shard }) else { continue }
                verdicts.append(answer.verdict)
                #expect(flagged == cluster.machines[restarted].copyMayHaveHole(shard) || answer.verdict == .candidateBehind)
            }
            return verdicts
        }
        #expect(verdicts(&cluster, asked) == [.candidateBehind])
        cluster.step(restarted, .copyComplete(shard: shard, now: asked + 1))
        // Past the back-off of the refused campaign.
        let again = asked + 3 * LeaseCluster.durationMs + 5 * 4000
        #expect(verdicts(&cluster, again) == [.granted])
    }

    /// The schedule of chaos seed 12's 188 lost writes: a holder killed and
    /// restarted with its log, while the two replicas that stayed up could
    /// not elect one of them until its stand-back was over (paused here).
    /// Back together, the restarted node is the preferred replica and asks
    /// first. With the copy state in its asks the whole replicas refuse it
    /// and elect one of themselves; in the form 0.2.0 decodes they grant it
    /// as before, and its holed copy wins.
    @Test(arguments: [true, false]) func aRestartedHolderIsRefusedByTheReplicasThatStayedUp(_ copyStateSent: Bool) {
        var cluster = LeaseCluster()
        let (primary, version) = holderWithWritesEveryoneHolds(&cluster)
        let start = LeaseCluster.quietEnd
        let others = Set(cluster.machines.indices.filter { $0 != primary })
        let crashedAt = start + 3000
        let backAt = crashedAt + 1000
        cluster.inFlight.removeAll()
        let persisted = [shard: PersistedTerm(term: cluster.machines[primary].term(ofShard: shard), votedFor: cluster.ids[primary])]
        cluster.machines[primary] = LeaseCluster.machine(cluster.ids[primary], persisted: persisted, learner: false,
                                                         restarted: true, life: 2)
        _ = cluster.step(primary, .localVersion(shard: shard, version: version, now: backAt))
        cluster.start(primary, at: backAt)
        if !copyStateSent {
            for index in cluster.machines.indices {
                cluster.machines[index].peersDecodingCopyState([])
                cluster.machines[index].peersDecodingConfig([])
            }
        }
        let standBackEnds = backAt + LeaseCluster.settings(cluster.ids[primary]).restartStandBackMs
        // The other two are paused through the stand-back: nothing they do counts.
        cluster.run(from: backAt, to: standBackEnds, cut: others)
        let end = standBackEnds + 30_000
        cluster.run(from: standBackEnds + 1000, to: end)
        let holders = cluster.holders(shard, at: end)
        #expect(holders.count == 1)
        if copyStateSent {
            #expect(holders.first != primary, "a replica that stayed up holds the shard")
            #expect(others.contains { cluster.machines[$0].counters.holedCandidatesRefused > 0 })
        } else {
            #expect(holders == [primary], "without the copy state the holed copy wins, as before")
        }
    }

    /// A whole-cluster restart: the only copy of the shard is the last
    /// holder's log. The two replicas that replayed nothing of it are a
    /// majority and one of them is the preferred candidate; they wait twice
    /// as long, so the replica with the writes is elected (the runbook's full
    /// cluster recovery read nothing through the other nodes otherwise).
    @Test func afterAWholeClusterRestartTheReplicaThatReplayedTheWritesIsElected() {
        var cluster = LeaseCluster()
        let preferred = cluster.primary(shard)
        let withWrites = (preferred + 1) % 3
        for index in 0..<3 {
            cluster.machines[index] = LeaseCluster.machine(cluster.ids[index], persisted: [shard: PersistedTerm(term: 2, votedFor: nil)],
                                                           learner: false, restarted: true, life: 2)
        }
        _ = cluster.step(withWrites, .localVersion(shard: shard, version: EntryVersion(term: 2, seq: 104), now: 0))
        for index in 0..<3 { cluster.start(index, at: 0) }
        let standBack = LeaseCluster.settings(cluster.ids[0]).restartStandBackMs
        cluster.run(from: 1000, to: standBack + 12_000)
        #expect(cluster.holders(shard, at: standBack + 12_000) == [withWrites])
        // Every copy may have had a hole, so every voter voted on versions
        // alone; the winner's copy is whole from then on, the others' not
        // until its stream reaches them.
        #expect(cluster.machines.indices.map { cluster.machines[$0].copyMayHaveHole(shard) }
                == cluster.machines.indices.map { $0 != withWrites })
    }

    /// A voter's bare term (one it only campaigned for) is adopted to campaign
    /// above it, but never reported as granted: passed on as `grantedTerm`, a
    /// third node's reply made a live holder demote itself for a term nobody
    /// won (found reading chaos logs: node3's failed term 12 reached node1 as
    /// "node2 knows term 12 was granted").
    @Test func aBareTermLearnedFromAVoterIsNotReportedAsGranted() {
        var cluster = LeaseCluster()
        let candidate = cluster.primary(shard)
        let voter = (candidate + 1) % 3, asker = (candidate + 2) % 3
        _ = cluster.tick(candidate, at: LeaseCluster.quietEnd)
        cluster.inFlight.removeAll()
        let campaignTerm = cluster.machines[candidate].term(ofShard: shard)
        let reply = LeaseMessage(sender: cluster.ids[voter], payload: .reply(
            round: 1, life: 1,
            answers: [LeaseAnswer(shard: UInt32(shard), term: campaignTerm, verdict: .votedOther, voterTerm: 12, grantedTerm: 0)]))
        _ = cluster.step(candidate, .received(frame: LeaseCodec.encode(reply, parameters: LeaseCluster.parameters,
                                                                       authenticator: LeaseCluster.authenticator),
                                              now: LeaseCluster.quietEnd + 10))
        #expect(cluster.machines[candidate].term(ofShard: shard) == 12, "it campaigns above the voter's term next")
        // Asked at a lower term, it refuses and tells the asker what it knows was granted.
        let answer = cluster.answerAskedDirectly(of: candidate, from: asker, term: 5, at: LeaseCluster.quietEnd + 20)
        #expect(answer?.verdict == .staleTerm)
        #expect(answer?.voterTerm == 12)
        #expect(answer?.grantedTerm == 0, "term 12 was never granted to anyone")
    }

    /// What a restart reads back: a term voted for another node was granted
    /// and is reported as such; one persisted with no vote may have been
    /// adopted bare, and is not.
    @Test(arguments: [(NodeID("node2"), UInt32(12)), (nil, UInt32(0))])
    func aPersistedTermIsReportedAsGrantedOnlyWhenItWasVotedFor(_ voted: NodeID?, _ reported: UInt32) {
        var cluster = LeaseCluster()
        cluster.machines[0] = LeaseCluster.machine(cluster.ids[0], persisted: [shard: PersistedTerm(term: 12, votedFor: voted)],
                                                   learner: false, life: 2)
        cluster.start(0, at: 0)
        let answer = cluster.answerAskedDirectly(of: 0, from: 1, term: 5, at: LeaseCluster.quietEnd)
        #expect(answer?.voterTerm == 12)
        #expect(answer?.grantedTerm == reported)
    }

    /// A rolling upgrade from a release before leases: the nodes that know
    /// of an old member write unfenced as the map's primary. One that does
    /// not know (restarted, or added, after the old member died) must not
    /// win a lease with their votes, or two nodes would write one shard.
    @Test func aNodeThatDoesNotEnforceLeasesGrantsNoneUntilItDoesAgain() {
        var cluster = LeaseCluster()
        cluster.machines[0].pauseGrants(true)
        cluster.machines[1].pauseGrants(true)
        // Only node2's timers fire: the server pauses a non-enforcing node's.
        for now in stride(from: Int64(1000), through: 40_000, by: Int(LeaseCluster.tickMs)) {
            _ = cluster.tick(2, at: now)
            cluster.deliver(at: now)
        }
        #expect(cluster.log[2].contains { if case .send = $0 { true } else { false } }, "node2 campaigned")
        #expect((0..<4).allSatisfy { cluster.holders($0, at: 40_000).isEmpty },
                "only the two paused nodes could make node2's majority")
        #expect(cluster.verdictAskedDirectly(of: 0, from: 2, term: 99, at: 40_001) == .notEnforcing)
        #expect(LeaseVerdict.notEnforcing.description == "not_enforcing")

        cluster.machines[0].pauseGrants(false)
        cluster.machines[1].pauseGrants(false)
        cluster.run(from: 40_002, to: 80_000)
        #expect((0..<4).allSatisfy { cluster.holders($0, at: 80_000).count == 1 }, "grants resume with enforcement")
    }

    @Test func oneEmptyLearnerInThreeLeavesAMajorityThatElects() {
        var cluster = LeaseCluster(learners: [0])
        cluster.run(from: 1000, to: 40_000)
        for shard in 0..<4 {
            let holders = cluster.holders(shard, at: 40_000)
            #expect(holders.count == 1 && holders.first != 0)
        }
    }

    @Test func aReplyFromAnEarlierLifeIsNotCounted() {
        var cluster = LeaseCluster()
        let primary = cluster.primary(shard)
        let at = LeaseCluster.quietEnd
        _ = cluster.tick(primary, at: at)
        // The primary restarts before the replies arrive.
        cluster.machines[primary] = LeaseCluster.machine(cluster.ids[primary], persisted: [0: PersistedTerm(term: 1, votedFor: cluster.ids[primary])],
                                                         learner: false, life: 2)
        cluster.start(primary, at: at + 10)
        cluster.deliver(at: at + 20)
        #expect(!cluster.machines[primary].holdsLease(shard, now: at + 20))
        #expect(cluster.machines[primary].counters.staleReplies == 2)
    }

    @Test func aHolderThatIsNoLongerAReplicaLetsGo() {
        var cluster = LeaseCluster()
        let primary = cluster.primary(shard)
        cluster.run(from: LeaseCluster.quietEnd, to: LeaseCluster.quietEnd + 1000)
        #expect(cluster.holders(shard, at: LeaseCluster.quietEnd + 1000) == [primary])
        let others = cluster.ids.filter { $0 != cluster.ids[primary] } + [NodeID("node9")!]
        let map = try! ShardMap(members: others, numShards: 4, virtualNodes: 16, replicationFactor: 3)
        let actions = cluster.step(primary, .placementChanged(map, now: LeaseCluster.quietEnd + 1001))
        #expect(actions.contains(.leaseLost(shard: shard, reason: .notReplica)))
    }

    /// Two candidates, one shard, every interleaving of a small schedule:
    /// never two holders in one term, never two holders at one time.
    @Test(arguments: 0..<40) func splitVotesNeverMakeTwoHolders(_ variant: Int) {
        var cluster = LeaseCluster()
        var random = ClusterRandom(seed: UInt64(variant))
        var now = LeaseCluster.quietEnd
        var holdersByTerm: [UInt32: Set<Int>] = [:]
        for _ in 0..<60 {
            now += Int64.random(in: 100...900, using: &random)
            let index = Int.random(in: 0..<3, using: &random)
            // Each node sometimes believes the others dead, so several campaign.
            let alive = cluster.ids.filter { $0 == cluster.ids[index] || Bool.random(using: &random) }
            cluster.step(index, .membersChanged(alive: alive, now: now))
            _ = cluster.tick(index, at: now)
            // Each frame in flight is lost, held for later, or delivered now.
            let batch = cluster.inFlight
            cluster.inFlight = []
            var kept: [(from: Int, to: Int, frame: [UInt8])] = []
            for message in batch {
                switch Int.random(in: 0..<4, using: &random) {
                case 0: continue
                case 1: kept.append(message)
                default: cluster.step(message.to, .received(frame: message.frame, now: now))
                }
            }
            cluster.inFlight = kept + cluster.inFlight
            for shard in 0..<4 {
                let holders = cluster.holders(shard, at: now)
                #expect(holders.count <= 1, "shard \(shard) at \(now): \(holders)")
                for holder in holders { holdersByTerm[cluster.machines[holder].term(ofShard: shard) << 8 | UInt32(shard), default: []].insert(holder) }
            }
        }
        #expect(holdersByTerm.values.allSatisfy { $0.count == 1 })
    }

    /// A node restarted with its log off has lost every copy, and stands
    /// back as a restart does so that a replica that stayed up wins; but
    /// once, not twice: the doubled wait is for the one log that holds a
    /// shard's writes, and none does here.
    @Test func aNodeRestartedWithItsLogOffStandsBackOnce() {
        let id = NodeID("node0")!
        let persisted = [0: PersistedTerm(term: 3, votedFor: NodeID("node1")), 1: PersistedTerm(term: 2, votedFor: id)]
        let standBack = LeaseCluster.settings(id).restartStandBackMs
        for withoutLog in [false, true] {
            var machine = LeaseMachine(settings: LeaseCluster.settings(id), persisted: persisted, emptyLearner: false, restarted: true,
                                       restartedWithoutLog: withoutLog, life: 2, randomSeed: 1, authenticator: LeaseCluster.authenticator)
            let actions = machine.step(.start(now: 1000))
            let waits = (0..<4).map { machine.state.shards[$0].standBackUntil - 1000 }
            #expect(waits == Array(repeating: withoutLog ? standBack : 2 * standBack, count: 4), "without log: \(withoutLog)")
            #expect((0..<4).allSatisfy { machine.copyMayHaveHole($0) })
            let notices = actions.compactMap { action -> String? in
                if case let .log(_, text) = action { return text }
                return nil
            }
            #expect(notices.contains { $0.contains("restarted with the log off") } == withoutLog, "\(notices)")
        }
    }
}
