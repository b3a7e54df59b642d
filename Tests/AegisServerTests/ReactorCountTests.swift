import Foundation
import Glibc
import Testing

@testable import AegisServer

/// The default reactor count follows the CPUs the process may use, not the
/// machine's online CPUs.
struct ReactorCountTests {
    @Test func cgroupV2QuotaIsTheTightestOnTheWayToTheRoot() {
        let files = [
            "/sys/fs/cgroup/system.slice/cpu.max": "300000 100000\n",
            "/sys/fs/cgroup/system.slice/aegiskv.service/cpu.max": "max 100000\n",
        ]
        let quota = CPUBudget.quotaCPUs(procSelfCgroup: "0::/system.slice/aegiskv.service\n", read: { files[$0] })
        #expect(quota == 3.0)

        let nested = [
            "/sys/fs/cgroup/kubepods/cpu.max": "800000 100000\n",
            "/sys/fs/cgroup/kubepods/pod1/cpu.max": "150000 100000\n",
        ]
        #expect(CPUBudget.quotaCPUs(procSelfCgroup: "0::/kubepods/pod1\n", read: { nested[$0] }) == 1.5)
        #expect(CPUBudget.quotaCPUs(procSelfCgroup: "0::/\n", read: { _ in "max 100000" }) == nil)
    }

    @Test func cgroupV1QuotaIsReadFromTheCPUController() {
        let files = [
            "/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "50000\n",
            "/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
            "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
            "/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        ]
        let cgroup = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n"
        #expect(CPUBudget.quotaCPUs(procSelfCgroup: cgroup, read: { files[$0] }) == 0.5)
        // No quota anywhere (this VM's case: -1 at the root).
        #expect(CPUBudget.quotaCPUs(procSelfCgroup: "4:cpu,cpuacct:/\n", read: { files[$0] }) == nil)
    }

    @Test func malformedQuotaFilesMeanNoQuota() {
        #expect(CPUBudget.parseCPUMax("") == nil)
        #expect(CPUBudget.parseCPUMax("max") == nil)
        #expect(CPUBudget.parseCPUMax("0 100000") == nil)
        #expect(CPUBudget.parseCPUMax("abc 100000") == nil)
        #expect(CPUBudget.parseCFS(quota: "-1", period: "100000") == nil)
        #expect(CPUBudget.parseCFS(quota: "25000", period: "0") == nil)
    }

    @Test func reactorsAreTheAffinityCappedByTheQuotaRoundedUp() {
        #expect(CPUBudget(online: 8, affinity: 8, quota: nil).reactors == 8)
        #expect(CPUBudget(online: 8, affinity: 2, quota: nil).reactors == 2)
        #expect(CPUBudget(online: 8, affinity: 8, quota: 1.5).reactors == 2)
        #expect(CPUBudget(online: 8, affinity: 8, quota: 0.25).reactors == 1)
        #expect(CPUBudget(online: 8, affinity: 3, quota: 6).reactors == 3)
    }

    /// The real binary under `taskset -c 0` starts one reactor thread and says
    /// why in its serving line.
    @Test func aNodeRestrictedToOneCPUStartsOneReactor() throws {
        let taskset = ["/usr/bin/taskset", "/bin/taskset"].first { FileManager.default.isExecutableFile(atPath: $0) }
        try #require(taskset != nil, "taskset (util-linux) is missing")
        let node = try SpawnedNode(arguments: [], launcher: [taskset!, "-c", "0"])
        // The port opens before the reactor threads start; "serving" comes
        // after they are created, but each names itself once it first runs,
        // which on a loaded machine can be later.
        #expect(node.waitForLog { $0.contains(" notice serving ") })
        var threads = reactorThreads(node.pid)
        let namingDeadline = Date().addingTimeInterval(10)
        while threads < 1 && Date() < namingDeadline {
            usleep(20_000)
            threads = reactorThreads(node.pid)
        }
        let redis = try runTool("redis-cli", ["-p", "\(node.port)", "SET", "k", "v"])
        #expect(node.stop() == 0)
        #expect(threads == 1)
        #expect(redis.output.trimmingCharacters(in: .whitespacesAndNewlines) == "OK")
        let serving = node.logLines().first { $0.contains(" notice serving ") } ?? ""
        #expect(serving.contains("reactors=1") && serving.contains("cpus_allowed=1"), "\(serving)")
        #expect(serving.contains("cpus_online=\(sysconf(Int32(_SC_NPROCESSORS_ONLN)))"), "\(serving)")
    }

    /// Unrestricted, the default is one reactor per CPU this test may use
    /// (the runner's own affinity, which the node inherits).
    @Test func anUnrestrictedNodeStartsOneReactorPerAllowedCPU() throws {
        let allowed = try allowedCPUsOfThisProcess()
        let quota = CPUBudget.quotaCPUs(procSelfCgroup: (try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8)) ?? "",
                                        read: { try? String(contentsOfFile: $0, encoding: .utf8) })
        let expected = CPUBudget(online: allowed, affinity: allowed, quota: quota).reactors
        let node = try SpawnedNode(arguments: [])
        // The port opens before the reactor threads start; "serving" comes
        // after they are created, but each names itself once it first runs,
        // which on a loaded machine can be later.
        #expect(node.waitForLog { $0.contains(" notice serving ") })
        var threads = reactorThreads(node.pid)
        let namingDeadline = Date().addingTimeInterval(10)
        while threads < expected && Date() < namingDeadline {
            usleep(20_000)
            threads = reactorThreads(node.pid)
        }
        #expect(node.stop() == 0)
        #expect(threads == expected)
        let serving = node.logLines().first { $0.contains(" notice serving ") } ?? ""
        #expect(serving.contains("reactors=\(expected)") && serving.contains("cpus_allowed=\(allowed)"), "\(serving)")
    }

    private func reactorThreads(_ pid: pid_t) -> Int {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return tasks.filter { task in
            let name = (try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/comm", encoding: .utf8)) ?? ""
            return name.hasPrefix("aegis-reactor-")
        }.count
    }

    /// Counted from the kernel's own report (/proc/self/status), not with the
    /// call the server uses.
    private func allowedCPUsOfThisProcess() throws -> Int {
        let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
        let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("Cpus_allowed:") })
        let mask = line.dropFirst("Cpus_allowed:".count).filter { $0 != "," && $0 != " " && $0 != "\t" }
        return mask.reduce(0) { $0 + (Int(String($1), radix: 16) ?? 0).nonzeroBitCount }
    }
}
