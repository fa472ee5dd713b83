//! The etcd Cluster service (MemberAdd, MemberRemove, MemberUpdate, MemberPromote,
//! MemberList) and the leader's side of membership changes.
//!
//! Add, remove and promote are Raft configuration changes, one server at a time (see
//! concord-raft's `membership` module). Only the leader can propose them and only it knows
//! whether a learner is in sync and which voters are live, so a follower forwards them to
//! the leader over the peer protocol (`Peer.ChangeMembership`, as etcd forwards a promote
//! over its peer HTTP API) and relays the answer. The leader validates a change against
//! the member directory as of the configuration in effect, with etcd's rules and error
//! texts, proposes it through the Raft task, and answers once the entry is applied here.
//!
//! MemberUpdate (new peer URLs) changes no vote, so it is an ordinary entry that any
//! member proposes; whether it is allowed is decided when it is applied, identically on
//! every member.

use std::sync::Arc;
use std::time::Duration;

use concord_api::etcdserverpb::{self as pb, cluster_server::Cluster};
use concord_api::peerpb;
use concord_raft::{ConfChange, ConfChangeKind, NodeId};
use tokio::time::Instant;
use tonic::{Request, Status};

use crate::config::{is_valid_url, new_member_id};
use crate::envelope::{ChangeContext, MAX_PEER_URLS, MAX_URL_BYTES};
use crate::errors::EtcdError;
use crate::members::{DirectoryState, Member};
use crate::node::{self, ConfChangeRefusal, QuorumCheck};
use crate::shared::Shared;

/// etcd 3.4 allows one learner at a time (`maxLearners`).
const MAX_LEARNERS: usize = 1;
/// Pause before validating a change again (an earlier change is still committing).
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// A membership change as a client asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    Add { peer_urls: Vec<String>, is_learner: bool },
    Remove(NodeId),
    Promote(NodeId),
}

/// What a change answers: the member added (MemberAdd) and every member afterwards.
#[derive(Clone, Debug)]
pub struct ChangeOutcome {
    pub added: Option<Member>,
    pub members: Vec<Member>,
}

/// Runs membership changes; shared by the Cluster service and the peer service.
pub struct Reconfigurer {
    pub shared: Arc<Shared>,
    /// `--initial-cluster-token`, mixed into new member ids as etcd does.
    pub cluster_token: String,
}

impl Reconfigurer {
    /// Runs `change` on the leader (here, or forwarded to it), following leader changes,
    /// until it is applied there or the request times out.
    pub async fn change(&self, change: MembershipChange) -> Result<ChangeOutcome, Status> {
        let deadline = Instant::now() + self.shared.request_timeout;
        loop {
            self.shared.wait_for_leader().await?;
            let status = *self.shared.status.borrow();
            let result = if status.is_leader {
                self.change_here(&change, deadline).await.map_err(Status::from)
            } else {
                self.forward(status.leader, &change, deadline).await
            };
            match result {
                Err(status) if is_retryable(&status) && Instant::now() < deadline => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(status) if is_retryable(&status) => return Err(EtcdError::Timeout.into()),
                other => return other,
            }
        }
    }

    /// Asks the leader to run `change` (a follower's part).
    async fn forward(
        &self,
        leader: NodeId,
        change: &MembershipChange,
        deadline: Instant,
    ) -> Result<ChangeOutcome, Status> {
        let Some(url) = self.shared.directory.member(leader).and_then(|m| m.peer_urls.first().cloned()) else {
            return Err(EtcdError::NotLeader.into()); // unknown address: wait for the directory
        };
        let timeout = deadline.saturating_duration_since(Instant::now());
        let endpoint = tonic::transport::Endpoint::from_shared(url)
            .map_err(|error| Status::internal(format!("concord: leader peer URL: {error}")))?
            .connect_timeout(Duration::from_secs(1))
            .timeout(timeout);
        let channel = endpoint.connect().await.map_err(|_| Status::from(EtcdError::NotLeader))?;
        let request = peerpb::MembershipChangeRequest { change: Some(change_to_wire(change)) };
        let response = peerpb::peer_client::PeerClient::new(channel).change_membership(request).await?.into_inner();
        Ok(ChangeOutcome {
            added: response.member.map(member_from_wire),
            members: response.members.into_iter().map(member_from_wire).collect(),
        })
    }

