import AegisProtocol

/// Reused buffers and parser state for the request path, so nothing there
/// allocates per request. Each is used within one step and left empty (or
/// cleared before its next use); none holds anything between iterations.
struct RequestScratch {
    /// Socket reads land here; complete requests are parsed in place and
    /// only a partial one is copied to its connection.
    let read = WireBuffer(capacity: 256 * 1024)
    /// The reply to a request another reactor forwarded.
    let reply = WireBuffer(capacity: 64 * 1024)
    /// One part of a multi-key command's reply, or a reply rewritten as an error.
    let part = WireBuffer(capacity: 1024)
    let value = WireBuffer()
    let scan = WireBuffer()
    let arguments = RESPArguments()
    /// For requests from other reactors, and for the parts a local
    /// multi-key request is split into while `arguments` still holds it.
    let forwardedArguments = RESPArguments()
    let respLimits = RESPLimits()
    let binaryLimits = BinaryLimits()
}
