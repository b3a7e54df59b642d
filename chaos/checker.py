"""The chaos checker: reads a history (JSON lines) and judges it.

A history holds every client operation with its invoke and complete times
(one monotonic clock, the runner's) and its outcome: "ok" (acknowledged),
"fail" (an error reply that says the request ran nowhere), "error" or
"timeout". "error" and "timeout" are indeterminate: a link that broke after
the request left, or a timeout, says nothing about whether the write was
applied, so the checker lets such a write have happened at any time after its
invoke (even after the run's end: a forwarded request can land late). A
"fail" write never happened: seeing its value, or counting its increment, is
a violation.

SET values are unique, so a value read names the one write that made it.

Per register key, the value read after healing must come from a write that no
acknowledged write strictly follows (invoked after it completed); "absent"
must come from a DEL with that property, or from the start when no write to
the key was acknowledged. Otherwise:
  - lost-write:      absent, but an acknowledged SET is not superseded
  - lost-update:     the value of a write an acknowledged write superseded,
                     where that later write was a SET
  - resurrected:     the value of a SET an acknowledged DEL superseded
  - phantom:         a value no write produced (always a violation)
  - failed-visible:  the value of a SET whose reply said it ran nowhere
                     (always a violation)
  - divergent:       nodes answered differently for one key after healing
                     (always a violation: they all route to one primary)
Per counter key (INCR only), with A acknowledged increments, I indeterminate
ones and R the highest value an acknowledged INCR returned:
  - lost-increments: final < max(A, R)
  - phantom-increments: final > A + I (always a violation)
  - duplicate-incr:  two acknowledged INCRs returned the same value (an
                     increment was applied on a copy that missed another)
During the run, a GET may be stale but must not return a value no write made
(phantom-read) or one whose SET was invoked after the GET completed
(future-read); both are always violations.

Which kinds fail the verdict: the always-violations above, and at a write
quorum W >= 2 the losses too. At W = 0 and 1 the losses are what asynchronous
replication gives up: they are counted and reported, and fail only with
strict=True.
"""
import collections
import json

ALWAYS = ("phantom", "failed-visible", "divergent", "phantom-increments", "phantom-read", "future-read", "unread")
LOSSES = ("lost-write", "lost-update", "resurrected", "lost-increments", "duplicate-incr")

INDETERMINATE_END = float("inf")


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class Report:
    def __init__(self, write_quorum, strict):
        self.write_quorum = write_quorum
        self.strict = strict
        self.findings = []  # (kind, key, detail)
        self.counts = collections.Counter()
        self.lost_at = []  # (kind, completion time of the lost acknowledged write)

    def add(self, kind, key, detail, at=None):
        """`at`: when the lost operation completed, to tell which fault lost it."""
        self.findings.append((kind, key, detail))
        self.counts[kind] += 1
        if at is not None:
            self.lost_at.append((kind, at))

    def failing_kinds(self):
        fails = set(ALWAYS)
        if self.write_quorum >= 2 or self.strict:
            fails |= set(LOSSES)
        return fails

    @property
    def violations(self):
        fails = self.failing_kinds()
        return [f for f in self.findings if f[0] in fails]

    @property
    def ok(self):
        return not self.violations

    def summary_lines(self, examples=5):
        lines = []
        for kind in ALWAYS + LOSSES:
            n = self.counts.get(kind, 0)
            if n:
                role = "VIOLATION" if kind in self.failing_kinds() else "counted"
                lines.append(f"  {kind}: {n} ({role})")
                for _, key, detail in [f for f in self.findings if f[0] == kind][:examples]:
                    lines.append(f"    {key}: {detail}")
        return lines


def _end(op):
    return op["complete"] if op["result"] == "ok" else INDETERMINATE_END


def _superseded_by(write, acked):
    """The acknowledged writes invoked after `write` completed (strictly later in real time)."""
    end = _end(write)
    return [w for w in acked if w["invoke"] > end]


def check_register(key, writes, final, report):
    acked = [w for w in writes if w["result"] == "ok"]
    if final is None:
        dels = [w for w in writes if w["op"] == "del" and w["result"] != "fail"]
        if any(not _superseded_by(d, acked) for d in dels):
            return
        live_sets = [w for w in acked if w["op"] == "set" and not _superseded_by(w, acked)]
        if live_sets:
            newest = max(live_sets, key=lambda w: w["complete"])
            report.add("lost-write", key, f"read absent; acknowledged SET {newest['value']!r} "
                                          f"(client {newest['client']}, done at {newest['complete']:.3f}) is not superseded",
                       at=newest["complete"])
        # Absent with no acknowledged write left standing (every acked
        # SET superseded by an acked DEL is handled above) is legal.
        return
    producers = [w for w in writes if w["op"] == "set" and w["value"] == final]
    if not producers:
        report.add("phantom", key, f"read {final!r}, which no SET wrote")
        return
    if producers[0]["result"] == "fail":
        report.add("failed-visible", key, f"read {final!r}, whose SET was answered {producers[0].get('error')!r}")
        return
    write = producers[0]
    later = _superseded_by(write, acked)
    if not later:
        return
    # Named after the newest acknowledged write that should have replaced it.
    newest = max(later, key=lambda w: w["complete"])
    if newest["op"] == "del":
        kind = "resurrected"
        detail = (f"read {final!r} (SET by client {write['client']}), but an acknowledged DEL "
                  f"(client {newest['client']}, done at {newest['complete']:.3f}) came after it")
    else:
        kind = "lost-update"
        detail = (f"read {final!r} (SET by client {write['client']}), but acknowledged SET {newest['value']!r} "
                  f"(done at {newest['complete']:.3f}) came after it")
    report.add(kind, key, detail, at=newest["complete"])


