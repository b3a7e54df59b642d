import AegisServer
import CSupport
import Glibc

/// What the process's memory looks like from the inside: the allocator's
/// own statistics (glibc mallinfo2) and the kernel's (/proc/self/statm).
struct ProcessMemory {
    var allocator: aegis_mallinfo
    var residentBytes: Int
    var virtualBytes: Int

    static func read() -> ProcessMemory {
        let (virtualBytes, residentBytes) = statm()
        return ProcessMemory(allocator: aegis_mallinfo2(), residentBytes: residentBytes, virtualBytes: virtualBytes)
    }

    /// (virtual size, resident set) in bytes from /proc/self/statm; zeros if unreadable.
    static func statm() -> (Int, Int) { processMemoryBytes() }

    var allocatorJSON: JSONValue {
        let a = allocator
        return .object([
            ("arena", .int(a.arena)), ("ordblks", .int(a.ordblks)), ("smblks", .int(a.smblks)),
            ("hblks", .int(a.hblks)), ("hblkhd", .int(a.hblkhd)), ("usmblks", .int(a.usmblks)),
            ("fsmblks", .int(a.fsmblks)), ("uordblks", .int(a.uordblks)), ("fordblks", .int(a.fordblks)),
            ("keepcost", .int(a.keepcost)),
        ])
    }

    /// POST /admin/gc: there is no garbage collector in a Swift process
    /// (memory is freed as soon as it is released), so "GC" means handing
    /// the allocator's free pages back to the kernel with malloc_trim(0).
    /// The figures before and after say what that achieved.
    static func trim() -> JSONValue {
        let before = read()
        let released = aegis_malloc_trim(0)
        let after = read()
        return .object([
            ("trimmed", .bool(released == 1)),
            ("rss_before_bytes", .int(before.residentBytes)),
            ("rss_after_bytes", .int(after.residentBytes)),
            ("rss_freed_bytes", .int(max(before.residentBytes - after.residentBytes, 0))),
            ("allocator_free_before_bytes", .int(before.allocator.fordblks)),
            ("allocator_free_after_bytes", .int(after.allocator.fordblks)),
            ("allocator_releasable_before_bytes", .int(before.allocator.keepcost)),
            ("allocator_releasable_after_bytes", .int(after.allocator.keepcost)),
            ("allocator_system_before_bytes", .int(before.allocator.arena + before.allocator.hblkhd)),
            ("allocator_system_after_bytes", .int(after.allocator.arena + after.allocator.hblkhd)),
        ])
    }
}
