#!/usr/bin/env python3
"""Runs pool_benchmark and prints connpool vs the naive pool as Markdown tables.

Usage: python3 benchmarks/compare.py BINARY [REPS] [EXTRA_BENCHMARK_FLAGS...]
  e.g. python3 benchmarks/compare.py build/default/benchmarks/pool_benchmark 3

Runs BINARY --benchmark_format=json --benchmark_repetitions=REPS (default 3), with the
repetitions randomly interleaved so slow drift on a shared machine hits both pools alike, and
takes the median over repetitions of each benchmark's items_per_second (acquire+release cycles
per wall-clock second). Then prints:
  1. throughput: naive vs connpool, ratio, target (2.5x for 1x1, 4x otherwise), met?
  2. the spread over repetitions (min-max) and the span-based cross-check throughput
  3. acquire waits timed around every acquire (the _Wait variants): median p50/p99, worst max
  4. connpool's own pool.stats() waits from the throughput runs
Standard library only.
"""

import json
import statistics
import subprocess
import sys

TARGETS = {"1x1": 2.5, "alt2": 2.0, "alt8": 2.0}  # every other configuration: DEFAULT_TARGET
DEFAULT_TARGET = 4.0


def fail(message):
    print(f"compare.py: {message}", file=sys.stderr)
    sys.exit(2)


