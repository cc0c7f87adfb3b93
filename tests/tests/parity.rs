//! The MemOS routes added for parity, over a real server with a scripted OpenAI-compatible
//! model: the durable queue as `task_queue_status` reports it, `scheduler/wait/stream` (SSE),
//! `get_memory_dashboard`, `register_cube`, `get_user_names_by_memory_ids` and the playground
//! chat stream; `get_all`'s `search_type` running one retriever each.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tests::{FakeLlm, FakeReply};

async fn sse(
    s: &tests::Server,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Vec<Value>) {
    let c = reqwest::Client::new();
    let mut r = match method {
        "GET" => c.get(format!("{}{path}", s.url)),
        _ => c.post(format!("{}{path}", s.url)),
    };
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let st = r.status().as_u16();
    let text = r.text().await.unwrap();
    let events = tests::sse_events(&text)
        .iter()
        .map(|e| serde_json::from_str(e).unwrap_or(Value::Null))
        .collect();
    (st, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_status_and_the_wait_stream() {
    // The model holds every extraction: the jobs stay queued.
    let held = Arc::new(AtomicBool::new(true));
    let h2 = held.clone();
    let llm = FakeLlm::start(Arc::new(move |_: &Value, _| {
        if h2.load(Ordering::SeqCst) {
            FakeReply::Hang(Duration::from_secs(30))
        } else {
            FakeReply::Text("{\"memory list\": []}".into())
        }
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tests::config(dir.path());
    let mut model = llm.model("fake");
    model.concurrency = 1;
    model.timeout_secs = 60;
    cfg.llm.models = vec![model];
    let s = tests::Server::start(cfg).await;
    for (cube, text) in [
        ("qa", "I sail on weekends."),
        ("qa", "I bake bread."),
        ("qb", "I run daily."),
    ] {
        let (st, b) = s
            .post(
                "/product/add",
                json!({"user_id": "quinn", "writable_cube_ids": [cube], "messages": text}),
            )
            .await;
        assert_eq!(st, 200, "{b}");
    }
    let mut q = Value::Null;
    for _ in 0..400 {
        let (_, b) = s
            .get("/product/scheduler/task_queue_status?user_id=quinn")
            .await;
        q = b["data"].clone();
        if q["remaining_tasks_count"] == 3 && q["pending_tasks_count"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(q["remaining_tasks_count"], 3, "{q}");
    assert_eq!(
        q["pending_tasks_count"], 1,
        "one job at a time (concurrency 1): {q}"
    );
    assert_eq!(q["stream_keys"], json!(["qa:fine", "qb:fine"]), "{q}");
    let mut detail: Vec<String> =
        serde_json::from_value(q["remaining_tasks_detail"].clone()).unwrap();
    detail.sort();
    assert_eq!(detail, ["qa:fine:2", "qb:fine:1"]);
    let (st, b) = s
        .get("/product/scheduler/task_queue_status?user_id=nobody")
        .await;
    assert_eq!(st, 200);
    assert_eq!(b["data"]["remaining_tasks_count"], 0, "{b}");

    // wait/stream: running events, then a timeout (the model holds the jobs).
    let (st, events) = sse(
        &s,
        "GET",
        "/product/scheduler/wait/stream?user_name=quinn&timeout_seconds=0.3&poll_interval=0.05",
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert!(events.len() >= 3, "{events:?}");
    assert!(
        events[..events.len() - 1]
            .iter()
            .all(|e| e["status"] == "running" && e["active_tasks"] == 3),
        "{events:?}"
    );
    let last = events.last().unwrap();
    assert_eq!(last["status"], "timeout", "{events:?}");
    assert_eq!(last["timed_out"], true);
    // Nothing pending for another user: one idle event.
    let (_, events) = sse(
        &s,
        "GET",
        "/product/scheduler/wait/stream?user_name=nobody",
        None,
    )
    .await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["status"], "idle");
    let (st, _) = s
        .get("/product/scheduler/wait/stream?poll_interval=0")
        .await;
    assert_eq!(st, 400);
    held.store(false, Ordering::SeqCst);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_register_user_names_and_playground() {
    let llm = FakeLlm::start(Arc::new(|_: &Value, _| {
        FakeReply::Text("Oolong, as you said.".into())
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tests::config(dir.path());
    cfg.llm.models = vec![llm.model("fake")];
    let s = tests::Server::start(cfg).await;
    let (st, b) = s
        .post(
            "/product/add",
            json!({"user_id": "pat", "async_mode": "sync", "mode": "fast",
            "messages": [{"role": "user", "content": "I drink oolong tea every morning."}]}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let id = b["data"][0]["memory_id"].as_str().unwrap().to_string();
    let (st, b) = s
        .post(
            "/product/add",
            json!({"user_id": "pat", "async_mode": "sync", "mode": "fast",
            "messages": [{"role": "user", "content": "I prefer quiet cafes."}]}),
        )
        .await;
    assert_eq!(st, 200, "{b}");

    let (st, b) = s
        .post(
            "/product/get_memory_dashboard",
            json!({"mem_cube_id": "pat"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let texts = b["data"]["text_mem"][0]["memories"]
        .as_array()
        .unwrap()
        .len() as u64;
    assert!(texts >= 2, "{b}");
    assert_eq!(b["data"]["total_text_nodes"], texts, "{b}");
    assert_eq!(b["data"]["total_tool_nodes"], 0);

    let (st, b) = s
        .post(
            "/product/register_cube",
            json!({"mem_cube_name_or_path": "notes", "user_id": "pat"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        b["data"],
        json!({"cube_id": "notes", "cube_name_or_path": "notes"})
    );
    let (_, b) = s
        .post(
            "/product/exist_mem_cube_id",
            json!({"mem_cube_id": "notes"}),
        )
        .await;
    assert_eq!(b["data"]["notes"], true, "{b}");
    let (st, _) = s
        .post(
            "/product/register_cube",
            json!({"mem_cube_name_or_path": "notes", "user_id": "pat"}),
        )
        .await;
    assert_eq!(st, 200, "registering again is idempotent");

    let (st, b) = s
        .post(
            "/product/get_user_names_by_memory_ids",
            json!({"memory_ids": [id, "missing"]}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["data"][&id], "pat");
    assert_eq!(b["data"]["missing"], Value::Null);
    playground(&s).await;
    s.stop().await;
}

/// The playground stream's extra events around the chat's own.
async fn playground(s: &tests::Server) {
    let (st, events) = sse(
        s,
        "POST",
        "/product/chat/stream/playground",
        Some(
            json!({"user_id": "pat", "query": "What do I drink?", "add_message_on_answer": false}),
        ),
    )
    .await;
    assert_eq!(st, 200);
    let kinds: Vec<String> = events
        .iter()
        .map(|e| match e["type"].as_str().unwrap() {
            "status" => format!("status:{}", e["data"].as_str().unwrap()),
            t => t.to_string(),
        })
        .collect();
    let at = |k: &str| {
        kinds
            .iter()
            .position(|x| x == k)
            .unwrap_or_else(|| panic!("{k} missing: {kinds:?}"))
    };
    assert!(
        at("status:0") < at("status:1") && at("status:1") < at("reference"),
        "{kinds:?}"
    );
    assert!(
        at("reference") < at("status:2") && at("status:2") < at("text"),
        "{kinds:?}"
    );
    assert!(
        at("text") < at("time") && at("time") < at("end"),
        "{kinds:?}"
    );
    let answer: String = events
        .iter()
        .filter(|e| e["type"] == "text")
        .map(|e| e["data"].as_str().unwrap())
        .collect();
    assert_eq!(answer.trim(), "Oolong, as you said.");
    let refs = &events[at("reference")]["data"];
    assert!(refs.to_string().contains("oolong"), "{refs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_all_search_type_runs_one_retriever() {
    let dir = tempfile::tempdir().unwrap();
    let s = tests::Server::start(tests::config(dir.path())).await;
    for t in [
        "My dog loves chasing the ball in the park.",
        "I renewed my passport at the embassy.",
    ] {
        let (st, b) = s
            .post(
                "/product/add",
                json!({"user_id": "gia", "async_mode": "sync", "messages": t}),
            )
            .await;
        assert_eq!(st, 200, "{b}");
    }
    let found = |b: &Value| -> Vec<String> {
        b["data"][0]["memories"][0]["children"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|c| c["children"].as_array().unwrap().clone())
            .map(|m| m["memory"].as_str().unwrap().to_string())
            .collect()
    };
    // No word in common with either memory: full text finds nothing, embeddings find the dog.
    let ask = |t: Option<&str>| {
        let mut b = json!({"user_id": "gia", "memory_type": "text_mem", "search_query": "puppy playing fetch"});
        if let Some(t) = t {
            b["search_type"] = json!(t);
        }
        b
    };
    let (st, b) = s.post("/product/get_all", ask(Some("fulltext"))).await;
    assert_eq!(st, 200, "{b}");
    assert!(found(&b).is_empty(), "fulltext: {b}");
    let (_, b) = s.post("/product/get_all", ask(None)).await;
    assert!(found(&b).is_empty(), "the default is fulltext: {b}");
    let (_, b) = s.post("/product/get_all", ask(Some("embedding"))).await;
    let got = found(&b);
    assert!(
        got.first().is_some_and(|m| m.contains("dog")),
        "embedding: {got:?}"
    );
    let (_, b) = s
        .post("/product/get_all", json!({"user_id": "gia", "memory_type": "text_mem", "search_query": "passport embassy", "search_type": "fulltext"}))
        .await;
    let got = found(&b);
    assert!(
        got.first().is_some_and(|m| m.contains("passport")),
        "fulltext: {got:?}"
    );
    // The cloud rerank route without a reranker: cosine of the embedder's vectors.
    let (st, b) = s
        .post(
            "/api/openmem/v1/rerank",
            json!({"query": "a kitten resting on a rug",
            "documents": ["Stock markets fell sharply today.", "The cat sat on the mat."]}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["data"]["results"][0]["index"], 1, "{b}");
    assert_eq!(b["data"]["results"].as_array().unwrap().len(), 2);
    s.stop().await;
}

/// A scripted rerank API (Cohere shape: a document scores 0.9 when it mentions tea, else 0.1,
/// so the reranker visibly decides the order) and a scripted SearXNG, on one local server.
async fn scripted_services() -> (
    String,
    Arc<std::sync::Mutex<Vec<Value>>>,
    tokio::task::JoinHandle<()>,
) {
    let seen: Arc<std::sync::Mutex<Vec<Value>>> = Arc::default();
    let s2 = seen.clone();
    let app = axum::Router::new()
        .route(
            "/rerank",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let seen = s2.clone();
                async move {
                    seen.lock().unwrap().push(body.clone());
                    let results: Vec<Value> = body["documents"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .enumerate()
                        .map(|(i, d)| {
                            let s = if d.as_str().unwrap().to_lowercase().contains("tea") { 0.9 } else { 0.1 };
                            json!({"index": i, "relevance_score": s})
                        })
                        .collect();
                    axum::Json(json!({"results": results}))
                }
            }),
        )
        .route(
            "/search",
            axum::routing::get(|axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>| async move {
                assert_eq!(q.get("format").map(String::as_str), Some("json"));
                axum::Json(json!({"query": q["q"], "results": [
                    {"title": "Tea guide", "url": "https://example.org/tea", "content": "How to brew green tea."},
                    {"title": "Tyre shop", "url": "https://example.org/tyres", "content": "Winter tires on sale."}]}))
            }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let t = tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (url, seen, t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerank_and_internet_search_use_the_configured_services() {
    let (svc, seen, _t) = scripted_services().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tests::config(dir.path());
    cfg.search.rerank.url = format!("{svc}/rerank");
    cfg.search.rerank.model = "rr-1".into();
    cfg.search.internet.url = svc.clone();
    let s = tests::Server::start(cfg).await;
    for t in [
        "I like green tea in the morning.",
        "The car needs new tires before winter.",
    ] {
        let (st, b) = s
            .post(
                "/product/add",
                json!({"user_id": "rita", "async_mode": "sync", "messages": t}),
            )
            .await;
        assert_eq!(st, 200, "{b}");
    }
    let top = |b: &Value| -> (String, f64) {
        let m = &b["data"]["text_mem"][0]["memories"][0];
        (
            m["memory"].as_str().unwrap().to_string(),
            m["metadata"]["relativity"].as_f64().unwrap(),
        )
    };
    // rerank (the default): the reranker's order and scores.
    let (st, b) = s
        .post(
            "/product/search",
            json!({"user_id": "rita", "query": "car tires"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let (text, score) = top(&b);
    assert!(
        text.contains("green tea") && (score - 0.9).abs() < 1e-6,
        "{b}"
    );
    let asked = seen.lock().unwrap().last().unwrap().clone();
    assert_eq!(asked["model"], "rr-1");
    assert_eq!(asked["query"], "car tires");
    // rerank: false skips it.
    let (_, b) = s
        .post(
            "/product/search",
            json!({"user_id": "rita", "query": "car tires", "rerank": false}),
        )
        .await;
    assert!(top(&b).0.contains("tires"), "{b}");
    // internet_search: web results as OuterMemory in text_mem.
    let (st, b) = s
        .post(
            "/product/search",
            json!({"user_id": "rita", "query": "tires", "internet_search": true, "rerank": false}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let mems = b["data"]["text_mem"][0]["memories"].as_array().unwrap();
    let web: Vec<&Value> = mems
        .iter()
        .filter(|m| m["metadata"]["memory_type"] == "OuterMemory")
        .collect();
    assert_eq!(web.len(), 2, "{b}");
    assert!(
        web[0]["memory"]
            .as_str()
            .unwrap()
            .starts_with("Tea guide: "),
        "{b}"
    );
    // The cloud rerank route.
    let (st, b) = s
        .post(
            "/api/openmem/v1/rerank",
            json!({"query": "drinks", "documents": ["coffee beans", "oolong tea"], "top_n": 1}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        b["data"]["results"],
        json!([{"index": 1, "relevance_score": 0.9f32, "document": "oolong tea"}])
    );
    let (st, b) = s
        .post(
            "/api/openmem/v1/rerank",
            json!({"query": "q", "documents": ["d"], "model": "other"}),
        )
        .await;
    assert_eq!(st, 400, "{b}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skills_are_uploaded_as_skill_memory() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let s = tests::Server::start(tests::config(dir.path())).await;
    // A skill package (zip with SKILL.md and a script), built here.
    let mut zip = Vec::new();
    {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(&mut zip));
        let o = zip::write::SimpleFileOptions::default();
        w.start_file("deploy/SKILL.md", o).unwrap();
        std::io::Write::write_all(&mut w, b"---\nname: deploy-service\ndescription: Roll out a service with zero downtime\n---\n1. Build the image.\n2. Shift traffic in 10% steps.\n").unwrap();
        w.start_file("deploy/scripts/shift.sh", o).unwrap();
        std::io::Write::write_all(&mut w, b"kubectl rollout").unwrap();
        w.finish().unwrap();
    }
    let pkg = base64::engine::general_purpose::STANDARD.encode(&zip);
    let (st, b) = s
        .post("/product/add", json!({"user_id": "sam", "async_mode": "sync", "is_upload_skill": true,
            "messages": [{"role": "user", "content": [{"type": "file", "file": {"filename": "deploy.zip", "file_data": pkg}}]},
                         {"role": "user", "content": "# Brew oolong\nRinse the leaves, then steep three minutes."}]}))
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["data"].as_array().unwrap().len(), 2, "{b}");
    assert!(
        b["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["memory_type"] == "SkillMemory"),
        "{b}"
    );
    let (_, b) = s
        .post("/product/search", json!({"user_id": "sam", "query": "roll out a service without downtime", "include_skill_memory": true}))
        .await;
    let skills = b["data"]["skill_mem"][0]["memories"].as_array().unwrap();
    let top = &skills[0];
    assert_eq!(top["metadata"]["key"], "deploy-service", "{b}");
    assert_eq!(
        top["metadata"]["info"]["files"],
        json!(["deploy/scripts/shift.sh"]),
        "{b}"
    );
    assert!(
        top["memory"]
            .as_str()
            .unwrap()
            .contains("Shift traffic in 10% steps.")
    );
    // A package without SKILL.md is a 400 naming it; nothing else of the add is stored.
    let mut bad = Vec::new();
    {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(&mut bad));
        w.start_file("readme.txt", zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut w, b"nothing").unwrap();
        w.finish().unwrap();
    }
    let (st, b) = s
        .post("/product/add", json!({"user_id": "sam", "writable_cube_ids": ["bad-skills"], "async_mode": "sync", "is_upload_skill": true,
            "messages": [{"role": "user", "content": [{"type": "file", "file": {"filename": "empty.zip",
                "file_data": base64::engine::general_purpose::STANDARD.encode(&bad)}}]}]}))
        .await;
    assert_eq!(st, 400, "{b}");
    assert!(b["message"].as_str().unwrap().contains("empty.zip"), "{b}");
    // Knowledge-base files of type skill (the cloud route).
    let (st, b) = s
        .post(
            "/api/openmem/v1/create/knowledgebase",
            json!({"knowledgebase_name": "Runbooks"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let kb = b["data"]["id"].as_str().unwrap().to_string();
    let (st, b) = s
        .post("/api/openmem/v1/add/knowledgebase-file", json!({"knowledgebase_id": kb, "type": "skill",
            "file": [{"file_name": "SKILL.md", "content": "---\nname: rotate-keys\ndescription: Rotate API keys monthly\n---\nRevoke, then reissue."}]}))
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["data"][0]["status"], "completed", "{b}");
    let (_, b) = s
        .post("/product/get_memory", json!({"mem_cube_id": kb}))
        .await;
    let sk = &b["data"]["skill_mem"][0]["memories"][0];
    assert_eq!(sk["metadata"]["key"], "rotate-keys", "{b}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_update_memory_and_get_message() {
    let dir = tempfile::tempdir().unwrap();
    let s = tests::Server::start(tests::config(dir.path())).await;
    let c = "/api/openmem/v1";
    let (st, b) = s
        .post(&format!("{c}/add/message"), json!({"user_id": "cleo", "conversation_id": "c1", "async_mode": false,
            "messages": [{"role": "user", "content": "I adopted a cat named Miso.", "chat_time": "2024-03-01T10:00:00Z"},
                         {"role": "assistant", "content": "Lovely! How old is Miso?"}]}))
        .await;
    assert_eq!(st, 200, "{b}");
    let id = b["data"]["memory_ids"][0].as_str().unwrap().to_string();
    let (st, b) = s
        .post(
            &format!("{c}/add/message"),
            json!({"user_id": "cleo", "conversation_id": "c2", "async_mode": false,
            "messages": [{"role": "user", "content": "My sister lives in Rome."}]}),
        )
        .await;
    assert_eq!(st, 200, "{b}");

    // get/message: one conversation's messages in order; the most recent conversations first.
    let (st, b) = s
        .post(
            &format!("{c}/get/message"),
            json!({"user_id": "cleo", "conversation_id": "c1"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let msgs = b["data"]["message_detail_list"].as_array().unwrap();
    assert_eq!(msgs.len(), 2, "{b}");
    assert_eq!(msgs[0]["role"], "user");
    assert_eq!(msgs[0]["content"], "I adopted a cat named Miso.");
    assert_eq!(msgs[1]["content"], "Lovely! How old is Miso?");
    let (_, b) = s
        .post(
            &format!("{c}/get/message"),
            json!({"user_id": "cleo", "conversation_limit_number": 2, "message_limit_number": 1}),
        )
        .await;
    let msgs = b["data"]["message_detail_list"].as_array().unwrap();
    assert_eq!(msgs.len(), 2, "{b}");
    assert_eq!(msgs[0]["conversation_id"], "c2", "{b}");
    assert_eq!(
        msgs[1]["content"], "Lovely! How old is Miso?",
        "the last message of c1: {b}"
    );

    // update/memory: text and title, then status.
    let (st, b) = s
        .post(&format!("{c}/update/memory"), json!({"memory_id": id, "content": "Cleo adopted a cat named Miso in March 2024.", "title": "Miso"}))
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["data"]["version"], 2, "{b}");
    let (_, b) = s.get(&format!("/product/get_memory/{id}")).await;
    assert_eq!(
        b["data"]["memory"],
        "Cleo adopted a cat named Miso in March 2024."
    );
    assert_eq!(b["data"]["metadata"]["key"], "Miso");
    let (st, _) = s
        .post(
            &format!("{c}/update/memory"),
            json!({"memory_id": id, "status": "archived"}),
        )
        .await;
    assert_eq!(st, 200);
    let (_, b) = s
        .post(
            "/product/search",
            json!({"user_id": "cleo", "query": "cat named Miso"}),
        )
        .await;
    assert!(
        !b["data"]["text_mem"].to_string().contains("Miso in March"),
        "archived: {b}"
    );
    for (body, field) in [
        (json!({"memory_id": id, "status": "deleted"}), "status"),
        (json!({"memory_id": id}), "give at least one"),
        (json!({"user_id": "cleo", "source": "x"}), "source"),
    ] {
        let path = if field == "source" {
            "get/message"
        } else {
            "update/memory"
        };
        let (st, b) = s.post(&format!("{c}/{path}"), body).await;
        assert_eq!(st, 400, "{b}");
        assert!(b["message"].as_str().unwrap().starts_with(field), "{b}");
    }
    s.stop().await;
}
