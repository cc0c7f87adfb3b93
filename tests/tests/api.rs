//! The full REST surface over a real server on port 0 with real HTTP: every `/product`
//! endpoint, the MemOS cloud shapes, API keys (scopes, rate limits, admin), tenant isolation and
//! the OpenAPI document.

use serde_json::{Value, json};

async fn wait_task(s: &tests::Server, key: Option<&str>, task: &str) -> Value {
    for _ in 0..200 {
        let (st, b) = s
            .call(
                "GET",
                &format!("/product/scheduler/status?task_id={task}"),
                key,
                None,
            )
            .await;
        assert_eq!(st, 200, "{b}");
        let status = b["data"][0]["status"].as_str().unwrap_or("").to_string();
        if status == "completed" || status == "failed" {
            return b["data"][0].clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("task {task} did not finish");
}

fn memories(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| m["memory"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn product_endpoints_happy_paths_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tests::config(dir.path());
    cfg.limits.max_ids = 5;
    cfg.limits.max_export = 5;
    let s = tests::Server::start(cfg).await;

    let osaka = adds_in_every_format(&s).await;
    let osaka_type = get_and_search(&s, &osaka).await;
    exports_and_lookups(&s, &osaka).await;
    get_all_and_feedback(&s, &osaka).await;
    cubes_and_scheduler(&s).await;
    deletes_and_routes(&s, &osaka, &osaka_type).await;
    s.stop().await;
}

/// Adds in every message format; returns the id of the Osaka memory.
async fn adds_in_every_format(s: &tests::Server) -> String {
    // add: sync, fan-out to two cubes, tags, info, session; every message format of §1.4.
    let (st, b) = s.post("/product/add", json!({
        "user_id": "alice", "writable_cube_ids": ["a1", "a2", "a1"], "session_id": "s1", "async_mode": "sync",
        "custom_tags": ["travel"], "info": {"trip": "japan"},
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": [{"type": "text", "text": "I booked a flight to Osaka for April."},
                                         {"type": "image_url", "image_url": {"url": "https://x.test/osaka.png"}}],
             "chat_time": "2024-03-01T10:00:00Z"},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Osaka\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "Sunny, 18 C"},
            {"role": "assistant", "content": "Osaka will be sunny and 18 degrees."}
        ]})).await;
    assert_eq!(st, 200, "{b}");
    let added = b["data"].as_array().unwrap();
    assert!(
        added.iter().any(|m| m["cube_id"] == "a1") && added.iter().any(|m| m["cube_id"] == "a2")
    );
    assert!(added.iter().all(|m| m["cube_id"] != "alice"));
    let osaka = added
        .iter()
        .find(|m| m["cube_id"] == "a1" && m["memory"].as_str().unwrap().contains("Osaka for April"))
        .unwrap_or_else(|| panic!("{b}"))["memory_id"]
        .as_str()
        .unwrap()
        .to_string();
    // Deprecated fields: mem_cube_id → cube, memory_content → a text part, plain string messages.
    let (st, b) = s
        .post(
            "/product/add",
            json!({"user_id": "alice", "mem_cube_id": "a1", "async_mode": "sync",
        "memory_content": "My passport expires in 2030.", "source": "import"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["data"][0]["cube_id"], "a1");
    let (st, b) = s
        .post(
            "/product/add",
            json!({"user_id": "alice", "writable_cube_ids": ["a1"], "async_mode": "sync",
        "messages": "I love green tea."}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    osaka
}

/// get_memory and search with every field; returns the Osaka memory's type.
async fn get_and_search(s: &tests::Server, osaka: &str) -> String {
    // get_memory/{id}: MemOS item with tags, info, session.
    let (st, b) = s.get(&format!("/product/get_memory/{osaka}")).await;
    assert_eq!(st, 200, "{b}");
    let meta = &b["data"]["metadata"];
    let osaka_type = meta["memory_type"].as_str().unwrap().to_string();
    assert_eq!(meta["session_id"], "s1");
    assert_eq!(meta["info"]["trip"], "japan");
    assert!(meta["tags"].as_array().unwrap().contains(&json!("travel")));
    let (st, b) = s
        .get("/product/get_memory/00000000-0000-0000-0000-000000000000")
        .await;
    assert_eq!(st, 404, "{b}");
    assert!(b["data"].is_null() && b["message"].as_str().unwrap().contains("not found"));

    // search: every field of APISearchRequest.
    let q = |extra: Value| {
        let mut base = json!({"query": "When is the flight to Osaka?", "user_id": "alice",
            "readable_cube_ids": ["a1"], "mode": "fast", "top_k": 3});
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        base
    };
    let (st, b) = s.post("/product/search", q(json!({"session_id": "s1", "relativity": 0.0, "dedup": "no",
        "include_preference": true, "pref_top_k": 2, "search_tool_memory": true, "tool_mem_top_k": 2,
        "search_memory_type": "All", "filter": {"tags": {"contains": "travel"}}}))).await;
    assert_eq!(st, 200, "{b}");
    let text = &b["data"]["text_mem"][0];
    assert_eq!(text["cube_id"], "a1");
    assert!(
        memories(&text["memories"])[0].contains("Osaka for April"),
        "{b}"
    );
    assert!(text["memories"].as_array().unwrap().len() <= 3);
    assert!(text["total_nodes"].as_u64().is_some());
    for bucket in ["pref_mem", "tool_mem", "skill_mem", "act_mem", "para_mem"] {
        assert!(b["data"][bucket].is_array(), "{bucket}");
    }
    assert!(b["data"]["pref_note"].is_string());
    let (_, b) = s
        .post(
            "/product/search",
            q(json!({"query": "green tea", "include_preference": false})),
        )
        .await;
    assert!(
        b["data"]["pref_mem"][0]["memories"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let (_, b) = s
        .post(
            "/product/search",
            q(json!({"query": "green tea", "pref_top_k": 1})),
        )
        .await;
    let prefs = memories(&b["data"]["pref_mem"][0]["memories"]);
    assert_eq!(prefs.len(), 1, "{b}");
    assert!(prefs[0].contains("green tea"));
    assert!(
        b["data"]["pref_string"]
            .as_str()
            .unwrap()
            .contains("green tea")
    );
    let (_, b) = s
        .post(
            "/product/search",
            q(json!({"search_memory_type": "PreferenceMemory"})),
        )
        .await;
    assert!(
        b["data"]["text_mem"][0]["memories"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    for dedup in ["no", "sim", "mmr"] {
        let (st, _) = s.post("/product/search", q(json!({"dedup": dedup}))).await;
        assert_eq!(st, 200, "{dedup}");
    }
    // Search errors.
    let (st, b) = s
        .post("/product/search", q(json!({"dedup": "maybe"})))
        .await;
    assert_eq!(st, 400);
    assert!(b["message"].as_str().unwrap().contains("dedup"));
    let (st, b) = s.post("/product/search", q(json!({"top_k": "ten"}))).await;
    assert_eq!(st, 400, "{b}");
    assert!(b["message"].as_str().unwrap().contains("top_k"), "{b}");
    let (st, _) = s
        .post(
            "/product/search",
            q(json!({"search_memory_type": "Dreams"})),
        )
        .await;
    assert_eq!(st, 400);
    let (st, b) = s
        .post("/product/search", q(json!({"filter": {"and": "nope"}})))
        .await;
    assert_eq!(st, 400, "{b}");
    let (st, _) = s.post("/product/search", json!({"user_id": "alice"})).await;
    assert_eq!(st, 400);
    osaka_type
}

async fn exports_and_lookups(s: &tests::Server, osaka: &str) {
    // get_memory: paginated export per bucket; page/page_size both or neither.
    let (st, b) = s
        .post(
            "/product/get_memory",
            json!({"mem_cube_id": "a1", "page": 1, "page_size": 2}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let t = &b["data"]["text_mem"][0];
    let total = t["total_nodes"].as_u64().unwrap();
    assert!(total >= 3, "{b}");
    assert_eq!(t["memories"].as_array().unwrap().len(), 2);
    let (_, b2) = s
        .post(
            "/product/get_memory",
            json!({"mem_cube_id": "a1", "page": 2, "page_size": 2}),
        )
        .await;
    assert_ne!(
        b2["data"]["text_mem"][0]["memories"][0]["id"],
        t["memories"][0]["id"]
    );
    assert_eq!(b["data"]["pref_mem"][0]["total_nodes"], 1);
    let (_, b) = s
        .post(
            "/product/get_memory",
            json!({"mem_cube_id": "a1", "include_preference": false, "page": 1, "page_size": 10,
        "filter": {"session_id": "s1"}}),
        )
        .await;
    assert!(
        b["data"]["pref_mem"][0]["memories"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(
        b["data"]["text_mem"][0]["memories"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["metadata"]["session_id"] == "s1")
    );
    let (st, _) = s
        .post(
            "/product/get_memory",
            json!({"mem_cube_id": "a1", "page": 1}),
        )
        .await;
    assert_eq!(st, 400);
    let (st, _) = s
        .post("/product/get_memory", json!({"user_id": "alice"}))
        .await;
    assert_eq!(st, 400);
    // Unpaginated export above limits.max_export (5) is refused with a pointer to paging.
    let (st, b) = s
        .post("/product/get_memory", json!({"mem_cube_id": "a1"}))
        .await;
    assert_eq!(st, 413, "{b}");
    assert!(b["message"].as_str().unwrap().contains("page"));

    // get_memory_by_ids: found + not_found; none found = 404; too many = 413; empty = 400.
    let (st, b) = s
        .post("/product/get_memory_by_ids", json!([osaka, "nope"]))
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["data"]["memories"][0]["id"], osaka);
    assert_eq!(b["data"]["not_found"], json!(["nope"]));
    let (st, _) = s.post("/product/get_memory_by_ids", json!(["nope"])).await;
    assert_eq!(st, 404);
    let (st, _) = s
        .post(
            "/product/get_memory_by_ids",
            json!(["1", "2", "3", "4", "5", "6"]),
        )
        .await;
    assert_eq!(st, 413);
    let (st, _) = s.post("/product/get_memory_by_ids", json!([])).await;
    assert_eq!(st, 400);
    let (st, _) = s
        .post("/product/get_memory_by_ids", json!({"ids": [osaka]}))
        .await;
    assert_eq!(st, 400);
}

async fn get_all_and_feedback(s: &tests::Server, osaka: &str) {
    // get_all: a tree per cube; with search_query, the relevant part; other memory types empty.
    let (st, b) = s
        .post(
            "/product/get_all",
            json!({"user_id": "alice", "memory_type": "text_mem", "mem_cube_ids": ["a2"]}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let cube = &b["data"][0];
    assert_eq!(cube["cube_id"], "a2");
    let root = &cube["memories"][0];
    assert_eq!(root["id"], "root");
    let n: usize = root["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["children"].as_array().unwrap().len())
        .sum();
    assert_eq!(
        n as u64,
        cube["memory_statistics"]["total"].as_u64().unwrap()
    );
    assert!(n >= 1);
    let (_, b) = s
        .post(
            "/product/get_all",
            json!({"user_id": "alice", "memory_type": "text_mem", "mem_cube_ids": ["a1"],
        "search_query": "passport"}),
        )
        .await;
    let first = &b["data"][0]["memories"][0]["children"][0]["children"][0];
    assert!(
        first["memory"].as_str().unwrap().contains("passport"),
        "{b}"
    );
    let (_, b) = s
        .post(
            "/product/get_all",
            json!({"user_id": "alice", "memory_type": "act_mem"}),
        )
        .await;
    assert!(b["data"][0]["memories"].as_array().unwrap().is_empty());
    let (st, _) = s
        .post("/product/get_all", json!({"user_id": "alice"}))
        .await;
    assert_eq!(st, 400);
    let (st, _) = s
        .post(
            "/product/get_all",
            json!({"user_id": "alice", "memory_type": "text_mem", "mem_cube_ids": ["a1"]}),
        )
        .await;
    assert_eq!(st, 413, "a1 holds more than max_export = 5");

    // feedback: sync (returns what changed) and async; kept in the store with the outcome.
    let (st, b) = s.post("/product/feedback", json!({"user_id": "alice", "writable_cube_ids": ["a1"], "history": [],
        "feedback_content": "Actually the flight is in May, not April.", "retrieved_memory_ids": [osaka], "async_mode": "sync"})).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["data"][0]["status"], "processed");
    let up = &b["data"][0]["record"]["update"][0];
    assert_eq!(up["archived_id"], osaka, "{b}");
    assert!(
        up["text"].as_str().unwrap().contains("Osaka for May"),
        "{b}"
    );
    let (st, b) = s
        .post(
            "/product/feedback",
            json!({"user_id": "alice", "writable_cube_ids": ["a1"], "history": null,
        "feedback_content": "And I prefer aisle seats."}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let task = b["task_id"].as_str().unwrap().to_string();
    assert_eq!(wait_task(s, None, &task).await["status"], "completed");
    let (st, b) = s.post("/product/add", json!({"user_id": "alice", "writable_cube_ids": ["a1"], "is_feedback": true,
        "async_mode": "sync", "chat_history": [{"role": "user", "content": "Book it"}, {"role": "assistant", "content": "Done"}],
        "messages": [{"role": "user", "content": "That was the wrong date."}]})).await;
    assert_eq!(st, 200, "{b}");
    let fb = {
        let txn = s.memos.store.read_txn().unwrap();
        s.memos.store.feedback(&txn, "a1").unwrap()
    };
    assert_eq!(fb.len(), 3, "{fb:?}");
    assert_eq!(fb[0].retrieved_memory_ids, vec![osaka.to_string()]);
    assert!(
        fb.iter()
            .any(|f| f.feedback_content == "That was the wrong date."
                && f.history.contains("Book it"))
    );
    let (st, b) = s
        .post(
            "/product/feedback",
            json!({"user_id": "alice", "history": []}),
        )
        .await;
    assert_eq!(st, 400);
    assert!(b["message"].as_str().unwrap().contains("feedback_content"));
}

async fn cubes_and_scheduler(s: &tests::Server) {
    // create_cube / exist_mem_cube_id.
    let (st, b) = s
        .post(
            "/product/create_cube",
            json!({"cube_name": "Work", "owner_id": "alice", "cube_id": "work-1"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        b["data"],
        json!({"cube_id": "work-1", "cube_name": "Work", "owner_id": "alice"})
    );
    let (st, _) = s
        .post(
            "/product/create_cube",
            json!({"cube_name": "Work", "owner_id": "alice", "cube_id": "work-1"}),
        )
        .await;
    assert_eq!(st, 409);
    let (st, b) = s
        .post(
            "/product/create_cube",
            json!({"cube_name": "Generated", "owner_id": "alice"}),
        )
        .await;
    assert_eq!(st, 200);
    let generated = b["data"]["cube_id"].as_str().unwrap().to_string();
    let (st, _) = s
        .post("/product/create_cube", json!({"owner_id": "alice"}))
        .await;
    assert_eq!(st, 400);
    for (cube, exists) in [
        ("work-1", true),
        (generated.as_str(), true),
        ("a2", true),
        ("ghost", false),
    ] {
        let (st, b) = s
            .post("/product/exist_mem_cube_id", json!({"mem_cube_id": cube}))
            .await;
        assert_eq!(st, 200);
        assert_eq!(b["data"][cube], exists, "{cube}");
    }

    // scheduler: status, allstatus, wait.
    let (_, b) = s
        .post(
            "/product/add",
            json!({"user_id": "bob", "messages": "Bob likes chess."}),
        )
        .await;
    let task = b["task_id"].as_str().unwrap().to_string();
    let (st, b) = s
        .call(
            "POST",
            "/product/scheduler/wait?user_name=bob&timeout_seconds=30&poll_interval=0.02",
            None,
            None,
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["message"], "idle");
    assert_eq!(b["data"]["running_tasks"], 0);
    let (_, b) = s
        .get(&format!("/product/scheduler/status?task_id={task}"))
        .await;
    assert_eq!(b["data"][0]["status"], "completed");
    let (_, b) = s.get("/product/scheduler/status?user_id=bob").await;
    assert_eq!(b["data"].as_array().unwrap().len(), 1);
    let (st, b) = s.get("/product/scheduler/allstatus").await;
    assert_eq!(st, 200);
    let sum = &b["data"]["all_tasks_summary"];
    assert!(sum["completed"].as_u64().unwrap() >= 2);
    // No LLM: the scheduler (fine extraction) ran nothing, though async adds completed.
    assert_eq!(b["data"]["scheduler_summary"]["total"], 0, "{b}");
    assert_eq!(
        sum["total"],
        sum["completed"].as_u64().unwrap() + sum["failed"].as_u64().unwrap()
    );
    let (st, _) = s.get("/product/scheduler/status?task_id=nope").await;
    assert_eq!(st, 404);
    let (st, _) = s
        .call(
            "POST",
            "/product/scheduler/wait?timeout_seconds=-1",
            None,
            None,
        )
        .await;
    assert_eq!(st, 400);
}

async fn deletes_and_routes(s: &tests::Server, osaka: &str, osaka_type: &str) {
    // delete_memory: exactly one mode; unknown ids are a 404 and nothing is deleted; the
    // quick constraints merge into the filter, and a conflicting one is refused.
    let (st, b) = s
        .post(
            "/product/delete_memory",
            json!({"memory_ids": [osaka, "nope"]}),
        )
        .await;
    assert_eq!(st, 404, "{b}");
    let (st, _) = s.get(&format!("/product/get_memory/{osaka}")).await;
    assert_eq!(st, 200);
    let (st, b) = s
        .post(
            "/product/delete_memory",
            json!({"writable_cube_ids": ["a1"], "user_id": "alice",
        "filter": {"or": [{"user_id": "mallory"}, {"session_id": "s1"}]}}),
        )
        .await;
    assert_eq!(st, 400, "{b}");
    assert!(b["message"].as_str().unwrap().contains("user_id"));
    let (st, _) = s.post("/product/delete_memory", json!({})).await;
    assert_eq!(st, 400);
    let (st, _) = s
        .post("/product/delete_memory", json!({"filter": {}}))
        .await;
    assert_eq!(st, 400);
    let (st, b) = s
        .post(
            "/product/delete_memory",
            json!({"writable_cube_ids": ["a1"], "session_id": "s1",
        "filter": {"and": [{"memory_type": osaka_type}]}}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert!(b["data"]["deleted"].as_u64().unwrap() >= 1);
    let (st, _) = s.get(&format!("/product/get_memory/{osaka}")).await;
    assert_eq!(st, 404);
    let (st, b) = s
        .post(
            "/product/delete_memory",
            json!({"file_ids": ["f-none"], "writable_cube_ids": ["a1"]}),
        )
        .await;
    assert_eq!((st, b["data"]["deleted"].as_u64()), (200, Some(0)));

    // Raw content parts (no roles) with a file part; deleted again by file id.
    let (st, b) = s.post("/product/add", json!({"user_id": "alice", "writable_cube_ids": ["a2"], "async_mode": "sync",
        "messages": [{"type": "text", "text": "Quarterly report attached."},
                     {"type": "file", "file": {"file_id": "f-42", "filename": "q3.txt", "file_data": "Revenue grew 12 percent in Q3."}}]})).await;
    assert_eq!(st, 200, "{b}");
    // doc_path reads a server file only under documents.doc_root (off here): refused by name,
    // never stored as a reference (tests/tests/doc_formats.rs reads one under a root).
    let (st, b) = s
        .post(
            "/product/add",
            json!({"user_id": "alice", "writable_cube_ids": ["a2"], "async_mode": "sync",
        "doc_path": "/srv/docs/handbook.pdf"}),
        )
        .await;
    assert_eq!(st, 400, "{b}");
    assert!(
        b["message"].as_str().unwrap().starts_with("doc_path"),
        "{b}"
    );
    let rev = json!({"query": "How much did revenue grow?", "user_id": "alice", "readable_cube_ids": ["a2"], "top_k": 1});
    let (_, b) = s.post("/product/search", rev.clone()).await;
    assert!(
        b["data"]["text_mem"][0]["memories"][0]["memory"]
            .as_str()
            .unwrap()
            .contains("12 percent"),
        "{b}"
    );
    let (st, b) = s
        .post(
            "/product/delete_memory",
            json!({"file_ids": ["f-42"], "writable_cube_ids": ["a2"]}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert!(b["data"]["deleted"].as_u64().unwrap() >= 1);
    let (_, b) = s.post("/product/search", rev).await;
    assert!(!b.to_string().contains("12 percent"), "{b}");

    // Unknown routes and methods are JSON 404/405s.
    let (st, b) = s.get("/product/nothing").await;
    assert_eq!(st, 404);
    assert!(b["message"].as_str().unwrap().contains("/product/nothing"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_api_with_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tests::config(dir.path());
    cfg.auth.keys = vec![server::auth::KeyConfig::full("sdk", "mpg-test-key")];
    let s = tests::Server::start(cfg).await;
    cloud_auth_and_add(&s).await;
    let id = cloud_search_get_and_feedback(&s).await;
    cloud_knowledge_bases_and_deletes(&s, &id).await;
    s.stop().await;
}

async fn cloud_auth_and_add(s: &tests::Server) {
    let k = "mpg-test-key";
    let base = "/api/openmem/v1";
    // Auth: none, wrong, unknown scheme → 401; Token and Bearer work; /health stays open.
    let (st, b) = s
        .call(
            "POST",
            &format!("{base}/search/memory"),
            None,
            Some(json!({"query": "x", "user_id": "u"})),
        )
        .await;
    assert_eq!(st, 401, "{b}");
    let (st, _) = s
        .post_as(
            "wrong",
            &format!("{base}/search/memory"),
            json!({"query": "x", "user_id": "u"}),
        )
        .await;
    assert_eq!(st, 401);
    let r = reqwest::Client::new()
        .post(format!("{}{base}/search/memory", s.url))
        .header("Authorization", "Basic bXBnLXRlc3Qta2V5")
        .json(&json!({"query": "x", "user_id": "u"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = reqwest::Client::new()
        .post(format!("{}{base}/search/memory", s.url))
        .header("Authorization", format!("Bearer {k}"))
        .json(&json!({"query": "x", "user_id": "u"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (st, _) = s.get("/health").await;
    assert_eq!(st, 200);

    // add/message as the SDK sends it (asyncMode camelCase).
    let (st, b) = s.post_as(k, &format!("{base}/add/message"), json!({
        "messages": [{"role": "user", "content": "I prefer window seats on long flights."},
                     {"role": "assistant", "content": "Noted."}],
        "user_id": "u1", "conversation_id": "c1", "info": {"channel": "app"}, "source": null, "app_id": "app1",
        "agent_id": "agent1", "allow_public": false, "allow_knowledgebase_ids": null, "tags": ["travel"], "asyncMode": true})).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["code"], 0);
    assert_eq!(b["data"]["success"], true);
    let task = b["data"]["task_id"].as_str().unwrap().to_string();
    for _ in 0..200 {
        let (st, b) = s
            .post_as(k, &format!("{base}/get/status"), json!({"task_id": task}))
            .await;
        assert_eq!(st, 200, "{b}");
        if b["data"][0]["status"] == "completed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let (_, b) = s
        .post_as(k, &format!("{base}/get/status"), json!({"task_id": task}))
        .await;
    assert_eq!(b["data"][0]["status"], "completed", "{b}");
    let (st, _) = s
        .post_as(k, &format!("{base}/get/status"), json!({"task_id": "nope"}))
        .await;
    assert_eq!(st, 404);
    let (st, b) = s
        .post_as(
            k,
            &format!("{base}/add/message"),
            json!({"user_id": "u1", "asyncMode": false,
        "messages": [{"role": "user", "content": "My daughter Mia turns six in June."}]}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["data"]["status"], "completed");
    let (st, b) = s
        .post_as(k, &format!("{base}/add/message"), json!({"user_id": "u1"}))
        .await;
    assert_eq!(st, 400);
    assert!(b["message"].as_str().unwrap().contains("messages"));
}

/// Cloud search, paged get and feedback; returns the id of a memory it read.
async fn cloud_search_get_and_feedback(s: &tests::Server) -> String {
    let k = "mpg-test-key";
    let base = "/api/openmem/v1";
    // search/memory: the cloud lists and item fields.
    let (st, b) = s.post_as(k, &format!("{base}/search/memory"), json!({"query": "How old is Mia turning?", "user_id": "u1",
        "conversation_id": "c1", "memory_limit_number": 3, "include_preference": true, "preference_limit_number": 2,
        "include_tool_memory": true, "tool_memory_limit_number": 2})).await;
    assert_eq!(st, 200, "{b}");
    let d = &b["data"];
    let m0 = &d["memory_detail_list"][0];
    assert!(m0["memory_value"].as_str().unwrap().contains("Mia"), "{b}");
    for f in [
        "id",
        "memory_key",
        "memory_type",
        "create_time",
        "update_time",
        "relativity",
        "tags",
    ] {
        assert!(!m0[f].is_null(), "memory item lacks {f}: {m0}");
    }
    assert!(
        m0["create_time"].as_i64().unwrap() > 1_600_000_000_000,
        "milliseconds"
    );
    assert!(d["memory_detail_list"].as_array().unwrap().len() <= 3);
    let p0 = &d["preference_detail_list"][0];
    assert!(
        p0["preference"].as_str().unwrap().contains("window seats"),
        "{b}"
    );
    assert_eq!(p0["preference_type"], "explicit_preference");
    assert!(d["tool_memory_detail_list"].is_array() && d["preference_note"].is_string());
    let (st, _) = s
        .post_as(k, &format!("{base}/search/memory"), json!({"query": "x"}))
        .await;
    assert_eq!(st, 400);
    let (st, _) = s
        .post_as(
            k,
            &format!("{base}/search/memory"),
            json!({"query": "x", "user_id": "u1", "memory_limit_number": -1}),
        )
        .await;
    assert_eq!(st, 400);

    // get/memory paged; get/memory/{id}.
    let (st, b) = s
        .post_as(
            k,
            &format!("{base}/get/memory"),
            json!({"user_id": "u1", "include_preference": true, "page": 1, "size": 1}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let d = &b["data"];
    assert_eq!(d["memory_detail_list"].as_array().unwrap().len(), 1);
    let total = d["total"].as_u64().unwrap();
    assert!(total >= 2);
    assert_eq!(d["pages"], total);
    assert_eq!(
        (d["size"].as_u64(), d["current"].as_u64()),
        (Some(1), Some(1))
    );
    let id = d["memory_detail_list"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, b) = s.get_as(k, &format!("{base}/get/memory/{id}")).await;
    assert_eq!(st, 200);
    assert_eq!(b["data"]["id"], id);
    let (st, _) = s.get_as(k, &format!("{base}/get/memory/not-an-id")).await;
    assert_eq!(st, 404);
    let (st, _) = s
        .post_as(k, &format!("{base}/get/memory"), json!({"page": 1}))
        .await;
    assert_eq!(st, 400);

    // add/feedback.
    let (st, b) = s
        .post_as(
            k,
            &format!("{base}/add/feedback"),
            json!({"user_id": "u1", "conversation_id": "c1",
        "feedback_content": "Mia turns seven, not six."}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["data"]["success"], true);
    let (st, _) = s
        .post_as(k, &format!("{base}/add/feedback"), json!({"user_id": "u1"}))
        .await;
    assert_eq!(st, 400);
    id
}

async fn cloud_knowledge_bases_and_deletes(s: &tests::Server, id: &str) {
    let k = "mpg-test-key";
    let base = "/api/openmem/v1";
    // Knowledge bases: real cubes, searchable with knowledgebase_ids, deleted with their memories.
    let (st, b) = s
        .post_as(
            k,
            &format!("{base}/create/knowledgebase"),
            json!({"knowledgebase_name": "Handbook",
        "knowledgebase_description": "HR handbook"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let kb = b["data"]["id"].as_str().unwrap().to_string();
    let (st, b) = s.post_as(k, &format!("{base}/add/knowledgebase-file"), json!({"knowledgebase_id": kb, "file": [
        {"file_name": "leave.md", "content": "Employees receive 25 days of paid annual leave per calendar year."}]})).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["data"][0]["file_name"], "leave.md");
    assert!(!b["data"][0]["memory_ids"].as_array().unwrap().is_empty());
    let (_, b) = s
        .post_as(
            k,
            &format!("{base}/search/memory"),
            json!({"query": "How many days of annual leave?",
        "user_id": "u1", "knowledgebase_ids": [kb], "memory_limit_number": 2}),
        )
        .await;
    assert!(
        b["data"]["memory_detail_list"][0]["memory_value"]
            .as_str()
            .unwrap()
            .contains("25 days"),
        "{b}"
    );
    assert_eq!(b["data"]["memory_detail_list"][0]["cube_id"], kb);
    let (st, _) = s
        .post_as(
            k,
            &format!("{base}/add/knowledgebase-file"),
            json!({"knowledgebase_id": kb, "file": [{"file_name": "x"}]}),
        )
        .await;
    assert_eq!(st, 400);
    let (st, _) = s
        .post_as(
            k,
            &format!("{base}/add/knowledgebase-file"),
            json!({"knowledgebase_id": "kb-nope", "file": [{"content": "x"}]}),
        )
        .await;
    assert_eq!(st, 404);
    let (st, _) = s
        .post_as(
            k,
            &format!("{base}/delete/knowledgebase"),
            json!({"knowledgebase_id": "u1"}),
        )
        .await;
    assert_eq!(st, 404, "a user cube is not a knowledge base");
    let (st, b) = s
        .post_as(
            k,
            &format!("{base}/delete/knowledgebase"),
            json!({"knowledgebase_id": kb}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["data"]["success"], true);
    let (_, b) = s
        .post_as(
            k,
            &format!("{base}/search/memory"),
            json!({"query": "annual leave", "user_id": "u1", "knowledgebase_ids": [kb]}),
        )
        .await;
    assert!(
        b["data"]["memory_detail_list"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["cube_id"] != kb.as_str())
    );
    let (st, _) = s
        .post_as(k, &format!("{base}/create/knowledgebase"), json!({}))
        .await;
    assert_eq!(st, 400);

    cloud_deletes_need_exactly_one_condition(s, id).await;
}

async fn cloud_deletes_need_exactly_one_condition(s: &tests::Server, id: &str) {
    let k = "mpg-test-key";
    let base = "/api/openmem/v1";
    // delete/memory: exactly one condition.
    let (st, _) = s
        .post_as(
            k,
            &format!("{base}/delete/memory"),
            json!({"memory_ids": [id], "user_id": "u1"}),
        )
        .await;
    assert_eq!(st, 400);
    let (st, b) = s
        .post_as(
            k,
            &format!("{base}/delete/memory"),
            json!({"memory_ids": [id]}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["data"]["success"], true);
    let (st, _) = s.get_as(k, &format!("{base}/get/memory/{id}")).await;
    assert_eq!(st, 404);
    let (st, b) = s
        .post_as(
            k,
            &format!("{base}/delete/memory"),
            json!({"user_id": "u1", "memory_type": "PreferenceMemory"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let (_, b) = s
        .post_as(
            k,
            &format!("{base}/get/memory"),
            json!({"user_id": "u1", "include_preference": true}),
        )
        .await;
    assert!(
        b["data"]["preference_detail_list"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{b}"
    );
    assert!(
        !b["data"]["memory_detail_list"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{b}"
    );
    let (st, _) = s
        .post_as(
            k,
            &format!("{base}/delete/memory"),
            json!({"agent_id": "agent1", "memory_type": "Dreams"}),
        )
        .await;
    assert_eq!(st, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_scopes_admin_rate_limits_and_tenant_isolation() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tests::config(dir.path());
    cfg.auth.master_key = "master-secret".into();
    let s = tests::Server::start(cfg).await;
    let t = admin_and_tenant_writes(&s).await;
    no_read_or_task_crosses_over(&s, &t).await;
    no_delete_crosses_over(&s, &t).await;
    read_only_rate_limit_and_revocation(s, &t).await;
}

/// A tenant's sync add of `text` into `cube`.
fn add(cube: &str, text: &str) -> Value {
    json!({"user_id": "shared-user", "writable_cube_ids": [cube], "async_mode": "sync",
    "messages": [{"role": "user", "content": text}]})
}

/// A tenant's search of `cube`.
fn search(cube: &str) -> Value {
    json!({"query": "launch code word", "user_id": "shared-user", "readable_cube_ids": [cube]})
}

/// The two tenants' keys (key, id) and one memory id of each.
struct Tenants {
    keys: Vec<(String, String)>,
    a_id: String,
    b_id: String,
}

/// Admin creates two scoped keys; each tenant writes its own cube and only that.
async fn admin_and_tenant_writes(s: &tests::Server) -> Tenants {
    let m = "master-secret";
    // Admin: two scoped keys; a non-admin key cannot use /admin.
    let mut keys = Vec::new();
    for (name, pat) in [("team-a", "a-*"), ("team-b", "b-*")] {
        let (st, b) = s
            .post_as(m, "/admin/keys", json!({"name": name, "cubes": [pat]}))
            .await;
        assert_eq!(st, 200, "{b}");
        assert!(b["data"]["key"].as_str().unwrap().starts_with("mk-"));
        keys.push((
            b["data"]["key"].as_str().unwrap().to_string(),
            b["data"]["id"].as_str().unwrap().to_string(),
        ));
    }
    let (ka, kb) = (keys[0].0.clone(), keys[1].0.clone());
    let (st, _) = s
        .post_as(m, "/admin/keys", json!({"name": "team-a", "cubes": ["*"]}))
        .await;
    assert_eq!(st, 409);
    let (st, _) = s
        .post_as(
            m,
            "/admin/keys",
            json!({"name": "x", "cubes": ["*"], "bogus": 1}),
        )
        .await;
    assert_eq!(st, 400);
    let (st, _) = s.get_as(&ka, "/admin/keys").await;
    assert_eq!(st, 403);
    let (st, b) = s.get_as(m, "/admin/keys").await;
    assert_eq!(st, 200);
    assert_eq!(b["data"].as_array().unwrap().len(), 2);
    assert!(b["data"][0].get("key").is_none() && !b.to_string().contains(&ka));

    // Each tenant writes its own cube; writing the other's is a 403.
    let (st, b) = s
        .post_as(
            &ka,
            "/product/add",
            add("a-1", "The launch code word is pelican."),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let a_id = b["data"][0]["memory_id"].as_str().unwrap().to_string();
    let (st, b) = s
        .post_as(
            &kb,
            "/product/add",
            add("b-1", "The launch code word is walrus."),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let b_id = b["data"][0]["memory_id"].as_str().unwrap().to_string();
    let (st, b) = s
        .post_as(&ka, "/product/add", add("b-1", "Injected by A."))
        .await;
    assert_eq!(st, 403, "{b}");
    assert!(b["message"].as_str().unwrap().contains("b-1"));
    // Without cube ids the cube is the user id, outside both scopes.
    let (st, _) = s
        .post_as(
            &ka,
            "/product/add",
            json!({"user_id": "a-user", "messages": "x"}),
        )
        .await;
    assert_eq!(st, 200, "a-user matches a-*");
    let (st, _) = s
        .post_as(
            &ka,
            "/product/add",
            json!({"user_id": "zed", "messages": "x"}),
        )
        .await;
    assert_eq!(st, 403);
    Tenants { keys, a_id, b_id }
}

async fn no_read_or_task_crosses_over(s: &tests::Server, t: &Tenants) {
    let (ka, kb) = (&t.keys[0].0, &t.keys[1].0);
    let (a_id, b_id) = (&t.a_id, &t.b_id);
    // No read crosses over, on any endpoint.
    let (st, b) = s.post_as(ka, "/product/search", search("a-1")).await;
    assert_eq!(st, 200);
    assert!(!b.to_string().contains("walrus") && b.to_string().contains("pelican"));
    let (st, _) = s.post_as(ka, "/product/search", search("b-1")).await;
    assert_eq!(st, 403);
    let (st, _) = s.post_as(ka, "/product/search", json!({"query": "launch", "user_id": "shared-user", "readable_cube_ids": ["a-1", "b-1"]})).await;
    assert_eq!(st, 403);
    let (st, _) = s.get_as(ka, &format!("/product/get_memory/{b_id}")).await;
    assert_eq!(st, 404);
    let (st, _) = s.get_as(kb, &format!("/product/get_memory/{b_id}")).await;
    assert_eq!(st, 200);
    let (st, b) = s
        .post_as(ka, "/product/get_memory_by_ids", json!([a_id, b_id]))
        .await;
    assert_eq!(st, 200);
    assert_eq!(b["data"]["memories"].as_array().unwrap().len(), 1);
    assert_eq!(b["data"]["not_found"], json!([b_id]));
    let (st, _) = s
        .post_as(ka, "/product/get_memory", json!({"mem_cube_id": "b-1"}))
        .await;
    assert_eq!(st, 403);
    let (st, _) = s
        .post_as(
            ka,
            "/product/get_all",
            json!({"memory_type": "text_mem", "mem_cube_ids": ["b-1"]}),
        )
        .await;
    assert_eq!(st, 403);
    let (st, _) = s
        .post_as(
            ka,
            "/product/exist_mem_cube_id",
            json!({"mem_cube_id": "b-1"}),
        )
        .await;
    assert_eq!(st, 403);
    let (st, _) = s
        .post_as(
            ka,
            "/api/openmem/v1/search/memory",
            json!({"query": "launch", "user_id": "b-1"}),
        )
        .await;
    assert_eq!(st, 403);
    let (st, _) = s
        .post_as(
            ka,
            "/api/openmem/v1/search/memory",
            json!({"query": "launch", "user_id": "a-1", "knowledgebase_ids": ["b-1"]}),
        )
        .await;
    assert_eq!(st, 403);
    let (st, _) = s
        .post_as(ka, "/api/openmem/v1/get/memory", json!({"user_id": "b-1"}))
        .await;
    assert_eq!(st, 403);
    let (st, _) = s
        .get_as(ka, &format!("/api/openmem/v1/get/memory/{b_id}"))
        .await;
    assert_eq!(st, 404);
    // Tasks of the other tenant are invisible.
    let (_, b) = s
        .post_as(
            kb,
            "/product/add",
            json!({"user_id": "shared-user", "writable_cube_ids": ["b-1"], "messages": "B async."}),
        )
        .await;
    let b_task = b["task_id"].as_str().unwrap().to_string();
    let (st, _) = s
        .get_as(ka, &format!("/product/scheduler/status?task_id={b_task}"))
        .await;
    assert_eq!(st, 404);
    let (st, _) = s
        .post_as(ka, "/api/openmem/v1/get/status", json!({"task_id": b_task}))
        .await;
    assert_eq!(st, 404);
    let (_, b) = s
        .get_as(ka, "/product/scheduler/status?user_id=shared-user")
        .await;
    assert!(
        b["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["task_id"] != b_task.as_str())
    );
    wait_task(s, Some(kb), &b_task).await;
}

async fn no_delete_crosses_over(s: &tests::Server, t: &Tenants) {
    let (ka, kb) = (&t.keys[0].0, &t.keys[1].0);
    let (a_id, b_id) = (&t.a_id, &t.b_id);
    // No delete crosses over: by id (404, nothing deleted), by filter/user without cubes (only
    // the caller's cubes), by named cube (403), knowledge bases (403), cloud deletes.
    let (st, _) = s
        .post_as(ka, "/product/delete_memory", json!({"memory_ids": [b_id]}))
        .await;
    assert_eq!(st, 404);
    let (st, _) = s
        .post_as(
            ka,
            "/product/delete_memory",
            json!({"writable_cube_ids": ["b-1"], "user_id": "shared-user"}),
        )
        .await;
    assert_eq!(st, 403);
    let (st, _) = s
        .post_as(
            ka,
            "/api/openmem/v1/delete/memory",
            json!({"memory_ids": [b_id]}),
        )
        .await;
    assert_eq!(st, 404);
    let (st, b) = s
        .post_as(
            ka,
            "/api/openmem/v1/delete/memory",
            json!({"user_id": "shared-user"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let (st, b) = s
        .post_as(
            ka,
            "/product/delete_memory",
            json!({"filter": {"memory_type": "LongTermMemory"}}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let (st, b) = s.get_as(kb, &format!("/product/get_memory/{b_id}")).await;
    assert_eq!(st, 200, "B's memory survived A's deletes: {b}");
    let (st, _) = s.get_as(ka, &format!("/product/get_memory/{a_id}")).await;
    assert_eq!(st, 404, "A's own delete by user removed its memory");
    let (st, b) = s
        .post_as(
            kb,
            "/api/openmem/v1/create/knowledgebase",
            json!({"knowledgebase_name": "B docs"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let b_kb = b["data"]["id"].as_str().unwrap().to_string();
    assert!(b_kb.starts_with("b-kb-"), "{b_kb}");
    let (st, _) = s
        .post_as(
            ka,
            "/api/openmem/v1/delete/knowledgebase",
            json!({"knowledgebase_id": b_kb}),
        )
        .await;
    assert_eq!(st, 403);
    let (st, _) = s
        .post_as(
            ka,
            "/api/openmem/v1/add/knowledgebase-file",
            json!({"knowledgebase_id": b_kb, "file": [{"content": "x"}]}),
        )
        .await;
    assert_eq!(st, 403);
}

/// Read-only and rate-limited keys; revocation, and keys after a restart (takes the server:
/// it restarts it).
async fn read_only_rate_limit_and_revocation(s: tests::Server, t: &Tenants) {
    let m = "master-secret";
    let keys = &t.keys;
    let (ka, kb) = (&t.keys[0].0, &t.keys[1].0);
    let b_id = &t.b_id;
    // Read-only key: reads work, writes are 403.
    let (_, b) = s
        .post_as(
            m,
            "/admin/keys",
            json!({"name": "reader", "cubes": ["b-*"], "write": false}),
        )
        .await;
    let reader = b["data"]["key"].as_str().unwrap().to_string();
    let (st, _) = s.post_as(&reader, "/product/search", search("b-1")).await;
    assert_eq!(st, 200);
    let (st, _) = s
        .post_as(
            &reader,
            "/product/delete_memory",
            json!({"memory_ids": [b_id]}),
        )
        .await;
    assert_eq!(st, 403);
    let (st, _) = s.post_as(&reader, "/product/add", add("b-1", "x")).await;
    assert_eq!(st, 403);

    // Rate limit: 2 per minute, the third is a 429 with Retry-After.
    let (_, b) = s
        .post_as(
            m,
            "/admin/keys",
            json!({"name": "slow", "cubes": ["*"], "rate_limit_per_minute": 2}),
        )
        .await;
    let slow = b["data"]["key"].as_str().unwrap().to_string();
    for _ in 0..2 {
        let (st, _) = s
            .post_as(
                &slow,
                "/product/exist_mem_cube_id",
                json!({"mem_cube_id": "a-1"}),
            )
            .await;
        assert_eq!(st, 200);
    }
    let r = reqwest::Client::new()
        .post(format!("{}/product/exist_mem_cube_id", s.url))
        .header("Authorization", format!("Token {slow}"))
        .json(&json!({"mem_cube_id": "a-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("2 requests per minute")
    );

    // Revocation is immediate; created keys survive a restart (stored hashed in LMDB).
    let (st, _) = s
        .call(
            "DELETE",
            &format!("/admin/keys/{}", keys[1].1),
            Some(m),
            None,
        )
        .await;
    assert_eq!(st, 200);
    let (st, _) = s.post_as(kb, "/product/search", search("b-1")).await;
    assert_eq!(st, 401);
    let (st, _) = s.call("DELETE", "/admin/keys/nope", Some(m), None).await;
    assert_eq!(st, 404);
    let cfg = s.memos.cfg.clone();
    s.stop().await;
    let s = tests::Server::start(cfg).await;
    let (st, _) = s.post_as(ka, "/product/search", search("a-1")).await;
    assert_eq!(st, 200, "created key works after restart");
    let (st, _) = s.post_as(kb, "/product/search", search("b-1")).await;
    assert_eq!(st, 401, "revoked key stays revoked");
    let (st, _) = s
        .call("POST", "/product/search", None, Some(search("a-1")))
        .await;
    assert_eq!(st, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_mode_only_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tests::config(dir.path());
    let store =
        std::sync::Arc::new(store::Store::open(&cfg.data_dir, cfg.store_options()).unwrap());
    let (m, _pipeline) = server::Memos::with_parts(cfg, store, tests::embedder()).unwrap();
    assert!(m.auth.is_open());
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let err = server::http::serve(listener, m, async {})
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    assert!(err.to_string().contains("without API keys"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_is_served_current_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let s = tests::Server::start(tests::config(dir.path())).await;
    let (st, served) = s.get("/openapi.json").await;
    assert_eq!(st, 200);
    let committed: Value =
        serde_json::from_str(&std::fs::read_to_string(tests::root().join("openapi.json")).unwrap())
            .unwrap();
    assert_eq!(
        served, committed,
        "openapi.json is stale: run `memos openapi > openapi.json`"
    );
    let paths = served["paths"].as_object().unwrap();
    for p in [
        "/product/add",
        "/product/search",
        "/product/feedback",
        "/product/get_all",
        "/product/get_memory",
        "/product/get_memory/{id}",
        "/product/get_memory_by_ids",
        "/product/delete_memory",
        "/product/create_cube",
        "/product/exist_mem_cube_id",
        "/product/scheduler/status",
        "/product/scheduler/allstatus",
        "/product/scheduler/wait",
        "/product/scheduler/wait/stream",
        "/product/scheduler/task_queue_status",
        "/product/get_memory_dashboard",
        "/product/register_cube",
        "/product/get_user_names_by_memory_ids",
        "/product/suggestions",
        "/product/chat/stream/playground",
        "/health",
        "/api/openmem/v1/add/message",
        "/api/openmem/v1/search/memory",
        "/api/openmem/v1/get/memory",
        "/api/openmem/v1/get/memory/{id}",
        "/api/openmem/v1/delete/memory",
        "/api/openmem/v1/add/feedback",
        "/api/openmem/v1/get/status",
        "/api/openmem/v1/create/knowledgebase",
        "/api/openmem/v1/delete/knowledgebase",
        "/api/openmem/v1/add/knowledgebase-file",
        "/api/openmem/v1/rerank",
        "/api/openmem/v1/update/memory",
        "/api/openmem/v1/get/message",
        "/admin/keys",
        "/admin/keys/{id}",
    ] {
        assert!(paths.contains_key(p), "{p} is not documented");
    }
    // Every documented path is routed (no 404 from the fallback).
    for (p, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let path = p.replace("{id}", "x");
            let (st, b) = s.call(&method.to_uppercase(), &path, None, None).await;
            assert!(
                !(st == 404 && b["message"].as_str().unwrap_or("").starts_with("no route")),
                "{method} {p} is not routed"
            );
        }
    }
    let schemas = served["components"]["schemas"].as_object().unwrap();
    assert!(
        schemas["SearchRequest"]["properties"]
            .get("readable_cube_ids")
            .is_some()
    );
    assert!(
        served["components"]["securitySchemes"]
            .get("token")
            .is_some()
    );
    s.stop().await;
}
