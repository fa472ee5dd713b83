# Sourced by the scripts that run a workload on concord and on etcd one after the other
# (bench-compare.sh, storage-compare.sh, restart-compare.sh): the common set-up around
# scripts/lib/cluster.sh, which it sources.
#
# The caller sets ROOT and passes its own arguments to compare_setup:
#   compare_setup NAME "$@"
# which
# - takes CONCORD_BIN and ETCD_BIN from the arguments (defaults: target/release/concord,
#   built first unless NO_BUILD=1 or a binary is given, and /usr/bin/etcd);
# - checks both, etcdctl (ETCDCTL) and timeout exist, and exits 2 with what is missing;
# - sets RESULTS (default: a new temp dir NAME.XXXXXX, removed at exit unless KEEP=1;
#   a given RESULTS is kept, without the members' data dirs), PIDS and SYSTEMS;
# - installs the EXIT trap that stops every member started.

compare_setup() {
    local name="$1"
    shift
    CONCORD_BIN="${1:-$ROOT/target/release/concord}"
    ETCD_BIN="${2:-/usr/bin/etcd}"
    SYSTEMS="${SYSTEMS:-concord etcd}"
    ETCDCTL_BIN="${ETCDCTL:-etcdctl}"
    export ETCDCTL_API=3
    if [[ "${NO_BUILD:-0}" != 1 && -z "${1:-}" ]]; then
        echo "building: cargo build --release -p concord" >&2
        (cd "$ROOT" && cargo build --release -p concord) || { echo "error: build failed" >&2; exit 2; }
    fi
    local b
    for b in "$CONCORD_BIN" "$ETCD_BIN"; do
        [[ -x "$b" ]] || { echo "error: '$b' not found or not executable" >&2; exit 2; }
    done
    command -v "$ETCDCTL_BIN" >/dev/null || { echo "error: etcdctl not found (apt-get install etcd-client)" >&2; exit 2; }
    command -v timeout >/dev/null || { echo "error: timeout (coreutils) not found" >&2; exit 2; }
    OWN_RESULTS=0
    if [[ -z "${RESULTS:-}" ]]; then
        RESULTS="$(mktemp -d "${TMPDIR:-/tmp}/$name.XXXXXX")"
        OWN_RESULTS=1
    fi
    mkdir -p "$RESULTS"
    PIDS=()
    trap compare_cleanup EXIT
    trap 'exit 130' INT TERM
}

compare_cleanup() {
    stop_cluster
    if [[ $OWN_RESULTS == 1 && "${KEEP:-0}" != 1 ]]; then
        rm -rf "$RESULTS"
    else
        rm -rf "$RESULTS"/*/data
        echo "reports and logs kept in $RESULTS" >&2
    fi
}

# shellcheck source=cluster.sh
source "$ROOT/scripts/lib/cluster.sh"
