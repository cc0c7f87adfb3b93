//! Kafka end to end against a real Kafka-protocol broker (tansu): events in through a consumer
//! group with commit-after-store, bad input to the dead letters (store and topic), search over
//! request/response topics equal to REST, one memory for an event sent over Kafka and NATS, and
//! two processes in one group splitting the partitions.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use connectors::kafka::source::publish;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::FutureProducer;
use serde_json::{Value, json};

fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("partitioner", "murmur2_random")
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap()
}

fn consumer(brokers: &str, topic: &str) -> StreamConsumer {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", tests::unique("reader-"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    c
}

fn header(m: &impl Message, name: &str) -> Option<String> {
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn turn(i: usize, cube: &str) -> Value {
    let topics = [
        "bought a red road bike",
        "booked a trip to Kyoto in autumn",
        "started a sourdough starter called Bubbles",
        "switched teams to the payments group",
    ];
    json!({"event_id": format!("{cube}/turn-{i}"), "kind": "messages", "cube_id": cube, "user_id": "omar",
           "payload": {"messages": [{"role": "user", "content": format!("Note {i}: Omar {} recently.", topics[i % topics.len()])}]}})
}

fn has_event(s: &tests::Server, cube: &str, id: &str) -> bool {
    let txn = s.memos.store.read_txn().unwrap();
    s.memos.store.event(&txn, cube, id).unwrap().is_some()
}

async fn kafka_search(
    brokers: &str,
    topic: &str,
    replies: &mut StreamConsumer,
    reply_topic: &str,
    body: &Value,
    cube: &str,
) -> Value {
    let corr = uuid::Uuid::new_v4().to_string();
    let mut h = BTreeMap::new();
    h.insert("correlation-id".to_string(), corr.clone());
    h.insert("reply-to".to_string(), reply_topic.to_string());
    publish(
        &producer(brokers),
        topic,
        Some(cube),
        &h,
        None,
        body.to_string().as_bytes(),
    )
    .await
    .unwrap();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(20), replies.recv())
            .await
            .expect("a search reply")
            .unwrap();
        if header(&m, "correlation-id").as_deref() == Some(corr.as_str()) {
            return serde_json::from_slice(m.payload().unwrap()).unwrap();
        }
    }
}

/// What the phases share: the server, the producer, the events topic, the topic and subject
/// prefixes.
struct Kafka<'a> {
    s: &'a tests::Server,
    brokers: &'a str,
    prod: &'a FutureProducer,
    events: &'a str,
    p: &'a str,
    nats_prefix: &'a str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_ingest_dead_letters_and_request_response_search() {
    let broker = tests::Tansu::start();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tests::config(dir.path());
    let p = tests::kafka_config(&mut cfg, &broker.brokers, 4);
    let nats_prefix = tests::nats_config(&mut cfg);
    cfg.pipeline.max_event_bytes = 4096;
    let nats_url = cfg.nats.url.clone();
    let s = tests::Server::start(cfg).await;
    let events = format!("{p}.events");
    let prod = producer(&broker.brokers);
    let client = async_nats::connect(&nats_url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream_name = format!("{}_EVENTS", nats_prefix.to_uppercase());
    let k = Kafka {
        s: &s,
        brokers: &broker.brokers,
        prod: &prod,
        events: &events,
        p: &p,
        nats_prefix: &nats_prefix,
    };
    let pills = poison_pills_fail_alone(&k).await;
    request_response_search_equals_rest(&k).await;
    let after = one_event_over_two_buses_is_one_memory(&k, &js, &stream_name).await;
    let cfg = s.memos.cfg.clone();
    s.stop().await;
    let _ = js.delete_stream(&stream_name).await;
    // Restart under a fresh consumer group (as if Kafka had lost the committed offsets): the
    // source resumes from the offsets stored with the batches, so nothing is read twice —
    // the dead letters (which are not deduplicated by event id) stay as they were.
    restart_resumes_from_the_stored_offsets(&prod, &events, cfg, pills, after).await;
}

