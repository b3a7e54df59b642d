/// Writes that arrive from elsewhere with their version already assigned:
/// a primary's writes applied by a follower, a catch-up stream, a repair.
///
/// Each is applied only when it is newer than what the key holds, so
/// applying a stream twice, or an old write after a newer one, changes
/// nothing. What "newer" can see depends on the shard:
/// - Not replicated (no tombstones, replication_factor 1): the version of
///   the key's live entry only. A deleted or expired key keeps no version,
///   so a SET for an absent key is always applied.
/// - Replicated (`keepTombstones`): also the version of an expired entry
///   still in the table, the key's tombstone (its delete's version), and the
///   shard's absent floor (its last FLUSHALL, or the newest tombstone let go
///   before every replica acknowledged it). A SET older than any of them is
///   refused, so a delete is never undone by an older write arriving late.
public enum ReplicatedWrite {
    case set(value: UnsafeRawBufferPointer, expiryMs: Int64)
    case delete
}

extension ShardStore {
    /// Applies `write` to `key` when `version` is newer than what the shard
    /// knows of the key (see `ReplicatedWrite`). Returns whether a visible
    /// value changed (a delete of an absent key only leaves a tombstone:
    /// false). Either way the shard's term and sequence move up to
    /// `version`, so a write made here later is newer than it.
    @inlinable @discardableResult
    public func applyIfNewer(_ key: UnsafeRawBufferPointer, hash: UInt64, _ write: ReplicatedWrite,
                             version: EntryVersion, nowMs: Int64) -> Bool {
        state.pointee.applyIfNewer(key, hash: hash, write, version: version, nowMs: nowMs)
    }

    /// The version `applyIfNewer` measures a write to `key` against: its
    /// entry's (expired or not, when the shard keeps tombstones), else its
    /// tombstone's or the shard's absent floor, else `.zero`. A read at
    /// read_quorum >= 2 compares replicas by it.
    public func knownVersion(_ key: UnsafeRawBufferPointer, hash: UInt64, nowMs: Int64) -> EntryVersion {
        state.pointee.knownVersion(key, hash: hash, nowMs: nowMs)
    }

    /// What a read at read_quorum >= 2 compares this replica's state of
    /// `key` by: `knownVersion`, and for an absent key at least the newest
    /// tombstone let go once every replica had acknowledged it
    /// (`Tombstones.acknowledgedFloor`).
    public func readQuorumVersion(_ key: UnsafeRawBufferPointer, hash: UInt64, nowMs: Int64) -> EntryVersion {
        state.pointee.readQuorumVersion(key, hash: hash, nowMs: nowMs)
    }

    /// A FLUSHALL made elsewhere at `version`: removes every entry at or
    /// below it (all of them when it is newer than the shard's last write),
    /// keeps newer ones, and refuses every later replicated write at or
    /// below it for keys that are absent. Returns whether it changed
    /// anything: it was newer than the last write, or removed an entry.
    @discardableResult
    public func applyFlushIfNewer(version: EntryVersion) -> Bool {
        state.pointee.flush(at: version)
    }

    /// The start of a shard stream from the primary: everything here goes
    /// (entries, tombstones, the absent floor, which a history the copy
    /// replaces may have raised above the copy's own entries). The streamed
    /// entries then come through `applyIfNewer`, and `completeStream` ends it.
    public func replaceForStream() {
        state.pointee.replaceForStream()
    }

    /// The last slice of a stream taken at `streamStart` was applied: the
    /// shard holds the primary's copy as of then. The absent floor becomes
    /// `streamStart` (a key the stream did not bring was absent on the
    /// primary then: a replicated write for it at or below that is refused),
    /// and the last write is `streamStart`, so the primary's writes after it
    /// (a FLUSHALL included) apply.
    public func completeStream(streamStart: EntryVersion) {
        state.pointee.completeStream(streamStart: streamStart)
    }

    /// Makes this shard remember deleted keys (replication_factor > 1),
    /// bounded by `limits`. Called once, before the shard takes writes.
    public func keepTombstones(limits: TombstoneLimits) {
        precondition(state.pointee.tombstones == nil, "tombstones are switched on once")
        state.pointee.tombstones = Tombstones(limits: limits)
    }

