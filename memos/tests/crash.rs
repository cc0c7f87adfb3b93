//! Crash safety: `memos serve` ingesting from Kafka (tansu) and JetStream is killed with
//! SIGKILL at random points while producers keep publishing, restarted each time; at the end
//! every event the brokers acknowledged is stored exactly once (0 lost, 0 duplicated).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::RngExt;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

mod common;

use common::{free_port, memos, model_dir};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tansu() -> (Kill, String) {
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let bin = std::env::var_os("HOME")
        .map(|h| std::path::PathBuf::from(h).join(".cargo/bin/tansu"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| "tansu".into());
    let child = Command::new(bin)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tansu 0.6.0 (.ci/run installs it)");
    let k = Kill(child);
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return (k, format!("127.0.0.1:{port}"));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("tansu did not start");
}

fn text(src: &str, i: usize) -> String {
    format!("Sensor entry {src}-{i} reads {} units.", 1000 + i)
}

fn event(src: &str, i: usize) -> Value {
    let cube = format!("crash-{}", i % 4);
    json!({"event_id": format!("{src}-{i}"), "kind": "messages", "cube_id": cube, "user_id": "ops",
           "payload": {"messages": [{"role": "user", "content": text(src, i)}]}})
}

/// Publishes `n` events over Kafka and `n` over JetStream, retrying each until its broker
/// acknowledged it (the server may be down at any moment).
async fn publish_all(brokers: String, p: String, n: usize) {
    let prod: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("partitioner", "murmur2_random")
        .set("message.timeout.ms", "30000")
        .create()
        .unwrap();
    let nats = async_nats::connect("nats://127.0.0.1:4222").await.unwrap();
    let js = async_nats::jetstream::new(nats);
    let stream = format!("{}_EVENTS", p.to_uppercase());
    for _ in 0..400 {
        if js.get_stream(&stream).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for i in 0..n {
        let e = event("k", i);
        let cube = e["cube_id"].as_str().unwrap().to_string();
        let body = e.to_string();
        loop {
            let r = prod
                .send(
                    FutureRecord::to(&format!("{p}.events"))
                        .key(&cube)
                        .payload(&body),
                    Duration::from_secs(30),
                )
                .await;
            if r.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let e = event("n", i);
        let cube = e["cube_id"].as_str().unwrap().to_string();
        loop {
            let acked = match js
                .publish(format!("{p}.events.{cube}"), e.to_string().into())
                .await
            {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            };
            if acked {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if i % 8 == 0 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
}

#[test]
fn kill_9_at_random_points_loses_and_duplicates_nothing() {
    let model = model_dir();
    let (_broker, brokers) = tansu();
    let data = tempfile::tempdir().unwrap();
    let p = format!("c{}", &uuid_like());
    let port = free_port();
    let env: Vec<(String, String)> = vec![
        ("MEMOS_DATA_DIR".into(), data.path().display().to_string()),
        ("MEMOS_MODEL_DIR".into(), model.display().to_string()),
        ("MEMOS_HTTP_ADDR".into(), format!("127.0.0.1:{port}")),
        ("MEMOS_PG_ADDR".into(), "127.0.0.1:0".into()),
        ("MEMOS_METRICS_ADDR".into(), "127.0.0.1:0".into()),
        ("MEMOS_PIPELINE__BATCH_SIZE".into(), "16".into()),
        ("MEMOS_PIPELINE__LINGER_MS".into(), "5".into()),
        ("MEMOS_KAFKA_BROKERS".into(), brokers.clone()),
        ("MEMOS_KAFKA__GROUP_ID".into(), format!("{p}-g")),
        ("MEMOS_KAFKA__EVENTS_TOPIC".into(), format!("{p}.events")),
        (
            "MEMOS_KAFKA__SEARCH_REQUESTS_TOPIC".into(),
            format!("{p}.search.requests"),
        ),
        (
            "MEMOS_KAFKA__SEARCH_RESPONSES_TOPIC".into(),
            format!("{p}.search.responses"),
        ),
        ("MEMOS_KAFKA__DLQ_TOPIC".into(), format!("{p}.dlq")),
        ("MEMOS_KAFKA__PARTITIONS".into(), "4".into()),
        ("MEMOS_KAFKA__SESSION_TIMEOUT_MS".into(), "6000".into()),
        ("MEMOS_NATS_URL".into(), "nats://127.0.0.1:4222".into()),
        (
            "MEMOS_NATS__STREAM".into(),
            format!("{}_EVENTS", p.to_uppercase()),
        ),
        ("MEMOS_NATS__SUBJECTS".into(), format!("{p}.events.>")),
        ("MEMOS_NATS__DURABLE".into(), format!("{p}-memos")),
        ("MEMOS_NATS__CORE_SUBJECT".into(), format!("{p}.ingest.>")),
        ("MEMOS_NATS__SEARCH_SUBJECT".into(), format!("{p}.search")),
        ("MEMOS_NATS__QUEUE_GROUP".into(), format!("{p}-q")),
        ("MEMOS_NATS__DLQ_SUBJECT".into(), format!("{p}.dlq")),
        ("MEMOS_NATS__ACK_WAIT_SECS".into(), "2".into()),
    ];
    let start = || {
        let child = memos()
            .arg("serve")
            .envs(env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let k = Kill(child);
        for _ in 0..400 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return k;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("memos did not start");
    };
    let mut server = start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let n = 240;
    // Producers: Kafka and JetStream, every publish acknowledged by its broker.
    let producers = rt.spawn(publish_all(brokers.clone(), p.clone(), n));
    // Kill -9 at random points while they publish, and restart.
    let mut rng = rand::rng();
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1500)));
        let _ = server.0.kill(); // SIGKILL
        let _ = server.0.wait();
        server = start();
    }
    rt.block_on(producers).unwrap();
    the_survivor_holds_every_event_once(server, port, n, &rt);
}

/// After the kills: the last process catches up and holds every acknowledged event exactly
/// once; then it stops gracefully.
fn the_survivor_holds_every_event_once(
    mut server: Kill,
    port: u16,
    n: usize,
    rt: &tokio::runtime::Runtime,
) {
    // Let the last process catch up, then count.
    let url = format!("http://127.0.0.1:{port}");
    let expected: BTreeMap<String, usize> = (0..n)
        .flat_map(|i| [text("k", i), text("n", i)])
        .map(|t| (t, 1))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(180);
    let found = loop {
        let mut found: BTreeMap<String, usize> = BTreeMap::new();
        for c in 0..4 {
            let v: Value = rt.block_on(async {
                reqwest::Client::new()
                    .post(format!("{url}/product/get_memory"))
                    .json(&json!({"mem_cube_id": format!("crash-{c}"), "page": 1, "page_size": 10000}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap()
            });
            for m in v["data"]["text_mem"][0]["memories"]
                .as_array()
                .into_iter()
                .flatten()
            {
                // The stored text carries the speaker (and a date when there is one).
                let t = m["memory"].as_str().unwrap();
                let t = t.find("Sensor entry").map(|i| &t[i..]).unwrap_or(t);
                *found.entry(t.to_string()).or_default() += 1;
            }
        }
        if found.len() >= expected.len() || Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let lost: Vec<&String> = expected
        .keys()
        .filter(|t| !found.contains_key(*t))
        .collect();
    let dup: Vec<(&String, &usize)> = found.iter().filter(|(_, c)| **c > 1).collect();
    let stray: Vec<&String> = found
        .keys()
        .filter(|t| !expected.contains_key(*t))
        .collect();
    assert!(
        lost.is_empty(),
        "lost {} events, e.g. {:?}; found {}, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)],
        found.len(),
        found.keys().take(3).collect::<Vec<_>>()
    );
    assert!(dup.is_empty(), "duplicated: {dup:?}");
    assert!(stray.is_empty(), "unexpected memories: {stray:?}");
    assert_eq!(found.len(), 2 * n);
    // Graceful stop of the last one.
    let _ = Command::new("kill").arg(server.0.id().to_string()).status();
    let st = server.0.wait().unwrap();
    assert!(st.success(), "{st:?}");
    drop(server);
}

fn uuid_like() -> String {
    let mut rng = rand::rng();
    (0..10)
        .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
        .collect()
}
