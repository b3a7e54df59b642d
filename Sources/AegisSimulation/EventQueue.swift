/// A binary min-heap of simulation events ordered by (time, order). `order`
/// is the sequence number of scheduling, so events due at the same time run
/// in the order they were scheduled: the run never depends on heap internals.
struct EventQueue<Payload> {
    struct Entry {
        var time: Int64
        var order: UInt64
        var payload: Payload
    }

    private var heap: [Entry] = []
    private var nextOrder: UInt64 = 0

    var isEmpty: Bool { heap.isEmpty }
    var nextTime: Int64? { heap.first?.time }

    mutating func schedule(_ payload: Payload, at time: Int64) {
        push(Entry(time: time, order: nextOrder, payload: payload))
        nextOrder += 1
    }

    /// Puts an entry back later, keeping its place among entries scheduled
    /// around the same moment (a paused node's backlog replays in order).
    mutating func postpone(_ entry: Entry, to time: Int64) {
        var moved = entry
        moved.time = time
        push(moved)
    }

    mutating func pop() -> Entry? {
        guard !heap.isEmpty else { return nil }
        heap.swapAt(0, heap.count - 1)
        let top = heap.removeLast()
        var index = 0
        while true {
            let left = 2 * index + 1, right = left + 1
            var smallest = index
            if left < heap.count && precedes(heap[left], heap[smallest]) { smallest = left }
            if right < heap.count && precedes(heap[right], heap[smallest]) { smallest = right }
            if smallest == index { break }
            heap.swapAt(index, smallest)
            index = smallest
        }
        return top
    }

    private mutating func push(_ entry: Entry) {
        heap.append(entry)
        var index = heap.count - 1
        while index > 0 {
            let parent = (index - 1) / 2
            guard precedes(heap[index], heap[parent]) else { break }
            heap.swapAt(index, parent)
            index = parent
        }
    }

    private func precedes(_ lhs: Entry, _ rhs: Entry) -> Bool {
        (lhs.time, lhs.order) < (rhs.time, rhs.order)
    }
}
