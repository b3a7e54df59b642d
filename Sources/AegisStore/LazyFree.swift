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
/// the invariant behind `@unchecked Sendable`. A batch begun with
/// `beginFreeingInSteps(ledger:)` instead never leaves its reactor, which
/// frees it itself with `freeSome(entriesMax:)`.
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
        guard beginFreeingInSteps(ledger: ledger) else { return }
        // Large: registered with the ledger, and freed by a thread of its own (`run`).
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

    /// Registers the batch with `ledger` without freeing anything: the
    /// caller frees it with `freeSome(entriesMax:)` between its other work,
    /// on its own thread. For memory dropped in bulk by a reactor while it
    /// serves (a shard this node no longer replicates): a thread of its own
    /// competes with that reactor for the core and for its malloc arena's
    /// lock, and stalled the clients of every node at a join for 50 ms and
    /// more (perf/shard-move); slices paced between requests do not.
    /// Returns false, having freed the batch inline, when it is small.
    public func beginFreeingInSteps(ledger: MemoryLedger) -> Bool {
        if entries <= Self.inlineEntriesMax {
            run()
            ledger.usedBytes -= chargedBytes
            return false
        }
        ledger.counters.pointee.lazyFree.append(self)
        return true
    }

    /// Progress is published every this many entries, not per entry.
    private static let publishEvery = 4096
    /// Where `freeSome` resumes: the table, and the slot in it.
    private var tableCursor = 0
    private var slotCursor = 0

    /// Frees everything.
    func run() {
        while !freeSome(entriesMax: .max) {}
    }

    /// Frees at most `entriesMax` entries (and looks at no more than 8 times
    /// as many slots), resuming where the last call stopped, and publishes
    /// what it freed; true once the whole batch is free. Only one thread
    /// calls it for a batch: the freeing thread, or the reactor that began
    /// freeing it in steps.
    public func freeSome(entriesMax: Int) -> Bool {
        let publishEvery = Self.publishEvery
        let slotsMax = entriesMax > Int.max / 8 ? Int.max : entriesMax * 8
        var bytes = 0
        var count = 0
        var slotsSeen = 0
        while tableCursor < tables.count {
            let table = tables[tableCursor]
            while slotCursor < table.capacity {
                if count == entriesMax || slotsSeen == slotsMax { return publish(bytes: bytes, count: count, done: false) }
                let s = table.slots[slotCursor]
                slotCursor += 1
                slotsSeen &+= 1
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
            tableCursor += 1
            slotCursor = 0
        }
        for (array, charge) in arrays {
            free(array)
            bytes &+= charge
        }
        arrays.removeAll()
        return publish(bytes: bytes, count: count, done: true)
    }

    private func publish(bytes: Int, count: Int, done: Bool) -> Bool {
        freedCount.add(count % Self.publishEvery, ordering: .relaxed)
        freed.add(bytes, ordering: .releasing)
        return done
    }
}
