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
        FakeReply::Text("```json\n{\"memory list\": [{\"key\": \"Move to Lisbon\", \"memory_type\": \"UserMemory\", \"value\": \"Ana moved to Lisbon in March 2024.\", \"tags\": [\"move\", \"lisbon\"]},], \"preferences\": [{\"preference\": \"Ana prefers living by the sea.\", \"preference_type\": \"implicit_preference\", \"reasoning\": \"She moved to Lisbon.\"}], \"skills\": [{\"name\": \"Flat hunting abroad\", \"description\": \"Find a flat in a new city\", \"procedure\": \"Shortlist areas, visit on weekends, sign with a local agent.\"}], \"summary\": \"Ana moved.\"}\n```".into())
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
    let (_, all) = s.get("/product/scheduler/allstatus").await;
    assert_eq!(all["data"]["scheduler_summary"]["completed"], 1, "{all}");
    assert_eq!(all["data"]["scheduler_summary"]["total"], 1, "{all}");
    let new_id = t["memories"][0]["memory_id"].as_str().unwrap().to_string();
    assert_eq!(
        t["memories"][0]["memory"],
        "Ana moved to Lisbon in March 2024."
    );
    // Preferences and skills come out of the same call, as PreferenceMemory with their type
    // and SkillMemory with name, description and procedure.
    assert_eq!(t["memories"].as_array().unwrap().len(), 3, "{t}");
    assert_eq!(t["memories"][1]["memory_type"], "PreferenceMemory");
    assert_eq!(t["memories"][2]["memory_type"], "SkillMemory");
    let skill = status_of(&s, t["memories"][2]["memory_id"].as_str().unwrap()).await;
    assert_eq!(skill["key"], "Flat hunting abroad", "{skill}");
    assert_eq!(
        skill["info"]["procedure"],
        "Shortlist areas, visit on weekends, sign with a local agent."
    );
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
    // MemOS's chat_history and reference_time feed the rewrite: the earlier turns come before
    // the question and "now" is the reference time.
    let mut with_context = ask("fine");
    with_context["chat_history"] = json!([{"role": "user", "content": "We talked about my flat in Lisbon."},
        {"role": "assistant", "content": "Yes, the one near the river."}]);
    with_context["reference_time"] = json!("2024-05-01T09:00:00Z");
    let (st, b) = s.post("/product/search", with_context.clone()).await;
    assert_eq!(st, 200, "{b}");
    let r = llm.requests().last().unwrap().clone();
    let msgs = r["messages"].as_array().unwrap();
    assert!(
        msgs[0]["content"].as_str().unwrap().contains("2024-05-01"),
        "{r}"
    );
    assert_eq!(msgs[1]["content"], "We talked about my flat in Lisbon.");
    assert_eq!(msgs[2]["role"], "assistant");
    assert_eq!(msgs[3]["content"], "how much do I pay for it there?");
    // A fast search would not use them: refused by name, not ignored.
    for field in ["chat_history", "reference_time"] {
        let mut b = ask("fast");
        b[field] = with_context[field].clone();
        let (st, body) = s.post("/product/search", b).await;
        assert_eq!(st, 400, "{body}");
        assert!(
            body["message"].as_str().unwrap().starts_with(field),
            "{body}"
        );
    }
    s.stop().await;
}

