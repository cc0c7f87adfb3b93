//! The pipeline with the real model and real LMDB: replay idempotency, dead letters, dedupe,
//! rule-based extraction, the embedder's reference vector.

use pipelines::runtime::{Incoming, Outcome, Payload};
use serde_json::{Value, json};
use server::Memos;
use std::sync::Arc;

fn event(id: &str, cube: &str, text: &str) -> Value {
    json!({"event_id": id, "kind": "messages", "cube_id": cube, "user_id": "u1", "session_id": "s1",
           "info": {"origin": id},
           "payload": {"messages": [{"role": "user", "content": text, "chat_time": "1:56 pm on 8 May, 2023"}]}})
}

async fn service(dir: &std::path::Path) -> (Arc<Memos>, tokio::task::JoinHandle<()>) {
    let cfg = tests::config(dir);
    let store = Arc::new(store::Store::open(&cfg.data_dir, cfg.store_options()).unwrap());
    Memos::with_parts(cfg, store, tests::embedder()).expect("service")
}

/// Queues an event and waits until its batch has committed.
async fn send(m: &Memos, v: &Value) -> Outcome {
    let (tx, rx) = tokio::sync::oneshot::channel();
    m.pipeline
        .submit(Incoming {
            payload: Payload::Bytes(serde_json::to_vec(v).unwrap()),
            source: "test".into(),
            position: None,
            reply: Some(tx),
        })
        .await
        .unwrap();
    rx.await.unwrap()
}

fn count(m: &Memos) -> u64 {
    m.store.stats().unwrap().memories
}

