import AegisStore

extension LeaseMachine {
    // MARK: - The tick: renew, campaign, send one request per peer

    mutating func tick(now: Milliseconds, into output: inout [LeaseAction]) {
        output.append(.setTimer(.tick, at: now + settings.tickIntervalMs))
        expire(now: now, into: &output)
        state.rounds = state.rounds.filter { $0.value.sentAt + settings.leaseDurationMs > now }
        guard !state.emptyLearner else {
            armExpiry(into: &output)
            return
        }
        let me = settings.nodeID
        var asked: [Int: RoundShard] = [:]
        var asksByPeer: [NodeID: [LeaseAsk]] = [:]
        for shard in state.shards.indices {
            // With no configuration and no placement (a node that knows only
            // itself while it has seeds) the set is empty: alone, it would be
            // its own majority.
            let replicas = replicaSet(shard)
            guard replicas.contains(me), shouldAsk(shard, replicas: replicas, now: now, into: &output) else { continue }
            let lease = state.shards[shard]
            promise(me, shard: shard, durationMs: settings.leaseDurationMs, now: now)
            asked[shard] = RoundShard(term: lease.term, configEpoch: lease.config?.epoch ?? 0, granters: [me],
                                      blankGranters: lease.blank ? [me] : [])
            let ask = LeaseAsk(shard: UInt32(shard), term: lease.term, lastVersion: lease.lastVersion,
                               mayHaveHole: lease.mayHaveHole, config: lease.config)
            for peer in replicas where peer != me { asksByPeer[peer, default: []].append(ask) }
        }
        startRound(asked: asked, asksByPeer: asksByPeer, now: now, into: &output)
        armExpiry(into: &output)
    }

    /// Opens a round dated `now` for the shards in `asked` and sends each
    /// peer its asks in one request, in the form it decodes (transfer asks
    /// go only to peers that decode `requestWithConfig`).
    mutating func startRound(asked: [Int: RoundShard], asksByPeer: [NodeID: [LeaseAsk]], now: Milliseconds,
                             into output: inout [LeaseAction]) {
        guard !asked.isEmpty else { return }
        let round = state.nextRound
        state.nextRound += 1
        state.rounds[round] = Round(sentAt: now, asked: asked)
        // A replica set of one is its own majority.
        for shard in asked.keys.sorted() { countGrants(round: round, shard: shard, now: now, into: &output) }
        for peer in asksByPeer.keys.sorted() {
            let asks = asksByPeer[peer]!
            let durationMs = UInt32(settings.leaseDurationMs)
            let payload: LeasePayload = if state.configPeers.contains(peer) {
                .requestWithConfig(round: round, life: state.life, durationMs: durationMs, asks: asks)
            } else if state.copyStatePeers.contains(peer) {
                .requestWithCopyState(round: round, life: state.life, durationMs: durationMs, asks: asks)
            } else {
                .request(round: round, life: state.life, durationMs: durationMs, asks: asks)
            }
            let message = LeaseMessage(sender: settings.nodeID, payload: payload)
            output.append(.send(frame: LeaseCodec.encode(message, parameters: settings.parameters,
                                                         authenticator: authenticator), to: peer))
        }
    }

    /// Grants still on their way for the shard will count for nothing: its
    /// campaign gave way, or its lease was let go at an unchanged term.
    mutating func forgetRounds(of shard: Int) {
        for round in state.rounds.keys { state.rounds[round]?.asked[shard] = nil }
    }

