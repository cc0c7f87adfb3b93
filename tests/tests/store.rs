//! Store: round-trips, atomic batches, restart, filters, BM25, cube isolation (real LMDB).

use serde_json::json;
use store::search::{SearchRequest, search};
use store::{Filter, MemoryRecord, MemoryType, Status, Store, StoreOptions};

const DIMS: usize = 8;

fn opts() -> StoreOptions {
    StoreOptions {
        dimensions: DIMS,
        ..Default::default()
    }
}

fn unit(seed: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..DIMS)
        .map(|i| {
            if i == seed % DIMS {
                1.0
            } else {
                0.05 * ((i + seed) % 3) as f32
            }
        })
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn rec(id: &str, cube: &str, text: &str) -> MemoryRecord {
    MemoryRecord {
        id: id.into(),
        memory: text.into(),
        cube_id: cube.into(),
        user_id: "alice".into(),
        session_id: "s1".into(),
        agent_id: None,
        app_id: None,
        memory_type: MemoryType::LongTermMemory,
        status: Status::Activated,
        key: None,
        tags: vec!["t1".into()],
        info: serde_json::Map::new(),
        source: Some("conversation".into()),
        sources: vec![],
        confidence: 0.99,
        created_at: 1_700_000_000_000_000,
        updated_at: 1_700_000_000_000_000,
        event_time: None,
        version: 1,
        history: vec![],
        event_id: "e".into(),
        file_ids: vec![],
        embedding: vec![],
    }
}

#[test]
fn round_trip_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rec("m1", "c1", "Caroline went to a support group");
    r.info.insert("dia_id".into(), json!("D1:3"));
    r.tags.push("lgbtq".into());
    r.event_time = Some(1_683_554_160_000_000);
    {
        let s = Store::open(dir.path(), opts()).unwrap();
        let mut w = s.write_txn().unwrap();
        s.insert(&mut w, &r, &unit(1)).unwrap();
        s.commit(w).unwrap();
        let t = s.read_txn().unwrap();
        let back = s.get_with_embedding(&t, "m1").unwrap().unwrap();
        assert_eq!(back.embedding, unit(1));
        let mut expect = r.clone();
        expect.embedding = unit(1);
        assert_eq!(back, expect);
    }
    // Reopen: everything is still there, including the lexical and vector indexes.
    let s = Store::open(dir.path(), opts()).unwrap();
    let t = s.read_txn().unwrap();
    let got = s.get(&t, "m1").unwrap().unwrap();
    assert_eq!(got.memory, r.memory);
    let cands = s.candidates(&t, "c1", None, &Filter::True).unwrap();
    assert_eq!(
        s.bm25_search(&t, "c1", "support group", 5, &cands)
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        s.vector_search(&t, &unit(1), 5, &cands).unwrap()[0].0,
        s.internal_id(&t, "m1").unwrap().unwrap()
    );
    // Reopening with other dimensions is refused.
    drop(t);
    drop(s);
    let err = Store::open(
        dir.path(),
        StoreOptions {
            dimensions: 16,
            ..opts()
        },
    );
    assert!(err.is_err());
}

#[test]
fn failed_batch_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    {
        let mut w = s.write_txn().unwrap();
        s.insert(
            &mut w,
            &rec("a", "c1", "first memory about apples"),
            &unit(1),
        )
        .unwrap();
        s.mark_event(
            &mut w,
            "c1",
            "ev-1",
            &store::EventRecord {
                memory_ids: vec!["a".into()],
                processed_at: 0,
                source: "t".into(),
                position: None,
            },
        )
        .unwrap();
        // The second item of the batch fails (wrong dimensions): the batch is abandoned.
        let err = s.insert(
            &mut w,
            &rec("b", "c1", "second memory about bananas"),
            &[1.0, 0.0],
        );
        assert!(matches!(err, Err(store::StoreError::Dimensions { .. })));
        // `w` dropped here without commit = abort.
    }
    let t = s.read_txn().unwrap();
    assert!(s.get(&t, "a").unwrap().is_none());
    assert!(s.event(&t, "c1", "ev-1").unwrap().is_none());
    assert!(s.cube_ids(&t, "c1").unwrap().is_empty());
    let all = s.field_ids(&t, "c1", "status", "activated").unwrap();
    assert!(all.is_empty());
    let mut every = store::roaring::RoaringBitmap::new();
    every.insert_range(0..100);
    assert!(
        s.bm25_search(&t, "c1", "apples", 5, &every)
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.stats().unwrap().memories, 0);
}

