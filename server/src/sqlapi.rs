//! SQL wiring: the engine over the service's store and embedder, sessions from API keys, and
//! `search()` bound to the caller's key (the same path as `/product/search`).

use std::sync::{Arc, Weak};

use sql::{Scope, SearchArgs, SearchBackend, SearchRow, Session, SqlError};

use crate::api::SearchRequest;
use crate::auth::Principal;
use crate::error::ServerError;
use crate::service::Memos;

/// `search()` as the caller: runs [`Memos::search_hits`] with the caller's key. Holds the
/// service weakly, so an open SQL session (a Postgres connection) never keeps a stopping
/// service, and its pipeline, alive.
pub struct KeySearch {
    memos: Weak<Memos>,
    principal: Principal,
}

fn sql_error(e: ServerError) -> SqlError {
    match e {
        ServerError::Forbidden(m) | ServerError::Unauthorized(m) => SqlError::Forbidden(m),
        ServerError::BadRequest(m) | ServerError::TooLarge(m) => SqlError::Invalid(m),
        ServerError::Store(s) => SqlError::Store(s),
        other => SqlError::Search(other.to_string()),
    }
}

#[async_trait::async_trait]
impl SearchBackend for KeySearch {
    async fn search(&self, args: SearchArgs) -> sql::Result<Vec<SearchRow>> {
        let req = SearchRequest {
            query: args.query,
            top_k: args.top_k,
            readable_cube_ids: Some(args.cubes),
            filter: args.filter,
            ..SearchRequest::default()
        };
        let memos = self
            .memos
            .upgrade()
            .ok_or_else(|| SqlError::Search("the service is shutting down".into()))?;
        let hits = memos
            .search_hits(&req, &self.principal)
            .await
            .map_err(sql_error)?;
        let mut rows = Vec::new();
        for b in hits.buckets {
            for (i, h) in b.hits.into_iter().enumerate() {
                if !self.principal.allows_user(&h.record.user_id) {
                    continue;
                }
                rows.push(SearchRow {
                    bucket: b.name.to_string(),
                    rank: i + 1,
                    score: h.score,
                    vector_score: h.vector_score,
                    bm25_score: h.lexical_score,
                    record: h.record,
                });
            }
        }
        Ok(rows)
    }
}

/// What a key may see through SQL: its cube and user patterns; store-wide tables
/// (`dead_letters`) only for keys that see every cube and user.
pub fn scope_of(p: &Principal) -> Scope {
    let all = |v: &[String]| v.iter().any(|x| x == "*");
    Scope {
        cubes: (!all(&p.cubes)).then(|| p.cubes.clone()),
        users: (!all(&p.users)).then(|| p.users.clone()),
        system: p.admin || (all(&p.cubes) && all(&p.users)),
        name: p.name.clone(),
    }
}

/// The SQL session of a caller; 403 for keys that may not read.
pub fn session(m: &Arc<Memos>, p: &Principal) -> Result<Session, ServerError> {
    if !p.read {
        return Err(ServerError::Forbidden(format!(
            "key \"{}\" may not read",
            p.name
        )));
    }
    Ok(Session {
        scope: scope_of(p),
        search: Arc::new(KeySearch {
            memos: Arc::downgrade(m),
            principal: p.clone(),
        }),
        guard: None,
    })
}

/// A Postgres session's per-statement check: the key it logged in with is re-authenticated
/// (a revoked key stops working on open connections) and takes a token of its rate limit, as
/// every HTTP request does.
struct KeyGuard {
    memos: Weak<Memos>,
    key: String,
}

impl sql::StatementGuard for KeyGuard {
    fn admit(&self) -> sql::Result<()> {
        let m = self
            .memos
            .upgrade()
            .ok_or_else(|| SqlError::Search("the service is shutting down".into()))?;
        let p = m
            .auth
            .authenticate(Some(&format!("Token {}", self.key)))
            .map_err(|_| SqlError::Revoked("the API key of this session was revoked".into()))?;
        m.auth
            .admit(&p)
            .map_err(|e| SqlError::RateLimited(e.to_string()))
    }
}

/// Postgres logins: the password is an API key (or loopback trust in open mode). Holds the
/// service weakly: open connections never keep a stopping service alive.
pub struct PgKeys(pub Weak<Memos>);

impl sql::pg::PgAuth for PgKeys {
    fn requires_key(&self) -> bool {
        self.0.upgrade().is_none_or(|m| !m.auth.is_open())
    }

    fn session_for_key(&self, key: &str) -> Option<Session> {
        let m = self.0.upgrade()?;
        let p = m.auth.authenticate(Some(&format!("Token {key}"))).ok()?;
        let mut s = session(&m, &p).ok()?;
        s.guard = Some(Arc::new(KeyGuard {
            memos: self.0.clone(),
            key: key.to_string(),
        }));
        Some(s)
    }

    fn observe(&self, elapsed: std::time::Duration, ok: bool) {
        if let Some(m) = self.0.upgrade() {
            m.metrics.sql("postgres", elapsed, ok);
        }
    }

    fn open_session(&self) -> Session {
        let p = Principal::local();
        Session {
            scope: scope_of(&p),
            search: Arc::new(KeySearch {
                memos: self.0.clone(),
                principal: p,
            }),
            guard: None,
        }
    }
}

/// Serves the Postgres wire protocol until `shutdown`; refuses a non-loopback address in open
/// mode, as the REST API does.
pub async fn serve_pg(
    listener: tokio::net::TcpListener,
    m: Arc<Memos>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    if m.auth.is_open() && !addr.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("refusing to serve Postgres on {addr} without API keys: bind 127.0.0.1"),
        ));
    }
    let engine = m.sql.clone();
    let keys = Arc::new(PgKeys(Arc::downgrade(&m)));
    drop(m);
    sql::pg::serve(listener, engine, keys, shutdown).await;
    Ok(())
}
