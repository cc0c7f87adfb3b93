//! Hybrid search: ANN over the cube's candidates + BM25, fused, then relativity threshold,
//! session soft priority and MMR/similarity dedup (memos-spec §4.1, §4.3).
//!
//! ## Scores
//! Every hit carries `score` ∈ [0, 1], the fused relevance:
//! - `Fusion::Convex { alpha }` (default): `alpha · max(cos, 0) + (1 − alpha) · bm25 / bm25_max`,
//!   where `bm25_max` is the best BM25 score of the query in the cube's candidates. A result that is
//!   both the lexical best match and a perfect semantic match scores 1.
//! - `Fusion::Rrf { k }`: reciprocal rank fusion `Σ 1/(k + rank)`, divided by its maximum
//!   (rank 1 in every retriever), so again 1 is the best possible.
//!
//! Hits in the request's session are boosted by `session_boost` (multiplicative, capped at 1).

use std::collections::HashMap;

use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::filter::Filter;
use crate::model::{MemoryRecord, MemoryType, Status};
use crate::vector::dot;
use crate::{Store, lexical};
use heed::RoTxn;

/// How vector and lexical results are combined.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Fusion {
    /// Reciprocal rank fusion with constant `k`.
    Rrf {
        /// RRF constant (60 in the literature).
        k: f32,
    },
    /// Convex combination of the cosine and the max-normalised BM25 score.
    Convex {
        /// Weight of the vector score.
        alpha: f32,
    },
}

impl Default for Fusion {
    fn default() -> Self {
        Fusion::Convex { alpha: 0.65 }
    }
}

/// Result dedup (MemOS `dedup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Dedup {
    /// Keep everything.
    No,
    /// Drop a hit whose cosine to a better one is above 0.92.
    Sim,
    /// Maximal marginal relevance (0.8 relevance − 0.2 redundancy).
    #[default]
    Mmr,
}

/// Which retrievers a search runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Retrievers {
    /// BM25 and vectors, fused (every candidate scored by exact cosine too).
    #[default]
    Hybrid,
    /// BM25 only (MemOS `search_type: fulltext`): scores are normalised BM25.
    Lexical,
    /// Vectors only (MemOS `search_type: embedding`): scores are cosines.
    Vector,
}

/// One search over one cube.
#[derive(Debug, Clone)]
pub struct SearchRequest<'a> {
    /// Cube to search.
    pub cube_id: &'a str,
    /// Query text (for BM25).
    pub query: &'a str,
    /// Query embedding (for ANN); None = lexical only.
    pub query_vec: Option<&'a [f32]>,
    /// Results wanted.
    pub top_k: usize,
    /// Filter.
    pub filter: &'a Filter,
    /// Restrict to these memory types.
    pub types: Option<&'a [MemoryType]>,
    /// Session to prioritise.
    pub session_id: Option<&'a str>,
    /// Minimum score kept (0 disables).
    pub relativity: f32,
    /// Dedup method.
    pub dedup: Dedup,
    /// Fusion method.
    pub fusion: Fusion,
    /// Multiplicative boost for hits of `session_id`.
    pub session_boost: f32,
    /// Candidates fetched from the lexical retriever before fusion (at least `3 · top_k`).
    pub pool: usize,
    /// Candidates fetched from the vector retriever (at least `3 · top_k`). Smaller than `pool`
    /// because every lexical candidate gets its exact cosine anyway; ANN cost grows with it.
    pub vector_pool: usize,
    /// Activated ids already filtered by `filter` (a superset over several types, computed
    /// once per cube); None evaluates the filter here.
    pub within: Option<&'a roaring::RoaringBitmap>,
    /// Which retrievers run ([`Retrievers::Lexical`] ignores `query_vec`).
    pub retrievers: Retrievers,
}

impl<'a> SearchRequest<'a> {
    /// A request with MemOS-like defaults and no threshold.
    pub fn new(
        cube_id: &'a str,
        query: &'a str,
        query_vec: Option<&'a [f32]>,
        top_k: usize,
        filter: &'a Filter,
    ) -> Self {
        SearchRequest {
            cube_id,
            query,
            query_vec,
            top_k,
            filter,
            types: None,
            session_id: None,
            relativity: 0.0,
            dedup: Dedup::No,
            fusion: Fusion::default(),
            session_boost: 0.1,
            pool: 100,
            vector_pool: 30,
            within: None,
            retrievers: Retrievers::Hybrid,
        }
    }
}