#[test]
fn vector_delta_is_searchable_before_and_after_tree_build() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let mut w = s.write_txn().unwrap();
    for i in 0..20 {
        s.insert(
            &mut w,
            &rec(&format!("m{i}"), "c1", &format!("memory {i}")),
            &unit(i),
        )
        .unwrap();
    }
    s.commit(w).unwrap();
    let t = s.read_txn().unwrap();
    assert_eq!(s.stats().unwrap().vectors_pending, 20);
    let cands = s.candidates(&t, "c1", None, &Filter::True).unwrap();
    let before = s.vector_search(&t, &unit(3), 3, &cands).unwrap();
    drop(t);
    assert_eq!(s.index_pending().unwrap(), 20);
    let st = s.stats().unwrap();
    assert_eq!((st.vectors_pending, st.vectors_indexed), (0, 20));
    let t = s.read_txn().unwrap();
    let after = s.vector_search(&t, &unit(3), 3, &cands).unwrap();
    assert_eq!(before[0].0, after[0].0);
    assert!((before[0].1 - after[0].1).abs() < 1e-4);
    // The cube's RAM codes agree with the trees and the exact scan.
    let ram = s.vector_search_in(&t, "c1", &unit(3), 3, &cands).unwrap();
    assert_eq!(ram[0].0, after[0].0);
    assert!((ram[0].1 - before[0].1).abs() < 1e-6);
    assert_eq!(s.stats().unwrap().vectors_in_memory.vectors, 20);
    // Delete removes it from the trees too.
    drop(t);
    let mut w = s.write_txn().unwrap();
    let rcpt = s.delete(&mut w, &["m3".to_string()]).unwrap();
    s.commit(w).unwrap();
    assert_eq!((rcpt.records, rcpt.vectors), (1, 1));
    assert!(rcpt.postings >= 2);
    let t = s.read_txn().unwrap();
    let cands = s.candidates(&t, "c1", None, &Filter::True).unwrap();
    assert!(
        s.vector_search(&t, &unit(3), 20, &cands)
            .unwrap()
            .iter()
            .all(|(id, _)| Some(*id) != s.internal_id(&t, "m3").unwrap())
    );
    // The trees drop it at the next fold, in the background (never in the deleting
    // transaction); searches never return it meanwhile.
    assert!(
        s.vector_search_in(&t, "c1", &unit(3), 20, &cands)
            .unwrap()
            .iter()
            .all(|(id, _)| Some(*id) != s.internal_id(&t, "m3").unwrap())
    );
    drop(t);
    assert_eq!(s.stats().unwrap().vectors_pending, 1);
    assert_eq!(s.index_pending().unwrap(), 1);
    assert_eq!(s.stats().unwrap().vectors_indexed, 19);
}

#[test]
fn bm25_ranks_a_known_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let docs = [
        ("d0", "the cat sat on the mat"),
        (
            "d1",
            "the dog chased the cat around the garden and the cat ran",
        ),
        ("d2", "stock markets fell sharply today"),
        ("d3", "a cat and a dog"),
        ("d4", "猫喜欢吃鱼"),
    ];
    let mut w = s.write_txn().unwrap();
    for (i, (id, text)) in docs.iter().enumerate() {
        s.insert(&mut w, &rec(id, "c", text), &unit(i)).unwrap();
    }
    s.commit(w).unwrap();
    let t = s.read_txn().unwrap();
    let cands = s.candidates(&t, "c", None, &Filter::True).unwrap();
    let name = |id: u32| s.record(&t, id).unwrap().unwrap().id;
    let hits: Vec<String> = s
        .bm25_search(&t, "c", "cat", 10, &cands)
        .unwrap()
        .into_iter()
        .map(|(i, _)| name(i))
        .collect();
    // BM25 by hand (avgdl 6.4): d1 tf=2 len 12 → 1.115; d3 tf=1 len 5 → 1.109; d0 tf=1 len 6 → 1.029.
    assert_eq!(hits, ["d1", "d3", "d0"]);
    let hits: Vec<String> = s
        .bm25_search(&t, "c", "dog cat", 10, &cands)
        .unwrap()
        .into_iter()
        .map(|(i, _)| name(i))
        .collect();
    assert_eq!(hits[0], "d3");
    let hits: Vec<String> = s
        .bm25_search(&t, "c", "markets", 10, &cands)
        .unwrap()
        .into_iter()
        .map(|(i, _)| name(i))
        .collect();
    assert_eq!(hits, ["d2"]);
    let hits: Vec<String> = s
        .bm25_search(&t, "c", "喜欢", 10, &cands)
        .unwrap()
        .into_iter()
        .map(|(i, _)| name(i))
        .collect();
    assert_eq!(hits, ["d4"]);
    // Exact scores: idf and length normalisation of BM25 (k1 = 1.5, b = 0.75).
    let (_, score) = s.bm25_search(&t, "c", "markets", 1, &cands).unwrap()[0];
    let n = 5.0f32;
    let avgdl = (6.0 + 12.0 + 5.0 + 5.0 + 4.0) / n;
    let idf = (1.0 + (n - 1.0 + 0.5) / (1.0 + 0.5)).ln();
    let expected = idf * 2.5 / (1.0 + 1.5 * (1.0 - 0.75 + 0.75 * 5.0 / avgdl));
    assert!((score - expected).abs() < 1e-4, "{score} vs {expected}");
}