def parse_args(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        sys.exit(0 if len(argv) >= 2 else 2)
    binary = argv[1]
    reps = 3
    extra = argv[2:]
    if extra and not extra[0].startswith("-"):
        try:
            reps = int(extra[0])
        except ValueError:
            fail(f"REPS must be a whole number, got {extra[0]!r}")
        if reps < 1:
            fail(f"REPS must be at least 1, got {reps}")
        extra = extra[1:]
    return binary, reps, extra


def run(binary, reps, extra):
    cmd = [binary, "--benchmark_format=json", f"--benchmark_repetitions={reps}",
           "--benchmark_enable_random_interleaving=true", *extra]
    print("running: " + " ".join(cmd), file=sys.stderr, flush=True)
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    except OSError as e:
        fail(f"cannot run {binary}: {e}")
    if proc.returncode != 0:
        fail(f"{binary} exited with status {proc.returncode}")
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        fail(f"{binary} did not print JSON ({e})")


def collect(report):
    """{(family, config): [repetition dicts]} from the per-repetition entries."""
    runs = {}
    for b in report.get("benchmarks", []):
        if b.get("run_type", "iteration") != "iteration":
            continue  # mean/median/stddev/cv aggregates: we compute our own
        # run_name looks like "BM_Connpool/16x4/real_time/threads:16"
        parts = b.get("run_name", b["name"]).split("/")
        if len(parts) < 2:
            continue
        runs.setdefault((parts[0], parts[1]), []).append(b)
    return runs


def ok(reps):
    return [r for r in reps if not r.get("error_occurred")]


def median_of(reps, key):
    values = [r[key] for r in ok(reps) if key in r]
    return statistics.median(values) if values else None


def config_key(config):
    threads, _, size = config.partition("x")
    return (int(threads), int(size)) if threads.isdigit() and size.isdigit() else (1 << 30, 0)


def mcps(value):
    return "n/a" if value is None else f"{value / 1e6:.2f}"


def duration(ns):
    if ns is None:
        return "n/a"
    if ns < 1e3:
        return f"{ns:.0f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.1f} µs"
    if ns < 1e9:
        return f"{ns / 1e6:.1f} ms"
    return f"{ns / 1e9:.2f} s"


def notes(reps):
    """Footnote marks for a benchmark's repetitions: errors and runs cut short by the budget."""
    marks = []
    errors = [r for r in reps if r.get("error_occurred")]
    if errors:
        marks.append(f"error in {len(errors)}/{len(reps)}: {errors[0].get('error_message', '?')}")
    truncated = sum(1 for r in ok(reps) if r.get("truncated"))
    if truncated:
        marks.append(f"truncated {truncated}/{len(reps)}")
    return marks


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main():
    binary, reps, extra = parse_args(sys.argv)
    report = run(binary, reps, extra)
    runs = collect(report)
    configs = sorted({c for (_, c) in runs}, key=config_key)
    ctx = report.get("context", {})
    footnotes = []

    def mark(reps_list, name, check_span=False):
        marks = notes(reps_list)
        if check_span:
            # Google Benchmark times each thread from when it passes the starting barrier to
            # when it finishes, and averages those times. When threads outnumber cores and do
            # not block each other, they take turns and each one's time covers only its own
            # turn, so items_per_second comes out up to `threads` times the real rate.
            rate = median_of(reps_list, "items_per_second")
            span = median_of(reps_list, "span_items_per_second")
            if rate and span and rate > 1.2 * span:
                marks.append(f"items_per_second is {rate / span:.1f}× the span-based rate "
                             f"(threads took turns instead of overlapping): read the span table")
        if not marks:
            return ""
        footnotes.append(f"{name}: " + "; ".join(marks))
        return f" [{len(footnotes)}]"

    # 1. Throughput.
    rows = []
    for c in configs:
        naive = runs.get(("BM_Naive", c), [])
        ours = runs.get(("BM_Connpool", c), [])
        n = median_of(naive, "items_per_second")
        o = median_of(ours, "items_per_second")
        ratio = o / n if n and o is not None else None
        target = TARGETS.get(c, DEFAULT_TARGET)
        met = "n/a" if ratio is None else ("yes" if ratio >= target else "no")
        rows.append([c, mcps(n) + mark(naive, f"BM_Naive/{c}", True),
                     mcps(o) + mark(ours, f"BM_Connpool/{c}", True),
                     "n/a" if ratio is None else f"{ratio:.2f}×", f"{target:g}×", met])
    print(f"## Acquire+release throughput (median of {reps} repetitions, "
          f"{ctx.get('num_cpus', '?')} CPUs, {ctx.get('host_name', '?')})\n")
    print(table(["config (threads×pool)", "naive M cycles/s", "connpool M cycles/s", "ratio",
                 "target", "met?"], rows))

    # 2. Spread and the span-based cross-check.
    rows = []
    for c in configs:
        row = [c]
        for family in ("BM_Naive", "BM_Connpool"):
            values = [r["items_per_second"] for r in ok(runs.get((family, c), []))
                      if "items_per_second" in r]
            row.append(f"{mcps(min(values))}–{mcps(max(values))}" if values else "n/a")
        n = median_of(runs.get(("BM_Naive", c), []), "span_items_per_second")
        o = median_of(runs.get(("BM_Connpool", c), []), "span_items_per_second")
        row += [mcps(n), mcps(o), "n/a" if not n or o is None else f"{o / n:.2f}×"]
        rows.append(row)
    print("\n## Spread over repetitions, and span-based throughput\n")
    print("span = all threads' cycles / thread 0's wall-clock span of the whole timed loop; "
          "unlike items_per_second it cannot be inflated when threads outnumber cores.\n")
    print(table(["config", "naive min–max", "connpool min–max", "naive span M/s",
                 "connpool span M/s", "span ratio"], rows))

    # 3. Waits around every acquire.
    rows = []
    for c in configs:
        row = [c]
        for family in ("BM_Naive_Wait", "BM_Connpool_Wait"):
            reps_list = runs.get((family, c), [])
            maxes = [r["max_ns"] for r in ok(reps_list) if "max_ns" in r]
            row += [duration(median_of(reps_list, "p50_ns")),
                    duration(median_of(reps_list, "p99_ns")),
                    duration(max(maxes) if maxes else None) + mark(reps_list, f"{family}/{c}")]
        rows.append(row)
    print("\n## Acquire wait, steady_clock around every acquire (_Wait variants; "
          "median p50/p99 over repetitions, worst max)\n")
    print(table(["config", "naive p50", "naive p99", "naive max", "connpool p50",
                 "connpool p99", "connpool max"], rows))

    # 4. connpool's own statistics.
    rows = []
    for c in configs:
        reps_list = runs.get(("BM_Connpool", c), [])
        maxes = [r["max_ns"] for r in ok(reps_list) if "max_ns" in r]
        warm = [r["warm_max_ns"] for r in ok(reps_list) if "warm_max_ns" in r]
        rows.append([c, duration(median_of(reps_list, "p50_ns")),
                     duration(median_of(reps_list, "p99_ns")),
                     duration(max(maxes) if maxes else None),
                     duration(max(warm) if warm else None)])
    print("\n## connpool pool.stats() acquire waits in the throughput runs "
          "(fast-path acquires count as 0; histogram, ≤12.5 % high)\n")
    print(table(["config", "p50", "p99", "max", "max during warm-up (untimed)"], rows))

    if footnotes:
        print()
        for i, text in enumerate(footnotes, 1):
            print(f"[{i}] {text}")
        if any("truncated" in f for f in footnotes):
            print("\ntruncated: the run hit the benchmark's wall-clock budget "
                  "(max(2 s, 4 × min_time)) and was cut short; its rate is over the part that ran.")


if __name__ == "__main__":
    main()
