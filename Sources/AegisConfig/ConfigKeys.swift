/// A value as it arrives from one layer: a JSON value from the file, or text
/// from an environment variable or a flag.
enum RawValue {
    case json(JSONValue)
    case text(String)

    /// How the value is named in "got ..." messages.
    var summary: String {
        switch self {
        case .json(let value): return value.summary
        case .text(let text): return quoted(text)
        }
    }
}

/// A key's value in comparable, printable form.
enum KeyValue: Equatable {
    case string(String)
    case int(Int)
    case double(Double)
    case bool(Bool)
    case duration(Duration)
    case list([String])

    /// Plain text, as it would be written in an environment variable.
    var text: String {
        switch self {
        case .string(let value): return value
        case .int(let value): return String(value)
        case .double(let value): return String(value)
        case .bool(let value): return value ? "true" : "false"
        case .duration(let value): return DurationText.format(value)
        case .list(let values): return values.joined(separator: ",")
        }
    }

    /// JSON text, as it would be written in the config file.
    var json: String {
        switch self {
        case .string(let value): return quoted(value)
        case .int, .double, .bool: return text
        case .duration(let value): return quoted(DurationText.format(value))
        case .list(let values): return "[" + values.map(quoted).joined(separator: ", ") + "]"
        }
    }
}

/// Why one value was rejected: "expected <expected>, got <got>[: <detail>]".
struct ValueProblem: Error {
    var expected: String
    var got: String
    var detail: String?

    var message: String {
        "expected \(expected), got \(got)" + (detail.map { ": \($0)" } ?? "")
    }
}

/// One configuration key: its name, documentation, parser and accessor.
struct KeySpec: Sendable {
    let name: String
    /// The type as written in docs/configuration.md.
    let type: String
    let meaning: String
    let isSecret: Bool
    /// Parses `raw` and stores it; returns the problem instead when it is not valid.
    let apply: @Sendable (inout AegisConfig, RawValue) -> ValueProblem?
    let value: @Sendable (AegisConfig) -> KeyValue
    /// Sets this key in the first configuration to its value in the second.
    let copy: @Sendable (inout AegisConfig, AegisConfig) -> Void

    var envVar: String { ConfigLoader.environmentVariable(forKey: name) }
    var flag: String { ConfigLoader.flag(forKey: name) }
}

// MARK: - value parsers shared by the key kinds

