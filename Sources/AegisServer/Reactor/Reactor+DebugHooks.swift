import Glibc

/// Fault hooks for tests, compiled into debug builds only: nothing here
/// exists in a release binary.
///
/// `AEGISKV_DEBUG_STALL_FILE=<path>`: while a file `<path>.<n>` exists,
/// reactor n stops at the top of its loop (it neither reads its clients nor
/// drains its rings), as a reactor stuck in a long command would. Tests use
/// it to see what the other reactors do when one of them stops answering.
/// The name does not start with `AEGIS_`, so the configuration loader,
/// which owns that prefix, never sees it.
extension Reactor {
    #if DEBUG
    static let debugStallPath: String? = getenv("AEGISKV_DEBUG_STALL_FILE").map { String(cString: $0) }

    func debugStallWhileRequested() {
        guard let base = Self.debugStallPath else { return }
        let path = "\(base).\(index)"
        var logged = false
        while access(path, F_OK) == 0 {
            if !logged {
                logged = true
                logger.notice("debug hook: reactor stalled", metadata: ["reactor": "\(index)", "file": "\(path)"])
            }
            usleep(1000)
        }
        if logged { logger.notice("debug hook: reactor resumed", metadata: ["reactor": "\(index)"]) }
    }
    #endif
}
