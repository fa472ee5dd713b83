#!/usr/bin/env bash
# etcdctl compatibility test: starts a 3-member cluster on free loopback ports in a temp
# dir, then drives it with the real, unmodified `etcdctl` (API v3, all three endpoints)
# and compares its output with what etcd itself prints, string for string.
#
#   scripts/etcdctl-test.sh [BINARY]      (default: target/release/concord)
#
# BINARY may also be a real etcd (`scripts/etcdctl-test.sh /usr/bin/etcd`): the same checks
# then run against etcd, which is how the expected strings below were validated (etcd
# 3.4.23, etcdctl 3.4.23). The flags are the same for both; etcd has no `serve` verb.
#
# Needs: bash, etcdctl (Debian: apt-get install etcd-client), coreutils, grep, sed.
# Environment: ETCDCTL (default: etcdctl), KEEP=1 keeps the temp dir (logs, data) even on
# success; it is always kept on failure.
# Prints one line per check and ends with `N passed, M failed`; exits non-zero if M > 0.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${1:-$ROOT/target/release/concord}"
ETCDCTL_BIN="${ETCDCTL:-etcdctl}"
export ETCDCTL_API=3

if [[ ! -x "$BIN" ]]; then
    echo "error: server binary '$BIN' not found or not executable (build it: cargo build --release -p concord)" >&2
    exit 2
fi
if ! command -v "$ETCDCTL_BIN" >/dev/null 2>&1; then
    echo "error: etcdctl not found (Debian: apt-get install etcd-client)" >&2
    exit 2
fi

# `concord serve --flags` or `etcd --flags`.
case "$(basename "$BIN")" in
    etcd*) SERVE=("$BIN") ;;
    *) SERVE=("$BIN" serve) ;;
esac

WORK="$(mktemp -d "${TMPDIR:-/tmp}/etcdctl-test.XXXXXX")"
PIDS=()
PASSED=0
FAILED=0

cleanup() {
    local rc=$?
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ $FAILED -gt 0 || $rc -ne 0 || "${KEEP:-0}" == 1 ]]; then
        echo "member logs and data kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------
# Helpers.

# free_port (and the cluster helpers of the comparison scripts, unused here).
# shellcheck source=lib/cluster.sh
source "$ROOT/scripts/lib/cluster.sh"

pass() { PASSED=$((PASSED + 1)); echo "ok   $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $1"; }

# check NAME EXPECTED ACTUAL: exact string comparison.
check() {
    if [[ "$2" == "$3" ]]; then
        pass "$1"
    else
        fail "$1"
        echo "  expected: $(printf '%q' "$2")"
        echo "  actual:   $(printf '%q' "$3")"
    fi
}

# ctl [etcdctl args...]: etcdctl against all three endpoints; stdout to $OUT, stderr to
# $ERR, exit status to $RC. Never aborts the script.
OUT=""
ERR=""
RC=0
ctl_at() {
    local eps="$1"
    shift
    local rc=0
    "$ETCDCTL_BIN" --endpoints="$eps" --command-timeout=5s "$@" >"$WORK/out" 2>"$WORK/err" <"${STDIN_FILE:-/dev/null}" || rc=$?
    OUT="$(cat "$WORK/out")"
    ERR="$(cat "$WORK/err")"
    RC=$rc
}
ctl() { ctl_at "$ENDPOINTS" "$@"; }

# ok NAME EXPECTED etcdctl-args...: the command succeeds and prints exactly EXPECTED.
ok() {
    local name="$1" expected="$2"
    shift 2
    ctl "$@"
    if [[ $RC -ne 0 ]]; then
        fail "$name"
        echo "  etcdctl $* exited $RC"
        echo "  stderr: $(printf '%q' "$ERR")"
        return 0
    fi
    check "$name" "$expected" "$OUT"
}

# err NAME EXPECTED_ERROR_LINE etcdctl-args...: the command fails, and the last line of
# stderr (etcdctl's `Error: ...`) is exactly EXPECTED_ERROR_LINE.
err() {
    local name="$1" expected="$2"
    shift 2
    ctl "$@"
    if [[ $RC -eq 0 ]]; then
        fail "$name"
        echo "  etcdctl $* succeeded, expected failure '$expected'"
        echo "  stdout: $(printf '%q' "$OUT")"
        return 0
    fi
    check "$name" "$expected" "$(printf '%s\n' "$ERR" | grep '^Error:' | tail -n 1)"
}

# json_num FIELD [N]: the N-th (default 1st) numeric value of "FIELD" in $OUT.
json_num() {
    { printf '%s' "$OUT" | grep -o "\"$1\":[0-9]*" || true; } | sed -n "${2:-1}p" | cut -d: -f2
}

# Header revision of the cluster as seen through all endpoints (a linearizable read).
current_rev() {
    ctl get revision-probe -w json
    json_num revision
}

# ---------------------------------------------------------------------------------------
# Start the cluster.

T0=$SECONDS
NAMES=(n1 n2 n3)
declare -A CPORT PPORT
for n in "${NAMES[@]}"; do
    CPORT[$n]=$(free_port)
    PPORT[$n]=$(free_port)
done
INITIAL_CLUSTER=""
EPS=()
for n in "${NAMES[@]}"; do
    INITIAL_CLUSTER+="${INITIAL_CLUSTER:+,}$n=http://127.0.0.1:${PPORT[$n]}"
    EPS+=("127.0.0.1:${CPORT[$n]}")
done
ENDPOINTS="$(IFS=,; echo "${EPS[*]}")"
TOKEN="etcdctl-test-$$"