/// A search result.
#[derive(Debug, Clone)]
pub struct Hit {
    /// Internal id.
    pub id: u32,
    /// The record (embedding filled).
    pub record: MemoryRecord,
    /// Fused relevance in [0, 1].
    pub score: f32,
    /// Cosine similarity, when the vector retriever ran.
    pub vector_score: Option<f32>,
    /// Raw BM25 score, when the lexical retriever found it.
    pub lexical_score: Option<f32>,
}

/// A scored candidate: (id, fused score, cosine, raw BM25).
type Scored = (u32, f32, Option<f32>, Option<f32>);

/// Both retrievers' hits among `candidates`, each best first: (vector, lexical).
#[allow(clippy::type_complexity)]
fn retrieve(
    store: &Store,
    txn: &RoTxn,
    req: &SearchRequest,
    candidates: &RoaringBitmap,
) -> Result<(Vec<(u32, f32)>, Vec<(u32, f32)>)> {
    let pool = req.pool.max(req.top_k * 3);
    let vec_hits = match req
        .query_vec
        .filter(|_| req.retrievers != Retrievers::Lexical)
    {
        Some(q) => store.vector_search_in(
            txn,
            req.cube_id,
            q,
            req.vector_pool.max(req.top_k * 3),
            candidates,
        )?,
        None => Vec::new(),
    };
    let lex_hits = match req.retrievers {
        Retrievers::Vector => Vec::new(),
        _ => store.bm25_search(txn, req.cube_id, req.query, pool, candidates)?,
    };
    Ok((vec_hits, lex_hits))
}

/// Fuses the two hit lists into one score per memory (RRF or convex, the session boost
/// applied), from ids and vectors only, best first.
fn fuse(
    store: &Store,
    txn: &RoTxn,
    req: &SearchRequest,
    vec_hits: &[(u32, f32)],
    lex_hits: &[(u32, f32)],
) -> Result<Vec<Scored>> {
    #[derive(Default)]
    struct Acc {
        vec: Option<(usize, f32)>,
        lex: Option<(usize, f32)>,
    }
    let mut acc: HashMap<u32, Acc> = HashMap::new();
    for (rank, (id, s)) in vec_hits.iter().enumerate() {
        acc.entry(*id).or_default().vec = Some((rank, *s));
    }
    for (rank, (id, s)) in lex_hits.iter().enumerate() {
        acc.entry(*id).or_default().lex = Some((rank, *s));
    }
    let lex_max = lex_hits.first().map(|x| x.1).unwrap_or(0.0);
    let n_retrievers = (req.query_vec.is_some() as usize + 1) as f32;
    let session_ids = match req.session_id {
        Some(sess) if req.session_boost != 0.0 => {
            Some(store.field_ids(txn, req.cube_id, "session_id", sess)?)
        }
        _ => None,
    };
    let mut scored: Vec<Scored> = Vec::with_capacity(acc.len());
    for (id, a) in acc {
        // Exact cosine for items only the lexical retriever found.
        let cos = match (a.vec, req.query_vec) {
            (Some((_, s)), _) => Some(s),
            (None, Some(q)) => store.cosine(txn, id, q)?,
            _ => None,
        };
        let mut score = match req.fusion {
            Fusion::Rrf { k } => {
                let r = |x: Option<(usize, f32)>| {
                    x.map(|(rank, _)| 1.0 / (k + rank as f32 + 1.0))
                        .unwrap_or(0.0)
                };
                (r(a.vec) + r(a.lex)) / (n_retrievers / (k + 1.0))
            }
            Fusion::Convex { alpha } => {
                let v = cos.unwrap_or(0.0).max(0.0);
                let l = match a.lex {
                    Some((_, s)) if lex_max > 0.0 => s / lex_max,
                    _ => 0.0,
                };
                if req.query_vec.is_some() {
                    alpha * v + (1.0 - alpha) * l
                } else {
                    l
                }
            }
        };
        if session_ids.as_ref().is_some_and(|s| s.contains(id)) {
            score *= 1.0 + req.session_boost;
        }
        scored.push((id, score.clamp(0.0, 1.0), cos, a.lex.map(|x| x.1)));
    }
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(scored)
}

