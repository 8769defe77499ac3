#!/bin/bash
# abcpu.sh MODE REPS NAME:PORT:PID... [-- LOAD ARGS]
#
# A/B rounds of proxy CPU per operation: for each repetition, runs
# `devgate load --mode MODE` (4 s) against each proxy in turn and prints the
# proxy's user and system CPU (from /proc/PID/stat) per connection (churn),
# exchange (pingpong) or MB (bulk). The proxies run side by side in front of
# the same backends, so every ratio compares figures of the same minutes.
# $DEVGATE is the devgate binary that generates the load (default bin/devgate).
set -eu
mode=$1; reps=$2; shift 2
targets=(); while [ $# -gt 0 ] && [ "$1" != "--" ]; do targets+=("$1"); shift; done
[ $# -gt 0 ] && shift
bin=${DEVGATE:-bin/devgate}
tck=$(getconf CLK_TCK)
extra=(); [ "$mode" != bulk ] && extra=(--sources 250)
for r in $(seq "$reps"); do
  for t in "${targets[@]}"; do
    IFS=: read -r name port pid <<<"$t"
    read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
    out=$("$bin" load --mode "$mode" --target "127.0.0.1:$port" --duration 4s "${extra[@]}" "$@")
    read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
    python3 - "$name" "$out" "$u0" "$s0" "$u1" "$s1" "$tck" "$(cut -d' ' -f1 /proc/loadavg)" <<'PY'
import json, sys
name, out = sys.argv[1], json.loads(sys.argv[2])
u0, s0, u1, s1, tck = map(int, sys.argv[3:8])
if out["mode"] == "bulk":
    ops, unit = (out["tx_bytes"] + out["rx_bytes"]) / 1e6, "MB"
else:
    ops, unit = out["ok"], "op"
us = lambda x: x / tck / ops * 1e6
print("%s %s ops=%d user=%.1f sys=%.1f total=%.1f us/%s rate=%.0f p99=%.0f load=%s" % (
    name, out["mode"], ops, us(u1 - u0), us(s1 - s0), us(u1 - u0 + s1 - s0), unit,
    ops / out["seconds"], out.get("p99_us", 0), sys.argv[8]))
PY
  done
done
