#!/usr/bin/env bash
# Try mysql_backup in one command: starts a throwaway MariaDB (mariadb-install-db into a
# temporary directory, loopback only, a free port, its own socket, a user with a random
# password), loads a sample shop database, backs it up with the example, restores the set into
# a new empty database, compares the two (every table's rows, the view, the trigger and the
# procedure), and stops the server. Nothing outside the temporary directory is touched; it is
# removed at the end (--keep keeps it).
#
#   examples/mysql_backup/try.sh                 # 20 MB of sample data, --jobs 2
#   examples/mysql_backup/try.sh --size-mb 200 -- --jobs 4 --serve 127.0.0.1:9464 --linger 30
#
# Options: --size-mb N (sample data, default 20), --example PATH (the binary, default
# build/default/examples/mysql_backup), --keep (leave the directory), and after `--` anything
# for mysql_backup itself. Needs Debian's mariadb-server (mariadbd, mariadb-install-db, the
# mariadb client) and python3 (to find a free port). As root, the server runs as the `mysql` user.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
size_mb=20
example="$here/../../build/default/examples/mysql_backup"
keep=0
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --size-mb) size_mb=$2; shift 2 ;;
    --example) example=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "try.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done
case "$size_mb" in ''|*[!0-9]*) echo "try.sh: --size-mb expects a whole number, got '$size_mb'" >&2; exit 2 ;; esac
mariadbd=$(command -v mariadbd || echo /usr/sbin/mariadbd)
[ -x "$mariadbd" ] && command -v mariadb-install-db >/dev/null && command -v mariadb >/dev/null \
  || { echo "try.sh: no mariadbd, mariadb-install-db or mariadb (Debian: apt-get install mariadb-server)" >&2; exit 1; }
