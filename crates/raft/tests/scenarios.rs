//! Protocol scenarios kept as readable test data (tests/testdata/*.txt), in the style of
//! etcd raft's datadriven tests. Each file drives an in-memory cluster with commands and
//! records what happened; `REWRITE=1 cargo test -p concord-raft --test scenarios`
//! regenerates the expectations (review the diff before committing it).
//!
//! Commands (node ids are numbers; lists are comma-separated):
//! - `cluster nodes=N [pre_vote=false] [check_quorum=false] [max_message_bytes=B]`
//! - `tick [nodes=(1,2)] [count=N] [verbose]`: tick the nodes (default: all live), stabilizing
//!   after each (printing every delivered message with `verbose`)
//! - `campaign N`, `propose N data=(a,b)`, `read N id=7`, `transfer N to=M`
//! - `stabilize [verbose]`: handle Readies and deliver messages until quiet
//! - `partition left=(1,2) right=(3,4,5)`, `isolate N`, `cut from=N to=M` (one way), `heal`
//! - `crash N`, `restart N`, `stall N` (disk writes wait), `unstall N`
//! - `manual`: stop stabilizing after each command; then `process N` (handle N's Readies),
//!   `deliver to=N` (deliver messages in flight to N), `drop from=N`; `auto` resumes
//! - `status`, `logs`, `members` (each node's configuration and first log index)
//! - `add-node N`: a node joins with an empty disk and no bootstrap membership
//! - `conf N add-learner=M | add-voter=M | remove=M`: N proposes a membership change
//! - `snapshot N [keep=K]`: N snapshots what it applied and compacts its log, keeping K entries

mod harness;

use concord_raft::{ConfChangeKind, NodeId};
use harness::Cluster;

fn ids(text: &str) -> Vec<NodeId> {
    text.split(',').map(|s| s.trim().parse().expect("node id")).collect()
}

/// The value of `key=value` (a list `key=(a,b)` is joined with commas).
fn arg(case: &datadriven::TestCase, key: &str) -> Option<String> {
    case.args.get(key).map(|values| values.join(","))
}

/// The bare numeric argument naming the node a command acts on (`campaign 1`).
fn node(case: &datadriven::TestCase) -> NodeId {
    let bare: Vec<NodeId> =
        case.args.iter().filter(|(_, v)| v.is_empty()).filter_map(|(k, _)| k.parse().ok()).collect();
    assert_eq!(bare.len(), 1, "{} needs exactly one node id", case.directive);
    bare[0]
}

#[test]
fn scenarios() {
    datadriven::walk(&std::env::var("SCENARIO_DIR").unwrap_or("tests/testdata".into()), |file| {
        let mut cluster: Option<Cluster> = None;
        file.run(|case| -> String {
            if case.directive == "cluster" {
                let size: u64 = arg(case, "nodes").unwrap_or("3".into()).parse().unwrap();
                let pre_vote = arg(case, "pre_vote").as_deref() != Some("false");
                let check_quorum = arg(case, "check_quorum").as_deref() != Some("false");
                let max_message_bytes: Option<u64> = arg(case, "max_message_bytes").map(|v| v.parse().unwrap());
                let mut created = Cluster::new(size, |config| {
                    config.pre_vote = pre_vote;
                    config.check_quorum = check_quorum;
                    if let Some(limit) = max_message_bytes {
                        config.max_message_bytes = limit;
                    }
                });
                created.max_message_bytes = max_message_bytes;
                cluster = Some(created);
                return "ok\n".into();
            }
            let c = cluster.as_mut().expect("a scenario starts with `cluster`");
            match case.directive.as_str() {
                "tick" => {
                    let targets = arg(case, "nodes").map(|n| ids(&n)).unwrap_or_else(|| c.live_ids());
                    let count: u32 = arg(case, "count").unwrap_or("1".into()).parse().unwrap();
                    c.verbose = case.args.contains_key("verbose");
                    c.tick(&targets, count);
                    c.verbose = false;
                }
                "campaign" => {
                    c.raft(node(case)).campaign();
                    if c.auto {
                        c.stabilize();
                    }
                }
                "propose" => {
                    let id = node(case);
                    for data in arg(case, "data").expect("data=").split(',') {
                        c.propose(id, data);
                    }
                    if c.auto {
                        c.stabilize();
                    }
                }
                "read" => {
                    let id = node(case);
                    let request_id: u64 = arg(case, "id").expect("id=").parse().unwrap();
                    if let Err(error) = c.raft(id).read_index(request_id) {
                        c.out.push_str(&format!("n{id} refused read {request_id}: {error}\n"));
                    }
                    if c.auto {
                        c.stabilize();
                    }
                }
                "transfer" => {
                    let id = node(case);
                    let to: NodeId = arg(case, "to").expect("to=").parse().unwrap();
                    if let Err(error) = c.raft(id).transfer_leader(to) {
                        c.out.push_str(&format!("n{id} refused transfer: {error}\n"));
                    }
                    if c.auto {
                        c.stabilize();
                    }
                }
                "stabilize" => {
                    c.verbose = case.args.contains_key("verbose");
                    c.stabilize();
                    c.verbose = false;
                }
                "partition" => {
                    let left = ids(&arg(case, "left").expect("left="));
                    let right = ids(&arg(case, "right").expect("right="));
                    c.partition(&left, &right);
                }
                "cut" => {
                    let from: NodeId = arg(case, "from").expect("from=").parse().unwrap();
                    let to: NodeId = arg(case, "to").expect("to=").parse().unwrap();
                    c.cut_one_way(from, to);
                }
                "isolate" => c.isolate(node(case)),
                "heal" => c.heal(),
                "crash" => c.crash(node(case)),
                "restart" => c.restart(node(case)),
                "stall" => c.stall(node(case)),
                "unstall" => {
                    c.unstall(node(case));
                    if c.auto {
                        c.stabilize();
                    }
                }
                "manual" => c.auto = false,
                "auto" => {
                    c.auto = true;
                    c.stabilize();
                }
                "process" => c.process(node(case)),
                "deliver" => c.deliver_to(arg(case, "to").expect("to=").parse().unwrap()),
                "drop" => c.drop_from(arg(case, "from").expect("from=").parse().unwrap()),
                "add-node" => {
                    let limit = c.max_message_bytes;
                    c.add_node(node(case), |config| {
                        if let Some(limit) = limit {
                            config.max_message_bytes = limit;
                        }
                    });
                }
                "conf" => {
                    let id = node(case);
                    let (kind, target) = [
                        ("add-learner", ConfChangeKind::AddLearner),
                        ("add-voter", ConfChangeKind::AddVoter),
                        ("remove", ConfChangeKind::RemoveNode),
                    ]
                    .into_iter()
                    .find_map(|(key, kind)| arg(case, key).map(|v| (kind, v.parse::<NodeId>().unwrap())))
                    .expect("add-learner=, add-voter= or remove=");
                    c.conf_change(id, kind, target);
                    if c.auto {
                        c.stabilize();
                    }
                }
                "snapshot" => {
                    let keep: u64 = arg(case, "keep").unwrap_or("0".into()).parse().unwrap();
                    c.snapshot(node(case), keep);
                }
                "members" => c.members(),
                "status" => c.status(),
                "logs" => c.logs(),
                other => panic!("unknown command {other}"),
            }
            if let Err(violation) = c.check_applied_agree() {
                panic!("state machine safety violated: {violation}");
            }
            c.take_output()
        });
    });
}
