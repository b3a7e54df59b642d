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
    static func statm() -> (Int, Int) {
        let fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return (0, 0) }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 256)
        let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, 255) }
        guard count > 0 else { return (0, 0) }
        let fields = String(decoding: buffer[0..<count], as: UTF8.self).split(separator: " ")
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard fields.count > 1, let size = Int(fields[0]), let resident = Int(fields[1]) else { return (0, 0) }
        return (size * page, resident * page)
    }

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
