#!/usr/bin/env bash
# Runs both examples against one endpoint and checks what they promise:
#   (a)  8 fenced-counter processes x 20 rounds on one lock: the counter ends at 160 and the
#        history shows no two holders overlapped;
#   (a') a holder frozen past its lease: another process takes the lock, and the frozen
#        holder's late write is fenced off;
#   (b)  an observer and three ha-service instances: kill -9 the active one and time the
#        takeover (bounded by the lease TTL), then SIGTERM the next and time it again
#        (resign: immediate).
#
# Usage: examples/demo.sh [ENDPOINT]     ENDPOINT defaults to 127.0.0.1:2379 (concord's default)
#        HA_TTL=2 examples/demo.sh ...   a shorter lease for (b), so a crash is noticed sooner
#
# Every name gets a per-run suffix, so reruns against the same cluster do not collide.
# Only loopback endpoints are accepted; every wait is bounded; child processes are killed
# on exit.
set -euo pipefail

endpoint=${1:-127.0.0.1:2379}
ha_ttl=${HA_TTL:-5}
case "$endpoint" in
  127.*:* | localhost:* | "[::1]":*) ;;
  *) echo "demo.sh: $endpoint is not a loopback endpoint; refusing to send traffic there" >&2; exit 2 ;;
esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
bin=${CARGO_TARGET_DIR:-$root/target}/debug
work=$(mktemp -d -t concord-demo.XXXXXX)
run=$(date +%s)-$$
children=()

cleanup() {
  local pid
  for pid in "${children[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }

# wait_for SECONDS REGEX FILE...: prints the first line of the FILEs matching REGEX, waiting
# up to SECONDS for one to appear.
wait_for() {
  local seconds=$1 regex=$2 deadline line
  shift 2
  deadline=$(($(now_ms) + seconds * 1000))
  while (($(now_ms) < deadline)); do
    line=$(grep -h -E "$regex" "$@" 2>/dev/null | head -n 1 || true)
    if [[ -n $line ]]; then
      echo "$line"
      return 0
    fi
    sleep 0.02
  done
  echo "demo.sh: no line matching /$regex/ in $* within ${seconds}s" >&2
  return 1
}

# field NAME LINE: the value of NAME=value in LINE.
field() { sed -E "s/.*(^| )$1=([^ ]*).*/\2/" <<<"$2"; }

echo "== building"
(cd "$root" && timeout 900 cargo build --quiet -p concord-examples)

# ---------------------------------------------------------------------------------------
echo
echo "== (a) 8 fenced-counter processes x 20 rounds against $endpoint"
lock=demo-lock-$run counter=demo-counter-$run
counters=()
for i in 1 2 3 4 5 6 7 8; do
  timeout 120 "$bin/fenced-counter" --endpoints "$endpoint" --lock "$lock" --counter "$counter" \
    --rounds 20 --client-id "p$i" >"$work/counter-$i.log" 2>&1 &
  counters+=($!)
  children+=($!)
done
failed=0
for pid in "${counters[@]}"; do wait "$pid" || failed=1; done
cat "$work"/counter-*.log | sort -t= -k5,5n >"$work/all-rounds.log"
if ((failed)); then
  echo "a fenced-counter process failed:" >&2
  grep -v '^round=' "$work"/counter-*.log >&2 || true
  exit 1
fi
echo "rounds: $(grep -c '^round=' "$work/all-rounds.log"), fenced: $(grep -c 'fenced=true' "$work/all-rounds.log" || true)"
echo "first and last rounds, in counter order:"
head -n 2 "$work/all-rounds.log"
tail -n 2 "$work/all-rounds.log"
check=$(timeout 30 "$bin/fenced-counter" --endpoints "$endpoint" --counter "$counter" --check)
echo "$check"
total=$(field counter "$check")
if [[ $total != 160 ]]; then
  echo "FAIL: counter is $total, expected 160" >&2
  exit 1
fi
echo "OK: counter == 160 and the history shows no overlap"

# ---------------------------------------------------------------------------------------
echo
echo "== (a') a holder frozen past its 2 s lease is fenced off"
lock=demo-frozen-lock-$run counter=demo-frozen-counter-$run
timeout 60 "$bin/fenced-counter" --endpoints "$endpoint" --lock "$lock" --counter "$counter" \
  --rounds 1 --ttl 2 --pause-ms 4000 --client-id frozen >"$work/frozen.log" 2>&1 &
frozen=$!
children+=($!)
wait_for 10 'freezing_ms=' "$work/frozen.log" >/dev/null
timeout 60 "$bin/fenced-counter" --endpoints "$endpoint" --lock "$lock" --counter "$counter" \
  --rounds 1 --ttl 2 --client-id healthy >"$work/healthy.log" 2>&1
wait "$frozen"
cat "$work/frozen.log" "$work/healthy.log"
timeout 30 "$bin/fenced-counter" --endpoints "$endpoint" --counter "$counter" --check
grep -q 'client=frozen .*fenced=true' "$work/frozen.log" || {
  echo "FAIL: the frozen holder's write was not fenced off" >&2
  exit 1
}
echo "OK: the frozen holder's late write was refused"

# ---------------------------------------------------------------------------------------
echo
echo "== (b) ha-service: observer + 3 instances (lease TTL ${ha_ttl}s)"
election=demo-election-$run
"$bin/ha-service" --endpoints "$endpoint" --election "$election" --observe >"$work/observer.log" 2>&1 &
children+=($!)
declare -A instance
for name in a b c; do
  "$bin/ha-service" --endpoints "$endpoint" --election "$election" --name "$name" --ttl "$ha_ttl" \
    >"$work/ha-$name.log" 2>&1 &
  instance[$name]=$!
  children+=($!)
done
ha_logs=("$work"/ha-{a,b,c}.log) # one-letter names, so "[^ab]" below means "neither a nor b"

first=$(wait_for 15 '^active ' "${ha_logs[@]}")
echo "$first"
first_name=$(field name "$first")
sleep 2 # let it work a little
# Grouped with stderr closed so that bash's "Killed" job report does not clutter the output.
{
  kill -9 "${instance[$first_name]}"
  killed_at=$(now_ms)
  wait "${instance[$first_name]}" || true
} 2>/dev/null
echo "kill -9 $first_name at=$killed_at"
second=$(wait_for $((ha_ttl * 3)) "^active name=[^$first_name] " "${ha_logs[@]}")
echo "$second"
echo "takeover after kill -9: $(($(field at "$second") - killed_at)) ms (lease TTL ${ha_ttl}s)"

second_name=$(field name "$second")
sleep 2
kill -TERM "${instance[$second_name]}"
termed_at=$(now_ms)
echo "SIGTERM $second_name at=$termed_at"
third=$(wait_for 10 "^active name=[^${first_name}${second_name}] " "${ha_logs[@]}")
echo "$third"
echo "takeover after SIGTERM (resign): $(($(field at "$third") - termed_at)) ms"
wait_for 10 '^resigned ' "$work/ha-$second_name.log"

third_name=$(field name "$third")
kill -TERM "${instance[$third_name]}"
wait_for 10 '^resigned ' "$work/ha-$third_name.log"
echo "observer saw (Observe reports each new leader; an election left empty prints nothing):"
cat "$work/observer.log"
echo
echo "demo done"
