//! `dedupe`: exact duplicates (content hash per cube) and near-duplicates (cosine above a
//! threshold, same bucket) are merged into the memory already stored: it is kept, its version
//! bumped, the merge recorded in its history, and the newer text becomes current so no newer
//! information is lost. Two texts that differ in a number, a date, a name or a negation are
//! different facts and are never merged.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use store::{Filter, MemoryRecord};

use crate::{Action, Collector, Draft, OpContext, Operator, Result};

/// Config of the dedupe stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupeConfig {
    /// Merge exact duplicates.
    pub exact: bool,
    /// Merge near-duplicates.
    pub near: bool,
    /// Cosine at or above which two memories are near-duplicates.
    pub near_threshold: f32,
}

impl Default for DedupeConfig {
    fn default() -> Self {
        DedupeConfig {
            exact: true,
            near: true,
            near_threshold: 0.95,
        }
    }
}

impl DedupeConfig {
    /// Builds the operator.
    pub fn build(&self) -> DedupeOperator {
        DedupeOperator { cfg: self.clone() }
    }
}

/// The dedupe stage.
pub struct DedupeOperator {
    cfg: DedupeConfig,
}

const NEGATIONS: &[&str] = &[
    "not", "no", "never", "none", "nobody", "nothing", "neither", "nor", "without", "cannot", "t",
];
const MONTHS: &[&str] = &[
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
    "jan",
    "feb",
    "mar",
    "apr",
    "jun",
    "jul",
    "aug",
    "sep",
    "sept",
    "oct",
    "nov",
    "dec",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "yesterday",
    "today",
    "tomorrow",
];

const NUMBER_WORDS: &[&str] = &[
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
    "thirty",
    "forty",
    "fifty",
    "sixty",
    "seventy",
    "eighty",
    "ninety",
    "hundred",
    "thousand",
    "million",
    "billion",
    "first",
    "second",
    "third",
    "fourth",
    "fifth",
    "last",
    "half",
    "dozen",
    "once",
    "twice",
    "both",
    "single",
    "couple",
];

/// The tokens that carry facts: numbers, dates, names (capitalised words not starting a
/// sentence) and the count of negations.
fn fact_signature(text: &str) -> (HashSet<String>, usize) {
    let mut sig = HashSet::new();
    let mut neg = 0;
    let mut sentence_start = true;
    for raw in text.split(|c: char| c.is_whitespace()) {
        let word: String = raw
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == '\'')
            .collect();
        let ends_sentence = raw.ends_with(['.', '!', '?', ':']);
        if word.is_empty() {
            continue;
        }
        let lower = word.to_lowercase();
        for part in lower.split('\'') {
            if NEGATIONS.contains(&part) {
                neg += 1;
            }
        }
        if lower.ends_with("n't") {
            neg += 1;
        }
        let is_number =
            word.chars().any(|c| c.is_ascii_digit()) || NUMBER_WORDS.contains(&lower.as_str());
        let is_date = MONTHS.contains(&lower.as_str());
        let is_name = !sentence_start && word.chars().next().is_some_and(char::is_uppercase);
        if is_number || is_date || is_name {
            sig.insert(lower.clone());
        }
        sentence_start = ends_sentence;
    }
    (sig, neg)
}

/// Whether two texts state different facts (so must never be merged).
pub fn different_facts(a: &str, b: &str) -> bool {
    let (sa, na) = fact_signature(a);
    let (sb, nb) = fact_signature(b);
    sa != sb || (na % 2) != (nb % 2) || na != nb
}

/// Builds the record kept when `new` is merged into `existing`: the newer text and info win,
/// tags, sources and file ids are united. The store's `update` then bumps the version and
/// appends the previous text to history.
pub fn merge_records(existing: &MemoryRecord, new: &MemoryRecord) -> MemoryRecord {
    let mut m = existing.clone();
    m.memory = new.memory.clone();
    m.key = new.key.clone().or(m.key);
    for t in &new.tags {
        if !m.tags.contains(t) {
            m.tags.push(t.clone());
        }
    }
    for s in &new.sources {
        if !m.sources.contains(s) {
            m.sources.push(s.clone());
        }
    }
    for f in &new.file_ids {
        if !m.file_ids.contains(f) {
            m.file_ids.push(f.clone());
        }
    }
    for (k, v) in &new.info {
        m.info.insert(k.clone(), v.clone());
    }
    m.event_time = new.event_time.or(m.event_time);
    m.confidence = m.confidence.max(new.confidence);
    m
}

impl Operator for DedupeOperator {
    type In = Draft;
    type Out = Draft;

