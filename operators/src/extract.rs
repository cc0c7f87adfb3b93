//! `extract` (rule-based, offline). Preference statements of the user ("I like/love/prefer/
//! hate/avoid …") become `PreferenceMemory` with `info.preference_type = "explicit_preference"`;
//! first-person facts of the user ("I work as …", "my sister lives in …") become `UserMemory`.
//! An LLM extractor plugs in later behind the same operator trait.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use store::MemoryType;

use crate::event::memory_id;
use crate::window::key_of;
use crate::{Collector, Draft, OpContext, Operator, Result};

/// Config of the extract stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExtractConfig {
    /// Extract preferences.
    pub preferences: bool,
    /// Extract user facts (from multi-sentence user turns).
    pub user_facts: bool,
}

impl Default for ExtractConfig {
    fn default() -> Self {
        ExtractConfig {
            preferences: true,
            user_facts: true,
        }
    }
}

impl ExtractConfig {
    /// Builds the operator.
    pub fn build(&self) -> ExtractOperator {
        ExtractOperator { cfg: self.clone() }
    }
}

/// The extract stage.
pub struct ExtractOperator {
    cfg: ExtractConfig,
}

const POSITIVE: &[&str] = &[
    "i like ",
    "i love ",
    "i prefer ",
    "i enjoy ",
    "i adore ",
    "i'm into ",
    "i am into ",
    "i'm a fan of ",
    "i am a fan of ",
    "my favorite ",
    "my favourite ",
    "i'd rather ",
    "i would rather ",
    "i really like ",
    "i really love ",
    "i really enjoy ",
];
/// Habits: an implicit preference is read from what the user keeps doing, not from what they
/// say they like ("I usually take the train", "I go climbing every weekend").
const HABITUAL_START: &[&str] = &[
    "i always ",
    "i usually ",
    "i often ",
    "i tend to ",
    "i keep ",
    "i mostly ",
    "i normally ",
    "i typically ",
    "i regularly ",
    "i frequently ",
];
const HABITUAL_ANYWHERE: &[&str] = &[
    " every morning",
    " every day",
    " every evening",
    " every night",
    " every week",
    " every weekend",
    " every month",
    " every summer",
    " every winter",
    " most weekends",
    " most mornings",
    " whenever i ",
];
const NEGATIVE: &[&str] = &[
    "i hate ",
    "i dislike ",
    "i avoid ",
    "i don't like ",
    "i do not like ",
    "i don't enjoy ",
    "i do not enjoy ",
    "i can't stand ",
    "i cannot stand ",
    "i'm not a fan of ",
    "i am not a fan of ",
    "i'm allergic to ",
    "i am allergic to ",
    "i never ",
    "i don't want ",
    "i do not want ",
    "i'm not into ",
    "i am not into ",
    "i don't eat ",
    "i do not eat ",
    "i'm vegetarian",
    "i am vegetarian",
    "i'm vegan",
    "i am vegan",
];
const FACTS: &[&str] = &[
    "i am ",
    "i'm ",
    "my name is ",
    "i work ",
    "i live ",
    "i have ",
    "i've been ",
    "i was born ",
    "i grew up ",
    "i moved ",
    "i studied ",
    "i graduated ",
    "my job ",
    "my wife ",
    "my husband ",
    "my partner ",
    "my son ",
    "my daughter ",
    "my kids ",
    "my children ",
    "my mom ",
    "my dad ",
    "my mother ",
    "my father ",
    "my sister ",
    "my brother ",
    "my dog ",
    "my cat ",
    "my birthday ",
];

/// Splits text into sentences.
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        cur.push(c);
        if matches!(c, '.' | '!' | '?' | '\n' | '。' | '！' | '？') {
            push_sentence(&mut out, &cur);
            cur.clear();
        }
    }
    push_sentence(&mut out, &cur);
    out
}

/// Appends a sentence; punctuation-only fragments ("!!", "...") stay with the previous one.
fn push_sentence(out: &mut Vec<String>, s: &str) {
    let s = s.trim();
    if s.is_empty() {
        return;
    }
    if !s.chars().any(char::is_alphanumeric) {
        if let Some(last) = out.last_mut() {
            last.push_str(s);
        }
        return;
    }
    out.push(s.to_string());
}

const FILLERS: &[&str] = &[
    "also",
    "really",
    "just",
    "actually",
    "definitely",
    "absolutely",
    "totally",
    "truly",
    "still",
    "honestly",
    "personally",
    "generally",
];

/// Lowercases, normalises apostrophes and drops filler adverbs ("I also really love" → "i love").
fn normalise(s: &str) -> String {
    let lower = s.to_lowercase().replace('’', "'");
    let words: Vec<&str> = lower
        .split_whitespace()
        .filter(|w| !FILLERS.contains(w))
        .collect();
    format!("{} ", words.join(" "))
}

