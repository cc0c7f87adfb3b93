//! Tenant isolation on every interface. One server, two keys: an admin key and alice's key,
//! limited to cube `alice` and user `alice`. Cube `alice` also holds bob's memories (written by
//! the admin); cube `carol` is another tenant's. For each interface — REST, the cloud shapes,
//! SQL (every table and table function), pgwire, MCP, NATS and Kafka search — and for each
//! operation — read/export, search, get by id, delete, feedback — alice's key never sees bob's
//! or carol's memories, never changes them, and an id it may not see is answered exactly like
//! an id that does not exist.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientConfig};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

const ADMIN: &str = "mk-admin";
const ALICE: &str = "mk-alice";
/// Words only bob's and carol's memories contain: any of them in a reply to alice is a leak.
const SECRETS: &[&str] = &["swordfish", "zeppelin", "Oslo", "Bob's locker"];

fn leaks(v: &Value) -> Option<&'static str> {
    let s = v.to_string();
    SECRETS.iter().copied().find(|w| s.contains(w))
}

fn assert_no_leak(what: &str, v: &Value, ids: &[&str]) {
    assert_eq!(leaks(v), None, "{what} leaked: {v}");
    let s = v.to_string();
    for id in ids {
        assert!(!s.contains(id), "{what} leaked id {id}: {v}");
    }
}

struct World {
    s: tests::Server,
    alice_id: String,
    bob_id: String,
    carol_id: String,
    kafka: String,
    kafka_prefix: String,
    nats_prefix: String,
    _broker: tests::Tansu,
    _dir: tempfile::TempDir,
}

