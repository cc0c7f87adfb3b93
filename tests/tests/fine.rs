//! Fine mode against a real OpenAI-compatible HTTP server (scripted): extraction replaces the
//! fast memories only after the extracted ones are committed, and a failing, hanging or
//! nonsensical model leaves the fast memories searchable with the reason recorded.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tests::{FakeLlm, FakeReply};

async fn start(reply: tests::FakeScript) -> (tests::Server, FakeLlm, tempfile::TempDir) {
    let llm = FakeLlm::start(reply).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tests::config(dir.path());
    let mut m = llm.model("fake");
    m.timeout_secs = 1;
    m.max_retries = 1;
    cfg.llm.models = vec![m];
    (tests::Server::start(cfg).await, llm, dir)
}

async fn add_fine(s: &tests::Server, cube: &str, text: &str) -> Vec<Value> {
    let (st, b) = s
        .post("/product/add", json!({"user_id": "ana", "writable_cube_ids": [cube], "async_mode": "sync", "mode": "fine",
            "custom_tags": ["home"],
            "messages": [{"role": "user", "content": text, "chat_time": "2024-04-02T10:00:00Z"},
                         {"role": "assistant", "content": "How do you like it there?"}]}))
        .await;
    assert_eq!(st, 200, "{b}");
    b["data"].as_array().unwrap().clone()
}

