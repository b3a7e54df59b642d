/// Seeds that once broke an invariant, run by every `aegiskv-sim --seeds N`
/// and by the tests: a seed that failed stays a test case forever.
public enum RegressionSeeds {
    public static let seeds: [UInt64] = [
        5084, // a healed partition stayed split: each half held the other dead and never probed it
        336, // a node left alone stretched its own timeouts on failed probes nobody could help with
        1812, // an observer paused past a suspicion's deadline declared the suspect dead before reading its refutation
        2399, // the same, after two overlapping pauses of the observer
        5604037622599121758, // two groups formed apart under 28% loss and never met: a seed outside a node's view was not asked again
        552308851265183517, // two crashes in 4 nodes: missed nacks stretched both survivors, and the checker held them to the unstretched bound
        291, // leases: a preferred replica that was behind kept campaigning, and its promise to itself blocked the up-to-date one
        153, // leases: an empty learner ranked first made the two voters wait out election timeouts until past the liveness bound
        292, // leases: three replicas split the vote in the same term again and again; the ones behind now stand back longer
        355, // issue 11: a suspicion raised after the heal on a probe round begun before it (the heal check now counts from the verdict)
        743, // issue 11: the same in 13 nodes, the suspicion spread by gossip to three holders after the heal
        9157750801569782282, // an observer paused 14 s adopted on resume a dead verdict another node had reached during the subject's pause; the checker now judges a paused observer from its pause's start
    ]
}