    /// Runs `change` on this member, which must be the leader; `NotLeader` otherwise.
    pub async fn change_here(&self, change: &MembershipChange, deadline: Instant) -> Result<ChangeOutcome, EtcdError> {
        let shared = &self.shared;
        loop {
            let status = *shared.status.borrow();
            if !status.is_leader {
                return Err(EtcdError::NotLeader);
            }
            // Validate against a directory that reflects the configuration in effect.
            let mut applied = shared.applied.clone();
            let caught_up = applied.wait_for(|&applied| applied >= status.membership_index);
            match tokio::time::timeout_at(deadline, caught_up).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Err(EtcdError::Stopped),
                Err(_) => return Err(EtcdError::Timeout),
            }
            let request_id = shared.next_request_id();
            let plan = plan(change, &shared.directory.snapshot(), &self.cluster_token, shared.member_id, request_id)?;
            let outcome = shared.waiters.register(request_id);
            let (reply, answer) = tokio::sync::oneshot::channel();
            let request = node::Request::ConfChange {
                change: plan.change,
                expected_membership_index: status.membership_index,
                check: plan.check,
                reply,
            };
            if shared.requests.send(request).await.is_err() {
                return Err(EtcdError::Stopped);
            }
            match answer.await {
                Ok(Ok(_index)) => {}
                Ok(Err(refusal)) => {
                    drop(outcome);
                    match refusal {
                        ConfChangeRefusal::Retry if Instant::now() < deadline => {
                            tokio::time::sleep(RETRY_PAUSE).await;
                            continue;
                        }
                        ConfChangeRefusal::Retry => return Err(EtcdError::Timeout),
                        ConfChangeRefusal::NotLeader => return Err(EtcdError::NotLeader),
                        ConfChangeRefusal::Failed(error) => return Err(error),
                    }
                }
                Err(_) => return Err(EtcdError::Stopped),
            }
            // Proposed: wait until it is applied here (a leader change may drop it).
            return match tokio::time::timeout_at(deadline, outcome).await {
                Ok(Ok(Ok(_))) => Ok(ChangeOutcome {
                    added: plan.added.map(|added| shared.directory.member(added.id).unwrap_or(added)),
                    members: shared.directory.members(),
                }),
                Ok(Ok(Err(error))) => Err(error),
                Ok(Err(_)) => Err(EtcdError::Stopped),
                Err(_) => Err(EtcdError::Timeout),
            };
        }
    }
}

/// Whether a refusal may go away by asking again (the leader moved).
/// A refusal that a retry at the (new) leader may overcome.
pub(crate) fn is_retryable(status: &Status) -> bool {
    let not_leader = Status::from(EtcdError::NotLeader);
    let no_leader = Status::from(EtcdError::NoLeader);
    (status.code(), status.message()) == (not_leader.code(), not_leader.message())
        || (status.code(), status.message()) == (no_leader.code(), no_leader.message())
}

/// A validated change, ready to propose.
struct Plan {
    change: ConfChange,
    check: QuorumCheck,
    /// The member MemberAdd creates, as its response describes it.
    added: Option<Member>,
}

