/// The only source of random choices in AegisCluster (probe order, indirect
/// probe helpers, push/pull partner, timer jitter). Seeded by the caller: the
/// server from `SystemRandomNumberGenerator` once at start, the simulator from
/// its run's seed, so that a simulated run replays exactly.
///
/// SplitMix64 (Steele, Lea, Flood 2014): 64 bits of state, every seed valid,
/// statistically good enough for choosing among a few peers.
public struct ClusterRandom: RandomNumberGenerator, Sendable, Equatable {
    private var state: UInt64

    public init(seed: UInt64) {
        state = seed
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var mixed = state
        mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
        mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
        return mixed ^ (mixed >> 31)
    }
}
