import AegisStore

/// The hand-off of a lease from its holder H to a voter D that holds H's
/// writes (docs/shard-movement.md §4, Raft's leadership transfer), so that
/// the shard does not wait for H's promises to run out:
///
/// 1. `handOff`: H renews no more and sends D `handOffPrepare` with its term T.
/// 2. D asks every voter for T + 1 with the transfer bit. A voter still
///    promised to H (H itself included) checks the ask as any other and,
///    rather than refusing it as `leaseHeld` (or as `candidateBehind`: D
///    asks while H may still write), persists its vote for D at T + 1 and
///    answers `prepared`, keeping its promise to H.
/// 3. `release`: H lets its lease go (it writes nothing more at T) and sends
///    `handOffRelease` to every other voter, D included (D's own vote is
///    prepared like the others' while it is promised to H). A voter that prepared for D on H's
///    behalf now promises D from this moment and sends D the grant, which
///    answers D's round of step 2.
/// 4. D holds T + 1 on a majority of grants, dated from its ask of step 2.
///
/// Why no two leases overlap: D's lease starts from grants that exist only
/// after H let go (a prepared vote grants nothing), and counts from D's ask,
/// so it ends before any granter's promise to D does. Why no write is lost:
/// the caller freezes H's writes to the shard (from `handOff` on, or once
/// H's own vote is prepared, as a stopping server node does,
/// LeaseDriver.stepLeaving) and sends `release` only once D holds H's
/// newest write; a prepared vote grants only through that release, and a
/// voter not promised to H refuses D's ask if it is newer than D
/// (`candidateBehind`). A lost release or a dead D only costs the wait the
/// hand-off was to spare: the promises to H run out and an election follows.
///
/// A caller may also freeze and flush first and run `handOff` and `release`
/// in one step once D holds every write (a stopping server node did so
/// until its term writes moved out of the pause): D then asks holding every
/// write, and a voter the release reaches before D's ask ends its promise to
/// H there instead of preparing (`releasesBeforeAsk`). Every node a release
/// reaches takes D for the holder, for routing, until a promise says more
/// (`releasedTo`).
extension LeaseMachine {
    /// The node this one is handing the shard to, while it still holds it.
    public func handingOff(_ shard: Int, now: Milliseconds) -> NodeID? {
        holdsLease(shard, now: now) ? state.shards[shard].handingOffTo : nil
    }

    /// Whether a round this node opened may still win it a shard it does not
    /// hold (a hand-off's target asked the voters; the holder's release
    /// turns their prepared votes into grants). A stopping node waits for
    /// it (`LeaseDriver.stepLeaving`), so that the win, and the snapshot a
    /// stop writes for shards won, come before the exit: why, at
    /// `stopTakingLeases`.
    public func awaitsLeaseRound(now: Milliseconds) -> Bool {
        state.rounds.values.contains { round in
            round.sentAt + settings.leaseDurationMs > now && round.asked.contains { shard, entry in
                let lease = state.shards[shard]
                return lease.heldUntil == nil && lease.votedFor == settings.nodeID && entry.term == lease.term
            }
        }
    }

    /// Whether this node's own vote for `shard` is prepared for `candidate`:
    /// the candidate's transfer ask came here, and the candidate persisted
    /// its term before asking. A holder that sees it for its own hand-off
    /// knows that its release turns into a grant at once, with no term
    /// written after its writes pause.
    public func votePrepared(_ shard: Int, for candidate: NodeID) -> Bool {
        state.shards.indices.contains(shard) && state.shards[shard].prepared?.candidate == candidate
    }

