#!/usr/bin/env bash
# Restart time of a member with a large Raft log, concord beside etcd, one system after the
# other: a 3-member cluster runs with snapshots off in practice (--snapshot-count far
# above the writes), is filled with ENTRIES puts of 1 kB (1,000,000: about 1.1 GiB of
# log), then one follower
# is killed with SIGKILL and started again with the same command line. The figure is the
# time from the new process to its first answer to `etcdctl endpoint status`, and to the
# moment its applied index is back at the leader's.
#
#   scripts/restart-compare.sh [CONCORD_BINARY] [ETCD_BINARY]
#       defaults: target/release/concord (built first unless NO_BUILD=1) and /usr/bin/etcd
#
# Environment:
#   ENTRIES=1000000   puts before the restart
#   KEYS=100000       key space of the fill (keys are overwritten: the history grows, the
#                     live set does not), values of 1 kB, keys of 16 B
#   SYSTEMS="concord etcd"
#   RESULTS=DIR       member logs (default: a temp dir, removed unless KEEP=1)
# The WAL size is reported as `du -sm` of the follower's WAL directory (etcd preallocates
# 64 MiB segments, so its figure rounds up). Bounded: the fill stops after 15 minutes,
# the wait after the restart after 5.
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ENTRIES="${ENTRIES:-1000000}"
KEYS="${KEYS:-100000}"
# Far above what the fill writes, for both systems (each reads its own variable).
export CONCORD_SNAPSHOT_COUNT=100000000 ETCD_SNAPSHOT_COUNT=100000000
# shellcheck source=lib/compare.sh
source "$ROOT/scripts/lib/compare.sh"
compare_setup restart-compare "$@"

applied_of() {
    "$ETCDCTL_BIN" --endpoints="$1" --command-timeout=2s endpoint status -w json 2>/dev/null |
        grep -o '"raftAppliedIndex":[0-9]*' | cut -d: -f2
}
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); $(nproc) cores; $ENTRIES puts over $KEYS keys of 16 B, values of 1 kB"
TABLE=()
for system in $SYSTEMS; do
    dir="$RESULTS/$system"
    mkdir -p "$dir"
    echo
    echo "== $system"
    start_cluster "$system" "$dir" || { stop_cluster; continue; }
    IFS=, read -r -a eps <<<"$ENDPOINTS"
    # the first follower in member order
    victim=0
    [[ "$(leader_index)" == 0 ]] && victim=1
    name="n$((victim + 1))"
    case "$system" in
        concord) wal_dir="$dir/data/$name/raft/wal" ;;
        etcd) wal_dir="$dir/data/$name/member/wal" ;;
    esac
    echo "\$ concord bench put --total $ENTRIES --key-space-size $KEYS --key-size 16 --val-size 1024 --clients 64 --conns 8 --endpoints $LEADER"
    timeout --kill-after=5 900 "$CONCORD_BIN" bench put --total "$ENTRIES" --key-space-size "$KEYS" --key-size 16 \
        --val-size 1024 --clients 64 --conns 8 --json --endpoints "$LEADER" >"$dir/fill.json" 2>"$dir/fill.err" ||
        { echo "    fill failed:"; sed 's/^/    /' "$dir/fill.err"; }
    # blocks in use, the preallocated last segment (64 MiB, both systems) included
    wal_mib=$(du -sm "$wal_dir" | cut -f1)
    db_mib=$(( $(du -sm "$dir/data/$name" | cut -f1) - wal_mib ))
    target="$(applied_of "$LEADER")"
    echo "    WAL of $name: $wal_mib MiB, rest of its data dir: $db_mib MiB, leader applied index $target"
    pid="${PIDS[$victim]}"
    read -r -d '' -a cmd < <(tr '\0' '\n' <"/proc/$pid/cmdline"; printf '\0')
    kill -KILL "$pid"; wait "$pid" 2>/dev/null
    start=$(now_ms)
    "${cmd[@]}" >>"$dir/$name.log" 2>&1 &
    PIDS[$victim]=$!
    answered="" caught_up=""
    deadline=$((SECONDS + 300))
    port="${eps[$victim]##*:}"
    while [[ $SECONDS -lt $deadline ]]; do
        # etcdctl backs off a second after a refused connection: wait for the port first
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then sleep 0.02; continue; fi
        applied="$(applied_of "${eps[$victim]}")"
        if [[ -n "$applied" ]]; then
            [[ -z "$answered" ]] && answered=$(( $(now_ms) - start ))
            if [[ "$applied" -ge "$target" ]]; then caught_up=$(( $(now_ms) - start )); break; fi
        fi
        sleep 0.05
    done
    rss=$(awk '/^VmRSS/ { print int($2 / 1024) }' "/proc/${PIDS[$victim]}/status" 2>/dev/null)
    echo "    restart of $name: answered after ${answered:-never} ms, caught up after ${caught_up:-never} ms, RSS ${rss:-?} MiB"
    TABLE+=("| $system | $wal_mib | $target | ${answered:--} | ${caught_up:--} | ${rss:--} |")
    stop_cluster
done
echo
echo "| system | WAL (MiB) | entries | restart → first answer (ms) | restart → applied index caught up (ms) | RSS after (MiB) |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
printf '%s\n' "${TABLE[@]}"
