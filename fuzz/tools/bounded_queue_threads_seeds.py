#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_bounded_queue_threads (fuzz/corpus/bounded_queue_threads/).

Same input format as fuzz_bounded_queue (see bounded_queue_seeds.py): a seed is written in
reading order and reversed. Set-up: order (0 FIFO, 1 LIFO), capacity byte (1 + byte % 4).
A pause or short timeout is one byte: byte % 201 microseconds.

Usage: python3 fuzz/tools/bounded_queue_threads_seeds.py   (rewrites the corpus directory)
"""
import pathlib

# Opcodes, as in ThreadsHarness::kOperations.
TIMED_POP_RACES_PUSH, BLOCKED_POPPERS_GET_PUSHES, BLOCKED_PUSH_GETS_ROOM, CLOSE_WAKES_BLOCKED_POPPER, \
    TRY_PUSH, TRY_POP, STOP_WAKES_BLOCKED_POPPER = range(7)
POP, POP_FOR_MAX, POP_UNTIL_MAX = range(3)  # how blocked_poppers_get_pushes waits


def setup(lifo, capacity):
    return [1 if lifo else 0, capacity - 1]


def poppers(count, flavour, pause_us):
    return [BLOCKED_POPPERS_GET_PUSHES, count - 1, flavour, pause_us]


SEEDS = {
    # pop_for(50us) with a push at once (hand-off), pop_for(0) with a push after 100us
    # (timed out: stored), and a close call.
    "timed_pop_races_push": setup(False, 1) + [TIMED_POP_RACES_PUSH, 50, 0, TRY_POP,
                                               TIMED_POP_RACES_PUSH, 0, 100, TRY_POP,
                                               TIMED_POP_RACES_PUSH, 60, 60],
    "blocked_poppers": setup(False, 1) + poppers(3, POP, 20) + poppers(2, POP_FOR_MAX, 0) + poppers(1, POP_UNTIL_MAX, 5),
    "lifo_blocked_poppers": setup(True, 2) + poppers(3, POP_UNTIL_MAX, 10) + poppers(2, POP, 0),
    "blocked_push": setup(False, 2) + [BLOCKED_PUSH_GETS_ROOM, 30, TRY_POP, BLOCKED_PUSH_GETS_ROOM, 0],
    "lifo_blocked_push": setup(True, 3) + [TRY_PUSH, BLOCKED_PUSH_GETS_ROOM, 50, TRY_POP, TRY_POP],
    "close_wakes": setup(False, 1) + [CLOSE_WAKES_BLOCKED_POPPER, 0, 50, TRY_PUSH, TRY_POP],
    # A stop wakes pop(stop) after 40us, then pop_for(huge, stop) at once; pushes are stored.
    "stop_wakes": setup(False, 2) + [STOP_WAKES_BLOCKED_POPPER, 0, 40, TRY_POP, STOP_WAKES_BLOCKED_POPPER, 1, 0],
    "lifo_close_wakes": setup(True, 4) + [CLOSE_WAKES_BLOCKED_POPPER, 1, 0, TIMED_POP_RACES_PUSH, 0, 0],
}


def main():
    corpus = pathlib.Path(__file__).resolve().parent.parent / "corpus" / "bounded_queue_threads"
    corpus.mkdir(parents=True, exist_ok=True)
    for old in corpus.iterdir():
        old.unlink()
    for name, reading_order in SEEDS.items():
        assert all(0 <= b <= 255 for b in reading_order), name
        (corpus / name).write_bytes(bytes(reversed(reading_order)))
    print(f"wrote {len(SEEDS)} seeds to {corpus}")


if __name__ == "__main__":
    main()
