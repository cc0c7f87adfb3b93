//! The MemOS filter grammar (memos-spec §4.8), as a superset: `and`/`or` may nest, `not` is
//! accepted, and a malformed filter is an error, never silently ignored.
//!
//! ```text
//! FILTER    := null | {} | LOGIC | CONDITION | PER_CUBE
//! LOGIC     := {"and": [FILTER...]} | {"or": [FILTER...]} | {"not": FILTER}
//! CONDITION := {FIELD: VALUE | {OP: VALUE, ...}, ...}      (several fields = AND)
//! OP        := gt | lt | gte | lte | in | nin | contains | like | nolike | = | eq | != | ne
//! PER_CUBE  := {"<cube_id>": FILTER, ...}                  (keys are the request's cube ids)
//! ```
//! Unknown fields map to `info.<field>`.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::error::{Result, StoreError};
use crate::model::MemoryRecord;
use crate::time::parse_time;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Equality (array field: contains the value).
    Eq,
    /// Inequality.
    Ne,
    /// Greater than.
    Gt,
    /// Less than.
    Lt,
    /// Greater or equal.
    Gte,
    /// Less or equal.
    Lte,
    /// Value in list (array field: any overlap).
    In,
    /// Value not in list.
    Nin,
    /// Array contains (string field: substring).
    Contains,
    /// Case-insensitive substring (`%` wildcards allowed).
    Like,
    /// Negated `like`.
    NoLike,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "=" | "eq" => Op::Eq,
            "!=" | "ne" => Op::Ne,
            "gt" => Op::Gt,
            "lt" => Op::Lt,
            "gte" => Op::Gte,
            "lte" => Op::Lte,
            "in" => Op::In,
            "nin" | "not_in" => Op::Nin,
            "contains" => Op::Contains,
            "like" => Op::Like,
            "nolike" | "not_like" => Op::NoLike,
            _ => return None,
        })
    }
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Matches everything.
    True,
    /// All must match.
    And(Vec<Filter>),
    /// Any must match.
    Or(Vec<Filter>),
    /// Negation.
    Not(Box<Filter>),
    /// One field comparison.
    Cond {
        /// Record field or `info.<k>`.
        field: String,
        /// Operator.
        op: Op,
        /// Operand.
        value: Value,
    },
}

/// Fields with per-cube bitmap indexes: equality and `in` on them never scan records.
pub const INDEXED_FIELDS: &[&str] = &[
    "user_id",
    "session_id",
    "memory_type",
    "status",
    "agent_id",
    "app_id",
];

const TOP_FIELDS: &[&str] = &[
    "id",
    "memory",
    "cube_id",
    "user_name",
    "mem_cube_id",
    "user_id",
    "session_id",
    "conversation_id",
    "agent_id",
    "app_id",
    "memory_type",
    "status",
    "key",
    "tags",
    "file_ids",
    "source",
    "confidence",
    "version",
    "event_id",
    "created_at",
    "updated_at",
    "event_time",
    "chat_time",
];

fn bad(msg: impl Into<String>) -> StoreError {
    StoreError::InvalidFilter(msg.into())
}

fn normalise_field(f: &str) -> String {
    let f = match f {
        "conversation_id" => "session_id",
        "user_name" | "mem_cube_id" => "cube_id",
        other => other,
    };
    if f.starts_with("info.") || TOP_FIELDS.contains(&f) {
        f.to_string()
    } else {
        format!("info.{f}")
    }
}

impl Filter {
    /// Parses a filter for one cube. `cube_ids` are the cubes of the request: an object whose
    /// keys are all among them is the per-cube form, and the entry for `cube` is used.
    pub fn parse_for_cube(v: &Value, cube: &str, cube_ids: &[String]) -> Result<Filter> {
        if let Value::Object(m) = v
            && !m.is_empty()
            && m.keys().all(|k| cube_ids.iter().any(|c| c == k))
            && !m.keys().any(|k| k == "and" || k == "or" || k == "not")
        {
            return match m.get(cube) {
                Some(f) => Filter::parse(f),
                None => Ok(Filter::True),
            };
        }
        Filter::parse(v)
    }