fn filter_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let mut w = s.write_txn().unwrap();
    for i in 0..6 {
        let mut r = rec(
            &format!("m{i}"),
            "c",
            &format!("note number {i} about travel"),
        );
        r.user_id = if i % 2 == 0 {
            "alice".into()
        } else {
            "bob".into()
        };
        r.session_id = format!("s{}", i / 3);
        r.tags = vec![format!("t{i}"), "common".into()];
        r.created_at = 1_700_000_000_000_000 + i as i64 * 86_400_000_000;
        r.info.insert("score".into(), json!(i));
        r.info.insert(
            "topic".into(),
            json!(if i < 3 { "Travel Plans" } else { "work" }),
        );
        if i == 5 {
            r.memory_type = MemoryType::PreferenceMemory;
        }
        s.insert(&mut w, &r, &unit(i)).unwrap();
    }
    s.commit(w).unwrap();
    (dir, s)
}

fn ids(s: &Store, f: serde_json::Value) -> Vec<String> {
    let t = s.read_txn().unwrap();
    let f = Filter::parse(&f).unwrap();
    let base = s.cube_ids(&t, "c").unwrap();
    let mut v: Vec<String> = s
        .filter_ids(&t, "c", &f, &base)
        .unwrap()
        .iter()
        .map(|i| s.record(&t, i).unwrap().unwrap().id)
        .collect();
    v.sort();
    v
}

#[test]
fn filters_every_operator_and_nesting() {
    let (_d, s) = filter_store();
    assert_eq!(ids(&s, json!({"user_id": "alice"})), ["m0", "m2", "m4"]);
    assert_eq!(
        ids(&s, json!({"user_id": {"in": ["bob"]}, "session_id": "s0"})),
        ["m1"]
    );
    assert_eq!(ids(&s, json!({"score": {"gt": 3}})), ["m4", "m5"]);
    assert_eq!(
        ids(&s, json!({"info.score": {"gte": 3, "lt": 5}})),
        ["m3", "m4"]
    );
    assert_eq!(ids(&s, json!({"score": {"lte": 1}})), ["m0", "m1"]);
    assert_eq!(ids(&s, json!({"tags": {"contains": "t2"}})), ["m2"]);
    assert_eq!(ids(&s, json!({"tags": {"in": ["t1", "t3"]}})), ["m1", "m3"]);
    assert_eq!(
        ids(&s, json!({"topic": {"like": "travel%"}})),
        ["m0", "m1", "m2"]
    );
    assert_eq!(
        ids(&s, json!({"topic": {"nolike": "travel"}})),
        ["m3", "m4", "m5"]
    );
    // created_at of m{i} is 2023-11-14T22:13:20Z + i days.
    assert_eq!(
        ids(&s, json!({"created_at": {"gte": "2023-11-17T00:00:00Z"}})),
        ["m3", "m4", "m5"]
    );
    assert_eq!(ids(&s, json!({"created_at": {"lt": "2023-11-15"}})), ["m0"]);
    assert_eq!(ids(&s, json!({"memory_type": "PreferenceMemory"})), ["m5"]);
    assert_eq!(
        ids(
            &s,
            json!({"or": [{"user_id": "bob", "session_id": "s1"}, {"id": "m0"}]})
        ),
        ["m0", "m3", "m5"]
    );
    // Nesting and `not` (a superset of MemOS).
    assert_eq!(
        ids(
            &s,
            json!({"and": [{"or": [{"user_id": "alice"}, {"score": 5}]}, {"not": {"session_id": "s0"}}]})
        ),
        ["m4", "m5"]
    );
    assert_eq!(
        ids(&s, json!({"not": {"tags": {"contains": "common"}}})),
        Vec::<String>::new()
    );
    assert_eq!(ids(&s, json!({})).len(), 6);
    // Malformed filters are errors, never ignored.
    for bad in [
        json!({"score": {"between": [1, 2]}}),
        json!({"and": {"user_id": "x"}}),
        json!({"and": []}),
        json!({"or": ["user_id"]}),
        json!({"user_id": {"in": "alice"}}),
        json!({"score": {"gt": [1]}}),
        json!({"score": {}}),
        json!("user_id = alice"),
    ] {
        assert!(
            matches!(
                Filter::parse(&bad),
                Err(store::StoreError::InvalidFilter(_))
            ),
            "{bad} should be rejected"
        );
    }
    // Per-cube form.
    let f = Filter::parse_for_cube(
        &json!({"c": {"user_id": "bob"}, "other": {"user_id": "alice"}}),
        "c",
        &["c".into(), "other".into()],
    )
    .unwrap();
    assert_eq!(f, Filter::parse(&json!({"user_id": "bob"})).unwrap());
}

