import Testing

extension Trait where Self == TimeLimitTrait {
    /// The time limit of every test that starts processes: it only catches
    /// a test that hangs, so it is longer than the whole plain suite takes.
    /// Swift Testing starts a test's clock when the test is scheduled, and
    /// a synchronous test then waits for one of the cooperative pool's
    /// threads (two on CI's two cores), which other tests' blocking bodies
    /// can hold for minutes: a short limit failed a 0.6 s test in CI after
    /// 120 s of waiting its turn. Each test bounds its own waits; this is
    /// the backstop that still ends a run well inside CI's 90 minutes.
    static var hangBound: Self { .timeLimit(.minutes(15)) }
}