/// Poison pills between good events: each dead-lettered alone, the partition moves past it,
/// the source position stored, the DLQ topic fed. Returns how many pills there were.
async fn poison_pills_fail_alone(k: &Kafka<'_>) -> usize {
    let s = k.s;
    let brokers = k.brokers;
    let prod = k.prod;
    let events = k.events;
    let p = k.p;
    let cube = "kafka-cube";
    let n = 48;
    // Poison pills that pass decoding but no store could hold (the sink issue) sit between good
    // events of the same partition: each is dead-lettered alone and the partition moves past it.
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("511-byte event id", json!({"event_id": "e".repeat(511), "kind": "messages", "cube_id": cube, "user_id": "u", "payload": {"messages": "hi"}}).to_string().into_bytes()),
        ("600-byte agent id", json!({"kind": "messages", "cube_id": cube, "user_id": "u", "agent_id": "a".repeat(600), "payload": {"messages": "hi"}}).to_string().into_bytes()),
        ("empty feedback target", json!({"kind": "feedback", "cube_id": cube, "user_id": "u", "payload": {"feedback_content": "no", "retrieved_memory_ids": [""]}}).to_string().into_bytes()),
        ("reserved info key", json!({"kind": "messages", "cube_id": cube, "user_id": "u", "info": {"derived_from": "x".repeat(2100)}, "payload": {"messages": "a planted lineage link"}}).to_string().into_bytes()),
        ("unindexable key", json!({"kind": "messages", "cube_id": "c".repeat(250), "user_id": "u", "session_id": "s".repeat(256), "payload": {"messages": "an unindexable session"}}).to_string().into_bytes()),
        ("malformed JSON", b"{\"kind\": ".to_vec()),
        ("wrong kind", json!({"kind": "poem", "cube_id": cube, "user_id": "u", "payload": {}}).to_string().into_bytes()),
        ("missing cube", json!({"kind": "messages", "user_id": "u", "payload": {"messages": "hi"}}).to_string().into_bytes()),
        ("invalid UTF-8", vec![b'{', 0xc3, 0x28, b'}']),
        ("oversized", json!({"kind": "messages", "cube_id": cube, "user_id": "u", "payload": {"messages": "y".repeat(5000)}}).to_string().into_bytes()),
        ("bad filter", json!({"kind": "delete", "cube_id": cube, "user_id": "u", "payload": {"filter": {"and": 3}}}).to_string().into_bytes()),
    ];
    let none = BTreeMap::new();
    for i in 0..n {
        publish(
            prod,
            events,
            Some(cube),
            &none,
            None,
            turn(i, cube).to_string().as_bytes(),
        )
        .await
        .unwrap();
        if i % 4 == 1 && i / 4 < bad.len() {
            // Keyed by the cube the pill names, as a producer would.
            let key = serde_json::from_slice::<Value>(&bad[i / 4].1)
                .ok()
                .and_then(|v| v["cube_id"].as_str().map(String::from))
                .unwrap_or_else(|| cube.to_string());
            publish(prod, events, Some(&key), &none, None, &bad[i / 4].1)
                .await
                .unwrap();
        }
    }
    tests::wait_for(
        || (0..n).all(|i| has_event(s, cube, &format!("{cube}/turn-{i}"))),
        "all good events stored",
    )
    .await;
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
    assert_eq!(dead.len(), bad.len());
    for (_, d) in &dead {
        assert_eq!(d.source, "kafka");
        assert!(
            d.position
                .as_deref()
                .unwrap()
                .starts_with(&format!("kafka/{events}/"))
        );
    }
    // The source position of the cube's partition is in the store: one past the last offset.
    let part = connectors::kafka::partition_for(cube, 4);
    let stored_offset: i64 = {
        let txn = s.memos.store.read_txn().unwrap();
        s.memos
            .store
            .offset(&txn, &format!("kafka/{events}/{part}"))
            .unwrap()
            .expect("offset stored with the batch")
            .parse()
            .unwrap()
    };
    // Pills keyed by another cube went to that cube's partition.
    let here = bad
        .iter()
        .filter(|(_, b)| {
            let key = serde_json::from_slice::<Value>(b)
                .ok()
                .and_then(|v| v["cube_id"].as_str().map(String::from))
                .unwrap_or_else(|| cube.to_string());
            connectors::kafka::partition_for(&key, 4) == part
        })
        .count();
    assert_eq!(
        stored_offset,
        (n + here) as i64,
        "every message of the partition"
    );
    // Dead letters on the DLQ topic, with reasons and the original bytes.
    let dlq = consumer(brokers, &format!("{p}.dlq"));
    let mut got = Vec::new();
    while got.len() < bad.len() {
        let m = tokio::time::timeout(Duration::from_secs(20), dlq.recv())
            .await
            .expect("dead letter on the topic")
            .unwrap();
        assert_eq!(header(&m, "memos-source").as_deref(), Some("kafka"));
        assert!(!header(&m, "memos-reason").unwrap().is_empty());
        got.push(m.payload().unwrap_or(&[]).to_vec());
    }
    for (what, b) in &bad {
        assert!(got.contains(b), "{what} missing from the DLQ topic");
    }
    drop(dlq);

    bad.len()
}

