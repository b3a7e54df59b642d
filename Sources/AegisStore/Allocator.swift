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

    /// glibc's `M_MXFAST` parameter number (`<malloc.h>`).
    static let fastBinBytesParameter: Int32 = 1

    /// Fixes glibc's mmap threshold and turns off its fast bins (see
    /// `StoreAllocator.pinLargeBlockThreshold`).
    static func setMmapThreshold(_ bytes: Int) -> Bool {
        let global = dlopen(nil, RTLD_NOW)
        guard let symbol = dlsym(global, "mallopt") else { return false }
        let mallopt = unsafeBitCast(symbol, to: MalloptFunction.self)
        let fastBinsOff = mallopt(fastBinBytesParameter, 0) == 1
        return mallopt(mmapThresholdParameter, Int32(bytes)) == 1 && fastBinsOff
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
    /// value's charge (its usable size) equal to the pages it holds.
    ///
    /// It also turns off glibc's fast bins: freed small blocks wait there
    /// uncoalesced, and the next allocation of 1 KiB or more coalesces all of
    /// them at once (malloc_consolidate), which after a few million deletes
    /// stalled one operation for 100-400 ms. Small blocks still go through
    /// the per-thread cache first. Call
    /// once at start, before the shards allocate. Returns false when the
    /// allocator has no `mallopt` (another malloc preloaded).
    @discardableResult
    public static func pinLargeBlockThreshold() -> Bool {
        Malloc.setMmapThreshold(largeBlockBytes)
    }
}

/// Memory for hash tables. A table of `mappedBytes` or more is a mapping of
/// its own, zero-filled lazily by the kernel and returned on free: calloc
/// may hand back a block reused from the heap and clear it with memset,
/// which stalled a reactor for 50-110 ms when a 6.8 MB shrunken table was
/// allocated (measured with aegiskv-store-bench growth-stall). Smaller
/// tables come from malloc. Charges follow the same rule as every block:
/// what the allocator really holds (pages, for a mapping).
@usableFromInline
enum TableMemory {
    static let mappedBytes = 1 << 20
    static let pageBytes = Int(sysconf(Int32(_SC_PAGESIZE)))

    static func mappedLength(_ slots: Int) -> Int {
        (slots * 8 + pageBytes - 1) / pageBytes * pageBytes
    }

    static func allocate(_ slots: Int) -> UnsafeMutablePointer<UInt64> {
        let bytes = slots * 8
        if bytes < mappedBytes {
            return Malloc.allocateZeroed(slots, 8).bindMemory(to: UInt64.self, capacity: slots)
        }
        let p = mmap(nil, mappedLength(slots), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let p, p != MAP_FAILED else { fatalError("AegisStore: out of memory mapping a \(bytes)-byte table") }
        return p.bindMemory(to: UInt64.self, capacity: slots)
    }

    static func free(_ table: UnsafeMutablePointer<UInt64>, slots: Int) {
        if slots * 8 < mappedBytes {
            Glibc.free(table)
        } else {
            munmap(UnsafeMutableRawPointer(table), mappedLength(slots))
        }
    }

    static func charge(_ table: UnsafeMutablePointer<UInt64>, slots: Int, _ usable: Malloc.UsableSizeFunction) -> Int {
        slots * 8 < mappedBytes ? Malloc.charge(UnsafeMutableRawPointer(table), usable) : mappedLength(slots)
    }
}
