import Glibc

/// malloc bookkeeping for the accounting rule.
///
/// `malloc_usable_size` is not part of Swift's Glibc module (it lives in
/// `<malloc.h>`, which the module map does not include), so it is resolved
/// once at run time with `dlsym` from the process's global symbol scope. That
/// also picks up an interposed allocator (jemalloc, tcmalloc) if one is
/// preloaded, so the accounting follows the allocator actually in use.
@usableFromInline
enum Malloc {
    @usableFromInline
    typealias UsableSizeFunction = @convention(c) (UnsafeMutableRawPointer?) -> Int

    /// Bytes malloc keeps in front of each chunk (the size word) on 64-bit glibc.
    @usableFromInline
    static let chunkHeaderBytes = 8

    /// The process's `malloc_usable_size`.
    @usableFromInline
    static let usableSize: UsableSizeFunction = {
        let global = dlopen(nil, RTLD_NOW)
        guard let symbol = dlsym(global, "malloc_usable_size") else {
            fatalError("AegisStore: malloc_usable_size not found in the process")
        }
        return unsafeBitCast(symbol, to: UsableSizeFunction.self)
    }()

    /// Bytes charged to the ledger for one malloc'd block.
    @inline(__always) @usableFromInline
    static func charge(_ block: UnsafeMutableRawPointer, _ usable: UsableSizeFunction) -> Int {
        usable(block) &+ chunkHeaderBytes
    }

    @usableFromInline
    typealias MalloptFunction = @convention(c) (Int32, Int32) -> Int32

    /// glibc's `M_MMAP_THRESHOLD` parameter number (`<malloc.h>`).
    static let mmapThresholdParameter: Int32 = -3

    /// Fixes glibc's mmap threshold (see `StoreAllocator.pinLargeBlockThreshold`).
    static func setMmapThreshold(_ bytes: Int) -> Bool {
        let global = dlopen(nil, RTLD_NOW)
        guard let symbol = dlsym(global, "mallopt") else { return false }
        let mallopt = unsafeBitCast(symbol, to: MalloptFunction.self)
        return mallopt(mmapThresholdParameter, Int32(bytes)) == 1
    }

    /// malloc that never returns nil (out of memory is fatal, like Swift's own allocations).
    @inline(__always) @usableFromInline
    static func allocate(_ bytes: Int) -> UnsafeMutableRawPointer {
        guard let p = malloc(bytes) else { fatalError("AegisStore: out of memory allocating \(bytes) bytes") }
        return p
    }

    @inline(__always) @usableFromInline
    static func allocateZeroed(_ count: Int, _ size: Int) -> UnsafeMutableRawPointer {
        guard let p = calloc(count, size) else { fatalError("AegisStore: out of memory allocating \(count * size) bytes") }
        return p
    }
}

/// Process-wide allocator settings the store's accounting relies on.
public enum StoreAllocator {
    /// Blocks of at least this many bytes get their own mapping.
    public static let largeBlockBytes = 128 * 1024

    /// Makes every block of `largeBlockBytes` or more a mapping of its own,
    /// returned to the kernel when freed. glibc starts there but raises the
    /// threshold each time such a block is freed (up to 32 MiB), after which
    /// large values come from the heap, whose freed holes stay resident:
    /// with 1 MB values under eviction RSS rose 7% above max_memory_mb while
    /// the ledger stayed under it. Fixing the threshold keeps a large
    /// value's charge (its usable size) equal to the pages it holds. Call
    /// once at start, before the shards allocate. Returns false when the
    /// allocator has no `mallopt` (another malloc preloaded).
    @discardableResult
    public static func pinLargeBlockThreshold() -> Bool {
        Malloc.setMmapThreshold(largeBlockBytes)
    }
}