#[test]
fn embedder_reference_vector() {
    let v = tests::embedder()
        .embed(&["hello world".to_string()])
        .unwrap();
    let expected = [-0.034477f32, 0.031023, 0.006735, 0.026109, -0.039362];
    assert_eq!(v[0].len(), 384);
    for (a, b) in v[0].iter().zip(expected) {
        assert!((a - b).abs() < 1e-4, "{:?}", &v[0][..5]);
    }
    let norm: f32 = v[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4);
    // Batching and padding do not change a sentence's embedding.
    let batch = tests::embedder()
        .embed(&[
            "a much longer sentence that forces padding of the short one in the batch".into(),
            "hello world".into(),
        ])
        .unwrap();
    for (a, b) in batch[1].iter().zip(&v[0]) {
        assert!((a - b).abs() < 1e-4);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_an_event_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _p) = service(dir.path()).await;
    let ev = event("conv-1/D1:1", "c1", "I went to a support group yesterday.");
    let first = send(&m, &ev).await;
    let Outcome::Stored { memories, .. } = first else {
        panic!("{first:?}")
    };
    assert_eq!(memories.len(), 1);
    let n = count(&m);
    // Same event again (as a redelivery, or published to a second bus): nothing changes.
    for _ in 0..3 {
        match send(&m, &ev).await {
            Outcome::Duplicate {
                memories: again, ..
            } => assert_eq!(again, memories),
            o => panic!("{o:?}"),
        }
    }
    // Twice in one batch.
    let ev2 = event(
        "conv-1/D1:2",
        "c1",
        "It was a really powerful experience for me.",
    );
    let (a, b) = tokio::join!(send(&m, &ev2), send(&m, &ev2));
    let kinds = [&a, &b].map(|o| matches!(o, Outcome::Stored { .. }));
    assert_eq!(kinds.iter().filter(|k| **k).count(), 1, "{a:?} {b:?}");
    assert_eq!(count(&m), n + 1);
    // The same event id in another cube is another event.
    assert!(matches!(
        send(
            &m,
            &event("conv-1/D1:1", "c2", "I went to a support group yesterday.")
        )
        .await,
        Outcome::Stored { .. }
    ));
    assert_eq!(count(&m), n + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_events_are_dead_lettered_and_the_rest_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _p) = service(dir.path()).await;
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "JSON"),
        (serde_json::to_vec(&json!({"kind": "telepathy", "cube_id": "c", "user_id": "u"})).unwrap(), "telepathy"),
        (serde_json::to_vec(&json!({"kind": "messages", "cube_id": "c", "user_id": "u", "payload": {}})).unwrap(), "payload.messages"),
        (vec![0xff, 0xfe, 0x00], "UTF-8"),
        (serde_json::to_vec(&json!({"kind": "messages", "cube_id": "", "user_id": "u", "payload": {"messages": "x"}})).unwrap(), "cube_id"),
        (serde_json::to_vec(&json!({"kind": "messages", "cube_id": "c", "user_id": "u", "payload": {"messages": "x".repeat(2_000_000)}})).unwrap(), "limit"),
        (serde_json::to_vec(&json!({"kind": "delete", "cube_id": "c", "user_id": "u", "payload": {"filter": {"a": {"bogus": 1}}}})).unwrap(), "bogus"),
    ];
    // All in one batch: the bad ones, then a good one.
    let mut rxs = Vec::new();
    let good_ev =
        serde_json::to_vec(&event("ok-1", "c", "A valid event in the same stream.")).unwrap();
    for b in bad.iter().map(|(b, _)| b.clone()).chain([good_ev]) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        m.pipeline
            .submit(Incoming {
                payload: Payload::Bytes(b),
                source: "test".into(),
                position: Some(("test/p0".into(), "42".into())),
                reply: Some(tx),
            })
            .await
            .unwrap();
        rxs.push(rx);
    }
    let mut outs = Vec::new();
    for rx in rxs {
        outs.push(rx.await.unwrap());
    }
    let good = outs.pop().unwrap();
    for (o, (_, why)) in outs.iter().zip(&bad) {
        match o {
            Outcome::DeadLettered { reason } => {
                assert!(reason.contains(why), "{reason} should mention {why}")
            }
            o => panic!("{o:?}"),
        }
    }
    assert!(matches!(good, Outcome::Stored { .. }));
    let t = m.store.read_txn().unwrap();
    let dl = m.store.dead_letters(&t).unwrap();
    assert_eq!(dl.len(), bad.len());
    assert_eq!(dl[0].1.payload, b"{not json".to_vec());
    assert_eq!(count(&m), 1);
    // The source position was committed with the batch.
    assert_eq!(
        m.store.offset(&t, "test/p0").unwrap().as_deref(),
        Some("42")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedupe_merges_duplicates_but_never_different_facts() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _p) = service(dir.path()).await;
    let Outcome::Stored { memories, .. } = send(
        &m,
        &event("e1", "c", "I have two cats named Tom and Jerry."),
    )
    .await
    else {
        panic!()
    };
    let id = memories[0].memory_id.clone();
    // Near-duplicate: merged into the same memory, newer text kept, old one in history.
    let Outcome::Stored { memories: m2, .. } = send(
        &m,
        &event("e2", "c", "I have two cats named Tom and Jerry!!"),
    )
    .await
    else {
        panic!()
    };
    assert_eq!(m2.len(), 1, "{m2:?}");
    assert_eq!(m2[0].memory_id, id);
    // Exact duplicate (case and spacing aside): merged too.
    let Outcome::Stored { memories: m3, .. } = send(
        &m,
        &event("e3", "c", "i have two cats  named Tom and Jerry!!"),
    )
    .await
    else {
        panic!()
    };
    assert_eq!(m3[0].memory_id, id);
    {
        let t = m.store.read_txn().unwrap();
        let r = m.store.get(&t, &id).unwrap().unwrap();
        assert_eq!(r.version, 3, "{:#?}", r.history);
        assert_eq!(r.history.len(), 2);
        assert_eq!(
            r.history[0].memory,
            "[1:56 pm on 8 May, 2023] user: I have two cats named Tom and Jerry."
        );
        assert_eq!(r.history[0].update_type, "near_duplicate");
        assert_eq!(r.history[1].update_type, "duplicate");
        assert_eq!(r.info["origin"], "e3");
        assert_eq!(m.store.versions(&t, &id).unwrap().len(), 2);
    }
    // Different number, negation, name: different facts, never merged.
    for (e, text) in [
        ("e4", "I have three cats named Tom and Jerry."),
        ("e5", "I don't have two cats named Tom and Jerry."),
        ("e6", "I have two cats named Tom and Garfield."),
    ] {
        let Outcome::Stored { memories, .. } = send(&m, &event(e, "c", text)).await else {
            panic!()
        };
        assert_ne!(memories[0].memory_id, id, "{text}");
    }
    let t = m.store.read_txn().unwrap();
    let base = m
        .store
        .candidates(
            &t,
            "c",
            Some(&[store::MemoryType::UserMemory]),
            &store::Filter::True,
        )
        .unwrap();
    assert_eq!(base.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preferences_and_facts_are_extracted() {
    let dir = tempfile::tempdir().unwrap();
    let (m, _p) = service(dir.path()).await;
    let out = send(&m, &event("p1", "c", "I work as a nurse in Boston. I avoid hotels with a bustling nightlife atmosphere. Anyway, how are you?")).await;
    let Outcome::Stored { memories, .. } = out else {
        panic!("{out:?}")
    };
    let types: Vec<&str> = memories.iter().map(|x| x.memory_type.as_str()).collect();
    assert!(types.contains(&"PreferenceMemory"), "{types:?}");
    assert!(types.contains(&"UserMemory"));
    let pref = memories
        .iter()
        .find(|x| x.memory_type == "PreferenceMemory")
        .unwrap();
    assert_eq!(
        pref.memory,
        "user: I avoid hotels with a bustling nightlife atmosphere."
    );
    let t = m.store.read_txn().unwrap();
    let r = m.store.get(&t, &pref.memory_id).unwrap().unwrap();
    assert_eq!(r.info["preference_type"], "explicit_preference");
    assert_eq!(r.info["preference"], "dislike");
    assert_eq!(r.info["origin"], "p1");
    // An assistant turn yields no preference.
    let ev = json!({"event_id": "p2", "kind": "messages", "cube_id": "c", "user_id": "u1",
                    "payload": {"messages": [{"role": "assistant", "content": "I love helping you plan trips."}]}});
    let Outcome::Stored { memories, .. } = send(&m, &ev).await else {
        panic!()
    };
    assert_eq!(memories.len(), 1);
    assert_eq!(memories[0].memory_type, "LongTermMemory");
}

/// One batch of 120 events over three cubes — prepared on two cores (split by cube), applied
/// without child transactions, with a near duplicate merged into a memory written earlier in
/// the same batch — stores what the same events store one batch each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_batch_split_over_two_cores_equals_one_event_at_a_time() {
    let places = ["museum", "beach", "library", "market", "stadium", "zoo"];
    let mut events = Vec::new();
    for i in 0..120usize {
        let cube = ["a", "b", "c"][i % 3];
        let text = match i {
            3 => "I have two cats named Tom and Jerry.".to_string(),
            // Near duplicate of event 3, same cube, later in the batch.
            63 => "I have two cats named Tom and Jerry!!".to_string(),
            // Exact duplicate of event 3's text in another cube: not merged across cubes.
            4 => "I have two cats named Tom and Jerry.".to_string(),
            _ => format!(
                "On day {i} I went to the {} with my cousin number {}.",
                places[i % places.len()],
                i * 7
            ),
        };
        events.push(event(&format!("big-{i}"), cube, &text));
    }
    let snapshot = |m: &Memos| {
        let t = m.store.read_txn().unwrap();
        let mut out = Vec::new();
        for cube in ["a", "b", "c"] {
            let ids = m
                .store
                .candidates(&t, cube, None, &store::Filter::True)
                .unwrap();
            let mut rows: Vec<(String, u32, String)> = ids
                .iter()
                .map(|id| {
                    let r = m.store.record(&t, id).unwrap().unwrap();
                    (r.memory, r.version, r.memory_type.as_str().to_string())
                })
                .collect();
            rows.sort();
            let all = m.store.cube_ids(&t, cube).unwrap();
            let lexical: Vec<String> = m
                .store
                .bm25_search(&t, cube, "cats Jerry museum cousin", 50, &all)
                .unwrap()
                .into_iter()
                .map(|(id, _)| m.store.record(&t, id).unwrap().unwrap().memory)
                .collect();
            out.push((cube, rows, lexical));
        }
        out
    };
    // One batch.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tests::config(dir.path());
    cfg.pipeline.linger_ms = 500;
    let store = Arc::new(store::Store::open(&cfg.data_dir, cfg.store_options()).unwrap());
    let (m, _p) = Memos::with_parts(cfg, store, tests::embedder()).unwrap();
    let mut rxs = Vec::new();
    for ev in &events {
        let (tx, rx) = tokio::sync::oneshot::channel();
        m.pipeline
            .submit(Incoming {
                payload: Payload::Bytes(serde_json::to_vec(ev).unwrap()),
                source: "test".into(),
                position: None,
                reply: Some(tx),
            })
            .await
            .unwrap();
        rxs.push(rx);
    }
    for rx in rxs {
        assert!(matches!(rx.await.unwrap(), Outcome::Stored { .. }));
    }
    assert_eq!(
        m.metrics.commits.with_label_values(&["batch"]).get(),
        1,
        "the 120 events were meant to share one batch"
    );
    let together = snapshot(&m);
    // One event per batch.
    let dir2 = tempfile::tempdir().unwrap();
    let (m2, _p2) = service(dir2.path()).await;
    for ev in &events {
        assert!(matches!(send(&m2, ev).await, Outcome::Stored { .. }));
    }
    let apart = snapshot(&m2);
    assert_eq!(together, apart);
    // The near duplicate was merged (the newer text, version 2); the other cube kept its own.
    let a = &together[0].1;
    assert!(
        a.iter()
            .any(|(t, v, _)| t.ends_with("Tom and Jerry!!") && *v == 2),
        "{a:?}"
    );
    assert!(!a.iter().any(|(t, _, _)| t.ends_with("Tom and Jerry.")));
    let b = &together[1].1;
    assert!(
        b.iter()
            .any(|(t, v, _)| t.ends_with("Tom and Jerry.") && *v == 1)
    );
    // BM25 finds the merged memory once, by its current text.
    assert_eq!(
        together[0].2.iter().filter(|t| t.contains("Jerry")).count(),
        1
    );
}