echo "server: ${SERVE[*]}"
echo "etcdctl: $("$ETCDCTL_BIN" version | head -n 1)"
echo "cluster: $ENDPOINTS (data and logs in $WORK)"
for n in "${NAMES[@]}"; do
    "${SERVE[@]}" \
        --name "$n" \
        --data-dir "$WORK/$n.data" \
        --listen-client-urls "http://127.0.0.1:${CPORT[$n]}" \
        --advertise-client-urls "http://127.0.0.1:${CPORT[$n]}" \
        --listen-peer-urls "http://127.0.0.1:${PPORT[$n]}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${PPORT[$n]}" \
        --initial-cluster "$INITIAL_CLUSTER" \
        --initial-cluster-token "$TOKEN" \
        --initial-cluster-state new \
        >"$WORK/$n.log" 2>&1 &
    PIDS+=($!)
done

# Wait (up to 20 s) until every member answers Status and all name the same leader, one of
# themselves.
leader_ready() {
    ctl endpoint status -w json
    [[ $RC -eq 0 ]] || return 1
    local ids leaders
    ids="$(printf '%s' "$OUT" | grep -o '"member_id":[0-9]*' | cut -d: -f2 || true)"
    leaders="$(printf '%s' "$OUT" | grep -o '"leader":[0-9]*' | cut -d: -f2 | sort -u || true)"
    [[ "$(printf '%s\n' "$ids" | grep -c .)" -eq 3 ]] || return 1
    [[ "$(printf '%s\n' "$leaders" | grep -c .)" -eq 1 && "$leaders" != 0 ]] || return 1
    printf '%s\n' "$ids" | grep -qx "$leaders"
}
deadline=$((SECONDS + 20))
until leader_ready; do
    for pid in "${PIDS[@]}"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "error: a member exited during start-up; logs in $WORK" >&2
            tail -n 20 "$WORK"/*.log >&2
            exit 1
        fi
    done
    if [[ $SECONDS -ge $deadline ]]; then
        echo "error: no leader after 20 s; last status: $OUT $ERR" >&2
        tail -n 20 "$WORK"/*.log >&2
        exit 1
    fi
    sleep 0.2
done
echo "leader elected after $((SECONDS - T0)) s"
LEADER_AT=$SECONDS
echo

# ---------------------------------------------------------------------------------------
# Cluster and Maintenance API.

echo "== member list"
ctl member list
expected_members=""
for n in "${NAMES[@]}"; do
    expected_members+="$n, http://127.0.0.1:${PPORT[$n]}, http://127.0.0.1:${CPORT[$n]}, false"$'\n'
done
check "member list: 3 started members (name, peer URL, client URL, not learner)" \
    "$(printf '%s' "$expected_members" | sort)" \
    "$(printf '%s\n' "$OUT" | grep ', started, ' | cut -d, -f3- | sed 's/^ //' | sort)"
check "member list: names" "n1 n2 n3" \
    "$(printf '%s\n' "$OUT" | cut -d, -f3 | tr -d ' ' | sort | paste -sd' ')"
ids_member_list="$(printf '%s\n' "$OUT" | cut -d, -f1 | sort || true)"
check "member list: 3 distinct hex IDs" "3" \
    "$(printf '%s\n' "$ids_member_list" | grep -E '^[0-9a-f]{1,16}$' | sort -u | grep -c .)"
ctl member list -w json
check "member list -w json: 3 members" "3" "$(printf '%s' "$OUT" | grep -o '"ID":' | grep -c .)"

echo "== endpoint status"
ctl endpoint status -w json
leaders="$(printf '%s' "$OUT" | grep -o '"leader":[0-9]*' | cut -d: -f2 | sort -u || true)"
ids="$(printf '%s' "$OUT" | grep -o '"member_id":[0-9]*' | cut -d: -f2 || true)"
check "endpoint status -w json: 3 endpoints answer" "3" "$(printf '%s\n' "$ids" | grep -c .)"
check "endpoint status -w json: all name the same leader" "1" "$(printf '%s\n' "$leaders" | grep -c .)"
check "endpoint status -w json: exactly one endpoint is the leader" "1" \
    "$(printf '%s\n' "$ids" | grep -cx "$leaders" || true)"
ctl endpoint status -w table
check "endpoint status -w table: one row with IS LEADER true" "1" \
    "$(printf '%s\n' "$OUT" | grep -c '| *true *| *false *|' || true)"
# the member IDs in status are the member list's IDs (hex %x there, decimal here)
check "endpoint status IDs are the member list IDs" "$ids_member_list" \
    "$(for id in $ids; do printf '%x\n' "$id"; done | sort)"

echo "== endpoint health"
ctl endpoint health
expected_health=""
for ep in "${EPS[@]}"; do expected_health+="$ep is healthy"$'\n'; done
check "endpoint health: all healthy" "$(printf '%s' "$expected_health" | sort)" \
    "$( (printf '%s\n' "$OUT"; printf '%s\n' "$ERR") | grep -E '^127\.0\.0\.1:[0-9]+ is ' | sed 's/: successfully committed proposal: took = .*//' | sort)"
check "endpoint health: exit status" "0" "$RC"

# ---------------------------------------------------------------------------------------
# KV.

