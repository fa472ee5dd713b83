#!/usr/bin/env bash
# Space and bulk-delete figures of concord and etcd on this machine, one system after the
# other: a 3-member cluster is filled with N distinct keys by `concord bench put`, then the
# leader's figures are read and every key is deleted with one DeleteRange.
#
#   scripts/storage-compare.sh [CONCORD_BINARY] [ETCD_BINARY]
#       defaults: target/release/concord (built first unless NO_BUILD=1) and /usr/bin/etcd
#
# Environment:
#   KEYS=200000        how many keys to write (each once)
#   KEY_SIZE=256 VAL_SIZE=1024   (check perf's sizes)
#   RANDOM_KEYS=1      keys picked at random from a space of 10^15 (as check perf's random
#                      keys: inserts land all over the key order) instead of 0..KEYS in order
#   SYSTEMS="concord etcd"
#   RESULTS=DIR        member logs (default: a temp dir, removed unless KEEP=1)
#   PROFILE=1          also sample the leader with `perf record --call-graph dwarf` during
#                      the delete and the compaction, into RESULTS/SYSTEM/perf-del.data
#                      and perf-compact.data (kept: give RESULTS or KEEP=1)
#
# Per system it prints: write throughput of the fill (from the bench's JSON), the leader's
# database size (endpoint status), bytes the leader wrote to disk per put (/proc/PID/io
# write_bytes over the fill, so the WAL, the database and snapshots together), the WAL's
# bytes per put, the leader's RSS after the fill, and the wall time of `etcdctl del
# --prefix 0` (all keys: they are zero-padded numbers) with the count it reports, then of
# `etcdctl compaction --physical` at the revision after it (what check perf's
# --auto-compact does next).
# Bounded: cluster start 30 s, the fill 15 minutes, the delete 5 minutes (etcdctl's
# --command-timeout; a server may answer "request timed out" sooner).
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
KEYS="${KEYS:-200000}"
KEY_SIZE="${KEY_SIZE:-256}"
VAL_SIZE="${VAL_SIZE:-1024}"
# shellcheck source=lib/compare.sh
source "$ROOT/scripts/lib/compare.sh"
compare_setup storage-compare "$@"

# profile_start FILE PID: with PROFILE=1, samples PID into FILE until profile_stop.
perf_pid=""
profile_start() {
    perf_pid=""
    if [[ "${PROFILE:-0}" == 1 ]] && command -v perf >/dev/null; then
        perf record -F 499 --call-graph dwarf,16384 -o "$1" -p "$2" >/dev/null 2>&1 &
        perf_pid=$!
        sleep 1
    fi
}
profile_stop() {
    if [[ -n "$perf_pid" ]]; then kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null; fi
    perf_pid=""
}

json_field() { grep -o "\"$2\":[-0-9.eE+]*" "$1" 2>/dev/null | head -n 1 | cut -d: -f2; }
write_bytes() { awk '/^write_bytes/ { print $2 }' "/proc/$1/io" 2>/dev/null; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status" 2>/dev/null; }
per_put() { awk -v b="$1" -v n="$KEYS" 'BEGIN { if (n > 0 && b != "") printf "%.0f", b / n; else print "-" }'; }
mib() { awk -v b="$1" 'BEGIN { if (b != "") printf "%.0f", b / 1048576; else print "-" }'; }

echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); $(nproc) cores; $KEYS keys of $KEY_SIZE B with values of $VAL_SIZE B"
echo "concord: $CONCORD_BIN ($("$CONCORD_BIN" --version); workspace at $(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo '?'))"
echo "etcd:    $ETCD_BIN ($("$ETCD_BIN" --version | head -n 1))"
TABLE=()
for system in $SYSTEMS; do
    dir="$RESULTS/$system"
    mkdir -p "$dir"
    echo
    echo "== $system"
    start_cluster "$system" "$dir" || { stop_cluster; continue; }
    leader="$(leader_index)"
    leader_pid="${PIDS[$leader]}" leader_name="n$((leader + 1))"
    key_args=(--sequential-keys --key-space-size "$KEYS")
    [[ "${RANDOM_KEYS:-0}" == 1 ]] && key_args=(--key-space-size 1000000000000000)
    before="$(write_bytes "$leader_pid")"
    echo "\$ concord bench put --total $KEYS ${key_args[*]} --key-size $KEY_SIZE --val-size $VAL_SIZE --clients 256 --conns 16 --json --endpoints $LEADER"
    timeout --kill-after=5 900 "$CONCORD_BIN" bench put --total "$KEYS" "${key_args[@]}" \
        --key-size "$KEY_SIZE" --val-size "$VAL_SIZE" --clients 256 --conns 16 --json --endpoints "$LEADER" \
        >"$dir/fill.json" 2>"$dir/fill.err" || { echo "    fill failed:"; sed 's/^/    /' "$dir/fill.err"; }
    sed 's/^/    /' "$dir/fill.json"
    after="$(write_bytes "$leader_pid")"
    written=""
    [[ -n "$before" && -n "$after" ]] && written=$((after - before))
    rss="$(rss_kib "$leader_pid")"
    db="$("$ETCDCTL_BIN" --endpoints="$LEADER" endpoint status -w json 2>/dev/null | grep -o '"dbSize":[0-9]*' | cut -d: -f2)"
    case "$system" in
        concord) wal_dir="$dir/data/$leader_name/raft/wal" ;;
        etcd) wal_dir="$dir/data/$leader_name/member/wal" ;;
    esac
    # the segment files' sizes: both systems preallocate their last segment (64 MiB), so
    # a small run shows mostly that space
    wal="$(du -sb "$wal_dir" 2>/dev/null | cut -f1)"
    profile_start "$dir/perf-del.data" "$leader_pid"
    start_ns=$(date +%s%N)
    deleted="$("$ETCDCTL_BIN" --endpoints="$LEADER" --command-timeout=300s del --prefix 0 2>&1)"
    del_ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))
    echo "    del --prefix 0: $deleted (${del_ms} ms)"
    profile_stop
    # then a physical compaction at the current revision, as check perf --auto-compact does
    rev="$("$ETCDCTL_BIN" --endpoints="$LEADER" endpoint status -w json 2>/dev/null | grep -o '"revision":[0-9]*' | cut -d: -f2)"
    profile_start "$dir/perf-compact.data" "$leader_pid"
    start_ns=$(date +%s%N)
    compacted="$("$ETCDCTL_BIN" --endpoints="$LEADER" --command-timeout=300s compaction --physical "$rev" 2>&1 | tail -n 1)"
    compact_ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))
    echo "    compaction --physical $rev: $compacted (${compact_ms} ms)"
    profile_stop
    TABLE+=("| $system | $(json_field "$dir/fill.json" requests_per_second | cut -d. -f1) | $(mib "$db") | $(per_put "$db") | $(per_put "$written") | $(per_put "$wal") | $(( ${rss:-0} / 1024 )) | $deleted | $del_ms | $compact_ms |")
    stop_cluster
done
echo
echo "| system | fill puts/s | db size (MiB) | db bytes per put | disk bytes written per put | WAL bytes per put | leader RSS (MiB) | del --prefix answer | del time (ms) | compaction after (ms) |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |"
printf '%s\n' "${TABLE[@]}"