/// Waits for the cube's fine task to finish and returns it.
async fn fine_task(s: &tests::Server, cube: &str) -> Value {
    for _ in 0..400 {
        let (_, b) = s.get("/product/scheduler/status?user_id=ana").await;
        if let Some(t) = b["data"].as_array().unwrap().iter().find(|t| {
            t["task_id"]
                .as_str()
                .unwrap()
                .starts_with(&format!("fine:{cube}:"))
                && (t["status"] == "completed" || t["status"] == "failed")
        }) {
            return t.clone();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no finished fine task for {cube}");
}

async fn status_of(s: &tests::Server, id: &str) -> Value {
    let (st, b) = s.get(&format!("/product/get_memory/{id}")).await;
    assert_eq!(st, 200, "{b}");
    b["data"]["metadata"].clone()
}

async fn found(s: &tests::Server, cube: &str, q: &str) -> Vec<String> {
    let (_, b) = s
        .post(
            "/product/search",
            json!({"user_id": "ana", "readable_cube_ids": [cube], "query": q, "top_k": 5}),
        )
        .await;
    b["data"]["text_mem"][0]["memories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["memory"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extraction_replaces_fast_memories_after_commit() {
    // A fenced answer with a trailing comma: repaired, not rejected.
    let (s, llm, _d) = start(Arc::new(|_, _| {
        FakeReply::Text("```json\n{\"memory list\": [{\"key\": \"Move to Lisbon\", \"memory_type\": \"UserMemory\", \"value\": \"Ana moved to Lisbon in March 2024.\", \"tags\": [\"move\", \"lisbon\"]},], \"preferences\": [{\"preference\": \"Ana prefers living by the sea.\", \"preference_type\": \"implicit_preference\", \"reasoning\": \"She moved to Lisbon.\"}], \"summary\": \"Ana moved.\"}\n```".into())
    }))
    .await;
    let fast = add_fine(&s, "f1", "I moved to Lisbon last month.").await;
    let fast_ids: Vec<String> = fast
        .iter()
        .map(|m| m["memory_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        fast_ids.len(),
        2,
        "the fast memories come back at once: {fast:?}"
    );
    let t = fine_task(&s, "f1").await;
    assert_eq!(t["status"], "completed", "{t}");
    let new_id = t["memories"][0]["memory_id"].as_str().unwrap().to_string();
    assert_eq!(
        t["memories"][0]["memory"],
        "Ana moved to Lisbon in March 2024."
    );
    // Preferences come out of the same call, as PreferenceMemory with their type.
    assert_eq!(t["memories"].as_array().unwrap().len(), 2, "{t}");
    assert_eq!(t["memories"][1]["memory_type"], "PreferenceMemory");
    let pref = status_of(&s, t["memories"][1]["memory_id"].as_str().unwrap()).await;
    assert_eq!(pref["info"]["preference_type"], "implicit_preference");
    // The extracted memory is searchable and marked fine; the fast ones are archived with a
    // pointer to it (and out of search).
    let got = found(&s, "f1", "When did Ana move to Lisbon?").await;
    assert_eq!(got[0], "Ana moved to Lisbon in March 2024.", "{got:?}");
    assert!(!got.iter().any(|g| g.contains("last month")), "{got:?}");
    let meta = status_of(&s, &new_id).await;
    assert_eq!(meta["memory_type"], "UserMemory");
    assert!(
        meta["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("mode:fine"))
    );
    assert!(meta["tags"].as_array().unwrap().contains(&json!("lisbon")));
    for id in &fast_ids {
        let m = status_of(&s, id).await;
        assert_eq!(m["status"], "archived", "{m}");
        assert_eq!(m["info"]["evolve_to"][0], new_id.as_str());
    }
    // What the model was asked: JSON mode, the conversation with its times, the tag hint.
    let r = &llm.requests()[0];
    assert_eq!(r["response_format"]["type"], "json_object");
    let user = r["messages"][1]["content"].as_str().unwrap();
    assert!(
        user.contains("I moved to Lisbon last month.") && user.contains("2024-04-02"),
        "{user}"
    );
    assert!(user.contains("home"), "{user}");
    let text = s.memos.metrics_text().await.unwrap();
    assert!(
        text.contains("memos_fine_jobs_total{outcome=\"ok\"} 1"),
        "{text}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_model_leaves_the_fast_memories() {
    // Per cube: a server error, a hang past the timeout, prose instead of JSON, JSON of the
    // wrong shape.
    let (s, _llm, _d) = start(Arc::new(|body: &Value, _| {
        let user = body["messages"][1]["content"]
            .as_str()
            .unwrap_or("")
            .to_string();
        if user.contains("boiler") {
            FakeReply::Status(500)
        } else if user.contains("garden") {
            FakeReply::Hang(Duration::from_secs(10))
        } else if user.contains("piano") {
            FakeReply::Text("Sorry, I cannot help with that.".into())
        } else {
            FakeReply::Text("{\"facts\": [\"Ana has a cat.\"]}".into())
        }
    }))
    .await;
    let cases = [
        ("c500", "The boiler broke again yesterday.", "HTTP 500"),
        (
            "chang",
            "I planted tomatoes in the garden.",
            "after 2 attempts",
        ),
        (
            "cprose",
            "I practise the piano every evening.",
            "malformed JSON",
        ),
        ("cshape", "My cat sleeps on the sofa.", "no \"memory list\""),
    ];
    for (cube, text, _) in &cases {
        add_fine(&s, cube, text).await;
    }
    for (cube, text, why) in &cases {
        let t = fine_task(&s, cube).await;
        assert_eq!(t["status"], "failed", "{t}");
        assert!(t["error"].as_str().unwrap().contains(why), "{cube}: {t}");
        // The fast memory is still there and searchable.
        let got = found(&s, cube, text).await;
        assert!(got.iter().any(|g| g.contains(text)), "{cube}: {got:?}");
    }
    // Each failure is recorded with its reason (and the model's reply when there was one).
    let txn = s.memos.store.read_txn().unwrap();
    let dl: Vec<_> = s
        .memos
        .store
        .dead_letters(&txn)
        .unwrap()
        .into_iter()
        .map(|(_, d)| d)
        .filter(|d| d.source == "fine")
        .collect();
    drop(txn);
    assert_eq!(dl.len(), 4, "{dl:?}");
    let prose = dl
        .iter()
        .find(|d| d.reason.contains("malformed JSON"))
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&prose.payload),
        "Sorry, I cannot help with that."
    );
    // The pipeline keeps going.
    let (st, b) = s
        .post(
            "/product/add",
            json!({"user_id": "ana", "async_mode": "sync", "messages": "Still working."}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let text = s.memos.metrics_text().await.unwrap();
    assert!(
        text.contains("memos_fine_jobs_total{outcome=\"failed\"} 4"),
        "{text}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fine_search_rewrites_the_query() {
    let (s, llm, _d) = start(Arc::new(|body: &Value, _| {
        let sys = body["messages"][0]["content"].as_str().unwrap_or("");
        if sys.contains("search query") {
            FakeReply::Text("\"Lisbon apartment rent euros\"".into())
        } else {
            FakeReply::Status(500)
        }
    }))
    .await;
    for t in [
        "The rent for the Lisbon apartment is 900 euros a month.",
        "I pay for the gym with my credit card.",
        "How much was the bus ticket? It was cheap.",
    ] {
        let (st, _) = s
            .post(
                "/product/add",
                json!({"user_id": "ana", "async_mode": "sync", "messages": t}),
            )
            .await;
        assert_eq!(st, 200);
    }
    let ask = |mode: &str| json!({"user_id": "ana", "query": "how much do I pay for it there?", "top_k": 1, "mode": mode});
    let (_, fast) = s.post("/product/search", ask("fast")).await;
    assert_eq!(llm.requests().len(), 0, "fast search asks no model");
    let (st, fine) = s.post("/product/search", ask("fine")).await;
    assert_eq!(st, 200, "{fine}");
    assert_eq!(llm.requests().len(), 1);
    let top = |b: &Value| {
        b["data"]["text_mem"][0]["memories"][0]["memory"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(top(&fine).contains("900 euros"), "fine: {fine}");
    assert!(
        !top(&fast).contains("900 euros"),
        "the rewrite is what found it: {fast}"
    );
    s.stop().await;
}