async fn request_response_search_equals_rest(k: &Kafka<'_>) {
    let s = k.s;
    let brokers = k.brokers;
    let p = k.p;
    let cube = "kafka-cube";
    // Search over the request/response topics equals REST.
    let reply_topic = format!("{p}.search.responses");
    let mut replies = consumer(brokers, &reply_topic);
    let q = json!({"query": "Where is Omar travelling?", "user_id": "omar", "readable_cube_ids": [cube], "top_k": 5});
    let bus = kafka_search(
        brokers,
        &format!("{p}.search.requests"),
        &mut replies,
        &reply_topic,
        &q,
        cube,
    )
    .await;
    let (_, rest) = s.post("/product/search", q.clone()).await;
    let ids = |v: &Value| -> Vec<String> {
        v["data"]["text_mem"][0]["memories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(bus["code"], 200, "{bus}");
    assert!(!ids(&bus).is_empty());
    assert_eq!(ids(&bus), ids(&rest));
    assert!(
        bus["data"]["text_mem"][0]["memories"][0]["memory"]
            .as_str()
            .unwrap()
            .contains("Kyoto")
    );
    let err = kafka_search(
        brokers,
        &format!("{p}.search.requests"),
        &mut replies,
        &reply_topic,
        &json!({"query": "x", "user_id": "omar", "top_k": 0}),
        cube,
    )
    .await;
    assert_eq!(err["code"], 400, "{err}");
    drop(replies);
}

/// One event over Kafka and NATS (and again over Kafka) is one memory. Returns the memory count.
async fn one_event_over_two_buses_is_one_memory(
    k: &Kafka<'_>,
    js: &async_nats::jetstream::Context,
    stream_name: &str,
) -> u64 {
    let s = k.s;
    let prod = k.prod;
    let events = k.events;
    let nats_prefix = k.nats_prefix;
    let cube = "kafka-cube";
    let none = BTreeMap::new();
    // One event over Kafka and NATS (and again over Kafka): one memory.
    let before = s.memos.store.stats().unwrap().memories;
    let e = turn(500, cube).to_string();
    publish(prod, events, Some(cube), &none, None, e.as_bytes())
        .await
        .unwrap();
    publish(prod, events, Some(cube), &none, None, e.as_bytes())
        .await
        .unwrap();
    for _ in 0..200 {
        if js.get_stream(&stream_name).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    js.publish(
        format!("{nats_prefix}.events.{cube}"),
        Bytes::from(e.clone()),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let marker = turn(501, cube).to_string();
    publish(prod, events, Some(cube), &none, None, marker.as_bytes())
        .await
        .unwrap();
    js.publish(format!("{nats_prefix}.events.{cube}"), Bytes::from(marker))
        .await
        .unwrap()
        .await
        .unwrap();
    tests::wait_for(|| has_event(s, cube, &format!("{cube}/turn-501")), "marker").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = s.memos.store.stats().unwrap().memories;
    assert_eq!(after, before + 2, "turn-500 and turn-501 once each");
    after
}

async fn restart_resumes_from_the_stored_offsets(
    prod: &FutureProducer,
    events: &str,
    mut cfg: server::Config,
    pills: usize,
    after: u64,
) {
    let cube = "kafka-cube";
    let none = BTreeMap::new();
    // Restart under a fresh consumer group (as if Kafka had lost the committed offsets): the
    // source resumes from the offsets stored with the batches, so nothing is read twice —
    // the dead letters (which are not deduplicated by event id) stay as they were.
    cfg.kafka.group_id = tests::unique("fresh-");
    cfg.nats.url = String::new();
    let s = tests::Server::start(cfg).await;
    publish(
        prod,
        events,
        Some(cube),
        &none,
        None,
        turn(600, cube).to_string().as_bytes(),
    )
    .await
    .unwrap();
    tests::wait_for(
        || has_event(&s, cube, &format!("{cube}/turn-600")),
        "new event after restart",
    )
    .await;
    let txn = s.memos.store.read_txn().unwrap();
    assert_eq!(
        s.memos.store.dead_letters(&txn).unwrap().len(),
        pills,
        "old messages were re-read"
    );
    drop(txn);
    assert_eq!(s.memos.store.stats().unwrap().memories, after + 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_in_one_group_split_the_partitions() {
    let broker = tests::Tansu::start();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut c1 = tests::config(d1.path());
    let p = tests::kafka_config(&mut c1, &broker.brokers, 4);
    let mut c2 = tests::config(d2.path());
    c2.kafka = c1.kafka.clone();
    let s1 = tests::Server::start(c1).await;
    let s2 = tests::Server::start(c2).await;
    // Both members hold partitions.
    tests::wait_for_secs(
        || {
            let (a, b) = (
                s1.memos.ownership.partitions(),
                s2.memos.ownership.partitions(),
            );
            !a.is_empty() && !b.is_empty() && a.len() + b.len() == 4
        },
        "the group to split the partitions",
        // A rebalance under a loaded machine (a cold CI build beside it) can take a while.
        90,
    )
    .await;
    let (a, b) = (
        s1.memos.ownership.partitions(),
        s2.memos.ownership.partitions(),
    );
    assert!(a.iter().all(|x| !b.contains(x)), "{a:?} {b:?}");
    // Cubes spread over partitions; each lands only in its owner's shard.
    let prod = producer(&broker.brokers);
    let none = BTreeMap::new();
    let cubes: Vec<String> = (0..12).map(|i| format!("cube-{i}")).collect();
    for c in &cubes {
        publish(
            &prod,
            &format!("{p}.events"),
            Some(c),
            &none,
            None,
            turn(0, c).to_string().as_bytes(),
        )
        .await
        .unwrap();
    }
    tests::wait_for(
        || {
            cubes.iter().all(|c| {
                has_event(&s1, c, &format!("{c}/turn-0"))
                    || has_event(&s2, c, &format!("{c}/turn-0"))
            })
        },
        "every cube stored by one process",
    )
    .await;
    let mut owners = (0, 0);
    for c in &cubes {
        let (in1, in2) = (
            has_event(&s1, c, &format!("{c}/turn-0")),
            has_event(&s2, c, &format!("{c}/turn-0")),
        );
        assert!(in1 ^ in2, "{c} is in exactly one shard");
        assert_eq!(
            in1,
            s1.memos.ownership.owns(c),
            "{c} is in its owner's shard"
        );
        if in1 { owners.0 += 1 } else { owners.1 += 1 }
    }
    assert!(owners.0 > 0 && owners.1 > 0, "{owners:?}");
    // A search for any cube over the bus is answered by its owner (co-partitioned requests).
    let reply_topic = format!("{p}.search.responses");
    let mut replies = consumer(&broker.brokers, &reply_topic);
    for c in &cubes {
        let q = json!({"query": "What did Omar buy?", "user_id": "omar", "readable_cube_ids": [c], "top_k": 3});
        let r = kafka_search(
            &broker.brokers,
            &format!("{p}.search.requests"),
            &mut replies,
            &reply_topic,
            &q,
            c,
        )
        .await;
        assert_eq!(r["code"], 200, "{r}");
        let mems = r["data"]["text_mem"][0]["memories"].as_array().unwrap();
        assert_eq!(mems.len(), 1, "{c}: answered by the owner: {r}");
        assert!(mems[0]["memory"].as_str().unwrap().contains("road bike"));
    }
    drop(replies);
    // A search for any cube sent over REST to either process is answered too (forwarded to the
    // owner over the bus when it is not local).
    for s in [&s1, &s2] {
        for c in &cubes {
            let (st, b) = s
                .post("/product/search", json!({"query": "What did Omar buy?", "user_id": "omar", "readable_cube_ids": [c], "top_k": 3}))
                .await;
            assert_eq!(st, 200, "{b}");
            assert_eq!(
                b["data"]["text_mem"][0]["memories"]
                    .as_array()
                    .unwrap()
                    .len(),
                1,
                "{c} via {}: {b}",
                s.url
            );
        }
    }
    s1.stop().await;
    s2.stop().await;
}
