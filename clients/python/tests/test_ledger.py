"""The ledger alone (no server): the cumulative ack point over frames handled out of order,
dedupe by (kind, req_id), replies kept for re-sending, withdrawn and voided requests."""

from __future__ import annotations

from mlua_swarm.v1 import operator_pb2 as op_pb
from mlua_swarm_operator.ledger import Ledger


def reply(req_id: str) -> op_pb.ClientFrame:
    return op_pb.ClientFrame(hook_ack=op_pb.HookAck(req_id=req_id, ok=True))


def test_the_ack_point_waits_for_the_lowest_frame_still_being_handled():
    led = Ledger()
    a, _ = led.begin("spawn", "A", 1)
    b, _ = led.begin("hook_before", "B", 2)
    c, _ = led.begin("hook_after", "C", 3)
    assert led.finish(b, reply("B")) == (True, None), "2 is done but 1 is not"
    assert led.finish(c, None) == (False, None)
    assert led.finish(a, reply("A")) == (True, 3), "1 done: everything up to 3 is handled"
    assert led.acked == 3


def test_a_frame_seen_again_is_not_handled_again_and_keeps_its_reply():
    led = Ledger()
    a, new = led.begin("spawn", "A", 1)
    assert new
    again, new = led.begin("spawn", "A", 1)
    assert again is a and not new and not again.done
    led.finish(a, reply("A"))
    again, new = led.begin("spawn", "A", 1)
    assert not new and again.done and again.reply == reply("A")
    # The same req_id under another kind is another request (hook_after follows its spawn).
    _, new = led.begin("hook_after", "A", 2)
    assert new


def test_frames_at_or_below_the_ack_point_do_not_hold_it_back():
    led = Ledger()
    led.acked = 5  # what hello said
    old, _ = led.begin("spawn", "OLD", 4)  # an acked request re-sent: its reply was lost
    new, _ = led.begin("hook_before", "NEW", 6)
    assert led.finish(new, reply("NEW")) == (True, 6)
    assert led.finish(old, reply("OLD")) == (True, None)
    assert led.acked == 6


def test_a_withdrawn_request_sends_no_reply_but_is_handled():
    led = Ledger()
    a, _ = led.begin("spawn", "A", 1)
    cancel, _ = led.begin("cancel", "A", 2)
    assert led.cancel("A") is a and a.cancelled.is_set()
    assert led.finish(cancel, None) == (False, None)
    assert led.finish(a, reply("A")) == (False, 2)
    assert a.reply is None


def test_a_restart_voids_what_is_in_flight_and_forgets_its_seqs():
    led = Ledger()
    done, _ = led.begin("hook_before", "H", 1)
    led.finish(done, reply("H"))
    flying, _ = led.begin("spawn", "S", 2)
    void = led.void_in_flight()
    assert void == [flying] and flying.cancelled.is_set()
    # The new process numbers on; its frames are acked without waiting for seq 2.
    fresh, _ = led.begin("spawn", "S2", 3)
    assert led.finish(fresh, reply("S2")) == (True, 3)
    # The void request's handler returns late: nothing is sent, the ack point stays.
    assert led.finish(flying, reply("S")) == (False, None)
    assert led.acked == 3


def test_only_finished_requests_are_forgotten_past_the_limit():
    led = Ledger(keep=2)
    first, _ = led.begin("spawn", "1", 1)  # a long spawn
    for i in range(2, 6):
        rec, _ = led.begin("hook_after", str(i), i)
        led.finish(rec, None)
    seen = led.seen()
    assert ("spawn", "1") in seen, "still running: kept"
    assert set(seen) == {("spawn", "1"), ("hook_after", "4"), ("hook_after", "5")}
    led.finish(first, None)
    assert set(led.seen()) == {("hook_after", "5"), ("spawn", "1")}
    assert led.acked == 5
