import AegisCluster
import Glibc

/// The lease terms and votes of every shard, in one file in data_dir
/// (`lease-terms`). The lease machine's `persistTerm` comes here and must be
/// durable before the action it guards is carried out: the file is written
/// whole to a temporary name, fdatasync'd, renamed over the old one, and the
/// directory fsync'd, so a crash leaves either the old file or the new one,
/// never a mixture and never a term older than one already acted on.
///
/// Format (text, so an operator can read it): a first line
/// `aegis-lease-terms 1`, then one line per shard with a term above 0:
/// `<shard> <term> <voted-for node id or ->`, then `end <line count>`. A file
/// that does not parse stops the start-up: guessing a term could go backwards.
///
/// Format 2 (`aegis-lease-terms 2`) adds each shard's replica config to its
/// line: `<shard> <term> <voted-for or -> <epoch> <voter count> <voters...>
/// <outgoing count or -> <outgoing...>` (node ids hold no spaces, so the
/// counts make the line unambiguous; epoch 0 with no voters: no config).
/// It is written only once some shard has a config, so a node that never
/// took part in a config change keeps a format 1 file that 0.2.0 can read
/// after a rollback. Both formats are read.
///
/// Beside it, while the node is blank for some shard, `lease-terms.blank`
/// lists those shards (`LeaseMachine.blankShards`): `aegis-blank-shards 1`,
/// one line of shard numbers, `end <count>`. It is written before any term
/// file that could outlive a blank life, so a restart before the refill
/// finds the node still blank (`LeaseMachine`'s `stillBlank`); it shrinks
/// as complete copies arrive and is removed once none is blank. Written
/// late it only keeps a shard blank longer. A damaged one makes every shard
/// blank, which costs availability, never safety.
///
/// Confined to the cluster loop's thread after start.
final class TermStore {
    static let fileName = "lease-terms"
    static let header = "aegis-lease-terms 1"
    static let headerWithConfigs = "aegis-lease-terms 2"
    static let newestFormat = 2
    /// Written beside the term file, and kept when only the term file is
    /// lost: it tells a data_dir of a node that voted from one written by a
    /// release before leases, which never voted (its upgrade is a first
    /// start for leases, not a wipe).
    static let markerName = "leases-enabled"
    static let markerText = "This data_dir belongs to a node that takes part in shard leases; without lease-terms beside it, the node starts as an empty learner.\n"

    static let blankFileName = fileName + ".blank"
    static let blankHeader = "aegis-blank-shards 1"

    /// What start-up found in data_dir.
    struct Loaded: Equatable {
        var terms: [Int: PersistedTerm]
        /// Shards an earlier life was still blank for (`lease-terms.blank`).
        var stillBlank: Set<Int> = []
        /// The node comes back with nothing it may safely vote with (see `load`).
        var emptyLearner: Bool
        /// data_dir was missing or empty: a first start, or a wipe of the
        /// whole directory, which looks the same (`LeaseMachine`'s
        /// `startedBlank`).
        var blank = false
        /// The terms were read back: the node ran in a cluster before and
        /// kept them, so its data is what its log replayed (see
        /// `LeaseSettings.restartStandBackMs`).
        var restarted = false
        /// One line for the log: what was found and what it means.
        var summary: String
    }

    let directory: String
    var path: String { directory + "/" + Self.fileName }
    var blankPath: String { directory + "/" + Self.blankFileName }
    private var terms: [Int: PersistedTerm]
    private(set) var writes = 0
    /// The shards the machine is blank for, as last told (`updateBlank`).
    private(set) var blankShards: Set<Int>
    /// What `lease-terms.blank` holds (empty: no file; all shards when it is
    /// damaged, so that it is rewritten only once a shard stops being blank).
    private var blankOnDisk: Set<Int>
    /// The term file exists: from here on the blank file must be kept.
    private var termFileOnDisk: Bool