[ -x "$example" ] || { echo "try.sh: no example binary at $example (cmake --build --preset default --target connpool_example_mysql_backup)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/connpool-my-try-XXXXXX")
chmod 755 "$work"
mkdir "$work/db"
as_user=()
if [ "$(id -u)" = 0 ]; then chown mysql: "$work/db"; as_user=(--user=mysql); fi
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$server_pid" 2>/dev/null || true
  fi
  if [ "$keep" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# ---- a throwaway server: its own directory, loopback, a free port, its own socket ----
password=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sock="$work/db/mysqld.sock"
echo "starting MariaDB on 127.0.0.1:$port in $work/db"
mariadb-install-db --no-defaults --datadir="$work/db/data" "${as_user[@]}" --skip-test-db \
  --auth-root-authentication-method=socket >"$work/db/install.log" 2>&1 || { cat "$work/db/install.log" >&2; exit 1; }
# Durability relaxed for a server that is thrown away; the backup's own files are still fsynced.
"$mariadbd" --no-defaults --datadir="$work/db/data" --port="$port" --bind-address=127.0.0.1 --socket="$sock" \
  --pid-file="$work/db/mysqld.pid" --log-error="$work/db/server.log" --skip-log-bin --skip-name-resolve \
  --innodb-flush-log-at-trx-commit=0 --innodb-buffer-pool-size=128M --character-set-server=utf8mb4 \
  --collation-server=utf8mb4_unicode_ci --local-infile=1 "${as_user[@]}" >/dev/null 2>&1 &
server_pid=$!
for _ in $(seq 1 600); do
  [ -S "$sock" ] && mariadb --no-defaults -S "$sock" -u root -e 'SELECT 1' >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { echo "try.sh: mariadbd exited:" >&2; tail -20 "$work/db/server.log" >&2; exit 1; }
  sleep 0.1
done
root() { mariadb --no-defaults -S "$sock" -u root "$@"; }
root -e "CREATE USER 'shop'@'%' IDENTIFIED BY '$password'; GRANT ALL PRIVILEGES ON *.* TO 'shop'@'%';
         CREATE DATABASE shop CHARACTER SET utf8mb4; CREATE DATABASE shop_restored CHARACTER SET utf8mb4"
sql() { root --batch --skip-column-names "$1" -e "$2"; }

# ---- sample data: a small shop, about --size-mb MB ----
n=$((size_mb * 4000))
echo "loading sample data (about $size_mb MB)"
root shop <<SQL
CREATE TABLE customers (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(80) NOT NULL, email VARCHAR(120) UNIQUE,
                        joined DATE) ENGINE=InnoDB;
CREATE TABLE orders (id BIGINT PRIMARY KEY AUTO_INCREMENT, customer_id INT NOT NULL, placed_at DATETIME(6) NOT NULL,
                     total DECIMAL(12,2), status ENUM('new', 'paid', 'shipped', 'returned'), KEY (customer_id),
                     FOREIGN KEY (customer_id) REFERENCES customers (id)) ENGINE=InnoDB;
CREATE TABLE order_lines (order_id BIGINT, line INT, product VARCHAR(40), qty INT, price DECIMAL(10,2),
                          PRIMARY KEY (order_id, line)) ENGINE=InnoDB;
CREATE TABLE events (id BIGINT PRIMARY KEY AUTO_INCREMENT, at TIMESTAMP(3) NULL, payload JSON) ENGINE=InnoDB;
CREATE TABLE \`Audit Log; 2026\` (who VARCHAR(40), what TEXT, raw VARBINARY(32)) ENGINE=InnoDB;
CREATE TABLE page_hits (page VARCHAR(40) PRIMARY KEY, hits BIGINT) ENGINE=MyISAM;
INSERT INTO customers (name, email, joined)
  SELECT CONCAT('customer ', seq), CONCAT('c', seq, '@example.com'), DATE '2020-01-01' + INTERVAL seq % 2000 DAY
  FROM seq_1_to_$((n / 10 + 1));
INSERT INTO orders (customer_id, placed_at, total, status)
  SELECT 1 + seq % $((n / 10)), TIMESTAMP '2024-01-01 00:00:00' + INTERVAL seq * 37 SECOND, (seq % 9973) / 7.0,
         ELT(1 + seq % 4, 'new', 'paid', 'shipped', 'returned') FROM seq_1_to_$n;
INSERT INTO order_lines SELECT o.seq, l.seq, CONCAT('product ', (o.seq * l.seq) % 500), 1 + (o.seq + l.seq) % 5,
                               ((o.seq * l.seq) % 10000) / 100.0 FROM seq_1_to_$n o, seq_1_to_2 l;
INSERT INTO events (at, payload)
  SELECT TIMESTAMP '2026-01-01 00:00:00' - INTERVAL seq MINUTE,
         JSON_OBJECT('kind', 'view', 'page', CONCAT('/item/', seq % 777), 'n', seq) FROM seq_1_to_$((n / 2));
INSERT INTO \`Audit Log; 2026\` SELECT CONCAT('user ', seq), 'tab\there, newline\nthere, back\\\\slash, ünïcødé',
                                       UNHEX(SHA2(seq, 256)) FROM seq_1_to_1000;
INSERT INTO page_hits SELECT CONCAT('/item/', seq), seq * 3 FROM seq_1_to_777;
CREATE VIEW paid_orders AS SELECT o.id, c.name, o.total FROM orders o JOIN customers c ON c.id = o.customer_id
  WHERE o.status = 'paid';
CREATE TRIGGER count_hit AFTER INSERT ON events FOR EACH ROW
  UPDATE page_hits SET hits = hits + 1 WHERE page = JSON_UNQUOTE(JSON_EXTRACT(NEW.payload, '$.page'));
CREATE PROCEDURE orders_of(IN who INT) SELECT * FROM orders WHERE customer_id = who;
CREATE EVENT purge_old_events ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 03:00:00' DISABLE
  DO DELETE FROM events WHERE at < NOW() - INTERVAL 1 YEAR;
ANALYZE TABLE customers, orders, order_lines, events, \`Audit Log; 2026\`, page_hits;
SQL
echo "shop is $(sql shop "SELECT ROUND(SUM(DATA_LENGTH + INDEX_LENGTH) / 1048576, 1) FROM information_schema.TABLES
                        WHERE TABLE_SCHEMA = 'shop'") MB on disk"

# ---- mistakes first: clear errors, the password never shown ----
set +e
MYSQL_PWD="wrong-$password" "$example" --port "$port" --user shop shop --out "$work/x" >"$work/wrong.out" 2>&1
wrong=$?
MYSQL_PWD=$password "$example" --port "$port" --user shop --jobs 0 shop >"$work/flag.out" 2>&1
flag=$?
set -e
if [ "$wrong" != 1 ] || ! grep -q "Access denied" "$work/wrong.out" || grep -qF "$password" "$work/wrong.out"; then
  echo "try.sh: FAILED: a wrong password should fail (status 1, not 0/$wrong) with the server's reason and without the password:" >&2
  cat "$work/wrong.out" >&2; exit 1
fi
if [ "$flag" != 2 ] || grep -qF "$password" "$work/flag.out"; then
  echo "try.sh: FAILED: --jobs 0 should exit with status 2 (not $flag), without the password:" >&2; cat "$work/flag.out" >&2; exit 1
fi
echo "a wrong password: $(head -1 "$work/wrong.out")"

# ---- the example: back up shop, restore into shop_restored ----
echo
echo "\$ MYSQL_PWD=*** mysql_backup --port $port --user shop shop --out $work/backup --restore-into shop_restored ${extra[*]:-}"
set +e
MYSQL_PWD=$password "$example" --port "$port" --user shop shop --out "$work/backup" --restore-into shop_restored \
  "${extra[@]}" 2>&1 | tee "$work/example.out"
status=${PIPESTATUS[0]}
set -e
if grep -qF "$password" "$work/example.out"; then echo "try.sh: FAILED: the password appeared in the output" >&2; exit 1; fi
[ "$status" = 0 ] || { echo "try.sh: mysql_backup exited with status $status" >&2; exit 1; }

# ---- compare: every table's rows, engines, the view, the trigger, the procedure and the event ----
echo
echo "comparing shop and shop_restored"
failed=0
while IFS=$'\t' read -r t engine; do
  q="CHECKSUM TABLE \`${t//\`/\`\`}\` EXTENDED"
  a="$(sql shop "SELECT COUNT(*) FROM \`$t\`") rows, checksum $(sql shop "$q" | cut -f2), $engine"
  b="$(sql shop_restored "SELECT COUNT(*) FROM \`$t\`") rows, checksum $(sql shop_restored "$q" | cut -f2), $(sql shop_restored \
      "SELECT ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'shop_restored' AND TABLE_NAME = '$t'")"
  if [ "$a" = "$b" ]; then printf '  %-18s %s: same\n' "$t" "$a"; else printf '  %-18s DIFFERS: %s vs %s\n' "$t" "$a" "$b"; failed=1; fi
done < <(sql shop "SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'shop'
                   AND TABLE_TYPE = 'BASE TABLE' ORDER BY 1")
objects() {
  sql "$1" "SELECT CONCAT('view ', TABLE_NAME) FROM information_schema.VIEWS WHERE TABLE_SCHEMA = '$1'
            UNION ALL SELECT CONCAT('trigger ', TRIGGER_NAME) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '$1'
            UNION ALL SELECT CONCAT(LOWER(ROUTINE_TYPE), ' ', ROUTINE_NAME) FROM information_schema.ROUTINES
            WHERE ROUTINE_SCHEMA = '$1' UNION ALL SELECT CONCAT('event ', EVENT_NAME, ' (', STATUS, ', every ',
            INTERVAL_VALUE, ' ', INTERVAL_FIELD, ')') FROM information_schema.EVENTS WHERE EVENT_SCHEMA = '$1'
            ORDER BY 1" | paste -sd, -
}
if [ "$(objects shop)" = "$(objects shop_restored)" ]; then echo "  objects: same ($(objects shop))"
else echo "  objects DIFFER: $(objects shop) vs $(objects shop_restored)"; failed=1; fi
if [ "$(sql shop 'SELECT COUNT(*) FROM paid_orders')" != "$(sql shop_restored 'SELECT COUNT(*) FROM paid_orders')" ]; then
  echo "  the view paid_orders reads differently"; failed=1
fi
[ "$failed" = 0 ] || { echo "try.sh: FAILED: the restored database differs" >&2; exit 1; }
echo "try.sh: backup, restore and comparison succeeded"
