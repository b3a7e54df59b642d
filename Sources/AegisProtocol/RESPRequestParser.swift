/// Parsing of RESP requests on the server side: multibulk (`*N\r\n$L\r\n...`)
/// and inline (`SET a b\r\n`) commands, with the semantics and error texts of
/// Redis (networking.c `processMultibulkBuffer` / `processInlineBuffer`,
/// sds.c `sdssplitargs`).
///
/// The parser is stateless: every call parses one command from the start of
/// the given bytes. It never reads outside `bytes`, never allocates in
/// proportion to a length it has only been told about (lengths above the
/// limits are rejected as soon as their digits show it), and in steady state
/// never allocates at all: arguments are recorded as offsets into `bytes` in a
/// reused `RESPArguments`.

public struct RESPLimits: Sendable, Equatable {
    /// Most arguments in one command.
    public var maxArguments: Int
    /// Longest bulk argument.
    public var maxBulkLength: Int
    /// Longest inline command line (without its line ending).
    public var maxInlineLength: Int
    /// The limits are the small ones for a client that has not sent AUTH:
    /// a count over them is answered with Redis's "unauthenticated" texts.
    public var beforeAuth: Bool

    public init(
        maxArguments: Int = 1_048_576,
        maxBulkLength: Int = 64 * 1024 * 1024 + 1024,
        maxInlineLength: Int = 64 * 1024,
        beforeAuth: Bool = false
    ) {
        precondition(maxArguments >= 0 && maxBulkLength >= 0 && maxInlineLength >= 0)
        self.maxArguments = maxArguments
        self.maxBulkLength = maxBulkLength
        self.maxInlineLength = maxInlineLength
        self.beforeAuth = beforeAuth
    }

    /// What a client may send before AUTH when a token is set, as Redis
    /// allows an unauthenticated client (networking.c): at most 10
    /// arguments of at most 16 KiB, so that no connection can make the node
    /// buffer much before it has logged in.
    public static let unauthenticated = RESPLimits(
        maxArguments: 10, maxBulkLength: 16 * 1024, maxInlineLength: 16 * 1024, beforeAuth: true)
}

/// Reused per reactor: argument positions of the last parsed command, as
/// offsets into the parsed buffer.
///
/// Invariants: `state` is allocated in `init`, owned by this instance and
/// freed with `state.slots` in `deinit`; `state.slots` holds
/// `2 * state.capacity` Ints, of which `0..<2*count` are initialized as
/// (offset, length) pairs. After a `.complete` parse every
/// `offset(i)..<offset(i)+length(i)` lies inside the consumed bytes.
///
/// The mutable state sits behind a `let` pointer rather than in stored `var`
/// properties: a class's `var` needs a dynamic exclusivity check on every
/// access it cannot prove safe (swift_beginAccess, about a fifth of the
/// parse time when measured), while memory behind a pointer needs none.
public final class RESPArguments {
    @usableFromInline
    struct State {
        @usableFromInline var count: Int
        @usableFromInline var capacity: Int
        @usableFromInline var slots: UnsafeMutablePointer<Int>
        /// Where the last `.incomplete` parse stopped (see `resumePoint`).
        @usableFromInline var resume: RESPResumePoint = .start
    }

    @usableFromInline let state: UnsafeMutablePointer<State>

    static let initialCapacity = 16
    /// A command with more arguments than this leaves its memory behind only
    /// until the next parse.
    static let retainedCapacity = 64 * 1024

    public init() {
        state = .allocate(capacity: 1)
        state.initialize(to: State(
            count: 0, capacity: Self.initialCapacity, slots: .allocate(capacity: 2 * Self.initialCapacity)))
    }

    deinit {
        state.pointee.slots.deallocate()
        state.deallocate()
    }

    /// After an `.incomplete` parse: where the next parse of the same bytes,
    /// with more appended, may continue (`RESPRequestParser.parse(_:into:limits:resumingAt:)`).
    @inlinable
    public var resumePoint: RESPResumePoint { state.pointee.resume }

    @inline(__always)
    func stopped(at point: RESPResumePoint) -> RESPParseResult {
        state.pointee.resume = point
        return .incomplete
    }

