import AegisCluster
import Logging

/// What the cluster loop asks of the logic it drives. Production drives the
/// membership state machine through `MembershipEngine`; the link tests drive
/// a recorder, so framing and bounds are tested on real sockets alone.
///
/// Every call carries the monotonic time in ms and returns what to do; the
/// engine itself never reads a clock or a socket.
protocol ClusterEngine: AnyObject, SendableMetatype {
    func start(nowMs: Int64) -> [ClusterLoopAction]
    /// A frame arrived from an authenticated peer (its hello said who it is).
    func received(_ message: [UInt8], from peer: PeerHello, nowMs: Int64) -> [ClusterLoopAction]
    /// `lateMs`: how long after its due time the loop got to it (local health).
    func timerFired(_ id: UInt64, nowMs: Int64, lateMs: Int64) -> [ClusterLoopAction]
    func linkBroke(address: String, nowMs: Int64) -> [ClusterLoopAction]
    func seedsChanged(_ seeds: [String], nowMs: Int64) -> [ClusterLoopAction]
    /// gossip_interval, suspect_timeout or dead_timeout were reloaded (SIGHUP).
    func timingsChanged(_ timings: MembershipTimings, nowMs: Int64) -> [ClusterLoopAction]
    /// The node stops: announce `left`.
    func leave(nowMs: Int64) -> [ClusterLoopAction]
    /// The label of a message for aegis_gossip_messages_*_total{type=...}.
    func messageType(_ message: [UInt8]) -> String
    /// Adds what only the engine knows to a snapshot about to be published
    /// (messages it refused, the placement it computes).
    func contribute(to snapshot: inout ClusterSnapshot)
}

enum ClusterLoopAction {
    case send(to: String, lane: PeerLane, message: [UInt8])
    case setTimer(id: UInt64, atMs: Int64)
    case cancelTimer(id: UInt64)
    /// A member is new or changed; `previous` is nil for a member first seen.
    case member(ClusterMemberView, previous: MemberStatus?, reason: String)
    /// A message the engine refused (bad MAC, unknown version, other cluster).
    case dropped(PeerRefusal, from: String)
    case log(Logger.Level, String)
}