/// Kills the child when dropped (a failed test leaves nothing running).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `memos serve` on `port` over `data`, its one LLM the scripted server.
fn serve(data: &std::path::Path, port: u16, llm: &str) -> Child {
    let exe = tests::memos_exe().expect("the memos binary (cargo test --workspace builds it)");
    let child = std::process::Command::new(exe)
        .arg("serve")
        .env("MEMOS_DATA_DIR", data)
        .env("MEMOS_MODEL_DIR", tests::model_dir())
        .env("MEMOS_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("MEMOS_PG_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("MEMOS_METRICS_ADDR", "")
        .env("MEMOS_LLM_URL", llm)
        .env("MEMOS_LLM_MODEL", "fake-model")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    Child(child)
}

/// The fine tasks the server reports for `ana`, by task id → (status, first memory).
async fn fine_tasks(http: &reqwest::Client, url: &str) -> Vec<(String, String, String)> {
    let Ok(r) = http
        .get(format!("{url}/product/scheduler/status?user_id=ana"))
        .send()
        .await
    else {
        return vec![];
    };
    let Ok(b) = r.json::<Value>().await else {
        return vec![];
    };
    b["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| {
            t["task_id"]
                .as_str()
                .is_some_and(|i| i.starts_with("fine:"))
        })
        .map(|t| {
            (
                t["task_id"].as_str().unwrap().to_string(),
                t["status"].as_str().unwrap_or("").to_string(),
                t["memories"][0]["memory"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

/// The fact marker (`Fact c0-3`) of an extraction request.
fn marker(body: &Value) -> String {
    let user = body["messages"][1]["content"].as_str().unwrap_or("");
    let at = user.find("Fact c").unwrap_or(0);
    user[at..].split(':').next().unwrap_or("").to_string()
}

/// Async adds are fine-extracted by default when an LLM is configured, through a queue kept
/// in LMDB: `memos serve` is killed (SIGKILL) while the model hangs with a backlog of twelve
/// jobs over four cubes; after the restart every job runs (none lost, none duplicated), the
/// cubes served round-robin although one cube queued half the backlog first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_in_the_middle_of_a_fine_backlog_loses_no_job() {
    let answering = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let a2 = answering.clone();
    let llm = FakeLlm::start(Arc::new(move |body: &Value, _| {
        if !a2.load(std::sync::atomic::Ordering::SeqCst) {
            return FakeReply::Hang(Duration::from_secs(300));
        }
        let value = format!("Extracted {}.", marker(body));
        FakeReply::Text(
            json!({"memory list": [{"key": "fact", "memory_type": "UserMemory", "value": value, "tags": []}]})
                .to_string(),
        )
    }))
    .await;
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut facts = Vec::new();
    for (cube, n) in [("c0", 6), ("c1", 2), ("c2", 2), ("c3", 2)] {
        for i in 0..n {
            facts.push((cube, format!("Fact {cube}-{i}")));
        }
    }
    let server = serve(data.path(), port, &llm.url);
    tests::wait_for_secs(
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "memos serve",
        60,
    )
    .await;
    for (cube, fact) in &facts {
        // No mode, async (the defaults): fast now, fine in the background.
        let r = http
            .post(format!("{url}/product/add"))
            .json(&json!({"user_id": "ana", "writable_cube_ids": [cube],
                "messages": [{"role": "user", "content": format!("{fact}: Ana keeps a {cube} notebook.")}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // Every job is queued (its fast memories committed) and the model holds the first ones.
    for _ in 0..600 {
        if fine_tasks(&http, &url).await.len() == facts.len() && !llm.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = fine_tasks(&http, &url).await;
    assert_eq!(before.len(), facts.len(), "{before:?}");
    assert!(before.iter().all(|t| t.1 != "completed"), "{before:?}");
    drop(server); // SIGKILL
    let asked_before = llm.requests().len();
    answering.store(true, std::sync::atomic::Ordering::SeqCst);

    let _server = serve(data.path(), port, &llm.url);
    let mut after = vec![];
    for _ in 0..1200 {
        after = fine_tasks(&http, &url).await;
        if after.len() == facts.len() && after.iter().all(|t| t.1 == "completed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        after.len() == facts.len() && after.iter().all(|t| t.1 == "completed"),
        "{after:?}"
    );
    let mut got: Vec<String> = after.iter().map(|t| t.2.clone()).collect();
    got.sort();
    let mut want: Vec<String> = facts
        .iter()
        .map(|(_, f)| format!("Extracted {f}."))
        .collect();
    want.sort();
    assert_eq!(got, want, "each job extracted once, none lost");
    // Round-robin: the first four jobs after the restart come from four different cubes (a
    // first-in-first-out queue would have served c0's six first).
    let asked: Vec<String> = llm.requests()[asked_before..].iter().map(marker).collect();
    assert_eq!(asked.len(), facts.len(), "one request per job: {asked:?}");
    let mut first: Vec<&str> = asked[..4]
        .iter()
        .map(|m| &m["Fact ".len().."Fact ".len() + 2])
        .collect();
    first.sort();
    assert_eq!(first, ["c0", "c1", "c2", "c3"], "{asked:?}");
}
