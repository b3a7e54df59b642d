/// How many of something each key holds (handshakes per client address,
/// pending accepts per peer address), bounded per key. A key is stored only
/// while it holds at least one, so the table never outgrows what is open.
///
/// Invariant: every `give` matches an earlier successful `take` of its key.
struct PerKeyCount<Key: Hashable> {
    private var held: [Key: Int] = [:]

    /// Counts one more for `key`; false (nothing counted) when it holds `limit` already.
    mutating func take(_ key: Key, limit: Int) -> Bool {
        let count = held[key, default: 0]
        guard count < limit else { return false }
        held[key] = count + 1
        return true
    }

    /// Gives back one that `take` counted for `key`.
    mutating func give(_ key: Key) {
        guard let count = held[key] else {
            assertionFailure("given back for a key that holds none")
            return
        }
        held[key] = count > 1 ? count - 1 : nil
    }
}
