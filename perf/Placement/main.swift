// aegiskv-placement: how evenly the shard map spreads shards, and how many
// move when a node joins. Pure computation over AegisCluster's ShardMap; no
// timing, so any build gives the same figures.
//
//   aegiskv-placement balance [--num-shards 256] [--virtual-nodes V] [--replication-factor 3]
//                             [--min-nodes 3] [--max-nodes 16] [--member-sets 100]
//                             [--shard-points spaced|hashed]
//       For each cluster size N: primary shards per node as max/mean, for
//       the member set node1..nodeN and over --member-sets other name sets
//       (mean and worst); then the fraction of shards whose primary changes
//       when node N+1 joins, against the ideal 1/(N+1). Two references:
//       ceil(S/N)/(S/N), the best any placement of S whole shards can do,
//       and "independent", the mean max/mean when every shard picks its node
//       uniformly at random (seeded). V defaults to the
//       configuration's default. `--shard-points hashed` places shard s at
//       XXH64(s as 4 bytes little-endian) instead of the map's evenly spaced
//       points, for comparison (only primaries: it goes through HashRing).
//
//   aegiskv-placement vectors
//       Prints the golden test vectors (JSON) that
//       Tests/AegisClusterTests/Resources/placement-vectors.json holds.

import AegisCluster
import AegisConfig
import AegisStore
import Foundation

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("aegiskv-placement: \(message)\n".utf8))
    exit(2)
}

struct Options {
    var ints: [String: Int] = [:]
    var strings: [String: String] = [:]

    init(_ args: ArraySlice<String>) {
        var i = args.startIndex
        while i < args.endIndex {
            let name = args[i]
            guard name.hasPrefix("--"), i + 1 < args.endIndex else { fail("bad argument \(name)") }
            let value = args[i + 1]
            if let n = Int(value) { ints[String(name.dropFirst(2))] = n } else { strings[String(name.dropFirst(2))] = value }
            i += 2
        }
    }

    func int(_ name: String, _ defaultValue: Int) -> Int { ints[name] ?? defaultValue }
    func string(_ name: String, _ defaultValue: String) -> String { strings[name] ?? defaultValue }
}

func node(_ name: String) -> NodeID {
    guard let id = NodeID(name) else { fail("\(name) is not a valid node id") }
    return id
}

/// Member set `set` of size n: set 0 is the runbook's node1..nodeN; the
/// others are names like "r7-node3", distinct hash inputs for the same size.
func memberSet(_ set: Int, size n: Int) -> [NodeID] {
    (1...n).map { set == 0 ? node("node\($0)") : node("r\(set)-node\($0)") }
}

enum ShardPoints: String { case spaced, hashed }

struct Placement {
    let numShards: Int
    let virtualNodes: Int
    let replicationFactor: Int
    let points: ShardPoints

    /// Primary of each shard, as a member name.
    func primaries(_ members: [NodeID]) -> [NodeID] {
        switch points {
        case .spaced:
            let map: ShardMap
            do {
                map = try ShardMap(members: members, numShards: numShards, virtualNodes: virtualNodes,
                                   replicationFactor: replicationFactor)
            } catch { fail("\(error)") }
            return (0..<numShards).map { map.primary(ofShard: $0) }
        case .hashed:
            let ring = HashRing(members: members, virtualNodes: virtualNodes)
            return (0..<numShards).map { shard in
                let point = withUnsafeBytes(of: UInt32(shard).littleEndian) { KeyHash.hash($0) }
                return ring.members[ring.ownerIndex[ring.firstPointIndex(atOrAfter: point)]]
            }
        }
    }

    func maxOverMean(_ members: [NodeID]) -> Double {
        var counts: [NodeID: Int] = [:]
        for primary in primaries(members) { counts[primary, default: 0] += 1 }
        let mean = Double(numShards) / Double(members.count)
        return Double(counts.values.max() ?? 0) / mean
    }

    /// Fraction of shards whose primary differs once `members`' next node joins.
    func movedOnJoin(_ before: [NodeID], _ after: [NodeID]) -> Double {
        let moved = zip(primaries(before), primaries(after)).filter { $0 != $1 }.count
        return Double(moved) / Double(numShards)
    }
}

/// Mean max/mean when `shards` shards land on `nodes` nodes independently
/// and uniformly: where any ring tends as its arcs get much shorter than
/// the spacing between shards (many virtual nodes), since each shard then
/// falls on a node as if at random.
func independentPlacementMaxOverMean(shards: Int, nodes: Int, trials: Int = 2000) -> Double {
    var rng = ClusterRandom(seed: UInt64(shards * 1_000 + nodes))
    var total = 0.0
    for _ in 0..<trials {
        var counts = [Int](repeating: 0, count: nodes)
        for _ in 0..<shards { counts[Int(rng.next() % UInt64(nodes))] += 1 }
        total += Double(counts.max()!) / (Double(shards) / Double(nodes))
    }
    return total / Double(trials)
}

func format(_ x: Double) -> String { String(format: "%.3f", x) }

