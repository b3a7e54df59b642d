import AegisCluster
import Logging

extension GossipAuthenticator: MessageAuthenticator {
    public func tag(for message: ArraySlice<UInt8>) -> [UInt8] { tag(of: message) }
}

/// Drives the SWIM/Lifeguard state machine (`ClusterNode`) for the cluster
/// loop: turns the loop's calls into its events and its actions into the
/// loop's. Lives on the loop's thread only.
final class MembershipEngine: ClusterEngine {
    private var node: ClusterNode
    /// The shard map of the alive members, recomputed when they change.
    private var placement: ShardMap?

    /// The reactors' loop lag (ReactorLag.swift), taken once per protocol period.
    private let reactorLag: [ReactorLag]

    init(node: ClusterNode, reactorLag: [ReactorLag] = []) {
        self.node = node
        self.reactorLag = reactorLag
    }

    func start(nowMs: Int64) -> [ClusterLoopAction] { step(.start(now: nowMs)) }

    func received(_ message: [UInt8], from peer: PeerHello, nowMs: Int64) -> [ClusterLoopAction] {
        step(.received(frame: message, fromAddress: peer.gossipAddress, now: nowMs))
    }

    func timerFired(_ id: UInt64, nowMs: Int64, lateMs: Int64) -> [ClusterLoopAction] {
        guard let timer = Self.timer(id) else { return [] }
        var actions: [ClusterLoopAction] = []
        // The protocol period fires once per gossip_interval: how late it
        // comes, or how late the reactors ran since the last one, is this
        // node's own health (a starved or paused process), which Lifeguard
        // answers by slowing down rather than accusing. One report per
        // period, whichever lag is worse, so neither counts twice; a report
        // of no lag is what releases the hold a lag put on the score.
        if timer == .protocolPeriod {
            actions += step(.localHealth(lagMs: max(0, lateMs, reactorLag.takeWorstPeakMs()), now: nowMs))
        }
        return actions + step(.timerFired(timer, now: nowMs))
    }

    func linkBroke(address: String, nowMs: Int64) -> [ClusterLoopAction] { step(.linkBroken(address: address, now: nowMs)) }

    func seedsChanged(_ seeds: [String], nowMs: Int64) -> [ClusterLoopAction] { step(.seedsChanged(seeds, now: nowMs)) }

    func timingsChanged(_ timings: MembershipTimings, nowMs: Int64) -> [ClusterLoopAction] {
        step(.timingsChanged(timings, now: nowMs))
    }

    func leave(nowMs: Int64) -> [ClusterLoopAction] { step(.leave(now: nowMs)) }

    /// The codec puts the version after the 4-byte prefix and the type after it.
    func messageType(_ message: [UInt8]) -> String {
        guard message.count > 5, let type = MessageType(rawValue: message[5]) else { return "unknown" }
        return type.description
    }

    func contribute(to snapshot: inout ClusterSnapshot) {
        // A refutation raises this node's incarnation without a member change.
        if let me = snapshot.members.firstIndex(where: \.isSelf) { snapshot.members[me].incarnation = node.incarnation }
        snapshot.localHealth = node.localHealth
        snapshot.timings = node.settings.timings
        for (reason, count) in node.counters.droppedByReason {
            snapshot.dropped[Self.refusal(reason), default: 0] += Int(clamping: count)
        }
        guard let map = currentPlacement() else { return }
        snapshot.placementDigest = Self.hex16(map.digest)
        for index in snapshot.members.indices {
            guard let id = NodeID(snapshot.members[index].nodeID) else { continue }
            snapshot.members[index].shardsPrimary = map.shards(primaryOn: id).count
            snapshot.members[index].shardsFollower = map.shards(followerOn: id).count
        }
    }

    /// Placement is a pure function of the alive members (this node
    /// included) and the cluster's shape, so every node that agrees on the
    /// members shows the same digest.
    private func currentPlacement() -> ShardMap? {
        let alive = node.aliveMembers
        if let placement, placement.members == alive { return placement }
        let settings = node.settings
        placement = try? ShardMap(members: alive, numShards: Int(settings.numShards), virtualNodes: Int(settings.virtualNodes),
                                  replicationFactor: Int(settings.replicationFactor))
        return placement
    }

    static func hex16(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    static func refusal(_ reason: DropReason) -> PeerRefusal {
        switch reason {
        case .badMAC: return .badMAC
        case .unknownVersion: return .unknownVersion
        case .clusterMismatch: return .clusterMismatch
        case .malformed: return .malformed
        }
    }

    static func timerID(_ timer: TimerID) -> UInt64 { UInt64(TimerID.allCases.firstIndex(of: timer)!) }

    static func timer(_ id: UInt64) -> TimerID? {
        id < UInt64(TimerID.allCases.count) ? TimerID.allCases[Int(id)] : nil
    }

    private func step(_ event: ClusterEvent) -> [ClusterLoopAction] {
        let actions = node.step(event)
        let members = actions.contains { if case .memberChanged = $0 { true } else { false } } ? node.members : []
        return actions.map { action in
            switch action {
            case .send(let frame, let address, let lane):
                return .send(to: address, lane: lane == .control ? .control : .bulk, message: frame)
            case .setTimer(let timer, let at):
                return .setTimer(id: Self.timerID(timer), atMs: at)
            case .memberChanged(let change):
                let row = members.first { $0.nodeID == change.node }
                let view = ClusterMemberView(
                    nodeID: change.node.name, gossipAddress: row?.gossipAddress ?? "", clientAddress: row?.clientAddress ?? "",
                    status: change.to, incarnation: change.incarnation, lastHeardMonotonicMs: row?.lastHeardMs ?? 0,
                    isSelf: row?.isLocal ?? false)
                return .member(view, previous: change.from, reason: change.reason)
            case .log(let level, let text):
                switch level {
                case .info: return .log(.info, text)
                case .notice: return .log(.notice, text)
                case .warning: return .log(.warning, text)
                }
            }
        }
    }
}