echo "== put / get"
REV0="$(current_rev)"
check "fresh cluster is at revision 1" "1" "$REV0"
ok "put foo bar" "OK" put foo bar
ok "put foo2 baz" "OK" put foo2 baz
ok "put fop x" "OK" put fop x
ok "get foo" $'foo\nbar' get foo
ok "get foo --prefix" $'foo\nbar\nfoo2\nbaz' get foo --prefix
ok "get foo --prefix --limit=1" $'foo\nbar' get foo --prefix --limit=1
ok "get fo --prefix --limit=2" $'foo\nbar\nfoo2\nbaz' get fo --prefix --limit=2
ok "get foo --prefix --keys-only" $'foo\n\nfoo2' get foo --prefix --keys-only
ok "get foo --print-value-only" "bar" get foo --print-value-only
ok "get fo --prefix --print-value-only" $'bar\nbaz\nx' get fo --prefix --print-value-only
ok "get missing key prints nothing" "" get no-such-key
ok "get foo fop (range [foo, fop))" $'foo\nbar\nfoo2\nbaz' get foo fop
ok "get --from-key fop" $'fop\nx' get --from-key fop
ok "get fo --prefix --sort-by=VALUE --order=DESCEND" $'fop\nx\nfoo2\nbaz\nfoo\nbar' \
    get fo --prefix --sort-by=VALUE --order=DESCEND

echo "== -w json revision fields"
ctl get foo -w json
check "get foo -w json: header revision = 1 + 3 puts" "$((REV0 + 3))" "$(json_num revision)"
check "get foo -w json: create_revision" "$((REV0 + 1))" "$(json_num create_revision)"
check "get foo -w json: mod_revision" "$((REV0 + 1))" "$(json_num mod_revision)"
check "get foo -w json: version" "1" "$(json_num version)"
check "get foo -w json: count" "1" "$(json_num count)"
check "get foo -w json: key and value (base64)" '"key":"Zm9v","value":"YmFy"' \
    "$(printf '%s' "$OUT" | grep -o '"key":"[^"]*"'),$(printf '%s' "$OUT" | grep -o '"value":"[^"]*"')"
ctl get fo --prefix --limit=1 -w json
check "get fo --prefix --limit=1 -w json: more=true, count=3 (count ignores limit)" \
    "true 3" "$(printf '%s' "$OUT" | grep -o '"more":true' | cut -d: -f2) $(json_num count)"

ok "put foo bar2 --prev-kv prints the previous pair" $'OK\nfoo\nbar' put foo bar2 --prev-kv
REV_PUT2="$((REV0 + 4))"
ctl get foo -w json
check "after overwrite: mod_revision moves, create_revision stays, version 2" \
    "create=$((REV0 + 1)) mod=$REV_PUT2 version=2" \
    "create=$(json_num create_revision) mod=$(json_num mod_revision) version=$(json_num version)"
ok "get foo --rev=$((REV0 + 1)) (old value)" $'foo\nbar' get foo --rev=$((REV0 + 1))
ok "get foo --rev=$REV0 (before it existed)" "" get foo --rev="$REV0"
ok "get fo --prefix --rev=$((REV0 + 2))" $'foo\nbar\nfoo2\nbaz' get fo --prefix --rev=$((REV0 + 2))
err "get --rev in the future" "Error: etcdserver: mvcc: required revision is a future revision" \
    get foo --rev=1000000
ok "get foo --consistency=s (serializable)" $'foo\nbar2' get foo --consistency=s

echo "== del"
ok "del foo" "1" del foo
ok "del foo again" "0" del foo
ok "put dir/a" "OK" put dir/a 1
ok "put dir/b" "OK" put dir/b 2
ok "put dir/c" "OK" put dir/c 3
ok "put dirx (outside the prefix dir/)" "OK" put dirx 4
ok "del dir/ --prefix" "3" del dir/ --prefix
ok "get dir --prefix after del --prefix" $'dirx\n4' get dir --prefix
ok "del --prev-kv dirx" $'1\ndirx\n4' del dirx --prev-kv
ok "del foo2 fop (range [foo2, fop))" "1" del foo2 fop
ok "del fop" "1" del fop
ok "nothing left" "" get "" --prefix --keys-only

echo "== txn"
ok "put k1 v1" "OK" put k1 v1
ok "put k2 v2" "OK" put k2 v2
ok "put k3 v3" "OK" put k3 v3
REV_BEFORE_TXN="$(current_rev)"
# etcdctl's interactive format: compares, blank line, success ops, blank line, failure ops,
# blank line.
printf '%s\n' 'value("k1") = "v1"' 'mod("k2") > "0"' '' 'put k1 yes' 'get k2' 'del k3' '' 'put k1 no' '' >"$WORK/txn1"
STDIN_FILE="$WORK/txn1" ok "txn success branch" $'SUCCESS\n\nOK\n\nk2\nv2\n\n1' txn
check "txn: one revision for the whole transaction" "$((REV_BEFORE_TXN + 1))" "$(current_rev)"
ok "txn success branch applied (k1=yes, k3 deleted)" $'k1\nyes\nk2\nv2' get k --prefix
printf '%s\n' 'value("k1") = "nope"' '' 'put k1 no' '' 'put k2 failed' 'get k1' '' >"$WORK/txn2"
STDIN_FILE="$WORK/txn2" ok "txn failure branch" $'FAILURE\n\nOK\n\nk1\nyes' txn
ok "txn failure branch applied (k2=failed, k1 unchanged)" $'k1\nyes\nk2\nfailed' get k --prefix
printf '%s\n' 'version("k1") = "2"' 'create("k3") = "0"' 'val("k2") != "v2"' '' 'put k3 again' '' '' >"$WORK/txn3"
STDIN_FILE="$WORK/txn3" ok "txn version/create/!= compares" $'SUCCESS\n\nOK' txn
ok "k3 recreated" $'k3\nagain' get k3
printf '%s\n' 'value("k1") = "yes"' '' 'put k4 v4' '' '' >"$WORK/txn4"
STDIN_FILE="$WORK/txn4" ctl txn -w json
check "txn -w json: header revision is the new revision" "$((REV_BEFORE_TXN + 4))" "$(json_num revision)"
check "txn -w json: succeeded" '"succeeded":true' "$(printf '%s' "$OUT" | grep -o '"succeeded":[a-z]*')"
printf '%s\n' 'value("k1") = "v1"' '' '' '' >"$WORK/txn5"
STDIN_FILE="$WORK/txn5" ok "txn failing with no ops" "FAILURE" txn
check "txn with no writes does not raise the revision" "$((REV_BEFORE_TXN + 4))" "$(current_rev)"