async fn add(s: &tests::Server, user: &str, cube: &str, text: &str) -> String {
    let (st, b) = s
        .post_as(
            ADMIN,
            "/product/add",
            json!({"user_id": user, "writable_cube_ids": [cube], "async_mode": "sync",
                   "memory_content": text}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    b["data"][0]["memory_id"]
        .as_str()
        .expect("memory id")
        .to_string()
}

async fn world() -> World {
    let broker = tests::Tansu::start();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tests::config(dir.path());
    cfg.auth.keys = vec![
        server::auth::KeyConfig::full("admin", ADMIN),
        server::auth::KeyConfig {
            cubes: vec!["alice".into()],
            users: vec!["alice".into()],
            ..server::auth::KeyConfig::full("alice", ALICE)
        },
    ];
    let kafka_prefix = tests::kafka_config(&mut cfg, &broker.brokers, 2);
    let nats_prefix = tests::nats_config(&mut cfg);
    let s = tests::Server::start(cfg).await;
    let alice_id = add(
        &s,
        "alice",
        "alice",
        "Alice drinks green tea every morning.",
    )
    .await;
    let bob_id = add(&s, "bob", "alice", "Bob's locker code is swordfish 4417.").await;
    let carol_id = add(
        &s,
        "carol",
        "carol",
        "Carol is planning a zeppelin trip to Oslo.",
    )
    .await;
    // The broker sources are connected before the bus is used.
    let url = s.url.clone();
    let mut ready = false;
    for _ in 0..400 {
        if reqwest::get(format!("{url}/ready"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the server's sources never became ready");
    World {
        kafka: broker.brokers.clone(),
        s,
        alice_id,
        bob_id,
        carol_id,
        kafka_prefix,
        nats_prefix,
        _broker: broker,
        _dir: dir,
    }
}

impl World {
    /// Bob's and carol's memories as the admin sees them: unchanged, activated.
    async fn others_untouched(&self, after: &str) {
        for (id, text) in [
            (&self.bob_id, "Bob's locker code is swordfish 4417."),
            (&self.carol_id, "Carol is planning a zeppelin trip to Oslo."),
        ] {
            let (st, b) = self
                .s
                .get_as(ADMIN, &format!("/product/get_memory/{id}"))
                .await;
            assert_eq!(st, 200, "after {after}: {id} is gone: {b}");
            assert!(
                b["data"]["memory"].as_str().unwrap_or("").contains(text),
                "after {after}: {id} changed: {b}"
            );
            assert_eq!(
                b["data"]["metadata"]["status"], "activated",
                "after {after}: {b}"
            );
            assert_eq!(b["data"]["metadata"]["version"], 1, "after {after}: {b}");
        }
    }

    async fn sql(&self, key: &str, sql: &str) -> (u16, Value) {
        self.s.post_as(key, "/sql", json!({"sql": sql})).await
    }
}

fn text(r: &CallToolResult) -> String {
    r.content[0].as_text().expect("text content").text.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_scoped_key_sees_and_changes_only_its_users_memories_on_every_interface() {
    let mut w = world().await;

    rest_sees_only_its_users(&w).await;
    cloud_sees_only_its_users(&w).await;
    let alices = sql_sees_only_its_users(&w).await;
    pgwire_sees_only_its_users(&mut w).await;
    mcp_sees_only_its_users(&w, alices).await;
    nats_search_sees_only_its_users(&w).await;
    kafka_search_sees_only_its_users(&w).await;
    w.s.stop().await;
}

async fn rest_sees_only_its_users(w: &World) {
    let s = &w.s;
    let others = [w.bob_id.as_str(), w.carol_id.as_str()];
    let unknown = "00000000-0000-5000-8000-000000000000";
    // ---- REST (/product) ----
    // Search: alice's own memory is found; bob's (same cube) never, even when asked for.
    let (st, b) = s
        .post_as(
            ALICE,
            "/product/search",
            json!({"user_id": "alice", "readable_cube_ids": ["alice"],
            "query": "locker code swordfish tea", "top_k": 10, "relativity": 0.0}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert!(b.to_string().contains(&w.alice_id), "{b}");
    assert_no_leak("REST search", &b, &others);
    // A search naming no user still covers only the key's users.
    let (st, b) = s
        .post_as(
            ALICE,
            "/product/search",
            json!({"readable_cube_ids": ["alice"], "query": "swordfish"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_no_leak("REST search without user", &b, &others);
    // Time travel reads through the same scope.
    let (st, b) = s
        .post_as(
            ALICE,
            "/product/search",
            json!({"readable_cube_ids": ["alice"], "query": "swordfish",
            "as_of": "2999-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_no_leak("REST as_of search", &b, &others);
    // Another cube, or acting for another user: refused before anything is read.
    for body in [
        json!({"user_id": "alice", "readable_cube_ids": ["carol"], "query": "zeppelin"}),
        json!({"user_id": "bob", "readable_cube_ids": ["alice"], "query": "swordfish"}),
    ] {
        let (st, b) = s.post_as(ALICE, "/product/search", body).await;
        assert_eq!(st, 403, "{b}");
        assert_no_leak("REST refused search", &b, &others);
    }
    // Get by id: another user's and another cube's ids answer exactly like an unknown id.
    let (st_unknown, b_unknown) = s
        .get_as(ALICE, &format!("/product/get_memory/{unknown}"))
        .await;
    assert_eq!(st_unknown, 404);
    for id in others {
        let (st, b) = s.get_as(ALICE, &format!("/product/get_memory/{id}")).await;
        assert_eq!(st, 404, "{b}");
        assert_eq!(
            b["message"].as_str().unwrap().replace(id, "X"),
            b_unknown["message"].as_str().unwrap().replace(unknown, "X")
        );
        assert_no_leak("REST get by id", &b, &[]);
        let (st, b) = s
            .get_as(ALICE, &format!("/product/get_memory/{id}?history=true"))
            .await;
        assert_eq!(st, 404, "{b}");
        let (st, b) = s
            .post_as(ALICE, "/product/get_memory_by_ids", json!([id]))
            .await;
        assert_eq!(st, 404, "{b}");
        assert_no_leak("REST get_memory_by_ids", &b, &[]);
    }
    let (st, b) = s
        .post_as(
            ALICE,
            "/product/get_memory_by_ids",
            json!([w.alice_id, w.bob_id]),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["data"]["memories"].as_array().unwrap().len(), 1, "{b}");
    assert_no_leak(
        "REST get_memory_by_ids (mixed)",
        &b["data"]["memories"],
        &others,
    );
    rest_exports_deletes_and_feedback_stay_in_scope(w).await;
}

async fn rest_exports_deletes_and_feedback_stay_in_scope(w: &World) {
    let s = &w.s;
    let others = [w.bob_id.as_str(), w.carol_id.as_str()];
    // Export and listing.
    let (st, b) = s
        .post_as(
            ALICE,
            "/product/get_memory",
            json!({"mem_cube_id": "alice", "user_id": "alice"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert!(b.to_string().contains(&w.alice_id), "{b}");
    assert_no_leak("REST get_memory", &b, &others);
    let (st, b) = s
        .post_as(
            ALICE,
            "/product/get_all",
            json!({"memory_type": "text_mem", "mem_cube_ids": ["alice"], "user_id": "alice"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_no_leak("REST get_all", &b, &others);
    let (st, b) = s
        .post_as(
            ALICE,
            "/product/get_all",
            json!({"memory_type": "text_mem", "mem_cube_ids": ["alice"],
            "user_id": "alice", "search_query": "swordfish locker"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_no_leak("REST get_all with a query", &b, &others);
    let (st, b) = s
        .post_as(
            ALICE,
            "/product/get_memory",
            json!({"mem_cube_id": "carol", "user_id": "alice"}),
        )
        .await;
    assert_eq!(st, 403, "{b}");
    // The cube's KV cache is made of every user's memories: not for a user-scoped key.
    let (st, b) = s.get_as(ALICE, "/product/kv/alice/meta").await;
    assert_eq!(st, 403, "{b}");
    // Delete: by id (404, nothing deleted), by filter (only alice's match), for another user
    // (403), soft delete of the whole cube (only alice's).
    for id in others {
        let (st, b) = s
            .post_as(ALICE, "/product/delete_memory", json!({"memory_ids": [id]}))
            .await;
        assert_eq!(st, 404, "{b}");
    }
    let (st, b) = s
        .post_as(
            ALICE,
            "/product/delete_memory",
            json!({"writable_cube_ids": ["alice"],
            "filter": {"memory": {"like": "%swordfish%"}}}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["data"]["deleted"], 0, "{b}");
    let (st, b) = s
        .post_as(
            ALICE,
            "/product/delete_memory",
            json!({"writable_cube_ids": ["alice"], "user_id": "bob"}),
        )
        .await;
    assert_eq!(st, 403, "{b}");
    w.others_untouched("REST deletes").await;
    // Feedback naming bob's memory changes nothing of bob's.
    let (st, b) = s
        .post_as(
            ALICE,
            "/product/feedback",
            json!({"user_id": "alice", "writable_cube_ids": ["alice"],
            "async_mode": "sync", "retrieved_memory_ids": [w.bob_id, w.carol_id],
            "feedback_content": "No, the locker code is 9999 now."}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_no_leak("REST feedback outcome", &b["data"][0]["record"], &others);
    w.others_untouched("REST feedback").await;
    // Versions, tool statistics, knowledge-base listings: nothing of bob's.
    let (st, b) = s
        .get_as(ALICE, "/product/tool_stats?mem_cube_id=alice")
        .await;
    assert_eq!(st, 200, "{b}");
    assert_no_leak("REST tool_stats", &b, &others);
}

async fn cloud_sees_only_its_users(w: &World) {
    let s = &w.s;
    let others = [w.bob_id.as_str(), w.carol_id.as_str()];
    // ---- Cloud shapes (/api/openmem/v1: the cube is the user) ----
    let (st, b) = s
        .post_as(
            ALICE,
            "/api/openmem/v1/search/memory",
            json!({"user_id": "alice", "query": "locker code swordfish"}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_no_leak("cloud search", &b, &others);
    let (st, b) = s
        .post_as(
            ALICE,
            "/api/openmem/v1/search/memory",
            json!({"user_id": "carol", "query": "zeppelin"}),
        )
        .await;
    assert_eq!(st, 403, "{b}");
    for id in others {
        let (st, b) = s
            .get_as(ALICE, &format!("/api/openmem/v1/get/memory/{id}"))
            .await;
        assert_eq!(st, 404, "{b}");
        let (st, b) = s
            .post_as(
                ALICE,
                "/api/openmem/v1/delete/memory",
                json!({"memory_ids": [id]}),
            )
            .await;
        assert_eq!(st, 404, "{b}");
    }
    let (st, b) = s
        .post_as(
            ALICE,
            "/api/openmem/v1/get/memory",
            json!({"user_id": "alice", "page": 1, "size": 50}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert!(b.to_string().contains(&w.alice_id), "{b}");
    assert_no_leak("cloud get/memory", &b, &others);
    let (st, b) = s
        .post_as(
            ALICE,
            "/api/openmem/v1/delete/memory",
            json!({"user_id": "bob"}),
        )
        .await;
    assert!(st == 403 || st == 400, "{st} {b}");
    let (st, b) = s
        .post_as(ALICE, "/api/openmem/v1/add/feedback", json!({"user_id": "alice",
            "feedback_content": "Wrong, the locker code is 1234.", "retrieved_memory_ids": [w.bob_id],
            "async_mode": "sync"}))
        .await;
    assert!(st == 200, "{b}");
    w.others_untouched("cloud delete and feedback").await;
}

/// SQL over HTTP; returns how many memories alice's key counts.
async fn sql_sees_only_its_users(w: &World) -> i64 {
    let others = [w.bob_id.as_str(), w.carol_id.as_str()];
    // ---- SQL (POST /sql): every table and table function ----
    for q in [
        "SELECT * FROM memories",
        "SELECT * FROM memories WHERE user_id = 'bob'",
        "SELECT * FROM memories WHERE cube_id = 'carol'",
        "SELECT * FROM memory_history",
        "SELECT * FROM events",
        "SELECT * FROM search('locker code swordfish', 10)",
        "SELECT * FROM search('locker code swordfish', 10, 'alice')",
        "SELECT * FROM vector_search('locker code swordfish', 10)",
        "SELECT * FROM vector_search('locker code swordfish', 10, 'alice')",
        "SELECT * FROM bm25('swordfish zeppelin', 10)",
        "SELECT * FROM bm25('swordfish', 10, 'alice')",
    ] {
        let (st, b) = w.sql(ALICE, q).await;
        assert_eq!(st, 200, "{q}: {b}");
        assert_no_leak(q, &b, &others);
        // The admin sees bob's and carol's rows through the same statements (the test can fail).
        let (st, all) = w.sql(ADMIN, q).await;
        assert_eq!(st, 200, "{q}: {all}");
    }
    let (_, all) = w
        .sql(ADMIN, "SELECT * FROM bm25('swordfish zeppelin', 10)")
        .await;
    assert!(leaks(&all).is_some(), "the admin finds them: {all}");
    // Counts cover only what the key sees.
    let (_, own) = w
        .sql(
            ADMIN,
            "SELECT count(*) AS n FROM memories WHERE cube_id = 'alice' AND user_id = 'alice'",
        )
        .await;
    let alices = own["data"]["rows"][0]["n"].as_i64().expect("a count");
    assert!(alices >= 1, "{own}");
    let (st, b) = w.sql(ALICE, "SELECT cube_id, memories FROM cubes").await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(
        b["data"]["rows"],
        json!([{"cube_id": "alice", "memories": alices}]),
        "{b}"
    );
    for q in [
        "SELECT * FROM vector_search('zeppelin', 10, 'carol')",
        "SELECT * FROM bm25('zeppelin', 10, 'carol')",
        "SELECT * FROM search('zeppelin', 10, 'carol')",
    ] {
        let (st, b) = w.sql(ALICE, q).await;
        assert!(
            st == 403 || (st == 200 && b["data"]["row_count"] == 0),
            "{q}: {st} {b}"
        );
        assert_no_leak(q, &b, &others);
    }
    alices
}

async fn pgwire_sees_only_its_users(w: &mut World) {
    let others = [w.bob_id.as_str(), w.carol_id.as_str()];
    // ---- pgwire ----
    let addr = w.s.start_pg().await;
    let conn_str = format!(
        "host=127.0.0.1 port={} user=memos dbname=memos password={ALICE}",
        addr.port()
    );
    let (client, conn) = tokio_postgres::connect(&conn_str, tokio_postgres::NoTls)
        .await
        .expect("pg connect");
    let conn = tokio::spawn(conn);
    for q in [
        "SELECT id, memory FROM memories",
        "SELECT memory_id, memory FROM memory_history",
        "SELECT id, memory FROM search('locker code swordfish', 10)",
        "SELECT id, memory FROM vector_search('locker code swordfish', 10)",
        "SELECT id, memory FROM bm25('swordfish zeppelin', 10)",
    ] {
        let rows = client.simple_query(q).await.expect(q);
        let mut seen = Vec::new();
        for r in rows {
            if let tokio_postgres::SimpleQueryMessage::Row(r) = r {
                seen.push(format!("{:?} {:?}", r.get(0), r.get(1)));
            }
        }
        let v = json!(seen);
        assert_no_leak(&format!("pgwire {q}"), &v, &others);
    }
    drop(client);
    let _ = conn.await;
}

async fn mcp_sees_only_its_users(w: &World, alices: i64) {
    let s = &w.s;
    let others = [w.bob_id.as_str(), w.carol_id.as_str()];
    // ---- MCP (streamable HTTP) ----
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", s.url))
            .auth_header(ALICE.to_string()),
    );
    let mcp = ClientConfig::default()
        .serve(transport)
        .await
        .expect("MCP session");
    let call = |name: &str, a: Value| {
        let c = &mcp;
        let req = CallToolRequestParams::new(name.to_string())
            .with_arguments(a.as_object().unwrap().clone());
        async move { c.call_tool(req).await.unwrap() }
    };
    let r = call(
        "search_memories",
        json!({"user_id": "alice", "cube_ids": ["alice"], "query": "locker code swordfish"}),
    )
    .await;
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    assert_no_leak("MCP search", &json!(text(&r)), &others);
    let r = call(
        "search_memories",
        json!({"user_id": "alice", "cube_ids": ["carol"], "query": "zeppelin"}),
    )
    .await;
    assert_eq!(r.is_error, Some(true), "{}", text(&r));
    assert_no_leak("MCP search in another cube", &json!(text(&r)), &others);
    for id in others {
        let r = call("get_memory", json!({"memory_id": id})).await;
        assert_eq!(r.is_error, Some(true), "{}", text(&r));
        assert!(text(&r).contains("not found"), "{}", text(&r));
        let r = call("delete_memory", json!({"memory_id": id})).await;
        assert_eq!(r.is_error, Some(true), "{}", text(&r));
    }
    let r = call("list_cubes", json!({})).await;
    let cubes: Value = serde_json::from_str(&text(&r)).unwrap();
    assert_eq!(cubes.as_array().unwrap().len(), 1, "{cubes}");
    assert_eq!(cubes[0]["memories"], alices, "{cubes}");
    let r = call(
        "add_feedback",
        json!({"user_id": "alice", "cube_id": "alice", "retrieved_memory_ids": [w.bob_id],
               "feedback_content": "No, it's 1111 not 2222."}),
    )
    .await;
    assert_no_leak("MCP feedback", &json!(text(&r)), &others);
    let r = call("delete_all_memories", json!({"cube_id": "alice"})).await;
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    mcp.cancel().await.unwrap();
    w_others_untouched(s, &w.bob_id, &w.carol_id).await;
}

async fn nats_search_sees_only_its_users(w: &World) {
    let others = [w.bob_id.as_str(), w.carol_id.as_str()];
    // ---- NATS request-reply search ----
    let nats = async_nats::connect("nats://127.0.0.1:4222").await.unwrap();
    let ask = |body: Value, key: &'static str| {
        let nats = nats.clone();
        let subject = format!("{}.search", w.nats_prefix);
        async move {
            let mut h = async_nats::HeaderMap::new();
            h.insert("Authorization", format!("Token {key}").as_str());
            let reply = nats
                .request_with_headers(subject, h, Bytes::from(body.to_string()))
                .await
                .unwrap();
            serde_json::from_slice::<Value>(&reply.payload).unwrap()
        }
    };
    let v = ask(
        json!({"user_id": "alice", "readable_cube_ids": ["alice"], "query": "locker code swordfish"}),
        ALICE,
    )
    .await;
    assert_eq!(v["code"], 200, "{v}");
    assert_no_leak("NATS search", &v, &others);
    let v = ask(
        json!({"user_id": "alice", "readable_cube_ids": ["carol"], "query": "zeppelin"}),
        ALICE,
    )
    .await;
    assert_eq!(v["code"], 403, "{v}");
    let v = ask(
        json!({"user_id": "carol", "readable_cube_ids": ["carol"], "query": "zeppelin"}),
        ADMIN,
    )
    .await;
    assert!(leaks(&v).is_some(), "the admin finds carol's memory: {v}");
}

async fn kafka_search_sees_only_its_users(w: &World) {
    let s = &w.s;
    let others = [w.bob_id.as_str(), w.carol_id.as_str()];
    // ---- Kafka request/response search ----
    let reply_topic = format!("{}.search.responses", w.kafka_prefix);
    let replies: rdkafka::consumer::StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &w.kafka)
        .set("group.id", tests::unique("reader-"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()
        .unwrap();
    rdkafka::consumer::Consumer::subscribe(&replies, &[reply_topic.as_str()]).unwrap();
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &w.kafka)
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap();
    let kafka_ask = |body: Value, cube: &'static str, reply_to: String| {
        let (producer, replies) = (&producer, &replies);
        let topic = format!("{}.search.requests", w.kafka_prefix);
        async move {
            use rdkafka::message::{Headers, Message};
            let corr = uuid::Uuid::new_v4().to_string();
            let mut h = BTreeMap::new();
            h.insert("correlation-id".to_string(), corr.clone());
            h.insert("reply-to".to_string(), reply_to);
            h.insert("authorization".to_string(), format!("Token {ALICE}"));
            connectors::kafka::source::publish(
                producer,
                &topic,
                Some(cube),
                &h,
                None,
                body.to_string().as_bytes(),
            )
            .await
            .unwrap();
            loop {
                let m = tokio::time::timeout(Duration::from_secs(30), replies.recv())
                    .await
                    .expect("a search reply")
                    .unwrap();
                let c = m
                    .headers()
                    .and_then(|hs| hs.iter().find(|x| x.key == "correlation-id"))
                    .and_then(|x| x.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned());
                if c.as_deref() == Some(corr.as_str()) {
                    return serde_json::from_slice::<Value>(m.payload().unwrap()).unwrap();
                }
            }
        }
    };
    let v = kafka_ask(
        json!({"user_id": "alice", "readable_cube_ids": ["alice"], "query": "locker code swordfish"}),
        "alice",
        reply_topic.clone(),
    )
    .await;
    assert_eq!(v["code"], 200, "{v}");
    assert_no_leak("Kafka search", &v, &others);
    let v = kafka_ask(
        json!({"user_id": "alice", "readable_cube_ids": ["carol"], "query": "zeppelin"}),
        "carol",
        reply_topic.clone(),
    )
    .await;
    assert_eq!(v["code"], 403, "{v}");
    // A reply-to outside the reply topics is refused (the refusal goes to the default topic).
    let v = kafka_ask(
        json!({"user_id": "alice", "readable_cube_ids": ["alice"], "query": "tea"}),
        "alice",
        "some-other-application.topic".into(),
    )
    .await;
    assert_eq!(v["code"], 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("reply-to"), "{v}");

    w_others_untouched(s, &w.bob_id, &w.carol_id).await;
}

async fn w_others_untouched(s: &tests::Server, bob: &str, carol: &str) {
    for id in [bob, carol] {
        let (st, b) = s.get_as(ADMIN, &format!("/product/get_memory/{id}")).await;
        assert_eq!(st, 200, "{id} is gone: {b}");
        assert_eq!(b["data"]["metadata"]["status"], "activated", "{b}");
    }
}

/// A Postgres connection is checked per statement: a key revoked while the connection is open
/// stops working on it at once, and the key's rate limit counts statements as HTTP counts
/// requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgwire_sessions_are_rate_limited_and_revocation_is_immediate() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tests::config(dir.path());
    cfg.auth.master_key = "master-secret".into();
    let mut s = tests::Server::start(cfg).await;
    let addr = s.start_pg().await;
    let create = |name: &str, rate: u32| {
        json!({"name": name, "cubes": ["*"], "users": ["*"], "read": true, "write": false,
               "rate_limit_per_minute": rate})
    };
    let (st, k) = s
        .post_as("master-secret", "/admin/keys", create("pg-revoked", 0))
        .await;
    assert_eq!(st, 200, "{k}");
    let (id, key) = (
        k["data"]["id"].as_str().unwrap().to_string(),
        k["data"]["key"].as_str().unwrap().to_string(),
    );
    let connect = |key: String| async move {
        let (c, conn) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user=memos dbname=memos password={key}",
                addr.port()
            ),
            tokio_postgres::NoTls,
        )
        .await
        .expect("pg connect");
        tokio::spawn(conn);
        c
    };
    let c = connect(key.clone()).await;
    c.simple_query("SELECT count(*) FROM memories")
        .await
        .expect("the key works");
    let (st, b) = s
        .call(
            "DELETE",
            &format!("/admin/keys/{id}"),
            Some("master-secret"),
            None,
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let e = c
        .simple_query("SELECT count(*) FROM memories")
        .await
        .expect_err("a revoked key stops working on its open connection");
    let db = e.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "28000", "{db:?}");
    assert!(db.message().contains("revoked"), "{db:?}");

    let (st, k) = s
        .post_as("master-secret", "/admin/keys", create("pg-limited", 3))
        .await;
    assert_eq!(st, 200, "{k}");
    let c = connect(k["data"]["key"].as_str().unwrap().to_string()).await;
    for _ in 0..3 {
        c.simple_query("SELECT 1").await.expect("within the limit");
    }
    let e = c
        .simple_query("SELECT 1")
        .await
        .expect_err("the fourth statement in a minute is over the limit");
    let db = e.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "53400", "{db:?}");
    assert!(db.message().contains("limit"), "{db:?}");
    s.stop().await;
}
