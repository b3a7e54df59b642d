/// A binary min-heap of simulation events ordered by (time, order). `order`
/// is the sequence number of scheduling, so events due at the same time run
/// in the order they were scheduled: the run never depends on heap internals.
///
/// The heap holds plain (time, order, slot) keys and the payloads sit in
/// slots beside it: sifting then moves three integers instead of retaining
/// and releasing frames (it was a sixth of the simulator's time).
struct EventQueue<Payload> {
    struct Entry {
        var time: Int64
        var order: UInt64
        var payload: Payload
    }

    private struct Key {
        var time: Int64
        var order: UInt64
        var slot: Int
    }

    private var heap: [Key] = []
    private var slots: [Payload?] = []
    private var freeSlots: [Int] = []
    private var nextOrder: UInt64 = 0

    var isEmpty: Bool { heap.isEmpty }

    mutating func schedule(_ payload: Payload, at time: Int64) {
        push(Key(time: time, order: nextOrder, slot: store(payload)))
        nextOrder += 1
    }

    /// Puts an entry back later, keeping its place among entries scheduled
    /// around the same moment (a paused node's backlog replays in order).
    mutating func postpone(_ entry: Entry, to time: Int64) {
        push(Key(time: time, order: entry.order, slot: store(entry.payload)))
    }

    mutating func pop() -> Entry? {
        guard let top = heap.first else { return nil }
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            siftDown()
        }
        let payload = slots[top.slot].take()!
        freeSlots.append(top.slot)
        return Entry(time: top.time, order: top.order, payload: payload)
    }

    private mutating func store(_ payload: Payload) -> Int {
        if let slot = freeSlots.popLast() {
            slots[slot] = payload
            return slot
        }
        slots.append(payload)
        return slots.count - 1
    }

    private mutating func siftDown() {
        var index = 0
        let moving = heap[0]
        while true {
            let left = 2 * index + 1, right = left + 1
            var smallest = index
            var smallestKey = moving
            if left < heap.count && precedes(heap[left], smallestKey) { smallest = left; smallestKey = heap[left] }
            if right < heap.count && precedes(heap[right], smallestKey) { smallest = right }
            if smallest == index { break }
            heap[index] = heap[smallest]
            index = smallest
        }
        heap[index] = moving
    }

    private mutating func push(_ key: Key) {
        heap.append(key)
        var index = heap.count - 1
        while index > 0 {
            let parent = (index - 1) / 2
            guard precedes(key, heap[parent]) else { break }
            heap[index] = heap[parent]
            index = parent
        }
        heap[index] = key
    }

    private func precedes(_ lhs: Key, _ rhs: Key) -> Bool {
        lhs.time < rhs.time || (lhs.time == rhs.time && lhs.order < rhs.order)
    }
}
