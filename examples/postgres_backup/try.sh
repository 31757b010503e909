#!/usr/bin/env bash
# Try postgres_backup in one command: starts a throwaway PostgreSQL (initdb in a temporary
# directory, loopback only, a free port, SCRAM password auth), loads a sample shop database,
# backs it up with the example, restores the set into a new empty database, compares the two
# (schema and every table's rows), and stops the server. Nothing outside the temporary
# directory is touched; it is removed at the end (--keep keeps it).
#
#   examples/postgres_backup/try.sh                 # 20 MB of sample data, --jobs 2
#   examples/postgres_backup/try.sh --size-mb 200 -- --jobs 4 --serve 127.0.0.1:9464 --linger 30
#
# Options: --size-mb N (sample data, default 20), --example PATH (the binary, default
# build/default/examples/postgres_backup), --keep (leave the directory), and after `--`
# anything for postgres_backup itself. Needs PostgreSQL's server binaries (Debian: postgresql;
# CONNPOOL_PG_BINDIR overrides /usr/lib/postgresql/15/bin) and python3 (to find a free port).
# As root, the server runs as the `postgres` user (initdb refuses root).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
size_mb=20
example="$here/../../build/default/examples/postgres_backup"
keep=0
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --size-mb) size_mb=$2; shift 2 ;;
    --example) example=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "try.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done
case "$size_mb" in ''|*[!0-9]*) echo "try.sh: --size-mb expects a whole number, got '$size_mb'" >&2; exit 2 ;; esac
bindir=${CONNPOOL_PG_BINDIR:-/usr/lib/postgresql/15/bin}
[ -x "$bindir/initdb" ] || { echo "try.sh: no $bindir/initdb (Debian: apt-get install postgresql)" >&2; exit 1; }
[ -x "$example" ] || { echo "try.sh: no example binary at $example (cmake --build --preset default --target connpool_example_postgres_backup)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/connpool-pg-try-XXXXXX")
chmod 755 "$work"
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  as_owner "$bindir/pg_ctl" -D "$work/pg/data" -m fast -w stop >/dev/null 2>&1 || true
  if [ "$keep" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# ---- a throwaway server: its own directory, loopback, a free port, SCRAM ----
password=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir "$work/pg"
echo "$password" > "$work/pg/pwfile"
[ "$(id -u)" = 0 ] && chown -R postgres: "$work/pg"
echo "starting PostgreSQL on 127.0.0.1:$port in $work/pg"
as_owner "$bindir/initdb" -D "$work/pg/data" -U connpool --pwfile="$work/pg/pwfile" -E UTF8 --locale=C.UTF-8 \
  --auth-local=trust --auth-host=scram-sha-256 --no-sync >"$work/pg/initdb.log" 2>&1 \
  || { cat "$work/pg/initdb.log" >&2; exit 1; }
# fsync=off: this server is thrown away; the backup's own files are still fsynced.
as_owner "$bindir/pg_ctl" -D "$work/pg/data" -l "$work/pg/server.log" -w \
  -o "-c listen_addresses=127.0.0.1 -c port=$port -k $work/pg -c fsync=off -c max_connections=50" start >/dev/null \
  || { cat "$work/pg/server.log" >&2; exit 1; }

export PGHOST=127.0.0.1 PGPORT=$port PGUSER=connpool PGPASSWORD=$password # for psql; the example gets a conninfo
psql() { "$bindir/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }
conninfo() { echo "host=127.0.0.1 port=$port user=connpool password=$password dbname=$1"; }
psql -d postgres -c "CREATE DATABASE shop" -c "CREATE DATABASE shop_restored"

# ---- sample data: a small shop, about --size-mb MB ----
n=$((size_mb * 6000))
echo "loading sample data (about $size_mb MB)"
psql -d shop <<SQL
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE, joined date);
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers,
                     placed_at timestamptz NOT NULL, total numeric(12,2), status text);
CREATE TABLE order_lines (order_id bigint REFERENCES orders, line int, product text, qty int, price numeric(10,2),
                          PRIMARY KEY (order_id, line));
CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY, at timestamptz, payload jsonb);
CREATE TABLE "Audit Log; 2026" (who text, what text, raw bytea);
CREATE INDEX orders_by_customer ON orders (customer_id);
INSERT INTO customers (name, email, joined)
  SELECT 'customer ' || i, 'c' || i || '@example.com', date '2020-01-01' + i % 2000 FROM generate_series(1, $n / 10) i;
INSERT INTO orders (customer_id, placed_at, total, status)
  SELECT 1 + i % ($n / 10), timestamptz '2024-01-01' + i * interval '37 seconds', (i % 9973) / 7.0,
         (ARRAY['new', 'paid', 'shipped', 'returned'])[1 + i % 4] FROM generate_series(1, $n) i;
