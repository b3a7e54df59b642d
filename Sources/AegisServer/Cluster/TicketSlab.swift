/// Entries waiting for an answer, each under a ticket that travels to a
/// peer and back: a slot number (low 32 bits) and that slot's generation
/// (high 32 bits). Inserting takes a free slot, removing frees it, and both
/// are an array index away, where a dictionary hashed every ticket twice
/// per forwarded request (2% of a forwarding profile).
///
/// Invariants:
/// - `entries[i]` is nil exactly when slot i is on the free list;
/// - a ticket names a live entry only while its slot holds the generation
///   it carries: once removed, the slot's generation moves on, so a late
///   or repeated reply (the request timed out, a peer echoes it twice)
///   finds nothing, and a made-up ticket from a peer finds nothing either
///   (a generation wraps after 2^32 reuses of one slot, so a reply would
///   have to arrive billions of requests after its own was given up on);
/// - memory grows with the most entries held at once, never with how many
///   were ever inserted.
struct TicketSlab<Entry> {
    typealias Ticket = UInt64

    private var entries: [Entry?] = []
    private var generations: [UInt32] = []
    private var free: [UInt32] = []
    private(set) var count = 0

    var isEmpty: Bool { count == 0 }

    /// Stores `make(ticket)` under a new ticket and returns the ticket.
    mutating func insert(_ make: (Ticket) -> Entry) -> Ticket {
        let slot: Int
        if let reused = free.popLast() {
            slot = Int(reused)
        } else {
            precondition(entries.count < Int(UInt32.max), "more than 2^32 - 1 entries waiting at once")
            slot = entries.count
            entries.append(nil)
            generations.append(0)
        }
        let ticket = Self.ticket(slot: slot, generation: generations[slot])
        assert(entries[slot] == nil, "a free slot holds an entry")
        entries[slot] = make(ticket)
        count += 1
        return ticket
    }

    /// The entry under `ticket`, nil when it was removed or never given.
    func peek(_ ticket: Ticket) -> Entry? {
        guard let slot = live(ticket) else { return nil }
        return entries[slot]
    }

    /// Removes and returns the entry under `ticket`, nil when there is none.
    mutating func remove(_ ticket: Ticket) -> Entry? {
        guard let slot = live(ticket) else { return nil }
        let entry = entries[slot]
        entries[slot] = nil
        generations[slot] &+= 1
        free.append(UInt32(slot))
        count -= 1
        return entry
    }

    /// Every ticket that names an entry now, in slot order.
    var tickets: [Ticket] {
        entries.indices.compactMap { entries[$0] == nil ? nil : Self.ticket(slot: $0, generation: generations[$0]) }
    }

    private func live(_ ticket: Ticket) -> Int? {
        let slot = Int(ticket & 0xFFFF_FFFF)
        guard slot < entries.count, generations[slot] == UInt32(ticket >> 32), entries[slot] != nil else { return nil }
        return slot
    }

    private static func ticket(slot: Int, generation: UInt32) -> Ticket {
        UInt64(generation) << 32 | UInt64(slot)
    }
}