    /// Forgets the tombstones at or below `version`: every replica of the
    /// shard has applied everything up to it.
    public func dropTombstones(acknowledgedThrough version: EntryVersion) {
        guard state.pointee.tombstones != nil else { return }
        state.pointee.addToLedger(state.pointee.tombstones!.dropAcknowledged(version, usable: state.pointee.usable))
    }

    /// Deleted keys remembered now (0 when the shard keeps no tombstones).
    public var tombstoneCount: Int { state.pointee.tombstones?.count ?? 0 }

    /// Tombstones let go by the size or age bound before every replica acknowledged them.
    public var tombstonesForgotten: Int { state.pointee.tombstones?.forgotten ?? 0 }
}

extension ShardState {
    /// What "newer" is measured against: the version of the key's live
    /// entry; a shard that keeps tombstones (replicated) also remembers its
    /// expired entry and its deletes.
    @usableFromInline
    mutating func applyIfNewer(_ key: UnsafeRawBufferPointer, hash: UInt64, _ write: ReplicatedWrite,
                               version: EntryVersion, nowMs: Int64) -> Bool {
        let (present, known) = presence(key, hash: hash, nowMs: nowMs)
        let remembersDeletes = tombstones != nil
        if known >= version {
            adoptClock(version)
            return false
        }
        switch write {
        case .set(let value, let expiryMs):
            adopt(version)
            _ = set(key, hash: hash, value: value, expiryMs: expiryMs, nowMs: nowMs, version: version)
            return true
        case .delete:
            if present && delete(key, hash: hash, nowMs: nowMs, version: version) { return true }
            // Absent or expired: nothing visible changes, but with tombstones
            // the delete's version must still stop an older SET arriving after it.
            if remembersDeletes { rememberDeleted(key, hash: hash, version: version, nowMs: nowMs) }
            adoptClock(version)
            return false
        }
    }

    /// Whether `key` counts as present for a replicated write, and the version such a write must exceed.
    @usableFromInline
    mutating func presence(_ key: UnsafeRawBufferPointer, hash: UInt64, nowMs: Int64) -> (present: Bool, known: EntryVersion) {
        let (i, found) = find(key, hash)
        let remembersDeletes = tombstones != nil
        let live = found && !Self.entry(slots[i]).isExpired(nowMs)
        let present = remembersDeletes ? found : live
        let known: EntryVersion = present ? self.version(of: Self.entry(slots[i]))
            : remembersDeletes ? tombstones!.barrier(key, hash: hash) : .zero
        return (present, known)
    }

    @usableFromInline
    mutating func knownVersion(_ key: UnsafeRawBufferPointer, hash: UInt64, nowMs: Int64) -> EntryVersion {
        presence(key, hash: hash, nowMs: nowMs).known
    }

    mutating func readQuorumVersion(_ key: UnsafeRawBufferPointer, hash: UInt64, nowMs: Int64) -> EntryVersion {
        let (present, known) = presence(key, hash: hash, nowMs: nowMs)
        guard !present, let tombstones else { return known }
        return Swift.max(known, tombstones.acknowledgedFloor)
    }

    mutating func replaceForStream() {
        assert(!visiting, "ShardStore mutated from inside a scan visitor")
        mutations &+= 1
        dropEverything()
        if tombstones != nil { addToLedger(tombstones!.replace(floor: .zero)) }
        lastVersion = .zero
    }

    mutating func completeStream(streamStart: EntryVersion) {
        // A table the stream's keys grew from an estimate too high (keys
        // chosen for low hashes; `noteInsertOrder`) shrinks now.
        shrinkIfSparse()
        if tombstones != nil { addToLedger(tombstones!.reset(floor: streamStart)) }
        adoptClock(streamStart)
        lastVersion = streamStart
    }

    /// Moves term and sequence up to `version` without calling it the last
    /// write (nothing was written).
    @inline(__always)
    mutating func adoptClock(_ version: EntryVersion) {
        if version.term > term { term = version.term }
        if version.seq > seq { seq = version.seq }
    }
}