func balance(_ options: Options) {
    let defaults = AegisConfig.defaults
    guard let points = ShardPoints(rawValue: options.string("shard-points", "spaced")) else {
        fail("--shard-points is spaced or hashed")
    }
    let placement = Placement(
        numShards: options.int("num-shards", defaults.numShards),
        virtualNodes: options.int("virtual-nodes", defaults.virtualNodes),
        replicationFactor: options.int("replication-factor", defaults.replicationFactor),
        points: points)
    let sets = options.int("member-sets", 100)
    let minNodes = options.int("min-nodes", 3)
    let maxNodes = options.int("max-nodes", 16)
    guard sets >= 1, minNodes >= 1, maxNodes >= minNodes else { fail("need --member-sets ≥ 1 and 1 ≤ --min-nodes ≤ --max-nodes") }

    print("num_shards \(placement.numShards), virtual_nodes \(placement.virtualNodes), replication_factor \(placement.replicationFactor), shard points \(points.rawValue), \(sets) member sets")
    print("")
    print("| N | ceil(S/N)/(S/N) | independent | max/mean node1..N | max/mean mean | max/mean worst | N→N+1 moved node1..N | moved mean ×(N+1) | moved worst ×(N+1) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in minNodes...maxNodes {
        let mean = Double(placement.numShards) / Double(n)
        let floorBound = (mean.rounded(.up)) / mean
        var ratios: [Double] = []
        var moved: [Double] = []
        for set in 0..<sets {
            let before = memberSet(set, size: n)
            let after = memberSet(set, size: n + 1)
            ratios.append(placement.maxOverMean(before))
            moved.append(placement.movedOnJoin(before, after))
        }
        let ideal = 1.0 / Double(n + 1)
        let meanMoved = moved.reduce(0, +) / Double(moved.count)
        let independent = independentPlacementMaxOverMean(shards: placement.numShards, nodes: n)
        print("| \(n) | \(format(floorBound)) | \(format(independent)) | \(format(ratios[0])) | \(format(ratios.reduce(0, +) / Double(ratios.count))) | \(format(ratios.max()!)) | \(format(moved[0])) | \(format(meanMoved / ideal)) | \(format(moved.max()! / ideal)) |")
    }
}

// MARK: - Golden vectors

struct VectorCase {
    let members: [String]
    let numShards: Int
    let virtualNodes: Int
    let replicationFactor: Int
}

let vectorCases: [VectorCase] = [
    VectorCase(members: ["node1", "node2", "node3"], numShards: 256, virtualNodes: 128, replicationFactor: 3),
    VectorCase(members: ["node1", "node2", "node3", "node4", "node5"], numShards: 64, virtualNodes: 16, replicationFactor: 2),
    VectorCase(members: ["a", "a#1", "Z", "ä-node"], numShards: 32, virtualNodes: 4, replicationFactor: 3),
    VectorCase(members: ["solo"], numShards: 8, virtualNodes: 1, replicationFactor: 3),
    VectorCase(members: ["node-a", "node-b"], numShards: 16, virtualNodes: 8, replicationFactor: 5),
    VectorCase(members: (1...16).map { "node\($0)" }, numShards: 256, virtualNodes: 256, replicationFactor: 3),
]

func jsonString(_ s: String) -> String {
    guard let data = try? JSONSerialization.data(withJSONObject: s, options: [.fragmentsAllowed, .withoutEscapingSlashes]),
          let text = String(data: data, encoding: .utf8) else { fail("cannot encode \(s) as JSON") }
    return text
}

func hex(_ value: UInt64) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: 16 - digits.count) + digits
}

func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

func vectors() {
    var lines: [String] = ["{"]
    lines.append("  \"nodePoints\": [")
    let nodePoints: [(String, Int)] = [("node1", 0), ("node1", 1), ("node1", 127), ("ä-node", 3), ("a#1", 2)]
    lines.append(nodePoints.map { name, vnode in
        let bytes = HashRing.nodePointBytes(node(name), virtualNode: vnode)
        return "    {\"node\": \(jsonString(name)), \"virtualNode\": \(vnode), \"bytesHex\": \"\(hex(bytes))\", \"xxh64\": \"\(hex(HashRing.nodePoint(node(name), virtualNode: vnode)))\"}"
    }.joined(separator: ",\n"))
    lines.append("  ],")
    lines.append("  \"shardPoints\": [")
    let shardPoints: [(Int, Int)] = [(0, 256), (1, 256), (255, 256), (7, 10), (65535, 65536)]
    lines.append(shardPoints.map { shard, count in
        "    {\"shard\": \(shard), \"numShards\": \(count), \"point\": \"\(hex(HashRing.shardPoint(shard, numShards: count)))\"}"
    }.joined(separator: ",\n"))
    lines.append("  ],")
    lines.append("  \"maps\": [")
    var maps: [String] = []
    for c in vectorCases {
        let map: ShardMap
        do {
            map = try ShardMap(members: c.members.map(node), numShards: c.numShards, virtualNodes: c.virtualNodes,
                               replicationFactor: c.replicationFactor)
        } catch { fail("\(error)") }
        var text = "    {\n"
        text += "      \"members\": [\(c.members.map(jsonString).joined(separator: ", "))],\n"
        text += "      \"numShards\": \(c.numShards), \"virtualNodes\": \(c.virtualNodes), \"replicationFactor\": \(c.replicationFactor),\n"
        text += "      \"digest\": \"\(hex(map.digest))\",\n"
        text += "      \"owners\": [\n"
        text += (0..<c.numShards).map { shard in
            "        [\(map.owners(ofShard: shard).map { jsonString($0.name) }.joined(separator: ", "))]"
        }.joined(separator: ",\n")
        text += "\n      ]\n    }"
        maps.append(text)
    }
    lines.append(maps.joined(separator: ",\n"))
    lines.append("  ]")
    lines.append("}")
    print(lines.joined(separator: "\n"))
}

let arguments = CommandLine.arguments
switch arguments.dropFirst().first {
case "balance": balance(Options(arguments.dropFirst(2)))
case "vectors": vectors()
default: fail("usage: aegiskv-placement balance [options] | vectors")
}