/// etcd's rules for a membership change (`ValidateConfigurationChange` and the strict
/// reconfiguration checks on started members), against the directory `state`.
fn plan(
    change: &MembershipChange,
    state: &DirectoryState,
    token: &str,
    origin: NodeId,
    request_id: u64,
) -> Result<Plan, EtcdError> {
    let voters: Vec<&Member> = state.members.values().filter(|m| !m.is_learner).collect();
    let started_voters = voters.iter().filter(|m| m.is_started()).count();
    let context = |peer_urls: Vec<String>| ChangeContext { origin, request_id, peer_urls }.encode();
    match change {
        MembershipChange::Add { peer_urls, is_learner } => {
            let mut peer_urls = peer_urls.clone();
            peer_urls.sort();
            if state.peer_url_owner(&peer_urls, 0).is_some() {
                return Err(EtcdError::PeerUrlExists);
            }
            let id =
                new_member_id(&peer_urls, token, |id| state.members.contains_key(&id) || state.removed.contains(&id));
            let check = if *is_learner {
                let learners = state.members.values().filter(|m| m.is_learner).count();
                if learners + 1 > MAX_LEARNERS {
                    return Err(EtcdError::TooManyLearners);
                }
                QuorumCheck::None
            } else {
                // etcd's IsReadyToAddVotingMember: the started voters must still be a
                // quorum of the larger cluster. Unlike etcd, 1 of 2 is not allowed: concord's
                // core uses a configuration from the moment it is appended, so the entry
                // adding a second voter would need the new member's vote to commit, and the
                // new member learns its identity only once it is committed. A lone member
                // grows by adding a learner and promoting it.
                let members = voters.len() + 1;
                if started_voters < members / 2 + 1 {
                    return Err(EtcdError::NotEnoughStartedMembers);
                }
                QuorumCheck::AddVoter
            };
            let kind = if *is_learner { ConfChangeKind::AddLearner } else { ConfChangeKind::AddVoter };
            let added = Member {
                id,
                name: String::new(),
                peer_urls: peer_urls.clone(),
                client_urls: Vec::new(),
                is_learner: *is_learner,
            };
            Ok(Plan { change: ConfChange { kind, node: id, context: context(peer_urls) }, check, added: Some(added) })
        }
        MembershipChange::Remove(id) => {
            let member = state.members.get(id).ok_or(EtcdError::MemberNotFound)?;
            let check = if member.is_learner {
                QuorumCheck::None
            } else {
                // etcd's IsReadyToRemoveVotingMember: the started voters left must be a
                // quorum of the voters left.
                let remaining = voters.len() - 1;
                let started_remaining = started_voters - usize::from(member.is_started());
                if started_remaining < remaining / 2 + 1 {
                    return Err(EtcdError::NotEnoughStartedMembers);
                }
                QuorumCheck::RemoveVoter(*id)
            };
            let change = ConfChange { kind: ConfChangeKind::RemoveNode, node: *id, context: context(Vec::new()) };
            Ok(Plan { change, check, added: None })
        }
        MembershipChange::Promote(id) => {
            let member = state.members.get(id).ok_or(EtcdError::MemberNotFound)?;
            if !member.is_learner {
                return Err(EtcdError::MemberNotLearner);
            }
            // etcd's IsReadyToPromoteMember: the learner counts as started.
            let members = voters.len() + 1;
            if started_voters + 1 < members / 2 + 1 {
                return Err(EtcdError::NotEnoughStartedMembers);
            }
            let change = ConfChange { kind: ConfChangeKind::AddVoter, node: *id, context: context(Vec::new()) };
            Ok(Plan { change, check: QuorumCheck::None, added: None })
        }
    }
}

/// Checks peer URLs from a request: present, `http://host:port`, bounded.
fn checked_peer_urls(peer_urls: Vec<String>) -> Result<Vec<String>, EtcdError> {
    let valid = !peer_urls.is_empty()
        && peer_urls.len() <= MAX_PEER_URLS
        && peer_urls.iter().all(|url| url.len() <= MAX_URL_BYTES && !url.contains(',') && is_valid_url(url));
    if valid {
        Ok(peer_urls)
    } else {
        Err(EtcdError::MemberBadUrls)
    }
}

pub fn member_to_pb(member: &Member) -> pb::Member {
    pb::Member {
        id: member.id,
        name: member.name.clone(),
        peer_ur_ls: member.peer_urls.clone(),
        client_ur_ls: member.client_urls.clone(),
        is_learner: member.is_learner,
    }
}

pub fn member_to_wire(member: &Member) -> peerpb::MemberInfo {
    peerpb::MemberInfo {
        id: member.id,
        name: member.name.clone(),
        peer_urls: member.peer_urls.clone(),
        client_urls: member.client_urls.clone(),
        is_learner: member.is_learner,
    }
}

pub fn member_from_wire(member: peerpb::MemberInfo) -> Member {
    Member {
        id: member.id,
        name: member.name,
        peer_urls: member.peer_urls,
        client_urls: member.client_urls,
        is_learner: member.is_learner,
    }
}

