//! `feedback-merge`: turns user feedback on memories into non-destructive edits.
//!
//! 1. **Intent.** Without an LLM, deterministic rules read the common forms
//!    (memos-spec §5 does this with LLM prompts):
//!    - *replace*: "No, it's X not Y", "it is X, not Y", "not Y but X", "X instead of Y",
//!      "change Y to X", "replace Y with X";
//!    - *set*: "change it to X", "update it to X", "it should be X", "actually it's X";
//!    - *retract*: "I don't like X anymore", "I no longer like X", "I stopped liking X";
//!    - *forget*: "forget that …", "forget about …", "please forget …", "delete the memory …";
//!    - anything else *supplements*: it is added as a new memory.
//! 2. **Targets.** The request's `retrieved_memory_ids`, else a search of the cube (and of the
//!    knowledge bases in `allow_knowledgebase_ids`; no other knowledge base is ever touched):
//!    lexical containment for *replace*/*retract*, semantic similarity above
//!    `min_similarity` for *set*/*forget*.
//! 3. **Plan, then apply.** The stage ([`Operator::process`]) reads each feedback and embeds
//!    its similarity query off the write path. In the sink's write transaction,
//!    [`FeedbackMergeOperator::resolve`] finds the targets (seeing what the same batch wrote
//!    before the feedback) and returns actions; the sink applies them in event order, so one
//!    commit covers the feedback and everything it changed. An *update* writes a successor
//!    memory (new id, the new text, the old one's history plus the replaced version,
//!    `info.covered_history` = the old id) and archives the old one with `info.successor_id`;
//!    *forget* archives; *retract* archives the preference and records the new one. Nothing is hard-deleted: archived memories stay
//!    readable through history and `as_of`.

use std::collections::HashSet;
use std::sync::Arc;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use store::heed::RoTxn;
use store::{HistoryEntry, MemoryRecord, MemoryType, SourceMessage, Status, Store, model};

use crate::embed::Embedder;
use crate::event::{EventKind, memory_id};
use crate::window::key_of;
use crate::{Collector, IdentifiedEvent, OpContext, Operator, OperatorError, Result};

/// Config of the feedback stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedbackConfig {
    /// Most memories one feedback may change.
    pub max_targets: usize,
    /// Cosine similarity a searched memory needs to be a target of *set* or *forget*.
    pub min_similarity: f32,
    /// Candidates read per search.
    pub search_k: usize,
}

impl Default for FeedbackConfig {
    fn default() -> Self {
        FeedbackConfig {
            max_targets: 5,
            min_similarity: 0.45,
            search_k: 20,
        }
    }
}

impl FeedbackConfig {
    /// Builds the operator.
    pub fn build(&self, embedder: Arc<dyn Embedder>) -> FeedbackMergeOperator {
        FeedbackMergeOperator {
            cfg: self.clone(),
            embedder,
            rules: Rules::new(),
        }
    }
}

/// What the feedback asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Intent {
    /// Replace `old` with `new` wherever a target says it.
    Replace {
        /// The wrong value.
        old: String,
        /// The right one.
        new: String,
    },
    /// The target's value should be `new`.
    Set {
        /// The right value.
        new: String,
    },
    /// The user no longer likes `topic`.
    Retract {
        /// What they no longer like.
        topic: String,
    },
    /// Forget memories about `what`.
    Forget {
        /// What to forget.
        what: String,
    },
    /// New information: add it.
    Supplement,
}

impl Intent {
    /// Short name for records and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Intent::Replace { .. } => "replace",
            Intent::Set { .. } => "set",
            Intent::Retract { .. } => "retract",
            Intent::Forget { .. } => "forget",
            Intent::Supplement => "supplement",
        }
    }
}

struct Rules {
    replace: Vec<(Regex, bool)>,
    set: Vec<Regex>,
    retract: Vec<Regex>,
    forget: Vec<Regex>,
}