    /// Whether this tick asks for the shard: always when renewing a held
    /// lease; for a campaign only when no promise of this node to another is
    /// live and this node is the one that should try now. A campaign moves
    /// to term + 1, persisted before anything is sent.
    mutating func shouldAsk(_ shard: Int, replicas: [NodeID], now: Milliseconds,
                            into output: inout [LeaseAction]) -> Bool {
        let me = settings.nodeID
        let lease = state.shards[shard]
        if lease.heldUntil != nil {
            // Handing the shard off, the holder renews nothing: the voters
            // have voted for the next term, and its lease runs out unless it
            // releases the shard first.
            if lease.handingOffTo != nil { return false }
            if lease.refusedByTerm >= lease.term, lease.refusedByTerm < UInt32.max {
                // A replica sits at a term this lease cannot reach (its own
                // failed campaigns, cut off in a minority): it refuses every
                // renewal, so it neither grants nor knows the holder. Renewing
                // at a term above it is a campaign by the holder, who keeps the
                // lease it holds until that lease ends or the new term is won;
                // its writes keep the held term until then (`heldTerm`).
                adopt(term: lease.refusedByTerm + 1, votedFor: me, shard: shard,
                      reason: "renewal at a new term: a replica refused term \(lease.term) at its term \(lease.refusedByTerm)",
                      keepingLease: true, into: &output)
                state.shards[shard].refusedByTerm = 0
            }
            return true
        }
        if lease.votedFor == me && lease.grantee == me && now < lease.grantExpiresAt && lease.term > 0 {
            // Campaign still in flight: its replies may yet come.
            return false
        }
        guard !state.stopping, lease.term < UInt32.max, now >= state.quietUntil, now >= lease.campaignAfter,
              now >= lease.standBackUntil, !promisedToAnother(me, shard: shard, now: now) else { return false }
        // Empty learners never campaign: ranking them would only delay the rest.
        let liveReplicas = replicas.filter { state.alive.contains($0) && !state.learners.contains($0) }
        guard let rank = liveReplicas.firstIndex(of: me) else { return false }
        if rank > 0 && now >= lease.campaignsFirstUntil {
            // The preferred candidate (the first live replica) goes first; the
            // others step in only after a silence that grows with their rank.
            let silentSince = max(lease.grantExpiresAt, state.quietUntil, lease.standBackUntil)
            guard now >= silentSince + settings.electionTimeoutMs * Int64(rank) else { return false }
        }
        let term = lease.term + 1
        let why = rank == 0 ? "the preferred replica"
            : now < lease.campaignsFirstUntil ? "replica \(rank + 1), newer than a candidate it refused"
            : "replica \(rank + 1) after a silence"
        adopt(term: term, votedFor: me, shard: shard, reason: "campaign: no live lease and this node is \(why)", into: &output)
        counters.electionsStarted += 1
        let jitter = Int64.random(in: 0..<settings.leaseDurationMs, using: &state.random)
        state.shards[shard].campaignAfter = now + settings.leaseDurationMs + jitter
        return true
    }

    /// Counts a round's grants for one shard; a majority makes this node the
    /// holder until the round's send time plus one lease.
    mutating func countGrants(round: UInt64, shard: Int, now: Milliseconds, into output: inout [LeaseAction]) {
        guard let entry = state.rounds[round]?.asked[shard] else { return }
        let lease = state.shards[shard]
        guard entry.term == lease.term, lease.votedFor == settings.nodeID,
              entry.configEpoch == lease.config?.epoch ?? 0, wins(entry, shard: shard),
              let sentAt = state.rounds[round]?.sentAt else { return }
        let until = sentAt + settings.leaseDurationMs
        guard until > now else { return }
        if let held = lease.heldUntil {
            guard until > held else { return }
            state.shards[shard].heldUntil = until
            state.shards[shard].heldTerm = lease.term
            state.shards[shard].reportedTerm = max(state.shards[shard].reportedTerm, lease.term)
            output.append(.leaseExtended(shard: shard, term: lease.term, until: until))
            configWon(shard, into: &output)
        } else {
            state.shards[shard].heldUntil = until
            state.shards[shard].heldTerm = lease.term
            state.shards[shard].refusedByTerm = 0
            state.shards[shard].reportedTerm = max(state.shards[shard].reportedTerm, lease.term)
            // Won, its copy is the one the followers are brought to (a
            // stream replaces theirs): nothing any of them holds beyond it
            // is a hole of this copy any more, and as a candidate again it
            // must not be refused by the followers it streamed to.
            state.shards[shard].mayHaveHole = false
            state.shards[shard].blank = false
            counters.electionsWon += 1
            output.append(.leaseAcquired(shard: shard, term: lease.term, until: until))
            if !entry.blankGranters.isEmpty {
                // Blank voters learn that this node won only from its
                // renewal (`blankCopyIsComplete`), and stay blank until then:
                // killed before its first tick, the new holder left the
                // others no majority to replace it with. It renews now.
                output.append(.setTimer(.tick, at: now))
            }
            state.shards[shard].heldConfigEpoch = 0
            state.shards[shard].handingOffTo = nil
            configWon(shard, into: &output)
        }
    }

