#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_bounded_queue (fuzz/corpus/bounded_queue/).

Each seed is a short scenario spelled in the target's input format. FuzzedDataProvider
hands out integers from the end of the input, so a seed is written in reading order and
reversed. One integer in a range of at most 256 values takes one byte (value = byte % n);
a 64-bit one takes 8 bytes, most significant first in reading order.

Timeouts whose nanosecond count overflows (milliseconds::min(), hours::min(), ...) are left
out: they hit issue 7 bug 2, whose reproducers are in fuzz/regressions/bounded_queue/.

Usage: python3 fuzz/tools/bounded_queue_seeds.py   (rewrites the corpus directory)
"""
import pathlib

# Opcodes, as in QueueHarness::kOperations.
PUSH, TRY_PUSH, TRY_POP, POP, POP_FOR, POP_UNTIL, CLOSE, EXTRACT_IF, EXTRACT_IF_THROWING, OBSERVE, \
    SET_CAPACITY, POP_STOPPABLE = range(12)
UNUSED_OPCODE = 15  # past the table: runs observe()

# Timeout shapes, as in with_timeout() (fuzz/support/timeouts.hpp).
T_ZERO, T_MINUS_1NS, T_TINY_NS, T_NS_MAX, T_NS_MIN, T_MS_MAX, T_MS_MIN, T_H_MAX, T_H_MIN = range(9)
T_ANY_NS, T_ANY_MS, T_ANY_S, T_INT32_MS, T_DOUBLE, T_SMALL_DOUBLE, T_INF, T_MINUS_INF, T_MINUS_US = range(9, 18)

# Deadline shapes of pop_until.
D_MIN, D_EPOCH, D_PAST, D_NOW, D_NOW_PLUS_TINY, D_MAX, D_FUTURE = range(7)

# pop_stoppable: which pop, and which token.
S_POP, S_POP_FOR, S_POP_UNTIL = range(3)
STOPPED, NOT_STOPPED, DEFAULT_TOKEN = range(3)


def u16(value):
    return [(value >> 8) & 0xFF, value & 0xFF]


def i64(value):
    """A full-range int64 as ConsumeIntegral<int64_t>() reads it: INT64_MIN + the raw bytes."""
    raw = value + (1 << 63)
    return [(raw >> shift) & 0xFF for shift in range(56, -8, -8)]


def u64(value):
    """A 64-bit integer in a range starting at 0 (value = raw bytes % range size)."""
    return [(value >> shift) & 0xFF for shift in range(56, -8, -8)]


def i32(value):
    raw = value + (1 << 31)
    return [(raw >> shift) & 0xFF for shift in range(24, -8, -8)]


def setup(lifo, capacity):
    return [1 if lifo else 0, capacity - 1]


def pop_for(shape, *args):
    return [POP_FOR, shape, *args]


def pop_until(shape, *args):
    return [POP_UNTIL, shape, *args]


def stoppable(flavour, token, *args):
    return [POP_STOPPABLE, flavour, token, *args]


SEEDS = {
    # Both orders: pushes and every kind of pop, with elements stored.
    "fifo_push_pop": setup(False, 4) + [PUSH, PUSH, TRY_PUSH, TRY_POP, POP, *pop_for(T_ZERO), TRY_POP, POP_UNTIL, D_NOW],
    "lifo_push_pop": setup(True, 4) + [PUSH, PUSH, TRY_PUSH, TRY_POP, POP, *pop_for(T_ZERO), TRY_POP, POP_UNTIL, D_NOW],
    # A full queue: push would block (skipped), try_push fails and keeps its value.
    "full": setup(False, 2) + [PUSH, PUSH, TRY_PUSH, PUSH, TRY_POP, TRY_PUSH, OBSERVE],
    # The ring wraps around (capacity 3, FIFO), then pops in order.
    "fifo_wraps": setup(False, 3) + [PUSH, PUSH, TRY_POP, PUSH, PUSH, TRY_POP, PUSH, TRY_POP, TRY_POP, TRY_POP],
    # Close: pushes fail, stored elements still come out, then pops return nothing at once.
    "close": setup(False, 3) + [PUSH, PUSH, CLOSE, TRY_PUSH, PUSH, POP, *pop_for(T_NS_MAX), POP,
                                *pop_for(T_MS_MAX), *pop_until(D_MAX), CLOSE, OBSERVE],
    "lifo_close": setup(True, 2) + [PUSH, PUSH, CLOSE, POP, *pop_for(T_INF), POP],
    # Every timeout shape that fits in nanoseconds, each with an element to take.
    "timeouts_with_element": setup(False, 8) + sum(([PUSH] + pop_for(*shape) for shape in [
        (T_ZERO,), (T_MINUS_1NS,), (T_TINY_NS, *u16(499)), (T_NS_MAX,), (T_NS_MIN,), (T_MS_MAX,),
        (T_H_MAX,), (T_ANY_NS, *i64(-5)), (T_ANY_MS, *i64(1000)), (T_ANY_S, *i64(-3)),
        (T_INT32_MS, *i32(-2147483648)), (T_SMALL_DOUBLE, *([0] * 8)), (T_INF,), (T_MINUS_US, *u16(999)),
    ]), []),
    # Timeouts and deadlines that end at once on an empty, open queue.
    "timeouts_empty": setup(True, 1) + [
        *pop_for(T_ZERO), *pop_for(T_MINUS_1NS), *pop_for(T_TINY_NS, *u16(1)), *pop_for(T_NS_MIN),
        *pop_for(T_MINUS_US, *u16(0)), *pop_for(T_ANY_NS, *i64(-(1 << 62))),
        *pop_until(D_MIN), *pop_until(D_EPOCH), *pop_until(D_PAST, *u64(10**9)), *pop_until(D_NOW),
        *pop_until(D_NOW_PLUS_TINY, *u16(10)), TRY_POP],
    # extract_if selecting by id, one that throws partway (nothing moves), one that would
    # throw past the end (never does), then the rest comes out in order.
    "extract_if": setup(False, 16) + [PUSH] * 10 + [EXTRACT_IF, 0x55, EXTRACT_IF_THROWING, 0xFF, 3,
                                                    EXTRACT_IF_THROWING, 0x0F, 64, EXTRACT_IF, 0x00,
                                                    TRY_POP, UNUSED_OPCODE],
    # set_capacity below the size keeps every element and fails pushes until there is room;
    # growing a wrapped FIFO ring keeps the order; set_capacity(0) throws.
    "set_capacity": setup(False, 4) + [PUSH] * 4 + [SET_CAPACITY, 2, TRY_PUSH, TRY_POP, TRY_POP, TRY_POP, TRY_PUSH,
                                                    SET_CAPACITY, 8, PUSH, PUSH, SET_CAPACITY, 0, OBSERVE],
    "set_capacity_wrapped": setup(False, 3) + [PUSH, PUSH, TRY_POP, PUSH, PUSH, SET_CAPACITY, 6, PUSH, TRY_POP,
                                               PUSH, PUSH, TRY_PUSH, TRY_POP, SET_CAPACITY, 1],
    # Pops with a stop_token: stopped (returns at once, even with no timeout), not stopped,
    # and a default token.
    "stoppable_pops": setup(True, 2) + stoppable(S_POP, STOPPED) + stoppable(S_POP_FOR, STOPPED, T_MS_MAX)
                      + stoppable(S_POP_UNTIL, STOPPED, D_MAX) + [PUSH] + stoppable(S_POP, STOPPED)
                      + [PUSH] + stoppable(S_POP, NOT_STOPPED) + [PUSH] + stoppable(S_POP_FOR, DEFAULT_TOKEN, T_ZERO)
                      + stoppable(S_POP_UNTIL, NOT_STOPPED, D_NOW) + [CLOSE] + stoppable(S_POP, NOT_STOPPED),
    "lifo_extract_if": setup(True, 5) + [PUSH] * 5 + [TRY_POP, EXTRACT_IF, 0xAA, EXTRACT_IF_THROWING, 0xFF, 0,
                                                      PUSH, EXTRACT_IF, 0xFF],
}


# Inputs that found bugs, kept to show they stay fixed (ctest replays them). Written next to
# any crash files libFuzzer found (those are committed as they are).
REGRESSIONS = {
    # Issue 7 bug 2: pop_for(milliseconds::min()) on an empty FIFO queue of capacity 1. The
    # conversion of the timeout to nanoseconds overflows (UBSan: signed integer overflow).
    "pop_for_milliseconds_min": setup(False, 1) + pop_for(T_MS_MIN),
    # The same overflow where it wraps to a deadline 31.7 years ahead: pop_for(-17446744073709ms)
    # (about -553 years) on an empty queue blocks instead of returning at once.
    "pop_for_minus_553_years_blocks": setup(False, 1) + pop_for(T_ANY_MS, *i64(-17446744073709)),
}


def main():
    corpus = pathlib.Path(__file__).resolve().parent.parent / "corpus" / "bounded_queue"
    corpus.mkdir(parents=True, exist_ok=True)
    for old in corpus.iterdir():
        old.unlink()
    for name, reading_order in SEEDS.items():
        assert all(0 <= b <= 255 for b in reading_order), name
        (corpus / name).write_bytes(bytes(reversed(reading_order)))
    print(f"wrote {len(SEEDS)} seeds to {corpus}")
    regressions = corpus.parent.parent / "regressions" / "bounded_queue"
    regressions.mkdir(parents=True, exist_ok=True)
    for name, reading_order in REGRESSIONS.items():
        (regressions / name).write_bytes(bytes(reversed(reading_order)))
    print(f"wrote {len(REGRESSIONS)} regression inputs to {regressions}")


if __name__ == "__main__":
    main()
