//! Documents as MemOS accepts them, over a real server: office and data files (real DOCX,
//! XLSX and PPTX made by python-docx/openpyxl/python-pptx, in tests/fixtures; CSV and JSON)
//! as base64 with and without a `data:` prefix, a document URL served by a real local HTTP
//! server (and MemOS's docs example: a message that is only the URL), `doc_path` under the
//! configured root, and the refusals: a private address without `allow_private_urls`, a
//! path outside the root, a missing URL, a `file://` URL — each a 400 naming the file, never
//! a "completed" with the wrong content.

use base64::Engine;
use serde_json::{Value, json};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(tests::root().join("tests/fixtures").join(name)).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A static file server on a free loopback port: `/files/<name>` from the fixtures, a
/// redirect at `/moved`.
async fn file_server() -> (String, tokio::task::JoinHandle<()>) {
    use axum::response::IntoResponse;
    let app = axum::Router::new()
        .route(
            "/files/{name}",
            axum::routing::get(
                |axum::extract::Path(name): axum::extract::Path<String>| async move {
                    match std::fs::read(tests::root().join("tests/fixtures").join(&name)) {
                        Ok(b) => (
                            [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
                            b,
                        )
                            .into_response(),
                        Err(_) => axum::http::StatusCode::NOT_FOUND.into_response(),
                    }
                },
            ),
        )
        .route(
            "/moved",
            axum::routing::get(|| async {
                axum::response::Redirect::temporary("/files/policy.docx")
            }),
        );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let t = tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (url, t)
}

async fn add_file(s: &tests::Server, cube: &str, file: Value) -> (u16, Value) {
    s.post(
        "/product/add",
        json!({"user_id": "dora", "writable_cube_ids": [cube], "async_mode": "sync",
            "messages": [{"role": "user", "content": [{"type": "file", "file": file}]}]}),
    )
    .await
}

/// The text of every memory of `cube`.
async fn texts(s: &tests::Server, cube: &str) -> String {
    let (st, b) = s
        .post("/product/get_memory", json!({"mem_cube_id": cube}))
        .await;
    assert_eq!(st, 200, "{b}");
    b["data"]["text_mem"][0]["memories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["memory"].as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn office_and_data_files_by_base64_url_and_path() {
    let (files, _server) = file_server().await;
    let dir = tempfile::tempdir().unwrap();
    let docs = tempfile::tempdir().unwrap();
    std::fs::write(
        docs.path().join("notes.md"),
        "# Notes\n\nThe office plants are watered on Fridays.",
    )
    .unwrap();
    let mut cfg = tests::config(dir.path());
    cfg.documents.doc_root = docs.path().display().to_string();
    cfg.documents.allow_private_urls = true;
    let s = tests::Server::start(cfg).await;

    // DOCX as a data: URL: headings, paragraphs and the table's cells.
    let (st, b) = add_file(&s, "docx", json!({"filename": "policy.docx",
        "file_data": format!("data:application/vnd.openxmlformats-officedocument.wordprocessingml.document;base64,{}", b64(&fixture("policy.docx")))})).await;
    assert_eq!(st, 200, "{b}");
    let t = texts(&s, "docx").await;
    assert!(
        t.contains("economy class") && t.contains("180 euros per night & include breakfast"),
        "{t}"
    );
    assert!(t.contains("Lisbon | 150 euros per day"), "table cells: {t}");
    // XLSX as raw base64, no name: detected from the bytes; rows as header: value.
    let (st, b) = add_file(
        &s,
        "xlsx",
        json!({"file_data": b64(&fixture("budget.xlsx"))}),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let t = texts(&s, "xlsx").await;
    assert!(
        t.contains("Team: Platform, Quarter: Q1, Budget: 42000"),
        "{t}"
    );
    assert!(t.contains("Owner: Marta Silva"), "second sheet: {t}");
    // PPTX: each slide's text.
    let (st, b) = add_file(
        &s,
        "pptx",
        json!({"filename": "roadmap.pptx", "file_data": b64(&fixture("roadmap.pptx"))}),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    let t = texts(&s, "pptx").await;
    assert!(
        t.contains("Launch the mobile app in March.")
            && t.contains("Two backend engineers join in April."),
        "{t}"
    );
    // CSV and JSON.
    let (st, _) = add_file(
        &s,
        "csv",
        json!({"filename": "people.csv", "file_data": "name;city\nAna;Porto\nBen;Oslo\n"}),
    )
    .await;
    assert_eq!(st, 200);
    assert!(texts(&s, "csv").await.contains("name: Ben, city: Oslo"));
    let (st, _) = add_file(&s, "json", json!({"filename": "cfg.json", "file_data": "{\"server\": {\"region\": \"eu-west\", \"replicas\": [3, 5]}}"})).await;
    assert_eq!(st, 200);
    let t = texts(&s, "json").await;
    assert!(
        t.contains("server.region: eu-west") && t.contains("server.replicas[1]: 5"),
        "{t}"
    );

    // By URL: a file part, and MemOS's docs example (a message that is only the URL).
    let (st, b) = add_file(
        &s,
        "url",
        json!({"file_data": format!("{files}/files/roadmap.pptx")}),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert!(texts(&s, "url").await.contains("mobile app"));
    let (st, b) = s
        .post(
            "/product/add",
            json!({"user_id": "dora", "writable_cube_ids": ["docs-example"], "async_mode": "sync",
            "messages": [{"role": "user", "content": format!("{files}/files/policy.docx")}]}),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let t = texts(&s, "docs-example").await;
    assert!(
        t.contains("economy class") && !t.contains("http://"),
        "the document, not its URL: {t}"
    );
    let (st, b) = add_file(&s, "moved", json!({"file_data": format!("{files}/moved")})).await;
    assert_eq!(st, 200, "redirects are followed: {b}");
    // doc_path under the root.
    let (st, b) = s
        .post("/product/add", json!({"user_id": "dora", "writable_cube_ids": ["path"], "async_mode": "sync", "doc_path": "notes.md"}))
        .await;
    assert_eq!(st, 200, "{b}");
    assert!(texts(&s, "path").await.contains("watered on Fridays"));
    refusals(&s, &files).await;
    s.stop().await;
}

/// Refusals, each naming the file; nothing is stored for them.
async fn refusals(s: &tests::Server, files: &str) {
    let refused: Vec<(Value, &str)> = vec![
        (
            json!({"user_id": "dora", "writable_cube_ids": ["bad"], "async_mode": "sync", "doc_path": "../../etc/passwd"}),
            "doc_path",
        ),
        (
            json!({"user_id": "dora", "writable_cube_ids": ["bad"], "async_mode": "sync",
            "messages": [{"role": "user", "content": [{"type": "file", "file": {"file_data": format!("{files}/files/missing.pdf")}}]}]}),
            "missing.pdf",
        ),
        (
            json!({"user_id": "dora", "writable_cube_ids": ["bad"], "async_mode": "sync",
            "messages": [{"role": "user", "content": [{"type": "file", "file": {"file_data": "file:///etc/passwd"}}]}]}),
            "file:///etc/passwd",
        ),
        (
            json!({"user_id": "dora", "writable_cube_ids": ["bad"], "async_mode": "sync",
            "messages": [{"role": "user", "content": [{"type": "file", "file": {"filename": "broken.docx", "file_data": b64(b"PK\x03\x04 not really a zip")}}]}]}),
            "broken.docx",
        ),
    ];
    for (body, named) in refused {
        let (st, b) = s.post("/product/add", body.clone()).await;
        assert_eq!(st, 400, "{body}: {b}");
        assert!(
            b["message"].as_str().unwrap().contains(named),
            "{named}: {b}"
        );
    }
    let (st, b) = s
        .post("/product/get_memory", json!({"mem_cube_id": "bad"}))
        .await;
    assert_eq!(st, 200);
    assert!(
        b["data"]["text_mem"][0]["memories"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{b}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_urls_cannot_reach_private_addresses_by_default() {
    let (files, _server) = file_server().await;
    let dir = tempfile::tempdir().unwrap();
    let s = tests::Server::start(tests::config(dir.path())).await;
    for url in [
        format!("{files}/files/policy.docx"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://[::1]:9/x.pdf".to_string(),
    ] {
        let (st, b) = add_file(&s, "ssrf", json!({"file_data": url})).await;
        assert_eq!(st, 400, "{url}: {b}");
        let msg = b["message"].as_str().unwrap();
        assert!(
            msg.contains(&url) && msg.contains("private or local address"),
            "{msg}"
        );
    }
    // doc_path is off without a root.
    let (st, b) = s
        .post(
            "/product/add",
            json!({"user_id": "dora", "async_mode": "sync", "doc_path": "notes.md"}),
        )
        .await;
    assert_eq!(st, 400, "{b}");
    assert!(
        b["message"].as_str().unwrap().starts_with("doc_path"),
        "{b}"
    );
    s.stop().await;
}
