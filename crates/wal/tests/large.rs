//! Large logs: write and recover 1 GiB. Ignored by default (it takes tens of seconds and a
//! GiB of disk); run with `cargo test -p concord-wal --release --test large -- --ignored`.

use std::time::Instant;

use bytes::Bytes;
use concord_raft::{Entry, EntryKind, LogStore};
use concord_wal::{Wal, WalOptions};

#[test]
#[ignore = "writes 1 GiB; run explicitly"]
fn recover_one_gib_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = |i: u64| Bytes::from(vec![(i % 251) as u8; 1024]);
    let total = (1u64 << 30) / (16 + 17 + 1024);
    let mut wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    let mut index = 0;
    while index < total {
        let batch: Vec<Entry> = (index + 1..=(index + 256).min(total))
            .map(|i| Entry { index: i, term: 1 + i / 100_000, kind: EntryKind::Normal, data: data(i) })
            .collect();
        index += batch.len() as u64;
        wal.append(&batch).unwrap();
    }
    assert_eq!(wal.sync().unwrap(), total);
    drop(wal);

    let start = Instant::now();
    let wal = Wal::open(dir.path(), WalOptions::default()).unwrap();
    eprintln!("recovered {total} entries (1 GiB) in {:.2?}", start.elapsed());
    assert_eq!((wal.first_index(), wal.last_index()), (1, total));
    for i in [1, total / 3, total / 2, total] {
        let e = wal.entries(i, i + 1, 0).unwrap();
        assert_eq!((e[0].index, e[0].term, &e[0].data), (i, 1 + i / 100_000, &data(i)));
    }
    assert_eq!(wal.term(total), Ok(1 + total / 100_000));
}
