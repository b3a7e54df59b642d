import Foundation
import Synchronization

/// Seeds and sizes for the stress tests (suites named `…StressTests`).
///
/// Every run prints its seed; `AEGIS_STRESS_SEED=<seed>` replays one, and
/// `AEGIS_STRESS_SCALE=<n>` multiplies the default counts for long runs
/// (the defaults keep each test to a few seconds on two cores).
enum Stress {
    static func seed(_ test: String) -> UInt64 {
        if let text = ProcessInfo.processInfo.environment["AEGIS_STRESS_SEED"], let seed = UInt64(text) {
            print("\(test): AEGIS_STRESS_SEED=\(seed) (from the environment)")
            return seed
        }
        var system = SystemRandomNumberGenerator()
        let seed = system.next()
        print("\(test): AEGIS_STRESS_SEED=\(seed)")
        return seed
    }

    static func count(_ base: Int) -> Int {
        let scale = ProcessInfo.processInfo.environment["AEGIS_STRESS_SCALE"].flatMap { Int($0) } ?? 1
        return base * max(1, scale)
    }
}

/// SplitMix64: small, fast and the same sequence for the same seed on every
/// platform, so a failing interleaving's seed replays its choices.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Counters two test threads share.
final class SharedProgress: Sendable {
    let produced = Atomic<Int>(0)
    let consumed = Atomic<Int>(0)
    let stop = Atomic<Bool>(false)
}

/// Runs `body` on its own thread; `join()` waits for it to return.
final class JoinableThread: @unchecked Sendable {
    private let finished: DispatchSemaphore
    private let thread: Thread

    init(_ body: @escaping @Sendable () -> Void) {
        let finished = DispatchSemaphore(value: 0)
        self.finished = finished
        thread = Thread {
            body()
            finished.signal()
        }
        thread.stackSize = 1 << 20
        thread.start()
    }

    /// False when the thread did not finish within the deadline.
    func join(timeoutSeconds: Double) -> Bool {
        finished.wait(timeout: .now() + timeoutSeconds) == .success
    }
}

/// A short busy wait, to shift one thread's timing against another's by
/// less than a scheduler tick: one atomic load per round (about a
/// nanosecond), which the optimizer cannot fold away as it would a sum.
@inline(never) func spin(_ rounds: Int) {
    for _ in 0..<rounds { _ = SpinTarget.shared.value.load(ordering: .relaxed) }
}

private final class SpinTarget: Sendable {
    static let shared = SpinTarget()
    let value = Atomic<Int>(0)
}