echo "== compaction"
ok "put c v1" "OK" put c v1
REV_C1="$(current_rev)"
ok "put c v2" "OK" put c v2
ok "put c v3" "OK" put c v3
REV_C3="$(current_rev)"
ok "compaction $((REV_C3 - 1))" "compacted revision $((REV_C3 - 1))" compaction $((REV_C3 - 1))
err "get --rev below the compacted revision fails" \
    "Error: etcdserver: mvcc: required revision has been compacted" get c --rev="$REV_C1"
ok "get --rev at the compacted revision still works" $'c\nv2' get c --rev=$((REV_C3 - 1))
ok "get after compaction (latest)" $'c\nv3' get c
err "compaction at an already compacted revision fails" \
    "Error: etcdserver: mvcc: required revision has been compacted" compaction "$REV_C1"
err "compaction in the future fails" \
    "Error: etcdserver: mvcc: required revision is a future revision" compaction 1000000
ok "compaction --physical $REV_C3" "compacted revision $REV_C3" compaction --physical "$REV_C3"

# ---------------------------------------------------------------------------------------
# Leases: grant, attach, time-to-live, list, keep-alive, revoke, expiry; through every
# member on its own (keep-alives and time-to-live reach the leader from a follower).

echo "== lease"
# etcd lists a lease's attached keys in no fixed order (a Go map): compare them sorted,
# with the remaining TTL (9 or 10 s right after a grant or keep-alive) normalized.
normalize_ttl() {
    local keys
    keys="$(printf '%s\n' "$1" | sed -n 's/.*attached keys(\[\(.*\)\])$/\1/p' | tr ' ' '\n' | sort | paste -sd' ')"
    printf '%s\n' "$1" | sed 's/remaining(\(9\|10\)s)/remaining(9s or 10s)/; s/attached keys(\[.*\])$/attached keys(['"$keys"'])/'
}
ctl lease grant 10
LEASE_ID="$(printf '%s\n' "$OUT" | sed -n 's/^lease \([0-9a-f]\{16\}\) granted with TTL(10s)$/\1/p')"
check "lease grant 10: 'lease ID granted with TTL(10s)'" "1" "$([[ -n "$LEASE_ID" ]] && echo 1 || echo "$OUT")"
ctl lease grant 1
check "lease grant 1: raised to the minimum TTL, ceil(1.5 x election timeout)" "granted with TTL(2s)" \
    "$(printf '%s\n' "$OUT" | grep -o 'granted with TTL(.*)')"
ctl lease revoke "$(printf '%s\n' "$OUT" | awk '{print $2}')"
ok "put --lease" "OK" put --lease="$LEASE_ID" lk1 v1
ok "put --lease (a second key)" "OK" put --lease="$LEASE_ID" lk2 v2
ctl lease timetolive "$LEASE_ID"
check "lease timetolive" "lease $LEASE_ID granted with TTL(10s), remaining(9s or 10s)" \
    "$(printf '%s\n' "$OUT" | sed 's/remaining(\(9\|10\)s)/remaining(9s or 10s)/')"
ctl lease timetolive "$LEASE_ID" --keys
check "lease timetolive --keys" "lease $LEASE_ID granted with TTL(10s), remaining(9s or 10s), attached keys([lk1 lk2])" \
    "$(normalize_ttl "$OUT")"
ok "lease timetolive of an unknown lease" "lease 0000000000001234 already expired" lease timetolive 1234
ctl lease timetolive 1234 -w json
check "lease timetolive -w json of an unknown lease: ttl -1, granted-ttl 0" '"ttl":-1,"granted-ttl":0' \
    "$(printf '%s' "$OUT" | grep -o '"ttl":-1,"granted-ttl":0')"
ctl lease list
check "lease list: 'found N leases', the lease among them" "found 1 leases yes" \
    "$(printf '%s\n' "$OUT" | head -n 1) $(printf '%s\n' "$OUT" | grep -qx "$LEASE_ID" && echo yes)"
ok "lease keep-alive --once" "lease $LEASE_ID keepalived with TTL(10)" lease keep-alive --once "$LEASE_ID"
for i in 0 1 2; do
    ctl_at "${EPS[$i]}" lease keep-alive --once "$LEASE_ID"
    check "  lease keep-alive --once via ${NAMES[$i]} alone" "lease $LEASE_ID keepalived with TTL(10)" "$OUT"
    ctl_at "${EPS[$i]}" lease timetolive "$LEASE_ID" --keys
    check "  lease timetolive --keys via ${NAMES[$i]} alone" \
        "lease $LEASE_ID granted with TTL(10s), remaining(9s or 10s), attached keys([lk1 lk2])" \
        "$(normalize_ttl "$OUT")"