    /// Starts the hand-off of each of `shards` to `target` that may be
    /// handed off now; one `handOffPrepare` carries them all, so the target
    /// persists its new terms with one write.
    mutating func handOff(_ shards: [Int], to target: NodeID, now: Milliseconds, into output: inout [LeaseAction]) {
        var items: [HandOffPrepare] = []
        for shard in shards where state.shards.indices.contains(shard) {
            let lease = state.shards[shard]
            func refuse(_ why: String) { output.append(.log(.info, "leases: shard \(shard) not handed to \(target): \(why)")) }
            guard holdsLease(shard, now: now), let until = lease.heldUntil else { refuse("this node does not hold its lease"); continue }
            guard target != settings.nodeID, replicaSet(shard).contains(target) else { refuse("it is not a voter of the shard"); continue }
            guard state.configPeers.contains(target) else { refuse("its build does not take hand-offs"); continue }
            guard lease.handingOffTo == nil else { refuse("it is being handed to \(lease.handingOffTo!) already"); continue }
            // Renewals stop now: the rest of this lease is all D has to win in.
            guard until - now >= settings.leaseDurationMs / 2 else {
                refuse("less than half a lease is left; it hands off right after a renewal")
                continue
            }
            state.shards[shard].handingOffTo = target
            counters.handOffsStarted += 1
            items.append(HandOffPrepare(shard: UInt32(shard), term: lease.heldTerm))
        }
        guard !items.isEmpty else { return }
        let message = LeaseMessage(sender: settings.nodeID, payload: .handOffPrepare(items))
        output.append(.send(frame: LeaseCodec.encode(message, parameters: settings.parameters, authenticator: authenticator), to: target))
        let named = items.count == 1 ? "shard \(items[0].shard)" : "\(items.count) shards"
        output.append(.log(.notice, "leases: \(named) being handed to \(target)\(items.count == 1 ? " at term \(items[0].term + 1)" : "")"))
    }

    mutating func abortHandOff(_ shard: Int, into output: inout [LeaseAction]) {
        guard state.shards.indices.contains(shard), let target = state.shards[shard].handingOffTo else { return }
        state.shards[shard].handingOffTo = nil
        output.append(.log(.notice, "leases: shard \(shard) hand-off to \(target) given up"))
    }

    /// D's side of step 2: one round asks every voter, with the transfer bit,
    /// for the term above each shard's holder's. A shard this node knows a
    /// newer term of, holds, or does not vote for is dropped.
    mutating func handOffPrepared(_ items: [HandOffPrepare], from holder: NodeID, now: Milliseconds,
                                  into output: inout [LeaseAction]) {
        let me = settings.nodeID
        guard !state.stopping else {
            counters.handOffsDeclinedStopping += UInt64(items.count)
            let named = items.count == 1 ? "shard \(items[0].shard)" : "\(items.count) shards"
            output.append(.log(.notice, "leases: \(named) offered by \(holder) not taken: this node is stopping; \(holder) keeps its term"))
            return
        }
        let round = state.nextRound
        var asked: [Int: RoundShard] = [:]
        var asksByPeer: [NodeID: [LeaseAsk]] = [:]
        for item in items {
            let shard = Int(item.shard)
            let lease = state.shards[shard]
            let replicas = replicaSet(shard)
            guard !state.emptyLearner, replicas.contains(me), replicas.contains(holder), lease.heldUntil == nil,
                  lease.term <= item.term, item.term < UInt32.max else {
                counters.staleHandOffs += 1
                continue
            }
            // Its own vote is a voter's like any other: promised to the
            // holder (it granted the holder's last renewal), it counts only
            // once the holder's release reaches it (simulator seed 150
            // --config-changes: counted at once, it made a majority with one
            // voter the holder had no promise from, while the holder held).
            let promisedToHolder = promisedToAnother(me, shard: shard, now: now)
            adopt(term: item.term + 1, votedFor: me, shard: shard, reason: "handed over by \(holder)", into: &output)
            state.shards[shard].campaignAfter = now + settings.leaseDurationMs
            if promisedToHolder, let grantee = state.shards[shard].grantee {
                state.shards[shard].prepared = PreparedGrant(candidate: me, term: item.term + 1, holder: grantee, round: round,
                                                             life: state.life, durationMs: settings.leaseDurationMs)
            } else {
                promise(me, shard: shard, durationMs: settings.leaseDurationMs, now: now)
            }
            asked[shard] = RoundShard(term: item.term + 1, configEpoch: lease.config?.epoch ?? 0,
                                      granters: promisedToHolder ? [] : [me])
            let ask = LeaseAsk(shard: item.shard, term: item.term + 1, lastVersion: lease.lastVersion,
                               mayHaveHole: lease.mayHaveHole, config: lease.config, transfer: true)
            for peer in replicas where peer != me && state.configPeers.contains(peer) {
                asksByPeer[peer, default: []].append(ask)
            }
        }
        startRound(asked: asked, asksByPeer: asksByPeer, now: now, into: &output)
    }

