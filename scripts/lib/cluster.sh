# Sourced by the scripts that compare concord with etcd (perf-compare.sh, bench-compare.sh;
# etcdctl-test.sh takes only free_port):
# start and stop a 3-member cluster of either server on free loopback ports, with etcd's
# default timing given explicitly (--heartbeat-interval 100 --election-timeout 1000), so
# both systems run with the same flags.
#
# The caller sets CONCORD_BIN, ETCD_BIN, ETCDCTL_BIN and `PIDS=()`, and calls
# stop_cluster from its EXIT trap. start_cluster sets ENDPOINTS (all three, comma
# separated) and LEADER (the leader's host:port).

# A free TCP port on 127.0.0.1, below the usual ephemeral range (32768-60999) so that no
# outgoing connection takes it meanwhile; never one handed out before in this run.
TAKEN=" "
free_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 12000))
        [[ "$TAKEN" == *" $p "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            if ! command -v ss >/dev/null 2>&1 || ! ss -Htan "( sport = :$p )" 2>/dev/null | grep -q .; then
                TAKEN+="$p "
                echo "$p"
                return 0
            fi
        fi
    done
    echo "error: no free port found" >&2
    return 1
}

# SIGTERM every member started, then SIGKILL what has not exited within 10 s.
stop_cluster() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}

# The CPU time (user + system, in clock ticks) the members started so far have used.
members_cpu_ticks() {
    local pid total=0 ticks
    for pid in "${PIDS[@]}"; do
        ticks="$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null)" || ticks=0
        total=$((total + ${ticks:-0}))
    done
    echo "$total"
}

# The position (0, 1 or 2) of LEADER among ENDPOINTS: also the leader's position in PIDS
# and its name n1..n3 less one (start_cluster keeps all three in member order).
leader_index() {
    local eps i
    IFS=, read -r -a eps <<<"$ENDPOINTS"
    for i in "${!eps[@]}"; do
        [[ "${eps[$i]}" == "$LEADER" ]] && { echo "$i"; return 0; }
    done
    return 1
}

# start_cluster SYSTEM DIR: starts 3 members of SYSTEM (concord or etcd) with data and logs
# under DIR, and waits (30 s at most) until all three answer and agree on one leader.
ENDPOINTS=""
LEADER=""
start_cluster() {
    local system="$1" dir="$2" n ic="" eps=()
    local -a serve
    local -A cport pport
    case "$system" in
        concord) serve=("$CONCORD_BIN" serve) ;;
        etcd) serve=("$ETCD_BIN") ;;
    esac
    mkdir -p "$dir/data"
    for n in n1 n2 n3; do
        cport[$n]=$(free_port) && pport[$n]=$(free_port) || return 1
        ic+="${ic:+,}$n=http://127.0.0.1:${pport[$n]}"
        eps+=("127.0.0.1:${cport[$n]}")
    done
    ENDPOINTS="$(IFS=,; echo "${eps[*]}")"
    for n in n1 n2 n3; do
        "${serve[@]}" --name "$n" --data-dir "$dir/data/$n" \
            --listen-client-urls "http://127.0.0.1:${cport[$n]}" \
            --advertise-client-urls "http://127.0.0.1:${cport[$n]}" \
            --listen-peer-urls "http://127.0.0.1:${pport[$n]}" \
            --initial-advertise-peer-urls "http://127.0.0.1:${pport[$n]}" \
            --initial-cluster "$ic" --initial-cluster-token "compare-$system-$$" \
            --initial-cluster-state new \
            --heartbeat-interval 100 --election-timeout 1000 \
            >"$dir/$n.log" 2>&1 &
        PIDS+=($!)
    done
    local deadline=$((SECONDS + 30)) ep out id leader answered leaders
    while [[ $SECONDS -lt $deadline ]]; do
        answered=0 leaders=" " LEADER=""
        for ep in "${eps[@]}"; do
            out="$("$ETCDCTL_BIN" --endpoints="$ep" --command-timeout=2s endpoint status -w json 2>/dev/null)"
            id="$(printf '%s' "$out" | grep -o '"member_id":[0-9]*' | cut -d: -f2)"
            leader="$(printf '%s' "$out" | grep -o '"leader":[0-9]*' | cut -d: -f2)"
            [[ -n "$id" && -n "$leader" && "$leader" != 0 ]] || continue
            answered=$((answered + 1))
            [[ "$leaders" == *" $leader "* ]] || leaders+="$leader "
            [[ "$id" == "$leader" ]] && LEADER="$ep"
        done
        if [[ $answered -eq 3 && $(wc -w <<<"$leaders") -eq 1 && -n "$LEADER" ]]; then
            return 0
        fi
        sleep 0.2
    done
    echo "error: $system cluster has no leader after 30 s (logs in $dir)" >&2
    return 1
}
