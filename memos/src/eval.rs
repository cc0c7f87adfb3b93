//! `memos eval locomo PATH`: ingests every LoCoMo conversation (one cube each, one event per
//! turn with its session date, speakers as roles), asks every question through the real search
//! path, and reports R@k, All@k and MRR per category as in `shared/data/baselines.md`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use pipelines::runtime::{Incoming, Outcome, Payload};
use server::ServerError;
use server::api::SearchRequest;
use server::service::Memos;

/// One question with normalised evidence.
#[derive(Debug, Clone)]
pub struct Question {
    /// Conversation (cube) id.
    pub cube: String,
    /// Question text.
    pub question: String,
    /// Category 1-5.
    pub category: u8,
    /// Evidence dia_ids.
    pub evidence: Vec<String>,
}

/// A parsed LoCoMo file: events to ingest and questions to ask.
pub struct Locomo {
    /// Events (JSON) per conversation, in order.
    pub events: Vec<Value>,
    /// Questions with evidence.
    pub questions: Vec<Question>,
    /// Questions skipped for lack of valid evidence.
    pub skipped: usize,
}

fn normalise_evidence(raw: &str) -> Vec<String> {
    raw.split([';', ',', ' '])
        .filter(|s| !s.is_empty())
        .filter_map(|s| {
            let s = s.trim().replacen("D:", "D", 1);
            let (d, t) = s.split_once(':')?;
            let t: u32 = t.trim().parse().ok()?;
            Some(format!("{d}:{t}"))
        })
        .collect()
}

/// Parses `locomo10.json`.
pub fn load(path: &std::path::Path) -> Result<Locomo, ServerError> {
    let text = std::fs::read_to_string(path)?;
    let data: Value = serde_json::from_str(&text)
        .map_err(|e| ServerError::BadRequest(format!("{}: {e}", path.display())))?;
    let samples = data
        .as_array()
        .ok_or_else(|| ServerError::BadRequest("LoCoMo file must be a JSON list".into()))?;
    let mut events = Vec::new();
    let mut questions = Vec::new();
    let mut skipped = 0;
    for s in samples {
        let cube = s["sample_id"].as_str().unwrap_or("conv").to_string();
        let conv = &s["conversation"];
        let a = conv["speaker_a"].as_str().unwrap_or("A").to_string();
        let mut n = 1;
        let mut dia_ids = HashSet::new();
        while let Some(turns) = conv.get(format!("session_{n}")).and_then(Value::as_array) {
            let date = conv[format!("session_{n}_date_time")]
                .as_str()
                .unwrap_or("")
                .to_string();
            for t in turns {
                let speaker = t["speaker"].as_str().unwrap_or("?");
                let dia = t["dia_id"].as_str().unwrap_or("").to_string();
                let mut text = t["text"].as_str().unwrap_or("").to_string();
                if let Some(c) = t.get("blip_caption").and_then(Value::as_str) {
                    text.push_str(&format!(" [shares an image: {c}]"));
                }
                dia_ids.insert(dia.clone());
                let role = if speaker == a { "user" } else { "assistant" };
                events.push(json!({
                    "event_id": format!("{cube}/{dia}"),
                    "kind": "messages",
                    "cube_id": cube,
                    "user_id": cube,
                    "session_id": format!("session_{n}"),
                    "mode": "fast",
                    "info": {"dia_id": dia},
                    "payload": {"messages": [{"role": role, "name": speaker, "content": text, "chat_time": date}]},
                }));
            }
            n += 1;
        }
        for q in s["qa"].as_array().into_iter().flatten() {
            let category = q["category"].as_u64().unwrap_or(0) as u8;
            let mut ev: Vec<String> = q["evidence"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .flat_map(normalise_evidence)
                .filter(|d| dia_ids.contains(d))
                .collect();
            ev.sort();
            ev.dedup();
            if ev.is_empty() {
                skipped += 1;
                continue;
            }
            questions.push(Question {
                cube: cube.clone(),
                question: q["question"].as_str().unwrap_or("").to_string(),
                category,
                evidence: ev,
            });
        }
    }
    Ok(Locomo {
        events,
        questions,
        skipped,
    })
}

/// Metrics for a group of questions.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    /// Questions.
    pub n: usize,
    /// Sum of R@{1,5,10,20,50}.
    pub recall: [f64; 5],
    /// Sum of All@{5,10}.
    pub all: [f64; 2],
    /// Sum of reciprocal ranks.
    pub mrr: f64,
}

const KS: [usize; 5] = [1, 5, 10, 20, 50];

impl Metrics {
    fn add(&mut self, ranked: &[String], evidence: &[String]) {
        self.n += 1;
        let ev: HashSet<&String> = evidence.iter().collect();
        for (i, k) in KS.iter().enumerate() {
            let hit = ranked.iter().take(*k).filter(|d| ev.contains(d)).count();
            self.recall[i] += hit as f64 / ev.len() as f64;
            if *k == 5 || *k == 10 {
                let j = if *k == 5 { 0 } else { 1 };
                if hit == ev.len() {
                    self.all[j] += 1.0;
                }
            }
        }
        if let Some(p) = ranked.iter().position(|d| ev.contains(d)) {
            self.mrr += 1.0 / (p + 1) as f64;
        }
    }

    fn row(&self, label: &str) -> String {
        let n = self.n.max(1) as f64;
        format!(
            "| {label} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            self.n,
            self.recall[0] / n,
            self.recall[1] / n,
            self.recall[2] / n,
            self.recall[3] / n,
            self.recall[4] / n,
            self.all[0] / n,
            self.all[1] / n,
            self.mrr / n
        )
    }