    /// Parses a filter (see the module docs for the grammar).
    pub fn parse(v: &Value) -> Result<Filter> {
        match v {
            Value::Null => Ok(Filter::True),
            Value::Object(m) => Self::parse_object(m),
            other => Err(bad(format!("a filter must be an object, got {other}"))),
        }
    }

    fn parse_list(v: &Value, name: &str) -> Result<Vec<Filter>> {
        let Value::Array(items) = v else {
            return Err(bad(format!("\"{name}\" takes a list of conditions")));
        };
        if items.is_empty() {
            return Err(bad(format!("\"{name}\" has an empty list")));
        }
        items
            .iter()
            .map(|i| match i {
                Value::Object(_) => Filter::parse(i),
                other => Err(bad(format!(
                    "\"{name}\" items must be objects, got {other}"
                ))),
            })
            .collect()
    }

    fn parse_object(m: &Map<String, Value>) -> Result<Filter> {
        let mut parts = Vec::new();
        for (k, v) in m {
            match k.as_str() {
                "and" => parts.push(Filter::And(Self::parse_list(v, "and")?)),
                "or" => parts.push(Filter::Or(Self::parse_list(v, "or")?)),
                "not" => parts.push(Filter::Not(Box::new(Filter::parse(v)?))),
                field => {
                    if field.is_empty() {
                        return Err(bad("empty field name"));
                    }
                    let field = normalise_field(field);
                    match v {
                        Value::Object(ops) => {
                            if ops.is_empty() {
                                return Err(bad(format!("no operator given for \"{field}\"")));
                            }
                            for (op, val) in ops {
                                let op = Op::parse(op).ok_or_else(|| {
                                    bad(format!(
                                        "unknown operator \"{op}\" for \"{field}\" (use gt, lt, gte, lte, in, nin, contains, like, nolike, =, !=)"
                                    ))
                                })?;
                                if matches!(op, Op::In | Op::Nin) && !val.is_array() {
                                    return Err(bad(format!("\"in\" on \"{field}\" needs a list")));
                                }
                                if matches!(op, Op::Gt | Op::Lt | Op::Gte | Op::Lte)
                                    && !(val.is_number() || val.is_string())
                                {
                                    return Err(bad(format!(
                                        "range operator on \"{field}\" needs a number or a date string"
                                    )));
                                }
                                parts.push(Filter::Cond {
                                    field: field.clone(),
                                    op,
                                    value: val.clone(),
                                });
                            }
                        }
                        Value::Array(_) => parts.push(Filter::Cond {
                            field,
                            op: Op::In,
                            value: v.clone(),
                        }),
                        _ => parts.push(Filter::Cond {
                            field,
                            op: Op::Eq,
                            value: v.clone(),
                        }),
                    }
                }
            }
        }
        Ok(match parts.len() {
            0 => Filter::True,
            1 => parts.pop().expect("one part"),
            _ => Filter::And(parts),
        })
    }

    /// Whether the filter restricts nothing.
    pub fn is_true(&self) -> bool {
        matches!(self, Filter::True)
    }

    /// Evaluates the filter on a record.
    pub fn matches(&self, r: &MemoryRecord) -> bool {
        match self {
            Filter::True => true,
            Filter::And(v) => v.iter().all(|f| f.matches(r)),
            Filter::Or(v) => v.iter().any(|f| f.matches(r)),
            Filter::Not(f) => !f.matches(r),
            Filter::Cond { field, op, value } => {
                let actual = r.field(field);
                eval(field, *op, actual.as_ref(), value)
            }
        }
    }

