//! The member directory: every member of the cluster as etcd's Cluster API shows it (id,
//! name, peer and client URLs, learner or voter) and the ids of removed members.
//!
//! It is replicated state: it changes only when the apply task applies a committed entry
//! (a configuration change, a member publishing its name and client URLs, a peer-URL
//! update), so every member that applied the same log holds the same directory. The Raft
//! core has its own view of *who votes*, taken from its log at append time; the directory
//! adds what the core does not know (names and URLs) and is what MemberList, the transport
//! and the peer service read.
//!
//! It lives in the data directory as the JSON file `members`, rewritten (temporary file,
//! fsync, rename, directory fsync) on every change. Each change is durable before the
//! state machine commits the entry's index, so the file is never behind the state machine;
//! after a crash the WAL replays entries after the state machine's applied index, and the
//! directory skips those it already reflects (`applied_index`).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use concord_raft::{ConfChangeEntry, ConfChangeKind, Index, NodeId};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::errors::EtcdError;

/// One member, as etcd's `Member` message describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    /// Empty until the member has started and published it.
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
    pub is_learner: bool,
}

impl Member {
    /// etcd counts a member as started once it has published its name.
    pub fn is_started(&self) -> bool {
        !self.name.is_empty()
    }
}

/// What the file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryState {
    /// Index of the last entry this state reflects; entries at or below it are not applied
    /// again when the WAL is replayed.
    pub applied_index: Index,
    pub members: BTreeMap<NodeId, Member>,
    /// Members removed from the cluster. Their ids are never reused, and peers refuse
    /// their messages (so a removed member learns it was removed and stops).
    pub removed: BTreeSet<NodeId>,
}

impl DirectoryState {
    /// Members in id order.
    pub fn member_list(&self) -> Vec<Member> {
        self.members.values().cloned().collect()
    }

    /// The member already using one of `peer_urls`, other than `except`.
    pub fn peer_url_owner(&self, peer_urls: &[String], except: NodeId) -> Option<NodeId> {
        self.members
            .values()
            .find(|m| m.id != except && m.peer_urls.iter().any(|u| peer_urls.contains(u)))
            .map(|m| m.id)
    }
}

/// A handle on the directory; cheap to clone, shared by the apply task (the only writer),
/// the Raft task (for peer URLs) and the services.
#[derive(Clone)]
pub struct MemberDirectory {
    state: Arc<Mutex<DirectoryState>>,
    path: PathBuf,
    /// Counts changes, so the Raft task and the server notice them.
    changes: Arc<watch::Sender<u64>>,
}