def check_counter(key, incrs, final, report):
    acked = [w for w in incrs if w["result"] == "ok"]
    indeterminate = sum(1 for w in incrs if w["result"] in ("error", "timeout"))
    returned = [w["read"] for w in acked if isinstance(w.get("read"), int)]
    value = int(final) if final is not None else 0
    lower = max([len(acked)] + returned)
    if value < lower:
        report.add("lost-increments", key, f"read {value}, at least {lower} expected "
                                           f"({len(acked)} acknowledged INCRs, highest reply {max(returned, default=0)})")
    if value > len(acked) + indeterminate:
        report.add("phantom-increments", key, f"read {value}, at most {len(acked) + indeterminate} possible "
                                              f"({len(acked)} acknowledged, {indeterminate} indeterminate)")
    duplicates = [v for v, n in collections.Counter(returned).items() if n > 1]
    if duplicates:
        report.add("duplicate-incr", key, f"acknowledged INCRs returned {sorted(duplicates)[:5]} more than once")


def check_reads(reads, sets_by_value, report):
    for r in reads:
        if r["result"] != "ok" or r.get("read") is None:
            continue
        write = sets_by_value.get((r["key"], r["read"]))
        if write is not None and write["result"] == "fail":
            report.add("failed-visible", r["key"], f"GET by client {r['client']} returned {r['read']!r}, "
                                                   f"whose SET was answered {write.get('error')!r}")
        elif write is None:
            report.add("phantom-read", r["key"], f"GET by client {r['client']} returned {r['read']!r}, which no SET wrote")
        elif write["invoke"] > r["complete"]:
            report.add("future-read", r["key"], f"GET completed at {r['complete']:.3f} returned {r['read']!r}, "
                                                f"whose SET was invoked at {write['invoke']:.3f}")


def check(events, write_quorum=0, strict=False):
    """Judges a history (a list of event dicts). Returns a Report."""
    report = Report(write_quorum, strict)
    ops = [e for e in events if e.get("type") == "op"]
    finals = [e for e in events if e.get("type") == "final"]
    by_key = collections.defaultdict(list)
    for op in ops:
        by_key[op["key"]].append(op)
    sets_by_value = {(op["key"], op["value"]): op for op in ops if op["op"] == "set"}
    check_reads([op for op in ops if op["op"] == "get"], sets_by_value, report)

    final_by_key = collections.defaultdict(dict)  # key -> node -> value
    for f in finals:
        if f.get("error"):
            final_by_key[f["key"]][f["node"]] = ("error", f["error"])
        else:
            final_by_key[f["key"]][f["node"]] = ("value", f.get("value"))

    for key in sorted(by_key):
        writes = [op for op in by_key[key] if op["op"] in ("set", "del")]
        incrs = [op for op in by_key[key] if op["op"] == "incr"]
        if not writes and not incrs:
            continue
        answers = final_by_key.get(key, {})
        values = {v for kind, v in answers.values() if kind == "value"}
        if not values:
            report.add("unread", key, "no node answered the final read: " +
                       "; ".join(f"{n}: {v}" for n, (_, v) in sorted(answers.items())))
            continue
        if len(values) > 1:
            report.add("divergent", key, "after healing: " +
                       ", ".join(f"{n}={v!r}" for n, (_, v) in sorted(answers.items())))
        for value in sorted(values, key=repr):
            if incrs:
                check_counter(key, incrs, value, report)
            else:
                check_register(key, writes, value, report)
    return report


def _agreement_delay(fault):
    """Seconds from a fault's healing to the cluster's agreement; 60 (the
    runner's bound) when it never agreed."""
    delay = fault.get("healed_in_seconds")
    return 60.0 if delay is None else delay


def losses_by_fault(report, events):
    """Counts the lost writes by the fault that most likely lost them: the one
    under way (until the cluster agreed again) when the write completed, else
    the next one to start. Returns
    [(fault event or None for after the last one, kind, count)] in time order."""
    faults = sorted((e for e in events if e.get("type") == "fault"), key=lambda e: e["start"])
    tally = collections.Counter()
    for kind, at in report.lost_at:
        # A fault lasts until the cluster agreed again after its healing.
        index = next((i for i, f in enumerate(faults) if f["end"] + _agreement_delay(f) >= at), len(faults))
        tally[(index, kind)] += 1
    return [(faults[i] if i < len(faults) else None, kind, n) for (i, kind), n in sorted(tally.items())]


def acknowledged_keys(events):
    """Register and write-once keys with at least one acknowledged SET or DEL:
    the denominator of what was lost."""
    return len({e["key"] for e in events if e.get("type") == "op" and e["op"] in ("set", "del") and e["result"] == "ok"})


def operation_counts(events):
    counts = collections.Counter()
    for e in events:
        if e.get("type") == "op":
            counts[(e["op"], e["result"])] += 1
    return counts
