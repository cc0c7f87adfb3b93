//! NATS end to end against the machine's real NATS server (JetStream): events in through a
//! durable pull consumer and core subjects, bad input to the dead letters (store and subject),
//! search over request-reply equal to REST, exactly-once effect across buses.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};

fn turn(i: usize, cube: &str) -> Value {
    let topics = [
        "adopted a grey kitten named Miso",
        "started learning the cello",
        "moved to a flat near the river",
        "ran the Berlin half marathon",
        "planted tomatoes on the balcony",
    ];
    json!({"event_id": format!("{cube}/turn-{i}"), "kind": "messages", "cube_id": cube, "user_id": "nina",
           "session_id": format!("s{}", i / 5),
           "payload": {"messages": [{"role": "user", "content": format!("Update {i}: I {} last week.", topics[i % topics.len()])}]}})
}

fn stored_events(s: &tests::Server, cube: &str, n: usize) -> usize {
    let txn = s.memos.store.read_txn().unwrap();
    (0..n)
        .filter(|i| {
            s.memos
                .store
                .event(&txn, cube, &format!("{cube}/turn-{i}"))
                .unwrap()
                .is_some()
        })
        .count()
}

/// What the phases share: the server, the NATS client and JetStream context, the subject prefix.
struct Bus<'a> {
    s: &'a tests::Server,
    client: &'a async_nats::Client,
    js: &'a async_nats::jetstream::Context,
    p: &'a str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_ingest_dead_letters_and_request_reply_search() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tests::config(dir.path());
    let p = tests::nats_config(&mut cfg);
    cfg.pipeline.max_event_bytes = 4096;
    let nats_url = cfg.nats.url.clone();
    let s = tests::Server::start(cfg).await;
    let client = async_nats::connect(&nats_url).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let mut dlq = client.subscribe(format!("{p}.dlq")).await.unwrap();
    // The source creates the stream; wait for it.
    let stream_name = format!("{}_EVENTS", p.to_uppercase());
    tests::wait_for(|| true, "start").await;
    for _ in 0..200 {
        if js.get_stream(&stream_name).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let bus = Bus {
        s: &s,
        client: &client,
        js: &js,
        p: &p,
    };
    jetstream_ingest_and_dead_letters(&bus, &mut dlq).await;
    request_reply_search_and_errors(&bus).await;
    core_nats_and_exactly_once(&bus).await;
    readiness_and_metrics(&bus).await;
    s.stop().await;
    let _ = js.delete_stream(&stream_name).await;
}

