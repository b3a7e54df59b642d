/// The reactor's client connections: a slot table with generations, and
/// the connections that have replies to write in this loop iteration.
///
/// A connection's epoll token and every reply forwarded for it name its
/// slot and generation, so a reply that arrives after its connection closed
/// and the slot was reused is recognised and dropped.
///
/// Invariants (checked in debug builds where they change):
/// - `connections[s]` is nil exactly when `s` is in `freeSlots`;
/// - the connection in slot `s` has index `s` and generation `generations[s]`;
///   reusing a slot bumps its generation;
/// - `dirty` holds each connection at most once: exactly those whose
///   `isDirty` is set.
///
/// Confined to its reactor's thread, like the connections it holds.
struct ConnectionTable {
    private(set) var connections: [Connection?] = []

    /// Every open connection (CLIENT LIST, CLIENT KILL).
    var allConnections: [Connection] { connections.compactMap { $0 } }
    private var generations: [UInt32] = []
    private var freeSlots: [Int] = []
    private(set) var dirty: [Connection] = []

    /// The open connection in `slot` if it still has `generation`.
    @inline(__always) func connection(slot: Int, generation: UInt32) -> Connection? {
        guard slot < connections.count, let connection = connections[slot], connection.generation == generation else { return nil }
        connection.assertOwnedByCaller()
        return connection
    }

    /// A free slot and the generation a new connection there gets.
    mutating func reserveSlot() -> (slot: Int, generation: UInt32) {
        if let reused = freeSlots.popLast() {
            generations[reused] &+= 1
            return (reused, generations[reused])
        }
        connections.append(nil)
        generations.append(0)
        return (connections.count - 1, 0)
    }

    /// Puts a connection made for a slot `reserveSlot` returned into it.
    mutating func install(_ connection: Connection) {
        let slot = Int(connection.index)
        assert(connections[slot] == nil && connection.generation == generations[slot], "a connection installed over another")
        connections[slot] = connection
    }

    /// Frees a closed connection's slot for reuse.
    mutating func remove(_ connection: Connection) {
        let slot = Int(connection.index)
        assert(connections[slot] === connection, "a connection removed from a slot it does not hold")
        connections[slot] = nil
        freeSlots.append(slot)
    }

    @inline(__always) mutating func markDirty(_ connection: Connection) {
        if !connection.isDirty {
            connection.isDirty = true
            dirty.append(connection)
        }
    }

    /// After every dirty connection was flushed (each had `isDirty` cleared).
    mutating func clearDirty() {
        dirty.removeAll(keepingCapacity: true)
    }
}