done
REV_BEFORE_REVOKE="$(current_rev)"
ok "lease revoke" "lease $LEASE_ID revoked" lease revoke "$LEASE_ID"
check "lease revoke: one revision for all its keys" "$((REV_BEFORE_REVOKE + 1))" "$(current_rev)"
ok "the lease's keys are gone" "" get lk --prefix
err "lease revoke again" "Error: failed to revoke lease (etcdserver: requested lease not found)" lease revoke "$LEASE_ID"
err "lease grant above the largest TTL" "Error: failed to grant lease (etcdserver: too large lease TTL)" lease grant 9000000001
err "put --lease of an unknown lease" "Error: etcdserver: requested lease not found" put --lease=1234 x y
err "lease keep-alive --once of an unknown lease (the server answers TTL 0)" \
    "Error: etcdserver: requested lease not found" lease keep-alive --once 1234

echo "== lease expiry and keep-alive"
ctl lease grant 2
SHORT_ID="$(printf '%s\n' "$OUT" | sed -n 's/^lease \([0-9a-f]\{16\}\) granted with TTL(2s)$/\1/p')"
ok "put --lease (TTL 2 s)" "OK" put --lease="$SHORT_ID" short v
# Kept alive through one member alone for twice the TTL: the key stays.
"$ETCDCTL_BIN" --endpoints="${EPS[1]}" lease keep-alive "$SHORT_ID" >"$WORK/keepalive.out" 2>&1 &
KEEPALIVE_PID=$!
sleep 4
ok "a kept-alive key outlives its TTL" $'short\nv' get short
kill "$KEEPALIVE_PID" 2>/dev/null || true
wait "$KEEPALIVE_PID" 2>/dev/null || true
check "lease keep-alive prints each renewal" "lease $SHORT_ID keepalived with TTL(2)" \
    "$(grep -m1 keepalived "$WORK/keepalive.out" || cat "$WORK/keepalive.out")"
# Once keep-alives stop, the key goes within TTL + an election timeout (and some slack).
deadline=$((SECONDS + 5))
while ctl get short --print-value-only && [[ -n "$OUT" && $SECONDS -lt $deadline ]]; do sleep 0.1; done
check "the key of an expired lease is deleted within 5 s" "" "$OUT"
ok "lease timetolive of an expired lease" "lease $SHORT_ID already expired" lease timetolive "$SHORT_ID"

# ---------------------------------------------------------------------------------------
# etcdctl lock and elect: the client-side recipe over KV, Lease and Watch.

echo "== lock and elect"
ok "lock runs the command while holding the lock" "holding" lock demo-lock echo holding
"$ETCDCTL_BIN" --endpoints="$ENDPOINTS" lock demo-lock2 sleep 2 >/dev/null 2>&1 &
HOLDER_PID=$!
sleep 0.7
LOCK_T0=$SECONDS
ok "a second locker waits for the holder, then runs" "second" lock demo-lock2 echo second
wait "$HOLDER_PID" 2>/dev/null || true
check "the second locker waited for the holder (at least 1 s)" "1" "$(( SECONDS - LOCK_T0 >= 1 ? 1 : 0 ))"
"$ETCDCTL_BIN" --endpoints="$ENDPOINTS" elect demo-election first >"$WORK/elect1.out" 2>&1 &
ELECT_PID=$!
sleep 1
"$ETCDCTL_BIN" --endpoints="$ENDPOINTS" elect -l demo-election >"$WORK/observe.out" 2>&1 &
OBSERVE_PID=$!
sleep 1
kill "$OBSERVE_PID" "$ELECT_PID" 2>/dev/null || true
wait "$OBSERVE_PID" "$ELECT_PID" 2>/dev/null || true
check "elect -l shows the leader's proposal under its key" "first" "$(sed -n 2p "$WORK/observe.out")"
check "elect: the key is NAME/LEASE" "1" "$(sed -n 1p "$WORK/observe.out" | grep -cE '^demo-election/[0-9a-f]{1,16}$' || true)"
ctl lock demo-lock3 -- sh -c 'echo "$ETCD_LOCK_KEY"'
check "lock gives the command its key (ETCD_LOCK_KEY = NAME/LEASE)" "1" "$(echo "$OUT" | grep -cE '^demo-lock3/[0-9a-f]{1,16}$' || true)"
# A holder killed with SIGKILL: the lock passes on once its lease (TTL 2 s) ends.
"$ETCDCTL_BIN" --endpoints="$ENDPOINTS" lock --ttl 2 demo-lock4 >"$WORK/holder.out" 2>&1 &
HOLDER_PID=$!
for _ in $(seq 100); do grep -q '^demo-lock4/' "$WORK/holder.out" && break; sleep 0.1; done
kill -9 "$HOLDER_PID"
wait "$HOLDER_PID" 2>/dev/null || true
KILL_T0=$(date +%s%N)
ok "after SIGKILL of the holder, the next locker runs" "next" lock demo-lock4 echo next
WAITED_MS=$(( ($(date +%s%N) - KILL_T0) / 1000000 ))
check "it waited for the killed holder's lease: between 1 and 4 s" "1" "$(( WAITED_MS >= 1000 && WAITED_MS <= 4000 ? 1 : 0 ))"
# Two candidates and an observer: SIGINT makes the leader resign, the other leads at once.
"$ETCDCTL_BIN" --endpoints="$ENDPOINTS" elect demo-election2 one >"$WORK/one.out" 2>&1 &
ONE_PID=$!
for _ in $(seq 100); do grep -q '^one$' "$WORK/one.out" && break; sleep 0.1; done
"$ETCDCTL_BIN" --endpoints="$ENDPOINTS" elect demo-election2 two >"$WORK/two.out" 2>&1 &
TWO_PID=$!
"$ETCDCTL_BIN" --endpoints="$ENDPOINTS" elect -l demo-election2 >"$WORK/observe2.out" 2>&1 &
OBSERVE_PID=$!
sleep 1
check "the second candidate waits while the first leads" "" "$(cat "$WORK/two.out")"
kill -INT "$ONE_PID"
for _ in $(seq 50); do grep -q '^two$' "$WORK/two.out" && break; sleep 0.1; done
check "SIGINT: the first resigns, the second leads within 5 s" "two" "$(sed -n 2p "$WORK/two.out")"
sleep 0.5
kill "$TWO_PID" "$OBSERVE_PID" 2>/dev/null || true
wait "$ONE_PID" "$TWO_PID" "$OBSERVE_PID" 2>/dev/null || true
check "elect -l saw both leaders, in order" "one two" "$(sed -n '2p;4p' "$WORK/observe2.out" | tr '\n' ' ' | sed 's/ $//')"