    /// If this filter is an equality/`in` on an indexed field, the field and the values.
    pub fn indexed_values(&self) -> Option<(&str, Vec<String>)> {
        match self {
            Filter::Cond { field, op, value } if INDEXED_FIELDS.contains(&field.as_str()) => {
                match (op, value) {
                    (Op::Eq, v) => scalar_string(v).map(|s| (field.as_str(), vec![s])),
                    (Op::In, Value::Array(a)) => {
                        let vals: Option<Vec<String>> = a.iter().map(scalar_string).collect();
                        vals.map(|v| (field.as_str(), v))
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// Whether the whole filter can be answered from the bitmap indexes.
    pub fn fully_indexed(&self) -> bool {
        match self {
            Filter::True => true,
            Filter::And(v) | Filter::Or(v) => v.iter().all(Filter::fully_indexed),
            Filter::Not(f) => f.fully_indexed(),
            Filter::Cond { .. } => self.indexed_values().is_some(),
        }
    }
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn loose_eq(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    match (a, b) {
        (Value::Number(x), Value::String(s)) | (Value::String(s), Value::Number(x)) => {
            s.parse::<f64>().ok() == x.as_f64()
        }
        (Value::Bool(x), Value::String(s)) | (Value::String(s), Value::Bool(x)) => {
            s == &x.to_string()
        }
        _ => false,
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn compare(field: &str, a: &Value, b: &Value) -> Option<Ordering> {
    let is_time = field.ends_with("_at") || field.ends_with("_time") || field.ends_with("date");
    if !is_time && let (Some(x), Some(y)) = (as_f64(a), as_f64(b)) {
        return x.partial_cmp(&y);
    }
    if let (Value::String(x), Value::String(y)) = (a, b) {
        if let (Some(tx), Some(ty)) = (parse_time(x), parse_time(y)) {
            return Some(tx.cmp(&ty));
        }
        return Some(x.cmp(y));
    }
    None
}

fn like(hay: &str, pat: &str) -> bool {
    let hay = hay.to_lowercase();
    let pat = pat.to_lowercase();
    let parts: Vec<&str> = pat.split('%').filter(|p| !p.is_empty()).collect();
    let mut pos = 0;
    for p in parts {
        match hay[pos..].find(p) {
            Some(i) => pos += i + p.len(),
            None => return false,
        }
    }
    true
}

fn eval(field: &str, op: Op, actual: Option<&Value>, v: &Value) -> bool {
    let Some(actual) = actual else {
        // A missing field only satisfies negative operators.
        return matches!(op, Op::Ne | Op::Nin | Op::NoLike);
    };
    match op {
        Op::Eq => match actual {
            Value::Array(items) if !v.is_array() => items.iter().any(|i| loose_eq(i, v)),
            _ => loose_eq(actual, v),
        },
        Op::Ne => !eval(field, Op::Eq, Some(actual), v),
        Op::Gt => compare(field, actual, v) == Some(Ordering::Greater),
        Op::Lt => compare(field, actual, v) == Some(Ordering::Less),
        Op::Gte => matches!(
            compare(field, actual, v),
            Some(Ordering::Greater | Ordering::Equal)
        ),
        Op::Lte => matches!(
            compare(field, actual, v),
            Some(Ordering::Less | Ordering::Equal)
        ),
        Op::In => {
            let Value::Array(list) = v else { return false };
            match actual {
                Value::Array(items) => items.iter().any(|i| list.iter().any(|l| loose_eq(i, l))),
                a => list.iter().any(|l| loose_eq(a, l)),
            }
        }
        Op::Nin => !eval(field, Op::In, Some(actual), v),
        Op::Contains => match (actual, v) {
            (Value::Array(items), Value::Array(want)) => {
                want.iter().all(|w| items.iter().any(|i| loose_eq(i, w)))
            }
            (Value::Array(items), w) => items.iter().any(|i| loose_eq(i, w)),
            (Value::String(s), Value::String(w)) => s.contains(w.as_str()),
            _ => false,
        },
        Op::Like => match (actual, v) {
            (Value::String(s), Value::String(p)) => like(s, p),
            (Value::Array(items), Value::String(p)) => {
                items.iter().any(|i| i.as_str().is_some_and(|s| like(s, p)))
            }
            _ => false,
        },
        Op::NoLike => !eval(field, Op::Like, Some(actual), v),
    }
}
