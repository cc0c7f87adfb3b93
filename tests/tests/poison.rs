//! Per-event fault isolation (the sink issue): poison pills sent in one batch with good events
//! of another tenant fail alone — REST answers 4xx naming the problem, each is a dead letter with
//! its reason, the good events commit and are searchable — and a pipeline thread that dies is
//! reported by `/ready` (503 with the reason) and restarted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use operators::{Collector, Draft, OpContext, Operator, OperatorError};
use pipelines::runtime::{Stage, StageFactory};
use serde_json::{Value, json};

/// Longer than an LMDB key may be (511 bytes).
const UNKEYABLE: usize = 600;

/// A custom stage that misbehaves on marked drafts: it panics on `PANIC-ME`, gives `LONG-KEY`
/// a session id LMDB cannot index (so only the sink notices), reports `FATAL-ME` as fatal, and
/// fails to start while `start_failures` is above zero.
struct Saboteur {
    start_failures: Arc<AtomicU32>,
}

impl Operator for Saboteur {
    type In = Draft;
    type Out = Draft;

    fn name(&self) -> &'static str {
        "saboteur"
    }

    fn on_start(&mut self, _ctx: &OpContext) -> operators::Result<()> {
        let left = self.start_failures.load(Ordering::SeqCst);
        if left > 0 {
            self.start_failures.store(left - 1, Ordering::SeqCst);
            panic!("saboteur refuses to start ({left} more)");
        }
        Ok(())
    }

    fn process(
        &mut self,
        batch: Vec<Draft>,
        _ctx: &OpContext,
        out: &mut Collector<Draft>,
    ) -> operators::Result<()> {
        for mut d in batch {
            if d.record.memory.contains("PANIC-ME") {
                panic!("saboteur panics on {}", d.event_id);
            }
            if d.record.memory.contains("FATAL-ME") {
                return Err(OperatorError::Fatal("saboteur lost its device".into()));
            }
            if d.record.memory.contains("LONG-KEY") {
                d.record.session_id = "s".repeat(UNKEYABLE);
            }
            out.collect(d);
        }
        Ok(())
    }
}

fn saboteur(start_failures: Arc<AtomicU32>) -> StageFactory {
    Arc::new(move || {
        vec![Box::new(Saboteur {
            start_failures: start_failures.clone(),
        }) as Stage]
    })
}

fn add(cube: &str, event_id: &str, text: &str) -> Value {
    json!({"user_id": "u1", "writable_cube_ids": [cube], "async_mode": "sync", "event_id": event_id,
           "messages": [{"role": "user", "content": text}]})
}

async fn start(dir: &std::path::Path, start_failures: Arc<AtomicU32>) -> tests::Server {
    let mut cfg = tests::config(dir);
    // Long enough that the concurrent requests below share one batch.
    cfg.pipeline.linger_ms = 400;
    cfg.pipeline.restart_backoff_ms = 300;
    cfg.pipeline.restart_backoff_max_ms = 2000;
    let store = Arc::new(store::Store::open(&cfg.data_dir, cfg.store_options()).unwrap());
    tests::Server::start_with_stages(
        cfg,
        store,
        tests::embedder(),
        Some(saboteur(start_failures)),
    )
    .await
}

fn dead_letters(s: &tests::Server) -> Vec<store::DeadLetter> {
    let txn = s.memos.store.read_txn().unwrap();
    s.memos
        .store
        .dead_letters(&txn)
        .unwrap()
        .into_iter()
        .map(|(_, d)| d)
        .collect()
}

