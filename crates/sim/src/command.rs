//! The payload of a log entry: what a client asked the replicated state machine to do.
//!
//! A plain text encoding (`w <client> <request> put <key> <value>`, ...) keeps traces and
//! failing logs readable. Every command carries the client and request id, so two
//! proposals are never byte-equal: a client recognises its own entry by comparing bytes,
//! which is how it tells its write from another leader's entry at the same index.

use bytes::Bytes;
use concord_check::Op;

/// A write that goes through the log. Reads never do (they use ReadIndex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    Put {
        key: String,
        value: String,
    },
    Delete {
        key: String,
    },
    /// Set `key` to `new` if it currently holds `expected` (`None`: if it is absent).
    Cas {
        key: String,
        expected: Option<String>,
        new: String,
    },
}

impl WriteOp {
    /// The same request as the checker's vocabulary.
    pub fn to_check_op(&self) -> Op {
        match self.clone() {
            WriteOp::Put { key, value } => Op::Put { key, value },
            WriteOp::Delete { key } => Op::Delete { key },
            WriteOp::Cas { key, expected, new } => Op::Cas { key, expected, new },
        }
    }
}

/// Everything an entry of the simulated cluster can carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// A client's write.
    Client { client: u64, request: u64, op: WriteOp },
    /// The liveness check's proposal: changes nothing, only has to commit.
    Probe { attempt: u64 },
}

/// Stands for "absent" in the encoding of a CAS expectation. Values never equal it.
const ABSENT: &str = "-";

impl Command {
    pub fn encode(&self) -> Bytes {
        let text = match self {
            Command::Client { client, request, op } => match op {
                WriteOp::Put { key, value } => format!("w {client} {request} put {key} {value}"),
                WriteOp::Delete { key } => format!("w {client} {request} del {key}"),
                WriteOp::Cas { key, expected, new } => {
                    format!("w {client} {request} cas {key} {} {new}", expected.as_deref().unwrap_or(ABSENT))
                }
            },
            Command::Probe { attempt } => format!("p {attempt}"),
        };
        Bytes::from(text)
    }

    /// Decodes an entry payload; `None` for an empty entry (a new leader's no-op) or
    /// anything this simulator did not write.
    pub fn decode(data: &[u8]) -> Option<Command> {
        let text = std::str::from_utf8(data).ok()?;
        let words: Vec<&str> = text.split(' ').collect();
        match words.as_slice() {
            ["p", attempt] => Some(Command::Probe { attempt: attempt.parse().ok()? }),
            ["w", client, request, rest @ ..] => {
                let op = match rest {
                    ["put", key, value] => WriteOp::Put { key: key.to_string(), value: value.to_string() },
                    ["del", key] => WriteOp::Delete { key: key.to_string() },
                    ["cas", key, expected, new] => WriteOp::Cas {
                        key: key.to_string(),
                        expected: (*expected != ABSENT).then(|| expected.to_string()),
                        new: new.to_string(),
                    },
                    _ => return None,
                };
                Some(Command::Client { client: client.parse().ok()?, request: request.parse().ok()?, op })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip() {
        let commands = [
            Command::Client { client: 3, request: 17, op: WriteOp::Put { key: "k1".into(), value: "c3-17".into() } },
            Command::Client { client: 1, request: 2, op: WriteOp::Delete { key: "k0".into() } },
            Command::Client {
                client: 1,
                request: 3,
                op: WriteOp::Cas { key: "k2".into(), expected: None, new: "c1-3".into() },
            },
            Command::Client {
                client: 1,
                request: 4,
                op: WriteOp::Cas { key: "k2".into(), expected: Some("c1-3".into()), new: "c1-4".into() },
            },
            Command::Probe { attempt: 9 },
        ];
        for command in commands {
            assert_eq!(Command::decode(&command.encode()), Some(command));
        }
        assert_eq!(Command::decode(b""), None);
        assert_eq!(Command::decode(b"w 1 2 frob k"), None);
    }
}
