//! The etcd KV API of real `concord` processes, through the `etcd-client` crate: every
//! scenario runs against a 1-member cluster and against the leader of a 3-member cluster.
//!
//! Covers put/get (revisions, versions, prev_kv, ignore_value, ignore_lease), get options
//! (prefix, range, from-key, limit with more/count, historical revision, sort order and
//! target, keys_only, count_only, min/max mod and create revision), delete (single and
//! range, prev_kv), txn (compares on version, create_revision, mod_revision and value, on
//! missing keys and on ranges; success and failure branches; nested txns; an op that fails
//! at apply time leaves no trace of the ops before it), compaction, and
//! every error a client can provoke with its exact etcd gRPC code and message. The limits
//! (`--max-request-bytes`, `--max-txn-ops`) are checked on a member started with small ones.

mod common;

use common::*;
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse,
};

/// Runs each scenario as two tests: `one_member::NAME` and `three_members::NAME`.
macro_rules! on_both_cluster_sizes {
    ($($scenario:ident),* $(,)?) => {
        mod one_member {
            use super::common::Cluster;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let cluster = Cluster::start(1).await;
                    let mut client = cluster.client(0).await;
                    super::$scenario(&mut client).await;
                }
            )*
        }
        mod three_members {
            use super::common::Cluster;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let mut cluster = Cluster::start(3).await;
                    let leader = cluster.wait_for_leader().await;
                    let mut client = cluster.client(leader).await;
                    super::$scenario(&mut client).await;
                }
            )*
        }
    };
}

on_both_cluster_sizes!(
    put_and_get,
    put_with_prev_kv,
    put_ignore_value_and_ignore_lease,
    get_prefix_range_and_limit,
    get_at_historical_revisions,
    get_sorted,
    get_keys_only_count_only_and_revision_filters,
    delete_single_and_range,
    txn_compares_and_branches,
    txn_nested_and_on_missing_keys,
    txn_is_all_or_nothing,
    compaction,
    invalid_requests,
);

fn kv_tuple(kv: &KeyValue) -> (String, String, i64, i64, i64, i64) {
    (
        String::from_utf8_lossy(kv.key()).into_owned(),
        String::from_utf8_lossy(kv.value()).into_owned(),
        kv.create_revision(),
        kv.mod_revision(),
        kv.version(),
        kv.lease(),
    )
}

fn tuple(key: &str, value: &str, create: i64, modified: i64, version: i64) -> (String, String, i64, i64, i64, i64) {
    (key.to_string(), value.to_string(), create, modified, version, 0)
}

async fn put(client: &mut Client, key: &str, value: &str) -> i64 {
    let response = client.put(key, value, None).await.unwrap_or_else(|e| panic!("put {key}: {e}"));
    revision(response.header())
}

async fn put_and_get(client: &mut Client) {
    let rev1 = put(client, "k", "v1").await;
    assert!(rev1 >= 2, "the first write makes revision 2 or later, got {rev1}");
    let got = client.get("k", None).await.unwrap();
    assert_eq!(got.count(), 1);
    assert!(!got.more());
    assert_eq!(kv_tuple(&got.kvs()[0]), tuple("k", "v1", rev1, rev1, 1));
    let header = got.header().expect("a header");
    assert_eq!(header.revision(), rev1);
    assert_ne!(header.cluster_id(), 0);
    assert_ne!(header.member_id(), 0);
    assert!(header.raft_term() >= 1);

    let rev2 = put(client, "k", "v2").await;
    assert_eq!(rev2, rev1 + 1, "each put raises the revision by one");
    let got = client.get("k", None).await.unwrap();
    assert_eq!(kv_tuple(&got.kvs()[0]), tuple("k", "v2", rev1, rev2, 2));

    let missing = client.get("no-such-key", None).await.unwrap();
    assert!(missing.kvs().is_empty());
    assert_eq!(missing.count(), 0);
    assert_eq!(revision(missing.header()), rev2, "a read reports the current revision");

    // Keys and values are bytes, not strings.
    let key = vec![0u8, 0xff, b'k'];
    let value = vec![0xffu8, 0, 1, 2];
    client.put(key.clone(), value.clone(), None).await.unwrap();
    let got = client.get(key.clone(), None).await.unwrap();
    assert_eq!(got.kvs()[0].key(), &key[..]);
    assert_eq!(got.kvs()[0].value(), &value[..]);
    // An empty value is a value.
    put(client, "empty", "").await;
    let got = client.get("empty", None).await.unwrap();
    assert_eq!(got.count(), 1);
    assert_eq!(got.kvs()[0].value(), b"");
}

