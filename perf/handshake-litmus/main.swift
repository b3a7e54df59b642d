import CSupport
import Glibc
import Synchronization

// The wake-up handshake's crossing (as in InterconnectStressTests), built
// with -O from the node's own SPSCByteRing.swift and Interconnect.swift (of
// any revision, see run.sh): the store-load reordering that loses a
// wake-up needs the few nanoseconds an optimized build leaves between the
// producer's tail store and its load of `sleeping`; a debug build's calls
// there hide it. Both threads start each crossing together; the consumer
// sleeps in epoll on its edge-triggered eventfd with no timer, so a lost
// wake-up shows as a 2 s wait with a record queued ("stranded").
//
// Usage: litmus [crossings] [jitter rounds] [seed]

final class Rounds: Sendable {
    let arrived = Atomic<Int>(0)
    let started = Atomic<Int>(0)
    let done = Atomic<Int>(0)
    let stop = Atomic<Bool>(false)
    let spinTarget = Atomic<Int>(0)
    func wait(_ c: borrowing Atomic<Int>, _ v: Int) -> Bool {
        var n = 0
        while c.load(ordering: .acquiring) < v {
            n += 1
            if n & 0x3FFF == 0 { if stop.load(ordering: .relaxed) { return false }; sched_yield() }
        }
        return true
    }
    @inline(never) func spin(_ k: Int) { for _ in 0..<k { _ = spinTarget.load(ordering: .relaxed) } }
}

struct SplitMix { var s: UInt64; mutating func next() -> UInt64 { s &+= 0x9E3779B97F4A7C15; var z = s; z = (z ^ (z >> 30)) &* 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) &* 0x94D049BB133111EB; return z ^ (z >> 31) } }

final class Box: @unchecked Sendable { let interconnect: Interconnect; let rounds = Rounds(); let crossings: Int; let jitter: UInt64
    init(_ i: Interconnect, _ c: Int, _ j: UInt64) { interconnect = i; crossings = c; jitter = j } }

@main struct Litmus {
    static func main() throws {
        let args = CommandLine.arguments
        let crossings = args.count > 1 ? Int(args[1])! : 2_000_000
        let jitter = args.count > 2 ? UInt64(args[2])! : 64
        let seed = args.count > 3 ? UInt64(args[3])! : UInt64(time(nil))
        let box = Box(try Interconnect(reactorCount: 2, ringCapacityBytes: 4096), crossings, jitter)
        let ring = box.interconnect.ring(from: 0, to: 1)
        let epollFD = aegis_epoll_create()
        _ = aegis_epoll_add(epollFD, box.interconnect.wakeFDs[1], AEGIS_EPOLLIN | AEGIS_EPOLLET, 1)
        var thread = pthread_t()
        let ctx = Unmanaged.passRetained(box).toOpaque()
        pthread_create(&thread, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            let ring = box.interconnect.ring(from: 0, to: 1)
            var random = SplitMix(s: 12345)
            for k in 0..<box.crossings {
                box.rounds.arrived.store(k + 1, ordering: .releasing)
                guard box.rounds.wait(box.rounds.started, k + 1) else { return nil }
                box.rounds.spin(Int(random.next() % box.jitter))
                ring.reserve(payloadLength: 8)!.storeBytes(of: UInt64(k), as: UInt64.self)
                ring.commit(payloadLength: 8)
                box.interconnect.notify(1)
                box.rounds.done.store(k + 1, ordering: .releasing)
            }
            return nil
        }, ctx)
        var random = SplitMix(s: seed)
        var sleeps = 0, stranded = 0, crossed = 0
        var event = aegis_epoll_event()
        let start = clock()
        for k in 0..<crossings {
            guard box.rounds.wait(box.rounds.arrived, k + 1) else { break }
            box.rounds.started.store(k + 1, ordering: .releasing)
            box.rounds.spin(Int(random.next() % jitter))
            if box.interconnect.prepareToSleep(1) {
                sleeps += 1
                let ready = aegis_epoll_wait(epollFD, &event, 1, 2000)
                box.interconnect.didWake(1)
                if ready == 0 && !ring.isEmptyApproximately {
                    stranded += 1
                    print("stranded at crossing \(k)")
                    if stranded >= 5 { box.rounds.stop.store(true, ordering: .relaxed); break }
                }
            }
            guard box.rounds.wait(box.rounds.done, k + 1) else { break }
            while ring.peek() != nil { ring.release() }
            _ = aegis_epoll_wait(epollFD, &event, 1, 0)
            crossed += 1
        }
        box.rounds.stop.store(true, ordering: .relaxed)
        pthread_join(thread, nil)
        print("crossings \(crossed) sleeps \(sleeps) stranded \(stranded) jitter \(jitter) seed \(seed) cpu_s \(Double(clock() - start) / Double(CLOCKS_PER_SEC))")
    }
}