#[test]
fn search_never_crosses_cubes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let mut w = s.write_txn().unwrap();
    s.insert(
        &mut w,
        &rec("a1", "cube-a", "the secret password is swordfish"),
        &unit(1),
    )
    .unwrap();
    s.insert(
        &mut w,
        &rec("b1", "cube-b", "the secret password is swordfish"),
        &unit(1),
    )
    .unwrap();
    s.insert(&mut w, &rec("b2", "cube-b", "another note"), &unit(2))
        .unwrap();
    s.commit(w).unwrap();
    let t = s.read_txn().unwrap();
    let q = unit(1);
    let f = Filter::True;
    for (cube, own) in [("cube-a", vec!["a1"]), ("cube-b", vec!["b1", "b2"])] {
        let hits = search(
            &s,
            &t,
            &SearchRequest::new(cube, "secret password swordfish", Some(&q), 10, &f),
        )
        .unwrap();
        assert!(!hits.is_empty());
        for h in &hits {
            assert_eq!(h.record.cube_id, cube);
            assert!(own.contains(&h.record.id.as_str()));
            assert!((0.0..=1.0).contains(&h.score));
        }
    }
    let hits = search(
        &s,
        &t,
        &SearchRequest::new("cube-c", "secret", Some(&q), 10, &f),
    )
    .unwrap();
    assert!(hits.is_empty());
}

#[test]
fn dedup_modes_and_session_priority() {
    use store::search::Dedup;
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let mut w = s.write_txn().unwrap();
    // Two near-identical memories (same vector) and one different; m2 is in session s2.
    s.insert(
        &mut w,
        &rec("m0", "c", "coffee with oat milk every morning"),
        &unit(1),
    )
    .unwrap();
    s.insert(
        &mut w,
        &rec("m1", "c", "coffee with oat milk each morning"),
        &unit(1),
    )
    .unwrap();
    let mut r2 = rec("m2", "c", "coffee beans from Ethiopia");
    r2.session_id = "s2".into();
    s.insert(&mut w, &r2, &unit(2)).unwrap();
    s.commit(w).unwrap();
    let t = s.read_txn().unwrap();
    let f = Filter::True;
    let q = unit(1);
    let run = |dedup: Dedup, session: Option<&str>| -> Vec<String> {
        let mut req = SearchRequest::new("c", "coffee oat milk morning", Some(&q), 2, &f);
        req.dedup = dedup;
        req.session_id = session;
        req.session_boost = 2.0;
        search(&s, &t, &req)
            .unwrap()
            .into_iter()
            .map(|h| h.record.id)
            .collect()
    };
    // Without dedup the two near-identical memories fill the top 2.
    let mut no = run(Dedup::No, None);
    no.sort();
    assert_eq!(no, ["m0", "m1"]);
    // sim and mmr keep one of them and make room for the different memory.
    for d in [Dedup::Sim, Dedup::Mmr] {
        let got = run(d, None);
        assert_eq!(got.len(), 2, "{d:?}");
        assert!(got.contains(&"m2".to_string()), "{d:?}: {got:?}");
    }
    // Session soft priority: with a query between the two topics, the lexical match wins
    // without a session, and the session's memory wins with it.
    let mid: Vec<f32> = unit(1).iter().zip(unit(2)).map(|(a, b)| a + b).collect();
    let n = mid.iter().map(|x| x * x).sum::<f32>().sqrt();
    let mid: Vec<f32> = mid.iter().map(|x| x / n).collect();
    let top = |session: Option<&str>| {
        let mut req = SearchRequest::new("c", "coffee oat milk morning", Some(&mid), 1, &f);
        req.session_id = session;
        req.session_boost = 2.0;
        search(&s, &t, &req).unwrap()[0].record.id.clone()
    };
    assert_ne!(top(None), "m2");
    assert_eq!(top(Some("s2")), "m2");
}

