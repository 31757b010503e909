#!/usr/bin/env python3
"""Benchmark 2 for MySQL: connpool's backup_database/restore_database vs mydumper -t N, myloader -t N and mysqldump.

Starts a throwaway MariaDB (mariadb-install-db into a temporary directory, loopback, a free
port, a password user; as the `mysql` user when run as root), fills a database of about
--size-mb MB with the sequence engine, then for each N in --jobs runs --runs rounds; each round
runs every backup once, then every restore once, in an order rotated from round to round. Each
time is the whole command's wall clock (process start, connections, schema, data, fsyncs).
Restores go into a new empty database; the first round checks the restored row counts against
the source for connpool and myloader. Prints (or writes to --out) JSON with the raw runs,
medians, ratios and the load average after each round.

  benchmarks/mysql_vs_mydumper/run.py --size-mb 300 --jobs 2 4 --runs 5 --out docs/mysql_benchmark.json
  benchmarks/chart.sh docs/mysql_benchmark.json docs/mysql_benchmark.svg
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
USER = "bench"

# The same server for every tool. Durability as a production server keeps it (redo log flushed
# at every commit, doublewrite on); a buffer pool that holds the data.
SERVER_FLAGS = ["--skip-log-bin", "--skip-name-resolve", "--innodb-buffer-pool-size=512M",
                "--innodb-log-file-size=256M", "--innodb-flush-log-at-trx-commit=1", "--max-connections=100",
                "--character-set-server=utf8mb4", "--collation-server=utf8mb4_unicode_ci", "--local-infile=1"]


class Server:
    def __init__(self, work):
        self.dir = os.path.join(work, "db")
        os.mkdir(self.dir)
        as_user = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "mysql", "mysql")
            as_user = ["--user=mysql"]
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={self.dir}/data", *as_user, "--skip-test-db",
                        "--auth-root-authentication-method=socket"], check=True, capture_output=True)
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.socket = os.path.join(self.dir, "mysqld.sock")
        mariadbd = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        self.proc = subprocess.Popen([mariadbd, "--no-defaults", f"--datadir={self.dir}/data", f"--port={self.port}",
                                      "--bind-address=127.0.0.1", f"--socket={self.socket}",
                                      f"--log-error={self.dir}/server.log", *SERVER_FLAGS, *as_user],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(600):
            if os.path.exists(self.socket) and self.root("SELECT 1", check=False).returncode == 0:
                break
            if self.proc.poll() is not None:
                sys.exit("run.py: mariadbd exited:\n" + open(f"{self.dir}/server.log").read()[-2000:])
            time.sleep(0.1)
        self.password = os.urandom(12).hex()
        self.root(f"CREATE USER '{USER}'@'%' IDENTIFIED BY '{self.password}'; GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'%'")
        self.env = dict(os.environ, MYSQL_PWD=self.password)
        self.settings = SERVER_FLAGS

    def root(self, sql, db=None, check=True, capture=False):
        cmd = ["mariadb", "--no-defaults", "-S", self.socket, "-u", "root", "--batch", "--skip-column-names"]
        if db:
            cmd.append(db)
        r = subprocess.run(cmd + ["-e", sql], capture_output=True, text=True)
        if check and r.returncode != 0:
            sys.exit(f"run.py: SQL failed: {r.stderr}")
        return r.stdout.strip() if capture else r

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def make_data(server, size_mb):
    unit = size_mb * 1000  # rows per MB, roughly, for the large table's share
    server.root("CREATE DATABASE bench CHARACTER SET utf8mb4")
    sql = f"""
    CREATE TABLE large (id BIGINT PRIMARY KEY, at DATETIME(6), amount DECIMAL(12,2), note VARCHAR(64), KEY (at)) ENGINE=InnoDB;
    INSERT INTO large SELECT seq, TIMESTAMP '2024-01-01 00:00:00' + INTERVAL seq SECOND, (seq % 100000) / 100.0,
      CONCAT(MD5(seq), ' ', seq % 977) FROM seq_1_to_{int(unit * 4.5)};
    CREATE TABLE medium (id INT PRIMARY KEY, payload JSON) ENGINE=InnoDB;
    INSERT INTO medium SELECT seq, JSON_OBJECT('kind', 'event', 'page', CONCAT('/item/', seq % 777), 'n', seq,
      'tags', JSON_ARRAY('a', 'b', seq % 13)) FROM seq_1_to_{int(unit * 1.2)};
    CREATE TABLE small (id INT PRIMARY KEY, name VARCHAR(40), joined DATE, score DOUBLE) ENGINE=InnoDB;
    INSERT INTO small SELECT seq, CONCAT('customer ', seq), DATE '2020-01-01' + INTERVAL seq % 2000 DAY, seq * 0.37
      FROM seq_1_to_{int(unit * 1.5)};
    """
    for t in range(1, 4):
        sql += f"CREATE TABLE tiny_{t} (id INT PRIMARY KEY, v VARCHAR(20)); INSERT INTO tiny_{t} SELECT seq, CONCAT('v', seq) FROM seq_1_to_100;\n"
    sql += "ANALYZE TABLE large, medium, small;"
    server.root(sql, db="bench")
    info = server.root("SELECT TABLE_NAME, TABLE_ROWS, DATA_LENGTH + INDEX_LENGTH FROM information_schema.TABLES "
                       "WHERE TABLE_SCHEMA = 'bench'", capture=True)
    tables = {l.split("\t")[0]: [int(l.split("\t")[1]), int(l.split("\t")[2])] for l in info.splitlines()}
    return sum(v[1] for v in tables.values()), tables


def counts(server, db):
    names = server.root(f"SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{db}' ORDER BY 1",
                        capture=True).split()
    return {n: server.root(f"SELECT COUNT(*) FROM `{n}`", db=db, capture=True) for n in names}


def timed(cmd, env, stdout=None):
    started = time.monotonic()
    r = subprocess.run(cmd, env=env, stdout=stdout or subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seconds = time.monotonic() - started
    if r.returncode != 0:
        sys.exit(f"run.py: {cmd[0]} failed ({r.returncode}): {r.stderr.replace(env['MYSQL_PWD'], '***')[-2000:]}")
    return seconds


def dir_bytes(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=int, default=300)
    ap.add_argument("--jobs", type=int, nargs="+", default=[2])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--timer", default=os.path.join(HERE, "../../build/default/benchmarks/mysql_set_timer"))
    ap.add_argument("--out", default="-")
    ap.add_argument("--work", default=None, help="where the server and the sets go (default: a temp dir)")
    args = ap.parse_args()
    if not os.path.exists(args.timer):
        sys.exit(f"run.py: no {args.timer} (cmake --build --preset default --target connpool_benchmark_mysql_set_timer)")

    work = tempfile.mkdtemp(prefix="connpool-my-bench-", dir=args.work)
    os.chmod(work, 0o755)
    server = Server(work)
    try:
        db_bytes, tables = make_data(server, args.size_mb)
        print(f"database: {db_bytes / 1e6:.0f} MB on disk; load {os.getloadavg()}", file=sys.stderr)
        env = server.env
        login = ["-h", "127.0.0.1", "-P", str(server.port), "-u", USER, "-p", server.password]
        timer_login = ["--port", str(server.port), "--user", USER]
        results = {"what": "connpool backup_database/restore_database vs mydumper -t N / myloader -t N / mysqldump --single-transaction",
                   "mydumper": subprocess.run(["mydumper", "--version"], capture_output=True, text=True).stdout.strip(),
                   "server": server.root("SELECT VERSION()", capture=True), "server_settings": server.settings,
                   "cpus": os.cpu_count(), "database_bytes": db_bytes, "tables": tables, "runs": args.runs, "by_jobs": {}}
        for n in args.jobs:
            sets = os.path.join(work, f"sets-{n}")
            os.mkdir(sets)

            def fresh(name):
                p = os.path.join(sets, name)
                shutil.rmtree(p, ignore_errors=True)
                return p

            def empty_db():
                server.root("DROP DATABASE IF EXISTS target; CREATE DATABASE target CHARACTER SET utf8mb4")
                return "target"

            def mysqldump():
                with open(os.path.join(sets, "mysqldump.sql"), "w") as out:
                    return timed(["mysqldump", "-h", "127.0.0.1", "-P", str(server.port), "-u", USER, "--single-transaction",
                                  "--routines", "--triggers", "bench"], env, stdout=out)

            def mydumper_synced():
                out = fresh("mydumper-synced")
                seconds = timed(["mydumper", *login, "-B", "bench", "-t", str(n), "-o", out], env)
                files = [os.path.join(out, f) for f in sorted(os.listdir(out))]
                return seconds + timed(["sync", "--data", "--", *files], env)

            # mydumper gets its password on the command line (0.10 reads no environment variable).
            backups = {
                "connpool zstd-1 (default)": lambda: timed([args.timer, "backup", "--jobs", str(n), "--compression", "zstd",
                                                            *timer_login, "--database", "bench", fresh("connpool-zstd")], env),
                "connpool none": lambda: timed([args.timer, "backup", "--jobs", str(n), "--compression", "none",
                                                *timer_login, "--database", "bench", fresh("connpool-none")], env),
                "mydumper -t N": lambda: timed(["mydumper", *login, "-B", "bench", "-t", str(n), "-o", fresh("mydumper")], env),
                # What durability costs, measured apart: connpool without its read-back, and
                # mydumper followed by an fsync of every file it wrote (connpool fsyncs its files;
                # mydumper 0.10 does not, so its set may still be in the page cache when it exits).
                "connpool none, no read-back": lambda: timed([args.timer, "backup", "--jobs", str(n), "--compression", "none",
                                                              "--no-verify", *timer_login, "--database", "bench",
                                                              fresh("connpool-none-unverified")], env),
                "mydumper -t N, then fsync": lambda: mydumper_synced(),
                "mydumper -t N -c (gzip)": lambda: timed(["mydumper", *login, "-B", "bench", "-t", str(n), "-c",
                                                          "-o", fresh("mydumper-c")], env),
                "mysqldump --single-transaction": mysqldump,
            }
            restores = {
                "connpool (none set)": lambda: timed([args.timer, "restore", "--jobs", str(n), *timer_login,
                                                      "--database", empty_db(), os.path.join(sets, "connpool-none")], env),
                "connpool (zstd-1 set)": lambda: timed([args.timer, "restore", "--jobs", str(n), *timer_login,
                                                        "--database", empty_db(), os.path.join(sets, "connpool-zstd")], env),
                "myloader -t N": lambda: timed(["myloader", *login, "-B", empty_db(), "-t", str(n),
                                                "-d", os.path.join(sets, "mydumper")], env),
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
                    want = counts(server, "bench")
                    for name in ("connpool (none set)", "myloader -t N"):
                        restores[name]()
                        got = counts(server, "target")
                        if got != want:
                            sys.exit(f"run.py: {name} restored {got}, the source has {want}")
                loads.append(os.getloadavg()[0])
            sizes = {name: dir_bytes(os.path.join(sets, d)) for name, d in
                     (("connpool zstd-1 (default)", "connpool-zstd"), ("connpool none", "connpool-none"),
                      ("mydumper -t N", "mydumper"), ("mydumper -t N -c (gzip)", "mydumper-c"),
                      ("connpool none, no read-back", "connpool-none-unverified"),
                      ("mydumper -t N, then fsync", "mydumper-synced"),
                      ("mysqldump --single-transaction", "mysqldump.sql"))}
            med = {k: statistics.median(v) for k, v in raw.items()}
            results["by_jobs"][str(n)] = {
                "pool_size": n + 1, "raw_seconds": raw, "median_seconds": med, "set_bytes": sizes,
                "load_average_1min_after_each_round": loads,
                "ratios": {
                    "backup connpool none / mydumper": med["connpool none"] / med["mydumper -t N"],
                    "backup connpool none / mydumper then fsync": med["connpool none"] / med["mydumper -t N, then fsync"],
                    "backup connpool none without read-back / mydumper": med["connpool none, no read-back"] / med["mydumper -t N"],
                    "backup connpool zstd-1 / mydumper -c": med["connpool zstd-1 (default)"] / med["mydumper -t N -c (gzip)"],
                    "backup connpool zstd-1 / mysqldump": med["connpool zstd-1 (default)"] / med["mysqldump --single-transaction"],
                    "restore connpool (none set) / myloader": med["connpool (none set)"] / med["myloader -t N"],
                    "restore connpool (zstd-1 set) / myloader": med["connpool (zstd-1 set)"] / med["myloader -t N"],
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
