import AegisProtocol

/// The options of SET and GETEX, read in the order and with the rules of
/// redis-server 7.0 (t_string.c, `parseExtendedStringArgumentsOrReply`):
/// every option is checked for syntax first and the expiry's number only
/// afterwards, a repeated option of the same kind is accepted and the last
/// one wins (`SET k v EX 10 EX 20` expires in 20 s, `SET k v EX abc EX 10`
/// is fine), and two different expiry kinds are a syntax error. Clients and
/// their tests see these differences: a number error where Redis answers
/// `ERR syntax error`, or an error where Redis answers nil.
struct StringOptions {
    enum Command { case set, getex }
    enum ExpiryKind: Equatable { case seconds, milliseconds, unixSeconds, unixMilliseconds }

    var onlyIfAbsent = false
    var onlyIfPresent = false
    var returnOld = false
    var keepTTL = false
    var persist = false
    var expiryKind: ExpiryKind? = nil
    /// Index of the expiry's number among the arguments (valid with `expiryKind`).
    var expiryArgument = 0

    /// nil means `ERR syntax error`.
    static func parse(_ args: ArgumentsView, for command: Command) -> StringOptions? {
        var options = StringOptions()
        var i = command == .set ? 3 : 2
        while i < args.count {
            let hasNext = i + 1 < args.count
            if command == .set && args.matches(i, "NX") && !options.onlyIfPresent {
                options.onlyIfAbsent = true
            } else if command == .set && args.matches(i, "XX") && !options.onlyIfAbsent {
                options.onlyIfPresent = true
            } else if command == .set && args.matches(i, "GET") {
                options.returnOld = true
            } else if command == .set && args.matches(i, "KEEPTTL") && options.expiryKind == nil {
                options.keepTTL = true
            } else if command == .getex && args.matches(i, "PERSIST") && options.expiryKind == nil {
                options.persist = true
            } else if hasNext, !options.keepTTL, !options.persist, let kind = Self.expiryKind(args, i),
                      options.expiryKind == nil || options.expiryKind == kind {
                options.expiryKind = kind
                options.expiryArgument = i + 1
                i += 1
            } else {
                return nil
            }
            i += 1
        }
        return options
    }

    private static func expiryKind(_ args: ArgumentsView, _ i: Int) -> ExpiryKind? {
        if args.matches(i, "EX") { return .seconds }
        if args.matches(i, "PX") { return .milliseconds }
        if args.matches(i, "EXAT") { return .unixSeconds }
        if args.matches(i, "PXAT") { return .unixMilliseconds }
        return nil
    }

    enum ExpiryProblem: Error { case notAnInteger, invalid }

    /// The absolute expiry in unix ms, as `getExpireMillisecondsOrReply`
    /// computes it: the number must be positive and must not overflow once
    /// converted to an absolute time. nil when no expiry was given.
    func absoluteExpiryMs(_ args: ArgumentsView, nowMs: Int64) -> Result<Int64?, ExpiryProblem> {
        guard let kind = expiryKind else { return .success(nil) }
        guard let amount = args.integer(expiryArgument) else { return .failure(.notAnInteger) }
        let inSeconds = kind == .seconds || kind == .unixSeconds
        if amount <= 0 || (inSeconds && amount > Int64.max / 1000) { return .failure(.invalid) }
        var milliseconds = inSeconds ? amount * 1000 : amount
        if kind == .seconds || kind == .milliseconds {
            let (sum, overflow) = milliseconds.addingReportingOverflow(nowMs)
            if overflow { return .failure(.invalid) }
            milliseconds = sum
        }
        return .success(milliseconds)
    }

    /// Writes the error for `problem` as redis-server words it.
    static func write(_ problem: ExpiryProblem, command: StaticString, into out: WireBuffer) {
        switch problem {
        case .notAnInteger:
            RESPWriter.error("ERR value is not an integer or out of range", into: out)
        case .invalid:
            RESPWriter.error(string: "ERR invalid expire time in '\(command)' command", into: out)
        }
    }
}
