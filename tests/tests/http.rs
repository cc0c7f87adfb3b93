//! The REST API over a real server on port 0: MemOS shapes, errors, isolation, restart.

use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_search_delete_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = tests::Server::start(tests::config(dir.path())).await;
    let (st, health) = s.get("/health").await;
    assert_eq!((st, health["status"].as_str()), (200, Some("healthy")));

    let (st, body) = s
        .post("/product/add", json!({
            "user_id": "caroline", "writable_cube_ids": ["cube-c"], "session_id": "session_1", "async_mode": "sync",
            "info": {"dia_id": "D1:3", "user_id": "reserved keys are dropped"},
            "messages": [
                {"role": "user", "content": "I went to a LGBTQ support group yesterday.", "chat_time": "1:56 pm on 8 May, 2023"},
                {"role": "assistant", "content": "That sounds empowering! How did it go?", "chat_time": "1:56 pm on 8 May, 2023"}
            ]}))
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["code"], 200);
    let added = body["data"].as_array().unwrap();
    assert_eq!(added.len(), 2);
    assert_eq!(added[0]["cube_id"], "cube-c");
    let id = added[0]["memory_id"].as_str().unwrap().to_string();

    // Another tenant's cube with the same content.
    let (st, _) = s
        .post("/product/add", json!({"user_id": "mallory", "async_mode": "sync",
            "messages": [{"role": "user", "content": "I went to a LGBTQ support group yesterday."}]}))
        .await;
    assert_eq!(st, 200);

    let (st, body) = s.post("/product/search", json!({"query": "Which support group did Caroline go to yesterday?", "user_id": "caroline", "readable_cube_ids": ["cube-c"], "top_k": 5})).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["message"], "Search completed successfully");
    let text = &body["data"]["text_mem"][0];
    assert_eq!(text["cube_id"], "cube-c");
    let mems = text["memories"].as_array().unwrap();
    assert!(!mems.is_empty());
    for m in mems {
        assert_eq!(m["metadata"]["cube_id"], "cube-c");
        let r = m["metadata"]["relativity"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&r));
    }
    assert_eq!(mems[0]["id"], id);
    assert_eq!(mems[0]["metadata"]["info"]["dia_id"], "D1:3");
    assert!(mems[0]["metadata"]["info"].get("user_id").is_none());
    assert_eq!(mems[0]["ref_id"], format!("[{}]", &id[..8]));
    for bucket in ["pref_mem", "tool_mem", "skill_mem", "act_mem", "para_mem"] {
        assert!(body["data"][bucket].is_array(), "{bucket}");
    }

    // Filters go through; a bad one is a 400 with a message.
    let (st, body) = s.post("/product/search", json!({"query": "support group", "user_id": "caroline", "readable_cube_ids": ["cube-c"], "filter": {"memory_type": "LongTermMemory"}})).await;
    assert_eq!(st, 200);
    let mems = body["data"]["text_mem"][0]["memories"].as_array().unwrap();
    assert_eq!(mems.len(), 1);
    assert_eq!(mems[0]["metadata"]["memory_type"], "LongTermMemory");
    let (st, body) = s
        .post(
            "/product/search",
            json!({"query": "x", "user_id": "caroline", "filter": {"created_at": {"around": 3}}}),
        )
        .await;
    assert_eq!(st, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("unknown operator"),
        "{body}"
    );

    // Other bad input: 4xx with a message.
    let (st, body) = s
        .post("/product/search", json!({"user_id": "caroline"}))
        .await;
    assert_eq!(st, 400, "{body}");
    let (st, _) = s
        .post(
            "/product/search",
            json!({"query": "x", "user_id": "c", "top_k": 0}),
        )
        .await;
    assert_eq!(st, 400);
    let (st, body) = s.post("/product/add", json!({"user_id": "u", "async_mode": "sync", "messages": [{"role": "robot", "content": "x"}]})).await;
    assert_eq!(st, 400);
    assert!(body["message"].as_str().unwrap().contains("robot"));
    let r = reqwest::Client::new()
        .post(format!("{}/product/add", s.url))
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let (st, _) = s
        .post(
            "/product/delete_memory",
            json!({"memory_ids": ["x"], "filter": {"user_id": "u"}}),
        )
        .await;
    assert_eq!(st, 400);

    async_add_delete_and_restart(s, &dir, id).await;
}

