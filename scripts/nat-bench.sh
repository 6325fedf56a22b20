#!/usr/bin/env bash
# Time from "connected" to the first audio, and the path taken, for each home-NAT topology of
# tests/nat.rs (network namespaces + nftables, real server and clients; needs root).
# Runs the NAT lab RUNS times (default 3) and prints Markdown tables: first audio per topology
# and side, and the longest gap in received audio when something changes mid-call (the direct
# path breaks, a side's own address moves, UDP is cut and comes back), median and range.
#
#   sudo scripts/nat-bench.sh        # RUNS=5 scripts/nat-bench.sh for more samples
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
source scripts/test-env.sh
trap stop_test_env EXIT
start_pulse >/dev/null
LOG=$(mktemp)
cargo build --quiet --workspace --bins
for run in $(seq 1 "$RUNS"); do
  echo "run $run of $RUNS" >&2
  cargo nextest run --workspace --no-fail-fast -E 'binary(nat)' --no-capture --retries 0 \
    >>"$LOG" 2>&1 || echo "(some NAT test failed in run $run; see $LOG)" >&2
done
python3 - "$LOG" <<'PY'
import re, statistics, sys
rows = {}
pat = re.compile(r'^(.+?): (ana|bob) heard .*?; path "(\w+)", first audio after ([\d.]+) ms')
for line in open(sys.argv[1], errors="replace"):
    m = pat.match(line.strip())
    if m:
        topo, who, path, ms = m.group(1), m.group(2), m.group(3), float(m.group(4))
        rows.setdefault((topo, who), {"ms": [], "paths": set()})
        rows[(topo, who)]["ms"].append(ms)
        rows[(topo, who)]["paths"].add(path)
print("| topology | side | path | first audio after connect, median (range) ms | runs |")
print("|---|---|---|---|---|")
for (topo, who), r in sorted(rows.items()):
    v = r["ms"]
    print(f"| {topo} | {who} | {'/'.join(sorted(r['paths']))} | {statistics.median(v):.0f} ({min(v):.0f}–{max(v):.0f}) | {len(v)} |")
gaps = {}
gap_pat = re.compile(r'^(.+?): (ana|bob): longest gap (\d+) ms, path "(\w+)"')
for line in open(sys.argv[1], errors="replace"):
    m = gap_pat.match(line.strip())
    if m:
        event, who, ms, path = m.group(1), m.group(2), float(m.group(3)), m.group(4)
        gaps.setdefault((event, who), {"ms": [], "paths": set()})
        gaps[(event, who)]["ms"].append(ms)
        gaps[(event, who)]["paths"].add(path)
print()
print("| mid-call event | side | path at the end | longest gap in received audio, median (range) ms | runs |")
print("|---|---|---|---|---|")
for (event, who), r in sorted(gaps.items()):
    v = r["ms"]
    print(f"| {event} | {who} | {'/'.join(sorted(r['paths']))} | {statistics.median(v):.0f} ({min(v):.0f}–{max(v):.0f}) | {len(v)} |")
PY
rm -f "$LOG"
