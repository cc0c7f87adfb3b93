//! Internet recall (MemOS's internet retriever, memos-spec §4.6): SearXNG results as
//! `OuterMemory` items of the text bucket.

use serde_json::json;

use crate::error::ServerError;
use crate::rerank::internet_search;

impl crate::service::Memos {
    /// MemOS internet recall: up to 2 × top_k web results (capped by
    /// `search.internet.max_results`) as `OuterMemory` items at the end of the first cube's
    /// text bucket, scored below the memories (0.5 down) unless a reranker rescores them.
    pub async fn add_web_results(
        &self,
        req: &crate::api::SearchRequest,
        hits: &mut crate::service::SearchHits,
    ) -> Result<(), ServerError> {
        let web = internet_search(&self.cfg.search.internet, &req.query, req.top_k * 2).await?;
        let Some(bucket) = hits
            .buckets
            .iter_mut()
            .find(|b| b.name == store::Bucket::Text.name())
        else {
            return Ok(());
        };
        let now = store::time::now_micros();
        let user = req.user_id.clone().unwrap_or_default();
        for (i, w) in web.into_iter().enumerate() {
            let record = store::MemoryRecord {
                id: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, w.url.as_bytes()).to_string(),
                memory: format!("{}: {}", w.title, w.content),
                cube_id: bucket.cube.clone(),
                user_id: user.clone(),
                session_id: String::new(),
                agent_id: None,
                app_id: None,
                memory_type: store::MemoryType::OuterMemory,
                status: store::Status::Activated,
                key: Some(w.title.clone()),
                tags: vec!["internet".into()],
                info: [
                    ("url".to_string(), json!(w.url)),
                    ("title".to_string(), json!(w.title)),
                ]
                .into_iter()
                .collect(),
                source: Some("web".into()),
                sources: vec![],
                confidence: 0.5,
                created_at: now,
                updated_at: now,
                event_time: None,
                version: 1,
                history: vec![],
                event_id: String::new(),
                file_ids: vec![],
                embedding: vec![],
            };
            bucket.hits.push(store::search::Hit {
                id: u32::MAX - i as u32,
                record,
                score: 0.5 / (1.0 + i as f32),
                vector_score: None,
                lexical_score: None,
            });
        }
        Ok(())
    }
}