    /// Number of arguments of the last parsed command (0 for an empty line).
    @inlinable
    public var count: Int { state.pointee.count }

    /// Offset of argument `index` from the start of the parsed buffer.
    @inlinable @inline(__always)
    public func offset(_ index: Int) -> Int {
        assert(index >= 0 && index < state.pointee.count)
        return state.pointee.slots[2 &* index]
    }

    /// Length in bytes of argument `index`.
    @inlinable @inline(__always)
    public func length(_ index: Int) -> Int {
        assert(index >= 0 && index < state.pointee.count)
        return state.pointee.slots[2 &* index &+ 1]
    }

    /// The bytes of argument `index` inside `buffer`, the buffer that was parsed.
    @inlinable @inline(__always)
    public func bytes(_ index: Int, in buffer: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        let start = offset(index)
        let length = length(index)
        assert(start >= 0 && start + length <= buffer.count)
        return UnsafeRawBufferPointer(rebasing: buffer[start..<(start + length)])
    }

    @inline(__always)
    func reset() {
        state.pointee.count = 0
        if state.pointee.capacity > Self.retainedCapacity { shrink() }
    }

    @inline(never)
    private func shrink() {
        state.pointee.slots.deallocate()
        state.pointee.capacity = Self.initialCapacity
        state.pointee.slots = .allocate(capacity: 2 * Self.initialCapacity)
    }

    @inline(__always)
    func append(offset: Int, length: Int) {
        let count = state.pointee.count
        if count == state.pointee.capacity { grow() }
        let slots = state.pointee.slots
        slots[2 &* count] = offset
        slots[2 &* count &+ 1] = length
        state.pointee.count = count &+ 1
    }

    @inline(__always)
    func set(_ index: Int, offset: Int, length: Int) {
        assert(index >= 0 && index < state.pointee.count)
        state.pointee.slots[2 &* index] = offset
        state.pointee.slots[2 &* index &+ 1] = length
    }

    @inline(never)
    private func grow() {
        let newCapacity = state.pointee.capacity * 2
        let fresh = UnsafeMutablePointer<Int>.allocate(capacity: 2 * newCapacity)
        fresh.initialize(from: state.pointee.slots, count: 2 * state.pointee.count)
        state.pointee.slots.deallocate()
        state.pointee.slots = fresh
        state.pointee.capacity = newCapacity
    }
}

/// How far an incomplete request has been checked, so that a request
/// arriving in many reads is scanned once, not again from byte 0 on each
/// read (which let a client trickling a request of a million small
/// arguments cost the reactor milliseconds per byte).
///
/// A point is only valid for the same request: the same first bytes, with
/// more appended. Whoever keeps it for a connection resets it to `.start`
/// when the request is consumed.
public struct RESPResumePoint: Sendable, Equatable {
    /// Bytes known to be whole parts of the request: for multibulk, the
    /// header and `arguments` complete arguments; for an inline line, bytes
    /// known to hold no line ending. 0 = nothing known.
    public var position: Int
    /// Multibulk arguments complete within `position`.
    public var arguments: Int
    /// Bytes the request needs at least, when a bulk length already says
    /// so (0 = not known yet): lets a server size its buffer once, or
    /// refuse a request it could never hold before it arrives.
    public var bytesNeeded: Int

    public init(position: Int = 0, arguments: Int = 0, bytesNeeded: Int = 0) {
        self.position = position
        self.arguments = arguments
        self.bytesNeeded = bytesNeeded
    }

    public static let start = RESPResumePoint()
}

public enum RESPParseResult: Equatable, Sendable {
    /// One command was parsed; it used the first `consumed` bytes.
    case complete(consumed: Int)
    /// More bytes are needed.
    case incomplete
    /// The bytes can never form a valid command; the connection should answer
    /// `-ERR <message>` and close.
    case protocolError(String)
}

