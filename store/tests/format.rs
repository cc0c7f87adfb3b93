//! Store format upgrades: a committed store of format 1 (written before records carried their
//! format byte; see `examples/format1_fixture.rs`) opens, is rewritten to the current format
//! once, and reads, searches and history work; a store of a newer format is refused.

use std::path::{Path, PathBuf};

use store::{STORE_FORMAT, Store, StoreOptions};

fn opts() -> StoreOptions {
    StoreOptions {
        dimensions: 4,
        ..Default::default()
    }
}

fn copy_fixture(to: &Path) {
    let from = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-1/data.mdb");
    std::fs::copy(&from, to.join("data.mdb")).expect("the committed format-1 fixture");
}

#[test]
fn a_format_1_store_is_upgraded_on_open_and_reads_as_before() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture(dir.path());
    for round in 0..2 {
        let s = Store::open(dir.path(), opts()).expect("the old store opens");
        assert_eq!(s.format_version().unwrap(), STORE_FORMAT, "round {round}");
        let txn = s.read_txn().unwrap();
        let r = s.get(&txn, "fixture-0").unwrap().expect("fixture-0");
        assert_eq!(r.memory, "Ann's cat is called Miso; she is twelve.");
        assert_eq!(r.version, 2);
        let old = s.versions(&txn, "fixture-0").unwrap();
        assert_eq!(old.len(), 1);
        assert_eq!(old[0].memory, "Ann's cat is called Miso.");
        assert_eq!(s.get(&txn, "fixture-2").unwrap().unwrap().user_id, "ben");
        // Vector and lexical search over the upgraded records.
        let all = s
            .candidates(&txn, "fixture", None, &store::Filter::True)
            .unwrap();
        assert_eq!(all.len(), 3);
        let near = s
            .vector_search_in(&txn, "fixture", &[0.0, 1.0, 0.0, 0.0], 1, &all)
            .unwrap();
        assert_eq!(s.record(&txn, near[0].0).unwrap().unwrap().id, "fixture-1");
        let lex = s.bm25_search(&txn, "fixture", "oboe", 3, &all).unwrap();
        assert_eq!(s.record(&txn, lex[0].0).unwrap().unwrap().id, "fixture-2");
        drop(txn);
        // Writes after the upgrade use the current format.
        let mut w = s.write_txn().unwrap();
        let mut r = s.get(&w, "fixture-1").unwrap().unwrap();
        r.memory = format!("Ann cycles to work in Ghent (round {round}).");
        s.update(&mut w, &r, None, "update", None).unwrap();
        s.commit(w).unwrap();
    }
}

#[test]
fn a_store_of_a_newer_format_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), opts()).unwrap());
    {
        // SAFETY: the store above is closed; nothing else has this directory open.
        let env = unsafe {
            store::heed::EnvOpenOptions::new()
                .max_dbs(32)
                .open(dir.path())
                .unwrap()
        };
        let wtxn = env.write_txn().unwrap();
        let meta: store::heed::Database<
            'static,
            store::heed::types::Str,
            store::heed::types::Bytes,
        > = env
            .create_databases_and_commit(wtxn, |dbo, wtxn| -> Result<_, store::heed::Error> {
                Ok(store::heed::CommitOrAbort::<_, ()>::Commit(
                    dbo.create_database(wtxn, Some("meta"))?,
                ))
            })
            .unwrap()
            .unwrap_commit();
        let mut w = env.write_txn().unwrap();
        meta.put(&mut w, "format_version", &(STORE_FORMAT + 1).to_le_bytes())
            .unwrap();
        w.commit().unwrap();
    }
    let Err(e) = Store::open(dir.path(), opts()) else {
        panic!("a store of a newer format opened")
    };
    let msg = e.to_string();
    assert!(msg.contains("upgrade memos"), "{msg}");
    assert!(
        msg.contains(&format!("format {}", STORE_FORMAT + 1)),
        "{msg}"
    );
}

fn filler(i: usize) -> store::MemoryRecord {
    store::MemoryRecord {
        id: format!("fill-{i}"),
        memory: format!("filler memory {i} {}", "lorem ipsum dolor ".repeat(40)),
        cube_id: "full".into(),
        user_id: "u".into(),
        session_id: "s".into(),
        agent_id: None,
        app_id: None,
        memory_type: store::MemoryType::LongTermMemory,
        status: store::Status::Activated,
        key: None,
        tags: vec![],
        info: serde_json::Map::new(),
        source: None,
        sources: vec![],
        confidence: 1.0,
        created_at: 1_700_000_000_000_000,
        updated_at: 1_700_000_000_000_000,
        event_time: None,
        version: 1,
        history: vec![],
        event_id: format!("e{i}"),
        file_ids: vec![],
        embedding: vec![],
    }
}

/// At the configured size, adding fails with a clear error and nothing else does: reads and
/// deletes work, and once deletes free room, adding works again.
#[test]
fn a_full_store_refuses_adds_but_reads_and_deletes_work() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(
        dir.path(),
        StoreOptions {
            dimensions: 4,
            map_size: 1 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    let mut added = 0;
    let err = loop {
        let mut w = s.write_txn().unwrap();
        match s.insert(&mut w, &filler(added), &[1.0, 0.5, 0.0, 0.0]) {
            Ok(_) => {
                s.commit(w).unwrap();
                added += 1;
            }
            Err(e) => break e,
        }
        assert!(added < 100_000, "the store never filled");
    };
    assert!(matches!(err, store::StoreError::Full(_)), "{err}");
    assert!(
        err.is_transient(),
        "a full store is the environment, not the event"
    );
    assert!(err.to_string().contains("map_size_mb"), "{err}");
    assert!(added > 100, "only {added} memories fit in 1 MiB");
    // Reads work.
    let txn = s.read_txn().unwrap();
    assert!(s.get(&txn, "fill-0").unwrap().is_some());
    let all = s
        .candidates(&txn, "full", None, &store::Filter::True)
        .unwrap();
    assert_eq!(all.len() as usize, added);
    drop(txn);
    // Deletes work, and free room for adds again.
    let ids: Vec<String> = (0..added / 2).map(|i| format!("fill-{i}")).collect();
    let mut w = s.write_txn().unwrap();
    let receipt = s.delete(&mut w, &ids).unwrap();
    s.commit(w).unwrap();
    assert_eq!(receipt.ids.len(), ids.len());
    let mut w = s.write_txn().unwrap();
    s.insert(&mut w, &filler(added + 1), &[0.0, 1.0, 0.0, 0.0])
        .expect("room after deletes");
    s.commit(w).unwrap();
}
