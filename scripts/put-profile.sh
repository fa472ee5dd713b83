#!/usr/bin/env bash
# A single client's sequential puts against a 3-member cluster of each system, with what
# each member spends per request: context switches (all its threads, voluntary and not)
# and CPU time (user + system). Latency-bound work shows up as switches (hand-offs between
# threads) more than as CPU.
#
#   scripts/put-profile.sh [CONCORD_BINARY] [ETCD_BINARY]
#
# Environment: DURATION (8s), SYSTEMS ("concord etcd"), NO_BUILD=1, KEEP=1 (see
# scripts/lib/compare.sh). Loopback only; each cluster is stopped before the next starts.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DURATION="${DURATION:-8s}"
# shellcheck source=lib/compare.sh
source "$ROOT/scripts/lib/compare.sh"
compare_setup put-profile "$@"

# switches and CPU ticks of one process so far
switches() { awk '/ctxt_switches/ { s += $2 } END { print s + 0 }' /proc/"$1"/task/*/status 2>/dev/null; }
ticks() { awk '{ print $14 + $15 }' /proc/"$1"/stat 2>/dev/null; }

hz="$(getconf CLK_TCK)"
for system in $SYSTEMS; do
    dir="$RESULTS/$system"
    mkdir -p "$dir"
    start_cluster "$system" "$dir" || { stop_cluster; continue; }
    declare -a s0=() t0=()
    for pid in "${PIDS[@]}"; do s0+=("$(switches "$pid")"); t0+=("$(ticks "$pid")"); done
    report="$("$CONCORD_BIN" bench put --clients 1 --conns 1 --key-space-size 100000 \
        --duration "$DURATION" --json --endpoints "$LEADER")"
    total="$(grep -o '"total":[0-9]*' <<<"$report" | cut -d: -f2)"
    echo "$system: $(grep -oE '"(requests_per_second|p50_ms|p99_ms|fastest_ms)":[0-9.]+' <<<"$report" | tr '\n' ' ')"
    leader="$(leader_index)"
    i=0
    for pid in "${PIDS[@]}"; do
        role=follower
        [[ $i == "$leader" ]] && role=leader
        awk -v s0="${s0[$i]}" -v s1="$(switches "$pid")" -v t0="${t0[$i]}" -v t1="$(ticks "$pid")" \
            -v n="${total:-1}" -v hz="$hz" -v role="$role" \
            'BEGIN { printf "  %-8s switches/request %5.1f   CPU us/request %4.0f\n", role, (s1 - s0) / n, (t1 - t0) * 1e6 / hz / n }'
        i=$((i + 1))
    done
    stop_cluster
done
