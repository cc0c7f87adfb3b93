//! Deleting memories: the one implementation behind REST deletes (by ids, filter, user,
//! session or file) and delete events from the buses. It resolves what may be deleted — never
//! outside the caller's scope, never another user's memories when it acts for one user — and
//! removes it completely in the caller's transaction (`Store::delete`: record, vector,
//! postings, bitmaps, history, derived memories, covering KV caches), returning the receipt.

use store::heed::RwTxn;
use store::{DeleteReceipt, Filter, Scope, Store};

use crate::error::PipelineError;

/// Which memories.
#[derive(Debug, Clone)]
pub enum Target {
    /// These memory ids.
    Ids(Vec<String>),
    /// The memories each filter matches in its cube.
    Filters(Vec<(String, Filter)>),
}

/// What to do with ids the caller cannot see (unknown, out of scope, another cube or user).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Delete nothing and answer 404 naming them (REST: all-or-nothing).
    Refuse,
    /// Leave them alone and delete the rest (events: a bus cannot be answered).
    Skip,
}

/// A delete request, whatever interface it came from.
#[derive(Debug, Clone)]
pub struct Deletion {
    /// Which memories.
    pub target: Target,
    /// Who asks: memories outside the scope are never deleted.
    pub scope: Scope,
    /// Only memories of this cube (an event acts in its own cube).
    pub cube: Option<String>,
    /// Only memories of exactly this user (an event acts for its own user only; no patterns).
    pub user: Option<String>,
    /// Ids it cannot see.
    pub missing: Missing,
}

impl Deletion {
    fn admits(&self, r: &store::MemoryRecord) -> bool {
        self.cube.as_ref().is_none_or(|c| *c == r.cube_id)
            && self.user.as_ref().is_none_or(|u| *u == r.user_id)
    }
}

/// Resolves `d` in `wtxn` and deletes what it names; the receipt lists the cubes touched.
pub fn apply(
    store: &Store,
    wtxn: &mut RwTxn,
    d: &Deletion,
) -> Result<DeleteReceipt, PipelineError> {
    let ids: Vec<String> = match &d.target {
        Target::Ids(list) => {
            let mut ids = Vec::new();
            let mut missing = Vec::new();
            for id in list {
                match store.get_visible(wtxn, id, &d.scope)? {
                    Some(r) if d.admits(&r) => ids.push(r.id),
                    _ => missing.push(id.clone()),
                }
            }
            if !missing.is_empty() && d.missing == Missing::Refuse {
                return Err(PipelineError::NotFound(format!(
                    "memories not found: {}; nothing was deleted",
                    missing.join(", ")
                )));
            }
            ids
        }
        Target::Filters(per_cube) => {
            let mut ids = Vec::new();
            for (cube, f) in per_cube {
                if d.cube.as_ref().is_some_and(|c| c != cube) {
                    continue;
                }
                let f = match &d.user {
                    Some(u) => Filter::And(vec![
                        f.clone(),
                        Filter::Cond {
                            field: "user_id".into(),
                            op: store::filter::Op::Eq,
                            value: serde_json::Value::String(u.clone()),
                        },
                    ]),
                    None => f.clone(),
                };
                ids.extend(store.matching_ids(wtxn, cube, &f, &d.scope)?);
            }
            ids
        }
    };
    Ok(store.delete(wtxn, &ids)?)
}
