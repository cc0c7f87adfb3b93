//! Chat with memory against a real OpenAI-compatible HTTP server (scripted, in the test):
//! complete and stream, the prompt the server receives, the exchange added back, retries,
//! errors, and 503 without an LLM.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tests::{FakeLlm, FakeReply};

async fn server_with(llm: &FakeLlm) -> (tests::Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tests::config(dir.path());
    cfg.llm.models = vec![llm.model("fake")];
    (tests::Server::start(cfg).await, dir)
}

async fn remember(s: &tests::Server, text: &str) {
    let (st, b) = s
        .post(
            "/product/add",
            json!({"user_id": "ana", "async_mode": "sync", "messages": [{"role": "user", "content": text}]}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
}

fn system_prompt(req: &Value) -> String {
    req["messages"][0]["content"].as_str().unwrap().to_string()
}

async fn wait_for_memory(s: &tests::Server, query: &str, needle: &str) -> bool {
    for _ in 0..200 {
        let (_, b) = s
            .post(
                "/product/search",
                json!({"user_id": "ana", "query": query, "top_k": 10}),
            )
            .await;
        if b["data"]["text_mem"].to_string().contains(needle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_complete_puts_memories_in_the_prompt_and_remembers_the_answer() {
    let llm = FakeLlm::start(Arc::new(|_, _| {
        FakeReply::Text(
            "<think>The memories say Lisbon.</think>You live in Lisbon, near the river.".into(),
        )
    }))
    .await;
    let (s, _dir) = server_with(&llm).await;
    remember(&s, "I moved to Lisbon last spring.").await;
    remember(&s, "I love grilled sardines.").await;
    let (st, b) = s
        .post("/product/chat/complete", json!({
            "user_id": "ana", "query": "Where do I live?", "session_id": "s1",
            "history": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello Ana!"}]}))
        .await;
    assert_eq!(st, 200, "{b}");
    let d = &b["data"];
    assert_eq!(d["response"], "You live in Lisbon, near the river.");
    assert_eq!(d["reasoning"], "The memories say Lisbon.");
    assert_eq!(d["model"], "fake");
    assert!(d["references"].to_string().contains("Lisbon"), "{d}");
    assert!(d["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    // What the model received: memories and preferences in the system prompt, the history,
    // then the question.
    // (The exchange the chat adds is an async add: with an LLM configured it is fine-extracted
    // in the background, as MemOS does; those extraction requests are not the chat's.)
    let reqs: Vec<Value> = llm
        .requests()
        .into_iter()
        .filter(|r| {
            !system_prompt(r).starts_with("You turn a conversation into long-term memories")
        })
        .collect();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r["model"], "fake-model");
    let sys = system_prompt(r);
    assert!(
        sys.contains("# Memories") && sys.contains("I moved to Lisbon last spring."),
        "{sys}"
    );
    assert!(
        sys.contains("# Preferences") && sys.contains("I love grilled sardines."),
        "{sys}"
    );
    let msgs = r["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 4);
    assert_eq!(msgs[1], json!({"role": "user", "content": "Hi"}));
    assert_eq!(
        msgs[3],
        json!({"role": "user", "content": "Where do I live?"})
    );

    // add_message_on_answer (default): the exchange becomes memory, in the background.
    assert!(wait_for_memory(&s, "near the river", "You live in Lisbon, near the river.").await);

    // Token accounting in the metrics: the chat's request and the extraction of the exchange
    // (an async add, fine-extracted in the background as MemOS does), every one answered.
    for _ in 0..400 {
        if llm.requests().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(llm.requests().len(), 2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = s.memos.metrics_text().await.unwrap();
    assert!(
        text.contains("memos_llm_tokens_total{kind=\"completion\",model=\"fake\"}"),
        "{text}"
    );
    assert!(
        text.contains("memos_llm_requests_total{model=\"fake\",outcome=\"ok\"} 2"),
        "{text}"
    );

    // An unknown model is a 400 naming the configured ones; a bad history a 400.
    let (st, b) = s
        .post(
            "/product/chat/complete",
            json!({"user_id": "ana", "query": "x", "model_name_or_path": "gpt-9"}),
        )
        .await;
    assert_eq!(st, 400, "{b}");
    assert!(b["message"].as_str().unwrap().contains("fake"), "{b}");
    let (st, _) = s
        .post(
            "/product/chat/complete",
            json!({"user_id": "ana", "query": "x", "history": [{"role": "robot", "content": "x"}]}),
        )
        .await;
    assert_eq!(st, 400);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_stream_is_server_sent_events() {
    let llm = FakeLlm::start(Arc::new(|_, _| {
        FakeReply::Text("<think>thinking it over</think>Your dog is called Biscuit.".into())
    }))
    .await;
    let (s, _dir) = server_with(&llm).await;
    remember(&s, "My dog is called Biscuit.").await;
    let r = reqwest::Client::new()
        .post(format!("{}/product/chat/stream", s.url))
        .json(&json!({"user_id": "ana", "query": "What is my dog called?", "add_message_on_answer": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let body = r.text().await.unwrap();
    let events: Vec<Value> = tests::sse_events(&body)
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(events[0]["type"], "reference");
    assert!(events[0]["data"].to_string().contains("Biscuit"));
    let of = |k: &str| -> String {
        events
            .iter()
            .filter(|e| e["type"] == k)
            .map(|e| e["data"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(of("reasoning"), "thinking it over");
    assert_eq!(of("text"), "Your dog is called Biscuit.");
    assert!(
        events.iter().filter(|e| e["type"] == "text").count() > 2,
        "streamed in pieces: {events:?}"
    );
    let end = events.last().unwrap();
    assert_eq!(end["type"], "end", "{events:?}");
    assert!(end["data"]["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert!(
        end["data"]["task_id"].is_null(),
        "add_message_on_answer=false adds nothing"
    );
    let reqs = llm.requests();
    assert_eq!(reqs[0]["stream"], true);
    assert!(system_prompt(&reqs[0]).contains("My dog is called Biscuit."));

    // The cloud shape, streamed and not.
    let r = reqwest::Client::new()
        .post(format!("{}/api/openmem/v1/chat", s.url))
        .json(&json!({"user_id": "ana", "conversation_id": "c1", "query": "Dog?", "stream": true}))
        .send()
        .await
        .unwrap();
    let body = r.text().await.unwrap();
    assert!(
        tests::sse_events(&body)
            .iter()
            .any(|e| e.contains("Biscuit")),
        "{body}"
    );
    let (st, b) = s
        .post(
            "/api/openmem/v1/chat",
            json!({"user_id": "ana", "conversation_id": "c1", "query": "Dog?"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["data"]["response"], "Your dog is called Biscuit.");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_failures_retry_then_fail_clearly() {
    // 500, 429, then an answer: retried with backoff and answered.
    let llm = FakeLlm::start(Arc::new(|body: &Value, n| {
        let q = body["messages"].as_array().unwrap().last().unwrap()["content"]
            .as_str()
            .unwrap()
            .to_string();
        match (q.as_str(), n) {
            ("flaky", 0) => FakeReply::Status(500),
            ("flaky", 1) => FakeReply::Status(429),
            ("flaky", _) => FakeReply::Text("fine now".into()),
            ("refused", _) => FakeReply::Status(400),
            ("slow", _) => FakeReply::Hang(Duration::from_secs(30)),
            _ => FakeReply::Text("?".into()),
        }
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tests::config(dir.path());
    let mut m = llm.model("fake");
    m.timeout_secs = 1;
    m.max_retries = 2;
    cfg.llm.models = vec![m];
    let s = tests::Server::start(cfg).await;
    let ask = |q: &str| json!({"user_id": "ana", "query": q, "add_message_on_answer": false});
    let (st, b) = s.post("/product/chat/complete", ask("flaky")).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["data"]["response"], "fine now");
    assert_eq!(llm.requests().len(), 3);
    // A 400 from the model is not retried and comes back as a 400 with its message.
    let (st, b) = s.post("/product/chat/complete", ask("refused")).await;
    assert_eq!(st, 400, "{b}");
    assert!(b["message"].as_str().unwrap().contains("HTTP 400"), "{b}");
    assert_eq!(llm.requests().len(), 4);
    // A hanging model times out on every attempt: 503, and the server answers the next call.
    let (st, b) = s.post("/product/chat/complete", ask("slow")).await;
    assert_eq!(st, 503, "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("after 3 attempts"),
        "{b}"
    );
    let (st, _) = s.post("/product/chat/complete", ask("other")).await;
    assert_eq!(st, 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_llm_chat_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let s = tests::Server::start(tests::config(dir.path())).await;
    for path in [
        "/product/chat/complete",
        "/product/chat/stream",
        "/api/openmem/v1/chat",
    ] {
        // (conversation_id is a cloud field: the product routes would refuse it by name.)
        let mut body = json!({"user_id": "ana", "query": "hello"});
        if path.starts_with("/api") {
            body["conversation_id"] = json!("c");
        }
        let (st, b) = s.post(path, body).await;
        assert_eq!(st, 503, "{path}: {b}");
        assert!(
            b["message"]
                .as_str()
                .unwrap()
                .contains("no LLM is configured"),
            "{b}"
        );
    }
    s.stop().await;
}