public enum RESPRequestParser {
    /// Parses ONE command at the start of `bytes`.
    ///
    /// An empty inline line (or `*0\r\n`, `*-1\r\n`) gives `.complete` with
    /// `args.count == 0`: the server skips it.
    ///
    /// Inline commands with quotes (`SET "a b" "x\ty"`) are unescaped in
    /// place: the bytes of that one line are rewritten, so `bytes` must point
    /// to writable memory (a `WireBuffer`'s storage is). The line is rewritten
    /// canonically, so its consumed bytes parse again to the same arguments
    /// (a server may forward them raw to another reactor). An escape that no
    /// inline line can carry with contiguous bytes (a NUL or LF inside an
    /// argument, or an argument needing both quote kinds) is a protocol error
    /// telling the client to use multibulk. Lines without quote characters
    /// and multibulk commands are only read.
    ///
    /// `resume` is `args.resumePoint` from the previous `.incomplete` parse
    /// of the same request (or `.start`): checking continues from there, so
    /// the bytes before it are not read again until the request is complete;
    /// then its arguments are recorded in one pass. After `.incomplete`,
    /// `args.resumePoint` says where to continue next time.
    public static func parse(
        _ bytes: UnsafeRawBufferPointer, into args: RESPArguments, limits: RESPLimits,
        resumingAt resume: RESPResumePoint = .start
    ) -> RESPParseResult {
        args.reset()
        guard bytes.count > 0 else { return args.stopped(at: .start) }
        assert(resume.position <= bytes.count, "a resume point belongs to the same bytes, with more appended")
        if bytes[0] == UInt8(ascii: "*") {
            if resume.position > 0 {
                // Check only the new bytes; record the arguments only once
                // the whole request is there.
                let checked = parseMultibulk(bytes, into: args, limits: limits, from: resume, record: false)
                guard case .complete = checked else { return checked }
            }
            return parseMultibulk(bytes, into: args, limits: limits, from: .start, record: true)
        }
        return parseInline(bytes, into: args, limits: limits, searchFrom: resume.position)
    }

    // MARK: - Multibulk

    /// Parses (or with `record` false, only checks) a multibulk request,
    /// starting after the `from.arguments` arguments that `from.position`
    /// bytes are known to hold.
    @inline(__always)
    private static func parseMultibulk(
        _ bytes: UnsafeRawBufferPointer, into args: RESPArguments, limits: RESPLimits,
        from resume: RESPResumePoint, record: Bool
    ) -> RESPParseResult {
        var position: Int
        let argumentCount: Int
        switch scanNumber(bytes, from: 1, max: limits.maxArguments, allowNegative: true) {
        case .incomplete:
            return args.stopped(at: .start)
        case .invalid:
            return .protocolError("Protocol error: invalid multibulk length")
        case .overLimit:
            return .protocolError(limits.beforeAuth ? "Protocol error: unauthenticated multibulk length" : "Protocol error: invalid multibulk length")
        case .value(let value, let next):
            argumentCount = value
            position = next
        }
        // Redis treats `*0` and negative counts as an empty command.
        if argumentCount <= 0 { return .complete(consumed: position) }

        let end = bytes.count
        var first = 0
        if resume.position > 0 {
            assert(resume.position >= position && resume.arguments <= argumentCount)
            position = resume.position
            first = resume.arguments
        }
        for argument in first..<argumentCount {
            let argumentStart = position
            guard position < end else { return args.stopped(at: RESPResumePoint(position: argumentStart, arguments: argument)) }
            let marker = bytes[position]
            guard marker == UInt8(ascii: "$") else {
                return .protocolError("Protocol error: expected '$', got '\(describe(byte: marker))'")
            }
            let length: Int
            switch scanNumber(bytes, from: position + 1, max: limits.maxBulkLength, allowNegative: false) {
            case .incomplete:
                return args.stopped(at: RESPResumePoint(position: argumentStart, arguments: argument))
            case .invalid:
                return .protocolError("Protocol error: invalid bulk length")
            case .overLimit:
                return .protocolError(limits.beforeAuth ? "Protocol error: unauthenticated bulk length" : "Protocol error: invalid bulk length")
            case .value(let value, let next):
                length = value
                position = next
            }
            // length <= maxBulkLength, so these sums cannot overflow.
            let dataEnd = position + length
            if dataEnd < end && bytes[dataEnd] != UInt8(ascii: "\r") {
                return .protocolError("Protocol error: expected CRLF after bulk data")
            }
            guard end - dataEnd >= 2 else {
                return args.stopped(at: RESPResumePoint(position: argumentStart, arguments: argument, bytesNeeded: dataEnd + 2))
            }
            guard bytes[dataEnd + 1] == UInt8(ascii: "\n") else {
                return .protocolError("Protocol error: expected CRLF after bulk data")
            }
            if record { args.append(offset: position, length: length) }
            position = dataEnd + 2
        }
        return .complete(consumed: position)
    }

