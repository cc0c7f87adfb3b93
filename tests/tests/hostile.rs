//! A corpus of bad input across REST, the cloud shapes, SQL and the bus. Every case gets a 4xx
//! (or, on the event bus, a dead letter) with a message saying what was wrong; after every case
//! the server is alive and an honest tenant's add and search still work.

use bytes::Bytes;
use serde_json::{Value, json};

const KEY: &str = "mk-honest";

enum Req {
    /// method, path, JSON body.
    Json(&'static str, String, Value),
    /// method, path, raw body, content type.
    Raw(&'static str, String, Vec<u8>, &'static str),
    /// GET with an Authorization header value of its own.
    Auth(String, &'static str),
    /// A SQL statement over POST /sql.
    Sql(String),
    /// A NATS search request body.
    NatsSearch(Vec<u8>),
}

struct Case {
    what: String,
    req: Req,
    status: u16,
}

fn post(what: &str, path: &str, body: Value, status: u16) -> Case {
    Case {
        what: what.into(),
        req: Req::Json("POST", path.into(), body),
        status,
    }
}

fn get(what: &str, path: &str, status: u16) -> Case {
    Case {
        what: what.into(),
        req: Req::Json("GET", path.into(), Value::Null),
        status,
    }
}

fn search(what: &str, extra: Value, status: u16) -> Case {
    let mut body = json!({"user_id": "hon", "readable_cube_ids": ["hon"], "query": "tea"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    post(what, "/product/search", body, status)
}

fn cloud_search(what: &str, extra: Value, status: u16) -> Case {
    let mut body = json!({"user_id": "hon", "query": "tea"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    post(what, "/api/openmem/v1/search/memory", body, status)
}

fn add(what: &str, extra: Value, status: u16) -> Case {
    let mut body = json!({"user_id": "hon", "writable_cube_ids": ["hon"], "async_mode": "sync",
        "messages": [{"role": "user", "content": "hello"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    post(what, "/product/add", body, status)
}

fn sql(q: &str, status: u16) -> Case {
    Case {
        what: format!("SQL {}", q.chars().take(60).collect::<String>()),
        req: Req::Sql(q.into()),
        status,
    }
}

fn search_cases() -> Vec<Case> {
    let long = "x".repeat(300);
    let many_cubes: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
    let huge = 18446744073709551615u64;
    vec![
        // /product/search: every limit, enum and range.
        search("top_k 0", json!({"top_k": 0}), 400),
        search("top_k over max_top_k", json!({"top_k": 100000}), 400),
        search(
            "pref_top_k over max_top_k",
            json!({"pref_top_k": 100000}),
            400,
        ),
        search(
            "tool_mem_top_k over max_top_k",
            json!({"tool_mem_top_k": 1000000}),
            400,
        ),
        search(
            "skill_mem_top_k over max_top_k",
            json!({"skill_mem_top_k": 9999}),
            400,
        ),
        search("top_k u64::MAX", json!({"top_k": huge}), 400),
        search("top_k 2^64", json!({"top_k": 18446744073709551616.0}), 400),
        search("top_k negative", json!({"top_k": -1}), 400),
        search("top_k a string", json!({"top_k": "ten"}), 400),
        search("unknown mode", json!({"mode": "turbo"}), 400),
        search("negative relativity", json!({"relativity": -0.5}), 400),
        search("relativity over 1", json!({"relativity": 2.0}), 400),
        search("unknown dedup", json!({"dedup": "maybe"}), 400),
        search(
            "unknown memory type",
            json!({"search_memory_type": "Nope"}),
            400,
        ),
        search(
            "as_of i64::MAX",
            json!({"as_of": "9223372036854775807"}),
            400,
        ),
        search(
            "as_of not a time",
            json!({"as_of": "last tuesday-ish"}),
            400,
        ),
        search(
            "event_as_of year 262143",
            json!({"event_as_of": "+262143-01-01"}),
            400,
        ),
        search(
            "unknown filter operator",
            json!({"filter": {"created_at": {"around": 1}}}),
            400,
        ),
        search("malformed filter", json!({"filter": {"and": 3}}), 400),
        search("empty query", json!({"query": ""}), 400),
        search("query too long", json!({"query": "q".repeat(5000)}), 413),
        search("empty cube id", json!({"readable_cube_ids": [""]}), 400),
        search(
            "cube id over 256 bytes",
            json!({"readable_cube_ids": [long.clone()]}),
            400,
        ),
        search(
            "101 cubes",
            json!({"readable_cube_ids": many_cubes.clone()}),
            413,
        ),
        search("empty user id", json!({"user_id": ""}), 400),
        search("empty session id", json!({"session_id": ""}), 400),
        search(
            "knowledge base id empty",
            json!({"knowledgebase_ids": [""]}),
            400,
        ),
    ]
}

fn ids_cases() -> Vec<Case> {
    let many_cubes: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
    let many_ids: Vec<String> = (0..1001).map(|i| format!("id{i}")).collect();
    vec![
        // Ids.
        post(
            "get_memory_by_ids [\"\"]",
            "/product/get_memory_by_ids",
            json!([""]),
            400,
        ),
        post(
            "get_memory_by_ids 600-byte id",
            "/product/get_memory_by_ids",
            json!(["i".repeat(600)]),
            400,
        ),
        post(
            "get_memory_by_ids 1001 ids",
            "/product/get_memory_by_ids",
            json!(many_ids.clone()),
            413,
        ),
        post(
            "get_memory_by_ids not a list",
            "/product/get_memory_by_ids",
            json!({"ids": ["a"]}),
            400,
        ),
        post(
            "get_memory_by_ids []",
            "/product/get_memory_by_ids",
            json!([]),
            400,
        ),
        post(
            "delete by [\"\"]",
            "/product/delete_memory",
            json!({"memory_ids": [""]}),
            400,
        ),
        post(
            "delete by file id \"\"",
            "/product/delete_memory",
            json!({"file_ids": [""]}),
            400,
        ),
        post(
            "delete by []",
            "/product/delete_memory",
            json!({"memory_ids": []}),
            400,
        ),
        post(
            "delete 1001 ids",
            "/product/delete_memory",
            json!({"memory_ids": many_ids.clone()}),
            413,
        ),
        post(
            "delete with an empty filter",
            "/product/delete_memory",
            json!({"writable_cube_ids": ["hon"], "filter": {}}),
            400,
        ),
        post(
            "delete by ids and filter",
            "/product/delete_memory",
            json!({"memory_ids": ["a"], "filter": {"user_id": "hon"}}),
            400,
        ),
        post(
            "delete in 101 cubes",
            "/product/delete_memory",
            json!({"writable_cube_ids": many_cubes.clone(), "user_id": "hon"}),
            413,
        ),
    ]
}

fn paging_cases() -> Vec<Case> {
    let huge = 18446744073709551615u64;
    vec![
        // Paging and exports.
        post(
            "get_memory page 0",
            "/product/get_memory",
            json!({"mem_cube_id": "hon", "page": 0, "page_size": 10}),
            400,
        ),
        post(
            "get_memory page_size u64::MAX",
            "/product/get_memory",
            json!({"mem_cube_id": "hon", "page": 1, "page_size": huge}),
            400,
        ),
        post(
            "get_memory page without size",
            "/product/get_memory",
            json!({"mem_cube_id": "hon", "page": 1}),
            400,
        ),
        post(
            "get_memory no cube",
            "/product/get_memory",
            json!({"user_id": "hon"}),
            400,
        ),
        post(
            "get_all unknown memory_type",
            "/product/get_all",
            json!({"memory_type": "dream_mem", "user_id": "hon"}),
            400,
        ),
        post(
            "get_all unknown search_type",
            "/product/get_all",
            json!({"memory_type": "text_mem", "user_id": "hon", "search_type": "psychic"}),
            400,
        ),
        get(
            "get_memory/{id} as_of 20 digits",
            "/product/get_memory/x?as_of=99999999999999999999",
            400,
        ),
        get(
            "get_memory/{id} history=maybe",
            "/product/get_memory/x?history=maybe",
            400,
        ),
        get(
            "get_memory/{id} unknown query field",
            "/product/get_memory/x?foo=1",
            400,
        ),
        get("tool_stats without a cube", "/product/tool_stats", 400),
        get("an unknown route", "/product/teleport", 404),
    ]
}

fn adds_cases() -> Vec<Case> {
    let many_cubes: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
    vec![
        // Adds.
        add(
            "2001 messages",
            json!({"messages": vec![json!({"role": "user", "content": "m"}); 2001]}),
            413,
        ),
        add(
            "reserved info key covered_history",
            json!({"info": {"covered_history": "someone-elses-id"}}),
            400,
        ),
        add(
            "reserved info key derived_from",
            json!({"info": {"derived_from": "someone-elses-id"}}),
            400,
        ),
        add(
            "reserved info key successor_id",
            json!({"info": {"successor_id": "x"}}),
            400,
        ),
        add(
            "511-byte event id",
            json!({"event_id": "e".repeat(511)}),
            400,
        ),
        add(
            "600-byte agent id",
            json!({"agent_id": "a".repeat(600)}),
            400,
        ),
        add("unknown async_mode", json!({"async_mode": "later"}), 400),
        add(
            "no user and no cube",
            json!({"user_id": null, "writable_cube_ids": null}),
            400,
        ),
        add(
            "101 cubes",
            json!({"writable_cube_ids": many_cubes.clone()}),
            413,
        ),
        add(
            "message role unknown",
            json!({"messages": [{"role": "wizard", "content": "x"}]}),
            400,
        ),
        post(
            "feedback with an empty target",
            "/product/feedback",
            json!({"user_id": "hon", "writable_cube_ids": ["hon"],
            "feedback_content": "no", "retrieved_memory_ids": [""], "async_mode": "sync"}),
            400,
        ),
        post(
            "feedback without content",
            "/product/feedback",
            json!({"user_id": "hon", "writable_cube_ids": ["hon"]}),
            400,
        ),
    ]
}

fn bodies_cases() -> Vec<Case> {
    vec![
        // Bodies.
        Case {
            what: "a 20 MB body".into(),
            req: Req::Raw(
                "POST",
                "/product/add".into(),
                vec![b' '; 20 << 20],
                "application/json",
            ),
            status: 413,
        },
        Case {
            what: "malformed JSON".into(),
            req: Req::Raw(
                "POST",
                "/product/search".into(),
                b"{\"query\": ".to_vec(),
                "application/json",
            ),
            status: 400,
        },
        Case {
            what: "not JSON content".into(),
            req: Req::Raw(
                "POST",
                "/product/search".into(),
                b"query=tea".to_vec(),
                "application/x-www-form-urlencoded",
            ),
            status: 400,
        },
        Case {
            what: "invalid UTF-8 JSON".into(),
            req: Req::Raw(
                "POST",
                "/product/search".into(),
                vec![b'{', 0xff, 0xfe, b'}'],
                "application/json",
            ),
            status: 400,
        },
        post(
            "a rate limit past u32",
            "/admin/keys",
            json!({"name": "x", "cubes": ["*"], "users": ["*"],
            "read": true, "write": true, "rate_limit_per_minute": 4294967296u64}),
            400,
        ),
    ]
}

fn credentials_cases() -> Vec<Case> {
    vec![
        // Credentials.
        Case {
            what: "an unknown key".into(),
            req: Req::Auth("Token nope".into(), "/product/scheduler/allstatus"),
            status: 401,
        },
        Case {
            what: "an unsupported scheme".into(),
            req: Req::Auth("Basic aG9uOmhvbg==".into(), "/product/scheduler/allstatus"),
            status: 401,
        },
    ]
}

fn cloud_cases() -> Vec<Case> {
    vec![
        // Cloud shapes.
        cloud_search("cloud search without a user", json!({"user_id": null}), 400),
        cloud_search(
            "cloud memory_limit_number over max",
            json!({"memory_limit_number": 100000}),
            400,
        ),
        cloud_search(
            "cloud preference_limit_number over max",
            json!({"preference_limit_number": 1000000}),
            400,
        ),
        cloud_search(
            "cloud tool_memory_limit_number over max",
            json!({"tool_memory_limit_number": 1000000}),
            400,
        ),
        cloud_search("cloud relativity 5", json!({"relativity": 5.0}), 400),
        post(
            "cloud get/memory page 0",
            "/api/openmem/v1/get/memory",
            json!({"user_id": "hon", "page": 0, "size": 10}),
            400,
        ),
        post(
            "cloud get/memory size 100000",
            "/api/openmem/v1/get/memory",
            json!({"user_id": "hon", "page": 1, "size": 100000}),
            400,
        ),
        post(
            "cloud delete [\"\"]",
            "/api/openmem/v1/delete/memory",
            json!({"memory_ids": [""]}),
            400,
        ),
        post(
            "cloud feedback with an empty target",
            "/api/openmem/v1/add/feedback",
            json!({"user_id": "hon",
            "feedback_content": "no", "retrieved_memory_ids": [""], "async_mode": "sync"}),
            400,
        ),
        post(
            "cloud add with a reserved info key",
            "/api/openmem/v1/add/message",
            json!({"user_id": "hon",
            "messages": [{"role": "user", "content": "hi"}], "info": {"derived_from": "x"}, "async_mode": false}),
            400,
        ),
        post(
            "cloud status without a task",
            "/api/openmem/v1/get/status",
            json!({}),
            400,
        ),
        post(
            "cloud knowledge-base files page_size 100000",
            "/api/openmem/v1/get/knowledgebase-file",
            json!({"file_ids": ["f"], "page": 1, "page_size": 100000}),
            400,
        ),
        post(
            "cloud knowledge-base files with an empty file id",
            "/api/openmem/v1/get/knowledgebase-file",
            json!({"file_ids": [""]}),
            400,
        ),
    ]
}

fn sql_and_bus_cases() -> Vec<Case> {
    vec![
        // SQL.
        sql("DROP TABLE memories", 403),
        sql("SELECT * FROM nowhere", 400),
        sql("SELECT * FROM vector_search('tea', -1)", 400),
        sql("SELECT * FROM search('tea', 100000000)", 400),
        sql("SELECT * FROM bm25('tea', 10, '')", 400),
        sql("SELECT * FROM memories WHERE", 400),
        sql(&format!("SELECT '{}'", "s".repeat(70_000)), 400),
        // The bus (NATS request-reply search).
        Case {
            what: "NATS search: malformed JSON".into(),
            req: Req::NatsSearch(b"{not json".to_vec()),
            status: 400,
        },
        Case {
            what: "NATS search: top_k 0".into(),
            req: Req::NatsSearch(
                json!({"user_id": "hon", "query": "tea", "top_k": 0})
                    .to_string()
                    .into_bytes(),
            ),
            status: 400,
        },
        Case {
            what: "NATS search: unknown mode".into(),
            req: Req::NatsSearch(
                json!({"user_id": "hon", "query": "tea", "mode": "turbo"})
                    .to_string()
                    .into_bytes(),
            ),
            status: 400,
        },
        Case {
            what: "NATS search: relativity -1".into(),
            req: Req::NatsSearch(
                json!({"user_id": "hon", "query": "tea", "relativity": -1})
                    .to_string()
                    .into_bytes(),
            ),
            status: 400,
        },
    ]
}

fn corpus() -> Vec<Case> {
    let mut c = Vec::new();
    c.extend(search_cases());
    c.extend(ids_cases());
    c.extend(paging_cases());
    c.extend(adds_cases());
    c.extend(bodies_cases());
    c.extend(credentials_cases());
    c.extend(cloud_cases());
    c.extend(sql_and_bus_cases());
    c.push(post(
        "SQL params of a wrong type",
        "/sql",
        json!({"sql": "SELECT $1", "params": [{"a": 1}]}),
        400,
    ));
    c
}

async fn send(
    s: &tests::Server,
    nats: &async_nats::Client,
    subject: &str,
    req: &Req,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    match req {
        Req::Json(method, path, body) => {
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let mut r = client
                .request(m, format!("{}{path}", s.url))
                .header("Authorization", format!("Token {KEY}"));
            if !body.is_null() {
                r = r.json(body);
            }
            let r = r.send().await.expect("a response, not a reset");
            (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
        }
        Req::Raw(method, path, bytes, ctype) => {
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let r = client
                .request(m, format!("{}{path}", s.url))
                .header("Authorization", format!("Token {KEY}"))
                .header("Content-Type", *ctype)
                .body(bytes.clone())
                .send()
                .await
                .expect("a response, not a reset");
            (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
        }
        Req::Auth(h, path) => {
            let r = client
                .get(format!("{}{path}", s.url))
                .header("Authorization", h.as_str())
                .send()
                .await
                .expect("a response");
            (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
        }
        Req::Sql(q) => s.post_as(KEY, "/sql", json!({"sql": q})).await,
        Req::NatsSearch(body) => {
            let mut h = async_nats::HeaderMap::new();
            h.insert("Authorization", format!("Token {KEY}").as_str());
            let reply = nats
                .request_with_headers(subject.to_string(), h, Bytes::from(body.clone()))
                .await
                .expect("a NATS reply");
            let v: Value = serde_json::from_slice(&reply.payload).expect("JSON reply");
            (v["code"].as_u64().unwrap_or(0) as u16, v)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_a_clear_4xx_and_nothing_else_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tests::config(dir.path());
    cfg.auth.keys = vec![server::auth::KeyConfig::full("honest", KEY)];
    let prefix = tests::nats_config(&mut cfg);
    let s = tests::Server::start(cfg).await;
    let nats = async_nats::connect("nats://127.0.0.1:4222").await.unwrap();
    let subject = format!("{prefix}.search");
    let cases = corpus();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let mut wrong = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let (st, body) = send(&s, &nats, &subject, &c.req).await;
        let message = body["message"].as_str().unwrap_or("");
        if st != c.status || message.trim().is_empty() {
            let body: String = body.to_string().chars().take(300).collect();
            wrong.push(format!(
                "{}: expected {}, got {st}: {body}",
                c.what, c.status
            ));
        }
        // The server is alive and an honest tenant's add and search still work.
        let (st, h) = s.get("/health").await;
        assert_eq!(st, 200, "after {}: {h}", c.what);
        let fact = format!("Honest fact number {i}: the kettle is blue.");
        let (st, b) = s
            .post_as(
                KEY,
                "/product/add",
                json!({"user_id": "hon", "writable_cube_ids": ["hon"],
                "async_mode": "sync", "memory_content": fact}),
            )
            .await;
        assert_eq!(st, 200, "add after {}: {b}", c.what);
        let (st, b) = s
            .post_as(
                KEY,
                "/product/search",
                json!({"user_id": "hon", "readable_cube_ids": ["hon"],
                "query": format!("honest fact number {i} kettle"), "top_k": 3}),
            )
            .await;
        assert_eq!(st, 200, "search after {}: {b}", c.what);
        assert!(
            b.to_string().contains(&fact),
            "search after {}: {b}",
            c.what
        );
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases answered wrongly:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
    // A bus deadline at the integer limit is no deadline, never an overflow.
    let mut h = async_nats::HeaderMap::new();
    h.insert("Authorization", format!("Token {KEY}").as_str());
    h.insert("timeout-ms", "18446744073709551615");
    let reply = nats
        .request_with_headers(
            subject.clone(),
            h,
            Bytes::from(json!({"user_id": "hon", "query": "kettle"}).to_string()),
        )
        .await
        .expect("a NATS reply");
    let v: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(v["code"], 200, "{v}");
    s.stop().await;
}

/// Events on the bus that lie about their cube, carry server-only fields, or would delete a
/// whole cube are dead-lettered with a reason; the good events around them are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_events_are_tied_to_their_subject_and_follow_the_rest_rules() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tests::config(dir.path());
    let p = tests::nats_config(&mut cfg);
    let s = tests::Server::start(cfg).await;
    let client = async_nats::connect("nats://127.0.0.1:4222").await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let good = |i: usize, cube: &str| {
        json!({"event_id": format!("good-{i}"), "kind": "messages", "cube_id": cube, "user_id": "u",
               "payload": {"messages": [{"role": "user", "content": format!("good event {i} about pianos")}]}})
    };
    // A victim cube with a memory that the events below try to reach.
    let (st, b) = s
        .post(
            "/product/add",
            json!({"user_id": "v", "writable_cube_ids": ["victim"], "async_mode": "sync",
            "memory_content": "The victim keeps a violin."}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let victim_id = b["data"][0]["memory_id"].as_str().unwrap().to_string();
    let bad: Vec<(&str, String, Value)> = vec![
        (
            "cube_id other than the subject's",
            format!("{p}.events.mine"),
            json!({"kind": "messages", "cube_id": "victim", "user_id": "u", "payload": {"messages": "planted"}}),
        ),
        (
            "reserved info key",
            format!("{p}.events.mine"),
            json!({"kind": "messages", "cube_id": "mine", "user_id": "u", "info": {"covered_history": victim_id},
                   "payload": {"messages": "link me"}}),
        ),
        (
            "delete with an empty filter",
            format!("{p}.events.victim"),
            json!({"kind": "delete", "cube_id": "victim", "user_id": "v", "payload": {"filter": {}}}),
        ),
    ];
    for (i, (_, subject, ev)) in bad.iter().enumerate() {
        js.publish(
            format!("{p}.events.mine"),
            Bytes::from(good(i, "mine").to_string()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        js.publish(subject.clone(), Bytes::from(ev.to_string()))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    bus_deletes_and_feedback_stay_in_their_cube(s, &js, &p, &victim_id, bad).await;
}

async fn bus_deletes_and_feedback_stay_in_their_cube(
    s: tests::Server,
    js: &async_nats::jetstream::Context,
    p: &str,
    victim_id: &str,
    bad: Vec<(&str, String, Value)>,
) {
    let good = |i: usize, cube: &str| {
        json!({"event_id": format!("good-{i}"), "kind": "messages", "cube_id": cube, "user_id": "u",
               "payload": {"messages": [{"role": "user", "content": format!("good event {i} about pianos")}]}})
    };
    // A bus delete by id of another user's memory in the cube touches nothing.
    js.publish(
        format!("{p}.events.victim"),
        Bytes::from(
            json!({"kind": "delete", "cube_id": "victim", "user_id": "intruder",
            "payload": {"memory_ids": [victim_id]}})
            .to_string(),
        ),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    js.publish(
        format!("{p}.events.mine"),
        Bytes::from(good(99, "mine").to_string()),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let store = s.memos.store.clone();
    tests::wait_for(
        || {
            let txn = store.read_txn().unwrap();
            store.event(&txn, "mine", "good-99").unwrap().is_some()
                && store.dead_letters(&txn).unwrap().len() >= bad.len()
        },
        "the good events stored and the bad ones dead-lettered",
    )
    .await;
    let txn = store.read_txn().unwrap();
    let reasons: Vec<String> = store
        .dead_letters(&txn)
        .unwrap()
        .into_iter()
        .map(|(_, d)| d.reason)
        .collect();
    for (what, needle) in [
        (
            "cube_id other than the subject's",
            "routed to cube \"mine\"",
        ),
        ("reserved info key", "reserved"),
        ("delete with an empty filter", "empty"),
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(needle)),
            "{what}: no dead letter saying {needle:?} in {reasons:?}"
        );
    }
    for i in 0..bad.len() {
        assert!(
            store
                .event(&txn, "mine", &format!("good-{i}"))
                .unwrap()
                .is_some()
        );
    }
    let victim = store
        .get(&txn, victim_id)
        .unwrap()
        .expect("the victim's memory survives");
    assert_eq!(victim.status, store::Status::Activated);
    assert!(
        store.cube_ids(&txn, "victim").unwrap().len() == 1,
        "nothing planted in the victim's cube"
    );
    drop(txn);
    s.stop().await;
}

/// Open mode trusts whoever reaches the loopback port, so it answers only loopback names: a
/// page whose DNS name was rebound to 127.0.0.1 (another Host, a foreign Origin) gets 403, on
/// the API and on `/mcp` alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_mode_refuses_foreign_hosts_and_origins() {
    let dir = tempfile::tempdir().unwrap();
    let s = tests::Server::start(tests::config(dir.path())).await;
    assert!(s.memos.auth.is_open());
    let client = reqwest::Client::new();
    let search = json!({"user_id": "u", "query": "tea"});
    let send = |host: Option<&str>, origin: Option<&str>, path: &str| {
        let mut r = client.post(format!("{}{path}", s.url)).json(&search);
        if let Some(h) = host {
            r = r.header("Host", h);
        }
        if let Some(o) = origin {
            r = r.header("Origin", o);
        }
        r.send()
    };
    for (host, origin) in [
        (Some("attacker.example"), None),
        (Some("attacker.example:8000"), None),
        (None, Some("http://attacker.example")),
        (Some("localhost:8000"), Some("https://attacker.example:443")),
    ] {
        for path in ["/product/search", "/mcp"] {
            let r = send(host, origin, path).await.unwrap();
            assert_eq!(r.status().as_u16(), 403, "{host:?} {origin:?} {path}");
            let v: Value = r.json().await.unwrap();
            assert!(v["message"].as_str().unwrap().contains("open mode"), "{v}");
        }
    }
    for (host, origin) in [
        (None, None),
        (Some("localhost:8000"), Some("http://localhost:3000")),
        (Some("127.0.0.1"), Some("http://127.0.0.1:8000")),
        (Some("[::1]:8000"), None),
    ] {
        let r = send(host, origin, "/product/search").await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{host:?} {origin:?}");
    }
    s.stop().await;
}
