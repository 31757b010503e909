#!/usr/bin/env python3
"""Benchmark 2: postgres::backup_database / restore_database vs pg_dump -Fd -j N / pg_restore -j N.

Starts a throwaway PostgreSQL 15 (initdb in a temporary directory, as the postgres user under
root, loopback, a free port, SCRAM), fills a database of about --size-mb MB with generate_series
(tables of different sizes, with primary keys and an index), then, for each N in --jobs, runs
--runs rounds; each round runs every variant once, in an order rotated from round to round so
that no variant always runs first or last on this shared machine:

  backup  connpool zstd-1 (its default)   postgres_set_timer backup --compression zstd --level 1
  backup  connpool none                   postgres_set_timer backup --compression none
  backup  pg_dump default (gzip 6)        pg_dump -Fd -j N
  backup  pg_dump none                    pg_dump -Fd -j N -Z 0
  restore connpool (from its none set)    postgres_set_timer restore, into a new empty database
  restore pg_restore (from the -Z 0 set)  pg_restore -j N -d, into a new empty database
  restore connpool (from its zstd set) / pg_restore (from the gzip set)

Each time is the wall clock of the whole command (process start, connections, schema, data,
fsyncs: both tools fsync their output by default). PostgreSQL 15's pg_dump compresses with gzip
only, so "equal compression" is none vs none; the defaults are compared as they are. Writes one
JSON document (settings, load averages, sizes, every raw time, medians, ratios) to --out.

  benchmarks/postgres_vs_pg_dump/run.py --size-mb 300 --jobs 2 --runs 5 --out docs/postgres_benchmark.json
  benchmarks/chart.sh docs/postgres_benchmark.json docs/postgres_benchmark.svg
"""

import argparse
import json
import os
import pwd
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BINDIR = os.environ.get("CONNPOOL_PG_BINDIR", "/usr/lib/postgresql/15/bin")
HERE = os.path.dirname(os.path.abspath(__file__))


def as_owner(cmd):
    """Runs cmd as the cluster's owner (postgres when we are root)."""
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


