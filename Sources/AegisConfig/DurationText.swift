/// Go-style duration text ("100ms", "30s", "1m30s", "1.5h", "0s") to and from
/// Swift's `Duration`, with nanosecond resolution.
///
/// Units: ns, us (also µs), ms, s, m, h. A duration is one or more
/// number+unit pairs; numbers may have a fraction. "0" alone is accepted as
/// Go accepts it. Negative durations are rejected: no setting wants one.
enum DurationText {
    static let expectation = "a duration such as \"100ms\", \"30s\", \"5m\", \"1h\" or \"1m30s\""

    private static let units: [(name: String, nanoseconds: Int64)] = [
        ("ns", 1), ("us", 1_000), ("\u{00B5}s", 1_000), ("\u{03BC}s", 1_000),
        ("ms", 1_000_000), ("s", 1_000_000_000), ("m", 60_000_000_000), ("h", 3_600_000_000_000),
    ]

    /// Parses `text`; the failure is a short reason (for "expected ..., got ...: reason").
    static func parse(_ text: String) -> Result<Duration, DurationProblem> {
        if text == "0" { return .success(.zero) }
        if text.isEmpty { return .failure(DurationProblem("it is empty")) }
        if text.hasPrefix("-") { return .failure(DurationProblem("it is negative")) }
        var scalars = Substring(text).unicodeScalars[...]
        var total: Int64 = 0
        while !scalars.isEmpty {
            let whole = scalars.prefix { isDigit($0) }
            scalars = scalars.dropFirst(whole.count)
            var fraction = Substring.UnicodeScalarView()
            var sawPoint = false
            if scalars.first == "." {
                sawPoint = true
                scalars = scalars.dropFirst()
                fraction = scalars.prefix { isDigit($0) }
                scalars = scalars.dropFirst(fraction.count)
            }
            if whole.isEmpty && fraction.isEmpty {
                return .failure(DurationProblem(sawPoint ? "a number has no digits" : "expected a number"))
            }
            let unitText = String(scalars.prefix { !isDigit($0) && $0 != "." })
            scalars = scalars.dropFirst(unitText.unicodeScalars.count)
            if unitText.isEmpty {
                return .failure(DurationProblem("a number has no unit (ns, us, ms, s, m or h)"))
            }
            guard let unit = units.first(where: { $0.name == unitText })?.nanoseconds else {
                return .failure(DurationProblem("unknown unit \(quoted(unitText)) (use ns, us, ms, s, m or h)"))
            }
            guard let part = value(whole: String(whole), fraction: String(fraction), unit: unit)
            else { return .failure(DurationProblem("it is too large")) }
            let (sum, overflow) = total.addingReportingOverflow(part)
            if overflow { return .failure(DurationProblem("it is too large")) }
            total = sum
        }
        return .success(.nanoseconds(total))
    }

    /// Nanoseconds of one number+unit pair, nil on overflow.
    private static func value(whole: String, fraction: String, unit: Int64) -> Int64? {
        var result: Int64 = 0
        if !whole.isEmpty {
            guard let number = Int64(whole) else { return nil }
            let (product, overflow) = number.multipliedReportingOverflow(by: unit)
            if overflow { return nil }
            result = product
        }
        if !fraction.isEmpty, let fractionValue = Double("0." + fraction) {
            let extra = (fractionValue * Double(unit)).rounded()
            let (sum, overflow) = result.addingReportingOverflow(Int64(extra))
            if overflow { return nil }
            result = sum
        }
        return result
    }

    private static func isDigit(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value >= 0x30 && scalar.value <= 0x39
    }

    /// Whole nanoseconds in `duration` (saturating, which config values never reach).
    static func nanoseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        let (sum, overflow2) = scaled.addingReportingOverflow(attoseconds / 1_000_000_000)
        if overflow2 { return seconds < 0 ? .min : .max }
        return sum
    }

    /// The shortest exact text: "0s", "100ms", "1m30s", "1h", "1s500ms".
    /// `parse(format(d)) == d` for every non-negative whole-nanosecond duration.
    static func format(_ duration: Duration) -> String {
        var remaining = nanoseconds(duration)
        if remaining == 0 { return "0s" }
        var text = remaining < 0 ? "-" : ""
        if remaining < 0 { remaining = remaining == .min ? .max : -remaining }
        for (name, size) in [("h", Int64(3_600_000_000_000)), ("m", 60_000_000_000), ("s", 1_000_000_000),
                             ("ms", 1_000_000), ("us", 1_000), ("ns", 1)] {
            let count = remaining / size
            if count > 0 { text += "\(count)\(name)" }
            remaining -= count * size
        }
        return text
    }
}

struct DurationProblem: Error, Equatable {
    var detail: String
    init(_ detail: String) { self.detail = detail }
}
