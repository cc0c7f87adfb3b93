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
    assert!(out.contains("8 rules found"), "{out}");
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
        names::SEARCH_SECONDS,
        names::MEMORIES,
        names::OPERATOR_SECONDS,
        names::CONSUMER_LAG,
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
    let mut server = tests::Server::start(tests::config(&dir.path().join("data"))).await;
    let metrics_addr = server.start_metrics().await;
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
    server.stop().await;
}

fn yaml(path: &str) -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(deploy().join(path)).expect("deploy file");
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

/// The compose file starts memos with NATS, a Kafka-protocol broker, Prometheus and Grafana,
/// and every file it mounts exists.
#[test]
fn compose_file_wires_the_stack() {
    let c = &yaml("compose.yaml")[0];
    let services = c["services"].as_mapping().expect("services");
    for s in ["memos", "nats", "tansu", "prometheus", "grafana"] {
        assert!(services.contains_key(s), "compose lacks {s}");
    }
    let memos = &c["services"]["memos"];
    let ports: Vec<&str> = memos["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    for p in ["8000:8000", "5433:5433", "9464:9464"] {
        assert!(ports.contains(&p), "memos port {p}");
    }
    assert_eq!(memos["environment"]["MEMOS_NATS_URL"], "nats://nats:4222");
    assert_eq!(memos["environment"]["MEMOS_KAFKA_BROKERS"], "tansu:9092");
    assert!(
        deploy()
            .join(
                memos["build"]["dockerfile"]
                    .as_str()
                    .expect("dockerfile")
                    .trim_start_matches("deploy/")
            )
            .exists()
    );
    for s in ["prometheus", "grafana"] {
        for v in c["services"][s]["volumes"].as_sequence().expect("volumes") {
            let host = v
                .as_str()
                .expect("volume")
                .split(':')
                .next()
                .expect("host path");
            assert!(deploy().join(host).exists(), "{s} mounts missing {host}");
        }
    }
    // The compose scrape config targets the memos service.
    let prom = std::fs::read_to_string(deploy().join("prometheus/compose-prometheus.yml"))
        .expect("compose scrape config");
    assert!(prom.contains("memos:9464"));
}

/// The Kubernetes manifests: a StatefulSet with a volume per pod for LMDB, probes on routes the
/// server answers, Services for the three ports, and a config the service accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_manifests_are_consistent() {
    let docs = yaml("kubernetes/memos.yaml");
    let kind = |k: &str| {
        docs.iter()
            .filter(move |d| d["kind"] == k)
            .collect::<Vec<_>>()
    };
    let sts = kind("StatefulSet");
    assert_eq!(sts.len(), 1);
    let spec = &sts[0]["spec"];
    assert_eq!(
        spec["volumeClaimTemplates"][0]["metadata"]["name"],
        spec["template"]["spec"]["containers"][0]["volumeMounts"][0]["name"]
    );
    let container = &spec["template"]["spec"]["containers"][0];
    let probe = container["readinessProbe"]["httpGet"]["path"]
        .as_str()
        .expect("probe");
    assert_eq!(kind("Service").len(), 2);

    // The ConfigMap's memos.toml loads (unknown keys would be an error).
    let cm = &kind("ConfigMap")[0];
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("memos.toml");
    std::fs::write(&file, cm["data"]["memos.toml"].as_str().expect("toml")).expect("write");
    let env = vec![(
        "MEMOS_KAFKA__CLIENT_OPTIONS".to_string(),
        container["env"][1]["value"]
            .as_str()
            .expect("client options")
            .replace("$(POD_NAME)", "memos-0"),
    )];
    let cfg = server::Config::load(Some(&file), env).expect("the ConfigMap config loads");
    assert_eq!(cfg.metrics_addr, "0.0.0.0:9464");
    assert_eq!(cfg.sql.pg_addr, "0.0.0.0:5433");
    assert_eq!(
        cfg.kafka
            .client_options
            .get("group.instance.id")
            .map(String::as_str),
        Some("memos-0")
    );

    // The probe path is served.
    let server = tests::Server::start(tests::config(&dir.path().join("data"))).await;
    let (status, _) = server.get(probe).await;
    assert_eq!(status, 200, "probe {probe}");
    server.stop().await;
}