fn change_to_wire(change: &MembershipChange) -> peerpb::membership_change_request::Change {
    use peerpb::membership_change_request::Change;
    match change {
        MembershipChange::Add { peer_urls, is_learner } => {
            Change::Add(peerpb::AddMember { peer_urls: peer_urls.clone(), is_learner: *is_learner })
        }
        MembershipChange::Remove(id) => Change::Remove(*id),
        MembershipChange::Promote(id) => Change::Promote(*id),
    }
}

/// A forwarded change as the leader receives it (peer URLs are checked again: the
/// sender is another member, but the leader trusts no input).
pub fn change_from_wire(change: peerpb::membership_change_request::Change) -> Result<MembershipChange, EtcdError> {
    use peerpb::membership_change_request::Change;
    Ok(match change {
        Change::Add(add) => {
            MembershipChange::Add { peer_urls: checked_peer_urls(add.peer_urls)?, is_learner: add.is_learner }
        }
        Change::Remove(id) => MembershipChange::Remove(id),
        Change::Promote(id) => MembershipChange::Promote(id),
    })
}

pub struct ClusterService {
    pub shared: Arc<Shared>,
    pub reconfigurer: Arc<Reconfigurer>,
}

impl ClusterService {
    /// etcd's Cluster responses carry no revision.
    fn header(&self) -> pb::ResponseHeader {
        self.shared.header(0)
    }
}