async fn top_hit(s: &tests::Server, cube: &str, query: &str) -> String {
    let (st, b) = s
        .post(
            "/product/search",
            json!({"query": query, "user_id": "u1", "readable_cube_ids": [cube], "top_k": 1}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    b["data"]["text_mem"][0]["memories"][0]["memory"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_pills_fail_alone_and_the_rest_of_the_batch_commits() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), Arc::default()).await;
    let good_cube = "good-tenant";
    let bad_cube = "bad-tenant";
    let good: Vec<(String, String)> = [
        "Maya adopted a grey whippet called Pixel.",
        "The quarterly budget review moved to Thursday.",
        "Jonas is learning to play the cello.",
        "Our team switched the build to a new compiler.",
        "Priya ran her first half marathon in Lisbon.",
        "The greenhouse tomatoes need watering twice a day.",
    ]
    .iter()
    .enumerate()
    .map(|(i, t)| (format!("good-{i}"), t.to_string()))
    .collect();
    // (what, request path, body, a fragment the error must contain, dead-lettered: REST refuses
    // what fails validation before queueing it; what passes and fails later is a dead letter)
    let mut info_link = add(
        bad_cube,
        "bad-info",
        "A memory with a planted lineage link.",
    );
    info_link["info"] = json!({"derived_from": "x".repeat(UNKEYABLE)});
    let mut long_agent = add(bad_cube, "bad-agent", "A memory from a long agent id.");
    long_agent["agent_id"] = json!("a".repeat(600));
    let mut long_app = add(bad_cube, "bad-app", "A memory from a long app id.");
    long_app["app_id"] = json!("p".repeat(600));
    let bad: Vec<(&str, &str, Value, &str, bool)> = vec![
        (
            "511-byte event id",
            "/product/add",
            add(bad_cube, &"e".repeat(511), "hello"),
            "event_id",
            false,
        ),
        (
            "600-byte agent id",
            "/product/add",
            long_agent,
            "agent_id",
            false,
        ),
        ("600-byte app id", "/product/add", long_app, "app_id", false),
        (
            "a server-only info key",
            "/product/add",
            info_link,
            "reserved",
            false,
        ),
        (
            "empty retrieved memory id",
            "/product/feedback",
            json!({"user_id": "u1", "writable_cube_ids": [bad_cube], "async_mode": "sync",
                   "feedback_content": "That is wrong.", "retrieved_memory_ids": [""]}),
            "retrieved_memory_ids",
            false,
        ),
        (
            "an operator panics",
            "/product/add",
            add(bad_cube, "bad-panic", "PANIC-ME please"),
            "panic",
            true,
        ),
        (
            "a key only the sink refuses",
            "/product/add",
            add(bad_cube, "bad-key", "LONG-KEY in the session"),
            "sink",
            true,
        ),
    ];
    // All at once, so good and bad events share batches.
    let good_reqs = good
        .iter()
        .map(|(id, t)| s.post("/product/add", add(good_cube, id, t)));
    let bad_reqs = bad
        .iter()
        .map(|(_, path, body, _, _)| s.post(path, body.clone()));
    let time_limit = {
        let mut b = add(
            good_cube,
            "time-limit",
            "Lena renewed her passport at the embassy.",
        );
        b["messages"][0]["chat_time"] = json!("9223372036854775807");
        s.post("/product/add", b)
    };
    let (good_res, bad_res, time_res) = tokio::join!(
        futures::future::join_all(good_reqs),
        futures::future::join_all(bad_reqs),
        time_limit
    );
    for ((id, _), (st, b)) in good.iter().zip(&good_res) {
        assert_eq!(*st, 200, "{id}: {b}");
    }
    // A time at the integer limit is not a time: the memory is kept without one.
    assert_eq!(time_res.0, 200, "{}", time_res.1);
    for ((what, _, _, fragment, _), (st, b)) in bad.iter().zip(&bad_res) {
        assert!((400..500).contains(st), "{what}: {st} {b}");
        let msg = b["message"].as_str().unwrap_or_default().to_lowercase();
        assert!(msg.contains(fragment), "{what}: {msg}");
    }
    every_pill_is_a_dead_letter_and_nothing_else_is(s, good, bad).await;
}

async fn every_pill_is_a_dead_letter_and_nothing_else_is(
    s: tests::Server,
    good: Vec<(String, String)>,
    bad: Vec<(&str, &str, Value, &str, bool)>,
) {
    let (good_cube, bad_cube) = ("good-tenant", "bad-tenant");
    // Every poison pill that reached the pipeline is a dead letter with its reason; nothing
    // else is.
    let dead = dead_letters(&s);
    let reasons: Vec<String> = dead.iter().map(|d| d.reason.to_lowercase()).collect();
    assert_eq!(
        dead.len(),
        bad.iter().filter(|b| b.4).count(),
        "{reasons:?}"
    );
    for d in &dead {
        assert!(!d.reason.is_empty());
        assert!(!d.payload.is_empty());
    }
    assert!(
        reasons.iter().any(|r| r.contains("saboteur panics")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.starts_with("sink:")),
        "{reasons:?}"
    );
    // Nothing of the bad events was written, not even part of one.
    {
        let txn = s.memos.store.read_txn().unwrap();
        let ids = s.memos.store.cube_ids(&txn, bad_cube).unwrap();
        assert!(ids.is_empty(), "bad tenant has {} memories", ids.len());
    }
    // The good events are stored and searchable.
    for (_, text) in &good {
        let hit = top_hit(&s, good_cube, text).await;
        assert!(hit.contains(text.as_str()), "{text} → {hit}");
    }
    assert!(
        top_hit(&s, good_cube, "passport embassy")
            .await
            .contains("passport")
    );
    // The pipeline is alive and never restarted.
    let (st, b) = s.get("/ready").await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["pipeline"]["restarts"], 0);
    let (st, b) = s
        .post(
            "/product/add",
            add(
                good_cube,
                "after",
                "After the poison the pipeline still works.",
            ),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    // An `as_of` at the integer limit is a 400, not a reset connection.
    let r = reqwest::get(format!(
        "{}/product/get_memory/does-not-exist?as_of=9223372036854775807",
        s.url
    ))
    .await
    .expect("an answer, not a reset");
    assert_eq!(r.status().as_u16(), 400);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_pipeline_is_not_ready_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let start_failures = Arc::new(AtomicU32::new(0));
    let s = start(dir.path(), start_failures.clone()).await;
    let (st, b) = s
        .post("/product/add", add("c", "e1", "Before the crash."))
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(s.get("/ready").await.0, 200);

    // The operator reports a fatal error: its batch fails (503, not acknowledged) and the
    // pipeline thread is replaced; the new one fails to start twice more, so it stays down for
    // a while (backoff 300 ms, then 600 ms, then 1.2 s).
    start_failures.store(2, Ordering::SeqCst);
    let (st, b) = s.post("/product/add", add("c", "e2", "FATAL-ME now")).await;
    assert_eq!(st, 503, "{b}");
    let (st, b) = s.get("/ready").await;
    assert_eq!(st, 503, "{b}");
    assert_eq!(b["status"], "not ready");
    assert_eq!(b["pipeline"]["running"], false);
    let reason = b["pipeline"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains("lost its device") || reason.contains("refuses to start"),
        "{reason}"
    );
    let metrics = s.memos.metrics_text().await.unwrap();
    assert!(metrics.contains("memos_pipeline_up 0"), "{metrics}");

    // Recovery: ready again after the restarts, and events commit.
    let mut ready = (0, Value::Null);
    for _ in 0..200 {
        ready = s.get("/ready").await;
        if ready.0 == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(ready.0, 200, "{}", ready.1);
    assert_eq!(start_failures.load(Ordering::SeqCst), 0);
    assert_eq!(ready.1["pipeline"]["restarts"], 3, "{}", ready.1);
    let (st, b) = s
        .post("/product/add", add("c", "e3", "After the restart."))
        .await;
    assert_eq!(st, 200, "{b}");
    let hit = top_hit(&s, "c", "After the restart.").await;
    assert!(hit.contains("After the restart."), "{hit}");
    let metrics = s.memos.metrics_text().await.unwrap();
    assert!(
        metrics.contains("memos_pipeline_restarts_total 3"),
        "{metrics}"
    );
    assert!(metrics.contains("memos_pipeline_up 1"), "{metrics}");
    s.stop().await;
}
