//! Bounded fuzzing of what members accept from outside: random and malformed peer frames
//! from a connected peer, and random KV requests from a client. No member may end, and
//! afterwards the cluster must elect a leader and take a normal put.
//!
//! The inputs come from a seeded generator (proptest's deterministic `TestRng`), so a
//! failure names a seed that replays the same inputs. The forged peer messages may
//! mislead the cluster (Raft trusts its members; who may send peer frames is a matter of
//! authentication): what is checked is that nothing a peer or a client sends ends a
//! member or leaves it unable to serve.

mod common;

use std::time::{Duration, Instant};

use common::Cluster;
use concord_api::etcdserverpb::{self as pb, kv_client::KvClient};
use concord_api::peerpb::{self, peer_client::PeerClient, raft_message::Body};
use proptest::prelude::Rng;
use proptest::test_runner::{RngAlgorithm, TestRng};

/// How long each member is sent forged frames.
const PEER_FUZZ_TIME: Duration = Duration::from_secs(3);
/// Streams of forged frames sent to each member (at most), and frames per stream.
const STREAMS_PER_MEMBER: usize = 60;
const FRAMES_PER_STREAM: usize = 10;
/// How many random KV requests the client sends.
const CLIENT_REQUESTS: usize = 600;

/// Draws from proptest's generator.
trait Draw: Rng {
    fn any_u64(&mut self) -> u64 {
        self.next_u64()
    }