# ---------------------------------------------------------------------------------------
# Writes through each member on its own (followers forward to the leader), read back
# through every other member (linearizable reads).

echo "== write through each endpoint"
for i in 0 1 2; do
    ep="${EPS[$i]}"
    ctl_at "$ep" put "via/${NAMES[$i]}" "written-through-$ep"
    if [[ $RC -eq 0 ]]; then check "put via ${NAMES[$i]} alone ($ep)" "OK" "$OUT"; else
        fail "put via ${NAMES[$i]} alone ($ep)"
        echo "  exit $RC, stderr: $(printf '%q' "$ERR")"
    fi
    for j in 0 1 2; do
        [[ $i -eq $j ]] && continue
        ctl_at "${EPS[$j]}" get "via/${NAMES[$i]}" --print-value-only
        check "  read back via ${NAMES[$j]}" "written-through-$ep" "$OUT"
    done
done
expected_via=""
for i in 0 1 2; do expected_via+="via/${NAMES[$i]}"$'\n'"written-through-${EPS[$i]}"$'\n'; done
ok "get via/ --prefix (all three)" "${expected_via%$'\n'}" get via/ --prefix

# ---------------------------------------------------------------------------------------
# HashKV: every member hashes the same history. Ask at one fixed revision; a member that
# has not applied it yet answers "future revision", so retry for up to 5 s.

echo "== endpoint hashkv"
REV_H="$(current_rev)"
deadline=$((SECONDS + 5))
while :; do
    ctl endpoint hashkv --rev="$REV_H"
    hashes="$(printf '%s\n' "$OUT" | grep -E '^127\.0\.0\.1:[0-9]+, [0-9]+$' | cut -d' ' -f2 | sort -u || true)"
    lines="$(printf '%s\n' "$OUT" | grep -cE '^127\.0\.0\.1:[0-9]+, [0-9]+$' || true)"
    if [[ $RC -eq 0 && $lines -eq 3 && "$(printf '%s\n' "$hashes" | grep -c .)" -eq 1 ]] || [[ $SECONDS -ge $deadline ]]; then
        break
    fi
    sleep 0.2
done
check "endpoint hashkv --rev=$REV_H: 3 answers" "3" "$lines"
check "endpoint hashkv --rev=$REV_H: all hashes equal" "1" "$(printf '%s\n' "$hashes" | grep -c .)"
# and without --rev (each member's current revision; equal once all have applied)
deadline=$((SECONDS + 5))
while :; do
    ctl endpoint hashkv
    hashes0="$(printf '%s\n' "$OUT" | grep -E '^127\.0\.0\.1:[0-9]+, [0-9]+$' | cut -d' ' -f2 | sort -u || true)"
    [[ "$(printf '%s\n' "$hashes0" | grep -c .)" -eq 1 || $SECONDS -ge $deadline ]] && break
    sleep 0.2
done
check "endpoint hashkv (current revision): all hashes equal, same as at --rev=$REV_H" "$hashes" "$hashes0"

echo "== endpoint status after the workload"
deadline=$((SECONDS + 5))
while :; do
    ctl endpoint status -w json
    revs="$(printf '%s' "$OUT" | grep -o '"revision":[0-9]*' | cut -d: -f2 | sort -u | paste -sd' ' || true)"
    [[ "$revs" == "$REV_H" || $SECONDS -ge $deadline ]] && break
    sleep 0.2
done
check "endpoint status: every member at revision $REV_H" "$REV_H" "$revs"

# ---------------------------------------------------------------------------------------
# Membership: add a learner, start it with --initial-cluster-state existing, promote it,
# move leadership, update a member's peer URLs, remove it (it stops by itself).

echo "== member add / promote / move-leader / update / remove"
# etcd refuses membership changes ("unhealthy cluster") until its leader has been
# connected to every voter for 5 s; concord asks that each voter was heard from within an
# election timeout. Wait long enough for both.
while ((SECONDS < LEADER_AT + 7)); do sleep 0.2; done
P4=$(free_port)
C4=$(free_port)
URL4="http://127.0.0.1:$P4"
EP4="127.0.0.1:$C4"
ctl member add n4 --peer-urls="$URL4" --learner
check "member add --learner: exit status" "0" "$RC"
[[ $RC -eq 0 ]] || echo "  stderr: $(printf '%q' "$ERR")"
first_line="$(printf '%s\n' "$OUT" | head -n 1)"
if [[ "$first_line" =~ ^Member\ +([0-9a-f]+)\ added\ to\ cluster\ +([0-9a-f]+)$ ]]; then
    ID4="${BASH_REMATCH[1]}"
    CLUSTER_ID="${BASH_REMATCH[2]}"
    pass "member add --learner: 'Member ID added to cluster ID'"