async fn put_with_prev_kv(client: &mut Client) {
    let prev = Some(PutOptions::new().with_prev_key());
    let first = client.put("p", "a", prev.clone()).await.unwrap();
    assert!(first.prev_key().is_none(), "no previous value for a new key");
    let rev_a = revision(first.header());
    let second = client.put("p", "b", prev.clone()).await.unwrap();
    let previous = second.prev_key().expect("the previous key-value");
    assert_eq!(kv_tuple(previous), tuple("p", "a", rev_a, rev_a, 1));
    // Without the option, nothing comes back.
    let third = client.put("p", "c", None).await.unwrap();
    assert!(third.prev_key().is_none());
    // A deleted key has no previous value.
    client.delete("p", None).await.unwrap();
    let after_delete = client.put("p", "d", prev).await.unwrap();
    assert!(after_delete.prev_key().is_none());
}

async fn put_ignore_value_and_ignore_lease(client: &mut Client) {
    assert_status(
        client.put("iv", "x", Some(PutOptions::new().with_ignore_value())).await,
        Code::InvalidArgument,
        "etcdserver: value is provided",
    );
    assert_status(
        client.put("iv", "", Some(PutOptions::new().with_ignore_value())).await,
        Code::InvalidArgument,
        "etcdserver: key not found",
    );
    let created = put(client, "iv", "original").await;
    let kept = client.put("iv", "", Some(PutOptions::new().with_ignore_value().with_prev_key())).await.unwrap();
    assert_eq!(kept.prev_key().map(|kv| kv.value()), Some(&b"original"[..]));
    let got = client.get("iv", None).await.unwrap();
    assert_eq!(kv_tuple(&got.kvs()[0]), tuple("iv", "original", created, created + 1, 2));

    assert_status(
        client.put("il", "x", Some(PutOptions::new().with_lease(7).with_ignore_lease())).await,
        Code::InvalidArgument,
        "etcdserver: lease is provided",
    );
    assert_status(
        client.put("il", "x", Some(PutOptions::new().with_ignore_lease())).await,
        Code::InvalidArgument,
        "etcdserver: key not found",
    );
    let created = put(client, "il", "a").await;
    client.put("il", "b", Some(PutOptions::new().with_ignore_lease())).await.unwrap();
    let got = client.get("il", None).await.unwrap();
    assert_eq!(kv_tuple(&got.kvs()[0]), tuple("il", "b", created, created + 1, 2));

    assert_status(
        client.put("lk", "v", Some(PutOptions::new().with_lease(0x1234))).await,
        Code::NotFound,
        "etcdserver: requested lease not found",
    );
}