    /// A voter's side of step 2: the vote for the candidate is persisted now,
    /// the promise to the holder kept.
    mutating func prepareGrant(_ shard: Int, for candidate: NodeID, term: UInt32, round: UInt64, life: UInt64,
                               durationMs: Int64, into output: inout [LeaseAction]) {
        guard let holder = state.shards[shard].grantee else { return }
        adopt(term: term, votedFor: candidate, shard: shard, reason: "prepared for \(candidate), handed over by \(holder)",
              keepingLease: true, granted: false, into: &output)
        state.shards[shard].prepared = PreparedGrant(candidate: candidate, term: term, holder: holder, round: round,
                                                     life: life, durationMs: durationMs)
        counters.grantsPrepared += 1
    }

    /// `target` takes the shard: `believedHolder` for a lease, unless a
    /// promise says more.
    private mutating func rememberRelease(_ shard: Int, to target: NodeID, term: UInt32, now: Milliseconds) {
        state.shards[shard].releasedTo = target
        state.shards[shard].releasedToUntil = now + settings.leaseDurationMs
        state.shards[shard].releasedTerm = term
    }

    /// `requester` asks for the term above one its holder released to it:
    /// the holder released only once `requester` acknowledged its newest
    /// write, so whatever holes a restart left in `requester`'s copy, it has
    /// every write the newest holder made.
    func releaseSeen(to requester: NodeID, askingFor term: UInt32, shard: Int, now: Milliseconds) -> Bool {
        let lease = state.shards[shard]
        return lease.releasedTo == requester && now < lease.releasedToUntil && term == lease.releasedTerm &+ 1
    }

    /// Step 3 at a voter: the holder let go, so each vote prepared on its
    /// behalf becomes a promise to the candidate, from now, and a grant
    /// that answers the candidate's round.
    mutating func handOffReleased(_ items: [HandOffRelease], from holder: NodeID, now: Milliseconds,
                                  into output: inout [LeaseAction]) {
        var grants: [UInt64: (candidate: NodeID, life: UInt64, answers: [LeaseAnswer])] = [:]
        for item in items {
            let shard = Int(item.shard)
            let lease = state.shards[shard]
            guard let prepared = lease.prepared, prepared.holder == holder, prepared.candidate == item.to,
                  prepared.term == item.term + 1, lease.term == prepared.term, lease.votedFor == item.to,
                  lease.grantee == holder else {
                if lease.prepared == nil, lease.grantee == holder, lease.votedFor == holder, lease.term == item.term,
                   now < lease.grantExpiresAt {
                    // The release overtook the target's ask (a holder whose
                    // target holds its every write may release right after
                    // its prepare, as a stopping node does). The promise to
                    // the holder ends now, as the holder writes nothing more
                    // at this term, and the ask is judged as any other when
                    // it comes. Kept, it would answer the ask `prepared` for
                    // a release already gone, and the target's renewals
                    // `leaseHeld` until the promise ran out, after the lease
                    // the target won with the holder's own grant (seen
                    // between real processes when a node stopped). The term
                    // must match: a late release of an older lease of the
                    // holder's must not end the promise of the one it holds.
                    state.shards[shard].grantExpiresAt = now
                    rememberRelease(shard, to: item.to, term: item.term, now: now)
                    counters.releasesBeforeAsk += 1
                } else {
                    counters.staleHandOffs += 1
                }
                continue
            }
            state.shards[shard].prepared = nil
            state.shards[shard].votedForLife = prepared.life
            rememberRelease(shard, to: item.to, term: item.term, now: now)
            promise(item.to, shard: shard, durationMs: prepared.durationMs, now: now)
            state.shards[shard].reportedTerm = max(lease.reportedTerm, prepared.term)
            counters.preparedGrantsReleased += 1
            if prepared.candidate == settings.nodeID {
                // This node is the target: its own vote joins its round.
                let me = settings.nodeID
                state.rounds[prepared.round]?.asked[shard]?.granters.insert(me)
                countGrants(round: prepared.round, shard: shard, now: now, into: &output)
                continue
            }
            let answer = LeaseAnswer(shard: item.shard, term: prepared.term, verdict: .granted,
                                     voterTerm: lease.term, grantedTerm: state.shards[shard].reportedTerm)
            grants[prepared.round, default: (item.to, prepared.life, [])].answers.append(answer)
        }
        for round in grants.keys.sorted() {
            let grant = grants[round]!
            let reply = LeaseMessage(sender: settings.nodeID,
                                     payload: .replyWithConfig(round: round, life: grant.life, answers: grant.answers))
            output.append(.send(frame: LeaseCodec.encode(reply, parameters: settings.parameters, authenticator: authenticator),
                                to: grant.candidate))
        }
    }

