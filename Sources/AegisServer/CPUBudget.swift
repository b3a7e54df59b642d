import AegisConfig
import CSupport

/// How many CPUs this process may really use, for the default reactor count.
///
/// "Online CPUs" overstates it whenever the operator has narrowed the
/// process: `taskset`, systemd `CPUAffinity=` or a cpuset shrink the affinity
/// mask, and a container's CPU limit (cgroup v2 `cpu.max`, v1
/// `cpu.cfs_quota_us`) caps the time all threads together may run. More
/// reactors than that only take turns on the same CPUs, and every turn is a
/// context switch that a request crossing between reactors then waits for
/// (`perf/thread-cost` measures what that costs).
struct CPUBudget: Equatable {
    var online: Int
    var affinity: Int
    /// CPUs' worth of time the cgroup quota allows (nil: no quota).
    var quota: Double?

    /// One reactor per usable CPU: the affinity mask, capped by the quota
    /// rounded up (a quota of 1.5 CPUs still lets two threads run at once).
    var reactors: Int {
        var count = affinity
        if let quota { count = min(count, Int(quota.rounded(.up))) }
        return max(count, 1)
    }

    static func ofThisProcess() -> CPUBudget {
        CPUBudget(
            online: Int(aegis_online_cpus()), affinity: Int(aegis_affinity_cpus()),
            quota: quotaCPUs(procSelfCgroup: Platform.readText("/proc/self/cgroup") ?? "", read: { Platform.readText($0) }))
    }

    /// The tightest CPU quota on the way from this process's cgroup up to the
    /// root (a limit may sit on a parent slice), in CPUs; nil when none is set.
    /// `read` returns a file's text or nil; the cgroup file systems are looked
    /// up at their usual mount points under /sys/fs/cgroup.
    static func quotaCPUs(procSelfCgroup: String, read: (String) -> String?) -> Double? {
        var tightest: Double?
        func consider(_ cpus: Double?) {
            if let cpus, cpus > 0 { tightest = min(tightest ?? cpus, cpus) }
        }
        for line in procSelfCgroup.split(separator: "\n") {
            // hierarchy-ID:controller-list:path
            let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            let controllers = fields[1].split(separator: ",")
            let path = String(fields[2])
            if fields[0] == "0" && fields[1].isEmpty {
                for directory in ancestors(of: path, under: "/sys/fs/cgroup") {
                    consider(read(directory + "/cpu.max").flatMap(parseCPUMax))
                }
            } else if controllers.contains("cpu") {
                for mount in ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/cpuacct,cpu"] {
                    for directory in ancestors(of: path, under: mount) {
                        guard let quota = read(directory + "/cpu.cfs_quota_us"),
                              let period = read(directory + "/cpu.cfs_period_us") else { continue }
                        consider(parseCFS(quota: quota, period: period))
                    }
                }
            }
        }
        return tightest
    }

    /// `max 100000` (no limit) or `150000 100000` (1.5 CPUs).
    static func parseCPUMax(_ text: String) -> Double? {
        let fields = text.split(whereSeparator: \.isWhitespace)
        guard fields.count >= 2, fields[0] != "max", let quota = Double(fields[0]), let period = Double(fields[1]),
              quota > 0, period > 0 else { return nil }
        return quota / period
    }

    /// cgroup v1: quota -1 means no limit.
    static func parseCFS(quota: String, period: String) -> Double? {
        guard let quota = firstNumber(quota), let period = firstNumber(period), quota > 0, period > 0 else { return nil }
        return quota / period
    }

    private static func firstNumber(_ text: String) -> Double? {
        text.split(whereSeparator: \.isWhitespace).first.flatMap { Double($0) }
    }

    /// `/a/b` under `/sys/fs/cgroup` → the directories of `/a/b`, `/a` and the root.
    static func ancestors(of path: String, under mount: String) -> [String] {
        var components = path.split(separator: "/").map(String.init)
        var directories: [String] = []
        while true {
            directories.append(([mount] + components).joined(separator: "/"))
            if components.isEmpty { return directories }
            components.removeLast()
        }
    }
}
