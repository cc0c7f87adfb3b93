//! No MemOS request field is silently dropped: every field of every MemOS request model the
//! server has a route for (MemOS `product_models.py`, memoryos 2.0.33, and the cloud SDK's
//! payloads) is sent with a value that asks for something, and the server either honours it
//! (2xx) or answers 400 with a message that starts with the field's name. A field outside the
//! models is a 400 naming it. Which fields are honoured is this file's table; the behaviour
//! behind the honoured ones is tested where the feature is (api.rs, fine.rs, search, …).

use std::sync::Arc;

use serde_json::{Value, json};
use tests::{FakeLlm, FakeReply};

/// Honoured (2xx) or refused (400 naming the field).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Want {
    Ok,
    Refused,
}
use Want::{Ok as Y, Refused as N};

/// One probe: a field, the body fields that exercise it (merged into the route's base body),
/// and the answer wanted.
type Probe = (&'static str, Value, Want);

struct Route {
    path: &'static str,
    base: Value,
    probes: Vec<Probe>,
}

fn merged(base: &Value, extra: &Value) -> Value {
    let mut b = base.clone();
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

fn add_route() -> Route {
    Route {
        path: "/product/add",
        base: json!({"user_id": "fu", "async_mode": "sync", "messages": "I like green tea."}),
        probes: vec![
            ("user_id", json!({"user_id": "fu"}), Y),
            ("session_id", json!({"session_id": "s1"}), Y),
            ("task_id", json!({"task_id": "t1"}), Y),
            ("manager_user_id", json!({"manager_user_id": "boss"}), Y),
            ("project_id", json!({"project_id": "p1"}), Y),
            ("writable_cube_ids", json!({"writable_cube_ids": ["fu"]}), Y),
            ("async_mode", json!({"async_mode": "async"}), Y),
            ("mode", json!({"mode": "fine"}), Y),
            ("custom_tags", json!({"custom_tags": ["drinks"]}), Y),
            ("info", json!({"info": {"k": "v"}}), Y),
            (
                "messages",
                json!({"messages": [{"role": "user", "content": "Hi."}]}),
                Y,
            ),
            (
                "chat_history",
                json!({"chat_history": [{"role": "user", "content": "Earlier."}]}),
                Y,
            ),
            (
                "is_feedback",
                json!({"is_feedback": true, "messages": "Actually I prefer black tea."}),
                Y,
            ),
            ("is_upload_skill", json!({"is_upload_skill": true}), Y),
            (
                "is_upload_skill",
                json!({"is_upload_skill": true, "is_feedback": true}),
                N,
            ),
            ("mem_cube_id", json!({"mem_cube_id": "fu"}), Y),
            (
                "memory_content",
                json!({"memory_content": "Also coffee."}),
                Y,
            ),
            ("doc_path", json!({"doc_path": "notes.txt"}), N),
            ("source", json!({"source": "web"}), Y),
            (
                "operation",
                json!({"operation": [{"permission": "read"}]}),
                N,
            ),
        ],
    }
}

fn search_route() -> Route {
    Route {
        path: "/product/search",
        base: json!({"user_id": "fu", "query": "tea"}),
        probes: vec![
            ("query", json!({"query": "green tea"}), Y),
            ("user_id", json!({"user_id": "fu"}), Y),
            ("readable_cube_ids", json!({"readable_cube_ids": ["fu"]}), Y),
            ("mode", json!({"mode": "fine"}), Y),
            ("session_id", json!({"session_id": "s1"}), Y),
            ("top_k", json!({"top_k": 3}), Y),
            ("relativity", json!({"relativity": 0.1}), Y),
            ("dedup", json!({"dedup": "sim"}), Y),
            ("rerank", json!({"rerank": true}), Y),
            ("rerank", json!({"rerank": false}), N),
            ("pref_top_k", json!({"pref_top_k": 2}), Y),
            (
                "include_preference",
                json!({"include_preference": false}),
                Y,
            ),
            (
                "search_tool_memory",
                json!({"search_tool_memory": false}),
                Y,
            ),
            ("tool_mem_top_k", json!({"tool_mem_top_k": 2}), Y),
            (
                "include_skill_memory",
                json!({"include_skill_memory": false}),
                Y,
            ),
            ("skill_mem_top_k", json!({"skill_mem_top_k": 1}), Y),
            ("context_format", json!({"context_format": "memory"}), Y),
            ("context_format", json!({"context_format": "markdown"}), N),
            ("filter", json!({"filter": {"user_id": "fu"}}), Y),
            ("internet_search", json!({"internet_search": true}), N),
            ("threshold", json!({"threshold": 0.2}), Y),
            (
                "search_memory_type",
                json!({"search_memory_type": "LongTermMemory"}),
                Y,
            ),
            (
                "reference_time",
                json!({"mode": "fine", "reference_time": "2024-05-01T00:00:00Z"}),
                Y,
            ),
            (
                "reference_time",
                json!({"reference_time": "2024-05-01T00:00:00Z"}),
                N,
            ),
            (
                "chat_history",
                json!({"mode": "fine", "chat_history": [{"role": "user", "content": "About tea."}]}),
                Y,
            ),
            (
                "chat_history",
                json!({"chat_history": [{"role": "user", "content": "About tea."}]}),
                N,
            ),
            ("mem_cube_id", json!({"mem_cube_id": "fu"}), Y),
            ("moscube", json!({"moscube": true}), N),
            (
                "operation",
                json!({"operation": [{"permission": "read"}]}),
                N,
            ),
            ("source", json!({"source": "plugin"}), N),
            ("neighbor_discovery", json!({"neighbor_discovery": true}), Y),
        ],
    }
}

fn feedback_route() -> Route {
    Route {
        path: "/product/feedback",
        base: json!({"user_id": "fu", "history": [], "feedback_content": "I prefer oolong now.", "async_mode": "sync"}),
        probes: vec![
            ("user_id", json!({"user_id": "fu"}), Y),
            ("session_id", json!({"session_id": "s1"}), Y),
            ("task_id", json!({"task_id": "t2"}), Y),
            (
                "history",
                json!({"history": [{"role": "user", "content": "What tea do I like?"}]}),
                Y,
            ),
            (
                "retrieved_memory_ids",
                json!({"retrieved_memory_ids": []}),
                Y,
            ),
            (
                "feedback_content",
                json!({"feedback_content": "Not green tea."}),
                Y,
            ),
            (
                "feedback_time",
                json!({"feedback_time": "2024-05-01T10:00:00Z"}),
                Y,
            ),
            ("writable_cube_ids", json!({"writable_cube_ids": ["fu"]}), Y),
            ("async_mode", json!({"async_mode": "async"}), Y),
            ("corrected_answer", json!({"corrected_answer": true}), Y),
            ("info", json!({"info": {"k": "v"}}), Y),
            ("mem_cube_id", json!({"mem_cube_id": "fu"}), Y),
        ],
    }
}

fn other_routes() -> Vec<Route> {
    vec![
        Route {
            path: "/product/get_memory",
            base: json!({"mem_cube_id": "fu"}),
            probes: vec![
                ("mem_cube_id", json!({"mem_cube_id": "fu"}), Y),
                ("user_id", json!({"user_id": "fu"}), Y),
                (
                    "include_preference",
                    json!({"include_preference": false}),
                    Y,
                ),
                (
                    "include_tool_memory",
                    json!({"include_tool_memory": false}),
                    Y,
                ),
                (
                    "include_skill_memory",
                    json!({"include_skill_memory": false}),
                    Y,
                ),
                ("filter", json!({"filter": {"user_id": "fu"}}), Y),
                ("page", json!({"page": 1, "page_size": 5}), Y),
                ("page_size", json!({"page": 2, "page_size": 1}), Y),
            ],
        },
        Route {
            path: "/product/get_all",
            base: json!({"user_id": "fu", "memory_type": "text_mem"}),
            probes: vec![
                ("user_id", json!({"user_id": "fu"}), Y),
                ("memory_type", json!({"memory_type": "act_mem"}), Y),
                ("mem_cube_ids", json!({"mem_cube_ids": ["fu"]}), Y),
                ("search_query", json!({"search_query": "tea"}), Y),
                (
                    "search_type",
                    json!({"search_query": "tea", "search_type": "embedding"}),
                    Y,
                ),
            ],
        },
        Route {
            path: "/product/delete_memory",
            base: json!({}),
            probes: vec![
                ("filter", json!({"filter": {"user_id": "nobody"}}), Y),
                ("user_id", json!({"user_id": "nobody"}), Y),
                ("session_id", json!({"session_id": "no-such-session"}), Y),
                (
                    "conversation_id",
                    json!({"conversation_id": "no-such-session"}),
                    Y,
                ),
                (
                    "file_ids",
                    json!({"file_ids": ["no-such-file"], "writable_cube_ids": ["fu"]}),
                    Y,
                ),
                (
                    "writable_cube_ids",
                    json!({"file_ids": ["no-such-file"], "writable_cube_ids": ["fu"]}),
                    Y,
                ),
                (
                    "auto_cleanup_working",
                    json!({"user_id": "nobody", "auto_cleanup_working": true}),
                    N,
                ),
            ],
        },
        Route {
            path: "/product/create_cube",
            base: json!({"cube_name": "Field walk", "owner_id": "fu"}),
            probes: vec![
                (
                    "cube_name",
                    json!({"cube_name": "Walk", "cube_id": "walk-1"}),
                    Y,
                ),
                (
                    "owner_id",
                    json!({"owner_id": "fu", "cube_id": "walk-2"}),
                    Y,
                ),
                ("cube_id", json!({"cube_id": "walk-3"}), Y),
                (
                    "cube_path",
                    json!({"cube_id": "walk-4", "cube_path": "/srv/cubes/walk"}),
                    N,
                ),
            ],
        },
        Route {
            path: "/product/exist_mem_cube_id",
            base: json!({}),
            probes: vec![("mem_cube_id", json!({"mem_cube_id": "fu"}), Y)],
        },
    ]
}

fn chat_probes() -> Vec<Probe> {
    vec![
        ("user_id", json!({"user_id": "fu"}), Y),
        ("query", json!({"query": "What tea do I like?"}), Y),
        ("readable_cube_ids", json!({"readable_cube_ids": ["fu"]}), Y),
        ("writable_cube_ids", json!({"writable_cube_ids": ["fu"]}), Y),
        (
            "history",
            json!({"history": [{"role": "user", "content": "Hi."}]}),
            Y,
        ),
        ("mode", json!({"mode": "fast"}), Y),
        ("system_prompt", json!({"system_prompt": "Be brief."}), Y),
        ("top_k", json!({"top_k": 3}), Y),
        ("session_id", json!({"session_id": "s1"}), Y),
        (
            "include_preference",
            json!({"include_preference": false}),
            Y,
        ),
        ("pref_top_k", json!({"pref_top_k": 2}), Y),
        (
            "model_name_or_path",
            json!({"model_name_or_path": "fake"}),
            Y,
        ),
        ("max_tokens", json!({"max_tokens": 50}), Y),
        ("temperature", json!({"temperature": 0.1}), Y),
        ("top_p", json!({"top_p": 0.9}), Y),
        (
            "add_message_on_answer",
            json!({"add_message_on_answer": false}),
            Y,
        ),
        ("manager_user_id", json!({"manager_user_id": "boss"}), Y),
        ("project_id", json!({"project_id": "p1"}), Y),
        ("relativity", json!({"relativity": 0.1}), Y),
        ("filter", json!({"filter": {"user_id": "fu"}}), Y),
        ("internet_search", json!({"internet_search": true}), N),
        ("threshold", json!({"threshold": 0.3}), Y),
        ("moscube", json!({"moscube": true}), N),
        ("mem_cube_id", json!({"mem_cube_id": "fu"}), Y),
    ]
}

fn chat_routes() -> Vec<Route> {
    let mut routes: Vec<Route> = [
        "/product/chat/complete",
        "/product/chat/stream",
        "/product/chat/stream/playground",
    ]
    .into_iter()
    .map(|path| Route {
        path,
        base: json!({"user_id": "fu", "query": "What tea do I like?"}),
        probes: chat_probes(),
    })
    .collect();
    routes[2].probes.push((
        "beginner_guide_step",
        json!({"beginner_guide_step": "1"}),
        N,
    ));
    routes
}

/// The routes added for parity (dashboard, register, user names, suggestions).
fn parity_routes() -> Vec<Route> {
    vec![
        Route {
            path: "/product/get_memory_dashboard",
            base: json!({"mem_cube_id": "fu"}),
            probes: vec![
                ("mem_cube_id", json!({"mem_cube_id": "fu"}), Y),
                ("user_id", json!({"user_id": "fu"}), Y),
                (
                    "include_preference",
                    json!({"include_preference": false}),
                    Y,
                ),
                (
                    "include_tool_memory",
                    json!({"include_tool_memory": false}),
                    Y,
                ),
                (
                    "include_skill_memory",
                    json!({"include_skill_memory": false}),
                    Y,
                ),
                ("filter", json!({"filter": {"user_id": "fu"}}), Y),
                ("page", json!({"page": 1, "page_size": 5}), Y),
                ("page_size", json!({"page": 1, "page_size": 2}), Y),
            ],
        },
        Route {
            path: "/product/register_cube",
            base: json!({"mem_cube_name_or_path": "registered"}),
            probes: vec![
                (
                    "mem_cube_name_or_path",
                    json!({"mem_cube_name_or_path": "reg-2"}),
                    Y,
                ),
                (
                    "mem_cube_name_or_path",
                    json!({"mem_cube_name_or_path": "/srv/cubes/x"}),
                    N,
                ),
                ("mem_cube_id", json!({"mem_cube_id": "reg-3"}), Y),
                (
                    "user_id",
                    json!({"user_id": "fu", "mem_cube_id": "reg-4"}),
                    Y,
                ),
            ],
        },
        Route {
            path: "/product/get_user_names_by_memory_ids",
            base: json!({"memory_ids": ["no-such-memory"]}),
            probes: vec![("memory_ids", json!({"memory_ids": ["no-such-memory"]}), Y)],
        },
        Route {
            path: "/product/suggestions",
            base: json!({"user_id": "fu", "mem_cube_id": "fu"}),
            probes: vec![
                ("user_id", json!({"user_id": "fu"}), Y),
                ("mem_cube_id", json!({"mem_cube_id": "fu"}), Y),
                ("language", json!({"language": "en"}), Y),
                ("language", json!({"language": "fr"}), N),
                ("message", json!({"message": "What should I drink?"}), Y),
            ],
        },
    ]
}

/// The cloud routes the SDK calls, with every key its payloads carry.
fn cloud_routes() -> Vec<Route> {
    let c = "/api/openmem/v1";
    vec![
        Route {
            path: "/api/openmem/v1/add/message",
            base: json!({"user_id": "fc", "messages": [{"role": "user", "content": "I drink mate."}], "async_mode": false}),
            probes: vec![
                ("conversation_id", json!({"conversation_id": "c1"}), Y),
                ("info", json!({"info": {"k": "v"}}), Y),
                ("source", json!({"source": "sdk"}), Y),
                ("app_id", json!({"app_id": "a1"}), Y),
                ("agent_id", json!({"agent_id": "ag"}), Y),
                ("tags", json!({"tags": ["drinks"]}), Y),
                ("async_mode", json!({"async_mode": true}), Y),
                ("allow_public", json!({"allow_public": false}), Y),
                ("allow_public", json!({"allow_public": true}), N),
                ("allow_knowledgebase_ids", json!({"allow_knowledgebase_ids": ["kb"]}), N),
                ("allow_memory_view", json!({"allow_memory_view": ["v"]}), N),
            ],
        },
        Route {
            path: "/api/openmem/v1/search/memory",
            base: json!({"user_id": "fc", "query": "mate"}),
            probes: vec![
                ("conversation_id", json!({"conversation_id": "c1"}), Y),
                ("agent_id", json!({"agent_id": "ag"}), Y),
                ("memory_limit_number", json!({"memory_limit_number": 2}), Y),
                ("include_preference", json!({"include_preference": false}), Y),
                ("knowledgebase_ids", json!({"knowledgebase_ids": []}), Y),
                ("filter", json!({"filter": {"user_id": "fc"}}), Y),
                ("preference_limit_number", json!({"preference_limit_number": 2}), Y),
                ("tool_memory_limit_number", json!({"tool_memory_limit_number": 2}), Y),
                ("include_tool_memory", json!({"include_tool_memory": true}), Y),
                ("relativity", json!({"relativity": 0.1}), Y),
                ("include_skill", json!({"include_skill": true}), Y),
                ("skill_limit_number", json!({"skill_limit_number": 2}), Y),
                ("context_format", json!({"context_format": "memory"}), Y),
                ("source", json!({"source": "plugin"}), N),
                ("include_memory_view", json!({"include_memory_view": ["v"]}), N),
            ],
        },
        Route {
            path: "/api/openmem/v1/get/memory",
            base: json!({"user_id": "fc"}),
            probes: vec![
                ("include_preference", json!({"include_preference": false}), Y),
                ("page", json!({"page": 1}), Y),
                ("size", json!({"size": 5}), Y),
                ("agent_id", json!({"agent_id": "ag"}), Y),
                ("include_tool_memory", json!({"include_tool_memory": true}), Y),
                ("filter", json!({"filter": {"user_id": "fc"}}), Y),
                ("include_memory_view", json!({"include_memory_view": ["v"]}), N),
            ],
        },
        Route {
            path: "/api/openmem/v1/add/feedback",
            base: json!({"user_id": "fc", "feedback_content": "I prefer yerba mate now."}),
            probes: vec![
                ("conversation_id", json!({"conversation_id": "c1"}), Y),
                ("agent_id", json!({"agent_id": "ag"}), Y),
                ("app_id", json!({"app_id": "a1"}), Y),
                ("feedback_time", json!({"feedback_time": "2024-05-01T10:00:00Z"}), Y),
                ("allow_public", json!({"allow_public": true}), N),
                ("allow_knowledgebase_ids", json!({"allow_knowledgebase_ids": []}), Y),
            ],
        },
        Route {
            path: "/api/openmem/v1/chat",
            base: json!({"user_id": "fc", "conversation_id": "c1", "query": "What do I drink?"}),
            probes: vec![
                ("internet_search", json!({"internet_search": false}), Y),
                ("internet_search", json!({"internet_search": true}), N),
                ("force_stop", json!({"force_stop": true}), N),
                ("use_mem_os_cube", json!({"use_mem_os_cube": true}), N),
                ("source", json!({"source": "sdk"}), N),
                ("system_prompt", json!({"system_prompt": "Be brief."}), Y),
                ("model_name", json!({"model_name": "fake"}), Y),
                ("knowledgebase_ids", json!({"knowledgebase_ids": []}), Y),
                ("filter", json!({"filter": {"user_id": "fc"}}), Y),
                ("add_message_on_answer", json!({"add_message_on_answer": false}), Y),
                ("app_id", json!({"app_id": "a1"}), N),
                ("agent_id", json!({"agent_id": "ag"}), N),
                ("async_mode", json!({"async_mode": true}), Y),
                ("async_mode", json!({"async_mode": false}), N),
                ("tags", json!({"tags": ["t"]}), N),
                ("info", json!({"info": {"k": "v"}}), N),
                ("allow_public", json!({"allow_public": true}), N),
                ("allow_knowledgebase_ids", json!({"allow_knowledgebase_ids": ["kb"]}), N),
                ("max_tokens", json!({"max_tokens": 64}), Y),
                ("temperature", json!({"temperature": 0.7}), Y),
                ("top_p", json!({"top_p": 0.95}), Y),
                ("include_preference", json!({"include_preference": false}), Y),
                ("preference_limit_number", json!({"preference_limit_number": 2}), Y),
                ("memory_limit_number", json!({"memory_limit_number": 2}), Y),
                ("stream", json!({"stream": true}), Y),
                ("include_tool_memory", json!({"include_tool_memory": true}), N),
                ("tool_memory_limit_number", json!({"tool_memory_limit_number": 6}), Y),
                ("relativity", json!({"relativity": 0.1}), Y),
            ],
        },
        Route {
            path: "/api/openmem/v1/get/knowledgebase-file",
            base: json!({"file_ids": ["no-such-file"]}),
            probes: vec![
                ("page", json!({"page": 1, "page_size": 5}), Y),
                ("type", json!({"type": "skill"}), N),
            ],
        },
    ]
    .into_iter()
    .inspect(|r| assert!(r.path.starts_with(c)))
    .collect()
}

async fn walk(s: &tests::Server, r: &Route) -> Vec<String> {
    let mut wrong = Vec::new();
    for (field, extra, want) in &r.probes {
        let body = merged(&r.base, extra);
        let (st, b) = s.post(r.path, body.clone()).await;
        let message = b["message"].as_str().unwrap_or("").to_string();
        let got_ok = (200..300).contains(&st);
        let refused_by_name = st == 400 && message.starts_with(field);
        let fine = match want {
            Y => got_ok,
            N => refused_by_name,
        };
        if !fine {
            wrong.push(format!(
                "{} {field}: want {want:?}, got {st} {message} (body {body})",
                r.path
            ));
        }
    }
    // A field outside the model is a 400 that names it.
    let (st, b) = s
        .post(r.path, merged(&r.base, &json!({"no_such_field": 1})))
        .await;
    let message = b["message"].as_str().unwrap_or("");
    if st != 400 || !message.contains("no_such_field") {
        wrong.push(format!("{} unknown field: got {st} {message}", r.path));
    }
    wrong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_memos_request_field_is_honoured_or_refused_by_name() {
    // An LLM, so that fine mode, feedback and chat run their real paths.
    let llm = FakeLlm::start(Arc::new(|body: &Value, _| {
        let system = body["messages"][0]["content"].as_str().unwrap_or("");
        if system.contains("Suggest three") {
            FakeReply::Text("{\"query\": [\"Which tea suits mornings?\", \"Green or black?\", \"How much caffeine?\"]}".into())
        } else if system.contains("corrected answer") {
            FakeReply::Text("You prefer oolong.".into())
        } else {
            FakeReply::Text("{\"memory list\": []}".into())
        }
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tests::config(dir.path());
    cfg.llm.models = vec![llm.model("fake")];
    let s = tests::Server::start(cfg).await;
    let (st, b) = s
        .post(
            "/product/add",
            json!({"user_id": "fu", "async_mode": "sync", "messages": "I like green tea."}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let mut routes = vec![add_route(), search_route(), feedback_route()];
    routes.extend(other_routes());
    routes.extend(chat_routes());
    routes.extend(parity_routes());
    routes.extend(cloud_routes());
    let mut wrong = Vec::new();
    let mut probes = 0;
    for r in &routes {
        probes += r.probes.len();
        wrong.extend(walk(&s, r).await);
    }
    assert!(
        wrong.is_empty(),
        "{} of {probes} probes:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // What two of the honoured fields do: corrected_answer asks the model for the corrected
    // answer; suggestions come from the model, in the asked language.
    let (st, b) = s
        .post("/product/feedback", json!({"user_id": "fu", "history": [{"role": "user", "content": "What tea do I like?"},
            {"role": "assistant", "content": "Green tea."}], "feedback_content": "No, I prefer oolong now.",
            "async_mode": "sync", "corrected_answer": true}))
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["data"][0]["answer"], "You prefer oolong.", "{b}");
    let asked = llm.requests().last().unwrap().clone();
    assert_eq!(asked["messages"][2]["content"], "Green tea.", "{asked}");
    let (st, b) = s
        .post("/product/feedback", json!({"user_id": "fu", "history": [], "feedback_content": "No.", "corrected_answer": true}))
        .await;
    assert_eq!(st, 400, "async feedback cannot return the answer: {b}");
    let (st, b) = s
        .post(
            "/product/suggestions",
            json!({"user_id": "fu", "mem_cube_id": "fu", "language": "en"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["data"]["query"].as_array().unwrap().len(), 3, "{b}");
    let asked = llm.requests().last().unwrap().clone();
    assert!(
        asked["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("English")
    );
    assert!(
        asked["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("green tea"),
        "the cube's memories are in the prompt: {asked}"
    );
    s.stop().await;
}