async fn jetstream_ingest_and_dead_letters(bus: &Bus<'_>, dlq: &mut async_nats::Subscriber) {
    let s = bus.s;
    let js = bus.js;
    let p = bus.p;
    // N good events through JetStream, with bad ones between them.
    let cube = "nats-cube";
    let n = 30;
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("511-byte event id", json!({"event_id": "e".repeat(511), "kind": "messages", "cube_id": cube, "user_id": "u", "payload": {"messages": "hi"}}).to_string().into_bytes()),
        ("empty feedback target", json!({"kind": "feedback", "cube_id": cube, "user_id": "u", "payload": {"feedback_content": "no", "retrieved_memory_ids": [""]}}).to_string().into_bytes()),
        ("reserved info key", json!({"kind": "messages", "cube_id": cube, "user_id": "u", "info": {"derived_from": "x".repeat(2100)}, "payload": {"messages": "a planted lineage link"}}).to_string().into_bytes()),
        // Passes validation (each id within 256 bytes), but cube + session is an index key no
        // LMDB holds: the sink isolates it in its own child transaction.
        ("unindexable key", json!({"kind": "messages", "cube_id": "c".repeat(250), "user_id": "u", "session_id": "s".repeat(256), "payload": {"messages": "an unindexable session"}}).to_string().into_bytes()),
        ("malformed JSON", b"{\"kind\": \"messages\", ".to_vec()),
        ("wrong kind", json!({"kind": "poem", "cube_id": cube, "user_id": "u", "payload": {}}).to_string().into_bytes()),
        ("missing cube", json!({"kind": "messages", "user_id": "u", "payload": {"messages": "hi"}}).to_string().into_bytes()),
        ("invalid UTF-8", vec![b'{', 0xff, 0xfe, b'}']),
        ("oversized", json!({"kind": "messages", "cube_id": cube, "user_id": "u", "payload": {"messages": "x".repeat(5000)}}).to_string().into_bytes()),
        ("bad filter", json!({"kind": "delete", "cube_id": cube, "user_id": "u", "payload": {"filter": {"created_at": {"around": 1}}}}).to_string().into_bytes()),
    ];
    for i in 0..n {
        let ack = js
            .publish(
                format!("{p}.events.{cube}"),
                Bytes::from(turn(i, cube).to_string()),
            )
            .await
            .unwrap();
        ack.await.unwrap();
        if i % 3 == 0 && i / 3 < bad.len() {
            // On the subject of the cube the pill names (a mismatch is a pill of its own).
            let to = serde_json::from_slice::<Value>(&bad[i / 3].1)
                .ok()
                .and_then(|v| v["cube_id"].as_str().map(String::from))
                .unwrap_or_else(|| cube.to_string());
            js.publish(
                format!("{p}.events.{to}"),
                Bytes::from(bad[i / 3].1.clone()),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        }
    }
    tests::wait_for(|| stored_events(s, cube, n) == n, "all good events stored").await;
    tests::wait_for(
        || {
            let txn = s.memos.store.read_txn().unwrap();
            s.memos.store.dead_letters(&txn).unwrap().len() >= bad.len()
        },
        "dead letters",
    )
    .await;
    let dead = {
        let txn = s.memos.store.read_txn().unwrap();
        s.memos.store.dead_letters(&txn).unwrap()
    };
    assert_eq!(dead.len(), bad.len(), "{dead:?}");
    for (_, d) in &dead {
        assert_eq!(d.source, "nats");
        assert!(d.position.as_deref().unwrap().starts_with("nats/"), "{d:?}");
        assert!(!d.reason.is_empty());
    }
    let reasons: Vec<String> = dead.iter().map(|(_, d)| d.reason.to_lowercase()).collect();
    assert!(reasons.iter().any(|r| r.contains("utf-8")), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("bytes, the limit")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("poem")), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("reserved")),
        "{reasons:?}"
    );
    // The unindexable key passed decoding; the sink isolated it in its own child transaction.
    assert!(
        reasons.iter().any(|r| r.starts_with("sink:")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("retrieved_memory_ids")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("unknown operator")),
        "{reasons:?}"
    );
    // The dead-letter subject got each with its reason and the original bytes.
    let mut on_subject = Vec::new();
    for _ in 0..bad.len() {
        let m = tokio::time::timeout(Duration::from_secs(5), dlq.next())
            .await
            .expect("dead letter on the subject")
            .unwrap();
        let h = m.headers.clone().unwrap();
        assert!(!h.get("memos-reason").unwrap().as_str().is_empty());
        assert_eq!(h.get("memos-source").unwrap().as_str(), "nats");
        on_subject.push(m.payload.to_vec());
    }
    for (what, b) in &bad {
        assert!(
            on_subject.contains(b),
            "{what} missing from the DLQ subject"
        );
    }
}