#[test]
fn buffered_index_writes_equal_direct_ones() {
    let words = [
        "apple", "river", "stone", "cloud", "garden", "violin", "harbor", "maple", "quartz",
        "lantern",
    ];
    let text = |i: usize| {
        format!(
            "{} {} {} note {i}",
            words[i % 10],
            words[(i / 10) % 10],
            words[(i * 7) % 10]
        )
    };
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let direct = Store::open(d1.path(), opts()).unwrap();
    let buffered = Store::open(d2.path(), opts()).unwrap();
    // 1500 documents: enough for postings to fill and split blocks both ways.
    for chunk in (0..1500).collect::<Vec<_>>().chunks(300) {
        let mut w = direct.write_txn().unwrap();
        for &i in chunk.iter().filter(|i| *i % 100 != 99) {
            let mut r = rec(&format!("m{i}"), "c1", &text(i));
            r.session_id = format!("s{}", i % 7);
            direct.insert(&mut w, &r, &unit(i)).unwrap();
        }
        direct.commit(w).unwrap();
        let mut w = buffered.write_txn().unwrap();
        let mut buf = store::IndexBuffer::default();
        for &i in chunk {
            let mut r = rec(&format!("m{i}"), "c1", &text(i));
            r.session_id = format!("s{}", i % 7);
            // Each memory in its own child, as the sink does; one of every 100 is undone.
            let mut child = buffered.child_txn(&mut w).unwrap();
            let mut one = store::IndexBuffer::default();
            buffered
                .insert_into(&mut child, &r, &unit(i), &mut one)
                .unwrap();
            if i % 100 == 99 {
                drop(child);
                continue;
            }
            buffered.commit_child(child).unwrap();
            buf.absorb(one);
        }
        buffered.flush_index(&mut w, buf).unwrap();
        buffered.commit(w).unwrap();
    }
    let (t1, t2) = (direct.read_txn().unwrap(), buffered.read_txn().unwrap());
    let undone: Vec<String> = (0..1500)
        .filter(|i| i % 100 == 99)
        .map(|i| format!("m{i}"))
        .collect();
    assert_eq!(
        buffered.stats().unwrap().memories,
        1500 - undone.len() as u64
    );
    for id in &undone {
        assert!(buffered.get(&t2, id).unwrap().is_none());
    }
    // Same documents (by uuid) for every query and field, same BM25 scores.
    let uuids =
        |s: &Store, t: &store::heed::RoTxn<store::heed::WithoutTls>, ids: Vec<(u32, f32)>| {
            ids.into_iter()
                .map(|(id, score)| {
                    (
                        s.record(t, id).unwrap().unwrap().id,
                        (score * 1e4).round() as i64,
                    )
                })
                .collect::<Vec<_>>()
        };
    let all1 = direct.cube_ids(&t1, "c1").unwrap();
    let all2 = buffered.cube_ids(&t2, "c1").unwrap();
    assert_eq!(all2.len(), 1500 - undone.len() as u64);
    assert_eq!(all1.len(), all2.len());
    for q in [
        "apple river",
        "violin",
        "lantern quartz maple",
        "note 1499",
        "stone garden",
    ] {
        let a = uuids(
            &direct,
            &t1,
            direct.bm25_search(&t1, "c1", q, 50, &all1).unwrap(),
        );
        let b = uuids(
            &buffered,
            &t2,
            buffered.bm25_search(&t2, "c1", q, 50, &all2).unwrap(),
        );
        assert!(!a.is_empty(), "{q}");
        assert_eq!(a, b, "{q}");
    }
    for s in 0..7 {
        let f1 = direct
            .field_ids(&t1, "c1", "session_id", &format!("s{s}"))
            .unwrap();
        let f2 = buffered
            .field_ids(&t2, "c1", "session_id", &format!("s{s}"))
            .unwrap();
        let names = |st: &Store,
                     t: &store::heed::RoTxn<store::heed::WithoutTls>,
                     b: &store::roaring::RoaringBitmap| {
            b.iter()
                .map(|id| st.record(t, id).unwrap().unwrap().id)
                .collect::<std::collections::BTreeSet<_>>()
        };
        assert_eq!(names(&direct, &t1, &f1), names(&buffered, &t2, &f2));
    }
}