    @usableFromInline
    enum NumberScan {
        case value(Int, next: Int)
        case incomplete
        case invalid
        /// A well-formed positive number above the maximum.
        case overLimit
    }

    /// Reads a decimal integer starting at `start` and ending with CRLF, with
    /// the rules of Redis' `string2ll`: optional `-`, no `+`, no spaces, no
    /// leading zeros, no `-0`. A positive value above `max` is `.invalid` as
    /// soon as its digits show it, without waiting for the rest of the line.
    @inline(__always)
    static func scanNumber(
        _ bytes: UnsafeRawBufferPointer, from start: Int, max: Int, allowNegative: Bool
    ) -> NumberScan {
        let end = bytes.count
        var index = start
        guard index < end else { return .incomplete }
        var negative = false
        if bytes[index] == UInt8(ascii: "-") {
            guard allowNegative else { return .invalid }
            negative = true
            index += 1
            guard index < end else { return .incomplete }
        }
        let first = bytes[index]
        guard first >= UInt8(ascii: "0") && first <= UInt8(ascii: "9") else { return .invalid }
        var value = Int(first &- UInt8(ascii: "0"))
        index += 1
        if value == 0 {
            // "0" stands alone; "-0" and "01" are rejected like string2ll does.
            if negative { return .invalid }
        } else {
            // Negative numbers only need to fit; positive ones must stay <= max.
            let cap = negative ? Int.max / 10 : max
            if value > cap { return negative ? .invalid : .overLimit }
            while index < end {
                let byte = bytes[index]
                guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") else { break }
                let (times10, overflow1) = value.multipliedReportingOverflow(by: 10)
                let (sum, overflow2) = times10.addingReportingOverflow(Int(byte &- UInt8(ascii: "0")))
                if overflow1 || overflow2 || sum > cap { return negative ? .invalid : .overLimit }
                value = sum
                index += 1
            }
        }
        guard index < end else { return .incomplete }
        guard bytes[index] == UInt8(ascii: "\r") else { return .invalid }
        guard index + 1 < end else { return .incomplete }
        guard bytes[index + 1] == UInt8(ascii: "\n") else { return .invalid }
        return .value(negative ? -value : value, next: index + 2)
    }

