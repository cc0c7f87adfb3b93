//! `memos mcp`: the MCP server over stdio, driven by `rmcp`'s client through a child process.

mod common;

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_over_stdio_lists_tools_adds_and_searches() {
    let model = common::model_dir();
    let data = tempfile::tempdir().unwrap();
    let transport = TokioChildProcess::new(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_memos")).configure(|cmd| {
            cmd.arg("mcp")
                .env("MEMOS_DATA_DIR", data.path())
                .env("MEMOS_MODEL_DIR", &model)
                .env("MEMOS_METRICS_ADDR", "")
                .env("MEMOS_LOG", "warn");
        }),
    )
    .unwrap();
    let client = ().serve(transport).await.expect("MCP session over stdio");
    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), 9);
    let search = tools.iter().find(|t| t.name == "search_memories").unwrap();
    let schema = serde_json::to_value(&search.input_schema).unwrap();
    assert!(schema["properties"]["filter"].is_object(), "{schema}");
    let call = |name: &str, a: Value| {
        let c = &client;
        let req = CallToolRequestParams::new(name.to_string())
            .with_arguments(a.as_object().unwrap().clone());
        async move { c.call_tool(req).await.unwrap() }
    };
    let r = call(
        "add_memory",
        json!({"user_id": "zoe", "content": "My bike is a green Brompton."}),
    )
    .await;
    assert_ne!(r.is_error, Some(true));
    let r = call(
        "search_memories",
        json!({"user_id": "zoe", "query": "What bike do I ride?"}),
    )
    .await;
    let text = &r.content[0].as_text().unwrap().text;
    let found: Value = serde_json::from_str(text).unwrap();
    assert!(
        found["text_mem"][0]["memories"][0]["memory"]
            .as_str()
            .unwrap()
            .contains("green Brompton"),
        "{found}"
    );
    client.cancel().await.unwrap();
}
