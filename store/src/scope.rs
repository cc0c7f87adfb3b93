//! What a caller may see: cube patterns × user patterns. Every interface (REST, cloud shapes,
//! SQL tables and table functions, pgwire, MCP, bus search, KV, knowledge bases, export) turns
//! its caller into a [`Scope`] and reads through it, so a memory outside the caller's users is
//! invisible in the same way everywhere: it is never returned, never counted, never changed, and
//! asking for it by id is answered exactly like asking for an id that does not exist.
//! Knowledge bases are shared documents: user patterns do not narrow them (cube patterns do).

use heed::RoTxn;
use roaring::RoaringBitmap;

use crate::model::MemoryRecord;
use crate::{Result, Store, bitmap_from, field_key};

/// `*` matches anything, `prefix*` a prefix, anything else itself.
pub fn pattern_matches(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

/// Cube and user patterns; `None` = every cube (user).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scope {
    /// Cube patterns (`*`, `prefix*`, exact); `None` = every cube.
    pub cubes: Option<Vec<String>>,
    /// User patterns; `None` = every user.
    pub users: Option<Vec<String>>,
}

fn restrict(patterns: &[String]) -> Option<Vec<String>> {
    (!patterns.iter().any(|p| p == "*")).then(|| patterns.to_vec())
}

impl Scope {
    /// Sees everything.
    pub fn all() -> Scope {
        Scope::default()
    }

    /// From pattern lists (a `*` among them lifts that restriction).
    pub fn new(cubes: &[String], users: &[String]) -> Scope {
        Scope {
            cubes: restrict(cubes),
            users: restrict(users),
        }
    }

    /// Whether `cube` is inside the scope.
    pub fn allows_cube(&self, cube: &str) -> bool {
        self.cubes
            .as_ref()
            .is_none_or(|p| p.iter().any(|p| pattern_matches(p, cube)))
    }

    /// Whether memories of `user` are inside the scope.
    pub fn allows_user(&self, user: &str) -> bool {
        self.users
            .as_ref()
            .is_none_or(|p| p.iter().any(|p| pattern_matches(p, user)))
    }

    /// Whether every user of a visible cube is visible (no per-record filtering needed).
    pub fn all_users(&self) -> bool {
        self.users.is_none()
    }

    /// Whether the scope covers this memory: its cube and its user.
    pub fn sees(&self, r: &MemoryRecord) -> bool {
        self.allows_cube(&r.cube_id) && self.allows_user(&r.user_id)
    }
}

impl Store {
    /// The ids of `cube` (any status) that `scope` sees, from the per-cube `user_id` bitmaps
    /// (no record is decoded); `None` when the scope sees every memory of the cube (no
    /// restriction to apply). A cube outside the scope yields an empty set.
    pub fn scope_ids(
        &self,
        txn: &RoTxn,
        cube: &str,
        scope: &Scope,
    ) -> Result<Option<RoaringBitmap>> {
        if !scope.allows_cube(cube) {
            return Ok(Some(RoaringBitmap::new()));
        }
        if scope.all_users() || self.is_shared(txn, cube)? {
            return Ok(None);
        }
        let prefix = field_key(cube, "user_id", "");
        let mut out = RoaringBitmap::new();
        for item in self.fields.prefix_iter(txn, &prefix)? {
            let (k, v) = item?;
            let user = std::str::from_utf8(&k[prefix.len()..]).unwrap_or("");
            if scope.allows_user(user) {
                out |= bitmap_from(Some(v))?;
            }
        }
        Ok(Some(out))
    }

    /// Whether `cube` is shared by everyone who may use it: a knowledge base (documents, not a
    /// user's memories), whose chunks user patterns do not narrow.
    pub fn is_shared(&self, txn: &RoTxn, cube: &str) -> Result<bool> {
        Ok(self
            .cube(txn, cube)?
            .is_some_and(|c| c.kind == "knowledgebase"))
    }

    /// Whether `scope` sees memory `r` (read in `txn`): its cube, and its user unless the cube
    /// is a knowledge base.
    pub fn sees(&self, txn: &RoTxn, scope: &Scope, r: &MemoryRecord) -> Result<bool> {
        Ok(scope.allows_cube(&r.cube_id)
            && (scope.allows_user(&r.user_id) || self.is_shared(txn, &r.cube_id)?))
    }

    /// Memory `uuid` if `scope` sees it; `None` both when it does not exist and when it is out
    /// of scope (callers answer both the same way).
    pub fn get_visible(
        &self,
        txn: &RoTxn,
        uuid: &str,
        scope: &Scope,
    ) -> Result<Option<MemoryRecord>> {
        match self.get(txn, uuid)? {
            Some(r) if self.sees(txn, scope, &r)? => Ok(Some(r)),
            _ => Ok(None),
        }
    }

    /// `ids` (of `cube`) narrowed to what `scope` sees.
    pub fn restrict(
        &self,
        txn: &RoTxn,
        cube: &str,
        scope: &Scope,
        mut ids: RoaringBitmap,
    ) -> Result<RoaringBitmap> {
        if let Some(visible) = self.scope_ids(txn, cube, scope)? {
            ids &= visible;
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_scopes() {
        assert!(pattern_matches("*", "x"));
        assert!(pattern_matches("team-*", "team-a"));
        assert!(!pattern_matches("team-*", "tea"));
        assert!(pattern_matches("alice", "alice"));
        assert!(!pattern_matches("alice", "alice2"));
        let s = Scope::new(&["c*".into()], &["alice".into()]);
        assert!(s.allows_cube("c1") && !s.allows_cube("d1"));
        assert!(s.allows_user("alice") && !s.allows_user("bob") && !s.allows_user(""));
        assert!(!s.all_users());
        let all = Scope::new(&["*".into()], &["bob".into(), "*".into()]);
        assert_eq!(all, Scope::all());
        assert!(all.all_users() && all.allows_cube("anything"));
    }
}
