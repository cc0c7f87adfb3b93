//! The MCP server over streamable HTTP (`/mcp`), driven by `rmcp`'s own client: tools listed,
//! add and search (with a filter) called, scoping by API key as in REST.

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientConfig};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

fn args(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn text(r: &CallToolResult) -> String {
    r.content[0].as_text().expect("text content").text.clone()
}

async fn connect(
    url: &str,
    key: &str,
) -> rmcp::service::RunningService<rmcp::RoleClient, ClientConfig> {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("{url}/mcp"))
            .auth_header(key.to_string()),
    );
    ClientConfig::default()
        .serve(transport)
        .await
        .expect("MCP session")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_over_http_lists_tools_and_adds_and_searches_with_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tests::config(dir.path());
    cfg.auth.keys = vec![
        server::auth::KeyConfig::full("admin", "mk-admin"),
        server::auth::KeyConfig {
            cubes: vec!["team-a*".into()],
            ..server::auth::KeyConfig::full("a", "mk-team-a")
        },
    ];
    let s = tests::Server::start(cfg).await;
    let c = connect(&s.url, "mk-team-a").await;
    let mut names: Vec<String> = c
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "add_feedback",
            "add_memory",
            "chat",
            "delete_all_memories",
            "delete_memory",
            "get_memory",
            "list_cubes",
            "search_memories",
            "update_memory"
        ]
    );
    let call = |name: &str, a: Value| {
        let c = &c;
        let req = CallToolRequestParams::new(name.to_string()).with_arguments(args(a));
        async move { c.call_tool(req).await.unwrap() }
    };
    let r = call(
        "add_memory",
        json!({"user_id": "u1", "cube_id": "team-a-1", "content": "I keep bees on the roof."}),
    )
    .await;
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    let added: Value = serde_json::from_str(&text(&r)).unwrap();
    let id = added[0]["memory_id"].as_str().unwrap().to_string();
    call(
        "add_memory",
        json!({"user_id": "u1", "cube_id": "team-a-1", "messages": [
        {"role": "user", "content": "I love honey on toast."}]}),
    )
    .await;
    // Search with a filter: MemOS's MCP drops filters, this one applies them.
    let r = call(
        "search_memories",
        json!({"user_id": "u1", "cube_ids": ["team-a-1"], "query": "bees honey",
        "filter": {"memory_type": "UserMemory"}}),
    )
    .await;
    let found: Value = serde_json::from_str(&text(&r)).unwrap();
    let mems = found["text_mem"][0]["memories"].as_array().unwrap();
    assert!(mems.iter().any(|m| m["id"] == id.as_str()), "{found}");
    assert!(
        mems.iter()
            .all(|m| m["metadata"]["memory_type"] == "UserMemory"),
        "{found}"
    );
    let r = call(
        "search_memories",
        json!({"user_id": "u1", "cube_ids": ["team-a-1"], "query": "bees",
        "filter": {"memory_type": "LongTermMemory"}}),
    )
    .await;
    let found: Value = serde_json::from_str(&text(&r)).unwrap();
    assert!(
        found["text_mem"][0]["memories"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{found}"
    );
    mcp_update_scope_chat_and_delete(s, c, id).await;
}

async fn mcp_update_scope_chat_and_delete(
    s: tests::Server,
    c: rmcp::service::RunningService<rmcp::RoleClient, ClientConfig>,
    id: String,
) {
    let call = |name: &str, a: Value| {
        let c = &c;
        let req = CallToolRequestParams::new(name.to_string()).with_arguments(args(a));
        async move { c.call_tool(req).await.unwrap() }
    };
    // update keeps history; get shows it; feedback and list_cubes work.
    let r = call(
        "update_memory",
        json!({"memory_id": id, "content": "I keep two hives of bees on the roof."}),
    )
    .await;
    assert_ne!(r.is_error, Some(true), "{}", text(&r));
    let r = call("get_memory", json!({"memory_id": id})).await;
    let m: Value = serde_json::from_str(&text(&r)).unwrap();
    assert_eq!(m["memory"], "I keep two hives of bees on the roof.");
    assert_eq!(
        m["metadata"]["history"][0]["memory"],
        "user: I keep bees on the roof."
    );
    let r = call("add_feedback", json!({"user_id": "u1", "cube_id": "team-a-1", "feedback_content": "No, it's three not two."})).await;
    let fb: Value = serde_json::from_str(&text(&r)).unwrap();
    assert_eq!(fb["update"][0]["archived_id"], id.as_str(), "{fb}");
    let r = call("list_cubes", json!({})).await;
    let cubes: Value = serde_json::from_str(&text(&r)).unwrap();
    assert_eq!(cubes.as_array().unwrap().len(), 1, "{cubes}");
    // Scope: another team's cube is refused as in REST (403), as a tool error.
    let r = call(
        "add_memory",
        json!({"user_id": "u1", "cube_id": "team-b", "content": "x"}),
    )
    .await;
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).contains("403"), "{}", text(&r));
    // chat without an LLM: a clear tool error.
    let r = call(
        "chat",
        json!({"user_id": "u1", "query": "bees?", "cube_ids": ["team-a-1"]}),
    )
    .await;
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).contains("no LLM is configured"), "{}", text(&r));
    // delete with its receipt.
    let r = call("delete_all_memories", json!({"cube_id": "team-a-1"})).await;
    let receipt: Value = serde_json::from_str(&text(&r)).unwrap();
    assert!(receipt["deleted"].as_u64().unwrap() >= 3, "{receipt}");
    let _ = c.cancel().await;
    // No key: the endpoint is behind the same authentication as REST.
    let r = reqwest::Client::new()
        .post(format!("{}/mcp", s.url))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    s.stop().await;
}
