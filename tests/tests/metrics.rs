//! Prometheus metrics: after real traffic the counters equal what was sent, histograms have
//! observations, store gauges follow the store, and `promtool check metrics` accepts the output.

use std::collections::BTreeMap;

use serde_json::json;
use tests::Server;

/// `name{labels} value` lines → (name, labels) → value.
fn parse(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let mut m = BTreeMap::new();
                for pair in rest
                    .trim_end_matches('}')
                    .split(',')
                    .filter(|p| !p.is_empty())
                {
                    let (k, v) = pair.split_once('=').expect("label");
                    m.insert(k.to_string(), v.trim_matches('"').to_string());
                }
                (n.to_string(), m)
            }
            None => (series.to_string(), BTreeMap::new()),
        };
        out.push((name, labels, value.parse().expect("number")));
    }
    out
}

fn value(
    samples: &[(String, BTreeMap<String, String>, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.2)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_traffic_and_pass_promtool() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut server = Server::start(tests::config(dir.path())).await;
    let url = format!("http://{}/metrics", server.start_metrics().await);

    for i in 0..3 {
        let (status, v) = server
            .post(
                "/product/add",
                json!({"user_id": "mu", "writable_cube_ids": ["mcube"], "async_mode": "sync",
                       "messages": [{"role": "user", "content": format!("Metrics fact number {i}: the sky was {i} shades of blue")}]}),
            )
            .await;
        assert_eq!(status, 200, "{v}");
    }
    let (status, _) = server
        .post("/product/add", json!({"user_id": "mu", "messages": 5}))
        .await;
    assert_eq!(status, 400);
    let (status, v) = server
        .post(
            "/product/search",
            json!({"user_id": "mu", "readable_cube_ids": ["mcube"], "query": "shades of blue", "top_k": 2}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let returned = server::service::result_count(&v["data"]);
    assert!(returned >= 1, "{v}");
    let (status, v) = server
        .post("/sql", json!({"sql": "SELECT count(*) AS n FROM memories"}))
        .await;
    assert_eq!(status, 200, "{v}");
    let (status, _) = server
        .post("/sql", json!({"sql": "DROP TABLE memories"}))
        .await;
    assert_eq!(status, 403);

    scrape_reflects_the_traffic(server, url, returned).await;
}

async fn scrape_reflects_the_traffic(server: Server, url: String, returned: usize) {
    let resp = reqwest::get(&url).await.expect("scrape");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/plain")
    );
    let text = resp.text().await.expect("body");
    let s = parse(&text);
    let names = pipelines::metrics::names::EVENTS;
    assert_eq!(
        value(&s, names, &[("source", "http"), ("outcome", "stored")]),
        3.0,
        "{text}"
    );
    assert_eq!(
        value(
            &s,
            pipelines::metrics::names::HTTP_REQUESTS,
            &[
                ("route", "/product/add"),
                ("method", "POST"),
                ("status", "200")
            ]
        ),
        3.0
    );
    assert_eq!(
        value(
            &s,
            pipelines::metrics::names::HTTP_REQUESTS,
            &[("route", "/product/add"), ("status", "400")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            pipelines::metrics::names::SQL_QUERIES,
            &[("interface", "http"), ("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            pipelines::metrics::names::SQL_QUERIES,
            &[("interface", "http"), ("outcome", "error")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            pipelines::metrics::names::OPERATOR_ITEMS,
            &[("operator", "window"), ("direction", "in")]
        ),
        3.0,
        "every stored event went through the window operator"
    );
    for op in ["window", "extract", "embed", "dedupe"] {
        assert!(
            value(
                &s,
                &format!("{}_count", pipelines::metrics::names::OPERATOR_SECONDS),
                &[("operator", op)]
            ) >= 1.0,
            "{op}"
        );
    }
    assert!(
        value(
            &s,
            &format!("{}_count", pipelines::metrics::names::COMMIT_SECONDS),
            &[]
        ) >= 1.0
    );
    assert!(
        value(
            &s,
            &format!("{}_sum", pipelines::metrics::names::EMBED_BATCH),
            &[]
        ) >= 3.0
    );
    assert_eq!(
        value(
            &s,
            pipelines::metrics::names::SEARCHES,
            &[("interface", "rest"), ("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            &format!("{}_sum", pipelines::metrics::names::SEARCH_RESULTS),
            &[("interface", "rest")]
        ),
        returned as f64
    );
    store_pipeline_and_label_metrics(server, text).await;
}

async fn store_pipeline_and_label_metrics(server: Server, text: String) {
    let s = parse(&text);
    let batches = value(
        &s,
        &format!("{}_count", pipelines::metrics::names::BATCH_SECONDS),
        &[],
    );
    assert!(batches >= 1.0, "{text}");
    assert!(
        value(
            &s,
            &format!("{}_count", pipelines::metrics::names::HTTP_SECONDS),
            &[("route", "/sql")]
        ) == 2.0
    );
    let activated = value(
        &s,
        pipelines::metrics::names::MEMORIES,
        &[("status", "activated")],
    );
    let stored: u64 = {
        let txn = server.memos.store.read_txn().expect("txn");
        server
            .memos
            .store
            .cube_ids(&txn, "mcube")
            .expect("ids")
            .len()
    };
    assert_eq!(activated, stored as f64, "{text}");
    assert!(activated >= 3.0);
    assert!(value(&s, pipelines::metrics::names::STORE_BYTES, &[]) > 0.0);
    // No caller-chosen value becomes a label.
    assert!(
        !text.contains("mcube") && !text.contains("\"mu\""),
        "{text}"
    );

    // promtool (Debian package `prometheus`, installed by .ci/run) accepts the exposition.
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is installed");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    server.stop().await;
}

/// `/ready` is 503 while a configured source cannot connect, and says which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_waits_for_sources() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = tests::config(dir.path());
    tests::nats_config(&mut cfg);
    // Nothing listens on port 1.
    cfg.nats.url = "nats://127.0.0.1:1".into();
    let server = Server::start(cfg).await;
    let (status, v) = server.get("/ready").await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["sources"]["nats"], false);
    let (status, _) = server.get("/health").await;
    assert_eq!(status, 200, "alive, just not ready");
    server.stop().await;

    // Without broker sources the service is ready as soon as it runs.
    let dir = tempfile::tempdir().expect("tmp");
    let server = Server::start(tests::config(dir.path())).await;
    let (status, v) = server.get("/ready").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "ready");
    server.stop().await;
}