    fn below(&mut self, n: u64) -> u64 {
        self.any_u64() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn bytes(&mut self, max_len: u64) -> Vec<u8> {
        let len = self.below(max_len + 1) as usize;
        (0..len).map(|_| self.any_u64() as u8).collect()
    }
}

impl Draw for TestRng {}

/// The generator for `CONCORD_FUZZ_SEED` (1 if unset), one stream per `purpose`.
fn generator(purpose: u8) -> TestRng {
    let seed: u64 = std::env::var("CONCORD_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    eprintln!("fuzz seed {seed} (CONCORD_FUZZ_SEED replays it)");
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    seed_bytes[8] = purpose;
    TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes)
}

/// A number near the logs' ends (they are short here), or an extreme.
fn number(rng: &mut TestRng) -> u64 {
    match rng.below(10) {
        0 => 0,
        1 => u64::MAX,
        2 => rng.any_u64(),
        _ => rng.below(40),
    }
}

fn forged_message(rng: &mut TestRng, to: u64, ids: &[u64], term: u64) -> peerpb::RaftMessage {
    let from = if rng.chance(50) { 0xbad } else { ids[rng.below(ids.len() as u64) as usize] };
    let to = if rng.chance(90) { to } else { number(rng) };
    let term = if rng.chance(80) { term + rng.below(3) } else { number(rng) };
    let entry = |rng: &mut TestRng| peerpb::Entry {
        index: number(rng),
        term: number(rng),
        kind: rng.below(3) as u32,
        data: rng.bytes(64),
    };
    let body = match rng.below(11) {
        0 => Body::RequestVote(peerpb::RequestVote {
            pre_vote: rng.chance(50),
            last_log_index: number(rng),
            last_log_term: number(rng),
            leader_transfer: rng.chance(50),
        }),
        1 => {
            Body::RequestVoteResponse(peerpb::RequestVoteResponse { pre_vote: rng.chance(50), granted: rng.chance(50) })
        }
        2 | 3 => {
            let prev_log_index = number(rng);
            let mut entries: Vec<peerpb::Entry> = (0..rng.below(4)).map(|_| entry(rng)).collect();
            if rng.chance(50) {
                // Entries that do follow each other, to get past the first check.
                for (i, e) in entries.iter_mut().enumerate() {
                    e.index = prev_log_index.wrapping_add(1 + i as u64);
                    e.term = term;
                }
            }
            Body::AppendEntries(peerpb::AppendEntries {
                prev_log_index,
                prev_log_term: number(rng),
                entries,
                leader_commit: number(rng),
            })
        }
        4 => Body::AppendEntriesResponse(peerpb::AppendEntriesResponse {
            success: rng.chance(50),
            match_index: number(rng),
            rejected_index: number(rng),
            hint_index: number(rng),
            hint_term: number(rng),
        }),
        5 => Body::Heartbeat(peerpb::Heartbeat { commit: number(rng), read_round: number(rng) }),
        6 => Body::HeartbeatResponse(peerpb::HeartbeatResponse { read_round: number(rng) }),
        7 => Body::ReadIndexRequest(peerpb::ReadIndexRequest { request_id: number(rng) }),
        8 => Body::ReadIndexResponse(peerpb::ReadIndexResponse { request_id: number(rng), index: number(rng) }),
        9 => {
            // Half the time a well-formed description of a snapshot, so that chunks get
            // staged and installed, with data that is no state machine.
            let meta = if rng.chance(50) {
                let membership = concord_raft::Membership::new(ids.iter().copied(), []);
                concord_raft::SnapshotMeta { index: number(rng), term: number(rng), membership }.encode().to_vec()
            } else {
                rng.bytes(40)
            };
            Body::InstallSnapshot(peerpb::InstallSnapshot {
                meta,
                offset: if rng.chance(70) { 0 } else { number(rng) },
                data: rng.bytes(256),
                last: rng.chance(50),
            })
        }
        _ => Body::InstallSnapshotResponse(peerpb::InstallSnapshotResponse {
            index: number(rng),
            next_offset: number(rng),
        }),
    };
    peerpb::RaftMessage { from, to, term, body: if rng.chance(97) { Some(body) } else { None } }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_peer_frames_end_no_member() {
    let mut rng = generator(0);

    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let mut client = cluster.client(leader).await;
    client.put("before", "1", None).await.expect("put before");
    let header = client.status().await.expect("status").header().expect("header").clone();
    let mut ids = Vec::new();
    for member in 0..cluster.len() {
        let mut member_client = cluster.client(member).await;
        ids.push(member_client.status().await.expect("status").header().expect("header").member_id());
    }

    // Streams of a few frames each: a frame the receiver refuses outright (another
    // cluster's) ends its stream, and the frames after it would not be read.
    let (mut streams, mut streams_refused) = (0, 0);
    for (member, &to) in ids.iter().enumerate() {
        let started = Instant::now();
        while started.elapsed() < PEER_FUZZ_TIME && streams < (member + 1) * STREAMS_PER_MEMBER {
            let mut frames = Vec::new();
            for _ in 0..FRAMES_PER_STREAM {
                let messages =
                    (0..1 + rng.below(4)).map(|_| forged_message(&mut rng, to, &ids, header.raft_term())).collect();
                let proposals = if rng.chance(10) {
                    vec![peerpb::ForwardedProposal { data: (0..rng.below(3)).map(|_| rng.bytes(32)).collect() }]
                } else {
                    Vec::new()
                };
                let refused = if rng.chance(5) {
                    vec![peerpb::RefusedProposals {
                        request_ids: (0..rng.below(3)).map(|_| number(&mut rng)).collect(),
                        reason: rng.below(5) as u32,
                    }]
                } else {
                    Vec::new()
                };
                frames.push(peerpb::PeerFrame {
                    from: 0xbad,
                    cluster_id: header.cluster_id(),
                    messages,
                    proposals,
                    refused,
                });
            }
            if rng.chance(10) {
                frames[0].cluster_id = number(&mut rng);
            }
            let Ok(mut peer) = PeerClient::connect(cluster.members[member].peer_url()).await else { break };
            streams += 1;
            match tokio::time::timeout(PEER_FUZZ_TIME, peer.stream(tokio_stream::iter(frames))).await {
                Ok(Ok(_)) => {}
                _ => streams_refused += 1,
            }
        }
    }
    eprintln!("{streams} streams of {FRAMES_PER_STREAM} forged frames, {streams_refused} ended by the receiver");
    assert!(streams_refused < streams, "most streams were read to their end");

    no_member_ended_and_a_put_succeeds(&mut cluster, "after-peer-fuzz").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kv_requests_end_no_member() {
    let mut rng = generator(1);

    let mut cluster = Cluster::start(3).await;
    let channel = leader_channel(&mut cluster).await;
    let mut kv = KvClient::new(channel);
    let key = |rng: &mut TestRng| if rng.chance(70) { vec![b'k', rng.below(8) as u8] } else { rng.bytes(8) };
    let (mut answered, mut refused) = (0, 0);
    for _ in 0..CLIENT_REQUESTS {
        let revision = |rng: &mut TestRng| match rng.below(4) {
            0 => -(rng.below(5) as i64),
            1 => i64::MAX,
            _ => rng.below(30) as i64,
        };
        let outcome = match rng.below(5) {
            0 => kv
                .put(pb::PutRequest {
                    key: key(&mut rng),
                    value: rng.bytes(32),
                    lease: if rng.chance(90) { 0 } else { rng.any_u64() as i64 },
                    prev_kv: rng.chance(50),
                    ignore_value: rng.chance(10),
                    ignore_lease: rng.chance(10),
                })
                .await
                .map(|_| ()),
            1 => kv
                .range(pb::RangeRequest {
                    key: key(&mut rng),
                    range_end: if rng.chance(50) { key(&mut rng) } else { vec![0] },
                    limit: revision(&mut rng),
                    revision: revision(&mut rng),
                    sort_order: rng.below(4) as i32,
                    sort_target: rng.below(7) as i32,
                    serializable: rng.chance(50),
                    keys_only: rng.chance(30),
                    count_only: rng.chance(20),
                    min_mod_revision: revision(&mut rng),
                    max_mod_revision: revision(&mut rng),
                    min_create_revision: revision(&mut rng),
                    max_create_revision: revision(&mut rng),
                })
                .await
                .map(|_| ()),
            2 => kv
                .delete_range(pb::DeleteRangeRequest {
                    key: key(&mut rng),
                    range_end: if rng.chance(50) { key(&mut rng) } else { Vec::new() },
                    prev_kv: rng.chance(50),
                })
                .await
                .map(|_| ()),
            3 => {
                let compare = pb::Compare {
                    result: rng.below(5) as i32,
                    target: rng.below(6) as i32,
                    key: key(&mut rng),
                    range_end: if rng.chance(20) { key(&mut rng) } else { Vec::new() },
                    target_union: match rng.below(5) {
                        0 => Some(pb::compare::TargetUnion::Version(revision(&mut rng))),
                        1 => Some(pb::compare::TargetUnion::CreateRevision(revision(&mut rng))),
                        2 => Some(pb::compare::TargetUnion::ModRevision(revision(&mut rng))),
                        3 => Some(pb::compare::TargetUnion::Value(rng.bytes(8))),
                        _ => None,
                    },
                };
                let op = |rng: &mut TestRng| pb::RequestOp {
                    request: match rng.below(4) {
                        0 => Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                            key: vec![b'k', rng.below(8) as u8],
                            value: rng.bytes(8),
                            ..Default::default()
                        })),
                        1 => Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
                            key: vec![b'k'],
                            range_end: vec![0],
                            ..Default::default()
                        })),
                        2 => Some(pb::request_op::Request::RequestDeleteRange(pb::DeleteRangeRequest {
                            key: vec![b'k', rng.below(8) as u8],
                            ..Default::default()
                        })),
                        _ => None,
                    },
                };
                kv.txn(pb::TxnRequest {
                    compare: vec![compare],
                    success: (0..rng.below(4)).map(|_| op(&mut rng)).collect(),
                    failure: (0..rng.below(3)).map(|_| op(&mut rng)).collect(),
                })
                .await
                .map(|_| ())
            }
            _ => kv
                .compact(pb::CompactionRequest { revision: revision(&mut rng), physical: rng.chance(30) })
                .await
                .map(|_| ()),
        };
        match outcome {
            Ok(()) => answered += 1,
            Err(_) => refused += 1,
        }
    }
    eprintln!("{answered} requests answered, {refused} refused");
    assert!(answered > 0 && refused > 0, "the requests were a mix of valid and invalid ones");
    no_member_ended_and_a_put_succeeds(&mut cluster, "after-client-fuzz").await;
}