class Server:
    def __init__(self, work):
        self.work = work
        self.pgdir = os.path.join(work, "pg")
        self.password = secrets.token_hex(12)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        os.mkdir(self.pgdir)
        pwfile = os.path.join(self.pgdir, "pwfile")
        with open(pwfile, "w") as f:
            f.write(self.password + "\n")
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            for p in (self.pgdir, pwfile):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        as_owner([f"{BINDIR}/initdb", "-D", f"{self.pgdir}/data", "-U", "connpool", f"--pwfile={pwfile}", "-E", "UTF8",
                  "--locale=C.UTF-8", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"])
        # Settings both tools get alike: no checkpoint in the middle of a load (max_wal_size),
        # enough connections. fsync stays on: restores pay for durability as they would for real.
        self.settings = {"listen_addresses": "127.0.0.1", "port": str(self.port), "unix_socket_directories": self.pgdir,
                         "max_wal_size": "4GB", "checkpoint_timeout": "30min", "max_connections": "50"}
        opts = " ".join(f"-c {k}={v}" for k, v in self.settings.items())
        as_owner([f"{BINDIR}/pg_ctl", "-D", f"{self.pgdir}/data", "-l", f"{self.pgdir}/server.log", "-w", "-o", opts,
                  "start"])
        self.env = dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(self.port), PGUSER="connpool",
                        PGPASSWORD=self.password)

    def conninfo(self, db):
        return f"host=127.0.0.1 port={self.port} user=connpool password={self.password} dbname={db}"

    def psql(self, db, sql, capture=False):
        r = subprocess.run([f"{BINDIR}/psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql],
                           env=self.env, check=True, capture_output=True, text=True)
        return r.stdout.strip() if capture else None

    def stop(self):
        try:
            as_owner([f"{BINDIR}/pg_ctl", "-D", f"{self.pgdir}/data", "-m", "fast", "-w", "stop"])
        except subprocess.CalledProcessError:
            pass


def make_data(server, size_mb):
    """About size_mb MB on disk: one large table (~60 %), a medium one with jsonb (~25 %), a
    small one (~12 %) and a few tiny ones, each with a primary key; one more index."""
    server.psql("postgres", "CREATE DATABASE bench")
    unit = size_mb * 700  # rows per MB on disk, measured on this schema (indexes included)
    sql = f"""
    CREATE TABLE large (id bigint PRIMARY KEY, at timestamptz, amount numeric(12,2), note text);
    INSERT INTO large SELECT i, timestamptz '2024-01-01' + i * interval '1 second', (i % 100000) / 100.0,
      md5(i::text) || ' ' || (i % 977) FROM generate_series(1, {int(unit * 6.5)}) i;
    CREATE INDEX large_at ON large (at);
    CREATE TABLE medium (id int PRIMARY KEY, payload jsonb);
    INSERT INTO medium SELECT i, jsonb_build_object('kind', 'event', 'page', '/item/' || i % 777, 'n', i,
      'tags', jsonb_build_array('a', 'b', i % 13)) FROM generate_series(1, {int(unit * 1.6)}) i;
    CREATE TABLE small (id int PRIMARY KEY, name text, joined date, score float8);
    INSERT INTO small SELECT i, 'customer ' || i, date '2020-01-01' + i % 2000, i * 0.37
      FROM generate_series(1, {int(unit * 2.0)}) i;
    """
    for t in range(1, 4):
        sql += f"CREATE TABLE tiny_{t} (id int PRIMARY KEY, v text); INSERT INTO tiny_{t} SELECT i, 'v' || i FROM generate_series(1, 100) i;\n"
    sql += "ANALYZE;"
    server.psql("bench", sql)
    rows = server.psql("bench", "SELECT json_object_agg(relname, json_build_array(n_live_tup, pg_total_relation_size(relid))) "
                       "FROM pg_stat_user_tables", capture=True)
    return int(server.psql("bench", "SELECT pg_database_size('bench')", capture=True)), json.loads(rows)


def timed(cmd, env):
    started = time.monotonic()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if r.returncode != 0:
        sys.exit(f"run.py: {cmd[0]} failed ({r.returncode}): {r.stderr.replace(env.get('PGPASSWORD', '?'), '***')}")
    return seconds


def dir_bytes(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=int, default=300)
    ap.add_argument("--jobs", type=int, nargs="+", default=[2])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--timer", default=os.path.join(HERE, "../../build/default/benchmarks/postgres_set_timer"))
    ap.add_argument("--out", default="-")
    ap.add_argument("--work", default=None, help="where the server and the sets go (default: a temp dir)")
    args = ap.parse_args()
    if not os.path.exists(args.timer):
        sys.exit(f"run.py: no {args.timer} (cmake --build --preset default --target connpool_benchmark_postgres_set_timer)")

    work = tempfile.mkdtemp(prefix="connpool-pg-bench-", dir=args.work)
    os.chmod(work, 0o755)
    server = Server(work)
    try:
        db_bytes, tables = make_data(server, args.size_mb)
        print(f"database: {db_bytes / 1e6:.0f} MB on disk; load {os.getloadavg()}", file=sys.stderr)
        env = server.env
        pg_dump, pg_restore = f"{BINDIR}/pg_dump", f"{BINDIR}/pg_restore"
        results = {"what": "connpool backup_database/restore_database vs pg_dump -Fd -j N / pg_restore -j N",
                   "pg_dump": subprocess.run([pg_dump, "--version"], capture_output=True, text=True).stdout.strip(),
                   "server_settings": {k: v for k, v in server.settings.items() if k not in ("port", "unix_socket_directories")},
                   "cpus": os.cpu_count(), "database_bytes": db_bytes, "tables": tables, "runs": args.runs, "by_jobs": {}}
        for n in args.jobs:
            sets = os.path.join(work, f"sets-{n}")
            os.mkdir(sets)

            def fresh(name):
                p = os.path.join(sets, name)
                shutil.rmtree(p, ignore_errors=True)
                return p

            def empty_db():
                server.psql("postgres", "DROP DATABASE IF EXISTS target")
                server.psql("postgres", "CREATE DATABASE target")
                return "target"

            backups = {
                "connpool zstd-1": lambda: timed([args.timer, "backup", "--jobs", str(n), "--compression", "zstd", "--level", "1",
                                                  server.conninfo("bench"), fresh("connpool-zstd")], env),
                "connpool none": lambda: timed([args.timer, "backup", "--jobs", str(n), "--compression", "none",
                                                server.conninfo("bench"), fresh("connpool-none")], env),
                "pg_dump gzip-6 (default)": lambda: timed([pg_dump, "-Fd", "-j", str(n), "-f", fresh("pg_dump-gzip"), "bench"], env),
                "pg_dump none": lambda: timed([pg_dump, "-Fd", "-j", str(n), "-Z", "0", "-f", fresh("pg_dump-none"), "bench"], env),
            }
            restores = {
                "connpool (none set)": lambda: timed([args.timer, "restore", "--jobs", str(n), server.conninfo(empty_db()),
                                                      os.path.join(sets, "connpool-none")], env),
                "pg_restore (none set)": lambda: timed([pg_restore, "-j", str(n), "-d", empty_db(),
                                                        os.path.join(sets, "pg_dump-none")], env),
                "connpool (zstd-1 set)": lambda: timed([args.timer, "restore", "--jobs", str(n), server.conninfo(empty_db()),
                                                        os.path.join(sets, "connpool-zstd")], env),
                "pg_restore (gzip-6 set)": lambda: timed([pg_restore, "-j", str(n), "-d", empty_db(),
                                                          os.path.join(sets, "pg_dump-gzip")], env),
            }
            raw = {k: [] for k in list(backups) + list(restores)}
            loads = []
            for r in range(args.runs):
                for group in (backups, restores):  # restores need this round's sets
                    names = list(group)
                    names = names[r % len(names):] + names[:r % len(names)]
                    for name in names:
                        raw[name].append(round(group[name](), 3))
                        print(f"N={n} run {r + 1}: {name}: {raw[name][-1]:.2f} s", file=sys.stderr)
                if r == 0:  # the restored database equals the source (row counts), once per tool
                    counts = "SELECT string_agg(relname || '=' || n, ',' ORDER BY relname) FROM (SELECT relname, " \
                             "(xpath('/row/c/text()', query_to_xml('SELECT count(*) AS c FROM ' || quote_ident(relname), false, true, '')))[1]::text AS n " \
                             "FROM pg_stat_user_tables) t"
                    want = server.psql("bench", counts, capture=True)
                    for name in ("connpool (none set)", "pg_restore (none set)"):
                        restores[name]()
                        got = server.psql("target", counts, capture=True)
                        if got != want:
                            sys.exit(f"run.py: {name} restored {got}, the source has {want}")
                loads.append(os.getloadavg()[0])
            sizes = {name: dir_bytes(os.path.join(sets, d)) for name, d in
                     (("connpool zstd-1", "connpool-zstd"), ("connpool none", "connpool-none"),
                      ("pg_dump gzip-6 (default)", "pg_dump-gzip"), ("pg_dump none", "pg_dump-none"))}
            med = {k: statistics.median(v) for k, v in raw.items()}
            results["by_jobs"][str(n)] = {
                "pool_size": n + 1, "raw_seconds": raw, "median_seconds": med, "set_bytes": sizes,
                "load_average_1min_after_each_round": loads,
                "ratios": {
                    "backup connpool none / pg_dump none": med["connpool none"] / med["pg_dump none"],
                    "backup connpool zstd-1 / pg_dump default": med["connpool zstd-1"] / med["pg_dump gzip-6 (default)"],
                    "restore connpool / pg_restore (none sets)": med["connpool (none set)"] / med["pg_restore (none set)"],
                    "restore connpool zstd-1 / pg_restore gzip-6": med["connpool (zstd-1 set)"] / med["pg_restore (gzip-6 set)"],
                },
            }
            shutil.rmtree(sets)
        text = json.dumps(results, indent=2) + "\n"
        if args.out == "-":
            sys.stdout.write(text)
        else:
            with open(args.out, "w") as f:
                f.write(text)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