#[test]
fn an_index_key_lmdb_cannot_hold_is_refused_before_it_is_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    let mut w = s.write_txn().unwrap();
    let max = s.max_key_size();
    assert!(max >= 511, "{max}");
    let mut r = rec("m1", "c1", "hello");
    r.session_id = "s".repeat(max);
    let mut buf = store::IndexBuffer::default();
    let e = s.insert_into(&mut w, &r, &unit(1), &mut buf).unwrap_err();
    assert!(!e.is_transient());
    assert!(e.to_string().contains(&format!("{max}-byte limit")), "{e}");
    assert!(buf.is_empty());
    // LMDB's own refusal of a key over its limit is classified as the data's fault.
    let rec = store::EventRecord {
        memory_ids: vec![],
        processed_at: 0,
        source: "test".into(),
        position: None,
    };
    let e = s
        .mark_event(&mut w, "c1", &"e".repeat(max), &rec)
        .unwrap_err();
    assert!(!e.is_transient(), "{e}");
    assert!(e.to_string().contains("MDB_BAD_VALSIZE"), "{e}");
}

#[test]
fn the_trees_are_one_arroy_index_per_shard_of_cubes() {
    use store::vector::shard_of;
    let dir = tempfile::tempdir().unwrap();
    // A budget too small for any cube's RAM codes: every search goes through the trees.
    let mut o = opts();
    o.vecmem.budget_bytes = 16;
    let s = Store::open(dir.path(), o).unwrap();
    let cubes: Vec<String> = (0..6).map(|c| format!("tenant-{c}")).collect();
    let mut expected: std::collections::BTreeMap<u16, u64> = Default::default();
    let mut w = s.write_txn().unwrap();
    for (c, cube) in cubes.iter().enumerate() {
        for i in 0..10 {
            s.insert(
                &mut w,
                &rec(&format!("{cube}-m{i}"), cube, &format!("memory {i}")),
                &unit(i + c),
            )
            .unwrap();
        }
        *expected.entry(shard_of(cube)).or_default() += 10;
    }
    s.commit(w).unwrap();
    assert!(expected.len() > 1, "the cubes hash to more than one shard");
    assert_eq!(s.index_pending().unwrap(), 60);
    // Each cube's vectors are in its own shard's index, never one index for everything.
    let sizes: std::collections::BTreeMap<u16, u64> =
        s.ann_shard_sizes().unwrap().into_iter().collect();
    assert_eq!(sizes, expected);
    assert_eq!(s.stats().unwrap().vectors_indexed, 60);
    // A cube's search reads its shard and finds the exact best among its own memories.
    let t = s.read_txn().unwrap();
    for (c, cube) in cubes.iter().enumerate() {
        let cands = s.candidates(&t, cube, None, &Filter::True).unwrap();
        let hits = s
            .vector_search_in(&t, cube, &unit(c + 4), 3, &cands)
            .unwrap();
        assert_eq!(hits.len(), 3, "{cube}");
        assert!(hits.iter().all(|(id, _)| cands.contains(*id)));
        let best = s.internal_id(&t, &format!("{cube}-m4")).unwrap().unwrap();
        assert_eq!(hits[0].0, best, "{cube}");
    }
    // Across cubes, every shard with candidates is searched.
    let all = s.candidates(&t, &cubes[0], None, &Filter::True).unwrap()
        | s.candidates(&t, &cubes[5], None, &Filter::True).unwrap();
    let hits = s.vector_search(&t, &unit(4), 60, &all).unwrap();
    assert_eq!(hits.len(), 20);
    // Deleting folds into the right shard.
    drop(t);
    let mut w = s.write_txn().unwrap();
    s.delete(&mut w, &["tenant-0-m4".to_string()]).unwrap();
    s.commit(w).unwrap();
    assert_eq!(s.index_pending().unwrap(), 1);
    let sizes: std::collections::BTreeMap<u16, u64> =
        s.ann_shard_sizes().unwrap().into_iter().collect();
    assert_eq!(
        sizes[&shard_of("tenant-0")],
        expected[&shard_of("tenant-0")] - 1
    );
}
