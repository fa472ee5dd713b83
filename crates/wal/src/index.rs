//! The in-memory index of the log: for every held entry, its term and where its record is.
//!
//! Terms are kept here so that `term(i)` never touches the disk (the core asks for terms on
//! every append it receives), and locations so that reading an old entry is one positioned
//! read. Recovery builds this index by replaying the records; the live log updates it as it
//! writes, with the same operations, so the two cannot drift apart.

use std::collections::VecDeque;

use concord_raft::{Index, Term};

/// Where one entry's record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    pub term: Term,
    /// Sequence number of the segment holding the record.
    pub seq: u64,
    /// Byte offset of the record header in that segment.
    pub offset: u64,
    /// Payload length of the record.
    pub len: u32,
}

/// Entries `offset+1 ..= offset+locs.len()`, and the term at `offset`.
#[derive(Clone, Debug, Default)]
pub struct LogIndex {
    offset: Index,
    offset_term: Term,
    locs: VecDeque<Loc>,
}

impl LogIndex {
    /// An empty log whose last compacted (or last preceding) entry is `(index, term)`.
    pub fn empty_at(index: Index, term: Term) -> LogIndex {
        LogIndex { offset: index, offset_term: term, locs: VecDeque::new() }
    }

    /// Index before the first held entry.
    pub fn offset(&self) -> Index {
        self.offset
    }

    pub fn offset_term(&self) -> Term {
        self.offset_term
    }

    pub fn first_index(&self) -> Index {
        self.offset + 1
    }

    pub fn last_index(&self) -> Index {
        self.offset + self.locs.len() as Index
    }

    pub fn last_term(&self) -> Term {
        self.locs.back().map_or(self.offset_term, |l| l.term)
    }

    /// The term at `index`, for `offset <= index <= last_index`.
    pub fn term(&self, index: Index) -> Option<Term> {
        if index == self.offset {
            return Some(self.offset_term);
        }
        self.loc(index).map(|l| l.term)
    }

    /// The location of a held entry.
    pub fn loc(&self, index: Index) -> Option<&Loc> {
        if index <= self.offset {
            return None;
        }
        self.locs.get((index - self.offset - 1) as usize)
    }

    /// Adds the entry after the last one.
    pub fn push(&mut self, index: Index, loc: Loc) {
        assert_eq!(index, self.last_index() + 1, "log index must grow by one");
        assert!(loc.term >= self.last_term(), "terms in the log never go down");
        self.locs.push_back(loc);
    }

    /// Drops every entry with index >= `from`.
    pub fn truncate_from(&mut self, from: Index) {
        assert!(from > self.offset, "cannot truncate at {from}: compacted up to {}", self.offset);
        let keep = (from - self.offset - 1) as usize;
        self.locs.truncate(keep);
    }

    /// Drops every entry with index <= `index`, which must be held (or be the offset).
    pub fn compact_to(&mut self, index: Index) {
        assert!(
            index >= self.offset && index <= self.last_index(),
            "compaction to {index} outside {}..={}",
            self.offset,
            self.last_index()
        );
        let term = self.term(index).expect("held");
        self.locs.drain(..(index - self.offset) as usize);
        self.offset = index;
        self.offset_term = term;
    }

    /// Forgets every entry: the log becomes empty after `(index, term)`.
    pub fn reset_to(&mut self, index: Index, term: Term) {
        *self = LogIndex::empty_at(index, term);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(term: Term) -> Loc {
        Loc { term, seq: 0, offset: 0, len: 0 }
    }

    #[test]
    fn push_truncate_compact() {
        let mut ix = LogIndex::empty_at(0, 0);
        for i in 1..=5 {
            ix.push(i, loc(i / 2));
        }
        assert_eq!((ix.first_index(), ix.last_index(), ix.term(4)), (1, 5, Some(2)));
        ix.truncate_from(4);
        assert_eq!(ix.last_index(), 3);
        ix.compact_to(2);
        assert_eq!((ix.offset(), ix.offset_term(), ix.term(1), ix.term(3)), (2, 1, None, Some(1)));
        ix.compact_to(3);
        assert_eq!((ix.first_index(), ix.last_index()), (4, 3));
    }

    #[test]
    #[should_panic(expected = "grow by one")]
    fn gaps_are_refused() {
        let mut ix = LogIndex::empty_at(0, 0);
        ix.push(2, loc(1));
    }
}