/// Runs a hybrid search.
pub fn search(store: &Store, txn: &RoTxn, req: &SearchRequest) -> Result<Vec<Hit>> {
    if req.top_k == 0 {
        return Ok(Vec::new());
    }
    // Lexical only: no cosine enters the scores.
    let lexical_only;
    let req = if req.retrievers == Retrievers::Lexical && req.query_vec.is_some() {
        lexical_only = SearchRequest {
            query_vec: None,
            ..req.clone()
        };
        &lexical_only
    } else {
        req
    };
    let candidates = match (req.within, req.types) {
        (Some(w), Some(types)) => store.type_ids(txn, req.cube_id, types)? & w,
        (Some(w), None) => w.clone(),
        (None, _) => store.candidates(txn, req.cube_id, req.types, req.filter)?,
    };
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let (vec_hits, lex_hits) = retrieve(store, txn, req, &candidates)?;
    // Score every candidate from ids and vectors only; decode records for the survivors.
    let mut scored = fuse(store, txn, req, &vec_hits, &lex_hits)?;
    if req.relativity > 0.0 {
        scored.retain(|h| h.1 >= req.relativity);
    }
    let keep = if req.dedup == Dedup::No {
        req.top_k
    } else {
        req.top_k * 3
    };
    scored.truncate(keep);
    let mut hits = Vec::with_capacity(scored.len());
    for (id, score, vector_score, lexical_score) in scored {
        let Some(mut record) = store.record(txn, id)? else {
            continue;
        };
        record.embedding = store.embedding(txn, id)?.unwrap_or_default();
        hits.push(Hit {
            id,
            record,
            score,
            vector_score,
            lexical_score,
        });
    }
    Ok(dedup(hits, req.top_k, req.dedup))
}

/// Applies dedup and cuts to `top_k`; `hits` must be sorted best first.
pub fn dedup(hits: Vec<Hit>, top_k: usize, method: Dedup) -> Vec<Hit> {
    match method {
        Dedup::No => hits.into_iter().take(top_k).collect(),
        Dedup::Sim => {
            let mut kept: Vec<Hit> = Vec::new();
            for h in hits {
                if kept.len() >= top_k {
                    break;
                }
                let dup = kept.iter().any(|k| {
                    k.record.memory == h.record.memory
                        || dot(&k.record.embedding, &h.record.embedding) > 0.92
                });
                if !dup {
                    kept.push(h);
                }
            }
            kept
        }
        Dedup::Mmr => {
            let mut pool: Vec<Hit> = hits.into_iter().take(top_k * 3).collect();
            // Per pool item, kept up to date as items are selected (each selection costs one
            // dot product per remaining item, not one per selected × remaining): its highest
            // cosine to a selected hit, and whether it repeats one (same text, or a close
            // embedding with nearly the same characters — skipped outright, like MemOS).
            let mut div = vec![0.0f32; pool.len()];
            let mut repeats = vec![false; pool.len()];
            let mut selected: Vec<Hit> = Vec::new();
            while selected.len() < top_k && !pool.is_empty() {
                let mut best: Option<(usize, f32)> = None;
                for (i, h) in pool.iter().enumerate() {
                    if repeats[i] {
                        continue;
                    }
                    let mut d = div[i];
                    if d > 0.9 {
                        d *= (10.0 * (d - 0.9)).exp();
                    }
                    let m = 0.8 * h.score - 0.2 * d;
                    if best.is_none_or(|(_, b)| m > b) {
                        best = Some((i, m));
                    }
                }
                let Some((i, _)) = best else { break };
                let s = pool.swap_remove(i);
                div.swap_remove(i);
                repeats.swap_remove(i);
                for (j, h) in pool.iter().enumerate() {
                    if repeats[j] {
                        continue;
                    }
                    let cos = dot(&s.record.embedding, &h.record.embedding);
                    if s.record.memory == h.record.memory
                        || (cos > 0.9 && char_dice(&s.record.memory, &h.record.memory) >= 0.8)
                    {
                        repeats[j] = true;
                    }
                    div[j] = div[j].max(cos);
                }
                selected.push(s);
            }
            // Final order is relevance (MemOS keeps the original order per bucket).
            selected.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
            selected
        }
    }
}

