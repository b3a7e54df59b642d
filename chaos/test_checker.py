"""The checker on hand-made histories: each loss it exists to catch is caught,
and legal outcomes of concurrent and indeterminate writes are not flagged.

python3 -m unittest discover -s chaos -p 'test_*.py'
"""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import checker  # noqa: E402


def op(kind, key, t0, t1, result="ok", value=None, read=None, client=0):
    event = {"type": "op", "op": kind, "key": key, "invoke": t0, "complete": t1, "result": result, "client": client}
    if value is not None:
        event["value"] = value
    if read is not None:
        event["read"] = read
    return event


def final(key, value, nodes=("node1", "node2", "node3")):
    return [{"type": "final", "key": key, "node": n, "value": value} for n in nodes]


def kinds(report):
    return sorted(report.counts.elements())


class RegisterTests(unittest.TestCase):
    def test_lost_acknowledged_write_fails_at_w2(self):
        history = [op("set", "k", 1, 2, value="a")] + final("k", None)
        report = checker.check(history, write_quorum=2)
        self.assertEqual(kinds(report), ["lost-write"])
        self.assertFalse(report.ok)

    def test_lost_acknowledged_write_is_counted_not_failed_at_w0_unless_strict(self):
        history = [op("set", "k", 1, 2, value="a")] + final("k", None)
        report = checker.check(history, write_quorum=0)
        self.assertEqual(kinds(report), ["lost-write"])
        self.assertTrue(report.ok)
        self.assertFalse(checker.check(history, write_quorum=0, strict=True).ok)

    def test_older_value_after_an_acknowledged_overwrite_is_a_lost_update(self):
        history = [op("set", "k", 1, 2, value="a"), op("set", "k", 3, 4, value="b")] + final("k", "a")
        self.assertEqual(kinds(checker.check(history, write_quorum=2)), ["lost-update"])

    def test_resurrected_delete_fails_at_w2(self):
        history = [op("set", "k", 1, 2, value="a"), op("del", "k", 3, 4)] + final("k", "a")
        report = checker.check(history, write_quorum=2)
        self.assertEqual(kinds(report), ["resurrected"])
        self.assertFalse(report.ok)

    def test_a_delete_rewritten_later_may_be_read_back(self):
        history = [op("set", "k", 1, 2, value="a"), op("del", "k", 3, 4), op("set", "k", 5, 6, value="b")] + final("k", "b")
        self.assertEqual(kinds(checker.check(history, write_quorum=2)), [])

    def test_concurrent_writes_may_end_either_way(self):
        history = [op("set", "k", 1, 5, value="a"), op("set", "k", 2, 4, value="b")]
        self.assertEqual(kinds(checker.check(history + final("k", "a"), write_quorum=2)), [])
        self.assertEqual(kinds(checker.check(history + final("k", "b"), write_quorum=2)), [])

    def test_an_indeterminate_write_may_land_late_or_never(self):
        history = [op("set", "k", 1, 2, value="a"), op("set", "k", 3, 4, result="timeout", value="b"),
                   op("set", "k", 5, 6, value="c")]
        # b may have been applied after c: legal. a is superseded by c: lost.
        self.assertEqual(kinds(checker.check(history + final("k", "b"), write_quorum=2)), [])
        self.assertEqual(kinds(checker.check(history + final("k", "c"), write_quorum=2)), [])
        self.assertEqual(kinds(checker.check(history + final("k", "a"), write_quorum=2)), ["lost-update"])

    def test_an_indeterminate_delete_explains_an_absent_key(self):
        history = [op("set", "k", 1, 2, value="a"), op("del", "k", 3, 4, result="error")] + final("k", None)
        self.assertEqual(kinds(checker.check(history, write_quorum=2)), [])

    def test_a_failed_write_explains_nothing_acknowledged_away(self):
        history = [op("set", "k", 1, 2, value="a"), op("set", "k", 3, 4, result="error", value="b")] + final("k", None)
        self.assertEqual(kinds(checker.check(history, write_quorum=2)), ["lost-write"])

    def test_a_value_nobody_wrote_fails_even_at_w0(self):
        history = [op("set", "k", 1, 2, value="a")] + final("k", "zzz")
        report = checker.check(history, write_quorum=0)
        self.assertEqual(kinds(report), ["phantom"])
        self.assertFalse(report.ok)

    def test_a_write_refused_as_never_run_explains_nothing(self):
        history = [op("set", "k", 1, 2, value="a"), op("del", "k", 3, 4, result="fail")] + final("k", None)
        self.assertEqual(kinds(checker.check(history, write_quorum=2)), ["lost-write"])

    def test_the_value_of_a_write_refused_as_never_run_fails_even_at_w0(self):
        history = [op("set", "k", 1, 2, value="a"), op("set", "k", 3, 4, result="fail", value="b")]
        self.assertEqual(kinds(checker.check(history + final("k", "b"), write_quorum=0)), ["failed-visible"])
        reads = history + [op("get", "k", 5, 6, read="b")] + final("k", "a")
        self.assertEqual(kinds(checker.check(reads, write_quorum=0)), ["failed-visible"])

    def test_nodes_disagreeing_after_healing_fail_even_at_w0(self):
        history = [op("set", "k", 1, 2, value="a")] + final("k", "a", nodes=("node1", "node2")) + final("k", None, nodes=("node3",))
        report = checker.check(history, write_quorum=0)
        self.assertIn("divergent", kinds(report))
        self.assertFalse(report.ok)

    def test_a_key_no_node_could_read_fails(self):
        history = [op("set", "k", 1, 2, value="a"),
                   {"type": "final", "key": "k", "node": "node1", "error": "timeout"}]
        self.assertFalse(checker.check(history, write_quorum=0).ok)