    /// Whether a round's grants make this node the holder: a majority, in
    /// which blank grants (`ShardLease.blank`) count only beside a majority
    /// of other grants, or with every voter's. A voter that refuses may hold
    /// the writes the blank ones lack (two wiped replicas elected each other
    /// while the third, which held the writes, refused). One that does not
    /// answer may be the holder of a term a blank voter granted in an
    /// earlier life: counted without it (as membership held it gone), a
    /// wiped node's second vote in that term made a second holder of it
    /// (`aegiskv-sim --seed 9600838 --wipes-look-new`). A blank voter
    /// answers a holder's renewals `granted`: it voted for that holder's
    /// term in this life already.
    func wins(_ entry: RoundShard, shard: Int) -> Bool {
        guard isMajority(entry.granters, ofShard: shard) else { return false }
        if entry.blankGranters.isEmpty || isMajority(entry.granters.subtracting(entry.blankGranters), ofShard: shard) {
            return true
        }
        return replicaSet(shard).allSatisfy(entry.granters.contains)
    }

    // MARK: - Expiry

    mutating func expire(now: Milliseconds, into output: inout [LeaseAction]) {
        for shard in state.shards.indices {
            guard let until = state.shards[shard].heldUntil, until <= now else { continue }
            state.shards[shard].heldUntil = nil
            output.append(.leaseLost(shard: shard, reason: .expired))
        }
    }

    func armExpiry(into output: inout [LeaseAction]) {
        if let earliest = state.shards.compactMap(\.heldUntil).min() {
            output.append(.setTimer(.expiry, at: earliest))
        }
    }

    // MARK: - Frames in

    mutating func receive(frame: [UInt8], now: Milliseconds, into output: inout [LeaseAction]) {
        switch LeaseCodec.decode(frame: frame, parameters: settings.parameters, authenticator: authenticator) {
        case let .dropped(reason):
            counters.droppedByReason[reason, default: 0] += 1
        case let .message(message):
            switch message.payload {
            case let .request(round, life, durationMs, asks), let .requestWithCopyState(round, life, durationMs, asks),
                 let .requestWithConfig(round, life, durationMs, asks):
                answer(message.sender, round: round, life: life, durationMs: Int64(durationMs), asks: asks,
                       form: message.payload.type, now: now, into: &output)
            case let .reply(round, life, answers), let .replyWithConfig(round, life, answers):
                received(answers, from: message.sender, round: round, life: life, now: now, into: &output)
            case let .handOffPrepare(items):
                handOffPrepared(items, from: message.sender, now: now, into: &output)
            case let .handOffRelease(items):
                handOffReleased(items, from: message.sender, now: now, into: &output)
            }
        }
    }

