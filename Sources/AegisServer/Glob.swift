/// Redis-compatible glob matching for SCAN MATCH and CONFIG GET:
/// `*`, `?`, `[abc]`, `[^a]`, `[a-z]` and `\` escapes.
///
/// Iterative, backtracking only to the last `*`: O(pattern × subject) at
/// worst, so a hostile pattern cannot stall a reactor.
func globMatch(pattern: UnsafeRawBufferPointer, subject: UnsafeRawBufferPointer) -> Bool {
    var p = 0, s = 0
    var starP = -1, starS = 0
    while s < subject.count {
        if p < pattern.count && pattern[p] == UInt8(ascii: "*") {
            while p < pattern.count && pattern[p] == UInt8(ascii: "*") { p += 1 }
            if p == pattern.count { return true }
            starP = p
            starS = s
            continue
        }
        if p < pattern.count, let next = matchOne(pattern, p, subject[s]) {
            p = next
            s += 1
            continue
        }
        if starP < 0 { return false }
        starS += 1
        s = starS
        p = starP
    }
    while p < pattern.count && pattern[p] == UInt8(ascii: "*") { p += 1 }
    return p == pattern.count
}

func globMatch(pattern: String, subject: String) -> Bool {
    var p = pattern, s = subject
    return p.withUTF8 { pp in s.withUTF8 { ss in globMatch(pattern: UnsafeRawBufferPointer(pp), subject: UnsafeRawBufferPointer(ss)) } }
}

/// Matches one subject byte against the pattern element at `p` (not `*`);
/// returns the index after that element, or nil when it does not match.
private func matchOne(_ pattern: UnsafeRawBufferPointer, _ start: Int, _ byte: UInt8) -> Int? {
    var p = start
    switch pattern[p] {
    case UInt8(ascii: "?"):
        return p + 1
    case UInt8(ascii: "["):
        p += 1
        let negate = p < pattern.count && pattern[p] == UInt8(ascii: "^")
        if negate { p += 1 }
        var matched = false
        while p < pattern.count && pattern[p] != UInt8(ascii: "]") {
            if pattern[p] == UInt8(ascii: "\\") && p + 1 < pattern.count {
                p += 1
                if pattern[p] == byte { matched = true }
            } else if p + 2 < pattern.count && pattern[p + 1] == UInt8(ascii: "-") && pattern[p + 2] != UInt8(ascii: "]") {
                let low = min(pattern[p], pattern[p + 2]), high = max(pattern[p], pattern[p + 2])
                if byte >= low && byte <= high { matched = true }
                p += 2
            } else if pattern[p] == byte {
                matched = true
            }
            p += 1
        }
        // p is at ']' (or the end of an unterminated class, which Redis also accepts).
        return matched != negate ? min(p + 1, pattern.count) : nil
    case UInt8(ascii: "\\") where p + 1 < pattern.count:
        return pattern[p + 1] == byte ? p + 2 : nil
    default:
        return pattern[p] == byte ? p + 1 : nil
    }
}