    fn name(&self) -> &'static str {
        "dedupe"
    }

    fn process(
        &mut self,
        batch: Vec<Draft>,
        ctx: &OpContext,
        out: &mut Collector<Draft>,
    ) -> Result<()> {
        let txn = ctx.store.read_txn()?;
        // The store's nearest neighbours of every draft, probed once per (cube, bucket) for the
        // whole batch against the cube's RAM codes (a sign-code shortlist, exact rescoring).
        let mut near_hits: Vec<Vec<(u32, f32)>> = vec![Vec::new(); batch.len()];
        if self.cfg.near {
            let mut groups: HashMap<(&str, store::Bucket), Vec<usize>> = HashMap::new();
            for (i, d) in batch.iter().enumerate() {
                if !d.embedding.is_empty() && d.action != Action::Skip {
                    groups
                        .entry((d.record.cube_id.as_str(), d.record.memory_type.bucket()))
                        .or_default()
                        .push(i);
                }
            }
            for ((cube, bucket), idx) in groups {
                let types: Vec<_> = store::MemoryType::ALL
                    .into_iter()
                    .filter(|t| t.bucket() == bucket)
                    .collect();
                let cands = ctx
                    .store
                    .candidates(&txn, cube, Some(&types), &Filter::True)?;
                if cands.is_empty() {
                    continue;
                }
                let queries: Vec<&[f32]> =
                    idx.iter().map(|&i| batch[i].embedding.as_slice()).collect();
                let hits = ctx.store.near_neighbours_in(
                    &txn,
                    cube,
                    &queries,
                    3,
                    &cands,
                    self.cfg.near_threshold,
                )?;
                for (i, h) in idx.into_iter().zip(hits) {
                    near_hits[i] = h;
                }
            }
        }
        // Drafts earlier in this batch: hash → id per cube, and per (cube, bucket) their
        // (id, embedding, text).
        let mut seen_hash: HashMap<(String, [u8; 16]), String> = HashMap::new();
        type Seen = Vec<(String, Vec<f32>, String)>;
        let mut seen: HashMap<(String, store::Bucket), Seen> = HashMap::new();
        for (i, mut d) in batch.into_iter().enumerate() {
            let r = &d.record;
            if ctx.store.internal_id(&txn, &r.id)?.is_some() {
                d.action = Action::Skip;
                out.collect(d);
                continue;
            }
            let h = store::model::content_hash(r.memory_type.bucket(), &r.memory);
            if self.cfg.exact {
                let existing = match ctx.store.find_by_content(
                    &txn,
                    &r.cube_id,
                    r.memory_type.bucket(),
                    &r.memory,
                )? {
                    Some(id) => ctx.store.record(&txn, id)?.map(|x| x.id),
                    None => None,
                };
                if let Some(target) =
                    existing.or_else(|| seen_hash.get(&(r.cube_id.clone(), h)).cloned())
                {
                    d.action = Action::Merge {
                        target,
                        reason: "duplicate",
                    };
                    out.collect(d);
                    continue;
                }
            }
            if self.cfg.near && !d.embedding.is_empty() {
                let bucket = r.memory_type.bucket();
                let mut best: Option<(String, f32, String)> = None;
                for &(id, cos) in &near_hits[i] {
                    if cos >= self.cfg.near_threshold
                        && let Some(rec) = ctx.store.record(&txn, id)?
                        && !different_facts(&rec.memory, &r.memory)
                        && best.as_ref().is_none_or(|b| cos > b.1)
                    {
                        best = Some((rec.id, cos, rec.memory));
                    }
                }
                let earlier = seen.get(&(r.cube_id.clone(), bucket));
                for (id, emb, text) in earlier.into_iter().flatten() {
                    let cos = store::vector::dot(emb, &d.embedding);
                    if cos >= self.cfg.near_threshold
                        && !different_facts(text, &r.memory)
                        && best.as_ref().is_none_or(|x| cos > x.1)
                    {
                        best = Some((id.clone(), cos, text.clone()));
                    }
                }
                if let Some((target, _, _)) = best {
                    d.action = Action::Merge {
                        target,
                        reason: "near_duplicate",
                    };
                    out.collect(d);
                    continue;
                }
            }
            seen_hash.insert((r.cube_id.clone(), h), r.id.clone());
            seen.entry((r.cube_id.clone(), r.memory_type.bucket()))
                .or_default()
                .push((r.id.clone(), d.embedding.clone(), r.memory.clone()));
            out.collect(d);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::different_facts;

    #[test]
    fn facts_differ() {
        assert!(different_facts("I have 2 cats", "I have 3 cats"));
        assert!(different_facts("I have two cats", "I have three cats"));
        assert!(different_facts("I like coffee", "I don't like coffee"));
        assert!(different_facts(
            "We met Alice at the park",
            "We met Bob at the park"
        ));
        assert!(different_facts("Moved on 8 May", "Moved on 9 May"));
        assert!(!different_facts(
            "I really like coffee.",
            "I really like coffee!"
        ));
        assert!(!different_facts(
            "Alice likes tea a lot",
            "Alice likes tea a lot indeed"
        ));
    }
}