impl MemberDirectory {
    /// Loads the directory from `path`, or creates it from `initial` (the bootstrap
    /// members, or those a joining member fetched from its peers) if there is no file.
    pub fn open(path: PathBuf, initial: impl FnOnce() -> Vec<Member>) -> io::Result<MemberDirectory> {
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| {
                io::Error::new(io::ErrorKind::InvalidData, format!("{}: unreadable: {error}", path.display()))
            })?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                let state = DirectoryState {
                    applied_index: 0,
                    members: initial().into_iter().map(|m| (m.id, m)).collect(),
                    removed: BTreeSet::new(),
                };
                write_durably(&path, &state)?;
                state
            }
            Err(error) => return Err(error),
        };
        let (changes, _) = watch::channel(0);
        Ok(MemberDirectory { state: Arc::new(Mutex::new(state)), path, changes: Arc::new(changes) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DirectoryState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A consistent copy of the whole directory.
    pub fn snapshot(&self) -> DirectoryState {
        self.lock().clone()
    }

    pub fn members(&self) -> Vec<Member> {
        self.lock().member_list()
    }

    pub fn member(&self, id: NodeId) -> Option<Member> {
        self.lock().members.get(&id).cloned()
    }

    pub fn is_removed(&self, id: NodeId) -> bool {
        self.lock().removed.contains(&id)
    }

    /// The URL the transport dials for each member (its first peer URL).
    pub fn peer_addresses(&self) -> BTreeMap<NodeId, String> {
        self.lock().members.values().filter_map(|m| m.peer_urls.first().map(|url| (m.id, url.clone()))).collect()
    }

    /// Resolves after the next change (or at once if one happened since the last look).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Applies a committed configuration change: adds the member with the peer URLs the
    /// proposer put in the context, promotes it, or removes it for good.
    pub fn apply_conf_change(&self, index: Index, entry: &ConfChangeEntry, peer_urls: &[String]) -> io::Result<()> {
        self.update(index, |state| {
            let id = entry.change.node;
            match entry.change.kind {
                ConfChangeKind::AddLearner | ConfChangeKind::AddVoter => {
                    let is_learner = entry.change.kind == ConfChangeKind::AddLearner;
                    let member = state.members.entry(id).or_insert_with(|| Member {
                        id,
                        name: String::new(),
                        peer_urls: Vec::new(),
                        client_urls: Vec::new(),
                        is_learner,
                    });
                    member.is_learner = is_learner;
                    // A promotion carries no URLs: the member keeps its own.
                    if !peer_urls.is_empty() {
                        member.peer_urls = peer_urls.to_vec();
                    }
                }
                ConfChangeKind::RemoveNode => {
                    state.members.remove(&id);
                    state.removed.insert(id);
                }
            }
            Ok(())
        })
        .map(|_| ())
    }

    /// A member published its name and client URLs (etcd's publish). Ignored for a member
    /// that is gone.
    pub fn apply_attributes(&self, index: Index, id: NodeId, name: &str, client_urls: &[String]) -> io::Result<()> {
        self.update(index, |state| {
            if let Some(member) = state.members.get_mut(&id) {
                member.name = name.to_string();
                member.client_urls = client_urls.to_vec();
            }
            Ok(())
        })
        .map(|_| ())
    }

    /// MemberUpdate: new peer URLs for a member. Refused (deterministically, on every
    /// member alike) for an unknown member or URLs another member uses.
    pub fn apply_peer_urls_update(
        &self,
        index: Index,
        id: NodeId,
        peer_urls: &[String],
    ) -> io::Result<Result<(), EtcdError>> {
        self.update(index, |state| {
            if !state.members.contains_key(&id) {
                return Err(EtcdError::MemberNotFound);
            }
            if state.peer_url_owner(peer_urls, id).is_some() {
                return Err(EtcdError::PeerUrlExists);
            }
            if let Some(member) = state.members.get_mut(&id) {
                member.peer_urls = peer_urls.to_vec();
            }
            Ok(())
        })
    }

    /// Runs `change` for the entry at `index` unless the directory already reflects it,
    /// and makes the result durable. A refusal still counts the entry as applied.
    fn update(
        &self,
        index: Index,
        change: impl FnOnce(&mut DirectoryState) -> Result<(), EtcdError>,
    ) -> io::Result<Result<(), EtcdError>> {
        let mut state = self.lock();
        if index <= state.applied_index {
            return Ok(Ok(()));
        }
        let mut next = state.clone();
        let outcome = change(&mut next);
        next.applied_index = index;
        write_durably(&self.path, &next)?;
        *state = next;
        drop(state);
        self.changes.send_modify(|count| *count += 1);
        Ok(outcome)
    }

    /// The directory as bytes, to travel with a snapshot of the state machine (it is part
    /// of the replicated state a member restored from a snapshot must have).
    pub fn export(&self) -> Vec<u8> {
        serde_json::to_vec(&*self.lock()).expect("the directory serializes")
    }

    /// Replaces the directory with one from [`MemberDirectory::export`] (installing a
    /// snapshot).
    pub fn install(&self, bytes: &[u8]) -> io::Result<()> {
        let next: DirectoryState =
            serde_json::from_slice(bytes).map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
        write_durably(&self.path, &next)?;
        *self.lock() = next;
        self.changes.send_modify(|count| *count += 1);
        Ok(())
    }
}

/// Temporary file, fsync, rename, directory fsync: the file is either the old or the new
/// version after a crash, never a torn one.
fn write_durably(path: &Path, state: &DirectoryState) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, bytes)?;
    std::fs::File::open(&temporary)?.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use concord_raft::{ConfChange, Membership};

    fn member(id: NodeId, name: &str, url: &str) -> Member {
        Member { id, name: name.into(), peer_urls: vec![url.into()], client_urls: vec![], is_learner: false }
    }

    fn change(kind: ConfChangeKind, node: NodeId) -> ConfChangeEntry {
        ConfChangeEntry {
            change: ConfChange { kind, node, context: Bytes::new() },
            membership: Membership::default(), // the directory does not read it
        }
    }

    #[test]
    fn changes_are_durable_and_replayed_entries_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("members");
        let directory = MemberDirectory::open(path.clone(), || vec![member(1, "a", "http://a:1")]).unwrap();
        let changes = directory.subscribe();
        directory.apply_conf_change(5, &change(ConfChangeKind::AddLearner, 2), &["http://b:1".into()]).unwrap();
        assert!(changes.has_changed().unwrap());
        directory.apply_attributes(6, 2, "b", &["http://b:2".into()]).unwrap();
        directory.apply_conf_change(7, &change(ConfChangeKind::AddVoter, 2), &[]).unwrap();
        let b = directory.member(2).unwrap();
        assert_eq!((b.name.as_str(), b.is_learner, b.peer_urls.clone()), ("b", false, vec!["http://b:1".into()]));

        // Reopened: the same state; an entry at or below the applied index changes nothing.
        let reopened = MemberDirectory::open(path, Vec::new).unwrap();
        assert_eq!(reopened.snapshot(), directory.snapshot());
        reopened.apply_conf_change(5, &change(ConfChangeKind::AddLearner, 2), &["http://b:1".into()]).unwrap();
        assert!(!reopened.member(2).unwrap().is_learner);

        reopened.apply_conf_change(8, &change(ConfChangeKind::RemoveNode, 2), &[]).unwrap();
        assert!(reopened.member(2).is_none());
        assert!(reopened.is_removed(2));
        assert_eq!(reopened.members().len(), 1);
    }

    #[test]
    fn peer_url_updates_refuse_unknown_members_and_taken_urls() {
        let dir = tempfile::tempdir().unwrap();
        let directory = MemberDirectory::open(dir.path().join("members"), || {
            vec![member(1, "a", "http://a:1"), member(2, "b", "http://b:1")]
        })
        .unwrap();
        assert_eq!(
            directory.apply_peer_urls_update(3, 9, &["http://c:1".into()]).unwrap(),
            Err(EtcdError::MemberNotFound)
        );
        assert_eq!(
            directory.apply_peer_urls_update(4, 2, &["http://a:1".into()]).unwrap(),
            Err(EtcdError::PeerUrlExists)
        );
        assert_eq!(directory.apply_peer_urls_update(5, 2, &["http://b:9".into()]).unwrap(), Ok(()));
        assert_eq!(directory.member(2).unwrap().peer_urls, vec!["http://b:9".to_string()]);
        assert_eq!(directory.snapshot().applied_index, 5);
    }

    #[test]
    fn export_and_install_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let one = MemberDirectory::open(dir.path().join("one"), || vec![member(1, "a", "http://a:1")]).unwrap();
        one.apply_conf_change(3, &change(ConfChangeKind::RemoveNode, 7), &[]).unwrap();
        let two = MemberDirectory::open(dir.path().join("two"), Vec::new).unwrap();
        two.install(&one.export()).unwrap();
        assert_eq!(two.snapshot(), one.snapshot());
        assert!(two.install(b"garbage").is_err());
    }
}