INSERT INTO order_lines SELECT o, l, 'product ' || ((o * l) % 500), 1 + (o + l) % 5, ((o * l) % 10000) / 100.0
  FROM generate_series(1, $n) o, generate_series(1, 2) l;
INSERT INTO events (at, payload)
  SELECT now() - i * interval '1 minute', jsonb_build_object('kind', 'view', 'page', '/item/' || i % 777, 'n', i)
  FROM generate_series(1, $n / 2) i;
INSERT INTO "Audit Log; 2026" SELECT 'user ' || i, E'tab\there, newline\nthere, back\\\\slash, ünïcødé', sha256(i::text::bytea)
  FROM generate_series(1, 1000) i;
ANALYZE;
SQL
echo "shop is $(psql -d shop -Atc "SELECT pg_size_pretty(pg_database_size('shop'))") on disk"

# ---- mistakes first: clear errors, the password never shown ----
set +e
"$example" "host=127.0.0.1 port=$port user=connpool password=wrong-$password dbname=shop" --out "$work/x" >"$work/wrong.out" 2>&1
wrong=$?
"$example" --jobs 0 "$(conninfo shop)" >"$work/flag.out" 2>&1
flag=$?
set -e
if [ "$wrong" != 1 ] || ! grep -q "password authentication failed" "$work/wrong.out" || grep -qF "$password" "$work/wrong.out"; then
  echo "try.sh: FAILED: a wrong password should fail (status 1, not 0/$wrong) with libpq's reason and without the password:" >&2
  cat "$work/wrong.out" >&2; exit 1
fi
if [ "$flag" != 2 ] || grep -qF "$password" "$work/flag.out"; then
  echo "try.sh: FAILED: --jobs 0 should exit with status 2 (not $flag), without the password:" >&2; cat "$work/flag.out" >&2; exit 1
fi
echo "a wrong password: $(head -1 "$work/wrong.out")"

# ---- the example: back up shop, restore into shop_restored ----
echo
echo "\$ postgres_backup \"host=127.0.0.1 port=$port user=connpool password=*** dbname=shop\" \\"
echo "      --out $work/backup --restore-into \"... dbname=shop_restored\" ${extra[*]:-}"
set +e
"$example" "$(conninfo shop)" --out "$work/backup" --restore-into "$(conninfo shop_restored)" "${extra[@]}" \
  > >(tee "$work/example.out") 2>&1
status=$?
set -e
wait
if grep -qF "$password" "$work/example.out"; then echo "try.sh: FAILED: the password appeared in the output" >&2; exit 1; fi
[ "$status" = 0 ] || { echo "try.sh: postgres_backup exited with status $status" >&2; exit 1; }

# ---- compare: the schema (pg_dump --schema-only) and every table's rows ----
echo
echo "comparing shop and shop_restored"
dump_schema() { "$bindir/pg_dump" --schema-only "$1" | grep -v '^\\\(un\)\{0,1\}restrict '; }
if ! diff <(dump_schema shop) <(dump_schema shop_restored) >"$work/schema.diff"; then
  echo "try.sh: FAILED: the schemas differ:" >&2; head -40 "$work/schema.diff" >&2; exit 1
fi
tables=$(psql -d shop -Atc "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
                             WHERE schemaname = 'public' ORDER BY 1")
failed=0
while IFS= read -r t; do
  q="SELECT count(*) || ' rows, md5 ' || md5(coalesce(string_agg(x::text, E'\n' ORDER BY x::text), '')) FROM $t x"
  a=$(psql -d shop -Atc "$q"); b=$(psql -d shop_restored -Atc "$q")
  if [ "$a" = "$b" ]; then printf '  %-22s %s: same\n' "$t" "$a"; else printf '  %-22s DIFFERS: %s vs %s\n' "$t" "$a" "$b"; failed=1; fi
done <<< "$tables"
seq_a=$(psql -d shop -Atc "SELECT string_agg(sequencename || '=' || coalesce(last_value, 0), ',' ORDER BY sequencename) FROM pg_sequences")
seq_b=$(psql -d shop_restored -Atc "SELECT string_agg(sequencename || '=' || coalesce(last_value, 0), ',' ORDER BY sequencename) FROM pg_sequences")
if [ "$seq_a" = "$seq_b" ]; then echo "  sequences: same ($seq_a)"; else echo "  sequences DIFFER: $seq_a vs $seq_b"; failed=1; fi
[ "$failed" = 0 ] || { echo "try.sh: FAILED: the restored database differs" >&2; exit 1; }
echo "try.sh: backup, restore and comparison succeeded"