    /// `blankShards`: the machine's at its start; `loaded`: what `load` found.
    init(directory: String, terms: [Int: PersistedTerm], blankShards: Set<Int> = [], loaded: Loaded? = nil) {
        self.directory = directory.hasSuffix("/") && directory.count > 1 ? String(directory.dropLast()) : directory
        self.terms = terms
        self.blankShards = blankShards
        blankOnDisk = loaded?.stillBlank ?? []
        termFileOnDisk = loaded?.restarted == true
    }

    /// Reads the terms back at start. How a wiped node is told apart:
    /// - the file is there: its terms and votes, not a learner;
    /// - the file is missing but the marker is there: the node took part in
    ///   leases before and lost what it voted, so it could vote twice in one
    ///   term: an empty learner;
    /// - the file and the marker are missing but data_dir holds other files
    ///   (a log, snapshots): written by a release before leases, which never
    ///   voted: terms 0, as at a first start;
    /// - data_dir is missing or empty: a first start, which a wipe of the
    ///   whole directory looks exactly like (docs/replication.md says what
    ///   that costs). Not a learner: a new cluster whose nodes all started
    ///   as learners could never elect anyone.
    static func load(directory: String, numShards: Int) throws(StartupError) -> Loaded {
        let store = TermStore(directory: directory, terms: [:])
        guard let text = readWhole(store.path) else {
            let others = otherEntries(in: store.directory)
            if others.contains(markerName) {
                return Loaded(terms: [:], emptyLearner: true,
                              summary: "no lease terms, but \(markerName) says this node took part in leases before: "
                                  + "it lost its votes, so it starts as an empty learner")
            }
            if others.isEmpty {
                return Loaded(terms: [:], emptyLearner: false, blank: true,
                              summary: "no lease terms in an empty data_dir: a first start (or a data_dir removed whole), every shard at term 0 and blank")
            }
            return Loaded(terms: [:], emptyLearner: false,
                          summary: "no lease terms and no \(markerName) beside \(others.count) other file(s) (\(others.prefix(3).joined(separator: ", "))): "
                              + "data of a release before leases, which never voted: every shard at term 0")
        }
        let terms = try parse(text, numShards: numShards, path: store.path)
        var loaded = Loaded(terms: terms, emptyLearner: false, restarted: true,
                            summary: "lease terms read back for \(terms.count) shard(s), highest \(terms.values.map(\.term).max() ?? 0)")
        if let blankText = readWhole(store.blankPath) {
            if let shards = parseBlank(blankText, numShards: numShards) {
                loaded.stillBlank = shards
                loaded.summary += "; still blank for \(shards.count) shard(s) (\(blankFileName): an earlier life started with an empty data_dir and had not been refilled)"
            } else {
                loaded.stillBlank = Set(0..<numShards)
                loaded.summary += "; \(blankFileName) is damaged, so every shard is taken as still blank: "
                    + "its votes count for less until complete copies of the shards arrive, which is safe"
            }
        }
        return loaded
    }

    /// The shards of a `lease-terms.blank` file; nil when it does not parse.
    static func parseBlank(_ text: String, numShards: Int) -> Set<Int>? {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count == 4, lines[0] == blankHeader, lines[3] == "" else { return nil }
        var shards = Set<Int>()
        for field in lines[1].split(separator: " ") {
            guard let shard = Int(field), (0..<numShards).contains(shard), shards.insert(shard).inserted else { return nil }
        }
        guard lines[2] == "end \(shards.count)" else { return nil }
        return shards
    }

    static func renderBlank(_ shards: Set<Int>) -> String {
        blankHeader + "\n" + shards.sorted().map(String.init).joined(separator: " ") + "\nend \(shards.count)\n"
    }

    /// The machine's blank shards now (they only shrink). Written when the
    /// term file exists; a failure leaves the older, larger set on disk.
    func updateBlank(_ current: Set<Int>) throws(StartupError) {
        blankShards.formIntersection(current)
        guard termFileOnDisk else { return }
        try writeBlankFile()
    }

    private func writeBlankFile() throws(StartupError) {
        guard blankShards != blankOnDisk else { return }
        if blankShards.isEmpty {
            guard unlink(blankPath) == 0 || errno == ENOENT else { throw failure("unlink", blankPath) }
            try syncDirectory()
        } else {
            try writeDurably(Self.renderBlank(blankShards), to: blankPath)
        }
        blankOnDisk = blankShards
    }

