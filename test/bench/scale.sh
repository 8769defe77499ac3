#!/usr/bin/env bash
# Scale run of issue 19 (docs/capacity.md): GATEWAYS `devgate serve`
# processes with PER_GATEWAY idle devices each, held by `devgate load --mode
# hold` processes of PER_LOAD devices (distinct 127.B.x.y sources) through
# BACKENDS demo backends (9,000 each); then HAProxy with HAPROXY_DEVICES. No process
# holds more than ~19,000 files. It measures per device: gateway RSS and
# fds, kernel memory (/proc/net/sockstat TCP mem pages, /proc/meminfo Slab,
# the socket slab caches) and ports per (source, backend) pair; `ss -tm`
# shows a sample socket's skmem. Not part of `make test`; run it alone:
#
#   make bench-scale            # or: test/bench/scale.sh bin/devgate OUTDIR
#
# Every process it starts is stopped by PID on exit.
set -euo pipefail

DEVGATE=$(realpath "${1:-bin/devgate}")
OUT=${2:-/tmp/devgate-scale}
GATEWAYS=${GATEWAYS:-4}
PER_GATEWAY=${PER_GATEWAY:-9000}
PER_LOAD=${PER_LOAD:-4500}
BACKENDS=${BACKENDS:-4} # a demo backend takes at most 10,000 connections
HAPROXY_DEVICES=${HAPROXY_DEVICES:-9000}
CONC=${CONC:-100} # dials in flight per load process

mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/devgate-scale.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$WORK"
}
trap cleanup EXIT
REPORT="$OUT/scale-report.txt"
: >"$REPORT"
say() { echo "$*" | tee -a "$REPORT"; }

