@testable import AegisServer
import CSupport
import Foundation
import Glibc
import Testing

/// The kernel door's fault plan and its io_uring wrappers, in process on a
/// real file and a real ring: which calls a rule fails, that a failed call
/// never reaches the kernel, and that withdrawn entries never run.
struct WALKernelDoorTests {
    static func temporaryFile() -> (path: String, fd: Int32) {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("aegis-door-\(UUID().uuidString)").path
        return (path, open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600))
    }

    static func size(_ path: String) -> Int {
        var info = stat()
        return stat(path, &info) == 0 ? Int(info.st_size) : -1
    }

    @Test func rulesFailTheCallsTheyNameAndNoOthers() throws {
        let door = KernelDoor(faults: try KernelFaultPlan.parse("write.segment=EIO@2x2; fdatasync=ENOSPC@1x0"))
        let (path, fd) = Self.temporaryFile()
        defer { close(fd); unlink(path) }
        let bytes: [UInt8] = [1, 2, 3, 4]
        var results: [Int] = []
        for call in 0..<4 {
            results.append(bytes.withUnsafeBytes { door.pwrite(fd, $0.baseAddress, 4, UInt64(4 * call), file: .segment) })
        }
        #expect(results == [4, -Int(EIO), -Int(EIO), 4])
        // A failed write never reached the file: the fourth landed at 12, the hole reads as zeros.
        #expect(Self.size(path) == 16)
        // Another file kind is not counted by a `.segment` rule.
        #expect(bytes.withUnsafeBytes { door.pwrite(fd, $0.baseAddress, 4, 16, file: .snapshot) } == 4)
        // x0: every call from the first on.
        for _ in 0..<3 { #expect(door.fdatasync(fd, file: .prepared) == -ENOSPC) }
        #expect(door.fsync(fd, file: .segment) == 0)
        #expect(KernelDoor.production.fdatasync(fd, file: .segment) == 0)
    }

    @Test(arguments: ["fdatasync", "fdatasync=EIO@", "fdatasync=EWHAT", "nothing=EIO", "write.elsewhere=EIO",
                      "write=EIO@0", "write=EIO+1x2", "write=EIO x"])
    func malformedRulesAreRefused(rule: String) {
        #expect(throws: WALError.self) { try KernelFaultPlan.parse(rule) }
    }

    /// A faulted io_uring fdatasync completes through the ring, after its
    /// delay, with the injected error; the file is never synced by it.
    @Test func faultedRingOperationCompletesWithTheErrorAfterItsDelay() throws {
        let door = KernelDoor(faults: try KernelFaultPlan.parse("fdatasync.segment=EIO+50"))
        let ring = try door.uringCreate(entries: 8).get()
        defer { door.uringDestroy(ring) }
        let (path, fd) = Self.temporaryFile()
        defer { close(fd); unlink(path) }
        #expect(door.prepareFdatasync(ring, fd, userData: 0x1234, flags: 0, file: .segment) == 0)
        #expect(door.prepareFdatasync(ring, fd, userData: 0x5678, flags: 0, file: .segment) == 0)
        #expect(door.submit(ring, file: .segment) == 2)
        var completed: [UInt64: Int32] = [:]
        let deadline = Date().addingTimeInterval(5)
        while completed.count < 2 && Date() < deadline {
            var userData: UInt64 = 0
            var result: Int32 = 0
            if door.popCompletion(ring, userData: &userData, result: &result) { completed[userData] = result } else { usleep(1000) }
        }
        #expect(completed == [0x1234: -EIO, 0x5678: 0])
    }

    /// The node flush is a syncfs of the file system holding the file: it
    /// succeeds on a real file, fails only for `syncfs.flush` rules (never
    /// for fdatasync rules, even `.flush` ones), and reports the rule's errno.
    @Test func nodeFlushIsASyncfsAndFaultsOnlyForItsRule() throws {
        let door = KernelDoor(faults: try KernelFaultPlan.parse("syncfs.flush=EROFS@2"))
        let (path, fd) = Self.temporaryFile()
        defer { close(fd); unlink(path) }
        #expect(door.nodeFlush(fd) == 0)
        #expect(door.nodeFlush(fd) == -EROFS)
        #expect(door.nodeFlush(fd) == 0)
        #expect(KernelDoor.production.nodeFlush(-1) == -EBADF)
        let fdatasyncOnly = KernelDoor(faults: try KernelFaultPlan.parse("fdatasync.flush=EIO@1x0; fdatasync.segment=EIO@1x0"))
        #expect(fdatasyncOnly.nodeFlush(fd) == 0)
    }

    /// Entries the kernel did not take are handed back and turned into
    /// no-ops: a later submission runs them as nothing (user data 0).
    @Test func withdrawnEntriesNeverRun() throws {
        let door = KernelDoor(faults: try KernelFaultPlan.parse("submit.segment=EAGAIN"))
        let ring = try door.uringCreate(entries: 8).get()
        defer { door.uringDestroy(ring) }
        let (path, fd) = Self.temporaryFile()
        defer { close(fd); unlink(path) }
        let bytes = [UInt8](repeating: 7, count: 4096)
        try bytes.withUnsafeBytes { raw in
            #expect(door.prepareWrite(ring, fd, raw.baseAddress, 4096, 0, userData: 0x42, flags: 0, file: .segment) == 0)
            #expect(door.submit(ring, file: .segment) == -EAGAIN)
            var withdrawn: [UInt64] = []
            #expect(door.withdrawUnsubmitted(ring, into: &withdrawn) == 1)
            #expect(withdrawn == [0x42])
            // Withdrawn once: a second look finds nothing more.
            #expect(door.withdrawUnsubmitted(ring, into: &withdrawn) == 0)
            // The next submission (no longer faulted) sends the no-op.
            #expect(door.submit(ring, file: .segment) == 1)
            var userData: UInt64 = 99
            var result: Int32 = -1
            let deadline = Date().addingTimeInterval(5)
            while !door.popCompletion(ring, userData: &userData, result: &result) {
                try #require(Date() < deadline, "the no-op never completed")
                usleep(1000)
            }
            #expect(userData == 0)
            #expect(result == 0)
        }
        #expect(Self.size(path) == 0, "a withdrawn write reached the file")
    }
}
