import AegisProtocol
import AegisStore

extension Reactor {
    /// A one-key read sent here because its shard's primary cannot be
    /// reached from the node its client reached (ForwardingRelay, "Reads
    /// while the primary is unreachable"): answered from the copy this
    /// node holds as a follower, possibly stale. Never passed on: the
    /// primary it would go to is the one that cannot be reached. A node
    /// holding no whole copy (none, one still being streamed, or one that
    /// has received nothing from a primary yet: an empty learner) refuses
    /// with TRYAGAIN rather than answer a miss for a key it may lack; so
    /// is anything but a one-key read, which only the primary may run.
    ///
    /// At read_quorum R >= 2 the read consults R - 1 other replicas as a
    /// primary's would (ReadQuorumState), the primary that cannot be
    /// reached left out: a write acknowledged at W is on W replicas, so with
    /// R + W > replication_factor one of those answering holds it.
    func answerReadFromCopy(_ header: ForwardHeader, request: UnsafeRawBufferPointer, into out: WireBuffer) {
        let shard = Int(header.route.shard)
        readQuorum.answeringFromCopy = true
        defer { readQuorum.answeringFromCopy = false }
        guard holdsWholeCopy(shard) else {
            refuseReadFromCopy(header, request: request, shard: shard, why: "this node holds no complete copy of it", into: out)
            return
        }
        switch header.wire {
        case .binary:
            guard case .complete(let frame) = BinaryFrameParser.parse(request, limits: scratch.binaryLimits),
                  BinaryCommand(rawValue: frame.commandCode) == .get,
                  isOfShard(UnsafeRawBufferPointer(rebasing: request[frame.keyOffset..<(frame.keyOffset + frame.keyLength)]), shard) else {
                refuseReadFromCopy(header, request: request, shard: shard, why: "only a GET may be answered from a copy", into: out)
                return
            }
            counters.readsFromCopyServed &+= 1
            executeForwardedBinary(frame, request: request, into: out)
            countErrorReply(out, wire: .binary, id: CommandMetricsLayout.binaryID(frame.commandCode))
        case .resp2, .resp3:
            guard case .complete = RESPRequestParser.parse(request, into: scratch.forwardedArguments, limits: scratch.respLimits) else {
                refuseReadFromCopy(header, request: request, shard: shard, why: "the request does not parse", into: out)
                return
            }
            let args = ArgumentsView(base: request.baseAddress!, arguments: scratch.forwardedArguments)
            let command = RESPCommand.lookup(args.bytes(0))
            guard !command.isWrite, command.actsOnOneKey(argumentCount: args.count), isOfShard(args.bytes(1), shard) else {
                refuseReadFromCopy(header, request: request, shard: shard, why: "only a one-key read may be answered from a copy", into: out)
                return
            }
            counters.readsFromCopyServed &+= 1
            executeOwned(command, args, version: header.wire == .resp3 ? .resp3 : .resp2, into: out)
            countErrorReply(out, wire: header.wire, id: Int(command.rawValue))
        }
    }

    /// Whether this reactor holds a copy of `shard` that a read may be
    /// answered from: one whose stream ended and that took records from a
    /// primary since (a whole chain up to `appliedThrough`).
    func holdsWholeCopy(_ shard: Int) -> Bool {
        replica.enabled && shard < shards.count && shards[shard] != nil && replica.incoming[shard] == nil
            && replica.appliedThrough[shard] != .zero
    }

    /// The store is looked up by the key: a header naming another shard
    /// than the key's must not reach a shard this reactor does not hold.
    private func isOfShard(_ key: UnsafeRawBufferPointer, _ shard: Int) -> Bool {
        KeyHash.shard(of: KeyHash.hash(key), shardCount: shards.count) == shard
    }

    private func refuseReadFromCopy(_ header: ForwardHeader, request: UnsafeRawBufferPointer, shard: Int, why: String,
                                    into out: WireBuffer) {
        counters.readsFromCopyRefused &+= 1
        ForwardReplies.error(wire: header.wire, request: request,
                             text: "TRYAGAIN shard \(shard)'s primary cannot be reached and \(why); retry", into: out)
    }
}
