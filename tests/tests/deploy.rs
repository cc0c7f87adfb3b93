//! deploy/: the Prometheus scrape config and alert rules pass promtool, every metric the
//! Grafana dashboard and the rules query is one the service exports, and a real Prometheus
//! server scrapes a running memos with the repository's scrape config.

use std::process::{Command, Stdio};
use std::time::Duration;

use pipelines::metrics::names;

fn deploy() -> std::path::PathBuf {
    tests::root().join("deploy")
}

/// `memos_*` identifiers in a PromQL expression, without histogram suffixes.
fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|t| t.starts_with("memos_"))
        .map(|t| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| t.strip_suffix(s))
                .unwrap_or(t)
                .to_string()
        })
        .collect()
}

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(deploy().join("prometheus"))
        .output()
        .expect("promtool (Debian package prometheus) is installed");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn prometheus_config_and_rules_pass_promtool() {
    let (ok, out) = promtool(&["check", "rules", "memos-alerts.yml"]);
    assert!(ok, "{out}");
    assert!(out.contains("5 rules found"), "{out}");
    let (ok, out) = promtool(&["check", "config", "prometheus.yml"]);
    assert!(ok, "{out}");
}

#[test]
fn dashboard_and_rules_query_exported_metrics() {
    let text =
        std::fs::read_to_string(deploy().join("grafana/memos-dashboard.json")).expect("dashboard");
    let d: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let panels = d["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8);
    let mut used = std::collections::BTreeSet::new();
    for p in panels {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            let found = metric_names(expr);
            assert!(!found.is_empty(), "panel {}: {expr}", p["title"]);
            for n in found {
                assert!(
                    names::ALL.contains(&n.as_str()),
                    "panel {} queries {n}, which memos does not export",
                    p["title"]
                );
                used.insert(n);
            }
        }
    }
    // The dashboard shows ingest, latency, errors and memory counts.
    for n in [
        names::EVENTS,
        names::BATCH_SECONDS,
        names::HTTP_SECONDS,
        names::MEMORIES,
    ] {
        assert!(used.contains(n), "dashboard lacks {n}");
    }
    let rules =
        std::fs::read_to_string(deploy().join("prometheus/memos-alerts.yml")).expect("rules");
    let mut in_rules = 0;
    for n in metric_names(&rules) {
        assert!(names::ALL.contains(&n.as_str()), "an alert queries {n}");
        in_rules += 1;
    }
    assert!(in_rules >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_memos() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = tests::Server::start(tests::config(&dir.path().join("data"))).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let metrics_addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_server = tokio::spawn(pipelines::http::serve_metrics(
        listener,
        server.memos.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    let (status, v) = server
        .post(
            "/product/add",
            serde_json::json!({"user_id": "pu", "async_mode": "sync",
                               "messages": [{"role": "user", "content": "Prometheus scrapes this fact"}]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");

    // The repository's scrape config, pointed at this process and scraping every second.
    let conf = std::fs::read_to_string(deploy().join("prometheus/prometheus.yml"))
        .expect("config")
        .replace("127.0.0.1:9464", &metrics_addr.to_string())
        .replace("scrape_interval: 15s", "scrape_interval: 1s");
    let pdir = dir.path().join("prometheus");
    std::fs::create_dir_all(&pdir).expect("dir");
    std::fs::write(pdir.join("prometheus.yml"), conf).expect("write");
    std::fs::copy(
        deploy().join("prometheus/memos-alerts.yml"),
        pdir.join("memos-alerts.yml"),
    )
    .expect("rules");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let bin = ["/usr/bin/prometheus", "/usr/sbin/prometheus"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("prometheus");
    let mut prom = Command::new(bin)
        .arg(format!(
            "--config.file={}",
            pdir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            pdir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian package prometheus) is installed");
    let url = format!(
        "http://127.0.0.1:{port}/api/v1/query?query=memos_events_total%7Boutcome%3D%22stored%22%7D"
    );
    let mut got = None;
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let Ok(r) = reqwest::get(&url).await else {
            continue;
        };
        let Ok(v) = r.json::<serde_json::Value>().await else {
            continue;
        };
        if let Some(first) = v["data"]["result"].as_array().and_then(|a| a.first()) {
            got = Some(first.clone());
            break;
        }
    }
    let _ = prom.kill();
    let _ = prom.wait();
    let sample = got.expect("Prometheus scraped memos_events_total within 60 s");
    assert_eq!(sample["metric"]["job"], "memos");
    assert_eq!(sample["metric"]["source"], "http");
    assert_eq!(sample["value"][1], "1");
    let _ = stop.send(());
    let _ = metrics_server.await;
    server.stop().await;
}