/// Random Watch, Lease and Lock requests, malformed ones among them: watch streams with
/// any range, revision, filter and id (created, cancelled, asked for progress, dropped
/// mid-stream), leases granted, revoked, kept alive and asked about with any id and TTL,
/// locks on any name with any lease (some waiting, then dropped by their client). No
/// member may end; afterwards a put succeeds and a new watch sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_watch_lease_and_lock_requests_end_no_member() {
    use concord_api::etcdserverpb::{lease_client::LeaseClient, watch_client::WatchClient, watch_request};
    use concord_api::v3lockpb::{self as lockpb, lock_client::LockClient};

    let mut rng = generator(2);
    let mut cluster = Cluster::start(3).await;
    let channel = leader_channel(&mut cluster).await;
    let (mut watch, mut lease, mut lock, mut kv) = (
        WatchClient::new(channel.clone()),
        LeaseClient::new(channel.clone()),
        LockClient::new(channel.clone()),
        KvClient::new(channel),
    );
    let wait = Duration::from_millis(200);
    let key = |rng: &mut TestRng| if rng.chance(70) { vec![b'k', rng.below(8) as u8] } else { rng.bytes(8) };
    let signed = |rng: &mut TestRng| match rng.below(6) {
        0 => -(rng.below(5) as i64),
        1 => i64::MAX,
        2 => i64::MIN,
        3 => rng.any_u64() as i64,
        _ => rng.below(30) as i64,
    };
    let mut granted: Vec<i64> = Vec::new();
    let (mut answered, mut refused) = (0, 0);
    let mut tally = |ok: bool| if ok { answered += 1 } else { refused += 1 };
    for _ in 0..CLIENT_REQUESTS / 3 {
        let lease_id = |rng: &mut TestRng, granted: &[i64]| {
            if !granted.is_empty() && rng.chance(60) {
                granted[rng.below(granted.len() as u64) as usize]
            } else {
                signed(rng)
            }
        };
        match rng.below(6) {
            0 | 1 => {
                let requests: Vec<pb::WatchRequest> = (0..1 + rng.below(5))
                    .map(|_| pb::WatchRequest {
                        request_union: match rng.below(8) {
                            0..=3 => Some(watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest {
                                key: key(&mut rng),
                                range_end: match rng.below(3) {
                                    0 => Vec::new(),
                                    1 => vec![0],
                                    _ => key(&mut rng),
                                },
                                start_revision: signed(&mut rng),
                                progress_notify: rng.chance(30),
                                filters: (0..rng.below(3)).map(|_| signed(&mut rng) as i32).collect(),
                                prev_kv: rng.chance(50),
                                watch_id: if rng.chance(70) { 0 } else { signed(&mut rng) },
                                fragment: rng.chance(20),
                            })),
                            4 | 5 => Some(watch_request::RequestUnion::CancelRequest(pb::WatchCancelRequest {
                                watch_id: signed(&mut rng),
                            })),
                            6 => Some(watch_request::RequestUnion::ProgressRequest(pb::WatchProgressRequest {})),
                            _ => None,
                        },
                    })
                    .collect();
                // The stream stays open while the answers are read for a moment, then
                // the client drops it, as a client that goes away does.
                let (sender, receiver) = tokio::sync::mpsc::channel(requests.len());
                for request in requests {
                    sender.send(request).await.expect("the channel has room");
                }
                let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
                match tokio::time::timeout(wait, watch.watch(stream)).await {
                    Ok(Ok(response)) => {
                        let mut responses = response.into_inner();
                        let _ =
                            tokio::time::timeout(wait, async { while let Ok(Some(_)) = responses.message().await {} })
                                .await;
                        tally(true);
                    }
                    _ => tally(false),
                }
                drop(sender);
            }
            2 => {
                let outcome =
                    lease.lease_grant(pb::LeaseGrantRequest { ttl: signed(&mut rng), id: signed(&mut rng) }).await;
                if let Ok(response) = &outcome {
                    granted.push(response.get_ref().id);
                }
                tally(outcome.is_ok());
            }
            3 => {
                let id = lease_id(&mut rng, &granted);
                let outcome = match rng.below(4) {
                    0 => lease.lease_revoke(pb::LeaseRevokeRequest { id }).await.map(|_| ()),
                    1 => lease
                        .lease_time_to_live(pb::LeaseTimeToLiveRequest { id, keys: rng.chance(50) })
                        .await
                        .map(|_| ()),
                    2 => lease.lease_leases(pb::LeaseLeasesRequest {}).await.map(|_| ()),
                    _ => {
                        let ids: Vec<pb::LeaseKeepAliveRequest> = (0..1 + rng.below(3))
                            .map(|_| pb::LeaseKeepAliveRequest { id: lease_id(&mut rng, &granted) })
                            .collect();
                        match tokio::time::timeout(wait, lease.lease_keep_alive(tokio_stream::iter(ids))).await {
                            Ok(Ok(response)) => {
                                let mut responses = response.into_inner();
                                let _ = tokio::time::timeout(wait, responses.message()).await;
                                Ok(())
                            }
                            Ok(Err(status)) => Err(status),
                            Err(_) => Err(tonic::Status::deadline_exceeded("keep-alive")),
                        }
                    }
                };
                tally(outcome.is_ok());
            }
            4 => {
                let request = lockpb::LockRequest { name: key(&mut rng), lease: lease_id(&mut rng, &granted) };
                let outcome = tokio::time::timeout(wait, lock.lock(request)).await;
                tally(matches!(outcome, Ok(Ok(_))));
            }
            _ => {
                let outcome = if rng.chance(50) {
                    lock.unlock(lockpb::UnlockRequest { key: key(&mut rng) }).await.map(|_| ())
                } else {
                    let put = pb::PutRequest {
                        key: key(&mut rng),
                        value: rng.bytes(16),
                        lease: lease_id(&mut rng, &granted),
                        ..Default::default()
                    };
                    kv.put(put).await.map(|_| ())
                };
                tally(outcome.is_ok());
            }
        }
    }
    eprintln!("{answered} requests answered, {refused} refused or left waiting");
    assert!(answered > 0 && refused > 0, "the requests were a mix of valid and invalid ones");
    no_member_ended_and_a_put_succeeds(&mut cluster, "after-watch-lease-fuzz").await;
    let leader = cluster.wait_for_leader().await;
    let mut client = cluster.client(leader).await;
    let stream = client.watch("watched-after-fuzz", None).await.expect("a watch after the fuzzing");
    let (_sender, mut events) = stream.split();
    let mut first = events.message().await.expect("watch stream").expect("the created reply");
    assert!(first.created() && !first.canceled(), "{first:?}");
    client.put("watched-after-fuzz", "1", None).await.expect("put");
    let event = common::within(Duration::from_secs(10), "the watch sees the put", async {
        loop {
            first = events.message().await.expect("watch stream").expect("watch stream open");
            let response = &first;
            if let Some(event) = response.events().first() {
                return event.kv().map(|kv| kv.value().to_vec());
            }
        }
    })
    .await;
    assert_eq!(event, Some(b"1".to_vec()));
}