    /// Mean R@k for k in {1,5,10,20,50}.
    pub fn recall_at(&self, k: usize) -> f64 {
        let i = KS.iter().position(|x| *x == k).unwrap_or(0);
        self.recall[i] / self.n.max(1) as f64
    }
}

/// Result of a run.
pub struct Report {
    /// Markdown report.
    pub markdown: String,
    /// Categories 1-4.
    pub cat14: Metrics,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Ingests and evaluates. `m` should be a fresh service over an empty data directory.
pub async fn run(
    m: Arc<Memos>,
    data: Locomo,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Report, ServerError> {
    let total = data.events.len();
    let t0 = Instant::now();
    let mut rxs = Vec::with_capacity(total);
    for (i, ev) in data.events.iter().enumerate() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        m.pipeline
            .submit(Incoming {
                payload: Payload::Bytes(serde_json::to_vec(ev).unwrap_or_default()),
                source: "eval".into(),
                position: None,
                reply: Some(tx),
            })
            .await?;
        rxs.push(rx);
        if i % 256 == 0 {
            progress(i, total);
        }
    }
    let mut stored = 0;
    for rx in rxs {
        match rx.await {
            Ok(Outcome::Stored { .. } | Outcome::Duplicate { .. }) => stored += 1,
            Ok(o) => return Err(ServerError::Unavailable(format!("ingest failed: {o:?}"))),
            Err(_) => return Err(ServerError::Unavailable("pipeline stopped".into())),
        }
    }
    progress(total, total);
    let s = m.store.clone();
    tokio::task::spawn_blocking(move || s.index_pending())
        .await
        .map_err(|e| ServerError::Unavailable(e.to_string()))??;
    let ingest_s = t0.elapsed().as_secs_f64();

    let mut by_cat: HashMap<u8, Metrics> = HashMap::new();
    let mut cat14 = Metrics::default();
    let mut cat15 = Metrics::default();
    let mut lat = Vec::with_capacity(data.questions.len());
    for q in &data.questions {
        let req = SearchRequest {
            query: q.question.clone(),
            user_id: Some(q.cube.clone()),
            readable_cube_ids: Some(vec![q.cube.clone()]),
            top_k: 80,
            relativity: Some(0.0),
            dedup: Some("no".into()),
            include_preference: false,
            search_tool_memory: false,
            include_skill_memory: false,
            ..Default::default()
        };
        let t = Instant::now();
        let data = m.search(&req, &server::auth::Principal::local()).await?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        let mut ranked: Vec<String> = Vec::new();
        for b in data["text_mem"].as_array().into_iter().flatten() {
            for item in b["memories"].as_array().into_iter().flatten() {
                if let Some(d) = item["metadata"]["info"]["dia_id"].as_str()
                    && !ranked.iter().any(|x| x == d)
                {
                    ranked.push(d.to_string());
                }
            }
        }
        by_cat
            .entry(q.category)
            .or_default()
            .add(&ranked, &q.evidence);
        if (1..=4).contains(&q.category) {
            cat14.add(&ranked, &q.evidence);
        }
        cat15.add(&ranked, &q.evidence);
    }
    lat.sort_by(f64::total_cmp);
    let names = [
        (1, "multi-hop"),
        (2, "temporal"),
        (3, "open-domain"),
        (4, "single-hop"),
        (5, "adversarial"),
    ];
    let mut md = String::new();
    md.push_str("| questions | n | R@1 | R@5 | R@10 | R@20 | R@50 | All@5 | All@10 | MRR |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    md.push_str(&cat14.row("**cat 1-4**"));
    md.push('\n');
    md.push_str(&cat15.row("cat 1-5"));
    md.push('\n');
    for (c, name) in names {
        if let Some(mm) = by_cat.get(&c) {
            md.push_str(&mm.row(&format!("{c} {name}")));
            md.push('\n');
        }
    }
    md.push_str(&format!(
        "\nIngest: {stored} turns in {ingest_s:.1} s ({:.0} turns/s, embedding included). Search: {} questions, p50 {:.1} ms, p99 {:.1} ms (query embedding included). {} questions skipped for lack of valid evidence.\n",
        stored as f64 / ingest_s,
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        data.skipped
    ));
    Ok(Report {
        markdown: md,
        cat14,
    })
}

/// Replaces the text between `<!-- {tag}:begin -->` and `<!-- {tag}:end -->` in `file`
/// (appending the section when absent).
pub fn write_section(file: &std::path::Path, tag: &str, body: &str) -> std::io::Result<()> {
    let begin = format!("<!-- {tag}:begin -->");
    let end = format!("<!-- {tag}:end -->");
    let old = std::fs::read_to_string(file).unwrap_or_else(|_| "# Benchmarks\n".into());
    let section = format!("{begin}\n{body}\n{end}");
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if e > b => format!("{}{}{}", &old[..b], section, &old[e + end.len()..]),
        _ => format!("{}\n{}\n", old.trim_end(), section),
    };
    std::fs::write(file, new)
}

#[cfg(test)]
mod tests {
    use super::normalise_evidence;

    #[test]
    fn evidence_quirks() {
        assert_eq!(normalise_evidence("D8:6; D9:17"), ["D8:6", "D9:17"]);
        assert_eq!(normalise_evidence("D:11:26"), ["D11:26"]);
        assert_eq!(normalise_evidence("D30:05"), ["D30:5"]);
        assert!(normalise_evidence("D").is_empty());
        assert_eq!(normalise_evidence("D1:2 D1:3"), ["D1:2", "D1:3"]);
    }
}
