#!/usr/bin/env bash
# `etcdctl check perf` against a 3-member concord cluster and a 3-member etcd cluster on
# the same machine, one after the other, with the same settings; prints each run's
# PASS/FAIL lines and a summary table (writes/s, slowest request, stddev, verdict, and
# concord/etcd ratios).
#
#   scripts/perf-compare.sh [CONCORD_BINARY] [ETCD_BINARY]
#       defaults: target/release/concord and `etcd` from PATH (Debian: etcd-server, 3.4.23)
#
# Environment:
#   LOADS="m l"        check perf loads to run, in order (s, m, l, xl)
#   SYSTEMS="concord etcd"
#   RESULTS=DIR        where raw outputs and member logs go (default: a new temp dir, kept)
#   CHECK_PERF_FLAGS   extra flags for check perf (default: --auto-compact --auto-defrag, so
#                      that the compaction and defragmentation steps run as well)
#
# The CPU seconds used during check perf are reported for the client (etcdctl) and for the
# three members together: on a small machine the load generator's share bounds what any
# server can reach.
#
# Every (system, load) pair gets a fresh cluster (new data dirs, loopback ports) so that
# runs do not inherit each other's database. Both systems run with etcd's default timing:
# --heartbeat-interval=100 --election-timeout=1000 (given explicitly to both).
# `check perf` takes about 60 s per run, plus start-up; 4 runs take about 5 minutes.
# No `set -e`: a failing step (check perf FAIL, an error from the server) is recorded, not
# fatal.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CONCORD_BIN="${1:-$ROOT/target/release/concord}"
ETCD_BIN="${2:-$(command -v etcd || echo etcd)}"
LOADS="${LOADS:-m l}"
SYSTEMS="${SYSTEMS:-concord etcd}"
CHECK_PERF_FLAGS="${CHECK_PERF_FLAGS:---auto-compact=true --auto-defrag=true}"
ETCDCTL_BIN="${ETCDCTL:-etcdctl}"
export ETCDCTL_API=3

for b in "$CONCORD_BIN" "$ETCD_BIN"; do
    if [[ ! -x "$b" ]]; then echo "error: '$b' not found or not executable" >&2; exit 2; fi
done
command -v "$ETCDCTL_BIN" >/dev/null || { echo "error: etcdctl not found (apt-get install etcd-client)" >&2; exit 2; }

RESULTS="${RESULTS:-$(mktemp -d "${TMPDIR:-/tmp}/perf-compare.XXXXXX")}"
mkdir -p "$RESULTS"
PIDS=()

# shellcheck source=lib/cluster.sh
source "$ROOT/scripts/lib/cluster.sh"