else
    ID4=""
    CLUSTER_ID=""
    fail "member add --learner: 'Member ID added to cluster ID'"
    echo "  actual: $(printf '%q' "$first_line")"
fi
check "member add --learner: the environment for the new member" \
    "$(printf '%s\n' '' 'ETCD_NAME="n4"' "ETCD_INITIAL_ADVERTISE_PEER_URLS=\"$URL4\"" 'ETCD_INITIAL_CLUSTER_STATE="existing"')" \
    "$(printf '%s\n' "$OUT" | sed -n '2,$p' | grep -v '^ETCD_INITIAL_CLUSTER=')"
ADDED_CLUSTER="$(printf '%s\n' "$OUT" | sed -n 's/^ETCD_INITIAL_CLUSTER="\(.*\)"$/\1/p')"
check "member add --learner: ETCD_INITIAL_CLUSTER lists the 3 members and n4" \
    "$(printf '%s\n' "${INITIAL_CLUSTER//,/$'\n'}" "n4=$URL4" | sort)" \
    "$(printf '%s\n' "${ADDED_CLUSTER//,/$'\n'}" | sort)"
ctl member list
check "member list: n4 is an unstarted learner" "$ID4, unstarted, , $URL4, , true" \
    "$(printf '%s\n' "$OUT" | grep "^$ID4, " || true)"
err "member promote of a learner that has not started" \
    "Error: etcdserver: can only promote a learner member which is in sync with leader" member promote "$ID4"
err "member add of a second learner" "Error: etcdserver: too many learner members in cluster" \
    member add n5 --peer-urls="http://127.0.0.1:$(free_port)" --learner
err "member add with a peer URL in use" "Error: etcdserver: Peer URLs already exists" \
    member add n5 --peer-urls="http://127.0.0.1:${PPORT[n1]}"

"${SERVE[@]}" \
    --name n4 \
    --data-dir "$WORK/n4.data" \
    --listen-client-urls "http://$EP4" \
    --advertise-client-urls "http://$EP4" \
    --listen-peer-urls "$URL4" \
    --initial-advertise-peer-urls "$URL4" \
    --initial-cluster "$ADDED_CLUSTER" \
    --initial-cluster-state existing \
    >"$WORK/n4.log" 2>&1 &
PID4=$!
PIDS+=("$PID4")
deadline=$((SECONDS + 20))
while :; do
    ctl member promote "$ID4"
    [[ $RC -eq 0 || $SECONDS -ge $deadline ]] && break
    sleep 0.2
done
check "member promote once n4 caught up" "Member $(printf '%16s' "$ID4") promoted in cluster $(printf '%16s' "$CLUSTER_ID")" "$OUT"
deadline=$((SECONDS + 20))
while :; do
    ctl member list
    row4="$(printf '%s\n' "$OUT" | grep "^$ID4, " || true)"
    [[ "$row4" == "$ID4, started, n4, $URL4, http://$EP4, false" || $SECONDS -ge $deadline ]] && break
    sleep 0.2
done
check "member list: n4 started, a voter" "$ID4, started, n4, $URL4, http://$EP4, false" "$row4"
check "member list: 4 started voters" "4" "$(printf '%s\n' "$OUT" | grep -c ', started, .*, false$' || true)"
ctl_at "$EP4" get via/n1
check "n4 serves what was written before it joined" $'via/n1\nwritten-through-'"${EPS[0]}" "$OUT"
ctl_at "$EP4" get via/n1 --consistency=s
check "n4 has it locally (serializable read on n4)" $'via/n1\nwritten-through-'"${EPS[0]}" "$OUT"
err "member promote of a voter" "Error: etcdserver: can only promote a learner member" member promote "$ID4"
err "member remove of an unknown member" "Error: etcdserver: member not found" member remove 1234abcd

ALL_ENDPOINTS="$ENDPOINTS,$EP4"
ctl_at "$ALL_ENDPOINTS" endpoint status -w json
LEADER_ID="$(printf '%x' "$(json_num leader)")"
ctl_at "$ALL_ENDPOINTS" move-leader "$ID4"
check "move-leader to n4" "Leadership transferred from $LEADER_ID to $ID4" "$OUT"
ctl_at "$ALL_ENDPOINTS" endpoint status -w json
check "n4 leads after move-leader" "$ID4" "$(printf '%x' "$(json_num leader)")"
ctl_at "$ALL_ENDPOINTS" move-leader "$LEADER_ID"
check "move-leader back" "Leadership transferred from $ID4 to $LEADER_ID" "$OUT"
ctl_at "$ALL_ENDPOINTS" move-leader 1234abcd
check "move-leader to an unknown member" "Error: etcdserver: bad leader transferee" \
    "$(printf '%s\n' "$ERR" | grep '^Error:' | tail -n 1)"

URL4B="http://127.0.0.1:$(free_port)"
ok "member update n4 --peer-urls" "Member $(printf '%16s' "$ID4") updated in cluster $(printf '%16s' "$CLUSTER_ID")" \
    member update "$ID4" --peer-urls="$URL4B"
ctl member list
check "member list: n4's new peer URL" "$ID4, started, n4, $URL4B, http://$EP4, false" \
    "$(printf '%s\n' "$OUT" | grep "^$ID4, " || true)"
err "member update of an unknown member" "Error: etcdserver: member not found" \
    member update 1234abcd --peer-urls="http://127.0.0.1:$(free_port)"

ok "member remove n4" "Member $(printf '%16s' "$ID4") removed from cluster $(printf '%16s' "$CLUSTER_ID")" \
    member remove "$ID4"
deadline=$((SECONDS + 20))
while kill -0 "$PID4" 2>/dev/null && [[ $SECONDS -lt $deadline ]]; do sleep 0.2; done
if kill -0 "$PID4" 2>/dev/null; then
    fail "removed member n4 stops by itself"
else
    pass "removed member n4 stops by itself"
fi
check "n4's log says why" "1" \
    "$(grep -c 'the member has been permanently removed from the cluster' "$WORK/n4.log" | head -n 1 | sed 's/^[1-9][0-9]*$/1/')"
ctl member list
check "member list: the 3 members again" "$(printf '%s' "$expected_members" | sort)" \
    "$(printf '%s\n' "$OUT" | cut -d, -f3- | sed 's/^ //' | sort)"
ok "the 3 members still commit writes" "OK" put after-membership-changes done

# ---------------------------------------------------------------------------------------
# Watch: history with --rev and --prev-kv, a live event, interactive `watch -i` with
# `progress`, a start below the compacted revision, and (at the very end) a member that
# loses its leader. A watch never ends by itself, so
# each runs under `timeout` (exit status 124 = still watching when stopped).

# watch_ctl SECONDS etcdctl-args...: like ctl, for at most SECONDS; stdin from $STDIN_CMD
# (a shell command whose output is fed to etcdctl) when set.
watch_ctl() {
    local secs="$1"
    shift
    local rc=0
    if [[ -n "${STDIN_CMD:-}" ]]; then
        bash -c "$STDIN_CMD" | timeout "$secs" "$ETCDCTL_BIN" --endpoints="$ENDPOINTS" "$@" \
            >"$WORK/out" 2>"$WORK/err" || rc=$?
    else
        timeout "$secs" "$ETCDCTL_BIN" --endpoints="$ENDPOINTS" "$@" >"$WORK/out" 2>"$WORK/err" </dev/null || rc=$?
    fi
    OUT="$(cat "$WORK/out")"
    ERR="$(cat "$WORK/err")"
    RC=$rc
}

REV_W=$(current_rev)
ctl put w/a 1
ctl put w/b 2
ctl put w/a 3
ctl del w/b
ctl put w-outside 9
watch_ctl 3 watch --prefix w/ --rev=$((REV_W + 1)) --prev-kv
check "watch --prefix --rev --prev-kv: the history, previous values included" \
    $'PUT\nw/a\n1\nPUT\nw/b\n2\nPUT\nw/a\n1\nw/a\n3\nDELETE\nw/b\n2\nw/b' "$OUT"
check "watch --prefix --rev --prev-kv: still watching when stopped" "124" "$RC"

( sleep 1; "$ETCDCTL_BIN" --endpoints="$ENDPOINTS" put w/live 5 >/dev/null ) &
LIVE_PUT=$!
watch_ctl 4 watch w/live
wait "$LIVE_PUT" || true
check "watch of a key: the live put" $'PUT\nw/live\n5' "$OUT"

REV_P=$(current_rev)
STDIN_CMD="printf 'watch --prefix w/ --rev=$((REV_W + 3))\n'; sleep 1; printf 'progress\n'; sleep 1" \
    watch_ctl 4 watch -i
check "watch -i: a watch command, then progress at the current revision" \
    $'PUT\nw/a\n3\nDELETE\nw/b\n\nPUT\nw/live\n5\nprogress notify: '"$REV_P" "$OUT"

ctl compact "$REV_P"
watch_ctl 4 watch --prefix w/ --rev=$((REV_W + 1))
check "watch below the compacted revision: canceled by the server" \
    $'watch was canceled (etcdserver: mvcc: required revision has been compacted)\nError: watch is canceled by the server' \
    "$ERR"
check "watch below the compacted revision: exit status" "5" "$RC"
watch_ctl 3 watch --prefix w/ --rev="$REV_P" --prev-kv
check "watch at the compacted revision: its event is still there" $'PUT\nw/live\n5' "$OUT"

# Last, because it stops two members: etcdctl's watch streams carry `hasleader: true`, so
# a member that lost its leader ends an open watch (after a few election timeouts) and
# refuses a new one.
LONE_EP="${EPS[0]}"
(
    rc=0
    timeout 30 "$ETCDCTL_BIN" --endpoints="$LONE_EP" watch no-leader-key >"$WORK/lone.out" 2>"$WORK/lone.err" || rc=$?
    echo "$rc" >"$WORK/lone.rc"
) &
LONE_WATCH=$!
sleep 1
kill -TERM "${PIDS[1]}" "${PIDS[2]}"
wait "$LONE_WATCH" || true
check "watch on a member that lost its leader: ended by the server" \
    $'watch was canceled (etcdserver: no leader)\nError: watch is canceled by the server' "$(cat "$WORK/lone.err")"
check "watch on a member that lost its leader: exit status" "5" "$(cat "$WORK/lone.rc")"
rc=0
timeout 30 "$ETCDCTL_BIN" --endpoints="$LONE_EP" watch no-leader-key >"$WORK/out" 2>"$WORK/err" || rc=$?
check "a new watch on a member without a leader: refused" \
    $'watch was canceled (etcdserver: no leader)\nError: watch is canceled by the server' "$(cat "$WORK/err")"
check "a new watch on a member without a leader: exit status" "5" "$rc"

# ---------------------------------------------------------------------------------------

echo
echo "elapsed: $((SECONDS - T0)) s"
echo "$PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
