@testable import AegisServer
import Testing

/// The forwarding relay's table of requests waiting for a peer's reply.
@Suite struct TicketSlabTests {
    @Test func anEntryIsFoundUnderItsTicketUntilRemoved() {
        var slab = TicketSlab<String>()
        let a = slab.insert { "a\($0)" }
        let b = slab.insert { "b\($0)" }
        #expect(a != b)
        #expect(slab.count == 2)
        #expect(slab.peek(a) == "a\(a)")
        #expect(slab.remove(a) == "a\(a)")
        #expect(slab.remove(a) == nil, "a second reply for one request finds nothing")
        #expect(slab.peek(a) == nil)
        #expect(slab.peek(b) == "b\(b)")
        #expect(slab.count == 1)
    }

    @Test func aReusedSlotDoesNotAnswerItsOldTicket() {
        var slab = TicketSlab<Int>()
        let old = slab.insert { _ in 1 }
        _ = slab.remove(old)
        let new = slab.insert { _ in 2 }
        #expect(new & 0xFFFF_FFFF == old & 0xFFFF_FFFF, "the freed slot is taken again")
        #expect(new != old)
        #expect(slab.remove(old) == nil, "a late reply to a timed-out request must not take the new one's place")
        #expect(slab.peek(new) == 2)
    }

    @Test func madeUpTicketsFindNothing() {
        var slab = TicketSlab<Int>()
        let real = slab.insert { _ in 7 }
        for ticket: UInt64 in [real ^ (1 << 32), real + 1, 0xFFFF_FFFF, .max, 1 << 40] {
            #expect(slab.remove(ticket) == nil, "ticket \(ticket)")
        }
        #expect(slab.count == 1)
    }

    @Test func memoryFollowsTheMostHeldAtOnceAndTicketsListTheLiving() {
        var slab = TicketSlab<Int>()
        var held: [UInt64] = []
        for round in 0..<1_000 {
            held.append(slab.insert { _ in round })
            if held.count > 3 { #expect(slab.remove(held.removeFirst()) != nil) }
        }
        #expect(slab.count == 3)
        #expect(Set(slab.tickets) == Set(held))
        #expect(Set(slab.tickets.map { $0 & 0xFFFF_FFFF }).isSubset(of: [0, 1, 2, 3]), "four slots served a thousand requests")
        for ticket in held { _ = slab.remove(ticket) }
        #expect(slab.isEmpty)
        #expect(slab.tickets.isEmpty)
    }
}