impl Rules {
    fn new() -> Rules {
        let r = |s: &str| Regex::new(s).expect("feedback rule compiles");
        // (pattern, whether the first group is the new value)
        Rules {
            replace: vec![
                (
                    r(
                        r"(?i)\b(?:it'?s|it is|that'?s|that is|is|are|was)\s+(?P<new>[^,:;.!?]+?),?\s+not\s+(?P<old>[^.!?]+)",
                    ),
                    true,
                ),
                (
                    r(r"(?i)\bnot\s+(?P<old>.+?),?\s+but\s+(?P<new>[^.!?]+)"),
                    false,
                ),
                (
                    r(r"(?i)\bchange\s+(?P<old>.+?)\s+(?:to|into)\s+(?P<new>[^.!?]+)"),
                    false,
                ),
                (
                    r(r"(?i)\breplace\s+(?P<old>.+?)\s+with\s+(?P<new>[^.!?]+)"),
                    false,
                ),
                (
                    r(r"(?i)^(?:no[,.!]?\s*)?(?P<new>.+?)\s+instead of\s+(?P<old>[^.!?]+)"),
                    true,
                ),
            ],
            set: vec![
                r(
                    r"(?i)\b(?:change|update|set|correct)\s+(?:it|that|this)\s+(?:to|into)\s+(?P<new>[^.!?]+)",
                ),
                r(r"(?i)\b(?:it|that)\s+should\s+(?:be|say)\s+(?P<new>[^.!?]+)"),
                r(r"(?i)^(?:no[,.!]?\s*)?actually,?\s+(?:it'?s|it is)\s+(?P<new>[^.!?]+)"),
            ],
            retract: vec![
                r(
                    r"(?i)\bi\s+(?:don'?t|do not)\s+(?:like|love|enjoy|want)\s+(?P<topic>.+?)\s+any\s?more\b",
                ),
                r(r"(?i)\bi\s+no\s+longer\s+(?:like|love|enjoy|want|prefer)\s+(?P<topic>[^.!?]+)"),
                r(r"(?i)\bi\s+(?:stopped|quit)\s+(?:liking|loving|enjoying)\s+(?P<topic>[^.!?]+)"),
                r(r"(?i)\bi'?m\s+not\s+(?:into|a fan of)\s+(?P<topic>.+?)\s+any\s?more\b"),
            ],
            forget: vec![
                r(r"(?i)\b(?:please\s+)?forget\s+(?:that|about|the fact that)\s+(?P<what>[^.!?]+)"),
                r(r"(?i)\b(?:please\s+)?forget\s+(?P<what>[^.!?]+)"),
                r(
                    r"(?i)\b(?:delete|remove|erase)\s+(?:the\s+)?memor(?:y|ies)\s+(?:that|about|of)\s+(?P<what>[^.!?]+)",
                ),
            ],
        }
    }
}

fn clean(s: &str) -> String {
    s.trim()
        .trim_matches(|c: char| "\"'“”‘’.,;:!? ".contains(c))
        .to_string()
}

/// "in May, not April": the preposition belongs to the sentence, not to the value, unless the
/// old value has it too.
fn strip_preposition(new: &str, old: &str) -> String {
    const P: &[&str] = &["in", "at", "on", "to", "for", "from", "by", "with"];
    let mut words = new.splitn(2, ' ');
    let (first, rest) = (words.next().unwrap_or(""), words.next());
    let old_first = old.split_whitespace().next().unwrap_or("");
    match rest {
        Some(rest)
            if P.contains(&first.to_lowercase().as_str())
                && !first.eq_ignore_ascii_case(old_first) =>
        {
            rest.to_string()
        }
        _ => new.to_string(),
    }
}

/// Reads the intent of a feedback text with the deterministic rules.
pub fn parse_intent(text: &str) -> Intent {
    Rules::new().parse(text)
}

impl Rules {
    fn parse(&self, text: &str) -> Intent {
        let t = text.trim().replace('’', "'");
        for re in &self.retract {
            if let Some(c) = re.captures(&t) {
                return Intent::Retract {
                    topic: clean(&c["topic"]),
                };
            }
        }
        for re in &self.forget {
            if let Some(c) = re.captures(&t) {
                return Intent::Forget {
                    what: clean(&c["what"]),
                };
            }
        }
        for re in &self.set {
            if let Some(c) = re.captures(&t) {
                return Intent::Set {
                    new: clean(&c["new"]),
                };
            }
        }
        for (re, _) in &self.replace {
            if let Some(c) = re.captures(&t) {
                let (old, new) = (
                    clean(&c["old"]),
                    strip_preposition(&clean(&c["new"]), &c["old"]),
                );
                if !old.is_empty() && !new.is_empty() && !old.eq_ignore_ascii_case(&new) {
                    return Intent::Replace { old, new };
                }
            }
        }
        Intent::Supplement
    }
}