    static func parse(_ text: String, numShards: Int, path: String) throws(StartupError) -> [Int: PersistedTerm] {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        func bad(_ why: String) -> StartupError {
            StartupError("\(path) is damaged (\(why)); it holds the lease terms this node acted on. "
                + "Restore it, or remove the whole data_dir to start this node as new")
        }
        if let first = lines.first, let format = newerFormat(first) {
            throw StartupError("\(path) is in lease-terms format \(format), written by a newer release of aegiskv; "
                + "this release (\(BuildInfo.version)) reads formats 1 to \(newestFormat). Start the release that wrote it, or a newer one "
                + "(docs/upgrades.md, \"Lease terms\"); do not remove the file, it holds the votes this node cast")
        }
        guard let first = lines.first, first == header || first == headerWithConfigs else { throw bad("no header line") }
        let withConfigs = first == headerWithConfigs
        guard lines.count >= 3, lines.last == "" else { throw bad("no end line") }
        let body = lines[1..<(lines.count - 2)]
        guard lines[lines.count - 2] == "end \(body.count)" else { throw bad("the end line does not count the lines") }
        var terms: [Int: PersistedTerm] = [:]
        for line in body {
            let fields = line.split(separator: " ").map(String.init)
            guard fields.count == 3 || (withConfigs && fields.count >= 6), let shard = Int(fields[0]),
                  (0..<numShards).contains(shard),
                  let term = UInt32(fields[1]), term > 0, terms[shard] == nil else { throw bad("line \"\(line)\"") }
            let voted: NodeID?
            if fields[2] == "-" {
                voted = nil
            } else if let node = NodeID(fields[2]) {
                voted = node
            } else {
                throw bad("line \"\(line)\"")
            }
            var config: ShardConfig?
            if withConfigs {
                guard let parsed = parseConfig(fields[3...]) else { throw bad("line \"\(line)\"") }
                config = parsed.config
            }
            terms[shard] = PersistedTerm(term: term, votedFor: voted, config: config)
        }
        return terms
    }

    /// `<epoch> <voter count> <voters...> <outgoing count or -> <outgoing...>`:
    /// `.absent` for epoch 0 with no voters, nil when the fields do not say
    /// exactly that or name an invalid config (ShardConfig's invariants).
    private static func parseConfig(_ fields: ArraySlice<String>) -> ConfigField? {
        var rest = fields
        guard let epoch = rest.popFirst().flatMap({ UInt32($0) }),
              let voterCount = rest.popFirst().flatMap({ Int($0) }), voterCount >= 0, rest.count > voterCount else { return nil }
        let voters = rest.prefix(voterCount).compactMap { NodeID($0) }
        guard voters.count == voterCount else { return nil }
        rest = rest.dropFirst(voterCount)
        var outgoing: [NodeID]?
        let outgoingMarker = rest.popFirst()
        if outgoingMarker != "-" {
            guard let count = outgoingMarker.flatMap({ Int($0) }), count > 0, rest.count == count else { return nil }
            let nodes = rest.compactMap { NodeID($0) }
            guard nodes.count == count else { return nil }
            outgoing = nodes
            rest = []
        }
        guard rest.isEmpty else { return nil }
        if epoch == 0 { return voterCount == 0 && outgoing == nil ? .absent : nil }
        return ShardConfig(epoch: epoch, voters: voters, outgoing: outgoing).map(ConfigField.present)
    }

    private enum ConfigField {
        case absent
        case present(ShardConfig)

        var config: ShardConfig? {
            if case .present(let config) = self { return config }
            return nil
        }
    }

    /// The format number of a header line from a later release, so a
    /// rollback names what it found instead of calling the file damaged.
    private static func newerFormat(_ line: String) -> Int? {
        let fields = line.split(separator: " ")
        guard fields.count == 2, fields[0] == "aegis-lease-terms", let format = Int(fields[1]),
              format > newestFormat else { return nil }
        return format
    }

