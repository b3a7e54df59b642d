/// Writes that arrive from elsewhere with their version already assigned:
/// a primary's writes applied by a follower, a catch-up stream, a repair.
///
/// Each is applied only when it is newer than what the key holds, so
/// applying a stream twice, or an old write after a newer one, changes
/// nothing. What "newer" can see: the version of the key's live entry. A
/// deleted or expired key keeps no version (no tombstones), so a SET for
/// an absent key is always applied; the replication stream must deliver
/// one shard's writes in version order (it does: ordered per shard), which
/// is what keeps a late SET from bringing back a key deleted after it.
public enum ReplicatedWrite {
    case set(value: UnsafeRawBufferPointer, expiryMs: Int64)
    case delete
}

extension ShardStore {
    /// Applies `write` to `key` when `version` is newer than the version of
    /// the key's live entry, or the key has none (for a SET). Returns
    /// whether the shard changed. Either way the shard's term and sequence
    /// move up to `version`, so a write made here later is newer than it.
    @inlinable @discardableResult
    public func applyIfNewer(_ key: UnsafeRawBufferPointer, hash: UInt64, _ write: ReplicatedWrite,
                             version: EntryVersion, nowMs: Int64) -> Bool {
        state.pointee.applyIfNewer(key, hash: hash, write, version: version, nowMs: nowMs)
    }
}

extension ShardState {
    @usableFromInline
    mutating func applyIfNewer(_ key: UnsafeRawBufferPointer, hash: UInt64, _ write: ReplicatedWrite,
                               version: EntryVersion, nowMs: Int64) -> Bool {
        let (i, found) = find(key, hash)
        let live = found && !Self.entry(slots[i]).isExpired(nowMs)
        if live && self.version(of: Self.entry(slots[i])) >= version {
            adoptClock(version)
            return false
        }
        switch write {
        case .set(let value, let expiryMs):
            adopt(version)
            _ = set(key, hash: hash, value: value, expiryMs: expiryMs, nowMs: nowMs, version: version)
            return true
        case .delete:
            if !live {
                adoptClock(version)
                return false
            }
            return delete(key, hash: hash, nowMs: nowMs, version: version)
        }
    }

    /// Moves term and sequence up to `version` without calling it the last
    /// write (nothing was written).
    @inline(__always)
    mutating func adoptClock(_ version: EntryVersion) {
        if version.term > term { term = version.term }
        if version.seq > seq { seq = version.seq }
    }
}