    /// The voter's side: one reply answers every shard of the request, in
    /// the reply form that goes with the request's `form`. Only
    /// `requestWithCopyState` and `requestWithConfig` carry `mayHaveHole`
    /// (in the oldest form, false says nothing), and only the latter the
    /// asker's config.
    mutating func answer(_ requester: NodeID, round: UInt64, life: UInt64, durationMs: Int64, asks: [LeaseAsk],
                         form: LeaseMessageType, now: Milliseconds, into output: inout [LeaseAction]) {
        guard requester != settings.nodeID else { return }
        let configKnown = form == .requestWithConfig
        let copyStateKnown = configKnown || form == .requestWithCopyState
        var answers: [LeaseAnswer] = []
        answers.reserveCapacity(asks.count)
        for ask in asks {
            let shard = Int(ask.shard)
            if let theirs = ask.config { adoptConfig(theirs, shard: shard, from: requester, into: &output) }
            if copyStateKnown && !ask.mayHaveHole { noteWholeClaim(shard, ask.lastVersion, of: requester, now: now) }
            let lease = state.shards[shard]
            // A holder renewing the term this node granted it in this life.
            let renewal = ask.term == lease.term && lease.votedFor == requester && lease.votedForLife == life
            if yieldsTo(ask, from: requester, copyStateKnown: copyStateKnown, now: now) {
                yield(shard, to: requester, now: now, into: &output)
            }
            let verdict = verdict(on: ask, from: requester, renewal: renewal, durationMs: durationMs, configKnown: configKnown,
                                  now: now)
            if verdict.grants && state.shards[shard].grantee == settings.nodeID {
                // This node's own campaign gives way (see `mayAbandonCampaign`):
                // grants still on their way for it must never count.
                forgetRounds(of: shard)
            }
            if verdict.grants || verdict == .prepared {
                state.shards[shard].grantedClaimBy = requester
                state.shards[shard].grantedClaim = ask.lastVersion
                state.shards[shard].grantedClaimRenews = verdict.grants && renewal
            }
            if verdict.grants {
                adopt(term: ask.term, votedFor: requester, shard: shard, reason: "voted for \(requester)", into: &output)
                state.shards[shard].votedForLife = life
                promise(requester, shard: shard, durationMs: durationMs, now: now)
            } else if verdict == .prepared {
                prepareGrant(shard, for: requester, term: ask.term, round: round, life: life, durationMs: durationMs,
                             into: &output)
            } else if verdict == .candidateBehind, ask.term > state.shards[shard].term, state.shards[shard].heldUntil == nil {
                // The asker stands back (it cannot win until it catches up),
                // and this node, whose copy is newer, campaigns now and at a
                // term above the asker's. At the asker's own term it met the
                // asker's vote for itself and lost too; the shard then had no
                // holder until both campaigns' backoffs ran out (13 s with
                // the defaults, a killed node's shard under perf/shard-move).
                adopt(term: ask.term, votedFor: nil, shard: shard, reason: "refused \(requester) as behind this copy",
                      granted: false, into: &output)
                state.shards[shard].campaignsFirstUntil = now + settings.leaseDurationMs
            } else if verdict == .staleTerm {
                counters.staleTermAsks += 1
            } else if verdict == .restarting {
                state.shards[shard].askedWhileQuietBy = requester
                state.shards[shard].askedWhileQuietUntil = now + durationMs
                // The asker holds or seeks the lease: campaigning at the end
                // of the quiet, before its next renewal came, this node
                // refused that renewal at the term it had just voted itself,
                // and the shard churned through terms (a joined node's /ready
                // 4.5 s in most runs, 17-23 s in 2 of 9). Two ticks past the
                // quiet the next renewal has been granted here; if none
                // came, the asker is gone and this node campaigns.
                let renewalDue = state.quietUntil + 2 * settings.tickIntervalMs
                state.shards[shard].campaignAfter = max(state.shards[shard].campaignAfter, renewalDue)
            }
            counters.answersByVerdict[verdict, default: 0] += 1
            answers.append(LeaseAnswer(shard: ask.shard, term: ask.term, verdict: verdict,
                                       voterTerm: state.shards[shard].term,
                                       grantedTerm: state.shards[shard].reportedTerm,
                                       config: verdict == .configStale ? state.shards[shard].config : nil))
        }
        let payload: LeasePayload = configKnown ? .replyWithConfig(round: round, life: life, answers: answers)
            : .reply(round: round, life: life, answers: answers)
        let reply = LeaseMessage(sender: settings.nodeID, payload: payload)
        output.append(.send(frame: LeaseCodec.encode(reply, parameters: settings.parameters, authenticator: authenticator),
                            to: requester))
    }