fn to_pb(members: &[Member]) -> Vec<pb::Member> {
    members.iter().map(member_to_pb).collect()
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<tonic::Response<pb::MemberAddResponse>, Status> {
        let request = request.into_inner();
        let peer_urls = checked_peer_urls(request.peer_ur_ls)?;
        let outcome =
            self.reconfigurer.change(MembershipChange::Add { peer_urls, is_learner: request.is_learner }).await?;
        Ok(tonic::Response::new(pb::MemberAddResponse {
            header: Some(self.header()),
            // As etcd: the new member's id, peer URLs and role (it has no name yet).
            member: outcome.added.map(|m| pb::Member {
                name: String::new(),
                client_ur_ls: Vec::new(),
                ..member_to_pb(&m)
            }),
            members: to_pb(&outcome.members),
        }))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<tonic::Response<pb::MemberRemoveResponse>, Status> {
        let outcome = self.reconfigurer.change(MembershipChange::Remove(request.into_inner().id)).await?;
        Ok(tonic::Response::new(pb::MemberRemoveResponse {
            header: Some(self.header()),
            members: to_pb(&outcome.members),
        }))
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<tonic::Response<pb::MemberUpdateResponse>, Status> {
        let request = request.into_inner();
        let mut peer_urls = checked_peer_urls(request.peer_ur_ls)?;
        peer_urls.sort();
        self.shared.update_member_peer_urls(request.id, &peer_urls).await?;
        Ok(tonic::Response::new(pb::MemberUpdateResponse {
            header: Some(self.header()),
            members: to_pb(&self.shared.directory.members()),
        }))
    }

    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<tonic::Response<pb::MemberListResponse>, Status> {
        if request.into_inner().linearizable {
            self.shared.read_barrier().await?;
        }
        Ok(tonic::Response::new(pb::MemberListResponse {
            header: Some(self.header()),
            members: to_pb(&self.shared.directory.members()),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<tonic::Response<pb::MemberPromoteResponse>, Status> {
        let outcome = self.reconfigurer.change(MembershipChange::Promote(request.into_inner().id)).await?;
        Ok(tonic::Response::new(pb::MemberPromoteResponse {
            header: Some(self.header()),
            members: to_pb(&outcome.members),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn state(members: &[(NodeId, bool, bool)]) -> DirectoryState {
        let members: BTreeMap<NodeId, Member> = members
            .iter()
            .map(|&(id, started, is_learner)| {
                let member = Member {
                    id,
                    name: if started { format!("m{id}") } else { String::new() },
                    peer_urls: vec![format!("http://m{id}:1")],
                    client_urls: Vec::new(),
                    is_learner,
                };
                (id, member)
            })
            .collect();
        DirectoryState { applied_index: 0, members, removed: [99].into() }
    }

    fn add(url: &str, is_learner: bool) -> MembershipChange {
        MembershipChange::Add { peer_urls: vec![url.into()], is_learner }
    }

    fn refusal(change: MembershipChange, state: &DirectoryState) -> EtcdError {
        plan(&change, state, "t", 1, 1).err().expect("refused")
    }

    #[test]
    fn changes_follow_etcds_rules() {
        let three = state(&[(1, true, false), (2, true, false), (3, true, false)]);
        assert_eq!(refusal(add("http://m2:1", true), &three), EtcdError::PeerUrlExists);
        assert_eq!(refusal(MembershipChange::Remove(99), &three), EtcdError::MemberNotFound, "removed ids");
        assert_eq!(refusal(MembershipChange::Remove(7), &three), EtcdError::MemberNotFound);
        assert_eq!(refusal(MembershipChange::Promote(2), &three), EtcdError::MemberNotLearner);
        assert_eq!(refusal(MembershipChange::Promote(7), &three), EtcdError::MemberNotFound);

        let planned = plan(&add("http://new:1", true), &three, "t", 1, 5).unwrap();
        assert_eq!(planned.change.kind, ConfChangeKind::AddLearner);
        assert_eq!(planned.check, QuorumCheck::None);
        let context = ChangeContext::decode(&planned.change.context).unwrap();
        assert_eq!((context.origin, context.request_id, context.peer_urls), (1, 5, vec!["http://new:1".into()]));

        let with_learner = state(&[(1, true, false), (2, true, false), (3, true, false), (4, false, true)]);
        assert_eq!(refusal(add("http://new:1", true), &with_learner), EtcdError::TooManyLearners);
        let promote = plan(&MembershipChange::Promote(4), &with_learner, "t", 1, 1).unwrap();
        assert_eq!(promote.change.kind, ConfChangeKind::AddVoter);

        let voter = plan(&add("http://new:1", false), &three, "t", 1, 1).unwrap();
        assert_eq!((voter.change.kind, voter.check), (ConfChangeKind::AddVoter, QuorumCheck::AddVoter));
        let remove = plan(&MembershipChange::Remove(2), &three, "t", 1, 1).unwrap();
        assert_eq!(remove.check, QuorumCheck::RemoveVoter(2));
    }

    #[test]
    fn unstarted_voters_block_changes_that_would_lose_a_started_quorum() {
        // 2 started of 4 voters: a 5th voter would need 3 started.
        let half = state(&[(1, true, false), (2, true, false), (3, false, false), (4, false, false)]);
        assert_eq!(refusal(add("http://new:1", false), &half), EtcdError::NotEnoughStartedMembers);
        // Removing a started voter leaves 1 started of 3.
        assert_eq!(refusal(MembershipChange::Remove(1), &half), EtcdError::NotEnoughStartedMembers);
        // Removing an unstarted one leaves 2 started of 3: fine.
        assert!(plan(&MembershipChange::Remove(3), &half, "t", 1, 1).is_ok());
        // A lone member may not add a voter (the change could never commit); it adds a
        // learner and promotes it.
        let lone = state(&[(1, true, false)]);
        assert_eq!(refusal(add("http://new:1", false), &lone), EtcdError::NotEnoughStartedMembers);
        assert!(plan(&add("http://new:1", true), &lone, "t", 1, 1).is_ok());
        let lone_with_learner = state(&[(1, true, false), (2, true, true)]);
        assert!(plan(&MembershipChange::Promote(2), &lone_with_learner, "t", 1, 1).is_ok());
    }

    #[test]
    fn peer_urls_are_checked() {
        assert_eq!(checked_peer_urls(vec![]), Err(EtcdError::MemberBadUrls));
        assert_eq!(checked_peer_urls(vec!["nope".into()]), Err(EtcdError::MemberBadUrls));
        assert_eq!(checked_peer_urls(vec!["https://a:1".into()]), Err(EtcdError::MemberBadUrls));
        assert_eq!(checked_peer_urls(vec!["http://a:1,http://b:1".into()]), Err(EtcdError::MemberBadUrls));
        assert!(checked_peer_urls(vec!["http://a:1".into()]).is_ok());
    }
}
