/// Incoming messages, the rules that merge what peers say about members, and
/// the piggyback queue that spreads changes.
extension ClusterNode {
    // MARK: - Receiving

    mutating func receive(frame: [UInt8], fromAddress: String, now: Milliseconds,
                          into output: inout ActionBuffer) {
        let message: ClusterMessage
        switch MessageCodec.decode(frame: frame, parameters: parameters, authenticator: authenticator) {
        case let .dropped(reason):
            drop(reason, fromAddress: fromAddress, now: now, into: &output)
            return
        case let .message(decoded):
            message = decoded
        }
        counters.receivedByType[message.payload.type, default: 0] += 1
        // Our own name from elsewhere is a misconfiguration (two nodes, one
        // node_id) or a reflected message; acting on it would corrupt our view.
        guard message.sender != settings.nodeID else { return }
        noteHeard(message.sender, now: now)
        if case .pushPull = message.payload {} else {
            exchangeWithUnknownSender(message.sender, at: message.senderGossipAddress, now: now, into: &output)
        }

        switch message.payload {
        case let .ping(seq, target, updates):
            applyUpdates(updates, from: message.sender, now: now, into: &output)
            guard target == settings.nodeID, state.phase == .running else { return }
            var budget = piggybackBudget(fixedPayloadBytes: 4 + 1)
            // A prober that holds us suspect (Lifeguard's buddy system) gets our
            // refutation in the very ack: left to the broadcast queue, it may have
            // used up its retransmits already, and the prober would run its
            // suspicion out against a node that answers it every time.
            var reply: [MemberUpdate] = []
            if updates.contains(where: { $0.node == settings.nodeID && $0.status != .alive }) {
                let refutation = selfUpdate
                reply.append(refutation)
                budget -= refutation.encodedBytes
            }
            reply += takeBroadcasts(budget: budget).filter { $0.node != settings.nodeID || reply.isEmpty }
            send(.ack(seq: seq, updates: reply), to: message.senderGossipAddress,
                 lane: .control, into: &output)
        case let .pingReq(seq, target, targetAddress, updates):
            applyUpdates(updates, from: message.sender, now: now, into: &output)
            // Each relay lives a fraction of a period; a peer asking for more
            // at once than this is broken, and gets no help rather than memory.
            guard state.relays.count < Self.relaysMax else { return }
            let relaySeq = takeSeq()
            // The nack must reach the requester before its round closes, one
            // period after its own ping: it asked us half a period in.
            state.relays[relaySeq] = Relay(requesterAddress: message.senderGossipAddress, requesterSeq: seq,
                                           nackAt: now + max(1, settings.gossipIntervalMs * 3 / 10))
            armRelayTimer(into: &output)
            let budget = piggybackBudget(fixedPayloadBytes: 4 + 1 + target.name.utf8.count + 1)
            send(.ping(seq: relaySeq, target: target, updates: takeBroadcasts(budget: budget)),
                 to: targetAddress, lane: .control, into: &output)
        case let .ack(seq, updates):
            applyUpdates(updates, from: message.sender, now: now, into: &output)
            acknowledge(seq: seq, now: now, into: &output)
        case let .nack(seq, updates):
            applyUpdates(updates, from: message.sender, now: now, into: &output)
            if let index = state.pendingProbes.firstIndex(where: { $0.seq == seq }) {
                state.pendingProbes[index].nacks += 1
            }
        case let .pushPull(isReply, members):
            applyUpdates(members, from: message.sender, now: now, into: &output)
            if !isReply { sendPushPull(to: message.senderGossipAddress, isReply: true, into: &output) }
        }
    }