    /// `configKnown`: the ask came in the form that carries the asker's
    /// config (its absence then means the asker has none).
    mutating func verdict(on ask: LeaseAsk, from requester: NodeID, renewal: Bool, durationMs: Int64, configKnown: Bool,
                          now: Milliseconds) -> LeaseVerdict {
        let shard = Int(ask.shard)
        let lease = state.shards[shard]
        if state.emptyLearner { return .emptyLearner }
        if state.grantsPaused { return .notEnforcing }
        if let mine = lease.config {
            // An asker that cannot say which voters it counts may count the
            // map's owners, whose majority need not meet this config's.
            guard configKnown else { return .notReplica }
            // Of two configurations of one epoch at most one is committed:
            // granting under the asker's would count this voter for a
            // configuration it has not persisted.
            if (ask.config?.epoch ?? 0) < mine.epoch || (ask.config?.epoch == mine.epoch && ask.config != mine) {
                return .configStale
            }
        }
        let replicas = replicaSet(shard)
        guard replicas.contains(settings.nodeID), replicas.contains(requester) else { return .notReplica }
        if durationMs > settings.leaseDurationMs { return .durationTooLong }
        if ask.term < lease.term { return .staleTerm }
        if now < state.quietUntil { return .restarting }
        // A transfer ask from the node the holder hands the shard to is
        // checked like any other, and prepared rather than granted.
        let heldByAnother = promisedToAnother(requester, shard: shard, now: now) && !mayAbandonCampaign(shard, for: ask)
        if heldByAnother && !(ask.transfer && configKnown) { return .leaseHeld }
        if ask.term == lease.term, let voted = lease.votedFor, voted != requester { return .votedOther }
        // A vote prepared for a hand-off's target grants only through the
        // holder's release, which the holder sends once the target holds its
        // every write: the target may ask while the holder still writes (the
        // two-phase hand-off persists the new term before writes pause), and
        // refused as behind then, the hand-off would wait for a term write
        // after the freeze.
        if !renewal && !heldByAnother && ask.lastVersion < lease.lastVersion { return .candidateBehind }
        // A hand-off's target may have a holed copy (it restarted) and yet
        // hold every write its holder made: the holder releases to it only
        // once it acknowledged the newest. Refused for the hole, the shard
        // had no holder until the stand-backs ran out (writes refused for
        // 30 s and more when a node held its shards since the cluster
        // started and both others had restarted). So a transfer ask is not
        // refused for a hole where the vote counts only through the
        // holder's release (prepared), or the release to it was seen here.
        let vouchedByHolder = ask.transfer && (heldByAnother || releaseSeen(to: requester, askingFor: ask.term, shard: shard, now: now))
        if !renewal && !vouchedByHolder && refusesHoledCandidate(shard, ask: ask, from: requester, now: now) {
            counters.holedCandidatesRefused += 1
            return .candidateBehind
        }
        if heldByAnother { return .prepared }
        // A blank voter's grant for a new lease counts only where every voter
        // granted; a holder's renewal, and a hand-off its holder vouches for,
        // are no election. The older reply forms cannot say so: refused as a
        // learner's, which leaves the majority to the other voters.
        if lease.blank && !renewal && !vouchedByHolder { return configKnown ? .grantedBlank : .emptyLearner }
        return .granted
    }

    /// A candidate whose copy may have a hole claims writes it may lack, and
    /// a voter whose copy is whole may hold them (chaos seed 12 at W = 2: a
    /// restarted holder won with such a voter's grant and streamed its holed
    /// copy over it). The voter refuses it while the shard's other live
    /// replicas (this one included; empty learners and replicas whose last
    /// grant here was blank not) are a majority: they can elect one of
    /// themselves. Otherwise every majority needs the
    /// candidate, and refusing it would leave the shard with no holder (the
    /// candidate, voting on versions, refuses this voter if it is behind):
    /// the voter then decides on versions alone, as before the check. So
    /// does a voter with nothing (it loses nothing) or whose own copy may
    /// have a hole (after a whole replica set restarted every copy may have
    /// one, and someone must win), unless it knows of a whole one (below).
    /// Except a candidate that claims no more than the voter holds whole:
    /// refusing it costs no holder, since the voter, campaigning, has all the
    /// candidate claims and the candidate, voting on versions, grants it
    /// (simulator seed 7000367: a holed copy that replication had brought to
    /// the keeper's own newest version won, complete through nothing).
    func refusesHoledCandidate(_ shard: Int, ask: LeaseAsk, from requester: NodeID, now: Milliseconds) -> Bool {
        let lease = state.shards[shard]
        guard ask.mayHaveHole else { return false }
        if !lease.mayHaveHole && lease.lastVersion != .zero {
            if ask.lastVersion <= lease.lastVersion { return true }
            // A blank replica's grant does not make a majority with this one's.
            let others = replicaSet(shard).filter {
                $0 != requester && state.alive.contains($0) && !state.learners.contains($0) && !lease.blankPeers.contains($0)
            }
            if isMajority(Set(others), ofShard: shard) { return true }
        }
        // A voter that cannot tell whether its own copy is whole still knows
        // of a live replica whose copy is, and claims at least as much as
        // the candidate and this voter: that one can win with this voter's
        // grant and loses nothing the candidate holds, so it should win.
        // (Simulator seed 1001238: a voter that restarted too, its log in
        // fact holding all it had, elected the holed copy while the whole one
        // backed off from a round whose grants were lost.)
        return now < lease.wholeClaimSeenUntil && ask.lastVersion <= lease.wholeClaimSeen
            && lease.lastVersion <= lease.wholeClaimSeen
    }

