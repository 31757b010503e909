#!/usr/bin/env bash
# End-to-end checks of backup_demo's flags, run by the test suite:
#   check_flags.sh flags      DEMO WORKDIR PROMTOOL CURL PYTHON   bad flags exit 2 with a reason
#   check_flags.sh monitoring DEMO WORKDIR PROMTOOL CURL PYTHON   --json-lines, --metrics-file,
#       --serve (scraped with curl while it lingers) and --linger; output within 80 columns
# A missing tool fails the check (never a silent skip).
set -euo pipefail
mode=$1 demo=$2 work=$3 promtool=$4 curl=$5 python=$6
fail() { echo "FAIL: $*" >&2; exit 1; }
for tool in "$promtool" "$curl" "$python"; do
  [[ -n $tool && -x $tool ]] || fail "a tool this check needs is missing ('$tool'): apt-get install prometheus curl python3"
done
rm -rf "$work" && mkdir -p "$work"

expect_usage_error() { # expect_usage_error 'text in the message' args...
  local want=$1; shift
  local status=0
  "$demo" "$@" >"$work/out" 2>"$work/err" || status=$?
  [[ $status -eq 2 ]] || fail "backup_demo $* exited $status, expected 2"
  grep -qF -- "$want" "$work/err" || fail "backup_demo $*: stderr lacks '$want': $(cat "$work/err")"
  grep -qF "Try 'backup_demo --help'." "$work/err" || fail "no hint to --help"
}

if [[ $mode == flags ]]; then
  expect_usage_error "--databases: invalid value '0': expected a whole number from 1 to 64" --databases 0
  expect_usage_error "invalid value 'x2': expected a whole number from 1 to 1000000, or -1" --pages-per-step x2
  expect_usage_error "--serve: invalid address 'localhost': no port" --serve localhost
  expect_usage_error "--linger requires --serve" --linger 3
  expect_usage_error "--bogus" --bogus
  expect_usage_error "--json-lines" --json-lines
  "$demo" --help >"$work/help" || fail "--help exited $?"
  for flag in --json-lines --metrics-file --serve --linger --databases --pool-size; do
    grep -qF -- "$flag" "$work/help" || fail "--help does not list $flag"
  done
  # Each flag names its value once (CLI11 appends a validator's name to the type name).
  grep -qE -- "--serve HOST:PORT +serve" "$work/help" || fail "--help shows --serve as: $(grep -F -- --serve "$work/help" | head -1)"
  echo "bad flags: exit 2 with a reason"
  exit 0
fi

[[ $mode == monitoring ]] || fail "unknown mode $mode"
cd "$work" # a short --out, so the paths the demo prints do not decide whether its lines fit
"$demo" --databases 3 --size-mb 1 --pool-size 2 --pause-ms 5 --out data \
  --json-lines "$work/events.jsonl" --metrics-file "$work/connpool.prom" \
  --serve 127.0.0.1:0 --linger 3 >"$work/out" 2>"$work/err" &
pid=$!
port=
for _ in $(seq 1 600); do
  port=$(sed -n 's|^serving http://127.0.0.1:\([0-9]*\)/metrics.*|\1|p' "$work/out")
  [[ -n $port ]] && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.05
done
[[ -n $port ]] || { cat "$work/out" "$work/err" >&2; fail "the demo never said where it serves"; }
# Scrape until the jobs have ended (the demo lingers 3 s after that).
for _ in $(seq 1 600); do
  "$curl" -sf "http://127.0.0.1:$port/jobs" >"$work/jobs.json" || fail "GET /jobs failed"
  grep -q '"job":"restored.db"' "$work/jobs.json" && grep -q '"state":"succeeded"' "$work/jobs.json" &&
    ! grep -q '"state":"running"\|"state":"queued"' "$work/jobs.json" && break
  sleep 0.05
done
"$curl" -sf "http://127.0.0.1:$port/metrics" >"$work/scraped.prom" || fail "GET /metrics failed"
status=$("$curl" -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/nothing-here")
[[ $status == 404 ]] || fail "GET /nothing-here answered $status, expected 404"
wait $pid || { cat "$work/out" "$work/err" >&2; fail "the demo exited $?"; }

"$promtool" check metrics <"$work/scraped.prom" >"$work/lint" 2>&1 || { cat "$work/lint" >&2; fail "promtool: scraped metrics"; }
[[ ! -s $work/lint ]] || { cat "$work/lint" >&2; fail "promtool lint on the scraped metrics"; }
"$promtool" check metrics <"$work/connpool.prom" >"$work/lint" 2>&1 || { cat "$work/lint" >&2; fail "promtool: metrics file"; }
[[ ! -s $work/lint ]] || { cat "$work/lint" >&2; fail "promtool lint on the metrics file"; }
grep -q '^connpool_jobs{state="succeeded"} 4$' "$work/connpool.prom" || fail "metrics file lacks the 4 succeeded jobs"
grep -q '^connpool_job_last_success_timestamp_seconds{name="orders_1.db",kind="backup"} ' "$work/connpool.prom" ||
  fail "metrics file lacks the last success of orders_1.db"
grep -q '^connpool_pool_acquires_total{pool="backup"} ' "$work/scraped.prom" || fail "scrape lacks the backup pool"
ls -a "$work" | grep -q '^\.connpool\.prom\.' && fail "a temporary metrics file was left behind"

"$python" - "$work/events.jsonl" "$work/jobs.json" <<'PY' || fail "JSON lines"
import json, sys
seq, done, ends = 0, {}, {}
for line in open(sys.argv[1]):
    e = json.loads(line)
    seq += 1
    assert e["seq"] == seq and e["schema_version"] == 1 and e["time"].endswith("Z"), e
    if e["event"].startswith("job."):
        k = e["job_key"]
        assert e["done"] >= done.get(k, 0), e
        done[k] = e["done"]
        assert k not in ends, ("line after the end", e)
        if e["event"] == "job.ended":
            ends[k] = e["state"]
assert len(ends) == 4 and set(ends.values()) == {"succeeded"}, ends
jobs = json.load(open(sys.argv[2]))
assert isinstance(jobs, list) and len(jobs) == 4, jobs
print("json lines: %d lines, %d jobs, each ended once" % (seq, len(ends)))
PY
awk 'length > 80 { print "line " NR " has " length " columns: " $0; bad = 1 } END { exit bad }' "$work/out" ||
  fail "the demo's output does not fit 80 columns"
echo "monitoring flags: ok"