enum ValueParsers {
    static func trimmed(_ text: String) -> String {
        String(text.drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }

    static func describeIntRange(_ range: ClosedRange<Int>) -> String {
        let unbounded = range.upperBound >= Int(Int32.max)
        switch (range.lowerBound, unbounded) {
        case (0, true): return "a non-negative integer"
        case (1, true): return "a positive integer"
        case (let low, true): return "an integer of at least \(low)"
        case (let low, false): return "an integer from \(low) to \(range.upperBound)"
        }
    }

    static func int(_ raw: RawValue, range: ClosedRange<Int>) -> Result<Int, ValueProblem> {
        let expected = describeIntRange(range)
        let number: Int
        switch raw {
        case .text(let text):
            let clean = trimmed(text)
            if let value = Int(clean) {
                number = value
            } else if clean.first.map({ $0 == "-" || $0 == "+" || $0.isNumber }) == true,
                      clean.dropFirst().allSatisfy({ $0.isASCII && $0.isNumber }), !clean.dropFirst().isEmpty {
                return .failure(ValueProblem(expected: expected, got: raw.summary, detail: "too large"))
            } else {
                return .failure(ValueProblem(expected: expected, got: raw.summary))
            }
        case .json(.number(let text)):
            if let value = Int(text) {
                number = value
            } else if let value = Double(text), value.isFinite {
                guard value.rounded(.towardZero) == value else {
                    return .failure(ValueProblem(expected: expected, got: text, detail: "not a whole number"))
                }
                guard value >= -9.0e18 && value <= 9.0e18 else {
                    return .failure(ValueProblem(expected: expected, got: text, detail: "too large"))
                }
                number = Int(value)
            } else {
                return .failure(ValueProblem(expected: expected, got: text, detail: "too large"))
            }
        case .json(let other):
            return .failure(ValueProblem(expected: expected, got: other.summary))
        }
        guard range.contains(number) else {
            if number > range.upperBound, range.upperBound >= Int(Int32.max) {
                return .failure(ValueProblem(expected: "\(expected) no larger than \(range.upperBound)", got: raw.summary))
            }
            return .failure(ValueProblem(expected: expected, got: raw.summary))
        }
        return .success(number)
    }

    static func double(_ raw: RawValue, expected: String) -> Result<Double, ValueProblem> {
        switch raw {
        case .text(let text):
            guard let value = Double(trimmed(text)), value.isFinite else {
                return .failure(ValueProblem(expected: expected, got: raw.summary))
            }
            return .success(value)
        case .json(.number(let text)):
            guard let value = Double(text), value.isFinite else {
                return .failure(ValueProblem(expected: expected, got: text))
            }
            return .success(value)
        case .json(let other):
            return .failure(ValueProblem(expected: expected, got: other.summary))
        }
    }

    static func bool(_ raw: RawValue) -> Result<Bool, ValueProblem> {
        let expected = "true or false"
        switch raw {
        case .text(let text):
            switch trimmed(text).lowercased() {
            case "true", "1", "yes", "on": return .success(true)
            case "false", "0", "no", "off": return .success(false)
            default: return .failure(ValueProblem(expected: expected, got: raw.summary))
            }
        case .json(.bool(let value)):
            return .success(value)
        case .json(let other):
            return .failure(ValueProblem(expected: expected, got: other.summary))
        }
    }

    /// Text for keys whose values are words, names or addresses: JSON must
    /// give a string, environment and flags give text as is.
    static func string(_ raw: RawValue, expected: String) -> Result<String, ValueProblem> {
        switch raw {
        case .text(let text): return .success(text)
        case .json(.string(let text)): return .success(text)
        case .json(let other): return .failure(ValueProblem(expected: expected, got: other.summary))
        }
    }

    static func duration(_ raw: RawValue, allowZero: Bool) -> Result<Duration, ValueProblem> {
        let expected = DurationText.expectation
        let text: String
        switch raw {
        case .text(let value): text = trimmed(value)
        case .json(.string(let value)): text = value
        case .json(.number(let number)):
            return v1Nanoseconds(number, allowZero: allowZero)
        case .json(let other):
            return .failure(ValueProblem(expected: expected, got: other.summary))
        }
        switch DurationText.parse(text) {
        case .failure(let problem):
            return .failure(ValueProblem(expected: expected, got: raw.summary, detail: problem.detail))
        case .success(let duration):
            if !allowZero && duration == .zero {
                return .failure(ValueProblem(expected: "a duration greater than zero, such as \"1s\"", got: raw.summary))
            }
            return .success(duration)
        }
    }

    /// Durations below this, written as a bare number, are refused: a bare
    /// number is nanoseconds, and a number this small is almost surely
    /// meant in seconds ("read_timeout": 30).
    static let smallestBareNanoseconds = 1_000

    /// AegisKV v1 wrote durations as Go's `time.Duration` marshals them: a
    /// whole number of nanoseconds ("gossip_interval": 1000000000 is 1s).
    /// Its files are read unchanged, with that meaning.
    static func v1Nanoseconds(_ number: String, allowZero: Bool) -> Result<Duration, ValueProblem> {
        let expected = DurationText.expectation + " (or, as AegisKV v1 wrote them, whole nanoseconds)"
        guard let nanoseconds = Int64(number) else {
            let detail = Double(number).map { $0 < 0 ? "it is negative" : "a bare number is whole nanoseconds" } ?? "it is too large"
            return .failure(ValueProblem(expected: expected, got: "the bare number \(number)", detail: detail))
        }
        if nanoseconds < 0 {
            return .failure(ValueProblem(expected: expected, got: "the bare number \(number)", detail: "it is negative"))
        }
        if nanoseconds == 0 && !allowZero {
            return .failure(ValueProblem(expected: "a duration greater than zero, such as \"1s\"", got: "the bare number 0"))
        }
        if nanoseconds > 0 && nanoseconds < smallestBareNanoseconds {
            return .failure(ValueProblem(
                expected: expected, got: "the bare number \(number)",
                detail: "a bare number is nanoseconds (AegisKV v1's format), so this is \(number)ns; write \"\(number)s\" if seconds were meant"))
        }
        return .success(.nanoseconds(nanoseconds))
    }

    static func list(_ raw: RawValue, expected: String) -> Result<[String], ValueProblem> {
        switch raw {
        case .text(let text):
            if trimmed(text).isEmpty { return .success([]) }
            let items = text.split(separator: ",", omittingEmptySubsequences: false).map { trimmed(String($0)) }
            if items.contains(where: \.isEmpty) {
                return .failure(ValueProblem(expected: expected, got: raw.summary, detail: "an entry is empty"))
            }
            return .success(items)
        case .json(.array(let elements)):
            var items: [String] = []
            for (position, element) in elements.enumerated() {
                guard case .string(let item) = element else {
                    return .failure(ValueProblem(expected: expected, got: "\(element.summary) as entry \(position + 1)"))
                }
                items.append(item)
            }
            return .success(items)
        case .json(let other):
            return .failure(ValueProblem(expected: expected, got: other.summary))
        }
    }
}

// MARK: - key kinds

extension KeySpec {
    typealias Path<Value> = WritableKeyPath<AegisConfig, Value> & Sendable

