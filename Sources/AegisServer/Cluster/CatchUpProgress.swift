import AegisCluster
import Logging

/// How far this node is in catching up with the holders of the shards it
/// replicates: after a start (a restart, or the refill of a wiped data
/// directory) and whenever it falls out of step. Fed every standing review
/// (`LeaseDriver.reviewStanding`, 100 ms) with the bytes received as a
/// follower so far; says it in log lines and in /stats' `refill`.
///
/// A period out of step starts at the node's start (for the first one) or
/// at the review that found it out of step, and ends at the review that
/// finds it in step. While it lasts, one notice every `reportEveryMs` gives
/// the shards caught up of the total, the bytes received and the rate; its
/// end is one notice with the same figures, unless it was a blip (shorter
/// than `blipMs` with nothing received: an election, a holder moving).
///
/// Confined to the cluster loop's thread.
struct CatchUpProgress {
    static let reportEveryMs: Int64 = 5_000
    static let blipMs: Int64 = 1_000

    struct Line: Equatable {
        var level: Logger.Level
        var message: String
        var metadata: [String: String]
    }

    /// A period out of step: the current one, or the last one that ended.
    struct Period: Equatable {
        var startedMs: Int64
        var bytesBefore: Int
        var lastReportMs: Int64
        var endedMs: Int64?
        var bytes = 0
    }

    private let nodeStartMs: Int64
    private(set) var current: Period?
    private(set) var last: Period?
    private var reviewed = false

    init(nodeStartMs: Int64) {
        self.nodeStartMs = nodeStartMs
    }

    mutating func review(_ standing: ReplicaStanding, bytesReceived: Int, nowMs: Int64) -> [Line] {
        defer { reviewed = true }
        guard standing.applies else {
            current = nil
            return []
        }
        var lines: [Line] = []
        if standing.inStep {
            guard var period = current else {
                if !reviewed {
                    lines.append(inStepLine(standing, since: nodeStartMs, bytes: 0, nowMs: nowMs))
                }
                return lines
            }
            current = nil
            period.bytes = bytesReceived - period.bytesBefore
            period.endedMs = nowMs
            let lasted = nowMs - period.startedMs
            if lasted >= Self.blipMs || period.bytes > 0 {
                last = period
                lines.append(inStepLine(standing, since: period.startedMs, bytes: period.bytes, nowMs: nowMs))
            }
            return lines
        }
        guard var period = current else {
            let startedMs = reviewed ? nowMs : nodeStartMs
            current = Period(startedMs: startedMs, bytesBefore: reviewed ? bytesReceived : 0, lastReportMs: startedMs)
            if reviewed {
                lines.append(Line(level: .info, message: "cluster: out of step: some shards this node replicates have no holder it knows of, or lack their holder's writes",
                                  metadata: ["behind": "\(standing.behind)", "without_holder": "\(standing.withoutHolder)"]))
            }
            return lines
        }
        period.bytes = bytesReceived - period.bytesBefore
        if nowMs - period.lastReportMs >= Self.reportEveryMs {
            period.lastReportMs = nowMs
            lines.append(Line(level: .notice, message: "cluster: catching up: shards caught up of those this node replicates, bytes received as a follower",
                              metadata: Self.figures(standing, bytes: period.bytes, ms: nowMs - period.startedMs)))
        }
        current = period
        return lines
    }

    /// The period running now, else the last one that ended.
    func snapshot(bytesReceived: Int, nowMs: Int64) -> CatchUpSnapshot {
        if let current {
            return CatchUpSnapshot(running: true, bytes: bytesReceived - current.bytesBefore, ms: nowMs - current.startedMs)
        }
        guard let last, let endedMs = last.endedMs else { return CatchUpSnapshot() }
        return CatchUpSnapshot(running: false, bytes: last.bytes, ms: endedMs - last.startedMs)
    }

    private func inStepLine(_ standing: ReplicaStanding, since startedMs: Int64, bytes: Int, nowMs: Int64) -> Line {
        var metadata = Self.figures(standing, bytes: bytes, ms: nowMs - startedMs)
        metadata["since_start_ms"] = "\(nowMs - nodeStartMs)"
        metadata["held"] = "\(standing.held)"
        return Line(level: .notice, message: "cluster: in step: this node holds or has caught up with every shard it replicates",
                    metadata: metadata)
    }

    private static func figures(_ standing: ReplicaStanding, bytes: Int, ms: Int64) -> [String: String] {
        ["shards": "\(standing.replicated)", "caught_up": "\(standing.caughtUp)", "bytes_received": "\(bytes)",
         "seconds": Self.seconds(ms), "mb_per_second": TransferRate.megabytesPerSecondText(bytes, ms: ms)]
    }

    private static func seconds(_ ms: Int64) -> String { "\(ms / 1_000).\(ms % 1_000 / 100)" }
}

extension ReplicaStanding {
    /// Shards held here or caught up with their holder.
    public var caughtUp: Int { replicated - behind - withoutHolder }
}

/// /stats' `refill`: the catch-up running now, else the last one (a start
/// that found the node in step at once has none).
public struct CatchUpSnapshot: Sendable, Equatable {
    public var running = false
    /// Bytes received as a follower (replicated records and shard streams)
    /// during it, and how long it has run or ran.
    public var bytes = 0
    public var ms: Int64 = 0

    public init(running: Bool = false, bytes: Int = 0, ms: Int64 = 0) {
        self.running = running
        self.bytes = bytes
        self.ms = ms
    }

    public var bytesPerSecond: Int { TransferRate.bytesPerSecond(bytes, ms: ms) }
}