class AttributionTests(unittest.TestCase):
    def test_a_loss_goes_to_the_fault_under_way_until_the_cluster_agreed_again(self):
        faults = [{"type": "fault", "fault": "kill9", "node": "node1", "start": 10, "end": 15, "healed_in_seconds": 0.0},
                  {"type": "fault", "fault": "wipe", "node": "node2", "start": 20, "end": 25, "healed_in_seconds": 3.0}]
        history = faults + [op("set", "a", 1, 14, value="1"), op("set", "b", 1, 16, value="2"),
                            op("set", "c", 1, 27, value="3"), op("set", "d", 1, 29, value="4")]
        history += final("a", None) + final("b", None) + final("c", None) + final("d", None)
        report = checker.check(history, write_quorum=0)
        tally = [(f and f["fault"], kind, n) for f, kind, n in checker.losses_by_fault(report, history)]
        self.assertEqual(tally, [("kill9", "lost-write", 1), ("wipe", "lost-write", 2), (None, "lost-write", 1)])


class CounterTests(unittest.TestCase):
    def test_lost_increments_fail_at_w2(self):
        history = [op("incr", "c", i, i + 0.5, read=i + 1) for i in range(3)] + final("c", "2")
        report = checker.check(history, write_quorum=2)
        self.assertEqual(kinds(report), ["lost-increments"])
        self.assertFalse(report.ok)

    def test_indeterminate_increments_widen_the_upper_bound_only(self):
        history = [op("incr", "c", 0, 1, read=1), op("incr", "c", 2, 3, result="timeout")]
        self.assertEqual(kinds(checker.check(history + final("c", "1"), write_quorum=2)), [])
        self.assertEqual(kinds(checker.check(history + final("c", "2"), write_quorum=2)), [])
        self.assertEqual(kinds(checker.check(history + final("c", "3"), write_quorum=2)), ["phantom-increments"])

    def test_an_increment_refused_as_never_run_does_not_widen_the_bound(self):
        history = [op("incr", "c", 0, 1, read=1), op("incr", "c", 2, 3, result="fail")] + final("c", "2")
        self.assertEqual(kinds(checker.check(history, write_quorum=0)), ["phantom-increments"])

    def test_a_reply_higher_than_the_final_value_is_a_loss(self):
        # One acknowledged INCR, but it answered 5: the final 1 lost four.
        history = [op("incr", "c", 0, 1, read=5), op("incr", "c", 0, 1, result="timeout")] + final("c", "1")
        self.assertIn("lost-increments", kinds(checker.check(history, write_quorum=2)))

    def test_two_acknowledged_increments_answering_the_same_value_are_flagged(self):
        history = [op("incr", "c", 0, 1, read=1), op("incr", "c", 2, 3, read=1)] + final("c", "2")
        self.assertEqual(kinds(checker.check(history, write_quorum=2)), ["duplicate-incr"])


class ReadTests(unittest.TestCase):
    def test_a_stale_read_is_allowed(self):
        history = [op("set", "k", 1, 2, value="a"), op("set", "k", 3, 4, value="b"),
                   op("get", "k", 5, 6, read="a")] + final("k", "b")
        self.assertEqual(kinds(checker.check(history, write_quorum=0)), [])

    def test_reading_a_value_before_its_write_began_fails(self):
        history = [op("get", "k", 1, 2, read="a"), op("set", "k", 3, 4, value="a")] + final("k", "a")
        self.assertEqual(kinds(checker.check(history, write_quorum=0)), ["future-read"])

    def test_reading_a_value_nobody_wrote_fails(self):
        history = [op("set", "k", 1, 2, value="a"), op("get", "k", 3, 4, read="q")] + final("k", "a")
        self.assertEqual(kinds(checker.check(history, write_quorum=0)), ["phantom-read"])


class ErrorReplyTests(unittest.TestCase):
    """Which error replies the workload records as "fail" (never run): only
    those that say nothing was sent or the receiver refused the shard."""

    def test_replies_that_say_nothing_ran(self):
        import workload
        for text in ("the circuit breaker for node2 (or 'forwarding') is open, the request was not sent; retry",
                     "no link to node1 could be opened, the request was not sent; retry",
                     "this node is stopping and forwards no more requests; retry on another node",
                     "shard 9 has no lease holder here (term 4): an election is under way or this node cannot reach "
                     "a majority of the shard's replicas; retry",
                     "shard 9 is being handed to another node, which will take its writes within milliseconds; retry",
                     "shard 6 is owned by node1 (127.0.0.11:7700) in the view of the node that got it; retry"):
            self.assertTrue(workload.definitely_not_applied(text), text)

    def test_replies_that_leave_it_open(self):
        import workload
        for text in ("forwarding failed: the link to node1 broke", "forwarding failed: node2 did not answer within 5000 ms"):
            self.assertFalse(workload.definitely_not_applied(text), text)


if __name__ == "__main__":
    unittest.main()
