//! The OpenAI-compatible embedder against a real HTTP server (serving the local model's
//! vectors), and its error handling.

use std::sync::Arc;

use axum::Json;
use axum::routing::post;
use operators::embed::{Embedder, OpenAiEmbedder};
use serde_json::{Value, json};

async fn serve(router: axum::Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, router).await.unwrap() });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_compatible_endpoint() {
    let local = tests::embedder();
    let l2 = local.clone();
    let router = axum::Router::new().route(
        "/v1/embeddings",
        post(
            move |headers: axum::http::HeaderMap, Json(body): Json<Value>| {
                let l = l2.clone();
                async move {
                    assert_eq!(headers.get("authorization").unwrap(), "Bearer secret");
                    assert_eq!(body["model"], "all-minilm");
                    let input: Vec<String> = serde_json::from_value(body["input"].clone()).unwrap();
                    let vecs = tokio::task::spawn_blocking(move || l.embed(&input).unwrap())
                        .await
                        .unwrap();
                    // Returned out of order, as some servers do; `index` says where each belongs.
                    let data: Vec<Value> = vecs
                        .iter()
                        .enumerate()
                        .rev()
                        .map(|(i, v)| json!({"index": i, "embedding": v}))
                        .collect();
                    Json(json!({"data": data, "model": "all-minilm"}))
                }
            },
        ),
    );
    let url = serve(router).await;
    let remote = Arc::new(
        OpenAiEmbedder::new(
            &url,
            "all-minilm",
            Some("secret".into()),
            384,
            std::time::Duration::from_secs(30),
        )
        .unwrap(),
    );
    let texts: Vec<String> = vec![
        "hello world".into(),
        "memory for agents".into(),
        "a third sentence".into(),
    ];
    let t2 = texts.clone();
    let r = remote.clone();
    let got = tokio::task::spawn_blocking(move || r.embed(&t2).unwrap())
        .await
        .unwrap();
    let want = local.embed(&texts).unwrap();
    assert_eq!(got.len(), 3);
    for (g, w) in got.iter().zip(&want) {
        for (a, b) in g.iter().zip(w) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    // Wrong dimensions and HTTP errors are clear errors.
    let bad = axum::Router::new()
        .route(
            "/v1/embeddings",
            post(|| async { Json(json!({"data": [{"index": 0, "embedding": [1.0, 2.0]}]})) }),
        )
        .route(
            "/v2/embeddings",
            post(|| async { (axum::http::StatusCode::BAD_REQUEST, "model not found") }),
        );
    let url = serve(bad).await;
    let e = OpenAiEmbedder::new(&url, "m", None, 384, std::time::Duration::from_secs(5)).unwrap();
    let err = tokio::task::spawn_blocking(move || e.embed(&["x".to_string()]).unwrap_err())
        .await
        .unwrap();
    assert!(err.to_string().contains("2 dimensions"), "{err}");
    let e = OpenAiEmbedder::new(
        &url.replace("/v1", "/v2"),
        "m",
        None,
        384,
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    let err = tokio::task::spawn_blocking(move || e.embed(&["x".to_string()]).unwrap_err())
        .await
        .unwrap();
    assert!(err.to_string().contains("model not found"), "{err}");
    assert!(!err.retryable());
}
