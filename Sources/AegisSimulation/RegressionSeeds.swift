/// Seeds that once broke an invariant, run by every `aegiskv-sim --seeds N`
/// and by the tests: a seed that failed stays a test case forever.
public enum RegressionSeeds {
    public static let seeds: [UInt64] = []
}