    static func render(_ terms: [Int: PersistedTerm]) -> String {
        let withConfigs = terms.values.contains { $0.config != nil }
        var text = (withConfigs ? headerWithConfigs : header) + "\n"
        for shard in terms.keys.sorted() {
            let record = terms[shard]!
            text += "\(shard) \(record.term) \(record.votedFor?.name ?? "-")"
            if withConfigs { text += " " + render(record.config) }
            text += "\n"
        }
        return text + "end \(terms.count)\n"
    }

    private static func render(_ config: ShardConfig?) -> String {
        guard let config else { return "0 0 -" }
        var fields = ["\(config.epoch)", "\(config.voters.count)"] + config.voters.map(\.name)
        if let outgoing = config.outgoing {
            fields += ["\(outgoing.count)"] + outgoing.map(\.name)
        } else {
            fields.append("-")
        }
        return fields.joined(separator: " ")
    }

    /// Makes every record durable before returning; on failure nothing of
    /// the batch may be acted on (the caller stops leasing).
    func persist(_ records: [(shard: Int, record: PersistedTerm)]) throws(StartupError) {
        for (shard, record) in records {
            var record = record
            if let old = terms[shard] {
                precondition(record.term >= old.term, "a persisted term went backwards")
                // A config is replaced by a newer epoch, never dropped by a
                // term bump that does not carry one.
                if let kept = old.config {
                    if let new = record.config {
                        precondition(new.epoch >= kept.epoch, "a persisted config epoch went backwards")
                    } else {
                        record.config = kept
                    }
                }
            }
            terms[shard] = record
        }
        try writeBlankFile()
        try writeDurably(Self.render(terms))
        termFileOnDisk = true
        writes += 1
    }

    var directoryExists: Bool { DataDirectoryLock.isDirectory(directory) }

    /// Creates data_dir when missing (one level) and writes the current
    /// terms, so a later start finds the file (the learner test above).
    /// Called at start when data_dir exists, else when the node first takes
    /// part in a cluster.
    func writeInitial() throws(StartupError) {
        if mkdir(directory, 0o755) != 0 && errno != EEXIST {
            throw StartupError("cannot create data_dir \(directory) for the lease terms: \(SystemError(operation: "mkdir", code: errno))")
        }
        try writeDurably(Self.markerText, to: directory + "/" + Self.markerName)
        try writeBlankFile()
        try writeDurably(Self.render(terms))
        termFileOnDisk = true
    }

    private func writeDurably(_ text: String) throws(StartupError) {
        try writeDurably(text, to: path)
    }

    private func writeDurably(_ text: String, to path: String) throws(StartupError) {
        // Named by process: two nodes wrongly given one data_dir must not
        // write into each other's half-written file.
        let temporary = path + ".tmp.\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw failure("open", temporary) }
        var bytes = Array(text.utf8)
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress! + written, $0.count - written) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                let error = failure("write", temporary)
                _ = close(fd)
                throw error
            }
            written += n
        }
        bytes.removeAll()
        guard fdatasync(fd) == 0 else {
            let error = failure("fdatasync", temporary)
            _ = close(fd)
            throw error
        }
        _ = close(fd)
        guard rename(temporary, path) == 0 else { throw failure("rename", path) }
        try syncDirectory()
    }

    private func syncDirectory() throws(StartupError) {
        let dir = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dir >= 0 else { throw failure("open", directory) }
        defer { _ = close(dir) }
        guard fsync(dir) == 0 else { throw failure("fsync", directory) }
    }

    private func failure(_ operation: String, _ file: String) -> StartupError {
        StartupError("lease terms: \(operation) \(file): \(SystemError(operation: operation, code: errno))")
    }

    private static func readWhole(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { _ = close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Names in `directory` other than . and .. and this store's own files.
    private static func otherEntries(in directory: String) -> [String] {
        guard let dir = opendir(directory) else { return [] }
        defer { _ = closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name == "." || name == ".." || name.hasPrefix(fileName) || name == DataDirectoryLock.fileName { continue }
            names.append(name)
        }
        return names.sorted()
    }
}