/// One change in a feedback outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The memory written (or archived).
    pub id: String,
    /// Its text.
    pub text: String,
    /// For updates: the memory it replaced, now archived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archived_id: Option<String>,
    /// For updates: the replaced text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin_memory: Option<String>,
}

/// What one feedback did (MemOS `record` plus `archive`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FeedbackOutcome {
    /// The rule that read it.
    pub intent: String,
    /// New memories.
    pub add: Vec<Change>,
    /// Replacements: a successor written, the original archived.
    pub update: Vec<Change>,
    /// Memories archived without a successor (forget, retract).
    pub archive: Vec<Change>,
}

/// One feedback event as the stage read it (out of the sink's transaction): what it says, the
/// intent the rules found and, when the intent searches by similarity, the query's embedding.
/// The sink resolves it against the batch's transaction with
/// [`FeedbackMergeOperator::resolve`].
#[derive(Debug, Clone)]
pub struct FeedbackRequest {
    /// The feedback event.
    pub ie: IdentifiedEvent,
    /// `feedback_content`, trimmed.
    pub content: String,
    /// The intent the rules read from it.
    pub intent: Intent,
    /// `retrieved_memory_ids`: the memories the feedback names.
    pub retrieved: Vec<String>,
    /// `allow_knowledgebase_ids`: the knowledge bases it may touch besides its own cube.
    pub allowed_kbs: Vec<String>,
    /// The similarity query's embedding (*set*: the last messages of `history`, else the
    /// content; *forget*: what to forget).
    query: Option<Vec<f32>>,
}

/// One change a feedback makes, for the sink to apply in its transaction.
#[derive(Debug, Clone)]
pub enum FeedbackAction {
    /// Rewrite a memory as archived; `reason` goes to its history.
    Archive {
        /// The archived version of the memory.
        record: MemoryRecord,
        /// The history entry's update type.
        reason: &'static str,
    },
    /// Write a new memory (a successor or a new fact).
    Insert {
        /// The record.
        record: MemoryRecord,
        /// Its embedding.
        embedding: Vec<f32>,
    },
}

/// What one feedback will do: the report and the changes, in the order they apply.
#[derive(Debug, Clone, Default)]
pub struct FeedbackPlan {
    /// The report kept with the feedback record (MemOS `record` plus `archive`).
    pub outcome: FeedbackOutcome,
    /// The changes, in order.
    pub actions: Vec<FeedbackAction>,
}

/// The feedback stage. Through [`Operator::process`] it reads each feedback event and embeds
/// its similarity query (batched, off the write path); the sink then calls
/// [`FeedbackMergeOperator::resolve`] in its transaction, so the targets include the memories
/// the same batch wrote before the feedback, and applies the returned actions in event order.
pub struct FeedbackMergeOperator {
    cfg: FeedbackConfig,
    embedder: Arc<dyn Embedder>,
    rules: Rules,
}

/// Replaces every case-insensitive occurrence of `old` in `text` with `new`.
fn replace_ci(text: &str, old: &str, new: &str) -> Option<String> {
    let re = Regex::new(&format!(r"(?i)\b{}\b", regex::escape(old))).ok()?;
    re.is_match(text)
        .then(|| re.replace_all(text, regex::NoExpand(new)).into_owned())
}

/// "Set" on a memory: the value after its last copula becomes `new` ("X's favourite colour is
/// blue" + "green" → "… is green"); without one, the correction is appended.
pub fn set_value(text: &str, new: &str) -> String {
    let re =
        Regex::new(r"(?i)\b(is|are|was|were|lives in|works at|works as|likes|loves|prefers)\s")
            .expect("copula rule compiles");
    match re.find_iter(text).last() {
        Some(m) => format!("{}{}", &text[..m.end()], new.trim_end_matches('.')),
        None => format!("{} (corrected: {new})", text.trim_end_matches('.')),
    }
}

