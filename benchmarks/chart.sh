#!/usr/bin/env bash
# Draws a benchmark 2 JSON (postgres_vs_pg_dump/run.py or mysql_vs_mydumper/run.py --out) as an
# SVG bar chart with gnuplot (Debian: gnuplot-nox): the median of each variant, per N, with every
# raw run as a dot; connpool's bars blue, the other tools' orange, the title the JSON's "what".
#
#   benchmarks/chart.sh docs/postgres_benchmark.json docs/postgres_benchmark.svg
#   benchmarks/chart.sh docs/mysql_benchmark.json docs/mysql_benchmark.svg
set -euo pipefail
[ $# = 2 ] || { echo "usage: chart.sh RESULTS.json OUT.svg" >&2; exit 2; }
command -v gnuplot >/dev/null || { echo "chart.sh: no gnuplot (Debian: apt-get install gnuplot-nox)" >&2; exit 1; }
data=$(mktemp)
trap 'rm -f "$data"' EXIT
# One row per variant and N: x position, label, median, then the raw runs.
python3 - "$1" > "$data" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
x = 0
for n, r in d["by_jobs"].items():
    for name, med in r["median_seconds"].items():
        raw = r["raw_seconds"][name]
        # Both run.py list a size for each set a backup wrote, and none for a restore.
        op = "backup" if name in r.get("set_bytes", {}) else "restore"
        label = f"{op}: {name}, N={n}".replace('"', "'")
        kind = 0 if name.startswith("connpool") else 1
        print(x, f'"{label}"', med, kind, *raw)
        x += 1
    x += 1
PY
runs=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['runs'])" "$1")
title=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['what'].replace('\"', \"'\"))" "$1")
gnuplot <<GP
set terminal svg size 1000,580 font "sans,11" background "white"
set output "$2"
set termoption noenhanced
set title "$title (connpool blue): medians, dots = runs"
set ylabel "seconds (lower is better)"
set style fill solid 0.8 border -1
set boxwidth 0.8
set grid ytics
set yrange [0:*]
set xtics rotate by -40 left font ",9" nomirror
set key off
set bmargin 16
set rmargin 14
set offsets 0, 0, 0.5, 0
plot "$data" using 1:3:(\$4 == 0 ? 0x2a7ab9 : 0xd9822b):xtic(2) with boxes lc rgb variable, \
     for [i=5:$((4 + runs))] "$data" using 1:i with points pt 7 ps 0.5 lc rgb "black"
GP
echo "wrote $2"
