#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_pool (fuzz/corpus/pool/).

Each seed is a short scenario spelled in the target's input format. FuzzedDataProvider
hands out integers from the end of the input, so a seed is written in reading order and
reversed. An integer in a range of at most 256 values takes one byte (value = min + byte %
size of the range); a range of up to 65536 values takes two, most significant first.

Input: the set-up (max_size 1..6, min_idle 0..min(2, max_size), max_concurrent_creates 1..3,
validate_after_idle, max_lifetime and idle_timeout as indices into the tables of
decode_setup(), a byte of flags: 1 = event hook, 2 = destroy the pool before giving the
leases back), then operations: one opcode byte (modulo 16; past the table: stats()) and
that operation's arguments, as PoolHarness's members read them.

Usage: python3 fuzz/tools/pool_seeds.py   (rewrites the corpus directory)
"""
import pathlib

# Opcodes, as in PoolHarness::kOperations.
ACQUIRE_FOR, TRY_ACQUIRE, ACQUIRE_STOPPABLE, GIVE_BACK, USE, ADVANCE, SET_PLAN, MAINTAIN, PAUSE, RESUME, \
    RESIZE, RETIRE_ALL, CLOSE, OBSERVE, ON_HELPER_THREAD, SERVED_WAITER = range(16)
# on_helper_thread: the operation it runs there (with that operation's arguments after).
H_ACQUIRE_FOR, H_TRY_ACQUIRE, H_GIVE_BACK, H_ACQUIRE_STOPPABLE = range(4)

# acquire_for deadlines: 0ms, -1ms, milliseconds::min(), 1ms, 3ms, then 1 s (used only when
# the model knows the outcome: a lease, PoolClosed, or a paused pool's timeout).
D_ZERO, D_MINUS_1MS, D_MS_MIN, D_1MS, D_3MS, D_MUST = range(6)
# give_back: how.
RELEASE, DESTRUCTOR, DISCARD, MOVE_ASSIGN = range(4)
# advance: 1ms 100ms 499ms 500ms 501ms 1s 4s 11min, or 8 and two bytes of milliseconds.
A_1MS, A_100MS, A_499MS, A_500MS, A_501MS, A_1S, A_4S, A_11MIN, A_ANY = range(9)
# set_plan.
C_OK, C_SLOW, C_FAIL_ALWAYS, C_FAIL_NEXT, C_FAIL_EVERY_OTHER = range(5)
V_OK, V_FALSE, V_THROWS, V_FALSE_ODD = range(4)
DESTROY_THROWS, HOOK_THROWS = 1, 2
# Set-up tables.
VAI_0, VAI_1MS, VAI_500MS, VAI_10MIN = range(4)
LIFE_NONE, LIFE_1S, LIFE_5S, LIFE_9S = range(4)
IDLE_NONE, IDLE_1S, IDLE_10MIN = range(3)
HOOK, POOL_FIRST = 1, 2


def setup(max_size=2, min_idle=0, creates=1, vai=VAI_500MS, life=LIFE_NONE, idle=IDLE_NONE, flags=0):
    return [max_size - 1, min_idle, creates - 1, vai, life, idle, flags]


def acq(shape=D_MUST):
    return [ACQUIRE_FOR, shape]


def stop(stopped, shape):
    return [ACQUIRE_STOPPABLE, 1 if stopped else 0, shape]


def give(index=0, how=RELEASE, other=0):
    return [GIVE_BACK, index, how, other]


def use(index=0):
    return [USE, index]


def adv(k, ms=0):
    return [ADVANCE, k] + ([(ms >> 8) & 0xFF, ms & 0xFF] if k == A_ANY else [])


def plan(create=C_OK, fail_next=1, delay_us=50, validate=V_OK, reset=V_OK, flags=0):
    d = delay_us - 50
    return [SET_PLAN, create, fail_next - 1, (d >> 8) & 0xFF, d & 0xFF, validate, reset, flags]


def resize(n):
    """n in 1..8, or 'zero', 'below_min_idle', 'too_big', 'size_max'."""
    special = {"zero": 0, "below_min_idle": 1, "too_big": 2, "size_max": 3}
    return [RESIZE, special[n] if isinstance(n, str) else n + 3]


SEEDS = {
    "acquire_release": setup(2) + acq() + acq() + acq(D_ZERO) + give(0) + [TRY_ACQUIRE] + use(0) + use(1)
    + give(0, DESTRUCTOR) + give(0, DISCARD) + [TRY_ACQUIRE, OBSERVE],
    "full_pool_times_out": setup(1) + acq() + acq(D_1MS) + acq(D_MUST) + [TRY_ACQUIRE] + give(0) + acq(D_MINUS_1MS)
    + acq(D_MS_MIN),
    "pause_resume": setup(2) + acq() + [PAUSE, TRY_ACQUIRE] + acq(D_1MS) + acq(D_MUST) + give(0) + [TRY_ACQUIRE]
    + [PAUSE, RESUME, RESUME, TRY_ACQUIRE] + acq(),
    "retire_all": setup(3) + acq() + acq() + give(0) + [RETIRE_ALL] + use(0) + give(0) + acq() + [RETIRE_ALL, RETIRE_ALL],
    "close": setup(3, flags=HOOK) + acq() + acq() + give(0) + [CLOSE, TRY_ACQUIRE] + acq(D_MUST) + stop(True, 0)
    + stop(False, 2) + use(0) + [MAINTAIN] + give(0) + [CLOSE],
    "close_pool_first": setup(2, flags=POOL_FIRST) + acq() + acq() + [CLOSE] + use(1),
    "pool_destroyed_with_leases": setup(3, flags=POOL_FIRST | HOOK) + acq() + acq() + give(0) + acq(),
    "resize": setup(4) + acq() + acq() + acq() + give(0) + give(0) + resize(1) + give(0) + resize("zero")
    + resize("size_max") + resize("too_big") + resize(8) + acq() + acq() + resize(2) + give(0, DESTRUCTOR) + resize(6),
    "resize_below_min_idle": setup(3, min_idle=2) + [MAINTAIN] + resize("below_min_idle") + resize(2) + resize(1),
    "create_faults": setup(2) + plan(C_FAIL_NEXT, fail_next=3) + acq() + plan(C_FAIL_ALWAYS) + acq(D_3MS)
    + [TRY_ACQUIRE] + plan(C_SLOW, delay_us=500) + acq() + plan(C_FAIL_EVERY_OTHER) + acq() + give(0) + give(0),
    "validate_faults": setup(3, vai=VAI_0) + acq() + acq() + give(0) + give(0) + adv(A_501MS)
    + plan(validate=V_FALSE_ODD) + [TRY_ACQUIRE, TRY_ACQUIRE] + plan(validate=V_THROWS) + give(0) + adv(A_1S)
    + acq() + plan(validate=V_FALSE) + give(0) + [TRY_ACQUIRE],
    "reset_destroy_hook_faults": setup(3, flags=HOOK) + acq() + acq() + acq() + plan(reset=V_FALSE) + give(0)
    + plan(reset=V_THROWS, flags=DESTROY_THROWS | HOOK_THROWS) + give(0) + plan(reset=V_FALSE_ODD) + give(0)
    + acq() + [RETIRE_ALL, CLOSE],
    "max_lifetime": setup(3, min_idle=1, life=LIFE_1S) + [MAINTAIN] + acq() + adv(A_499MS) + [MAINTAIN] + adv(A_501MS)
    + [MAINTAIN] + give(0) + [MAINTAIN] + acq() + adv(A_1S) + [TRY_ACQUIRE] + acq(),
    "idle_timeout": setup(3, min_idle=1, idle=IDLE_1S) + acq() + acq() + acq() + give(0) + give(0) + give(0)
    + adv(A_1S) + [MAINTAIN] + adv(A_11MIN) + [MAINTAIN],
    "stoppable": setup(2) + stop(True, 0) + stop(False, 2) + give(0) + stop(True, 1) + [PAUSE] + stop(True, 2)
    + stop(False, 1) + [RESUME, CLOSE] + stop(True, 0),
    "move_assign": setup(4) + acq() + acq() + acq() + give(0, MOVE_ASSIGN, 0) + use(0) + use(1)
    + give(1, MOVE_ASSIGN, 0) + give(0),
    "slow_creates": setup(4, creates=3) + plan(C_SLOW, delay_us=300) + acq(D_ZERO) + acq(D_1MS) + acq() + acq()
    + acq(D_3MS) + [OBSERVE],
    "min_idle_top_up": setup(4, min_idle=2, creates=2) + [MAINTAIN, TRY_ACQUIRE, MAINTAIN, PAUSE, MAINTAIN, RESUME]
    + plan(C_FAIL_ALWAYS) + [RETIRE_ALL, MAINTAIN] + adv(A_ANY, 2500) + [OBSERVE],
    # Leases moving between threads; connections parked in the caches of threads that ended.
    "helper_threads": setup(3) + [ON_HELPER_THREAD, H_ACQUIRE_FOR, D_MUST] + [ON_HELPER_THREAD, H_GIVE_BACK] + give()[1:]
    + acq() + [ON_HELPER_THREAD, H_TRY_ACQUIRE] + use(0) + use(1) + [ON_HELPER_THREAD, H_GIVE_BACK] + give(1)[1:]
    + [TRY_ACQUIRE, PAUSE, ON_HELPER_THREAD, H_ACQUIRE_STOPPABLE, 1, 0, RESUME] + give(0)
    + [ON_HELPER_THREAD, H_ACQUIRE_FOR, D_MUST, RETIRE_ALL] + give(0),
    "helper_threads_close": setup(2, flags=POOL_FIRST) + [ON_HELPER_THREAD, H_ACQUIRE_FOR, D_MUST]
    + [ON_HELPER_THREAD, H_ACQUIRE_FOR, D_MUST] + [ON_HELPER_THREAD, H_GIVE_BACK] + give()[1:] + [CLOSE]
    + [ON_HELPER_THREAD, H_TRY_ACQUIRE],
    # A waiter on a helper thread gets the connection the driver gives back.
    "served_waiter": setup(2, vai=VAI_0) + acq() + acq() + [SERVED_WAITER, 0, SERVED_WAITER, 1] + adv(A_501MS)
    + [SERVED_WAITER, 0] + plan(reset=V_FALSE) + [SERVED_WAITER, 0] + give(0),
}


def main():
    corpus = pathlib.Path(__file__).resolve().parent.parent / "corpus" / "pool"
    corpus.mkdir(parents=True, exist_ok=True)
    for old in corpus.iterdir():
        old.unlink()
    for name, reading_order in SEEDS.items():
        assert all(0 <= b <= 255 for b in reading_order), name
        (corpus / name).write_bytes(bytes(reversed(reading_order)))
    print(f"wrote {len(SEEDS)} seeds to {corpus}")


if __name__ == "__main__":
    main()