    /// Gives the leases of `shards` up: the end of their hand-offs (step 3),
    /// or of a joint configuration that leaves this node out. It writes
    /// nothing more at their terms, so its own vote may go to the next
    /// holder at once: a prepared one becomes a grant, and its promise to
    /// itself goes. Each voter gets one release frame for all of them.
    mutating func release(_ shards: [Int], now: Milliseconds, into output: inout [LeaseAction]) {
        var releasesTo: [NodeID: [HandOffRelease]] = [:]
        var released: [String: [Int]] = [:]
        for shard in shards where state.shards.indices.contains(shard) && state.shards[shard].heldUntil != nil {
            let lease = state.shards[shard]
            state.shards[shard].heldUntil = nil
            // Its term may be unchanged: grants of a renewal still on their way
            // must not win the lease back (simulator seed 150 --config-changes:
            // a released holder re-acquired from a late round while the target
            // of its hand-off held the next term).
            forgetRounds(of: shard)
            if let target = lease.handingOffTo {
                state.shards[shard].handingOffTo = nil
                rememberRelease(shard, to: target, term: lease.heldTerm, now: now)
                counters.handOffsReleased += 1
                let item = HandOffRelease(shard: UInt32(shard), term: lease.heldTerm, to: target, lastVersion: lease.lastVersion)
                handOffReleased([item], from: settings.nodeID, now: now, into: &output)
                for peer in replicaSet(shard) where peer != settings.nodeID && state.configPeers.contains(peer) {
                    releasesTo[peer, default: []].append(item)
                }
            }
            if state.shards[shard].grantee == settings.nodeID { state.shards[shard].grantExpiresAt = .min }
            // Its granters' promises do not bind it: it stands back as long as a
            // candidate told it is behind does, so that another voter is elected.
            let standBack = behindStandBackMs(shard)
            state.shards[shard].campaignAfter = max(state.shards[shard].campaignAfter, now + standBack)
            output.append(.leaseLost(shard: shard, reason: .released))
            released["\(lease.handingOffTo.map { " to \($0)" } ?? "") under \(lease.config.map(\.description) ?? "no config")", default: []].append(shard)
        }
        // One line per target and configuration: a stopping node releases
        // a hundred shards in one pass, which must not wait on a hundred lines.
        for (toUnder, shards) in released.sorted(by: { $0.key < $1.key }) {
            let named = shards.count == 1 ? "shard \(shards[0])" : "\(shards.count) shards (\(shards.map(String.init).joined(separator: ",")))"
            output.append(.log(.notice, "leases: \(named) released\(toUnder)"))
        }
        for (peer, items) in releasesTo.sorted(by: { $0.key < $1.key }) {
            let message = LeaseMessage(sender: settings.nodeID, payload: .handOffRelease(items))
            output.append(.send(frame: LeaseCodec.encode(message, parameters: settings.parameters, authenticator: authenticator), to: peer))
        }
    }
}
