//! The set of keys a watcher or a waiter covers, in etcd's `key`/`range_end` encoding
//! decoded once: the Watch service and the lock and election waits match events by it.

use concord_mvcc::prefix_end;

/// etcd's `mvcc.ErrEmptyWatcherRange` text.
const EMPTY_RANGE: &str = "mvcc: watcher range is empty";

/// The keys a watcher covers (etcd's `key`/`range_end` encoding, decoded once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keys {
    Single(Vec<u8>),
    /// Every key `>=` this one.
    From(Vec<u8>),
    /// `[start, end)`.
    Span(Vec<u8>, Vec<u8>),
}

impl Keys {
    /// As etcd's watch server: an empty key is `"\0"` (the smallest key), an empty
    /// `range_end` one key, `"\0"` every key from `key` on; `key >= range_end` is refused.
    pub fn decode(key: Vec<u8>, range_end: Vec<u8>) -> Result<Keys, &'static str> {
        let key = if key.is_empty() { vec![0] } else { key };
        match range_end.as_slice() {
            [] => Ok(Keys::Single(key)),
            [0] => Ok(Keys::From(key)),
            end if key.as_slice() >= end => Err(EMPTY_RANGE),
            _ => Ok(Keys::Span(key, range_end)),
        }
    }

    pub fn contains(&self, k: &[u8]) -> bool {
        match self {
            Keys::Single(key) => key == k,
            Keys::From(start) => start.as_slice() <= k,
            Keys::Span(start, end) => start.as_slice() <= k && k < end.as_slice(),
        }
    }

    /// Every key that starts with `prefix` (etcd's `WithPrefix`).
    pub fn prefix(prefix: &[u8]) -> Keys {
        match prefix_end(prefix).as_slice() {
            [0] => Keys::From(prefix.to_vec()),
            end => Keys::Span(prefix.to_vec(), end.to_vec()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_decode_as_etcd() {
        assert_eq!(Keys::decode(vec![], vec![]), Ok(Keys::Single(vec![0])));
        assert_eq!(Keys::decode(vec![], vec![0]), Ok(Keys::From(vec![0])));
        assert_eq!(Keys::decode(b"b".to_vec(), b"a".to_vec()), Err(EMPTY_RANGE));
        assert_eq!(Keys::decode(b"b".to_vec(), b"b".to_vec()), Err(EMPTY_RANGE));
        let span = Keys::decode(b"a".to_vec(), b"c".to_vec()).expect("a span");
        assert!(span.contains(b"a") && span.contains(b"bz") && !span.contains(b"c"));
        assert!(Keys::From(b"b".to_vec()).contains(b"zz") && !Keys::From(b"b".to_vec()).contains(b"a"));
    }

    #[test]
    fn a_prefix_covers_its_keys_only() {
        let keys = Keys::prefix(b"lock/");
        assert!(
            keys.contains(b"lock/") && keys.contains(b"lock/7f") && !keys.contains(b"lock0") && !keys.contains(b"lock")
        );
        let all = Keys::prefix(&[0xff]);
        assert!(all.contains(&[0xff, 0]) && !all.contains(&[0xfe]));
    }
}