async fn get_prefix_range_and_limit(client: &mut Client) {
    for key in ["r/c", "r/a", "r/e", "r/b", "r/d"] {
        put(client, key, &format!("value of {key}")).await;
    }
    put(client, "r0", "outside the prefix").await;
    put(client, "q", "before the prefix").await;

    let all = client.get("r/", Some(GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(keys(&all), ["r/a", "r/b", "r/c", "r/d", "r/e"]);
    assert_eq!(values(&all)[0], "value of r/a");
    assert_eq!((all.count(), all.more()), (5, false));

    let limited = client.get("r/", Some(GetOptions::new().with_prefix().with_limit(2))).await.unwrap();
    assert_eq!(keys(&limited), ["r/a", "r/b"]);
    assert_eq!((limited.count(), limited.more()), (5, true), "count is the whole range; more says it was cut");
    let exact = client.get("r/", Some(GetOptions::new().with_prefix().with_limit(5))).await.unwrap();
    assert_eq!((exact.kvs().len(), exact.count(), exact.more()), (5, 5, false));
    let beyond = client.get("r/", Some(GetOptions::new().with_prefix().with_limit(50))).await.unwrap();
    assert_eq!((beyond.kvs().len(), beyond.more()), (5, false));

    let range = client.get("r/b", Some(GetOptions::new().with_range("r/d"))).await.unwrap();
    assert_eq!(keys(&range), ["r/b", "r/c"], "range_end is exclusive");
    let from = client.get("r/d", Some(GetOptions::new().with_from_key())).await.unwrap();
    assert_eq!(keys(&from), ["r/d", "r/e", "r0"]);
    let every = client.get("", Some(GetOptions::new().with_all_keys())).await.unwrap();
    assert_eq!(keys(&every), ["q", "r/a", "r/b", "r/c", "r/d", "r/e", "r0"]);
    let nothing = client.get("r/x", Some(GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!((nothing.kvs().len(), nothing.count(), nothing.more()), (0, 0, false));
}

async fn get_at_historical_revisions(client: &mut Client) {
    let r1 = put(client, "h", "v1").await;
    let r2 = put(client, "h", "v2").await;
    let r3 = revision(client.delete("h", None).await.unwrap().header());
    let r4 = put(client, "h", "v3").await;
    let other = put(client, "h2", "x").await;
    assert!(r1 < r2 && r2 < r3 && r3 < r4 && r4 < other);

    let at = |rev: i64| Some(GetOptions::new().with_revision(rev));
    let got = client.get("h", at(r1)).await.unwrap();
    assert_eq!(kv_tuple(&got.kvs()[0]), tuple("h", "v1", r1, r1, 1));
    let got = client.get("h", at(r2)).await.unwrap();
    assert_eq!(kv_tuple(&got.kvs()[0]), tuple("h", "v2", r1, r2, 2));
    let got = client.get("h", at(r3)).await.unwrap();
    assert!(got.kvs().is_empty(), "deleted at r3");
    assert_eq!(got.count(), 0);
    let got = client.get("h", at(r4)).await.unwrap();
    assert_eq!(kv_tuple(&got.kvs()[0]), tuple("h", "v3", r4, r4, 1), "a re-created key starts a new life");
    let got = client.get("h", None).await.unwrap();
    assert_eq!(kv_tuple(&got.kvs()[0]), tuple("h", "v3", r4, r4, 1));

    let prefix_then = client.get("h", Some(GetOptions::new().with_prefix().with_revision(r4))).await.unwrap();
    assert_eq!(keys(&prefix_then), ["h"], "h2 did not exist yet at r4");
    let prefix_now = client.get("h", Some(GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(keys(&prefix_now), ["h", "h2"]);
}

/// Three keys whose orders differ by every sort target; returns their full KeyValues.
async fn sort_fixture(client: &mut Client) -> Vec<KeyValue> {
    put(client, "s/b", "z").await; // created first
    put(client, "s/a", "y").await;
    put(client, "s/c", "x").await; // created last
    put(client, "s/a", "y2").await;
    put(client, "s/c", "x2").await; // s/c: version 2
    put(client, "s/a", "y3").await; // s/a: version 3, modified last
    client.get("s/", Some(GetOptions::new().with_prefix())).await.unwrap().take_kvs()
}

async fn get_sorted(client: &mut Client) {
    sort_fixture(client).await;
    let sorted = |target, order| Some(GetOptions::new().with_prefix().with_sort(target, order));
    let cases = [
        (SortTarget::Key, SortOrder::Ascend, ["s/a", "s/b", "s/c"]),
        (SortTarget::Key, SortOrder::Descend, ["s/c", "s/b", "s/a"]),
        (SortTarget::Create, SortOrder::Ascend, ["s/b", "s/a", "s/c"]),
        (SortTarget::Create, SortOrder::Descend, ["s/c", "s/a", "s/b"]),
        (SortTarget::Mod, SortOrder::Ascend, ["s/b", "s/c", "s/a"]),
        (SortTarget::Mod, SortOrder::Descend, ["s/a", "s/c", "s/b"]),
        (SortTarget::Version, SortOrder::Descend, ["s/a", "s/c", "s/b"]),
        (SortTarget::Value, SortOrder::Ascend, ["s/c", "s/a", "s/b"]),
        (SortTarget::Value, SortOrder::Descend, ["s/b", "s/a", "s/c"]),
        // etcd sorts ascending when a target other than the key is named without an order.
        (SortTarget::Value, SortOrder::None, ["s/c", "s/a", "s/b"]),
        (SortTarget::Create, SortOrder::None, ["s/b", "s/a", "s/c"]),
    ];
    for (target, order, expected) in cases {
        let got = client.get("s/", sorted(target, order)).await.unwrap();
        assert_eq!(keys(&got), expected, "sort by {target:?} {order:?}");
        assert_eq!(got.count(), 3);
    }
    // Sorting happens before the limit.
    let got = client
        .get("s/", Some(GetOptions::new().with_prefix().with_sort(SortTarget::Value, SortOrder::Descend).with_limit(2)))
        .await
        .unwrap();
    assert_eq!(keys(&got), ["s/b", "s/a"]);
    assert_eq!((got.count(), got.more()), (3, true));
}

async fn get_keys_only_count_only_and_revision_filters(client: &mut Client) {
    let all = sort_fixture(client).await;

    let keys_only = client.get("s/", Some(GetOptions::new().with_prefix().with_keys_only())).await.unwrap();
    assert_eq!(keys(&keys_only), ["s/a", "s/b", "s/c"]);
    assert!(keys_only.kvs().iter().all(|kv| kv.value().is_empty()), "keys_only leaves values out");
    for (got, full) in keys_only.kvs().iter().zip(&all) {
        assert_eq!(
            (got.create_revision(), got.mod_revision(), got.version()),
            (full.create_revision(), full.mod_revision(), full.version()),
            "keys_only keeps the metadata"
        );
    }

    let count_only = client.get("s/", Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap();
    assert!(count_only.kvs().is_empty());
    assert_eq!(count_only.count(), 3);

    // Each filter, against the same filter applied here to the full KeyValues.
    let mods: Vec<i64> = all.iter().map(|kv| kv.mod_revision()).collect();
    let creates: Vec<i64> = all.iter().map(|kv| kv.create_revision()).collect();
    let middle = |mut v: Vec<i64>| {
        v.sort();
        v[1]
    };
    let (mid_mod, mid_create) = (middle(mods), middle(creates));
    type Filter = (&'static str, GetOptions, Box<dyn Fn(&KeyValue) -> bool>);
    let filters: Vec<Filter> = vec![
        (
            "min_mod_revision",
            GetOptions::new().with_min_mod_revision(mid_mod),
            Box::new(move |kv: &KeyValue| kv.mod_revision() >= mid_mod),
        ),
        (
            "max_mod_revision",
            GetOptions::new().with_max_mod_revision(mid_mod),
            Box::new(move |kv: &KeyValue| kv.mod_revision() <= mid_mod),
        ),
        (
            "min_create_revision",
            GetOptions::new().with_min_create_revision(mid_create),
            Box::new(move |kv: &KeyValue| kv.create_revision() >= mid_create),
        ),
        (
            "max_create_revision",
            GetOptions::new().with_max_create_revision(mid_create),
            Box::new(move |kv: &KeyValue| kv.create_revision() <= mid_create),
        ),
        (
            "min and max mod_revision",
            GetOptions::new().with_min_mod_revision(mid_mod).with_max_mod_revision(mid_mod),
            Box::new(move |kv: &KeyValue| kv.mod_revision() == mid_mod),
        ),
    ];
    for (name, options, keep) in filters {
        let got = client.get("s/", Some(options.with_prefix())).await.unwrap();
        let expected: Vec<String> =
            all.iter().filter(|kv| keep(kv)).map(|kv| String::from_utf8_lossy(kv.key()).into_owned()).collect();
        assert_eq!(keys(&got), expected, "filter {name}");
        assert!(!got.kvs().is_empty() && got.kvs().len() < 3 || name.contains("and"), "{name} should filter");
    }
}

async fn delete_single_and_range(client: &mut Client) {
    let ra = put(client, "d/a", "1").await;
    put(client, "d/b", "2").await;
    put(client, "d/c", "3").await;
    put(client, "e", "outside").await;

    let deleted = client.delete("d/a", Some(DeleteOptions::new().with_prev_key())).await.unwrap();
    assert_eq!(deleted.deleted(), 1);
    let prev: Vec<_> = deleted.prev_kvs().iter().map(kv_tuple).collect();
    assert_eq!(prev, [tuple("d/a", "1", ra, ra, 1)]);
    let rev_after = revision(deleted.header());

    let again = client.delete("d/a", Some(DeleteOptions::new().with_prev_key())).await.unwrap();
    assert_eq!(again.deleted(), 0);
    assert!(again.prev_kvs().is_empty());
    assert_eq!(revision(again.header()), rev_after, "deleting nothing does not raise the revision");

    let range = client.delete("d/", Some(DeleteOptions::new().with_prefix().with_prev_key())).await.unwrap();
    assert_eq!(range.deleted(), 2);
    let prev: Vec<_> = range.prev_kvs().iter().map(|kv| kv_tuple(kv).1).collect();
    assert_eq!(prev, ["2", "3"]);
    assert_eq!(revision(range.header()), rev_after + 1, "one revision for the whole range");
    let left = client.get("", Some(GetOptions::new().with_all_keys())).await.unwrap();
    assert_eq!(keys(&left), ["e"]);

    for key in ["x/1", "x/2", "x/3", "x/4"] {
        put(client, key, "v").await;
    }
    let between = client.delete("x/2", Some(DeleteOptions::new().with_range("x/4"))).await.unwrap();
    assert_eq!(between.deleted(), 2);
    assert!(between.prev_kvs().is_empty(), "no prev_kvs unless asked");
    let left = client.get("x/", Some(GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(keys(&left), ["x/1", "x/4"]);
}

fn put_response(op: &TxnOpResponse) -> &etcd_client::PutResponse {
    match op {
        TxnOpResponse::Put(r) => r,
        other => panic!("expected a put response, got {other:?}"),
    }
}

fn get_response(op: &TxnOpResponse) -> &etcd_client::GetResponse {
    match op {
        TxnOpResponse::Get(r) => r,
        other => panic!("expected a get response, got {other:?}"),
    }
}

async fn txn_compares_and_branches(client: &mut Client) {
    let ra = put(client, "t/a", "1").await;
    put(client, "t/b", "old").await;

    // Every compare holds: the success branch runs, all its writes at one revision, and
    // a read inside sees the writes before it.
    let txn = Txn::new()
        .when([
            Compare::version("t/a", CompareOp::Equal, 1),
            Compare::value("t/a", CompareOp::Equal, "1"),
            Compare::create_revision("t/a", CompareOp::Equal, ra),
            Compare::mod_revision("t/a", CompareOp::Equal, ra),
            Compare::mod_revision("t/a", CompareOp::Less, ra + 100),
            Compare::version("t/a", CompareOp::Greater, 0),
            Compare::value("t/a", CompareOp::NotEqual, "2"),
        ])
        .and_then([
            TxnOp::put("t/a", "2", Some(PutOptions::new().with_prev_key())),
            TxnOp::get("t/a", None),
            TxnOp::put("t/c", "new", None),
        ])
        .or_else([TxnOp::put("t/failure", "ran", None)]);
    let response = client.txn(txn).await.unwrap();
    assert!(response.succeeded());
    let rev = revision(response.header());
    let ops = response.op_responses();
    assert_eq!(ops.len(), 3);
    assert_eq!(put_response(&ops[0]).prev_key().map(|kv| kv.value()), Some(&b"1"[..]));
    let read = get_response(&ops[1]);
    assert_eq!(kv_tuple(&read.kvs()[0]), tuple("t/a", "2", ra, rev, 2));
    let c = client.get("t/c", None).await.unwrap();
    assert_eq!(c.kvs()[0].mod_revision(), rev, "one revision for every write of a txn");
    assert!(client.get("t/failure", None).await.unwrap().kvs().is_empty());

    // One compare fails: the failure branch runs instead.
    let txn = Txn::new()
        .when([Compare::value("t/a", CompareOp::Equal, "2"), Compare::version("t/a", CompareOp::Greater, 5)])
        .and_then([TxnOp::put("t/a", "never", None)])
        .or_else([TxnOp::delete("t/b", Some(DeleteOptions::new().with_prev_key())), TxnOp::get("t/a", None)]);
    let response = client.txn(txn).await.unwrap();
    assert!(!response.succeeded());
    assert_eq!(revision(response.header()), rev + 1);
    let ops = response.op_responses();
    match &ops[0] {
        TxnOpResponse::Delete(d) => {
            assert_eq!(d.deleted(), 1);
            assert_eq!(d.prev_kvs()[0].value(), b"old");
        }
        other => panic!("expected a delete response, got {other:?}"),
    }
    assert_eq!(values(get_response(&ops[1])), ["2"]);
    assert!(client.get("t/b", None).await.unwrap().kvs().is_empty());

    // Each kind of compare fails on its own.
    for (name, compare) in [
        ("version", Compare::version("t/a", CompareOp::Equal, 1)),
        ("create_revision", Compare::create_revision("t/a", CompareOp::NotEqual, ra)),
        ("mod_revision", Compare::mod_revision("t/a", CompareOp::Greater, rev)),
        ("value", Compare::value("t/a", CompareOp::Less, "1")),
    ] {
        let response = client.txn(Txn::new().when([compare]).and_then([TxnOp::put("t/x", name, None)])).await.unwrap();
        assert!(!response.succeeded(), "compare on {name} should fail");
    }
    assert!(client.get("t/x", None).await.unwrap().kvs().is_empty());

    // A read-only txn does not raise the revision; an empty compare list succeeds.
    let before = current_revision(client).await;
    let response = client.txn(Txn::new().and_then([TxnOp::get("t/", Some(GetOptions::new().with_prefix()))])).await;
    let response = response.unwrap();
    assert!(response.succeeded());
    assert_eq!(revision(response.header()), before);
    assert_eq!(keys(get_response(&response.op_responses()[0])), ["t/a", "t/c"]);

    // Compares over a range hold only if they hold for every key in it.
    let response =
        client.txn(Txn::new().when([Compare::mod_revision("t/", CompareOp::Less, rev).with_prefix()])).await.unwrap();
    assert!(!response.succeeded(), "t/a and t/c were modified at rev");
    let response = client
        .txn(Txn::new().when([Compare::mod_revision("t/", CompareOp::Less, rev + 1).with_prefix()]))
        .await
        .unwrap();
    assert!(response.succeeded(), "every key under t/ was modified before rev + 1");
    let response =
        client.txn(Txn::new().when([Compare::version("t/", CompareOp::Greater, 0).with_prefix()])).await.unwrap();
    assert!(response.succeeded());
}

async fn txn_nested_and_on_missing_keys(client: &mut Client) {
    // A missing key compares as version 0, create_revision 0 and mod_revision 0; a value
    // compare on it fails (etcd's rule).
    let response = client
        .txn(
            Txn::new()
                .when([
                    Compare::version("m/missing", CompareOp::Equal, 0),
                    Compare::create_revision("m/missing", CompareOp::Equal, 0),
                    Compare::mod_revision("m/missing", CompareOp::Equal, 0),
                ])
                .and_then([TxnOp::put("m/created", "1", None)]),
        )
        .await
        .unwrap();
    assert!(response.succeeded());
    let response = client.txn(Txn::new().when([Compare::value("m/missing", CompareOp::Equal, "")])).await.unwrap();
    assert!(!response.succeeded(), "a value compare on a missing key fails");

    // A nested txn: its compares see the state at its turn; its writes share the outer
    // txn's revision.
    let inner = Txn::new()
        .when([Compare::version("m/inner", CompareOp::Equal, 0)])
        .and_then([TxnOp::put("m/inner", "from inner", None), TxnOp::get("m/outer", None)])
        .or_else([TxnOp::put("m/inner-failed", "x", None)]);
    let outer = Txn::new()
        .when([Compare::version("m/created", CompareOp::Equal, 1)])
        .and_then([TxnOp::put("m/outer", "from outer", None), TxnOp::txn(inner)]);
    let response = client.txn(outer).await.unwrap();
    assert!(response.succeeded());
    let rev = revision(response.header());
    let ops = response.op_responses();
    assert_eq!(ops.len(), 2);
    match &ops[1] {
        TxnOpResponse::Txn(nested) => {
            assert!(nested.succeeded());
            let nested_ops = nested.op_responses();
            assert_eq!(values(get_response(&nested_ops[1])), ["from outer"], "the inner txn sees the outer write");
        }
        other => panic!("expected a txn response, got {other:?}"),
    }
    let got = client.get("m/", Some(GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(keys(&got), ["m/created", "m/inner", "m/outer"]);
    let inner_kv = got.kvs().iter().find(|kv| kv.key() == b"m/inner").unwrap();
    assert_eq!(inner_kv.mod_revision(), rev);

    // A nested txn whose compare fails runs its own failure branch.
    let inner = Txn::new()
        .when([Compare::version("m/inner", CompareOp::Equal, 0)])
        .and_then([TxnOp::put("m/never", "x", None)])
        .or_else([TxnOp::put("m/inner-failed", "yes", None)]);
    let response = client.txn(Txn::new().and_then([TxnOp::txn(inner)])).await.unwrap();
    match &response.op_responses()[0] {
        TxnOpResponse::Txn(nested) => assert!(!nested.succeeded()),
        other => panic!("expected a txn response, got {other:?}"),
    }
    assert_eq!(values(&client.get("m/inner-failed", None).await.unwrap()), ["yes"]);
    assert!(client.get("m/never", None).await.unwrap().kvs().is_empty());
}

async fn txn_is_all_or_nothing(client: &mut Client) {
    let r1 = put(client, "z", "1").await;
    put(client, "z", "2").await;
    let r3 = put(client, "z", "3").await;
    client.compact(r3 - 1, None).await.expect("compact");
    let missing_lease = || Some(PutOptions::new().with_lease(999));
    // Each txn writes a key, then runs an op that fails in the branch taken: the error
    // comes back and the first write is not there (etcd checks the branch before applying).
    let cases: Vec<(&str, Txn, Code, &str)> = vec![
        (
            "a put with a missing lease",
            Txn::new().and_then([TxnOp::put("a1", "1", None), TxnOp::put("b1", "2", missing_lease())]),
            Code::NotFound,
            "etcdserver: requested lease not found",
        ),
        (
            "ignore_value on a missing key",
            Txn::new().and_then([
                TxnOp::put("a2", "1", None),
                TxnOp::put("b2", "", Some(PutOptions::new().with_ignore_value())),
            ]),
            Code::InvalidArgument,
            "etcdserver: key not found",
        ),
        (
            "a read at a compacted revision",
            Txn::new()
                .and_then([TxnOp::put("a3", "1", None), TxnOp::get("z", Some(GetOptions::new().with_revision(r1)))]),
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted",
        ),
        (
            "a read at a future revision",
            Txn::new().and_then([
                TxnOp::put("a4", "1", None),
                TxnOp::get("z", Some(GetOptions::new().with_revision(r3 + 100))),
            ]),
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision",
        ),
        (
            "a missing lease in a nested txn",
            Txn::new().and_then([
                TxnOp::put("a5", "1", None),
                TxnOp::txn(Txn::new().and_then([TxnOp::put("b5", "2", missing_lease())])),
            ]),
            Code::NotFound,
            "etcdserver: requested lease not found",
        ),
        (
            "a missing lease in the failure branch taken",
            Txn::new()
                .when([Compare::version("z", CompareOp::Equal, 100)])
                .and_then([TxnOp::put("a6", "1", None)])
                .or_else([TxnOp::put("a6", "1", None), TxnOp::put("b6", "2", missing_lease())]),
            Code::NotFound,
            "etcdserver: requested lease not found",
        ),
    ];
    let before = current_revision(client).await;
    for (name, txn, code, message) in cases {
        let result = client.txn(txn).await;
        match &result {
            Err(error) => assert_eq!(grpc_status(error), Some((code, message.to_string())), "{name}"),
            Ok(response) => panic!("{name}: the txn succeeded: {response:?}"),
        }
    }
    let all = client.get("", Some(GetOptions::new().with_all_keys())).await.unwrap();
    assert_eq!(keys(&all), ["z"], "failed txns left writes behind");
    assert_eq!(revision(all.header()), before, "failed txns raised the revision");

    // A failing op in the branch not taken does not matter.
    let response = client
        .txn(Txn::new().and_then([TxnOp::put("a7", "1", None)]).or_else([TxnOp::put("b7", "2", missing_lease())]))
        .await
        .expect("the failing op is in the branch not taken");
    assert!(response.succeeded());
    assert_eq!(keys(&client.get("a7", None).await.unwrap()), ["a7"]);
}

async fn compaction(client: &mut Client) {
    let r1 = put(client, "c", "v1").await;
    let r2 = put(client, "c", "v2").await;
    let r3 = put(client, "c", "v3").await;
    put(client, "gone", "x").await;
    let r5 = revision(client.delete("gone", None).await.unwrap().header());

    client.compact(r2, None).await.expect("compact");
    let at = |rev: i64| Some(GetOptions::new().with_revision(rev));
    assert_status(
        client.get("c", at(r1)).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    assert_eq!(values(&client.get("c", at(r2)).await.unwrap()), ["v2"], "the compaction revision itself stays");
    assert_eq!(values(&client.get("c", at(r3)).await.unwrap()), ["v3"]);
    assert_eq!(values(&client.get("c", None).await.unwrap()), ["v3"]);
    let got = client.get("c", None).await.unwrap();
    assert_eq!(kv_tuple(&got.kvs()[0]), tuple("c", "v3", r1, r3, 3), "compaction keeps the live key's history facts");

    assert_status(
        client.compact(r1, None).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    assert_status(
        client.compact(r2, None).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    assert_status(
        client.compact(r5 + 100, None).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );
    assert_status(
        client.get("c", at(r5 + 100)).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );

    client.compact(r5, Some(etcd_client::CompactionOptions::new().with_physical())).await.expect("physical compact");
    assert_status(
        client.get("c", at(r3)).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    assert!(client.get("gone", at(r5)).await.unwrap().kvs().is_empty());
    // Writes go on after compaction.
    let r6 = put(client, "c", "v4").await;
    assert_eq!(r6, r5 + 1);
    assert_eq!(values(&client.get("c", None).await.unwrap()), ["v4"]);
}

async fn invalid_requests(client: &mut Client) {
    const EMPTY_KEY: &str = "etcdserver: key is not provided";
    assert_status(client.put("", "v", None).await, Code::InvalidArgument, EMPTY_KEY);
    assert_status(client.get("", None).await, Code::InvalidArgument, EMPTY_KEY);
    assert_status(client.delete("", None).await, Code::InvalidArgument, EMPTY_KEY);
    assert_status(
        client.txn(Txn::new().when([Compare::version("", CompareOp::Equal, 0)])).await,
        Code::InvalidArgument,
        EMPTY_KEY,
    );
    assert_status(client.txn(Txn::new().and_then([TxnOp::put("", "v", None)])).await, Code::InvalidArgument, EMPTY_KEY);
    assert_status(client.txn(Txn::new().or_else([TxnOp::get("", None)])).await, Code::InvalidArgument, EMPTY_KEY);

    const TOO_MANY: &str = "etcdserver: too many operations in txn request";
    let puts = |n: usize| (0..n).map(|i| TxnOp::put(format!("many/{i}"), "v", None)).collect::<Vec<_>>();
    assert_status(client.txn(Txn::new().and_then(puts(129))).await, Code::InvalidArgument, TOO_MANY);
    assert_status(client.txn(Txn::new().or_else(puts(129))).await, Code::InvalidArgument, TOO_MANY);
    let compares: Vec<Compare> = (0..129).map(|i| Compare::version(format!("many/{i}"), CompareOp::Equal, 0)).collect();
    assert_status(client.txn(Txn::new().when(compares)).await, Code::InvalidArgument, TOO_MANY);
    let response = client.txn(Txn::new().and_then(puts(128))).await.expect("128 operations are allowed");
    assert!(response.succeeded());
    let many = client.get("many/", Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap();
    assert_eq!(many.count(), 128);

    const DUPLICATE: &str = "etcdserver: duplicate key given in txn request";
    assert_status(
        client.txn(Txn::new().and_then([TxnOp::put("dup", "1", None), TxnOp::put("dup", "2", None)])).await,
        Code::InvalidArgument,
        DUPLICATE,
    );
    assert_status(
        client
            .txn(Txn::new().and_then([
                TxnOp::put("dup/a", "1", None),
                TxnOp::delete("dup/", Some(DeleteOptions::new().with_prefix())),
            ]))
            .await,
        Code::InvalidArgument,
        DUPLICATE,
    );
    assert_status(
        client
            .txn(Txn::new().and_then([
                TxnOp::put("dup", "1", None),
                TxnOp::txn(Txn::new().and_then([TxnOp::put("dup", "2", None)])),
            ]))
            .await,
        Code::InvalidArgument,
        DUPLICATE,
    );
    // The same key in both branches, or read and written, or deleted twice, is fine.
    let response = client
        .txn(
            Txn::new()
                .and_then([TxnOp::put("dup", "then", None), TxnOp::get("dup", None)])
                .or_else([TxnOp::put("dup", "else", None)]),
        )
        .await
        .expect("a key in both branches is no duplicate");
    assert!(response.succeeded());
    client
        .txn(Txn::new().and_then([TxnOp::delete("dup", None), TxnOp::delete("dup", None)]))
        .await
        .expect("deleting a key twice in one txn is allowed (etcd allows overlapping deletes)");
    assert!(client.get("dup", None).await.unwrap().kvs().is_empty());

    // A value over the default --max-request-bytes (1.5 MiB), under the gRPC limit.
    let big = vec![b'x'; 1536 * 1024 + 64 * 1024];
    assert_status(client.put("big", big, None).await, Code::InvalidArgument, "etcdserver: request is too large");
    assert!(client.get("big", None).await.unwrap().kvs().is_empty());
    // Just under the limit is fine.
    let fits = vec![b'y'; 1536 * 1024 - 4096];
    client.put("big", fits.clone(), None).await.expect("a value under the limit");
    assert_eq!(client.get("big", None).await.unwrap().kvs()[0].value().len(), fits.len());
}

/// `--max-request-bytes` and `--max-txn-ops` are the server's own checks, not the
/// client's or gRPC's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_configured_limits() {
    let cluster =
        Cluster::builder(1).arg("--max-request-bytes").arg("1024").arg("--max-txn-ops").arg("4").start().await;
    let mut client = cluster.client(0).await;

    const TOO_LARGE: &str = "etcdserver: request is too large";
    assert_status(client.put("k", vec![b'v'; 2048], None).await, Code::InvalidArgument, TOO_LARGE);
    assert_status(
        client.txn(Txn::new().and_then([TxnOp::put("k", vec![b'v'; 2048], None)])).await,
        Code::InvalidArgument,
        TOO_LARGE,
    );
    client.put("k", vec![b'v'; 512], None).await.expect("a small value fits");

    const TOO_MANY: &str = "etcdserver: too many operations in txn request";
    let puts = |n: usize| (0..n).map(|i| TxnOp::put(format!("op/{i}"), "v", None)).collect::<Vec<_>>();
    assert_status(client.txn(Txn::new().and_then(puts(5))).await, Code::InvalidArgument, TOO_MANY);
    let compares: Vec<Compare> = (0..5).map(|i| Compare::version(format!("op/{i}"), CompareOp::Equal, 0)).collect();
    assert_status(client.txn(Txn::new().when(compares)).await, Code::InvalidArgument, TOO_MANY);
    // A nested txn may use what its parent leaves: 4 minus the parent's largest list.
    let nested = |inner: usize| {
        Txn::new().and_then([TxnOp::put("outer", "v", None), TxnOp::txn(Txn::new().and_then(puts(inner)))])
    };
    assert_status(client.txn(nested(3)).await, Code::InvalidArgument, TOO_MANY);
    client.txn(nested(2)).await.expect("a nested txn within the limit");
    client.delete("op/", Some(DeleteOptions::new().with_prefix())).await.unwrap();
    let response = client.txn(Txn::new().and_then(puts(4))).await.expect("4 operations are allowed");
    assert!(response.succeeded());
    let got = client.get("op/", Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap();
    assert_eq!(got.count(), 4);
}

/// A request over the gRPC message limit (`--max-request-bytes` + 512 KiB, as in etcd) is
/// refused before the server's own check. etcd (grpc-go) answers ResourceExhausted "grpc:
/// received message larger than max (N vs. M)"; concord (tonic) answers OutOfRange "Error,
/// decoded message length too large: found N bytes, the limit is: M bytes". Clients that
/// tell "request too big" from "revision out of range" by the code get it wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "server deviation: a request over the gRPC limit gets OutOfRange, etcd gives ResourceExhausted"]
async fn request_over_the_grpc_limit_is_resource_exhausted() {
    let cluster = Cluster::start(1).await;
    let mut client = cluster.client(0).await;
    let result = client.put("huge", vec![b'x'; 3 * 1024 * 1024], None).await;
    let error = result.expect_err("a 3 MiB put must be refused");
    let (code, message) = grpc_status(&error).unwrap_or_else(|| panic!("a non-gRPC error: {error}"));
    assert_eq!(code, Code::ResourceExhausted, "message: {message}");
    assert!(client.get("huge", None).await.unwrap().kvs().is_empty());
}
