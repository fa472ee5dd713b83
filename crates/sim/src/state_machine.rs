//! The replicated state machine of the simulated cluster: a plain ordered map.
//!
//! Apply is deterministic (a `BTreeMap`, no clocks), so every node that applies the same
//! entries holds the same map; the outcome of each write (notably whether a CAS took
//! effect) is decided here, at apply time, on the node that answers the client.

use std::collections::BTreeMap;

use concord_check::Outcome;

use crate::command::WriteOp;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvStore {
    map: BTreeMap<String, String>,
}

impl KvStore {
    pub fn get(&self, key: &str) -> Option<String> {
        self.map.get(key).cloned()
    }

    /// Applies one write and returns what its client is told.
    pub fn apply(&mut self, op: &WriteOp) -> Outcome {
        match op {
            WriteOp::Put { key, value } => {
                self.map.insert(key.clone(), value.clone());
                Outcome::Put
            }
            WriteOp::Delete { key } => {
                self.map.remove(key);
                Outcome::Delete
            }
            WriteOp::Cas { key, expected, new } => {
                if self.map.get(key) == expected.as_ref() {
                    self.map.insert(key.clone(), new.clone());
                    Outcome::Cas(true)
                } else {
                    Outcome::Cas(false)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_compares_with_the_current_value_or_absence() {
        let mut kv = KvStore::default();
        let cas = |expected: Option<&str>, new: &str| WriteOp::Cas {
            key: "k".into(),
            expected: expected.map(String::from),
            new: new.into(),
        };
        assert_eq!(kv.apply(&cas(Some("x"), "a")), Outcome::Cas(false));
        assert_eq!(kv.apply(&cas(None, "a")), Outcome::Cas(true));
        assert_eq!(kv.apply(&cas(None, "b")), Outcome::Cas(false));
        assert_eq!(kv.apply(&cas(Some("a"), "b")), Outcome::Cas(true));
        assert_eq!(kv.get("k").as_deref(), Some("b"));
        kv.apply(&WriteOp::Delete { key: "k".into() });
        assert_eq!(kv.get("k"), None);
    }
}