cleanup() {
    stop_cluster
    rm -rf "$RESULTS"/*/data
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SUMMARY=()
echo "date:    $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "host:    $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(uname -sr)"
echo "concord: $CONCORD_BIN ($("$CONCORD_BIN" --version), built $(date -u -r "$CONCORD_BIN" '+%Y-%m-%d %H:%M UTC'); workspace at $(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo '?'))"
echo "etcd:    $ETCD_BIN ($("$ETCD_BIN" --version | head -n 1))"
echo "etcdctl: $("$ETCDCTL_BIN" version | head -n 1)"
echo "results: $RESULTS"
echo "check perf flags: $CHECK_PERF_FLAGS"

for load in $LOADS; do
    for system in $SYSTEMS; do
        dir="$RESULTS/$system-$load"
        mkdir -p "$dir"
        echo
        echo "== $system, check perf --load=$load (load average before: $(cut -d' ' -f1-3 /proc/loadavg))"
        if ! start_cluster "$system" "$dir"; then
            SUMMARY+=("$system|$load|-|-|-|cluster did not start|-|-|-|-")
            stop_cluster
            continue
        fi
        echo "\$ etcdctl --endpoints=$ENDPOINTS check perf --load=$load $CHECK_PERF_FLAGS"
        t0=$SECONDS
        servers_before="$(members_cpu_ticks)"
        # in a subshell whose only child is etcdctl, so that `times` gives etcdctl's CPU
        # shellcheck disable=SC2086
        (
            "$ETCDCTL_BIN" --endpoints="$ENDPOINTS" check perf --load="$load" $CHECK_PERF_FLAGS \
                >"$dir/check-perf.raw" 2>&1
            echo $? >"$dir/check-perf.rc"
            times >"$dir/check-perf.times"
        )
        rc="$(cat "$dir/check-perf.rc")"
        secs=$((SECONDS - t0))
        servers_cpu="$(awk -v a="$servers_before" -v b="$(members_cpu_ticks)" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", (b - a) / hz }')"
        # the second line of `times`: children's user and system time, as 1m2.345s 0m1.000s
        client_cpu="$(sed -n 2p "$dir/check-perf.times" | awk '{ t = 0; for (i = 1; i <= 2; i++) { split($i, p, "m"); sub("s", "", p[2]); t += p[1] * 60 + p[2] } printf "%.1f", t }')"
        # the progress bar redraws with \r; keep the lines that say something
        tr '\r' '\n' <"$dir/check-perf.raw" | grep -vE '^ *[0-9]+ / [0-9]+ |^ *$' >"$dir/check-perf.txt" || true
        sed 's/^/    /' "$dir/check-perf.txt"
        echo "    (exit $rc, ${secs} s; CPU used: etcdctl ${client_cpu} s, the three members ${servers_cpu} s, of $((secs * $(nproc))) core-seconds)"
        # the cluster must still agree with itself after the load; a member still applying
        # the final delete may not answer at once, so ask for up to 60 s
        t1=$SECONDS
        while :; do
            hk="$("$ETCDCTL_BIN" --endpoints="$ENDPOINTS" endpoint hashkv 2>&1)"
            na="$(printf '%s\n' "$hk" | grep -cE '^127\.0\.0\.1:[0-9]+, [0-9]+$')"
            nh="$(printf '%s\n' "$hk" | grep -E '^127\.0\.0\.1:[0-9]+, [0-9]+$' | cut -d' ' -f2 | sort -u | grep -c .)"
            [[ ( $na -eq 3 && $nh -eq 1 ) || $((SECONDS - t1)) -ge 60 ]] && break
            sleep 1
        done
        echo "$hk" >"$dir/hashkv.txt"
        echo "    hashkv after the run: $na answers, $nh distinct hash(es), after $((SECONDS - t1)) s"
        "$ETCDCTL_BIN" --endpoints="$ENDPOINTS" endpoint status -w table >"$dir/status.txt" 2>&1
        st="$("$ETCDCTL_BIN" --endpoints="$ENDPOINTS" endpoint status -w json 2>/dev/null)"
        ridx="$(printf '%s' "$st" | grep -o '"raftIndex":[0-9]*' | cut -d: -f2 | sort -n | tail -n 1)"
        dbsz="$(printf '%s' "$st" | grep -o '"dbSize":[0-9]*' | cut -d: -f2 | sort -n | tail -n 1)"
        dbh="$(awk -v b="${dbsz:-0}" 'BEGIN { if (b >= 1e6) printf "%.0f MB", b / 1e6; else printf "%.0f kB", b / 1e3 }')"
        echo "    after the run: raft index ${ridx:-?}, largest db size $dbh"
        sed 's/^/    /' "$dir/status.txt"
        stop_cluster
        # etcdctl 3.4 prints "PASS: Throughput is N writes/s" or "FAIL: Throughput too low: N
        # writes/s", "...Slowest request took Xs" or "...Slowest request too slow: Xs",
        # "...Stddev is Xs" or "...Stddev too high: Xs"
        tput="$(sed -nE 's/^(PASS|FAIL): Throughput[^0-9]*([0-9]+) writes\/s.*/\2/p' "$dir/check-perf.txt" | head -n 1)"
        slow="$(sed -nE 's/^(PASS|FAIL): Slowest request[^0-9]*([0-9.]+) ?s.*/\2/p' "$dir/check-perf.txt" | head -n 1)"
        sdev="$(sed -nE 's/^(PASS|FAIL): Stddev[^0-9]*([0-9.]+) ?s.*/\2/p' "$dir/check-perf.txt" | head -n 1)"
        verdict="$(grep -xE 'PASS|FAIL' "$dir/check-perf.txt" | tail -n 1)"
        if [[ -z "$verdict" ]]; then
            verdict="ERROR: $(grep -m1 '^Error:' "$dir/check-perf.txt" || grep -m1 -i 'error' "$dir/check-perf.txt" || echo "exit $rc")"
        fi
        SUMMARY+=("$system|$load|${tput:--}|${slow:--}|${sdev:--}|$verdict|$nh|${ridx:--}|$dbh|$client_cpu / $servers_cpu")
    done
done

echo
echo "| system | load | writes/s | slowest request (s) | stddev (s) | check perf | hashkv distinct | raft index after | db size after | CPU s: etcdctl / members |"
echo "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"
for row in "${SUMMARY[@]}"; do
    IFS='|' read -r s l t sl sd v h ri db cpu <<<"$row"
    echo "| $s | $l | $t | $sl | $sd | $v | $h | $ri | $db | $cpu |"
done
echo "(raft index after = entries committed during the run, about one per write: a throughput"
echo " figure that exists even when check perf fails before printing its own)"
echo
echo "ratios (concord / etcd, same load):"
for load in $LOADS; do
    ct="" et="" cs="" es="" cr="" er=""
    for row in "${SUMMARY[@]}"; do
        IFS='|' read -r s l t sl _ _ _ ri _ <<<"$row"
        [[ "$l" == "$load" ]] || continue
        [[ "$s" == concord ]] && ct="$t" && cs="$sl" && cr="$ri"
        [[ "$s" == etcd ]] && et="$t" && es="$sl" && er="$ri"
    done
    line="  load=$load:"
    if [[ "$ct" =~ ^[0-9]+$ && "$et" =~ ^[0-9]+$ && "$et" -gt 0 ]]; then
        line+=" throughput $(awk -v a="$ct" -v b="$et" 'BEGIN{printf "%.2f", a/b}'), slowest request $(awk -v a="$cs" -v b="$es" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "-" }'),"
    fi
    if [[ "$cr" =~ ^[0-9]+$ && "$er" =~ ^[0-9]+$ && "$er" -gt 0 ]]; then
        line+=" entries committed (raft index) $(awk -v a="$cr" -v b="$er" 'BEGIN{printf "%.2f", a/b}')"
    fi
    [[ "$line" == "  load=$load:" ]] && line+=" n/a (needs both systems)"
    echo "$line"
done
echo "raw outputs and member logs: $RESULTS"
