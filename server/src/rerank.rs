//! Rerankers and internet search (memos-spec §4.5, §4.6).
//!
//! A reranker scores documents against a query. [`HttpReranker`] speaks the common rerank APIs:
//! Cohere, Jina and vLLM (`POST {model, query, documents, top_n}` → `{"results": [{index,
//! relevance_score}]}`) and Hugging Face TEI (`POST {query, texts}` → `[{index, score}]`); the
//! local fallback scores by cosine of the embedder's vectors (MemOS `cosine_local`). Search
//! reranks each text bucket with the configured one when `rerank` is true (the default); the
//! cloud `rerank` route uses the configured one, else the cosine fallback.
//!
//! Internet search asks a SearXNG instance (`GET {url}/search?q=…&format=json`) and turns its
//! results into `OuterMemory` items of the text bucket, as MemOS's internet retriever does.

use std::time::Duration;

use serde_json::{Value, json};

use crate::config::{InternetConfig, RerankConfig};

use crate::error::ServerError;

/// An HTTP rerank endpoint.
pub struct HttpReranker {
    cfg: RerankConfig,
    http: reqwest::Client,
}

impl HttpReranker {
    /// The configured reranker, or None when `url` is empty.
    pub fn new(cfg: &RerankConfig) -> Result<Option<HttpReranker>, ServerError> {
        if cfg.url.is_empty() {
            return Ok(None);
        }
        if !matches!(cfg.api.as_str(), "cohere" | "tei") {
            return Err(ServerError::Config(format!(
                "search.rerank.api \"{}\" is not cohere or tei",
                cfg.api
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms.max(1)))
            .build()
            .map_err(|e| ServerError::Config(format!("search.rerank: {e}")))?;
        Ok(Some(HttpReranker {
            cfg: cfg.clone(),
            http,
        }))
    }

    /// One score per document, in the documents' order.
    pub async fn scores(&self, query: &str, documents: &[String]) -> Result<Vec<f32>, ServerError> {
        if documents.is_empty() {
            return Ok(vec![]);
        }
        let body = match self.cfg.api.as_str() {
            "tei" => json!({"query": query, "texts": documents}),
            _ => json!({"model": self.cfg.model, "query": query, "documents": documents,
                "top_n": documents.len()}),
        };
        let mut req = self.http.post(&self.cfg.url).json(&body);
        if !self.cfg.api_key.is_empty() {
            req = req.bearer_auth(&self.cfg.api_key);
        }
        let failed =
            |why: String| ServerError::Unavailable(format!("reranker {}: {why}", self.cfg.url));
        let resp = req.send().await.map_err(|e| failed(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(failed(format!("answered {}", resp.status())));
        }
        let v: Value = resp.json().await.map_err(|e| failed(e.to_string()))?;
        parse_scores(&v, documents.len()).map_err(failed)
    }
}

/// Reads `{"results": [{index, relevance_score}]}` or `[{index, score}]`; documents the
/// answer leaves out score 0.
pub fn parse_scores(v: &Value, n: usize) -> Result<Vec<f32>, String> {
    let list = v
        .get("results")
        .or_else(|| v.get("data"))
        .unwrap_or(v)
        .as_array()
        .ok_or_else(|| format!("no results list in {v}"))?;
    let mut scores = vec![0.0f32; n];
    for r in list {
        let i = r
            .get("index")
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("a result without index: {r}"))? as usize;
        let s = r
            .get("relevance_score")
            .or_else(|| r.get("score"))
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("a result without a score: {r}"))?;
        let slot = scores
            .get_mut(i)
            .ok_or_else(|| format!("index {i} is out of range ({n} documents)"))?;
        *slot = s as f32;
    }
    Ok(scores)
}

/// Cosine scores of unit vectors (the local fallback: MemOS `cosine_local`).
pub fn cosine_scores(query: &[f32], docs: &[Vec<f32>]) -> Vec<f32> {
    docs.iter()
        .map(|d| d.iter().zip(query).map(|(a, b)| a * b).sum())
        .collect()
}

/// One web result.
#[derive(Debug, Clone, PartialEq)]
pub struct WebResult {
    /// Title.
    pub title: String,
    /// Address.
    pub url: String,
    /// Snippet.
    pub content: String,
}

/// Asks SearXNG for `query`; at most `limit` results.
pub async fn internet_search(
    cfg: &InternetConfig,
    query: &str,
    limit: usize,
) -> Result<Vec<WebResult>, ServerError> {
    let failed =
        |why: String| ServerError::Unavailable(format!("internet search {}: {why}", cfg.url));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(cfg.timeout_ms.max(1)))
        .build()
        .map_err(|e| failed(e.to_string()))?;
    let url = format!("{}/search", cfg.url.trim_end_matches('/'));
    let resp = http
        .get(&url)
        .query(&[("q", query), ("format", "json")])
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(failed(format!("answered {}", resp.status())));
    }
    let v: Value = resp.json().await.map_err(|e| failed(e.to_string()))?;
    let list = v
        .get("results")
        .and_then(Value::as_array)
        .ok_or_else(|| failed("no results list (is the json format enabled?)".into()))?;
    Ok(list
        .iter()
        .filter_map(|r| {
            let url = r.get("url")?.as_str()?.to_string();
            Some(WebResult {
                title: r
                    .get("title")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                content: r
                    .get("content")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                url,
            })
        })
        .take(limit.min(cfg.max_results.max(1)))
        .collect())
}

/// Reranks every non-empty bucket with `r`: each hit's score becomes the reranker's, hits
/// below `min` are dropped, each bucket is sorted by the new scores.
pub async fn rerank_buckets(
    r: &HttpReranker,
    query: &str,
    buckets: &mut [store::recall::BucketHits],
    min: f32,
) -> Result<(), ServerError> {
    for b in buckets.iter_mut().filter(|b| !b.hits.is_empty()) {
        let docs: Vec<String> = b.hits.iter().map(|h| h.record.memory.clone()).collect();
        let scores = r.scores(query, &docs).await?;
        for (h, s) in b.hits.iter_mut().zip(scores) {
            h.score = s;
        }
        b.hits.retain(|h| h.score >= min);
        b.hits.sort_by(|x, y| y.score.total_cmp(&x.score));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_rerank_answer_shapes_parse() {
        let cohere = json!({"results": [{"index": 1, "relevance_score": 0.9}, {"index": 0, "relevance_score": 0.2}]});
        assert_eq!(parse_scores(&cohere, 3).unwrap(), vec![0.2, 0.9, 0.0]);
        let tei = json!([{"index": 0, "score": 0.5}]);
        assert_eq!(parse_scores(&tei, 1).unwrap(), vec![0.5]);
        assert!(parse_scores(&json!([{"index": 4, "score": 1.0}]), 2).is_err());
        assert!(parse_scores(&json!({"oops": 1}), 2).is_err());
    }
}