async fn request_reply_search_and_errors(bus: &Bus<'_>) {
    let s = bus.s;
    let client = bus.client;
    let p = bus.p;
    let cube = "nats-cube";
    // Search over request-reply returns what REST returns.
    let q = json!({"query": "What pet did Nina adopt?", "user_id": "nina", "readable_cube_ids": [cube], "top_k": 5});
    let reply = client
        .request(format!("{p}.search"), Bytes::from(q.to_string()))
        .await
        .unwrap();
    let bus: Value = serde_json::from_slice(&reply.payload).unwrap();
    let (st, rest) = s.post("/product/search", q.clone()).await;
    assert_eq!(st, 200);
    assert_eq!(bus["code"], 200, "{bus}");
    let ids = |v: &Value| -> Vec<String> {
        v["data"]["text_mem"][0]["memories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(!ids(&bus).is_empty());
    assert_eq!(ids(&bus), ids(&rest));
    assert!(
        bus["data"]["text_mem"][0]["memories"][0]["memory"]
            .as_str()
            .unwrap()
            .contains("kitten")
    );
    // Errors are replied, not dropped.
    let reply = client
        .request(format!("{p}.search"), Bytes::from_static(b"{not json"))
        .await
        .unwrap();
    let err: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(err["code"], 400, "{err}");
    assert!(err["data"].is_null());
    let reply = client
        .request(
            format!("{p}.search"),
            Bytes::from(json!({"query": "x", "user_id": "nina", "dedup": "maybe"}).to_string()),
        )
        .await
        .unwrap();
    let err: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(err["code"], 400, "{err}");
}

async fn core_nats_and_exactly_once(bus: &Bus<'_>) {
    let s = bus.s;
    let client = bus.client;
    let js = bus.js;
    let p = bus.p;
    let cube = "nats-cube";
    // Core NATS fire-and-forget.
    client
        .publish(
            format!("{p}.ingest.{cube}"),
            Bytes::from(turn(100, cube).to_string()),
        )
        .await
        .unwrap();
    client.flush().await.unwrap();
    tests::wait_for(
        || {
            let txn = s.memos.store.read_txn().unwrap();
            s.memos
                .store
                .event(&txn, cube, &format!("{cube}/turn-100"))
                .unwrap()
                .is_some()
        },
        "core NATS event",
    )
    .await;

    // Exactly-once effect: the same event again over JetStream, core NATS and REST → one memory.
    let before = s.memos.store.stats().unwrap().memories;
    js.publish(
        format!("{p}.events.{cube}"),
        Bytes::from(turn(3, cube).to_string()),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    client
        .publish(
            format!("{p}.ingest.{cube}"),
            Bytes::from(turn(3, cube).to_string()),
        )
        .await
        .unwrap();
    let (st, b) = s
        .post("/product/add", json!({"user_id": "nina", "writable_cube_ids": [cube], "event_id": format!("{cube}/turn-3"),
            "async_mode": "sync", "messages": turn(3, cube)["payload"]["messages"].clone()}))
        .await;
    assert_eq!(st, 200, "{b}");
    // A marker event after them: once it is stored, the duplicates were processed too.
    js.publish(
        format!("{p}.events.{cube}"),
        Bytes::from(turn(101, cube).to_string()),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    tests::wait_for(
        || {
            let txn = s.memos.store.read_txn().unwrap();
            s.memos
                .store
                .event(&txn, cube, &format!("{cube}/turn-101"))
                .unwrap()
                .is_some()
        },
        "marker",
    )
    .await;
    let after = s.memos.store.stats().unwrap().memories;
    let marker_memories = {
        let txn = s.memos.store.read_txn().unwrap();
        s.memos
            .store
            .event(&txn, cube, &format!("{cube}/turn-101"))
            .unwrap()
            .unwrap()
            .memory_ids
            .len() as u64
    };
    assert_eq!(after, before + marker_memories, "replays added memories");
}

async fn readiness_and_metrics(bus: &Bus<'_>) {
    let s = bus.s;
    // Readiness and the source's metrics: connected, and its consumer lag reported (nothing is
    // waiting once everything above was processed).
    let (status, v) = s.get("/ready").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["sources"]["nats"], true);
    let mut text = String::new();
    for _ in 0..100 {
        text = s.memos.metrics_text().await.unwrap();
        if text.contains("memos_consumer_lag_messages{partition=") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        text.contains("memos_source_connected{source=\"nats\"} 1"),
        "{text}"
    );
    let lag_line = text
        .lines()
        .find(|l| l.starts_with("memos_consumer_lag_messages{") && l.contains("source=\"nats\""))
        .unwrap_or_else(|| panic!("no nats lag in {text}"));
    assert!(lag_line.ends_with(" 0"), "{lag_line}");
}