    /// A byte as Redis would print it with `%c`, made safe for an error line.
    static func describe(byte: UInt8) -> String {
        if byte >= 0x20 && byte < 0x7F {
            return String(Character(Unicode.Scalar(byte)))
        }
        let digits: [Character] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "a", "b", "c", "d", "e", "f"]
        return "\\x" + String(digits[Int(byte >> 4)]) + String(digits[Int(byte & 0x0F)])
    }

    // MARK: - Inline

    /// `searchFrom`: bytes already known to hold no line ending.
    private static func parseInline(
        _ bytes: UnsafeRawBufferPointer, into args: RESPArguments, limits: RESPLimits, searchFrom: Int
    ) -> RESPParseResult {
        let maxLine = limits.maxInlineLength
        // A legal line has at most maxLine bytes, then "\r\n" or "\n".
        let lineWithEnding = maxLine > Int.max - 2 ? Int.max : maxLine + 2
        let window = Swift.min(bytes.count, lineWithEnding)
        var newline = Swift.min(searchFrom, window)
        while newline < window && bytes[newline] != UInt8(ascii: "\n") { newline += 1 }
        guard newline < window else {
            if bytes.count >= lineWithEnding { return .protocolError("Protocol error: too big inline request") }
            return args.stopped(at: RESPResumePoint(position: newline))
        }
        var lineEnd = newline
        if lineEnd > 0 && bytes[lineEnd - 1] == UInt8(ascii: "\r") { lineEnd -= 1 }
        if lineEnd > maxLine { return .protocolError("Protocol error: too big inline request") }

        // Fast path: a line without quotes splits into plain slices.
        switch splitPlain(bytes, end: lineEnd, into: args, limit: limits.maxArguments) {
        case .done:
            return .complete(consumed: newline + 1)
        case .tooManyArguments:
            return .protocolError("Protocol error: too many arguments in inline request")
        case .quoteFound:
            args.reset()
        }
        // A line with quotes: the first pass only reads and validates; the
        // second unescapes in place, then rewrites the line canonically.
        switch splitInline(bytes, end: lineEnd, into: args, limit: limits.maxArguments, write: false) {
        case .unbalanced:
            return .protocolError("Protocol error: unbalanced quotes in request")
        case .tooManyArguments:
            return .protocolError("Protocol error: too many arguments in inline request")
        case .unrepresentable:
            return .protocolError("Protocol error: unsupported escape in inline request, send it as multibulk")
        case .ok(let sawQuotes):
            if sawQuotes {
                args.reset()
                _ = splitInline(bytes, end: lineEnd, into: args, limit: limits.maxArguments, write: true)
                canonicalize(bytes, lineEnd: lineEnd, args: args)
            }
            return .complete(consumed: newline + 1)
        }
    }

    /// How an unescaped argument is written back into its line.
    enum Quoting {
        case plain, double, single, none
    }

    /// The form in which `content` reads back as itself with the bytes
    /// contiguous: bare, in double quotes (no `"`, `\`), or in single quotes
    /// (no `'`, not ending in `\`). `.none` when no such form exists: NUL or
    /// LF inside, or both quote kinds needed.
    @inline(__always)
    static func quoting(
        count: Int, first: UInt8, last: UInt8, hasNulOrLF: Bool, hasBlankOrQuote: Bool, hasSingle: Bool,
        hasDoubleOrBackslash: Bool
    ) -> Quoting {
        if hasNulOrLF { return .none }
        let leadingBlank = first == 0x20 || (first >= 0x09 && first <= 0x0D)
        if count > 0 && !hasBlankOrQuote && !leadingBlank { return .plain }
        if !hasDoubleOrBackslash { return .double }
        if !hasSingle && last != UInt8(ascii: "\\") { return .single }
        return .none
    }

    static func quoting(of content: UnsafeRawBufferPointer) -> Quoting {
        var hasNulOrLF = false, hasBlankOrQuote = false, hasSingle = false, hasDoubleOrBackslash = false
        for byte in content {
            switch byte {
            case 0, 0x0A: hasNulOrLF = true
            case 0x20, 0x09, 0x0D: hasBlankOrQuote = true
            case UInt8(ascii: "'"): hasSingle = true; hasBlankOrQuote = true
            case UInt8(ascii: "\""): hasDoubleOrBackslash = true; hasBlankOrQuote = true
            case UInt8(ascii: "\\"): hasDoubleOrBackslash = true
            default: break
            }
        }
        return quoting(
            count: content.count, first: content.first ?? 0, last: content.last ?? 0, hasNulOrLF: hasNulOrLF,
            hasBlankOrQuote: hasBlankOrQuote, hasSingle: hasSingle, hasDoubleOrBackslash: hasDoubleOrBackslash)
    }

    /// Rewrites an unescaped quoted line so that its bytes parse again to the
    /// same arguments: the server forwards the raw bytes of a command to the
    /// reactor owning its key, which parses them again. Each argument is
    /// written bare or quoted with its bytes contiguous (so the offsets stay
    /// valid), one space apart, and the rest of the line becomes spaces.
    ///
    /// It fits: a token that had quotes loses at least the two quote
    /// characters to unescaping, so re-quoting never makes it longer, and
    /// tokens were at least one byte apart. Token `i`'s new place ends no
    /// later than its old one, so moving tokens left to right never
    /// overwrites a token not yet moved. `splitInline` has already rejected
    /// arguments without a contiguous form. A bare first argument starting
    /// with `*` gets one blank in front; that still fits, because such a
    /// token was either quoted (two bytes saved) or preceded by a blank
    /// (else the line would have been multibulk).
    private static func canonicalize(_ bytes: UnsafeRawBufferPointer, lineEnd: Int, args: RESPArguments) {
        let base = UnsafeMutableRawPointer(mutating: bytes.baseAddress!)
        var w = 0
        for index in 0..<args.count {
            let offset = args.offset(index)
            let length = args.length(index)
            if index > 0 {
                base.storeBytes(of: UInt8(ascii: " "), toByteOffset: w, as: UInt8.self)
                w += 1
            }
            let form = quoting(of: UnsafeRawBufferPointer(start: base + offset, count: length))
            assert(form != .none)
            let quote: UInt8? = form == .double ? UInt8(ascii: "\"") : form == .single ? UInt8(ascii: "'") : nil
            if let quote {
                // The opening quote may land on the content's first byte: move the content first.
                (base + w + 1).copyMemory(from: base + offset, byteCount: length)
                base.storeBytes(of: quote, toByteOffset: w, as: UInt8.self)
                base.storeBytes(of: quote, toByteOffset: w + 1 + length, as: UInt8.self)
                args.set(index, offset: w + 1, length: length)
                w += length + 2
            } else {
                // A bare first argument must not start the line with '*' (that
                // would read as multibulk): keep one blank in front of it.
                let star = index == 0 && base.load(fromByteOffset: offset, as: UInt8.self) == UInt8(ascii: "*")
                if star { w = 1 }
                (base + w).copyMemory(from: base + offset, byteCount: length)
                if star { base.storeBytes(of: UInt8(ascii: " "), toByteOffset: 0, as: UInt8.self) }
                args.set(index, offset: w, length: length)
                w += length
            }
            assert(w <= offset + length + 2)
        }
        assert(w <= lineEnd)
        while w < lineEnd {
            base.storeBytes(of: UInt8(ascii: " "), toByteOffset: w, as: UInt8.self)
            w += 1
        }
    }

    enum PlainOutcome {
        case done
        case quoteFound
        case tooManyArguments
    }

    /// `sdssplitargs` for the common line without quote characters: tokens
    /// end at space, tab, CR, LF or NUL (a NUL ends the whole line, as the C
    /// string would); blanks between tokens are C `isspace`. Gives up at the
    /// first quote so that `splitInline` handles the line.
    @inline(__always)
    private static func splitPlain(
        _ bytes: UnsafeRawBufferPointer, end: Int, into args: RESPArguments, limit: Int
    ) -> PlainOutcome {
        var p = 0
        while true {
            while p < end {
                let byte = bytes[p]
                guard byte == 0x20 || (byte >= 0x09 && byte <= 0x0D) else { break }
                p += 1
            }
            if p == end || bytes[p] == 0 { return .done }
            if args.count >= limit { return .tooManyArguments }
            let start = p
            while p < end {
                let byte = bytes[p]
                if byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D || byte == 0 { break }
                if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "'") { return .quoteFound }
                p += 1
            }
            args.append(offset: start, length: p - start)
            if p < end && bytes[p] == 0 { return .done }
        }
    }

    enum SplitOutcome {
        case ok(sawQuotes: Bool)
        case unbalanced
        case tooManyArguments
        /// An argument that no inline line could carry with contiguous bytes.
        case unrepresentable
    }

    /// `sdssplitargs` over `bytes[0..<end]`. Positions at or past `end`, like
    /// NUL bytes, read as 0 (the C string's terminator). With `write` the
    /// unescaped bytes of each argument are stored from its first position
    /// on; the write position never passes the read position, so nothing is
    /// overwritten before it has been read.
    private static func splitInline(
        _ bytes: UnsafeRawBufferPointer, end: Int, into args: RESPArguments, limit: Int, write: Bool
    ) -> SplitOutcome {
        @inline(__always) func at(_ index: Int) -> UInt8 { index < end ? bytes[index] : 0 }
        @inline(__always) func isSpace(_ byte: UInt8) -> Bool {
            byte == 0x20 || (byte >= 0x09 && byte <= 0x0D)  // C isspace: space \t \n \v \f \r
        }
        let output: UnsafeMutableRawPointer? = write ? UnsafeMutableRawPointer(mutating: bytes.baseAddress) : nil
        var sawQuotes = false
        var p = 0
        while true {
            while at(p) != 0 && isSpace(at(p)) { p += 1 }
            if at(p) == 0 { return .ok(sawQuotes: sawQuotes) }
            if args.count >= limit { return .tooManyArguments }

            let tokenStart = p
            var w = p
            var first: UInt8 = 0, last: UInt8 = 0
            var hasNulOrLF = false, hasBlankOrQuote = false, hasSingle = false, hasDoubleOrBackslash = false
            @inline(__always) func emit(_ byte: UInt8) {
                if let output { output.storeBytes(of: byte, toByteOffset: w, as: UInt8.self) }
                if w == tokenStart { first = byte }
                last = byte
                switch byte {
                case 0, 0x0A: hasNulOrLF = true
                case 0x20, 0x09, 0x0D: hasBlankOrQuote = true
                case UInt8(ascii: "'"): hasSingle = true; hasBlankOrQuote = true
                case UInt8(ascii: "\""): hasDoubleOrBackslash = true; hasBlankOrQuote = true
                case UInt8(ascii: "\\"): hasDoubleOrBackslash = true
                default: break
                }
                w += 1
            }
            var inDoubleQuotes = false
            var inSingleQuotes = false
            var done = false
            while !done {
                let c = at(p)
                if inDoubleQuotes {
                    if c == UInt8(ascii: "\\") && at(p + 1) == UInt8(ascii: "x")
                        && hexValue(at(p + 2)) != nil && hexValue(at(p + 3)) != nil
                    {
                        emit(hexValue(at(p + 2))! << 4 | hexValue(at(p + 3))!)
                        p += 3
                    } else if c == UInt8(ascii: "\\") && at(p + 1) != 0 {
                        p += 1
                        switch at(p) {
                        case UInt8(ascii: "n"): emit(UInt8(ascii: "\n"))
                        case UInt8(ascii: "r"): emit(UInt8(ascii: "\r"))
                        case UInt8(ascii: "t"): emit(UInt8(ascii: "\t"))
                        case UInt8(ascii: "b"): emit(0x08)
                        case UInt8(ascii: "a"): emit(0x07)
                        case let other: emit(other)
                        }
                    } else if c == UInt8(ascii: "\"") {
                        // The closing quote must be followed by a space or nothing.
                        if at(p + 1) != 0 && !isSpace(at(p + 1)) { return .unbalanced }
                        done = true
                    } else if c == 0 {
                        return .unbalanced
                    } else {
                        emit(c)
                    }
                } else if inSingleQuotes {
                    if c == UInt8(ascii: "\\") && at(p + 1) == UInt8(ascii: "'") {
                        p += 1
                        emit(UInt8(ascii: "'"))
                    } else if c == UInt8(ascii: "'") {
                        if at(p + 1) != 0 && !isSpace(at(p + 1)) { return .unbalanced }
                        done = true
                    } else if c == 0 {
                        return .unbalanced
                    } else {
                        emit(c)
                    }
                } else {
                    switch c {
                    case UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: "\r"), UInt8(ascii: "\t"), 0:
                        done = true
                    case UInt8(ascii: "\""):
                        inDoubleQuotes = true
                        sawQuotes = true
                    case UInt8(ascii: "'"):
                        inSingleQuotes = true
                        sawQuotes = true
                    default:
                        emit(c)
                    }
                }
                if at(p) != 0 { p += 1 }
            }
            let form = quoting(
                count: w - tokenStart, first: first, last: last, hasNulOrLF: hasNulOrLF, hasBlankOrQuote: hasBlankOrQuote,
                hasSingle: hasSingle, hasDoubleOrBackslash: hasDoubleOrBackslash)
            if form == .none { return .unrepresentable }
            args.append(offset: tokenStart, length: w - tokenStart)
        }
    }

    @inline(__always)
    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte &- UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte &- UInt8(ascii: "a") &+ 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte &- UInt8(ascii: "A") &+ 10
        default: return nil
        }
    }
}
