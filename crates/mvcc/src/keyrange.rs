//! What a `(key, range_end)` pair means, in one place.
//!
//! etcd encodes three shapes in two byte strings: an empty `range_end` is the single key,
//! `range_end == "\0"` is every key `>= key`, anything else is `[key, range_end)`. Range,
//! DeleteRange, Compare and watch all share this, so it is decoded once into [`KeyBounds`].

use std::ops::Bound;

/// The decoded form of `(key, range_end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyBounds<'a> {
    /// Just `key`.
    Single(&'a [u8]),
    /// `[start, end)`; `end == None` means no upper bound.
    Span { start: &'a [u8], end: Option<&'a [u8]> },
}

impl<'a> KeyBounds<'a> {
    pub(crate) fn new(key: &'a [u8], range_end: &'a [u8]) -> KeyBounds<'a> {
        match range_end {
            [] => KeyBounds::Single(key),
            [0] => KeyBounds::Span { start: key, end: None },
            end => KeyBounds::Span { start: key, end: Some(end) },
        }
    }

    /// True when no key can be in the bounds (`range_end <= key`).
    pub(crate) fn is_empty(&self) -> bool {
        match *self {
            KeyBounds::Single(_) => false,
            KeyBounds::Span { start, end } => end.is_some_and(|e| e <= start),
        }
    }

    /// The bounds as a `RangeBounds` over plain keys (for `Single`, `[key, key]`).
    pub(crate) fn as_bounds(&self) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
        match *self {
            KeyBounds::Single(k) => (Bound::Included(k), Bound::Included(k)),
            KeyBounds::Span { start, end } => (Bound::Included(start), end.map_or(Bound::Unbounded, Bound::Excluded)),
        }
    }
}

/// The `range_end` that selects every key starting with `prefix` (etcd's
/// `GetPrefixRangeEnd`): the prefix with its last non-0xff byte incremented and the tail
/// dropped; `"\0"` (all keys) when the prefix is empty or all 0xff.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use std::ops::RangeBounds;

    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(KeyBounds::new(b"a", b""), KeyBounds::Single(b"a"));
        let contains = |bounds: KeyBounds<'_>, k: &[u8]| bounds.as_bounds().contains(&k);
        assert!(contains(KeyBounds::new(b"a", b"\0"), b"zzz"));
        assert!(!contains(KeyBounds::new(b"b", b"\0"), b"a"));
        let r = KeyBounds::new(b"a", b"c");
        assert!(contains(r, b"a") && contains(r, b"bzz") && !contains(r, b"c"));
        assert!(contains(KeyBounds::new(b"a", b""), b"a") && !contains(KeyBounds::new(b"a", b""), b"ab"));
        assert!(KeyBounds::new(b"c", b"a").is_empty());
        assert!(KeyBounds::new(b"c", b"c").is_empty());
        assert!(!KeyBounds::new(b"c", b"\0").is_empty());
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"aa"), b"ab");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_end(b""), b"\0");
    }
}
