//! Property test: random sequences of append (with suffix replacement), hard state, sync,
//! snapshot, compaction, restart and crash, checked against a simple in-memory model after
//! every step. A crash loses exactly what was not synced; a restart loses nothing.

mod common;

use std::path::PathBuf;

use common::{entry, segment_files};
use concord_raft::{Entry, HardState, Index, LogStore, StorageError, Term};
use concord_wal::{SnapshotMeta, Wal, WalOptions};
use proptest::prelude::*;

/// The reference: a vector of entries after an offset.
#[derive(Clone, Debug, Default)]
struct Model {
    offset: Index,
    offset_term: Term,
    log: Vec<Entry>,
    hs: HardState,
    snapshot: Option<SnapshotMeta>,
}

impl Model {
    fn last(&self) -> Index {
        self.offset + self.log.len() as Index
    }

    fn term(&self, i: Index) -> Option<Term> {
        if i == self.offset {
            return Some(self.offset_term);
        }
        (i > self.offset).then(|| self.log.get((i - self.offset - 1) as usize).map(|e| e.term)).flatten()
    }

    fn append(&mut self, entries: &[Entry]) {
        self.log.truncate((entries[0].index - self.offset - 1) as usize);
        self.log.extend_from_slice(entries);
    }

    fn compact(&mut self, i: Index) {
        if i <= self.offset {
            return;
        }
        self.offset_term = self.term(i).unwrap();
        self.log.drain(..(i - self.offset) as usize);
        self.offset = i;
    }

    fn entries(&self, low: Index, high: Index, max: u64) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for e in &self.log[(low - self.offset - 1) as usize..(high - self.offset - 1) as usize] {
            bytes += e.size_bytes();
            if !out.is_empty() && bytes > max {
                break;
            }
            out.push(e.clone());
        }
        out
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Append `count` entries starting `back` entries before the end (replacing a suffix).
    Append {
        back: u8,
        count: u8,
        bump: bool,
        len: u16,
    },
    HardState {
        bump: bool,
        vote: u8,
        commit: u16,
    },
    Sync,
    /// Save a snapshot inside the log (`beyond == 0`; `conflict` gives it another term) or
    /// `beyond` entries past its end.
    Snapshot {
        pick: u16,
        beyond: u8,
        conflict: bool,
    },
    Compact {
        pick: u16,
    },
    Read {
        low: u16,
        span: u8,
        budget: u16,
    },
    Restart,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..6, 1u8..6, any::<bool>(), 0u16..300)
            .prop_map(|(back, count, bump, len)| Op::Append { back, count, bump, len }),
        3 => (any::<bool>(), 1u8..4, any::<u16>()).prop_map(|(bump, vote, commit)| Op::HardState { bump, vote, commit }),
        3 => Just(Op::Sync),
        1 => (any::<u16>(), prop_oneof![3 => Just(0u8), 1 => 1u8..5], any::<bool>())
            .prop_map(|(pick, beyond, conflict)| Op::Snapshot { pick, beyond, conflict }),
        2 => any::<u16>().prop_map(|pick| Op::Compact { pick }),
        2 => (any::<u16>(), 0u8..20, 0u16..2000).prop_map(|(low, span, budget)| Op::Read { low, span, budget }),
        1 => Just(Op::Restart),
        1 => Just(Op::Crash),
    ]
}

/// The test's side of a running log: the model, and what was durable at the last sync.
struct Harness {
    dir: PathBuf,
    opts: WalOptions,
    wal: Option<Wal>,
    model: Model,
    durable: Model,
    /// The last segment at the last sync: its path, its length, and its bytes up to the
    /// last non-zero one (the rest was zeros: preallocated space, or a record's last bytes).
    synced: (PathBuf, u64, Vec<u8>),
}

impl Harness {
    fn wal(&mut self) -> &mut Wal {
        self.wal.as_mut().unwrap()
    }

    fn mark_synced(&mut self) {
        let last = segment_files(&self.dir).pop().unwrap();
        let mut bytes = std::fs::read(&last).unwrap();
        let len = bytes.len() as u64;
        bytes.truncate(bytes.iter().rposition(|&b| b != 0).map_or(0, |at| at + 1));
        self.synced = (last, len, bytes);
        self.durable = self.model.clone();
    }

    fn reopen(&mut self) {
        self.wal = None;
        let wal = Wal::open(&self.dir, self.opts.clone()).unwrap_or_else(|e| panic!("reopen: {e}"));
        assert_eq!(wal.initial_hard_state(), self.model.hs);
        self.wal = Some(wal);
        self.mark_synced(); // open fsyncs what it recovered
    }