    static func string(_ name: String, _ path: Path<String>, type: String = "string", secret: Bool = false,
                       expected: String = "a string", check: (@Sendable (String) -> String?)? = nil,
                       meaning: String) -> KeySpec {
        KeySpec(name: name, type: type, meaning: meaning, isSecret: secret, apply: { config, raw in
            switch ValueParsers.string(raw, expected: expected) {
            case .failure(let problem): return problem
            case .success(let text):
                if let check, let detail = check(text) {
                    return ValueProblem(expected: expected, got: secret ? "an unsuitable value" : raw.summary, detail: detail)
                }
                config[keyPath: path] = text
                return nil
            }
        }, value: { .string($0[keyPath: path]) }, copy: { $0[keyPath: path] = $1[keyPath: path] })
    }

    /// `zeroMeans`: the value 0 is accepted and stored as this number (for
    /// a default of an earlier release that spelt it 0).
    static func int(_ name: String, _ path: Path<Int>, range: ClosedRange<Int>, zeroMeans: Int? = nil,
                    meaning: String) -> KeySpec {
        let accepted = zeroMeans == nil ? range : min(0, range.lowerBound)...range.upperBound
        let upper = accepted.upperBound >= Int(Int32.max) ? "" : " (at most \(accepted.upperBound))"
        let type = accepted.lowerBound == 0 ? "integer ≥ 0\(upper)" : "integer ≥ \(accepted.lowerBound)\(upper)"
        return KeySpec(name: name, type: type, meaning: meaning, isSecret: false, apply: { config, raw in
            switch ValueParsers.int(raw, range: accepted) {
            case .failure(let problem): return problem
            case .success(let number):
                config[keyPath: path] = number == 0 ? zeroMeans ?? 0 : number
                return nil
            }
        }, value: { .int($0[keyPath: path]) }, copy: { $0[keyPath: path] = $1[keyPath: path] })
    }

    static func ratio(_ name: String, _ path: Path<Double>, meaning: String) -> KeySpec {
        let expected = "a number greater than 0 and at most 1"
        return KeySpec(name: name, type: "number, 0 < r ≤ 1", meaning: meaning, isSecret: false, apply: { config, raw in
            switch ValueParsers.double(raw, expected: expected) {
            case .failure(let problem): return problem
            case .success(let number):
                guard number > 0 && number <= 1 else { return ValueProblem(expected: expected, got: raw.summary) }
                config[keyPath: path] = number
                return nil
            }
        }, value: { .double($0[keyPath: path]) }, copy: { $0[keyPath: path] = $1[keyPath: path] })
    }

    static func bool(_ name: String, _ path: Path<Bool>, meaning: String) -> KeySpec {
        KeySpec(name: name, type: "boolean", meaning: meaning, isSecret: false, apply: { config, raw in
            switch ValueParsers.bool(raw) {
            case .failure(let problem): return problem
            case .success(let flag): config[keyPath: path] = flag; return nil
            }
        }, value: { .bool($0[keyPath: path]) }, copy: { $0[keyPath: path] = $1[keyPath: path] })
    }

    static func duration(_ name: String, _ path: Path<Duration>, allowZero: Bool, meaning: String) -> KeySpec {
        KeySpec(name: name, type: allowZero ? "duration" : "duration > 0", meaning: meaning, isSecret: false,
                apply: { config, raw in
            switch ValueParsers.duration(raw, allowZero: allowZero) {
            case .failure(let problem): return problem
            case .success(let duration): config[keyPath: path] = duration; return nil
            }
        }, value: { .duration($0[keyPath: path]) }, copy: { $0[keyPath: path] = $1[keyPath: path] })
    }

    /// A duration that must be a whole number of seconds within `range`
    /// (for settings kept as per-second buckets, where "1500ms" would be
    /// silently rounded otherwise).
    static func wholeSeconds(_ name: String, _ path: Path<Duration>, range: ClosedRange<Int>, meaning: String) -> KeySpec {
        let bounds = "\(DurationText.format(.seconds(range.lowerBound))) to \(DurationText.format(.seconds(range.upperBound)))"
        let expected = "a whole number of seconds from \(bounds), such as \"10s\""
        return KeySpec(name: name, type: "duration, whole seconds, \(bounds)", meaning: meaning, isSecret: false,
                       apply: { config, raw in
            switch ValueParsers.duration(raw, allowZero: true) {
            case .failure(let problem): return problem
            case .success(let duration):
                let (seconds, attoseconds) = duration.components
                guard attoseconds == 0, seconds >= Int64(range.lowerBound), seconds <= Int64(range.upperBound) else {
                    return ValueProblem(expected: expected, got: raw.summary)
                }
                config[keyPath: path] = duration
                return nil
            }
        }, value: { .duration($0[keyPath: path]) }, copy: { $0[keyPath: path] = $1[keyPath: path] })
    }

