import CSupport
import Glibc
import Logging

/// Moves a log written under another reactor count into this node's layout,
/// once, at start. `reactors` defaults to the CPUs the process may use, so a node moved to
/// a bigger or smaller machine would otherwise refuse to start on its own log.
///
/// A reactor's log holds the keys of the shards it owned, and shard numbers
/// do not change with the reactor count, only which reactor owns a shard.
/// So every old log is replayed, each record going to the new owner of its
/// shard (a key lives in one old log only, so its records keep their order),
/// and then each new reactor's state is written as a snapshot:
///
///     <wal_dir>/relayout.tmp/   being written; removed if found at start
///     <wal_dir>/relayout/       committed (renamed from relayout.tmp and
///                               synced): reactor-<i>/snapshot-1.snap, layout
///
/// Once `relayout/` exists the old logs are no longer needed: the old
/// `reactor-*` directories are replaced by the new ones and `layout` is
/// rewritten. Each of those steps can be repeated, so a crash at any point
/// leaves either the old logs whole or a committed `relayout/` that the next
/// start finishes moving into place.
///
/// A changed `num_shards` is still refused: it moves keys between shards,
/// which the cluster's placement depends on, not only this node's.
enum WALRelayout {
    static let stagingName = "relayout.tmp"
    static let committedName = "relayout"

    /// Re-lays out the log when `layout` names another reactor count.
    /// Runs before any reactor thread starts; the reactors' shards receive
    /// the replayed state, as in normal recovery.
    static func runIfNeeded(walDirectory: String, reactors: [Reactor], node: NodeContext, logger: Logger) throws(WALError) {
        try finishCommitted(walDirectory: walDirectory, logger: logger)
        removeTree(walDirectory + "/" + stagingName)
        guard let recorded = WALLayout.recorded(walDirectory: walDirectory),
              recorded.shards == node.config.numShards, recorded.reactors != reactors.count else { return }
        let started = aegis_monotonic_ns()
        let nowMs = aegis_now_ms_coarse()
        var records = 0
        for oldIndex in 0..<recorded.reactors {
            let directory = WALDirectory(walDirectory: walDirectory, reactor: oldIndex)
            let report = try WALRecovery(directory: directory, logger: logger).replay { record in
                // Every record names its shard, and the shard count is unchanged.
                guard record.shard < node.shardOwner.count else { return }
                reactors[node.shardOwner[record.shard]].applyReplayed(record, nowMs: nowMs)
            }
            records += report.records + report.snapshotEntries
        }
        let staging = walDirectory + "/" + stagingName
        try WALDirectory.create(staging)
        var entries = 0
        for reactor in reactors {
            let directory = WALDirectory(walDirectory: staging, reactor: reactor.index)
            try WALDirectory.create(directory.path)
            entries += try reactor.writeSnapshotNow(to: directory, number: 1, nowMs: nowMs)
            try WALDirectory.syncDirectory(directory.path)
        }
        try WALLayout.write(walDirectory: staging, reactors: reactors.count, shards: node.config.numShards)
        try WALDirectory.syncDirectory(staging)
        if rename(staging, walDirectory + "/" + committedName) != 0 { throw .system("rename", staging, errno) }
        try WALDirectory.syncDirectory(walDirectory)
        try finishCommitted(walDirectory: walDirectory, logger: logger)
        let seconds = Double(aegis_monotonic_ns() - started) / 1e9
        logger.notice("write-ahead log re-laid out for a new reactor count", metadata: [
            "from_reactors": "\(recorded.reactors)", "to_reactors": "\(reactors.count)",
            "records_read": "\(records)", "entries_written": "\(entries)",
            "seconds": "\((seconds * 1000).rounded() / 1000)",
        ])
    }

    /// Moves a committed re-layout into place (idempotent; see the type's notes).
    static func finishCommitted(walDirectory: String, logger: Logger) throws(WALError) {
        let committed = walDirectory + "/" + committedName
        guard let newLayout = WALLayout.recorded(walDirectory: committed) else {
            // The staging directory is renamed to `committed` only after its
            // layout file was synced, so a committed directory without one
            // already had its layout moved into place: only the empty
            // directory is left.
            removeTree(committed)
            return
        }
        for name in WALDirectory.names(in: walDirectory) ?? [] where name.hasPrefix("reactor-") {
            guard let index = Int(name.dropFirst("reactor-".count)) else { continue }
            // An old log: beyond the new reactor count, or its replacement still waits in `committed`.
            if index >= newLayout.reactors || access(committed + "/" + name, F_OK) == 0 {
                removeTree(walDirectory + "/" + name)
            }
        }
        for index in 0..<newLayout.reactors {
            let name = "reactor-\(index)"
            if access(committed + "/" + name, F_OK) == 0 && rename(committed + "/" + name, walDirectory + "/" + name) != 0 {
                throw .system("rename", committed + "/" + name, errno)
            }
        }
        try WALDirectory.syncDirectory(walDirectory)
        if rename(committed + "/layout", walDirectory + "/layout") != 0 { throw .system("rename", committed + "/layout", errno) }
        try WALDirectory.syncDirectory(walDirectory)
        rmdir(committed)
        try WALDirectory.syncDirectory(walDirectory)
        logger.info("re-laid out write-ahead log moved into place", metadata: ["wal_dir": "\(walDirectory)", "reactors": "\(newLayout.reactors)"])
    }

    /// Removes a directory of plain files (a reactor's log, or the staging
    /// tree of reactor directories), then the directory itself.
    static func removeTree(_ path: String) {
        for name in WALDirectory.names(in: path) ?? [] {
            let child = path + "/" + name
            var info = stat()
            if lstat(child, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR {
                removeTree(child)
            } else {
                unlink(child)
            }
        }
        rmdir(path)
    }
}
