#!/usr/bin/env python3
"""A/B of two postgres_set_timer builds: the client's CPU time (user + sys) and wall clock of
an uncompressed backup_database, alternating A and B on one throwaway server (run.py's).

On a machine shared with other work the wall clock of one run moves by 30 % and more; the CPU
time the client process spends is what a client-side change (checksum, buffers, progress
reporting) can change, and it moves far less with the load. Each round runs A and B once, in
an order that alternates from round to round; medians are printed with every raw run.

  git archive OLD include | tar -x -C /tmp/old   # then build set_timer.cpp against it as A
  benchmarks/postgres_vs_pg_dump/cpu_ab.py --a /tmp/old/postgres_set_timer \\
      --b build/default/benchmarks/postgres_set_timer --size-mb 300 --runs 7
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (run.py's Server and data generator: one of each)


def backup(timer, server, dest, jobs, compression):
    """Returns (wall seconds, child CPU seconds) of one backup into dest (replaced)."""
    shutil.rmtree(dest, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    r = subprocess.run([timer, "backup", "--jobs", str(jobs), "--compression", compression,
                        server.conninfo("bench"), dest], env=server.env, capture_output=True, text=True)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        sys.exit(f"cpu_ab.py: {timer} failed ({r.returncode}): {r.stderr.replace(server.password, '***')}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--a", required=True, help="the baseline postgres_set_timer")
    ap.add_argument("--b", required=True, help="the changed postgres_set_timer")
    ap.add_argument("--size-mb", type=int, default=300)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--compression", default="none", choices=["none", "zstd"])
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="connpool-pg-cpu-ab-")
    os.chmod(work, 0o755)
    server = run.Server(work)
    try:
        db_bytes, _ = run.make_data(server, args.size_mb)
        print(f"database: {db_bytes / 1e6:.0f} MB; load {os.getloadavg()}")
        raw = {"A": [], "B": []}
        for i in range(args.runs):
            for name in (("A", "B") if i % 2 == 0 else ("B", "A")):
                wall, cpu = backup(args.a if name == "A" else args.b, server, os.path.join(work, "set"), args.jobs,
                                   args.compression)
                raw[name].append((wall, cpu))
                print(f"run {i + 1} {name}: wall {wall:.3f} s, client cpu {cpu:.3f} s; load {os.getloadavg()[0]:.2f}")
        for name in ("A", "B"):
            print(f"{name}: median wall {statistics.median(w for w, _ in raw[name]):.3f} s, "
                  f"median client cpu {statistics.median(c for _, c in raw[name]):.3f} s")
        print(f"B/A client cpu: {statistics.median(c for _, c in raw['B']) / statistics.median(c for _, c in raw['A']):.3f}")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