    static func listenAddress(_ name: String, _ path: Path<SocketAddress>, meaning: String) -> KeySpec {
        KeySpec(name: name, type: "listen address", meaning: meaning, isSecret: false, apply: { config, raw in
            let expected = SocketAddress.expectation
            switch ValueParsers.string(raw, expected: expected) {
            case .failure(let problem): return problem
            case .success(let text):
                switch SocketAddress.parse(ValueParsers.trimmed(text)) {
                case .failure(let problem): return ValueProblem(expected: expected, got: raw.summary, detail: problem.detail)
                case .success(let address): config[keyPath: path] = address; return nil
                }
            }
        }, value: { .string($0[keyPath: path].description) }, copy: { $0[keyPath: path] = $1[keyPath: path] })
    }

    /// An address others dial, or "" for none.
    static func peerAddress(_ name: String, _ path: Path<String>, meaning: String) -> KeySpec {
        let expected = AddressSyntax.peerExpectation + ", or \"\""
        return KeySpec(name: name, type: "peer address or \"\"", meaning: meaning, isSecret: false, apply: { config, raw in
            switch ValueParsers.string(raw, expected: expected) {
            case .failure(let problem): return problem
            case .success(let text):
                let clean = ValueParsers.trimmed(text)
                if !clean.isEmpty, let problem = AddressSyntax.checkPeer(clean) {
                    return ValueProblem(expected: expected, got: raw.summary, detail: problem.detail)
                }
                config[keyPath: path] = clean
                return nil
            }
        }, value: { .string($0[keyPath: path]) }, copy: { $0[keyPath: path] = $1[keyPath: path] })
    }

    static func peerList(_ name: String, _ path: Path<[String]>, meaning: String) -> KeySpec {
        let expected = "a list of " + AddressSyntax.peerExpectation
        return KeySpec(name: name, type: "list of peer addresses", meaning: meaning, isSecret: false, apply: { config, raw in
            switch ValueParsers.list(raw, expected: expected) {
            case .failure(let problem): return problem
            case .success(let items):
                for (position, item) in items.enumerated() {
                    if let problem = AddressSyntax.checkPeer(item) {
                        return ValueProblem(expected: expected, got: "\(quoted(item)) as entry \(position + 1)", detail: problem.detail)
                    }
                }
                config[keyPath: path] = items
                return nil
            }
        }, value: { .list($0[keyPath: path]) }, copy: { $0[keyPath: path] = $1[keyPath: path] })
    }

    /// One of a fixed set of words, matched without regard to case.
    static func choice<Value: RawRepresentable & Sendable>(
        _ name: String, _ path: Path<Value>, choices: [String], meaning: String
    ) -> KeySpec where Value.RawValue == String {
        let expected = "one of " + choices.map(quoted).joined(separator: ", ")
        return KeySpec(name: name, type: choices.joined(separator: " | "), meaning: meaning, isSecret: false,
                       apply: { config, raw in
            switch ValueParsers.string(raw, expected: expected) {
            case .failure(let problem): return problem
            case .success(let text):
                guard let value = Value(rawValue: ValueParsers.trimmed(text).lowercased()), choices.contains(value.rawValue) else {
                    return ValueProblem(expected: expected, got: raw.summary)
                }
                config[keyPath: path] = value
                return nil
            }
        }, value: { .string($0[keyPath: path].rawValue) }, copy: { $0[keyPath: path] = $1[keyPath: path] })
    }
}

extension KeySpec {
    /// A String field holding one of a fixed set of words, stored lower-case.
    /// `spellings`: other accepted words, each stored as the choice it names.
    static func word(_ name: String, _ path: Path<String>, choices: [String], spellings: [String: String] = [:],
                     meaning: String) -> KeySpec {
        let expected = "one of " + choices.map(quoted).joined(separator: ", ")
        return KeySpec(name: name, type: choices.joined(separator: " | "), meaning: meaning, isSecret: false,
                       apply: { config, raw in
            switch ValueParsers.string(raw, expected: expected) {
            case .failure(let problem): return problem
            case .success(let text):
                let spelt = ValueParsers.trimmed(text).lowercased()
                let word = spellings[spelt] ?? spelt
                guard choices.contains(word) else { return ValueProblem(expected: expected, got: raw.summary) }
                config[keyPath: path] = word
                return nil
            }
        }, value: { .string($0[keyPath: path]) }, copy: { $0[keyPath: path] = $1[keyPath: path] })
    }
}
