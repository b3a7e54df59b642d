/// What this reactor's clients make it hold, and its bounds on it
/// (client_input_max_mb): one connection's partial request, and all of its
/// connections' input buffers together (its share of a quarter of
/// max_memory_mb, at least one connection's cap).
///
/// Invariant: `inputBytes` and `allBytes` are the sums over this reactor's
/// open connections of their `chargedInputBytes` and `chargedBufferBytes`,
/// which `charge` brings up to date with the buffers' capacities (input,
/// output, reply staging) and `uncharge` takes back when one closes. They
/// are reported in INFO and to the memory ledger.
struct ClientBufferAccount {
    let inputCapBytes: Int
    let inputBudgetBytes: Int
    private(set) var inputBytes = 0
    private(set) var allBytes = 0

    init(inputCapBytes: Int, inputBudgetBytes: Int) {
        self.inputCapBytes = inputCapBytes
        self.inputBudgetBytes = inputBudgetBytes
    }

    var isOverInputBudget: Bool { inputBytes > inputBudgetBytes }

    /// A few loads when nothing changed.
    @inline(__always) mutating func charge(_ connection: Connection) {
        let input = connection.input.capacity
        let all = input + connection.output.capacity + connection.replies.staging.capacity
        inputBytes += input - connection.chargedInputBytes
        allBytes += all - connection.chargedBufferBytes
        connection.chargedInputBytes = input
        connection.chargedBufferBytes = all
    }

    mutating func uncharge(_ connection: Connection) {
        inputBytes -= connection.chargedInputBytes
        allBytes -= connection.chargedBufferBytes
        connection.chargedInputBytes = 0
        connection.chargedBufferBytes = 0
    }
}
