#!/usr/bin/env bash
# `concord bench` workloads against a 3-member concord cluster and a 3-member etcd cluster
# on this machine, one system after the other (never both at once), same flags, each
# system's leader as the endpoint; prints a markdown table of requests/s and p50/p99.
#
#   scripts/bench-compare.sh [CONCORD_BINARY] [ETCD_BINARY]
#       defaults: target/release/concord (built first with cargo build --release -p concord
#       unless NO_BUILD=1) and /usr/bin/etcd (etcd 3.4.23 from Debian's etcd-server)
#
# Environment:
#   DURATION=10s     how long each workload runs
#   SYSTEMS="concord etcd"
#   ONLY="0 3"       run only these workloads (numbered from 0 in the list below)
#   RESULTS=DIR      where the JSON reports and member logs go (default: a temp dir,
#                    removed on exit unless KEEP=1)
#
# Workloads (the same command line for both systems, all with --duration $DURATION --json):
#   put at 1, 16 and 256 clients (random keys in a space of 100,000), range of one key
#   linearizable (l) at 1 and 16 clients and serializable (s) at 16, txn-mixed at 16
#   clients (--rw-ratio 1).
# Both systems run with etcd's default timing, given explicitly: --heartbeat-interval 100
# --election-timeout 1000. Loopback only. Every step is bounded (cluster start 30 s, each
# workload DURATION + 60 s); the trap stops every member it started and removes the temp
# dir. The load generator runs on the same cores as the servers, so on a small machine the
# figures are of the pair; compare ratios from one run, not absolute numbers across runs.
# Needs: bash, coreutils, etcdctl (for leader discovery; Debian: etcd-client).
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DURATION="${DURATION:-10s}"
# shellcheck source=lib/compare.sh
source "$ROOT/scripts/lib/compare.sh"
compare_setup bench-compare "$@"

# The workloads: name|bench arguments (before the common --duration/--json/--endpoints).
WORKLOADS=(
    "put, 1 client|put --clients 1 --conns 1 --key-space-size 100000"
    "put, 16 clients|put --clients 16 --conns 4 --key-space-size 100000"
    "put, 256 clients|put --clients 256 --conns 16 --key-space-size 100000"
    "range l, 1 client|range 00000000 --consistency l --clients 1 --conns 1"
    "range l, 16 clients|range 00000000 --consistency l --clients 16 --conns 4"
    "range s, 16 clients|range 00000000 --consistency s --clients 16 --conns 4"
    "txn-mixed, 16 clients|txn-mixed --rw-ratio 1 --clients 16 --conns 4 --key-space-size 100000"
)

# json_field FILE FIELD: a number from a one-line JSON report.
json_field() {
    grep -o "\"$2\":[-0-9.eE+]*" "$1" 2>/dev/null | head -n 1 | cut -d: -f2
}

# each workload's time limit: its duration plus a minute (15 minutes if DURATION is not N s)
if [[ "$DURATION" =~ ^[0-9]+s$ ]]; then LIMIT=$(( ${DURATION%s} + 60 )); else LIMIT=900; fi

declare -A RPS P50 P99 ERRS
echo "date:    $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "host:    $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(uname -sr)"
echo "concord: $CONCORD_BIN ($("$CONCORD_BIN" --version); workspace at $(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo '?'))"
echo "etcd:    $ETCD_BIN ($("$ETCD_BIN" --version | head -n 1))"
echo "each workload: concord bench ARGS --duration $DURATION --json --endpoints LEADER"
for system in $SYSTEMS; do
    dir="$RESULTS/$system"
    mkdir -p "$dir"
    echo
    echo "== $system (load average before: $(cut -d' ' -f1-3 /proc/loadavg))"
    if ! start_cluster "$system" "$dir"; then
        stop_cluster
        continue
    fi
    echo "leader: $LEADER"
    # the key the range workloads read
    "$ETCDCTL_BIN" --endpoints="$LEADER" --command-timeout=5s put 00000000 xxxxxxxx >/dev/null 2>&1 ||
        echo "warning: could not write the range key" >&2
    i=0
    for workload in "${WORKLOADS[@]}"; do
        if [[ -n "${ONLY:-}" && " $ONLY " != *" $i "* ]]; then
            i=$((i + 1))
            continue
        fi
        name="${workload%%|*}"
        read -r -a args <<<"${workload#*|}"
        report="$dir/workload-$i.json"
        echo "\$ concord bench ${args[*]} --duration $DURATION --json --endpoints $LEADER"
        timeout --kill-after=5 "$LIMIT" \
            "$CONCORD_BIN" bench "${args[@]}" --duration "$DURATION" --json --endpoints "$LEADER" \
            >"$report" 2>"$dir/workload-$i.err"
        rc=$?
        sed 's/^/    /' "$report"
        [[ $rc -eq 0 ]] || { echo "    (exit $rc)"; sed 's/^/    /' "$dir/workload-$i.err"; }
        RPS[$system,$i]="$(json_field "$report" requests_per_second)"
        P50[$system,$i]="$(json_field "$report" p50_ms)"
        P99[$system,$i]="$(json_field "$report" p99_ms)"
        ERRS[$system,$i]="$(json_field "$report" errors)"
        i=$((i + 1))
    done
    stop_cluster
done

fmt() { [[ -n "${1:-}" ]] && awk -v x="$1" 'BEGIN { printf "%.0f", x }' || printf -- "-"; }
fmt_ms() { [[ -n "${1:-}" ]] && awk -v x="$1" 'BEGIN { printf "%.2f", x }' || printf -- "-"; }
echo
echo "| workload | concord req/s | etcd req/s | ratio | concord p50/p99 (ms) | etcd p50/p99 (ms) | errors (concord/etcd) |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
i=0
for workload in "${WORKLOADS[@]}"; do
    name="${workload%%|*}"
    c="${RPS[concord,$i]:-}" e="${RPS[etcd,$i]:-}"
    ratio="-"
    if [[ -n "$c" && -n "$e" ]]; then
        ratio="$(awk -v a="$c" -v b="$e" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')"
    fi
    echo "| $name | $(fmt "$c") | $(fmt "$e") | $ratio | $(fmt_ms "${P50[concord,$i]:-}") / $(fmt_ms "${P99[concord,$i]:-}") | $(fmt_ms "${P50[etcd,$i]:-}") / $(fmt_ms "${P99[etcd,$i]:-}") | ${ERRS[concord,$i]:--} / ${ERRS[etcd,$i]:--} |"
    i=$((i + 1))
done
echo "(ratio = concord req/s / etcd req/s; each system's leader endpoint; $DURATION per workload)"
