import AegisConfig
import Glibc

/// The threads of this process from /proc/self/task: the Swift equivalent of
/// the runbook's Go goroutine dump (`/debug/pprof/goroutine`). A reactor
/// that is stuck shows as running with its CPU time climbing, or its loop
/// counter in /debug/reactors standing still.
enum ThreadReport {
    struct Thread {
        var id: Int
        var name: String
        var state: String
        var cpuSeconds: Double
    }

    static func read() -> [Thread] {
        guard let directory = opendir("/proc/self/task") else { return [] }
        defer { closedir(directory) }
        var threads: [Thread] = []
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.baseAddress!.assumingMemoryBound(to: CChar.self)) }
            guard let id = Int(name) else { continue }
            let comm = (Platform.readText("/proc/self/task/\(id)/comm") ?? "").split(separator: "\n").first.map(String.init) ?? "?"
            let stat = Platform.readText("/proc/self/task/\(id)/stat") ?? ""
            // Fields after the parenthesised name: state is the first, utime and stime the 12th and 13th.
            guard let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 13 else { continue }
            let cpu = (Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)
            threads.append(Thread(id: id, name: comm, state: stateName(String(fields[0])), cpuSeconds: cpu / ticks))
        }
        return threads.sorted { $0.id < $1.id }
    }

    static func text(_ threads: [Thread]) -> String {
        var out = "threads: \(threads.count)\n\n"
        for thread in threads {
            out += "thread \(thread.id) [\(thread.name)] \(thread.state), cpu \(thread.cpuSeconds) s\n"
        }
        return out
    }

    private static func stateName(_ code: String) -> String {
        switch code {
        case "R": return "running"
        case "S": return "sleeping"
        case "D": return "waiting for I/O"
        case "T", "t": return "stopped"
        case "Z": return "zombie"
        default: return code
        }
    }
}