# wait_line FILE PATTERN: the first line of FILE matching PATTERN (5 min).
wait_line() {
	for _ in $(seq 3000); do
		if grep -q -- "$2" "$1" 2>/dev/null; then
			grep -m1 -- "$2" "$1"
			return
		fi
		sleep 0.1
	done
	echo "timeout waiting for $2 in $1" >&2
	cat "$1" >&2
	exit 1
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
fds() { ls "/proc/$1/fd" | wc -l; }
tcp_mem_pages() { awk '$1 == "TCP:" {for (i = 2; i < NF; i++) if ($i == "mem") print $(i + 1)}' /proc/net/sockstat; }
tcp_inuse() { awk '$1 == "TCP:" {print $3}' /proc/net/sockstat; }
slab_kb() { awk '$1 == "Slab:" {print $2}' /proc/meminfo; }
# slabs: "name active_objs objsize" of the caches a socket takes.
slabs() { awk '$1 ~ /^(TCP|sock_inode_cache|dentry|filp|eventpoll_epi|eventpoll_pwq|request_sock_TCP|skbuff_head_cache|kmalloc-rnd-..-.*|kmalloc-.*)$/ {print $1, $2, $4}' /proc/slabinfo 2>/dev/null || true; }
slab_delta() { # before after: KB per cache that grew more than 512 KB
	awk 'NR == FNR {b[$1] = $2; next} {d = ($2 - b[$1]) * $3 / 1024; if (d > 512) printf "  %-22s +%d objects x %d B = %.0f KB\n", $1, $2 - b[$1], $3, d}' "$1" "$2"
}

say "# devgate scale run $(date -u +%FT%TZ) on $(nproc) cores, $(awk '/MemTotal/ {print $2 / 1024 " MB"}' /proc/meminfo)"
say "devgate $("$DEVGATE" version); nofile $(ulimit -n); ephemeral ports $(tr '\t' - </proc/sys/net/ipv4/ip_local_port_range)"
say "gateways $GATEWAYS x $PER_GATEWAY devices, load processes of $PER_LOAD, backends $BACKENDS"

# Backends.
BACKEND_ADDRS=()
for i in $(seq "$BACKENDS"); do
	"$DEVGATE" backend --id "b$i" --listen 127.0.0.1:0 --log-level error >"$WORK/backend$i.out" 2>&1 &
	PIDS+=($!)
	BACKEND_ADDRS+=("$(wait_line "$WORK/backend$i.out" "demo backend" | awk '{print $NF}')")
done
say "backends: ${BACKEND_ADDRS[*]}"

# hold_devices FIRST N TARGET BASE LABEL: one load process, started.
LOAD_PIDS=()
hold_devices() {
	"$DEVGATE" load --mode hold --target "$3" --devices "$2" --first-device "$1" --concurrency "$CONC" \
		--sources 100 --source-base "$4" --timeout 5s --max-failures 300 >"$WORK/$5.json" 2>"$WORK/$5.err" &
	PIDS+=($!)
	LOAD_PIDS+=($!)
}
# held LABEL...: devices held (ok) by those load processes, once they are all up.
held() {
	local ok=0
	for l in "$@"; do
		wait_line "$WORK/$l.json" '"ok"' >/dev/null
		ok=$((ok + $(grep -o '"ok":[0-9]*' "$WORK/$l.json" | cut -d: -f2)))
		if grep -q '"failed":[1-9]' "$WORK/$l.json"; then echo "load $l: $(cat "$WORK/$l.json")" >&2; fi
	done
	echo "$ok"
}
stop_loads() {
	for p in "${LOAD_PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
	LOAD_PIDS=()
}
# ports_per_backend: established connections to each backend address,
# counted on the dialling side (one ephemeral port each, from 127.0.0.1).
ports_per_backend() {
	for a in "${BACKEND_ADDRS[@]}"; do
		printf "  %s: %s connections from 127.0.0.1\n" "$a" "$(ss -Htn state established "dst $a" | wc -l)"
	done
}
sample_skmem() { # one dialled socket of the gateway, to the first backend
	ss -Htmn state established "dst ${BACKEND_ADDRS[0]}" | head -2 | tr -s ' \n' ' '
	echo
}

# ---- devgate ----
GW_PIDS=()
GW_ADDRS=()
for g in $(seq "$GATEWAYS"); do
	{
		echo "listen: 127.0.0.1:0"
		echo "key: {json: devid, types: [1]}"
		echo "backends:"
		for i in $(seq "$BACKENDS"); do echo "  - {id: b$i, addr: \"${BACKEND_ADDRS[$((i - 1))]}\"}"; done
		echo "limits: {maxConnections: $((PER_GATEWAY + 500)), maxConnectionsPerIP: -1, acceptRatePerIP: -1, strictFiles: true}"
		echo "admin: {listen: \"off\", httpListen: \"127.0.0.1:0\"}"
		echo "log: {level: info, format: console}"
	} >"$WORK/gw$g.yaml"
	"$DEVGATE" serve --config "$WORK/gw$g.yaml" >"$WORK/gw$g.log" 2>&1 &
	PIDS+=($!)
	GW_PIDS+=($!)
	GW_ADDRS+=("$(wait_line "$WORK/gw$g.log" "devgate serving" | grep -o '"listen": "[^"]*"' | cut -d'"' -f4)")
done
grep -h "startcheck" "$WORK"/gw1.log | sed 's/^/  gw1 /' | tee -a "$REPORT"
sleep 2
declare -A RSS0 FD0
for p in "${GW_PIDS[@]}"; do RSS0[$p]=$(rss_kb "$p"); FD0[$p]=$(fds "$p"); done
SOCK0=$(tcp_inuse) MEM0=$(tcp_mem_pages) SLAB0=$(slab_kb)
slabs >"$WORK/slab0"

labels=()
k=0
for g in $(seq "$GATEWAYS"); do
	for ((first = 0; first < PER_GATEWAY; first += PER_LOAD)); do
		n=$((PER_GATEWAY - first < PER_LOAD ? PER_GATEWAY - first : PER_LOAD))
		hold_devices $(((g - 1) * PER_GATEWAY + first)) "$n" "${GW_ADDRS[$((g - 1))]}" $((10 + k)) "load$k"
		labels+=("load$k")
		k=$((k + 1))
	done
done
T0=$(date +%s)
OK=$(held "${labels[@]}")
sleep 3 # let the gateways settle
say ""
say "## devgate: $OK devices held ($GATEWAYS gateways, $k load processes, ${BACKENDS} backends; $(($(date +%s) - T0)) s to connect)"
tot_rss=0
tot_fd=0
for p in "${GW_PIDS[@]}"; do
	r=$(rss_kb "$p") f=$(fds "$p")
	say "  gateway pid $p: RSS ${RSS0[$p]} -> $r KB, fds ${FD0[$p]} -> $f"
	tot_rss=$((tot_rss + r - RSS0[$p]))
	tot_fd=$((tot_fd + f - FD0[$p]))
done
SOCK1=$(tcp_inuse) MEM1=$(tcp_mem_pages) SLAB1=$(slab_kb)
slabs >"$WORK/slab1"
say "  per device: gateway RSS $(awk -v a="$tot_rss" -v n="$OK" 'BEGIN {printf "%.2f", a / n}') KB, gateway fds $(awk -v a="$tot_fd" -v n="$OK" 'BEGIN {printf "%.2f", a / n}')"
say "  TCP sockets in use $SOCK0 -> $SOCK1 ($(awk -v a="$((SOCK1 - SOCK0))" -v n="$OK" 'BEGIN {printf "%.2f", a / n}') per device: device, gateway x2, backend)"
say "  sockstat TCP mem $MEM0 -> $MEM1 pages ($(awk -v a="$((MEM1 - MEM0))" -v n="$OK" 'BEGIN {printf "%.3f", a * 4 / n}') KB per device, all four sockets, idle)"
say "  Slab $SLAB0 -> $SLAB1 KB: $(awk -v a="$((SLAB1 - SLAB0))" -v n="$OK" 'BEGIN {printf "%.2f", a / n}') KB per device for its four sockets (the gateway's two: half)"
slab_delta "$WORK/slab0" "$WORK/slab1" | tee -a "$REPORT"
say "  ports (dials to each backend):"
ports_per_backend | tee -a "$REPORT"
say "  sample ss -tm of a dialled socket: $(sample_skmem)"
grep -h -i "warn\|error" "$WORK"/gw*.log | head -5 | sed 's/^/  log: /' | tee -a "$REPORT" || true
stop_loads
for p in "${GW_PIDS[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
# The stopped run's sockets go away before HAProxy's baseline (at most a minute).
for _ in $(seq 60); do
	[ "$(tcp_inuse)" -lt 200 ] && break
	sleep 1
done

# ---- HAProxy ----
if ! command -v haproxy >/dev/null; then
	say "haproxy not installed: left out"
	exit 0
fi
{
	cat <<EOF
global
    maxconn 9800
    nbthread 2
    log stderr format raw local0 err
defaults
    mode tcp
    timeout connect 3s
    timeout client 10m
    timeout server 10m
frontend devices
    bind 127.0.0.1:0
    maxconn 9800
    tcp-request inspect-delay 10s
    tcp-request content reject unless { req.payload_lv(4,2) -m found }
    tcp-request content set-var(sess.devid) req.payload_lv(4,2),json_query('\$.devid')
    tcp-request content reject unless { var(sess.devid) -m found }
    tcp-request content accept
    default_backend netty
backend netty
    balance hash var(sess.devid)
    hash-type consistent
EOF
	for i in $(seq "$BACKENDS"); do echo "    server b$i ${BACKEND_ADDRS[$((i - 1))]}"; done
} >"$WORK/haproxy.cfg"
# bind :0 cannot be found from outside: pick a port the kernel just gave.
HPORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed -i "s/bind 127.0.0.1:0/bind 127.0.0.1:$HPORT/" "$WORK/haproxy.cfg"
haproxy -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
HP=$!
PIDS+=("$HP")
sleep 2
RSS0=$(rss_kb "$HP") F0=$(fds "$HP") SOCK0=$(tcp_inuse) MEM0=$(tcp_mem_pages) SLAB0=$(slab_kb)
slabs >"$WORK/slab0"
labels=()
for ((first = 0; first < HAPROXY_DEVICES; first += PER_LOAD)); do
	n=$((HAPROXY_DEVICES - first < PER_LOAD ? HAPROXY_DEVICES - first : PER_LOAD))
	hold_devices "$first" "$n" "127.0.0.1:$HPORT" $((30 + k)) "hload$k"
	labels+=("hload$k")
	k=$((k + 1))
done
OK=$(held "${labels[@]}")
sleep 3
R=$(rss_kb "$HP") F=$(fds "$HP") SOCK1=$(tcp_inuse) MEM1=$(tcp_mem_pages) SLAB1=$(slab_kb)
slabs >"$WORK/slab1"
say ""
say "## HAProxy $(haproxy -v | head -1 | awk '{print $3}') (nbthread 2, json_query): $OK devices held"
say "  haproxy pid $HP: RSS $RSS0 -> $R KB, fds $F0 -> $F"
say "  per device: RSS $(awk -v a="$((R - RSS0))" -v n="$OK" 'BEGIN {printf "%.2f", a / n}') KB, fds $(awk -v a="$((F - F0))" -v n="$OK" 'BEGIN {printf "%.2f", a / n}')"
say "  TCP sockets in use $SOCK0 -> $SOCK1; sockstat TCP mem $MEM0 -> $MEM1 pages; Slab $SLAB0 -> $SLAB1 KB ($(awk -v a="$((SLAB1 - SLAB0))" -v n="$OK" 'BEGIN {printf "%.2f", a / n}') KB per device, four sockets)"
slab_delta "$WORK/slab0" "$WORK/slab1" | tee -a "$REPORT"
say "  sample ss -tm of a dialled socket: $(sample_skmem)"
stop_loads
say ""
say "report: $REPORT"