    mutating func drop(_ reason: DropReason, fromAddress: String, now: Milliseconds,
                       into output: inout ActionBuffer) {
        counters.droppedByReason[reason, default: 0] += 1
        if let last = dropLoggedAt[fromAddress], now - last < Self.dropLogIntervalMs { return }
        if dropLoggedAt.count >= Self.dropLogAddressesMax {
            dropLoggedAt = dropLoggedAt.filter { now - $0.value < Self.dropLogIntervalMs }
            // Every slot still in its minute: a flood from many addresses stays
            // unlogged rather than growing the table without bound.
            guard dropLoggedAt.count < Self.dropLogAddressesMax else { return }
        }
        dropLoggedAt[fromAddress] = now
        let total = counters.droppedByReason[reason] ?? 0
        output.append(.log(.warning, "dropped message from \(fromAddress): \(reason) (\(total) so far; next report from this peer in a minute at most)"))
    }

    /// A member that probes us knows us, but we may have missed every
    /// piggybacked word of it (its join went round while our acks were slow),
    /// and the periodic push/pull could leave us without it for
    /// `push_pull_interval`. Its frame passed the gossip secret, so it is one
    /// of ours: a full exchange with it now closes the gap in one round trip.
    /// At most one per gossip interval, so a burst of new nodes costs no more
    /// than one exchange per period, and the others get theirs as they probe again.
    mutating func exchangeWithUnknownSender(_ node: NodeID, at address: String, now: Milliseconds,
                                            into output: inout ActionBuffer) {
        guard state.members[node] == nil else { return }
        if let last = state.unknownSenderExchangeAt, now - last < settings.gossipIntervalMs { return }
        state.unknownSenderExchangeAt = now
        output.append(.log(.info, "heard from \(node) at \(address) before any word of it: a full exchange with it"))
        sendPushPull(to: address, isReply: false, into: &output)
    }

    mutating func noteHeard(_ node: NodeID, now: Milliseconds) {
        guard var member = state.members[node] else { return }
        member.lastHeard = now
        member.failing = false
        state.members[node] = member
    }

    mutating func acknowledge(seq: UInt32, now: Milliseconds, into output: inout ActionBuffer) {
        if let index = state.pendingProbes.firstIndex(where: { $0.seq == seq }) {
            guard !state.pendingProbes[index].answered else { return }
            state.pendingProbes[index].answered = true
            noteHeard(state.pendingProbes[index].target, now: now)
            adjustHealth(-1)
        } else if let relay = state.relays.removeValue(forKey: seq) {
            let budget = piggybackBudget(fixedPayloadBytes: 4 + 1)
            send(.ack(seq: relay.requesterSeq, updates: takeBroadcasts(budget: budget)),
                 to: relay.requesterAddress, lane: .control, into: &output)
        }
    }

    // MARK: - Merging what others say

    mutating func applyUpdates(_ updates: [MemberUpdate], from sender: NodeID, now: Milliseconds,
                               into output: inout ActionBuffer) {
        for update in updates {
            applyUpdate(update, now: now, reasonSource: "reported by \(sender)", into: &output)
        }
    }

