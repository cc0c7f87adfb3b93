//! Writes `store/tests/fixtures/format-1/data.mdb`: a store as memos wrote it before store
//! format 2 — memory records and their earlier versions without the format byte, no
//! `format_version` in `meta`. The committed fixture was made with
//! `cargo run -p store --example format1_fixture`; `store/tests/format.rs` opens a copy and
//! checks the upgrade.

use std::path::PathBuf;

use store::heed::types::{Bytes, Str};
use store::heed::{CommitOrAbort, Database, EnvOpenOptions};
use store::{MemoryRecord, MemoryType, Status, Store, StoreOptions};

fn record(id: &str, user: &str, text: &str) -> MemoryRecord {
    MemoryRecord {
        id: id.into(),
        memory: text.into(),
        cube_id: "fixture".into(),
        user_id: user.into(),
        session_id: "s1".into(),
        agent_id: None,
        app_id: None,
        memory_type: MemoryType::LongTermMemory,
        status: Status::Activated,
        key: None,
        tags: vec!["mode:fast".into()],
        info: serde_json::Map::new(),
        source: Some("conversation".into()),
        sources: vec![],
        confidence: 0.99,
        created_at: 1_700_000_000_000_000,
        updated_at: 1_700_000_000_000_000,
        event_time: None,
        version: 1,
        history: vec![],
        event_id: format!("ev-{id}"),
        file_ids: vec![],
        embedding: vec![],
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-1");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let opts = StoreOptions {
        dimensions: 4,
        map_size: 8 << 20,
        ..Default::default()
    };
    {
        let s = Store::open(&dir, opts)?;
        let mut w = s.write_txn()?;
        s.insert(
            &mut w,
            &record("fixture-0", "ann", "Ann's cat is called Miso."),
            &[1.0, 0.0, 0.0, 0.0],
        )?;
        s.insert(
            &mut w,
            &record("fixture-1", "ann", "Ann cycles to work in Ghent."),
            &[0.0, 1.0, 0.0, 0.0],
        )?;
        s.insert(
            &mut w,
            &record("fixture-2", "ben", "Ben plays the oboe."),
            &[0.0, 0.0, 1.0, 0.0],
        )?;
        let mut r = s.get(&w, "fixture-0")?.ok_or("fixture-0")?;
        r.memory = "Ann's cat is called Miso; she is twelve.".into();
        s.update(&mut w, &r, Some(&[0.9, 0.1, 0.0, 0.0]), "update", None)?;
        s.commit(w)?;
    }
    // Format 1: strip the format byte of every record and earlier version, drop the marker.
    // SAFETY: the store above is closed; nothing else has this directory open.
    let env = unsafe {
        EnvOpenOptions::new()
            .max_dbs(32)
            .map_size(8 << 20)
            .open(&dir)?
    };
    let wtxn = env.write_txn()?;
    type Raw = Database<'static, Bytes, Bytes>;
    let (records, history, meta): (Raw, Raw, Database<'static, Str, Bytes>) = env
        .create_databases_and_commit(wtxn, |dbo, wtxn| -> Result<_, store::heed::Error> {
            Ok(CommitOrAbort::<_, ()>::Commit((
                dbo.create_database(wtxn, Some("records"))?,
                dbo.create_database(wtxn, Some("history"))?,
                dbo.create_database(wtxn, Some("meta"))?,
            )))
        })?
        .unwrap_commit();
    let mut w = env.write_txn()?;
    for db in [records, history] {
        let all: Vec<(Vec<u8>, Vec<u8>)> = db
            .iter(&w)?
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v[1..].to_vec())))
            .collect::<Result<_, _>>()?;
        for (k, v) in all {
            db.put(&mut w, &k, &v)?;
        }
    }
    meta.delete(&mut w, "format_version")?;
    w.commit()?;
    drop(env);
    std::fs::remove_file(dir.join("lock.mdb"))?;
    println!("wrote {}", dir.display());
    Ok(())
}
