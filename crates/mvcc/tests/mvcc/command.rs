//! Command encoding: round trips, version byte, malformed input.

use concord_mvcc::*;

fn samples() -> Vec<Command> {
    vec![
        Command::Noop,
        Command::Put(PutRequest {
            key: vec![0, 255],
            value: b"v".to_vec(),
            lease: -3,
            prev_kv: true,
            ignore_value: false,
            ignore_lease: true,
        }),
        Command::DeleteRange(DeleteRangeRequest { key: b"a".to_vec(), range_end: b"\0".to_vec(), prev_kv: true }),
        Command::Txn(TxnRequest {
            compare: vec![
                Compare::value("k", CompareResult::NotEqual, "x").with_range_end("l"),
                Compare { target_union: None, ..Compare::default() },
            ],
            success: vec![
                RequestOp::Range(RangeRequest {
                    key: b"a".to_vec(),
                    limit: 10,
                    revision: 4,
                    sort_order: SortOrder::Descend,
                    sort_target: SortTarget::Mod,
                    min_create_revision: 2,
                    ..RangeRequest::default()
                }),
                RequestOp::Txn(TxnRequest::default()),
            ],
            failure: vec![RequestOp::DeleteRange(DeleteRangeRequest::default())],
        }),
        Command::Compact(CompactionRequest { revision: i64::MAX, physical: true }),
        Command::LeaseGrant(LeaseGrantRequest { id: 1 << 62, ttl: 60 }),
        Command::LeaseRevoke(LeaseRevokeRequest { id: -1 }),
    ]
}

#[test]
fn round_trip() {
    for c in samples() {
        let bytes = c.encode();
        assert_eq!(bytes[0], COMMAND_FORMAT_VERSION);
        assert_eq!(Command::decode(&bytes).unwrap(), c);
    }
}

#[test]
fn encoding_is_stable() {
    // The log outlives builds: the bytes of a command must not drift silently.
    assert_eq!(Command::Noop.encode(), vec![1, 0]);
    assert_eq!(
        Command::Put(PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..PutRequest::default() }).encode(),
        vec![1, 1, 1, b'k', 1, b'v', 0, 0, 0, 0]
    );
}

#[test]
fn malformed_input() {
    assert!(matches!(Command::decode(&[]), Err(MvccError::Decode(_))));
    let e = Command::decode(&[2, 0]).unwrap_err();
    assert_eq!(e, MvccError::UnknownFormat(2));
    assert!(e.to_string().contains("unknown command format version 2"));
    assert!(matches!(Command::decode(&[1]), Err(MvccError::Decode(_))));
    assert!(matches!(Command::decode(&[1, 99]), Err(MvccError::Decode(_))));
    let mut bytes = Command::Noop.encode();
    bytes.push(0);
    assert!(matches!(Command::decode(&bytes), Err(MvccError::Decode(_))));
    // Truncations of a real command never decode into something else silently.
    let full = samples()[3].encode();
    for n in 1..full.len() {
        assert!(Command::decode(&full[..n]).is_err(), "prefix {n}");
    }
}