    /// SWIM's precedence: a higher incarnation wins; at the same incarnation
    /// suspect overrides alive and dead/left override both. Anything older is ignored.
    mutating func applyUpdate(_ update: MemberUpdate, now: Milliseconds, reasonSource: String,
                              into output: inout ActionBuffer) {
        if update.node == settings.nodeID {
            applyUpdateAboutSelf(update, into: &output)
            return
        }
        guard let existing = state.members[update.node] else {
            learnMember(update, now: now, reasonSource: reasonSource, into: &output)
            return
        }
        switch update.status {
        case .alive:
            guard update.incarnation > existing.incarnation else { return }
            var member = existing
            member.incarnation = update.incarnation
            member.gossipAddress = update.gossipAddress
            member.clientAddress = update.clientAddress
            transition(&member, to: .alive, now: now,
                       reason: existing.status == .alive ? nil : "incarnation \(update.incarnation) is alive (\(reasonSource))",
                       into: &output)
            enqueueBroadcast(update)
        case .suspect:
            if existing.status == .suspect && update.incarnation == existing.incarnation {
                confirmSuspicion(of: update.node, by: update.accuser, now: now, into: &output)
                return
            }
            guard (existing.status == .alive && update.incarnation >= existing.incarnation)
                || (existing.status == .suspect && update.incarnation > existing.incarnation) else { return }
            var member = existing
            member.incarnation = update.incarnation
            transition(&member, to: .suspect, now: now, reason: "suspected: \(reasonSource)", into: &output)
            member.suspicion = Suspicion(start: now, accusers: update.accuser.map { [$0] } ?? [], deadline: 0)
            member.suspicion?.deadline = now + suspicionTimeout(confirmations: 0)
            state.members[update.node] = member
            enqueueBroadcast(update)
            armSuspicionTimer(into: &output)
        case .dead, .left:
            let newer = update.incarnation > existing.incarnation
            let overrides = update.incarnation == existing.incarnation
                && (existing.status == .alive || existing.status == .suspect
                    || (existing.status == .dead && update.status == .left))
            guard newer || overrides else { return }
            var member = existing
            member.incarnation = update.incarnation
            let reason = update.status == .left ? "left the cluster (\(reasonSource))" : "declared dead: \(reasonSource)"
            transition(&member, to: update.status, now: now,
                       reason: existing.status == update.status ? nil : reason, into: &output)
            enqueueBroadcast(update)
        }
    }

    mutating func learnMember(_ update: MemberUpdate, now: Milliseconds, reasonSource: String,
                              into output: inout ActionBuffer) {
        var member = Member(node: update.node, gossipAddress: update.gossipAddress,
                            clientAddress: update.clientAddress, status: update.status,
                            incarnation: update.incarnation, lastHeard: nil, aliveSince: now)
        if update.status == .suspect {
            member.suspicion = Suspicion(start: now, accusers: update.accuser.map { [$0] } ?? [],
                                         deadline: now + suspicionTimeout(confirmations: 0))
        }
        state.members[update.node] = member
        output.append(.memberChanged(MemberChange(node: update.node, from: nil, to: update.status,
                                                  incarnation: update.incarnation,
                                                  reason: "learned of it as \(update.status) (\(reasonSource))")))
        enqueueBroadcast(update)
        if update.status == .suspect { armSuspicionTimer(into: &output) }
    }

    /// Stores `member` in its new status, and reports the change when `reason` is given.
    mutating func transition(_ member: inout Member, to status: MemberStatus, now: Milliseconds,
                             reason: String?, into output: inout ActionBuffer) {
        let previous = member.status
        member.status = status
        member.failing = false
        if status == .alive {
            member.suspicion = nil
            member.aliveSince = now
        } else if status != .suspect {
            member.suspicion = nil
        }
        state.members[member.node] = member
        if status != .alive && status != .suspect {
            state.pendingProbes.removeAll { $0.target == member.node }
        }
        if let reason, previous != status {
            output.append(.memberChanged(MemberChange(node: member.node, from: previous, to: status,
                                                      incarnation: member.incarnation, reason: reason)))
        }
    }

    mutating func confirmSuspicion(of node: NodeID, by accuser: NodeID?, now: Milliseconds,
                                   into output: inout ActionBuffer) {
        guard let accuser, var member = state.members[node], var suspicion = member.suspicion,
              !suspicion.accusers.contains(accuser) else { return }
        suspicion.accusers.insert(accuser)
        let confirmations = suspicion.accusers.count - 1
        suspicion.deadline = max(now, suspicion.start + suspicionTimeout(confirmations: confirmations))
        member.suspicion = suspicion
        state.members[node] = member
        if accuser == settings.nodeID {
            // Our own independent suspicion is news to the others: it is what
            // lets their timers shrink too.
            enqueueBroadcast(MemberUpdate(node: node, status: .suspect, incarnation: member.incarnation,
                                          gossipAddress: member.gossipAddress, clientAddress: member.clientAddress,
                                          accuser: accuser))
        }
        state.suspicionDueAt = nil
        armSuspicionTimer(into: &output)
    }