    /// Whether this holder lets its lease go for `ask`: a campaign for a
    /// newer term by a replica whose copy is whole through a version newer
    /// than this holder's. Every write this holder made is below that claim
    /// (a write at a term it held would be newer than every earlier
    /// holder's), so the candidate's copy holds them all, and writes the
    /// holder lacks besides. After a full cluster recovery the shard's last
    /// holder, whose last vote went to the replica it was handing the shard
    /// to as the nodes stopped, stands back longest; the preferred replica,
    /// whole through older writes, won first with the third replica's
    /// grant. Held on, that holder kept the lease with the third replica's
    /// grants while the newer one refused every renewal as behind its copy
    /// and campaigned a term above it, for ever: it never said it served
    /// the shard (the runbook's full cluster recovery waited 90 s for
    /// /health), and the holder's stream would have replaced its newer writes.
    func yieldsTo(_ ask: LeaseAsk, from requester: NodeID, copyStateKnown: Bool, now: Milliseconds) -> Bool {
        let shard = Int(ask.shard)
        let lease = state.shards[shard]
        guard holdsLease(shard, now: now), lease.handingOffTo == nil, copyStateKnown, !ask.mayHaveHole, !ask.transfer,
              ask.term > lease.term, replicaSet(shard).contains(requester) else { return false }
        return ask.lastVersion > lease.lastVersion
    }

    /// Lets the lease go for a newer whole copy (`yieldsTo`); the ask is
    /// then judged as any other, so granted unless its config is stale.
    /// The holder stands back as a candidate told it is behind does.
    mutating func yield(_ shard: Int, to candidate: NodeID, now: Milliseconds, into output: inout [LeaseAction]) {
        state.shards[shard].heldUntil = nil
        forgetRounds(of: shard)
        if state.shards[shard].grantee == settings.nodeID { state.shards[shard].grantExpiresAt = .min }
        let standBack = behindStandBackMs(shard)
        state.shards[shard].campaignAfter = max(state.shards[shard].campaignAfter, now + standBack)
        output.append(.leaseLost(shard: shard, reason: .newerWholeCopy(candidate)))
    }

    /// How long a node that should not be elected now stands back: longer
    /// than any replica's rank wait, so that the up-to-date one campaigns
    /// alone (a candidate told it is behind, a holder that released or
    /// yielded).
    func behindStandBackMs(_ shard: Int) -> Milliseconds {
        settings.leaseDurationMs + Int64(replicaSet(shard).count + 1) * settings.electionTimeoutMs
    }