/// Dice coefficient of the character bigrams of two texts (case-insensitive), in [0, 1].
pub fn char_dice(a: &str, b: &str) -> f32 {
    use std::collections::HashMap;
    let grams = |s: &str| {
        let c: Vec<char> = s.to_lowercase().chars().collect();
        let mut m: HashMap<(char, char), usize> = HashMap::new();
        for w in c.windows(2) {
            *m.entry((w[0], w[1])).or_default() += 1;
        }
        m
    };
    let (ga, gb) = (grams(a), grams(b));
    let total: usize = ga.values().sum::<usize>() + gb.values().sum::<usize>();
    if total == 0 {
        return if a == b { 1.0 } else { 0.0 };
    }
    let shared: usize = ga
        .iter()
        .map(|(k, n)| (*n).min(*gb.get(k).unwrap_or(&0)))
        .sum();
    2.0 * shared as f32 / total as f32
}

/// Keeps the `k` best (id, score) pairs; re-exported for callers that fuse their own lists.
pub fn top_k(v: Vec<(u32, f32)>, k: usize) -> Vec<(u32, f32)> {
    lexical::top_k(v, k)
}

/// A point in time to search at (unix micros). `system`: what the store held then (versions
/// and statuses as they were; memories added later are invisible). `event`: what was true in
/// the world then, by event time: memories that had happened by then, and of a fact replaced
/// through feedback, the version whose event time is the latest at or before it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AsOf {
    /// System time.
    pub system: Option<i64>,
    /// Event time.
    pub event: Option<i64>,
}

impl AsOf {
    /// Whether any time is set.
    pub fn is_set(&self) -> bool {
        self.system.is_some() || self.event.is_some()
    }
}

/// The version of `current` visible at `at`, if any (see [`AsOf`]).
pub fn visible_at(
    store: &Store,
    txn: &RoTxn,
    current: &MemoryRecord,
    at: AsOf,
) -> Result<Option<MemoryRecord>> {
    let sys = at.system.unwrap_or(i64::MAX);
    let Some(v) = store.version_at(txn, current, sys)? else {
        return Ok(None);
    };
    let Some(te) = at.event else {
        return Ok((v.status == Status::Activated).then_some(v));
    };
    if v.event_time.unwrap_or(v.created_at) > te {
        return Ok(None);
    }
    match v.status {
        Status::Activated => Ok(Some(v)),
        Status::Archived => {
            // Replaced later in event time: it was still true at `te`.
            let Some(succ) = v.info.get(crate::model::SUCCESSOR).and_then(|s| s.as_str()) else {
                return Ok(None);
            };
            let Some(s) = store.get(txn, succ)?.filter(|s| s.cube_id == v.cube_id) else {
                return Ok(None);
            };
            let Some(s) = store.version_at(txn, &s, sys)? else {
                return Ok(None);
            };
            let mut v = v;
            v.status = Status::Activated;
            Ok((s.event_time.unwrap_or(s.created_at) > te).then_some(v))
        }
        _ => Ok(None),
    }
}

/// Embeds texts (past versions that are not in the vector store).
pub type EmbedFn<'a> = dyn FnMut(&[String]) -> Result<Vec<Vec<f32>>> + 'a;

/// A cube rewound to a point in time: each visible record's version then, and whether its text
/// is the current one (then its stored vector is valid). Build once per cube and search it
/// for every bucket.
#[derive(Debug, Clone, Default)]
pub struct Rewound {
    versions: Vec<(u32, MemoryRecord, bool)>,
}