/// A list of strings in the payload, or empty.
fn strings(p: &Value, field: &str) -> Vec<String> {
    p.get(field)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

impl Operator for FeedbackMergeOperator {
    type In = IdentifiedEvent;
    type Out = FeedbackRequest;

    fn name(&self) -> &'static str {
        "feedback"
    }

    fn process(
        &mut self,
        batch: Vec<IdentifiedEvent>,
        _ctx: &OpContext,
        out: &mut Collector<FeedbackRequest>,
    ) -> Result<()> {
        let mut reqs = Vec::with_capacity(batch.len());
        let mut queries = Vec::new();
        for ie in batch {
            if ie.event.kind != EventKind::Feedback {
                out.fail(
                    &ie.id,
                    OperatorError::Invalid("not a feedback event".into()),
                );
                continue;
            }
            let req = self.read(ie);
            let q = query_text(&req);
            let searches = q.is_some();
            queries.extend(q);
            reqs.push((req, searches));
        }
        // One embedder call for the batch's similarity queries.
        let mut vecs = if queries.is_empty() {
            Vec::new()
        } else {
            self.embedder.embed(&queries)?
        }
        .into_iter();
        for (mut req, searches) in reqs {
            if searches {
                req.query = vecs.next();
            }
            out.collect(req);
        }
        Ok(())
    }
}