    /// A candidate whose copy is whole asked with this claim: remembered for
    /// as long as such a candidate may take between two campaigns (the
    /// stand-back of one told it is behind, plus its rank wait), so that a
    /// whole replica that stopped asking (dead, cut off) is forgotten.
    mutating func noteWholeClaim(_ shard: Int, _ claim: EntryVersion, of requester: NodeID, now: Milliseconds) {
        // A whole claim of nothing is no reason to refuse anyone: whichever
        // wins holds nothing (the candidate claims no more). Remembered, it
        // left three blank replicas of a shard no write reached, two of them
        // restarted, with no holder (seed 5500000 with `--wipes-look-new
        // --quick-restarts --restart-cascades`): the holed two deferred to
        // the third, which campaigned only at the term they had just spent.
        guard claim > .zero else { return }
        let replicas = replicaSet(shard)
        guard replicas.contains(requester) else { return }
        let lease = state.shards[shard]
        let remembered = settings.leaseDurationMs + Int64(2 * replicas.count + 1) * settings.electionTimeoutMs
        if now >= lease.wholeClaimSeenUntil || claim >= lease.wholeClaimSeen {
            state.shards[shard].wholeClaimSeen = now >= lease.wholeClaimSeenUntil ? claim : max(claim, lease.wholeClaimSeen)
            state.shards[shard].wholeClaimSeenUntil = now + remembered
        }
    }

    /// A node's promise to itself is what lets it count itself in its own
    /// majority. While it holds no lease it may drop that promise for a
    /// candidate of a higher term, provided it never counts the grants of its
    /// own campaign afterwards: otherwise a candidate that cannot win (it is
    /// behind) would block, with its own promise, the one that can.
    func mayAbandonCampaign(_ shard: Int, for ask: LeaseAsk) -> Bool {
        let lease = state.shards[shard]
        return lease.grantee == settings.nodeID && lease.heldUntil == nil && ask.term > lease.term
    }

    /// The requester's side: grants count toward the round's majority; a
    /// higher term anywhere is adopted at once (demoting a holder).
    mutating func received(_ answers: [LeaseAnswer], from voter: NodeID, round: UInt64, life: UInt64,
                           now: Milliseconds, into output: inout [LeaseAction]) {
        guard life == state.life, state.rounds[round] != nil else {
            counters.staleReplies += 1
            return
        }
        for answer in answers {
            let shard = Int(answer.shard)
            guard var entry = state.rounds[round]?.asked[shard] else {
                counters.staleReplies += 1
                continue
            }
            if answer.verdict == .configStale, let theirs = answer.config {
                // The next campaign or renewal asks the voters of the newer one.
                adoptConfig(theirs, shard: shard, from: voter, into: &output)
                configConflict(theirs, shard: shard, into: &output)
            }
            let holding = state.shards[shard].heldUntil != nil
            if answer.grantedTerm > state.shards[shard].term {
                adopt(term: answer.grantedTerm, votedFor: nil, shard: shard,
                      reason: "\(voter) knows term \(answer.grantedTerm) was granted", into: &output)
                continue
            }
            if answer.voterTerm > state.shards[shard].term && !holding {
                adopt(term: answer.voterTerm, votedFor: nil, shard: shard,
                      reason: "\(voter) is at term \(answer.voterTerm)", granted: false, into: &output)
                continue
            }
            if holding, entry.term == state.shards[shard].term,
               answer.verdict == .staleTerm || answer.verdict == .votedOther {
                state.shards[shard].refusedByTerm = max(state.shards[shard].refusedByTerm, answer.voterTerm)
            }
            if answer.verdict == .emptyLearner {
                state.learners.insert(voter)
            } else {
                state.learners.remove(voter)
            }
            if answer.verdict == .candidateBehind {
                // It cannot win until it catches up: stand back longer than any
                // other replica's rank wait, so the up-to-date one campaigns alone.
                let standBack = behindStandBackMs(shard)
                state.shards[shard].campaignAfter = max(state.shards[shard].campaignAfter, now + standBack)
            }
            let blankGrant = answer.verdict == .grantedBlank
            if blankGrant {
                state.shards[shard].blankPeers.insert(voter)
            } else if answer.verdict == .granted {
                state.shards[shard].blankPeers.remove(voter)
            }
            guard answer.verdict.grants, entry.term == answer.term else { continue }
            entry.granters.insert(voter)
            if blankGrant { entry.blankGranters.insert(voter) } else { entry.blankGranters.remove(voter) }
            state.rounds[round]?.asked[shard] = entry
            countGrants(round: round, shard: shard, now: now, into: &output)
        }
        armExpiry(into: &output)
    }
}