impl Rewound {
    /// Rewinds every record of `cube` that `scope` sees to `at` (see [`AsOf`]).
    pub fn new(
        store: &Store,
        txn: &RoTxn,
        cube: &str,
        scope: &crate::Scope,
        at: AsOf,
    ) -> Result<Rewound> {
        let mut versions = Vec::new();
        for id in store.restrict(txn, cube, scope, store.cube_ids(txn, cube)?)? {
            let Some(cur) = store.record(txn, id)? else {
                continue;
            };
            if let Some(v) = visible_at(store, txn, &cur, at)? {
                let same = v.memory == cur.memory;
                versions.push((id, v, same));
            }
        }
        Ok(Rewound { versions })
    }

    /// Records visible then.
    pub fn len(&self) -> usize {
        self.versions.len()
    }

    /// Whether nothing was visible then.
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }
}

/// Search at a point in time over a [`Rewound`] cube, scored by cosine similarity —
/// exhaustively, since past versions are not in the ANN index. Versions whose text differs
/// from the current one are embedded with `embed`.
pub fn search_as_of(
    store: &Store,
    txn: &RoTxn,
    req: &SearchRequest,
    rewound: &Rewound,
    embed: &mut EmbedFn<'_>,
) -> Result<Vec<Hit>> {
    let qv = req
        .query_vec
        .ok_or_else(|| StoreError::InvalidArgument("as_of search needs a query vector".into()))?;
    let found: Vec<&(u32, MemoryRecord, bool)> = rewound
        .versions
        .iter()
        .filter(|(_, v, _)| {
            req.types.is_none_or(|t| t.contains(&v.memory_type)) && req.filter.matches(v)
        })
        .collect();
    let texts: Vec<String> = found
        .iter()
        .filter(|(_, _, same)| !*same)
        .map(|(_, v, _)| v.memory.clone())
        .collect();
    let mut fresh = if texts.is_empty() {
        Vec::new()
    } else {
        embed(&texts)?
    }
    .into_iter();
    let mut hits = Vec::new();
    for (id, v, same) in found {
        let e = if *same {
            store.embedding(txn, *id)?.unwrap_or_default()
        } else {
            fresh.next().unwrap_or_default()
        };
        let score: f32 = e.iter().zip(qv).map(|(a, b)| a * b).sum();
        if score < req.relativity {
            continue;
        }
        let mut v = v.clone();
        v.embedding = e;
        hits.push(Hit {
            id: *id,
            record: v,
            score,
            vector_score: Some(score),
            lexical_score: None,
        });
    }
    hits.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(dedup(hits, req.top_k, req.dedup))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    /// MMR as first written: every candidate compared with every selected hit in each round.
    fn mmr_reference(hits: Vec<Hit>, top_k: usize) -> Vec<Hit> {
        let mut pool: Vec<Hit> = hits.into_iter().take(top_k * 3).collect();
        let mut selected: Vec<Hit> = Vec::new();
        while selected.len() < top_k && !pool.is_empty() {
            let mut best: Option<(usize, f32)> = None;
            for (i, h) in pool.iter().enumerate() {
                if selected.iter().any(|s| {
                    s.record.memory == h.record.memory
                        || (dot(&s.record.embedding, &h.record.embedding) > 0.9
                            && char_dice(&s.record.memory, &h.record.memory) >= 0.8)
                }) {
                    continue;
                }
                let mut div = selected
                    .iter()
                    .map(|s| dot(&s.record.embedding, &h.record.embedding))
                    .fold(0.0f32, f32::max);
                if div > 0.9 {
                    div *= (10.0 * (div - 0.9)).exp();
                }
                let m = 0.8 * h.score - 0.2 * div;
                if best.is_none_or(|(_, b)| m > b) {
                    best = Some((i, m));
                }
            }
            match best {
                Some((i, _)) => selected.push(pool.swap_remove(i)),
                None => break,
            }
        }
        selected.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        selected
    }

    fn record(memory: String, embedding: Vec<f32>) -> MemoryRecord {
        MemoryRecord {
            id: String::new(),
            memory,
            cube_id: "c".into(),
            user_id: "u".into(),
            session_id: String::new(),
            agent_id: None,
            app_id: None,
            memory_type: MemoryType::LongTermMemory,
            status: Status::Activated,
            key: None,
            tags: Vec::new(),
            info: Default::default(),
            source: None,
            sources: Vec::new(),
            confidence: 1.0,
            created_at: 0,
            updated_at: 0,
            event_time: None,
            version: 1,
            history: Vec::new(),
            event_id: String::new(),
            file_ids: Vec::new(),
            embedding,
        }
    }

    #[test]
    fn incremental_mmr_selects_what_the_pairwise_form_selects() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let texts = [
            "tea at noon",
            "tea at noon!",
            "a walk by the river",
            "jazz records",
        ];
        for round in 0..200 {
            // A few clusters of close vectors, repeated and nearly repeated texts among them.
            let centres: Vec<Vec<f32>> = (0..3)
                .map(|_| (0..16).map(|_| rng.random_range(-1.0f32..1.0)).collect())
                .collect();
            let n = rng.random_range(1..40usize);
            let mut hits: Vec<Hit> = (0..n)
                .map(|i| {
                    let c = &centres[rng.random_range(0..3)];
                    let noise = if rng.random_bool(0.5) { 0.05 } else { 0.8 };
                    let mut e: Vec<f32> = c
                        .iter()
                        .map(|x| x + rng.random_range(-noise..noise))
                        .collect();
                    let norm = e.iter().map(|x| x * x).sum::<f32>().sqrt();
                    e.iter_mut().for_each(|x| *x /= norm);
                    let memory = if rng.random_bool(0.3) {
                        texts[rng.random_range(0..texts.len())].to_string()
                    } else {
                        format!("memory {round} {i}")
                    };
                    Hit {
                        id: i as u32,
                        record: record(memory, e),
                        score: rng.random_range(0.0..1.0),
                        vector_score: None,
                        lexical_score: None,
                    }
                })
                .collect();
            hits.sort_by(|a, b| b.score.total_cmp(&a.score));
            let k = rng.random_range(1..12usize);
            let ids = |v: Vec<Hit>| v.into_iter().map(|h| h.id).collect::<Vec<_>>();
            let want = ids(mmr_reference(hits.clone(), k));
            let got = ids(dedup(hits, k, Dedup::Mmr));
            assert_eq!(got, want, "round {round}, k {k}");
            assert!(!got.is_empty());
        }
    }

    #[test]
    fn each_retriever_alone_finds_only_what_it_can_see() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            crate::StoreOptions {
                dimensions: 4,
                ..Default::default()
            },
        )
        .unwrap();
        // "apple" is in the text of one record and near the query vector in the other.
        let mut w = store.write_txn().unwrap();
        for (id, text, v) in [
            ("words", "apple orchard in spring", [1.0, 0.0, 0.0, 0.0]),
            ("near", "zebra crossing downtown", [0.0, 1.0, 0.0, 0.0]),
        ] {
            let mut r = record(text.into(), vec![]);
            r.id = id.into();
            r.session_id = "s".into();
            r.event_id = id.into();
            store.insert(&mut w, &r, &v).unwrap();
        }
        w.commit().unwrap();
        let txn = store.read_txn().unwrap();
        let filter = Filter::True;
        let q = [0.0, 1.0, 0.0, 0.0];
        let ids = |r: Retrievers| -> Vec<(String, Option<f32>, Option<f32>)> {
            let mut s = SearchRequest::new("c", "apple", Some(&q), 5, &filter);
            s.retrievers = r;
            search(&store, &txn, &s)
                .unwrap()
                .into_iter()
                .map(|h| (h.record.id, h.vector_score, h.lexical_score))
                .collect()
        };
        let lexical = ids(Retrievers::Lexical);
        assert_eq!(lexical.len(), 1, "{lexical:?}");
        assert_eq!(lexical[0].0, "words");
        assert_eq!(lexical[0].1, None, "no cosine in a lexical search");
        let vector = ids(Retrievers::Vector);
        assert_eq!(vector[0].0, "near", "{vector:?}");
        assert!(vector.iter().all(|h| h.2.is_none()), "{vector:?}");
        let hybrid = ids(Retrievers::Hybrid);
        let mut found: Vec<&str> = hybrid.iter().map(|h| h.0.as_str()).collect();
        found.sort();
        assert_eq!(found, ["near", "words"], "{hybrid:?}");
    }
}
