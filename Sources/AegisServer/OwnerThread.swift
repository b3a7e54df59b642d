import Glibc

/// Debug-build check that state one thread owns is touched only by that
/// thread: a reactor's own state, its shard stores, its connections and
/// their reply queues, and each side of a ring. Release builds keep an empty struct and empty inline
/// functions, so the hot path pays nothing.
///
/// Ownership is taken by the first thread that asserts it, or handed over
/// explicitly with `claim()` where the design hands a value to another
/// thread (a reactor is built on the main thread, replays its log on a
/// replay thread, then runs on its own).
///
/// The check reads and writes `owner` without synchronisation: on the
/// correct path only the owner touches it; on a wrong one the race is what
/// the check is there to report.
struct OwnerThread {
    #if DEBUG
    private var owner: pthread_t?
    #endif

    init() {}

    /// Makes the calling thread the owner, at a documented hand-over.
    @inline(__always) mutating func claim() {
        #if DEBUG
        owner = pthread_self()
        #endif
    }

    @inline(__always) mutating func assertOwner(_ what: StaticString) {
        #if DEBUG
        let current = pthread_self()
        guard let owner else {
            self.owner = current
            return
        }
        precondition(pthread_equal(owner, current) != 0, "\(what) touched from a thread that does not own it")
        #endif
    }

    /// `assertOwner` for paths that cannot mutate (a getter): checks once
    /// an owner has been claimed, and takes no ownership itself.
    @inline(__always) func check(_ what: StaticString) {
        #if DEBUG
        guard let owner else { return }
        precondition(pthread_equal(owner, pthread_self()) != 0, "\(what) touched from a thread that does not own it")
        #endif
    }
}