    fn run(&mut self, op: &Op) {
        let m = self.model.clone();
        match *op {
            Op::Append { back, count, bump, len } => {
                let committed = m.hs.commit.max(m.snapshot.map_or(0, |s| s.index));
                let first = (m.offset + 1).max(committed + 1).max((m.last() + 1).saturating_sub(back as u64));
                let term = m.term(first - 1).unwrap() + bump as u64;
                let es: Vec<Entry> = (first..first + count as u64)
                    .map(|i| entry(i, term, (len as usize + i as usize * 7) % 300))
                    .collect();
                self.wal().append(&es).unwrap();
                self.model.append(&es);
            }
            Op::HardState { bump, vote, commit } => {
                let term = m.hs.term + bump as u64;
                let vote = if bump || m.hs.vote == 0 { vote as u64 } else { m.hs.vote };
                let commit = m.hs.commit + commit as u64 % (m.last() - m.hs.commit + 1);
                let hs = HardState { term, vote, commit };
                self.wal().set_hard_state(hs).unwrap();
                self.model.hs = hs;
            }
            Op::Sync => {
                assert_eq!(self.wal().sync().unwrap(), m.last());
                self.mark_synced();
            }
            Op::Snapshot { pick, beyond, conflict } => {
                let floor = m.offset.max(m.snapshot.map_or(0, |s| s.index));
                let meta = if beyond > 0 {
                    let term = m.term(m.last()).unwrap().max(m.hs.term) + 1;
                    SnapshotMeta { index: m.last() + beyond as u64, term }
                } else if m.last() > floor {
                    let index = floor + 1 + pick as u64 % (m.last() - floor);
                    let term = m.term(index).unwrap();
                    let conflict = conflict && index >= m.hs.commit;
                    SnapshotMeta { index, term: term + conflict as u64 }
                } else {
                    return;
                };
                self.wal().save_snapshot(meta, format!("state {}", meta.index).as_bytes()).unwrap();
                if self.model.term(meta.index) != Some(meta.term) {
                    self.model.log.clear();
                    self.model.offset = meta.index;
                    self.model.offset_term = meta.term;
                }
                self.model.snapshot = Some(meta);
                self.mark_synced();
            }
            Op::Compact { pick } => {
                let Some(snap) = m.snapshot else { return };
                let top = snap.index.min(m.last());
                if top < m.offset {
                    return;
                }
                let index = m.offset + pick as u64 % (top - m.offset + 1);
                self.wal().compact(index).unwrap();
                self.model.compact(index);
                if index > m.offset {
                    self.mark_synced(); // compaction syncs, unless there was nothing to do
                }
            }
            Op::Read { low, span, budget } => {
                if m.last() <= m.offset {
                    return;
                }
                let low = m.offset + 1 + low as u64 % (m.last() - m.offset);
                let high = (low + span as u64).min(m.last() + 1);
                let got = self.wal().entries(low, high, budget as u64).unwrap();
                assert_eq!(got, m.entries(low, high, budget as u64));
            }
            Op::Restart => self.reopen(),
            Op::Crash => {
                self.wal = None;
                let last = segment_files(&self.dir).pop().unwrap();
                if last == self.synced.0 {
                    // Lose everything after the last sync: the file is put back as it was
                    // then (a growing file is cut back; a preallocated one reads zeros again
                    // where the lost writes were).
                    let (_, len, bytes) = &self.synced;
                    let mut image = bytes.clone();
                    image.resize(*len as usize, 0);
                    std::fs::write(&last, &image).unwrap();
                    self.model = self.durable.clone();
                }
                // Otherwise a segment rolled over since the sync (which synced the old one);
                // the crash then loses nothing more than a restart would.
                self.reopen();
            }
        }
    }

    fn check(&self) {
        let wal = self.wal.as_ref().unwrap();
        let m = &self.model;
        assert_eq!((wal.first_index(), wal.last_index()), (m.offset + 1, m.last()));
        assert_eq!(wal.hard_state(), m.hs);
        assert_eq!(wal.snapshot_meta(), m.snapshot);
        assert_eq!(wal.term(m.offset), Ok(m.offset_term));
        if m.offset > 0 {
            assert_eq!(wal.term(m.offset - 1), Err(StorageError::Compacted(m.offset - 1)));
        }
        assert_eq!(wal.term(m.last() + 1), Err(StorageError::Unavailable(m.last() + 1)));
        for i in m.offset + 1..=m.last() {
            assert_eq!(wal.term(i), Ok(m.term(i).unwrap()), "term of {i}");
        }
        if m.last() > m.offset {
            assert_eq!(wal.entries(m.offset + 1, m.last() + 1, u64::MAX).unwrap(), m.log);
        }
        assert!(wal.durable_index() <= m.last());
    }
}

fn run_case(segment_bytes: u64, cache_bytes: u64, preallocate: bool, ops: &[Op]) {
    let tmp = tempfile::tempdir().unwrap();
    let opts = common::no_fsync(WalOptions { segment_bytes, cache_bytes, preallocate, ..WalOptions::default() });
    let mut h = Harness {
        dir: tmp.path().to_path_buf(),
        opts,
        wal: None,
        model: Model::default(),
        durable: Model::default(),
        synced: (PathBuf::new(), 0, Vec::new()),
    };
    h.reopen();
    for op in ops {
        h.run(op);
        h.check();
    }
    // Finally: a clean restart yields the model exactly.
    h.run(&Op::Restart);
    h.check();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn wal_matches_the_model(
        segment_bytes in prop_oneof![Just(256u64), Just(1024u64), Just(1u64 << 20)],
        cache_bytes in prop_oneof![Just(0u64), Just(2000u64), Just(1u64 << 20)],
        preallocate in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..100),
    ) {
        run_case(segment_bytes, cache_bytes, preallocate, &ops);
    }
}