/// A snapshot whose bytes are no state file, sent as from the leader: the follower used to
/// adopt it in its core at the last chunk and then end when the install found it damaged.
/// Now it refuses it before the core sees the last chunk, and keeps following the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_snapshot_from_the_leader_ends_no_member() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.wait_for_leader().await;
    let follower = cluster.followers(leader)[0];
    let mut client = cluster.client(leader).await;
    client.put("before", "1", None).await.expect("put before");
    let status = client.status().await.expect("status");
    let header = status.header().expect("header").clone();
    let mut ids = Vec::new();
    for member in 0..cluster.len() {
        let mut member_client = cluster.client(member).await;
        ids.push(member_client.status().await.expect("status").header().expect("header").member_id());
    }
    let membership = concord_raft::Membership::new(ids.iter().copied(), []);
    let meta = concord_raft::SnapshotMeta { index: status.raft_index() + 1000, term: status.raft_term(), membership };
    // Two chunks, so that the first is staged and the check reads it back.
    let chunk = |offset: u64, data: &[u8], last: bool| peerpb::RaftMessage {
        from: ids[leader],
        to: ids[follower],
        term: status.raft_term(),
        body: Some(Body::InstallSnapshot(peerpb::InstallSnapshot {
            meta: meta.encode().to_vec(),
            offset,
            data: data.to_vec(),
            last,
        })),
    };
    let frames = [chunk(0, b"not a state ", false), chunk(12, b"file", true)].map(|message| peerpb::PeerFrame {
        from: ids[leader],
        cluster_id: header.cluster_id(),
        messages: vec![message],
        proposals: Vec::new(),
        refused: Vec::new(),
    });
    let mut peer = PeerClient::connect(cluster.members[follower].peer_url()).await.expect("connect to the peer port");
    peer.stream(tokio_stream::iter(frames)).await.expect("the frames are read");

    common::eventually(Duration::from_secs(10), "the damaged snapshot is refused, or the follower ends", || {
        let settled =
            !cluster.is_running(follower) || cluster.log_text(follower).contains("receiving it again from the start");
        async move { settled.then_some(()).ok_or_else(|| "not yet".to_string()) }
    })
    .await;
    assert!(cluster.is_running(follower), "the follower ended:\n{}", cluster.log_text(follower));
    assert!(!cluster.log_text(follower).contains("installed a snapshot"), "nothing was installed");
    put_succeeds_eventually(&mut cluster, "after-damaged-snapshot").await;
    let follower_client = cluster.client(follower).await;
    common::eventually(Duration::from_secs(10), "the follower applies the put", || {
        let mut client = follower_client.clone();
        async move {
            let options = etcd_client::GetOptions::new().with_serializable();
            let response = client.get("after-damaged-snapshot", Some(options)).await.map_err(|e| e.to_string())?;
            (response.kvs().len() == 1).then_some(()).ok_or_else(|| "not applied yet".to_string())
        }
    })
    .await;
}

/// A gRPC channel to the leader, once one is elected.
async fn leader_channel(cluster: &mut Cluster) -> tonic::transport::Channel {
    let leader = cluster.wait_for_leader().await;
    tonic::transport::Endpoint::from_shared(cluster.endpoint(leader))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

/// What every fuzz test ends with: all members still run, and a put succeeds.
async fn no_member_ended_and_a_put_succeeds(cluster: &mut Cluster, key: &str) {
    for member in 0..cluster.len() {
        assert!(cluster.is_running(member), "member {member} ended:\n{}", cluster.log_text(member));
    }
    put_succeeds_eventually(cluster, key).await;
}

/// A leader is elected and a put through it succeeds, within 60 s.
async fn put_succeeds_eventually(cluster: &mut Cluster, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let leader = cluster.wait_for_leader().await;
        let mut client = cluster.client(leader).await;
        match client.put(key, "1", None).await {
            Ok(_) => return,
            Err(error) if Instant::now() < deadline => {
                eprintln!("put not yet possible: {error}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(error) => panic!("no put succeeds after the fuzzing: {error}"),
        }
    }
}