/// Classifies a sentence as a preference: Some("like") / Some("dislike") / None.
pub fn preference_polarity(sentence: &str) -> Option<&'static str> {
    let s = normalise(sentence);
    let starts = |pats: &[&str]| {
        pats.iter().any(|p| {
            s.starts_with(p) || s.contains(&format!(", {p}")) || s.contains(&format!(" and {p}"))
        })
    };
    if starts(NEGATIVE) {
        Some("dislike")
    } else if starts(POSITIVE) {
        Some("like")
    } else {
        None
    }
}

/// Whether a sentence states a habit of the user (an implicit preference).
pub fn is_habit(sentence: &str) -> bool {
    let s = normalise(sentence);
    s.starts_with("i ")
        && (HABITUAL_START.iter().any(|p| s.starts_with(p))
            || HABITUAL_ANYWHERE.iter().any(|p| s.contains(p)))
}

fn is_fact(sentence: &str) -> bool {
    let s = normalise(sentence);
    s.split_whitespace().count() >= 4 && FACTS.iter().any(|p| s.starts_with(p))
}

impl Operator for ExtractOperator {
    type In = Draft;
    type Out = Draft;

    fn name(&self) -> &'static str {
        "extract"
    }

    fn process(
        &mut self,
        batch: Vec<Draft>,
        _ctx: &OpContext,
        out: &mut Collector<Draft>,
    ) -> Result<()> {
        for d in batch {
            let mut derived = Vec::new();
            let user_turns: Vec<_> = d
                .record
                .sources
                .iter()
                .filter(|s| s.kind == "chat" && s.role.as_deref() == Some("user"))
                .collect();
            for src in user_turns {
                let content = src.content.as_deref().unwrap_or_default();
                let speaker = src.name.as_deref().unwrap_or("user");
                let sents = sentences(content);
                for s in &sents {
                    let (ty, polarity) = match preference_polarity(s) {
                        Some(p) if self.cfg.preferences => (MemoryType::PreferenceMemory, Some(p)),
                        None if self.cfg.preferences && is_habit(s) => {
                            (MemoryType::PreferenceMemory, Some("habit"))
                        }
                        _ if self.cfg.user_facts && sents.len() > 1 && is_fact(s) => {
                            (MemoryType::UserMemory, None)
                        }
                        _ => continue,
                    };
                    derived.push((ty, polarity, format!("{speaker}: {s}"), src.clone()));
                }
            }
            let base_seq = 1000 + d.seq * 100;
            let parent = d.clone();
            out.collect(d);
            let d = parent;
            for (i, (ty, polarity, text, src)) in derived.into_iter().enumerate() {
                let mut r = d.record.clone();
                let seq = base_seq + i as u32;
                r.id = memory_id(&r.cube_id, &d.event_id, seq);
                r.key = Some(key_of(&text));
                r.memory = text;
                r.memory_type = ty;
                r.sources = vec![src];
                r.confidence = 0.9;
                r.tags.retain(|t| t != "mode:fast");
                r.tags.push("extract:rule".into());
                match polarity {
                    Some("habit") => {
                        r.info.insert(
                            "preference_type".into(),
                            Value::String("implicit_preference".into()),
                        );
                        r.info
                            .insert("preference".into(), Value::String("like".into()));
                    }
                    Some(p) => {
                        r.info.insert(
                            "preference_type".into(),
                            Value::String("explicit_preference".into()),
                        );
                        r.info.insert("preference".into(), Value::String(p.into()));
                    }
                    None => {}
                }
                r.info
                    .insert("derived_from".into(), Value::String(d.record.id.clone()));
                out.collect(Draft {
                    event_id: d.event_id.clone(),
                    seq,
                    record: r,
                    embedding: Vec::new(),
                    action: d.action.clone(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn habits_are_implicit() {
        assert!(is_habit("I usually take the train to work."));
        assert!(is_habit("I go climbing every weekend"));
        assert!(!is_habit("The train was late every day"));
        assert!(!is_habit("I love trains"));
    }

    #[test]
    fn preferences() {
        assert_eq!(
            preference_polarity("I avoid hotels with a bustling nightlife atmosphere."),
            Some("dislike")
        );
        assert_eq!(
            preference_polarity("I love hiking in the mountains"),
            Some("like")
        );
        assert_eq!(preference_polarity("Honestly, I prefer tea."), Some("like"));
        assert_eq!(preference_polarity("The weather is nice"), None);
        assert_eq!(
            preference_polarity("I also really love painting sunsets."),
            Some("like")
        );
        assert_eq!(
            preference_polarity("I do not like loud bars"),
            Some("dislike")
        );
        assert!(is_fact("I work as a nurse in Boston."));
        assert!(!is_fact("I am."));
        assert_eq!(
            sentences("Wow!! Really... ok? yes"),
            ["Wow!!", "Really...", "ok?", "yes"]
        );
    }
}