/// The text a request's similarity search embeds, when its intent searches by similarity.
fn query_text(req: &FeedbackRequest) -> Option<String> {
    if req.content.is_empty() {
        return None;
    }
    match &req.intent {
        Intent::Set { .. } => {
            // The conversation being corrected: the last messages of `history`.
            let context = req
                .ie
                .event
                .payload
                .get("history")
                .and_then(Value::as_array)
                .map(|h| {
                    h.iter()
                        .rev()
                        .take(2)
                        .filter_map(|m| m.get("content").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            Some(if context.is_empty() {
                req.content.clone()
            } else {
                context
            })
        }
        Intent::Forget { what } => Some(what.clone()),
        _ => None,
    }
}

/// Builds one feedback's plan: record ids in order, each target changed once.
struct Planner<'a> {
    ie: &'a IdentifiedEvent,
    seq: u32,
    now: i64,
    done: HashSet<String>,
    plan: FeedbackPlan,
}

impl FeedbackMergeOperator {
    /// Reads the intent of a feedback text.
    pub fn intent(&self, text: &str) -> Intent {
        self.rules.parse(text)
    }

    /// Reads a feedback event's fields and intent.
    fn read(&self, ie: IdentifiedEvent) -> FeedbackRequest {
        let p = &ie.event.payload;
        let content = p
            .get("feedback_content")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim()
            .to_string();
        FeedbackRequest {
            intent: self.rules.parse(&content),
            retrieved: strings(p, "retrieved_memory_ids"),
            allowed_kbs: strings(p, "allow_knowledgebase_ids"),
            content,
            query: None,
            ie,
        }
    }

    /// Activated memories of `cubes` by semantic similarity to `query`, best first.
    fn similar(
        &self,
        store: &Store,
        txn: &RoTxn,
        cubes: &[String],
        owner: (&str, &str),
        query: &[f32],
    ) -> Result<Vec<MemoryRecord>> {
        let mut out = Vec::new();
        for cube in cubes {
            let cand = targets(store, txn, cube, owner)?;
            // Inside the sink's transaction: the exact/ANN path, not the RAM codes (which must
            // only ever learn committed vectors).
            for (id, score) in store.vector_search(txn, query, self.cfg.search_k, &cand)? {
                if score >= self.cfg.min_similarity
                    && let Some(r) = store.record(txn, id)?
                {
                    out.push((r, score));
                }
            }
        }
        out.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(out.into_iter().map(|(r, _)| r).collect())
    }

    /// Activated memories of `cubes` that contain `phrase` (BM25 candidates, then checked).
    fn containing(
        &self,
        store: &Store,
        txn: &RoTxn,
        cubes: &[String],
        owner: (&str, &str),
        phrase: &str,
    ) -> Result<Vec<MemoryRecord>> {
        let lower = phrase.to_lowercase();
        let mut out = Vec::new();
        for cube in cubes {
            let cand = targets(store, txn, cube, owner)?;
            for (id, _) in store.bm25_search(txn, cube, phrase, self.cfg.search_k * 5, &cand)? {
                if let Some(r) = store.record(txn, id)?
                    && r.memory.to_lowercase().contains(&lower)
                {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    /// The similarity search of a request (its query embedded by the stage).
    fn similar_to(
        &self,
        store: &Store,
        txn: &RoTxn,
        cubes: &[String],
        owner: (&str, &str),
        req: &FeedbackRequest,
    ) -> Result<Vec<MemoryRecord>> {
        let query = match &req.query {
            Some(q) => q.clone(),
            None => match query_text(req) {
                Some(text) => self.embed(vec![text])?.pop().unwrap_or_default(),
                None => return Ok(Vec::new()),
            },
        };
        self.similar(store, txn, cubes, owner, &query)
    }

    fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>> {
        let n = texts.len();
        let vecs = self.embedder.embed(&texts)?;
        if vecs.len() != n {
            return Err(OperatorError::Model(format!(
                "embedder returned {} vectors for {n} texts",
                vecs.len()
            )));
        }
        Ok(vecs)
    }

    /// Decides what one feedback changes, reading the store in `txn` (the sink's transaction,
    /// which holds what the batch wrote before it) and writing nothing: the sink applies the
    /// plan's actions in order.
    pub fn resolve(
        &self,
        store: &Store,
        txn: &RoTxn,
        req: &FeedbackRequest,
    ) -> Result<FeedbackPlan> {
        let ev = &req.ie.event;
        // The cubes feedback may touch: its own and the allowed knowledge bases.
        let mut cubes = vec![ev.cube_id.clone()];
        cubes.extend(req.allowed_kbs.iter().cloned());
        // In its own cube, feedback touches only its user's memories (a user's feedback never
        // rewrites another user's); knowledge-base chunks are shared.
        let may_touch = |r: &MemoryRecord| {
            cubes.contains(&r.cube_id) && (r.cube_id != ev.cube_id || r.user_id == ev.user_id)
        };
        let owner = (ev.cube_id.as_str(), ev.user_id.as_str());
        let mut p = Planner {
            ie: &req.ie,
            seq: 0,
            now: store::time::now_micros(),
            done: HashSet::new(),
            plan: FeedbackPlan::default(),
        };
        p.plan.outcome.intent = req.intent.name().into();
        if req.content.is_empty() {
            return Ok(p.plan);
        }
        // Memories named by the request, if any (only those feedback may touch).
        let mut named = Vec::new();
        for id in &req.retrieved {
            if let Some(r) = store.get(txn, id)?
                && r.status == Status::Activated
                && may_touch(&r)
            {
                named.push(r);
            }
        }
        let max = self.cfg.max_targets;
        match &req.intent {
            Intent::Replace { old, new } => {
                let targets = if named.is_empty() {
                    self.containing(store, txn, &cubes, owner, old)?
                } else {
                    named.clone()
                };
                for t in targets.into_iter().take(max) {
                    if !p.done.contains(&t.id)
                        && let Some(text) = replace_ci(&t.memory, old, new)
                    {
                        p.supersede(store, txn, &t, text)?;
                    }
                }
            }
            Intent::Set { new } => {
                let targets = if named.is_empty() {
                    let found = self.similar_to(store, txn, &cubes, owner, req)?;
                    found.into_iter().take(1).collect()
                } else {
                    named.clone()
                };
                for t in targets.into_iter().take(max) {
                    let text = set_value(&t.memory, new);
                    if text != t.memory && !p.done.contains(&t.id) {
                        p.supersede(store, txn, &t, text)?;
                    }
                }
            }
            Intent::Retract { topic } => {
                let mut targets: Vec<MemoryRecord> = self
                    .containing(store, txn, &cubes, owner, topic)?
                    .into_iter()
                    .filter(|r| {
                        r.memory_type == MemoryType::PreferenceMemory
                            && r.info.get("preference").and_then(Value::as_str) != Some("dislike")
                    })
                    .collect();
                targets.extend(named.iter().cloned());
                for t in targets.into_iter().take(max) {
                    p.archive(&t, "feedback:retract");
                }
                let text = format!("{}: I no longer like {topic}", speaker(ev));
                let mut r = p.new_record(text, MemoryType::PreferenceMemory);
                r.info
                    .insert("preference_type".into(), json!("explicit_preference"));
                r.info.insert("preference".into(), json!("dislike"));
                p.add(store, txn, r)?;
            }
            Intent::Forget { what } => {
                // Named memories, else those that say it, else the most similar ones.
                let mut targets = named.clone();
                if targets.is_empty() {
                    targets = self.containing(store, txn, &cubes, owner, what)?;
                }
                if targets.is_empty() {
                    targets = self.similar_to(store, txn, &cubes, owner, req)?;
                }
                for t in targets.into_iter().take(max) {
                    p.archive(&t, "feedback:forget");
                }
            }
            Intent::Supplement => {}
        }
        // Nothing to change (or new information): keep what the user said as a memory.
        let o = &p.plan.outcome;
        if o.update.is_empty() && o.archive.is_empty() && o.add.is_empty() {
            let text = format!("{}: {}", speaker(ev), req.content);
            let mut r = p.new_record(text, MemoryType::UserMemory);
            if let Some(first) = named.first() {
                r.info.insert("supplements".into(), json!(first.id));
            }
            p.add(store, txn, r)?;
        }
        self.embed_inserts(p.plan)
    }

    /// Fills the embeddings of the plan's new memories, in one embedder call.
    fn embed_inserts(&self, mut plan: FeedbackPlan) -> Result<FeedbackPlan> {
        let texts: Vec<String> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                FeedbackAction::Insert { record, .. } => Some(record.memory.clone()),
                FeedbackAction::Archive { .. } => None,
            })
            .collect();
        if texts.is_empty() {
            return Ok(plan);
        }
        let mut vecs = self.embed(texts)?.into_iter();
        for a in &mut plan.actions {
            if let FeedbackAction::Insert { embedding, .. } = a {
                *embedding = vecs.next().unwrap_or_default();
            }
        }
        Ok(plan)
    }
}

impl Planner<'_> {
    fn new_record(&mut self, text: String, ty: MemoryType) -> MemoryRecord {
        let ie = self.ie;
        let ev = &ie.event;
        let id = memory_id(&ev.cube_id, &ie.id, self.seq);
        self.seq += 1;
        let mut tags = ev.tags.clone();
        tags.push("feedback".into());
        MemoryRecord {
            id,
            key: Some(key_of(&text)),
            memory: text,
            cube_id: ev.cube_id.clone(),
            user_id: ev.user_id.clone(),
            session_id: ev
                .session_id
                .clone()
                .unwrap_or_else(|| "default_session".into()),
            agent_id: ev.agent_id.clone(),
            app_id: ev.app_id.clone(),
            memory_type: ty,
            status: Status::Activated,
            tags,
            info: Default::default(),
            source: Some("feedback".into()),
            sources: vec![feedback_source(ev)],
            confidence: 0.99,
            created_at: self.now,
            updated_at: self.now,
            event_time: ev.time.as_deref().and_then(store::time::parse_time),
            version: 1,
            history: Vec::new(),
            event_id: ie.id.clone(),
            file_ids: Vec::new(),
            embedding: Vec::new(),
        }
    }

    /// A new memory, unless the same text is stored already (then that one is reported).
    fn add(&mut self, store: &Store, txn: &RoTxn, r: MemoryRecord) -> Result<()> {
        if let Some(existing) =
            store.find_by_content(txn, &r.cube_id, r.memory_type.bucket(), &r.memory)?
            && let Some(e) = store.record(txn, existing)?
        {
            self.plan.outcome.add.push(Change {
                id: e.id,
                text: e.memory,
                ..Default::default()
            });
            return Ok(());
        }
        self.plan.outcome.add.push(Change {
            id: r.id.clone(),
            text: r.memory.clone(),
            ..Default::default()
        });
        if store.get(txn, &r.id)?.is_none() {
            self.plan.actions.push(FeedbackAction::Insert {
                record: r,
                embedding: Vec::new(),
            });
        }
        Ok(())
    }

    /// A successor of `old` with `text`; `old` is archived.
    fn supersede(
        &mut self,
        store: &Store,
        txn: &RoTxn,
        old: &MemoryRecord,
        text: String,
    ) -> Result<()> {
        self.done.insert(old.id.clone());
        let ie = self.ie;
        let ev = &ie.event;
        let now = self.now;
        let mut r = old.clone();
        r.id = memory_id(&old.cube_id, &ie.id, self.seq);
        self.seq += 1;
        r.key = Some(key_of(&text));
        r.memory = text;
        r.version = old.version + 1;
        r.history.push(HistoryEntry {
            version: old.version,
            memory: old.memory.clone(),
            update_type: "feedback".into(),
            archived_at: now,
            merged_from: Some(old.id.clone()),
        });
        r.created_at = now;
        r.updated_at = now;
        r.event_time = ev
            .time
            .as_deref()
            .and_then(store::time::parse_time)
            .or(old.event_time);
        r.event_id = ie.id.clone();
        r.source = Some("feedback".into());
        r.sources.push(feedback_source(ev));
        r.info.remove(model::DERIVED_FROM);
        r.info
            .insert(model::COVERED_HISTORY.into(), json!(old.id.clone()));
        if !r.tags.iter().any(|t| t == "feedback") {
            r.tags.push("feedback".into());
        }
        r.status = Status::Activated;
        let mut archived = old.clone();
        archived.status = Status::Archived;
        archived
            .info
            .insert(model::SUCCESSOR.into(), json!(r.id.clone()));
        self.plan.actions.push(FeedbackAction::Archive {
            record: archived,
            reason: "feedback",
        });
        self.plan.outcome.update.push(Change {
            id: r.id.clone(),
            text: r.memory.clone(),
            archived_id: Some(old.id.clone()),
            origin_memory: Some(old.memory.clone()),
        });
        if store.get(txn, &r.id)?.is_none() {
            self.plan.actions.push(FeedbackAction::Insert {
                record: r,
                embedding: Vec::new(),
            });
        }
        Ok(())
    }

    /// `old` archived (once per feedback) with `why` as its reason.
    fn archive(&mut self, old: &MemoryRecord, why: &'static str) {
        if !self.done.insert(old.id.clone()) {
            return;
        }
        let mut archived = old.clone();
        archived.status = Status::Archived;
        archived.info.insert("archived_reason".into(), json!(why));
        self.plan.actions.push(FeedbackAction::Archive {
            record: archived,
            reason: why,
        });
        self.plan.outcome.archive.push(Change {
            id: old.id.clone(),
            text: old.memory.clone(),
            ..Default::default()
        });
    }
}

fn speaker(ev: &crate::event::Event) -> &str {
    ev.payload
        .get("speaker")
        .and_then(Value::as_str)
        .unwrap_or("user")
}

fn feedback_source(ev: &crate::event::Event) -> SourceMessage {
    SourceMessage {
        kind: "feedback".into(),
        role: Some("user".into()),
        chat_time: ev.time.clone(),
        content: ev
            .payload
            .get("feedback_content")
            .and_then(Value::as_str)
            .map(String::from),
        ..Default::default()
    }
}

/// Activated memories of `cube` feedback may target: in the feedback's own cube (`owner` =
/// (cube, user)) only its user's.
fn targets(
    store: &Store,
    txn: &RoTxn,
    cube: &str,
    owner: (&str, &str),
) -> Result<store::roaring::RoaringBitmap> {
    let mut cand = store.field_ids(txn, cube, "status", Status::Activated.as_str())?;
    if cube == owner.0 {
        cand &= store.field_ids(txn, cube, "user_id", owner.1)?;
    }
    Ok(cand)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_forms() {
        assert_eq!(
            parse_intent("No, it's Berlin not Paris"),
            Intent::Replace {
                old: "Paris".into(),
                new: "Berlin".into()
            }
        );
        assert_eq!(
            parse_intent("That's wrong: it is tea, not coffee."),
            Intent::Replace {
                old: "coffee".into(),
                new: "tea".into()
            }
        );
        assert_eq!(
            parse_intent("Actually the flight is in May, not April."),
            Intent::Replace {
                old: "April".into(),
                new: "May".into()
            }
        );
        assert_eq!(
            parse_intent("change Tuesday to Thursday"),
            Intent::Replace {
                old: "Tuesday".into(),
                new: "Thursday".into()
            }
        );
        assert_eq!(
            parse_intent("Please change it to green."),
            Intent::Set {
                new: "green".into()
            }
        );
        assert_eq!(
            parse_intent("I don't like sushi anymore"),
            Intent::Retract {
                topic: "sushi".into()
            }
        );
        assert_eq!(
            parse_intent("I no longer like jazz."),
            Intent::Retract {
                topic: "jazz".into()
            }
        );
        assert_eq!(
            parse_intent("Forget that I have a cat."),
            Intent::Forget {
                what: "I have a cat".into()
            }
        );
        assert_eq!(
            parse_intent("My sister is visiting next week."),
            Intent::Supplement
        );
    }

    #[test]
    fn value_edits() {
        assert_eq!(
            set_value("User's favourite colour is blue", "green"),
            "User's favourite colour is green"
        );
        assert_eq!(
            replace_ci("Caroline moved to Paris in 2020", "paris", "Berlin").as_deref(),
            Some("Caroline moved to Berlin in 2020")
        );
        assert_eq!(replace_ci("Paris", "Lyon", "Berlin"), None);
    }
}