    mutating func applyUpdateAboutSelf(_ update: MemberUpdate, into output: inout ActionBuffer) {
        guard state.phase == .running else { return }
        switch update.status {
        case .alive:
            // Someone holds a newer incarnation of us than we do (we restarted
            // with a clock behind our last run): move past it.
            guard update.incarnation > state.incarnation else { return }
            state.incarnation = update.incarnation + 1
        case .suspect, .dead, .left:
            guard update.incarnation >= state.incarnation else {
                // Someone still acts on a suspicion we refuted, whose refutation
                // missed it and may have stopped circulating: without a fresh
                // round of our `alive`, that suspicion would run out and
                // declare us dead while we answer every probe.
                enqueueBroadcast(selfUpdate)
                return
            }
            state.incarnation = update.incarnation + 1
            counters.refutations += 1
            // Lifeguard: being suspected hints that this node is the slow one.
            adjustHealth(+1)
        }
        enqueueBroadcast(selfUpdate)
    }

    // MARK: - Piggybacked updates

    var retransmitLimit: Int {
        let clusterSize = state.members.count + 1
        var log10Ceiling = 1
        var power = 10
        while power < clusterSize + 1 { power *= 10; log10Ceiling += 1 }
        return Self.retransmitMultiplier * log10Ceiling
    }

    mutating func enqueueBroadcast(_ update: MemberUpdate) {
        state.broadcasts[update.node] = Broadcast(update: update, transmits: 0)
    }

    /// Bytes left for updates in a control message whose payload, updates
    /// excluded, takes `fixedPayloadBytes`.
    func piggybackBudget(fixedPayloadBytes: Int) -> Int {
        let header = MessageCodec.lengthPrefixBytes + MessageCodec.headerFixedBytes
            + 1 + settings.nodeID.name.utf8.count + 1 + settings.gossipAddress.utf8.count
        return settings.maxControlMessageBytes - header - fixedPayloadBytes - MessageCodec.tagBytes
    }

    /// The least-sent updates that fit in `budget` bytes; each one taken counts
    /// as sent once and is forgotten after `retransmitLimit` sends.
    mutating func takeBroadcasts(budget: Int) -> [MemberUpdate] {
        guard !state.broadcasts.isEmpty else { return [] }
        let ordered = state.broadcasts.values.sorted {
            ($0.transmits, $0.update.node) < ($1.transmits, $1.update.node)
        }
        var remaining = budget
        var taken: [MemberUpdate] = []
        let limit = retransmitLimit
        for broadcast in ordered where taken.count < 255 {
            let size = broadcast.update.encodedBytes
            guard size <= remaining else { continue }
            remaining -= size
            taken.append(broadcast.update)
            let node = broadcast.update.node
            if broadcast.transmits + 1 >= limit {
                state.broadcasts[node] = nil
            } else {
                state.broadcasts[node]?.transmits += 1
            }
        }
        return taken
    }

    // MARK: - Sending

    mutating func sendPushPull(to address: String, isReply: Bool, into output: inout ActionBuffer) {
        var everyone = [selfUpdate]
        for node in state.members.keys.sorted() {
            guard let member = state.members[node] else { continue }
            everyone.append(MemberUpdate(node: node, status: member.status, incarnation: member.incarnation,
                                         gossipAddress: member.gossipAddress, clientAddress: member.clientAddress,
                                         accuser: member.suspicion?.accusers.min()))
        }
        send(.pushPull(isReply: isReply, members: everyone), to: address, lane: .bulk, into: &output)
    }

    mutating func send(_ payload: MessagePayload, to address: String, lane: Lane, into output: inout ActionBuffer) {
        let message = ClusterMessage(sender: settings.nodeID, senderGossipAddress: settings.gossipAddress,
                                     payload: payload)
        let frame = MessageCodec.encode(message, parameters: parameters, authenticator: authenticator)
        counters.sentByType[payload.type, default: 0] += 1
        output.append(.send(frame: frame, to: address, lane: lane))
    }
}
