//! Sets of operations, as bits, and their compact form for the search's memo.
//!
//! The search remembers every (set of linearized operations, value) it has visited. With
//! thousands of operations per key a plain bitset is hundreds of bytes, and the memo may
//! hold millions of entries. But the search linearizes operations roughly in invocation
//! order, so a visited set is almost always "every operation up to some point, and a few
//! beyond it": a run of all-ones words, a short ragged middle, then all-zero words. The
//! compact form keeps only the count of leading all-ones words and the ragged middle.

/// A fixed-capacity set of small integers.
#[derive(Clone, Debug)]
pub(crate) struct Bitset {
    words: Vec<u64>,
}

impl Bitset {
    pub(crate) fn with_capacity(bits: usize) -> Self {
        Self { words: vec![0; bits.div_ceil(64)] }
    }

    pub(crate) fn insert(&mut self, bit: usize) {
        self.words[bit / 64] |= 1 << (bit % 64);
    }

    pub(crate) fn remove(&mut self, bit: usize) {
        self.words[bit / 64] &= !(1 << (bit % 64));
    }

    /// The compact form; two bitsets of the same capacity have equal compact forms iff
    /// they are equal.
    pub(crate) fn compact(&self) -> CompactBitset {
        let leading_full = self.words.iter().take_while(|&&w| w == u64::MAX).count();
        let rest = &self.words[leading_full..];
        let significant = rest.iter().rposition(|&w| w != 0).map_or(0, |last| last + 1);
        CompactBitset { leading_full_words: leading_full as u32, middle: rest[..significant].into() }
    }
}

/// A [`Bitset`] without its leading all-ones and trailing all-zero words.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct CompactBitset {
    leading_full_words: u32,
    middle: Box<[u64]>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_and_remove_across_words() {
        let mut set = Bitset::with_capacity(130);
        set.insert(0);
        set.insert(129);
        assert_eq!(set.words, [1, 0, 0b10]);
        set.remove(129);
        assert_eq!(set.words, [1, 0, 0]);
    }

    #[test]
    fn compact_form_drops_full_and_empty_words_but_stays_faithful() {
        let mut set = Bitset::with_capacity(64 * 5);
        for bit in 0..(64 * 2 + 3) {
            set.insert(bit);
        }
        let compact = set.compact();
        assert_eq!(compact.leading_full_words, 2);
        assert_eq!(&*compact.middle, &[0b111]);

        let mut other = set.clone();
        other.insert(64 * 3);
        assert_ne!(other.compact(), compact);
        other.remove(64 * 3);
        assert_eq!(other.compact(), compact);
        assert_eq!(Bitset::with_capacity(10).compact(), Bitset::with_capacity(10).compact());
    }
}