async fn async_add_delete_and_restart(s: tests::Server, dir: &tempfile::TempDir, id: String) {
    // Async add returns a task that completes.
    let (st, body) = s.post("/product/add", json!({"user_id": "caroline", "writable_cube_ids": ["cube-c"], "messages": "I also love painting sunsets."})).await;
    assert_eq!(st, 200);
    let task = body["task_id"].as_str().unwrap().to_string();
    let mut done = false;
    for _ in 0..100 {
        let (_, b) = s
            .get(&format!("/product/scheduler/status?task_id={task}"))
            .await;
        if b["data"][0]["status"] == "completed" {
            done = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(done, "async task did not complete");
    let (_, body) = s
        .post(
            "/product/search",
            json!({"query": "painting", "user_id": "caroline", "readable_cube_ids": ["cube-c"]}),
        )
        .await;
    let prefs = body["data"]["pref_mem"][0]["memories"].as_array().unwrap();
    assert!(
        prefs
            .iter()
            .any(|p| p["memory"].as_str().unwrap().contains("love painting")),
        "{body}"
    );
    assert!(
        body["data"]["pref_string"]
            .as_str()
            .unwrap()
            .contains("love painting")
    );

    // Delete by id; then it is gone from get and search.
    let (st, body) = s
        .post("/product/delete_memory", json!({"memory_ids": [id]}))
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["data"]["status"], "success");
    assert_eq!(body["data"]["deleted"], 1);
    let (st, body) = s.get(&format!("/product/get_memory/{id}")).await;
    assert_eq!(st, 404);
    assert!(body["data"].is_null());

    // Restart on the same directory keeps the data.
    s.stop().await;
    let s = tests::Server::start(tests::config(dir.path())).await;
    let (_, body) = s.post("/product/search", json!({"query": "empowering", "user_id": "caroline", "readable_cube_ids": ["cube-c"], "top_k": 3})).await;
    let mems = body["data"]["text_mem"][0]["memories"].as_array().unwrap();
    assert!(
        mems.iter()
            .any(|m| m["memory"].as_str().unwrap().contains("empowering")),
        "{body}"
    );
    assert!(mems.iter().all(|m| m["id"] != id));
    // Delete by filter with a quick constraint.
    let (st, body) = s
        .post(
            "/product/delete_memory",
            json!({"writable_cube_ids": ["cube-c"], "user_id": "caroline"}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert!(body["data"]["deleted"].as_u64().unwrap() >= 2);
    let (_, body) = s
        .post(
            "/product/search",
            json!({"query": "empowering", "user_id": "caroline", "readable_cube_ids": ["cube-c"]}),
        )
        .await;
    assert!(
        body["data"]["text_mem"][0]["memories"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_enforced_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tests::config(dir.path());
    cfg.limits.max_body_bytes = 10_000;
    cfg.limits.max_messages_per_add = 3;
    cfg.limits.max_query_chars = 50;
    cfg.search.max_top_k = 20;
    cfg.search.timeout_ms = 0;
    let s = tests::Server::start(cfg).await;
    let (st, body) = s
        .post(
            "/product/add",
            json!({"user_id": "u", "async_mode": "sync", "messages": "x".repeat(20_000)}),
        )
        .await;
    assert_eq!(st, 413, "{body}");
    let msgs: Vec<_> = (0..4)
        .map(|i| json!({"role": "user", "content": format!("m{i}")}))
        .collect();
    let (st, body) = s
        .post(
            "/product/add",
            json!({"user_id": "u", "async_mode": "sync", "messages": msgs}),
        )
        .await;
    assert_eq!(st, 413);
    assert!(
        body["message"].as_str().unwrap().contains("limit is 3"),
        "{body}"
    );
    let (st, _) = s
        .post(
            "/product/search",
            json!({"query": "q".repeat(51), "user_id": "u"}),
        )
        .await;
    assert_eq!(st, 413);
    let (st, _) = s
        .post(
            "/product/search",
            json!({"query": "q", "user_id": "u", "top_k": 21}),
        )
        .await;
    assert_eq!(st, 400);
    // A query time limit of 0 ms: a clear timeout, and the server keeps serving.
    let (st, body) = s
        .post(
            "/product/search",
            json!({"query": "anything", "user_id": "u"}),
        )
        .await;
    assert_eq!(st, 504, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("longer than 0 ms")
    );
    let (st, _) = s.get("/health").await;
    assert_eq!(st, 200);
    s.stop().await;
}
