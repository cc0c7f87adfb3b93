//! Recall over several cubes and every bucket: the search every interface runs (REST, cloud
//! shapes, SQL `search()`, MCP, the bus). Per cube the candidates are computed once (filter,
//! scope, the wanted memory types), then each bucket of
//! [`Bucket::ALL`] is searched with its own top k; knowledge-base chunks found beside a user's
//! memories keep at most half of the text bucket (MemOS gives documents half the results).

use heed::RoTxn;

use crate::model::{Bucket, MemoryType, Status};
use crate::search::{
    AsOf, Dedup, EmbedFn, Fusion, Hit, Rewound, SearchRequest, search, search_as_of,
};
use crate::{Filter, Result, Scope, Store};

/// One bucket of one cube.
#[derive(Debug)]
pub struct BucketHits {
    /// `text_mem` | `pref_mem` | `tool_mem` | `skill_mem` ([`Bucket::name`]).
    pub name: &'static str,
    /// Cube.
    pub cube: String,
    /// Hits, best first.
    pub hits: Vec<Hit>,
}

/// A recall over several cubes.
pub struct Recall<'a> {
    /// Cubes, each with its filter (same order).
    pub cubes: &'a [(String, Filter)],
    /// Query text (BM25).
    pub query: &'a str,
    /// Query embedding.
    pub vector: &'a [f32],
    /// Results per bucket, in [`Bucket::ALL`] order; 0 leaves the bucket empty.
    pub top_k: [usize; 4],
    /// Only this memory type (`search_memory_type`).
    pub only_type: Option<MemoryType>,
    /// What the caller may see: candidates are narrowed to it before ranking, so the top k are
    /// the caller's own.
    pub scope: &'a Scope,
    /// Time travel: records rewound to a system or event time.
    pub at: AsOf,
    /// Session to prioritise.
    pub session_id: Option<&'a str>,
    /// Minimum score kept.
    pub relativity: f32,
    /// Dedup method.
    pub dedup: Dedup,
    /// Fusion method.
    pub fusion: Fusion,
    /// Boost for hits of `session_id`.
    pub session_boost: f32,
    /// Lexical candidates before fusion.
    pub pool: usize,
    /// Vector candidates before fusion.
    pub vector_pool: usize,
    /// Which retrievers run.
    pub retrievers: crate::search::Retrievers,
}

impl Recall<'_> {
    fn types_of(&self, b: Bucket) -> Vec<MemoryType> {
        b.types()
            .into_iter()
            .filter(|t| self.only_type.is_none_or(|o| o == *t))
            .collect()
    }
}

/// Runs `r`; every cube yields one [`BucketHits`] per bucket, in [`Bucket::ALL`] order.
/// `embed` embeds past texts when records are rewound (time travel).
pub fn recall(
    store: &Store,
    txn: &RoTxn,
    r: &Recall,
    embed: &mut EmbedFn<'_>,
) -> Result<Vec<BucketHits>> {
    let mut buckets = Vec::new();
    let wanted: Vec<MemoryType> = Bucket::ALL
        .into_iter()
        .zip(r.top_k)
        .filter(|(_, k)| *k > 0)
        .flat_map(|(b, _)| r.types_of(b))
        .collect();
    for (cube, filter) in r.cubes {
        // Candidates once per cube over every requested bucket; each bucket then takes its own
        // BM25 top k (MaxScore-pruned, so frequent query words cost little) and vector top k.
        let all = store.candidates(txn, cube, Some(&wanted), filter)?;
        let all = store.restrict(txn, cube, r.scope, all)?;
        let rewound = if r.at.is_set() {
            Some(Rewound::new(store, txn, cube, r.scope, r.at)?)
        } else {
            None
        };
        for (b, k) in Bucket::ALL.into_iter().zip(r.top_k) {
            let types = r.types_of(b);
            let mut hits = Vec::new();
            if k > 0 && !types.is_empty() {
                let mut s = SearchRequest::new(cube, r.query, Some(r.vector), k, filter);
                s.types = Some(&types);
                s.session_id = r.session_id;
                s.relativity = r.relativity;
                s.dedup = r.dedup;
                s.fusion = r.fusion;
                s.session_boost = r.session_boost;
                s.pool = r.pool;
                s.vector_pool = r.vector_pool;
                s.within = Some(&all);
                s.retrievers = r.retrievers;
                hits = match &rewound {
                    Some(rw) => search_as_of(store, txn, &s, rw, embed)?,
                    None => search(store, txn, &s)?,
                };
            }
            buckets.push(BucketHits {
                name: b.name(),
                cube: cube.clone(),
                hits,
            });
        }
    }
    cap_documents(&mut buckets, r.top_k[0]);
    Ok(buckets)
}

/// MemOS `neighbor_discovery`: each document chunk in a text bucket brings the chunks before
/// and after it (`info.preceding_id` / `following_id`) at 0.8 × its score, when they are
/// activated, in the same cube, visible to `scope` and not found already. Each text bucket
/// stays sorted by score.
pub fn add_neighbors(
    store: &Store,
    txn: &RoTxn,
    buckets: &mut [BucketHits],
    scope: &Scope,
) -> Result<()> {
    for b in buckets.iter_mut().filter(|b| b.name == Bucket::Text.name()) {
        let mut seen: std::collections::HashSet<u32> = b.hits.iter().map(|h| h.id).collect();
        let mut extra = Vec::new();
        for h in b
            .hits
            .iter()
            .filter(|h| h.record.memory_type == MemoryType::RawFileMemory)
        {
            for key in ["preceding_id", "following_id"] {
                let Some(uuid) = h.record.info.get(key).and_then(|v| v.as_str()) else {
                    continue;
                };
                let Some(id) = store.internal_id(txn, uuid)? else {
                    continue;
                };
                if !seen.insert(id) {
                    continue;
                }
                let one: roaring::RoaringBitmap = [id].into_iter().collect();
                if store.restrict(txn, &b.cube, scope, one)?.is_empty() {
                    continue;
                }
                let Some(r) = store.get(txn, uuid)? else {
                    continue;
                };
                if r.status != Status::Activated || r.cube_id != b.cube {
                    continue;
                }
                extra.push(Hit {
                    id,
                    record: r,
                    score: h.score * 0.8,
                    vector_score: None,
                    lexical_score: None,
                });
            }
        }
        b.hits.extend(extra);
        b.hits.sort_by(|x, y| y.score.total_cmp(&x.score));
    }
    Ok(())
}

/// Knowledge-base chunks searched alongside a user's memories take at most half of `top_k`
/// (best first) when the text buckets hold anything else.
fn cap_documents(buckets: &mut [BucketHits], top_k: usize) {
    let is_doc = |h: &Hit| h.record.memory_type == MemoryType::RawFileMemory;
    let text = |b: &BucketHits| b.name == Bucket::Text.name();
    if !buckets
        .iter()
        .filter(|b| text(b))
        .any(|b| b.hits.iter().any(|h| !is_doc(h)))
    {
        return;
    }
    let cap = (top_k / 2).max(1);
    let mut docs: Vec<(f32, usize, u32)> = buckets
        .iter()
        .enumerate()
        .filter(|(_, b)| text(b))
        .flat_map(|(i, b)| {
            b.hits
                .iter()
                .filter(|h| is_doc(h))
                .map(move |h| (h.score, i, h.id))
        })
        .collect();
    docs.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (_, i, id) in docs.into_iter().skip(cap) {
        buckets[i].hits.retain(|h| h.id != id);
    }
}
