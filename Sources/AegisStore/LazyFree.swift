import Glibc
import Synchronization

/// What FLUSHALL ASYNC took out of the shards, freed on a thread of its own
/// so that the reactor answers at once however large the shards were
/// (freeing 5M entries one `free` at a time blocks a thread for about half
/// a second). glibc's `free` may be called from any thread: a block goes
/// back to the arena that made it, under that arena's lock.
///
/// Ownership: the reactor fills a batch (`ShardStore.removeAll(deferringTo:)`),
/// then `start(ledger:)` hands it over. From then on only the freeing thread
/// touches the detached memory, which no shard references any more; the
/// reactor only reads `freedBytes` and `freedEntries` (atomics). That is
/// the invariant behind `@unchecked Sendable`.
///
/// The ledger keeps charging the detached bytes until they are really free,
/// so the node's memory report and eviction see what the process holds;
/// `MemoryLedger.collectLazyFree()` (every expiry sweep) takes back what the
/// thread has freed.
public final class LazyFreeBatch: @unchecked Sendable {
    /// Below this many entries the batch is freed on the calling thread: a
    /// thread costs more than that many `free` calls.
    public static let inlineEntriesMax = 4096

    struct Table {
        let slots: UnsafeMutablePointer<UInt64>
        let capacity: Int
        let charge: Int
    }

    private var tables: [Table] = []
    private var arrays: [(UnsafeMutableRawPointer, Int)] = []
    /// Ledger charge of everything in the batch (entries, tables, arrays).
    public private(set) var chargedBytes = 0
    /// Entries in the batch.
    public private(set) var entries = 0
    private let usable: Malloc.UsableSizeFunction = Malloc.usableSize

    private let freed = Atomic<Int>(0)
    private let freedCount = Atomic<Int>(0)
    /// Ledger-side bookkeeping: the part of `freedBytes` already taken off the ledger.
    var collectedBytes = 0

    public init() {}

    /// Adds a table whose occupied slots hold `entries` entry blocks (`entryBytes` their charge).
    func add(table slots: UnsafeMutablePointer<UInt64>, capacity: Int, charge: Int, entries: Int, entryBytes: Int) {
        tables.append(Table(slots: slots, capacity: capacity, charge: charge))
        self.entries += entries
        chargedBytes += charge + entryBytes
    }

    /// Adds an array freed whole.
    func add(array: UnsafeMutableRawPointer?, charge: Int) {
        guard let array else { return }
        arrays.append((array, charge))
        chargedBytes += charge
    }

    /// Bytes freed so far (ledger charges).
    public var freedBytes: Int { freed.load(ordering: .acquiring) }
    /// Entries freed so far.
    public var freedEntries: Int { freedCount.load(ordering: .relaxed) }
    public var isFinished: Bool { freedBytes == chargedBytes }

    /// Frees the batch: inline when small, else on a new thread whose
    /// progress `ledger` collects. The ledger already holds the charges.
    public func start(ledger: MemoryLedger) {
        if entries <= Self.inlineEntriesMax {
            run()
            ledger.usedBytes -= chargedBytes
            return
        }
        ledger.counters.pointee.lazyFree.append(self)
        let context = Unmanaged.passRetained(self).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { context in
            let batch = Unmanaged<LazyFreeBatch>.fromOpaque(context!).takeRetainedValue()
            batch.run()
            return nil
        }, context)
        if rc == 0 {
            pthread_detach(thread)
        } else {
            // No thread to be had (EAGAIN): free here rather than keep the memory.
            Unmanaged<LazyFreeBatch>.fromOpaque(context).release()
            run()
        }
    }

    /// Frees everything, publishing progress every `publishEvery` entries.
    func run() {
        let publishEvery = 4096
        var bytes = 0
        var count = 0
        for table in tables {
            for i in 0..<table.capacity {
                let s = table.slots[i]
                if s == 0 { continue }
                let entry = ShardState.entry(s)
                if let spilled = VersionEpochs.spillBlock(entry.versionWord) {
                    bytes &+= Malloc.charge(spilled, usable)
                    free(spilled)
                }
                bytes &+= Malloc.charge(entry.raw, usable)
                free(entry.raw)
                count &+= 1
                if count % publishEvery == 0 {
                    freed.add(bytes, ordering: .releasing)
                    freedCount.add(publishEvery, ordering: .relaxed)
                    bytes = 0
                }
            }
            TableMemory.free(table.slots, slots: table.capacity)
            bytes &+= table.charge
        }
        for (array, charge) in arrays {
            free(array)
            bytes &+= charge
        }
        freedCount.add(count % publishEvery, ordering: .relaxed)
        freed.add(bytes, ordering: .releasing)
    }
}
