//! API keys, scopes and rate limits.
//!
//! A key is configured (`[[auth.keys]]`) or created through `POST /admin/keys` with the master
//! key (then persisted in LMDB, only its SHA-256). A key is scoped to cube and user patterns and
//! to read and/or write. Requests carry `Authorization: Token <key>` (the MemOS cloud scheme) or
//! `Bearer <key>`. With no key and no master key configured the server is in open mode and only
//! listens on loopback addresses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use store::ApiKeyRecord;

use crate::error::ServerError;

/// `[auth]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Master key: admin endpoints and full access. Empty = none.
    pub master_key: String,
    /// Default requests per minute per key (0 = unlimited).
    pub rate_limit_per_minute: u32,
    /// Configured keys.
    pub keys: Vec<KeyConfig>,
    /// Secret that signs the caller's scope on searches forwarded to the owner of a cube (a
    /// scaled-out Kafka deployment); every process of the deployment needs the same one. Empty
    /// = derived from the master key and the configured keys (the same in every process that
    /// shares the configuration). The caller's API key never travels in a message.
    #[serde(default)]
    pub forward_secret: String,
}

fn any() -> Vec<String> {
    vec!["*".into()]
}
fn yes() -> bool {
    true
}

/// One configured key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Name (shown in logs and listings).
    pub name: String,
    /// The secret.
    #[serde(default)]
    pub key: String,
    /// Or its hex SHA-256.
    #[serde(default)]
    pub key_sha256: String,
    /// Cube patterns.
    #[serde(default = "any")]
    pub cubes: Vec<String>,
    /// User patterns.
    #[serde(default = "any")]
    pub users: Vec<String>,
    /// May read.
    #[serde(default = "yes")]
    pub read: bool,
    /// May write.
    #[serde(default = "yes")]
    pub write: bool,
    /// Own rate limit (0 = the default).
    #[serde(default)]
    pub rate_limit_per_minute: u32,
}

impl KeyConfig {
    /// A key that may read and write every cube for every user, at the server's rate limit.
    pub fn full(name: &str, key: &str) -> KeyConfig {
        KeyConfig {
            name: name.into(),
            key: key.into(),
            key_sha256: String::new(),
            cubes: any(),
            users: any(),
            read: true,
            write: true,
            rate_limit_per_minute: 0,
        }
    }
}

/// Read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Search, get, export.
    Read,
    /// Add, delete, feedback, cube and knowledge-base changes.
    Write,
}

/// Who is calling, and what they may touch.
#[derive(Debug, Clone, Serialize)]
pub struct Principal {
    /// Key id (`open` in open mode, `master` for the master key).
    pub id: String,
    /// Key name.
    pub name: String,
    /// Cube patterns.
    pub cubes: Vec<String>,
    /// User patterns.
    pub users: Vec<String>,
    /// May read.
    pub read: bool,
    /// May write.
    pub write: bool,
    /// May use /admin.
    pub admin: bool,
    /// Requests per minute (0 = unlimited).
    pub rate_limit_per_minute: u32,
}

fn matches(patterns: &[String], s: &str) -> bool {
    patterns.iter().any(|p| store::scope::pattern_matches(p, s))
}

impl Principal {
    fn full(id: &str, admin: bool, rate: u32) -> Principal {
        Principal {
            id: id.into(),
            name: id.into(),
            cubes: any(),
            users: any(),
            read: true,
            write: true,
            admin,
            rate_limit_per_minute: rate,
        }
    }

    /// In-process callers (CLI, evaluation): everything, no rate limit.
    pub fn local() -> Principal {
        Principal::full("local", true, 0)
    }

    /// Whether this caller may use `cube`.
    pub fn allows_cube(&self, cube: &str) -> bool {
        matches(&self.cubes, cube)
    }

    /// Whether this caller may act for `user`.
    pub fn allows_user(&self, user: &str) -> bool {
        matches(&self.users, user)
    }

    /// The cubes × users this caller sees, as the store applies it to results
    /// ([`store::Store::get_visible`], [`store::Store::restrict`]).
    pub fn scope(&self) -> store::Scope {
        store::Scope::new(&self.cubes, &self.users)
    }

    /// Whether this caller sees every user's memories in the cubes it may use.
    pub fn all_users(&self) -> bool {
        self.users.iter().any(|u| u == "*")
    }

    /// 403 for a key limited to some users asking for something made of a whole cube (its
    /// KV cache, dropping a knowledge base): that would reveal or change other users' memories.
    pub fn check_whole_cube(&self, what: &str) -> Result<(), ServerError> {
        if self.all_users() {
            Ok(())
        } else {
            Err(ServerError::Forbidden(format!(
                "key \"{}\" is limited to some users; {what} covers every user of the cube",
                self.name
            )))
        }
    }

    /// 403 unless the caller has `access` on every cube and may act for `user`.
    pub fn check(
        &self,
        access: Access,
        cubes: &[String],
        user: Option<&str>,
    ) -> Result<(), ServerError> {
        let (ok, what) = match access {
            Access::Read => (self.read, "read"),
            Access::Write => (self.write, "write"),
        };
        if !ok {
            return Err(ServerError::Forbidden(format!(
                "key \"{}\" may not {what}",
                self.name
            )));
        }
        if let Some(c) = cubes.iter().find(|c| !self.allows_cube(c)) {
            return Err(ServerError::Forbidden(format!(
                "key \"{}\" may not {what} cube \"{c}\"",
                self.name
            )));
        }
        if let Some(u) = user
            && !self.allows_user(u)
        {
            return Err(ServerError::Forbidden(format!(
                "key \"{}\" may not act for user \"{u}\"",
                self.name
            )));
        }
        Ok(())
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Keys, the master key and per-key token buckets.
pub struct Auth {
    open: bool,
    forward_key: Vec<u8>,
    default_rate: u32,
    master_sha: Option<String>,
    keys: RwLock<HashMap<String, Arc<Principal>>>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// The Kafka header that carries a forwarded search's signed scope.
pub const FORWARD_HEADER: &str = "memos-principal";

#[derive(Serialize, Deserialize)]
struct ForwardClaims {
    id: String,
    name: String,
    cubes: Vec<String>,
    users: Vec<String>,
    /// Expiry, unix micros.
    exp: i64,
}

/// Hex SHA-256 of a secret.
pub fn key_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn from_record(r: &ApiKeyRecord) -> Principal {
    Principal {
        id: r.id.clone(),
        name: r.name.clone(),
        cubes: r.cubes.clone(),
        users: r.users.clone(),
        read: r.read,
        write: r.write,
        admin: false,
        rate_limit_per_minute: r.rate_limit_per_minute,
    }
}

impl Auth {
    /// Builds the key table from the configuration, `MEMOS_API_KEYS` (`env_keys`) and the keys
    /// stored in LMDB.
    pub fn new(
        cfg: &AuthConfig,
        env_keys: &str,
        stored: &[ApiKeyRecord],
    ) -> Result<Auth, ServerError> {
        let mut keys = HashMap::new();
        let mut configured = cfg.keys.clone();
        for (i, entry) in env_keys
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .enumerate()
        {
            let (key, cubes) = match entry.split_once(':') {
                Some((k, c)) => (k, c.split('+').map(|c| c.trim().to_string()).collect()),
                None => (entry, any()),
            };
            if key.is_empty() || cubes.iter().any(String::is_empty) {
                return Err(ServerError::Config(format!(
                    "MEMOS_API_KEYS entry {} is not KEY or KEY:CUBE+CUBE",
                    i + 1
                )));
            }
            configured.push(KeyConfig {
                cubes,
                ..KeyConfig::full(&format!("env-{}", i + 1), key)
            });
        }
        for k in &configured {
            let sha = match (k.key.is_empty(), k.key_sha256.is_empty()) {
                (false, true) => key_hash(&k.key),
                (true, false) => k.key_sha256.to_lowercase(),
                _ => {
                    return Err(ServerError::Config(format!(
                        "auth key \"{}\" needs exactly one of key or key_sha256",
                        k.name
                    )));
                }
            };
            let p = Principal {
                id: format!("cfg:{}", k.name),
                name: k.name.clone(),
                cubes: k.cubes.clone(),
                users: k.users.clone(),
                read: k.read,
                write: k.write,
                admin: false,
                rate_limit_per_minute: k.rate_limit_per_minute,
            };
            if keys.insert(sha, Arc::new(p)).is_some() {
                return Err(ServerError::Config(format!(
                    "auth key \"{}\" is configured twice",
                    k.name
                )));
            }
        }
        for r in stored {
            keys.insert(r.key_sha256.clone(), Arc::new(from_record(r)));
        }
        let master_sha = (!cfg.master_key.is_empty()).then(|| key_hash(&cfg.master_key));
        let forward_key = if cfg.forward_secret.is_empty() {
            let mut shas: Vec<&String> = keys.keys().collect();
            shas.sort();
            let mut h = Sha256::new();
            h.update(b"memos-forward\0");
            h.update(cfg.master_key.as_bytes());
            for s in shas {
                h.update(b"\0");
                h.update(s.as_bytes());
            }
            h.finalize().to_vec()
        } else {
            cfg.forward_secret.as_bytes().to_vec()
        };
        Ok(Auth {
            forward_key,
            open: configured.is_empty() && master_sha.is_none(),
            default_rate: cfg.rate_limit_per_minute,
            master_sha,
            keys: RwLock::new(keys),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Open mode: no keys, no master key.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Who sent `authorization` (the header value, if any). 401 when a key is needed and
    /// missing or unknown.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Arc<Principal>, ServerError> {
        if self.open {
            return Ok(Arc::new(Principal::full("open", true, 0)));
        }
        let h = authorization.ok_or_else(|| {
            ServerError::Unauthorized(
                "missing Authorization header (use \"Token <key>\" or \"Bearer <key>\")".into(),
            )
        })?;
        let (scheme, secret) = h.trim().split_once(' ').ok_or_else(|| {
            ServerError::Unauthorized(
                "Authorization must be \"Token <key>\" or \"Bearer <key>\"".into(),
            )
        })?;
        if !scheme.eq_ignore_ascii_case("token") && !scheme.eq_ignore_ascii_case("bearer") {
            return Err(ServerError::Unauthorized(format!(
                "unsupported Authorization scheme \"{scheme}\" (use Token or Bearer)"
            )));
        }
        let sha = key_hash(secret.trim());
        let p = if self.master_sha.as_deref() == Some(sha.as_str()) {
            Principal::full("master", true, 0)
        } else {
            self.keys
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&sha)
                .map(|p| (**p).clone())
                .ok_or_else(|| ServerError::Unauthorized("unknown API key".into()))?
        };
        Ok(Arc::new(p))
    }

    fn forward_mac(&self, body: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.forward_key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(body.as_bytes());
        mac
    }

    /// The caller's read scope for a search forwarded to another process (the
    /// [`FORWARD_HEADER`] value): `hex(claims JSON).hex(HMAC-SHA256)`, valid for `ttl`. Never
    /// the caller's key, and it grants reading only.
    pub fn sign_forward(&self, p: &Principal, ttl: std::time::Duration) -> String {
        let claims = ForwardClaims {
            id: p.id.clone(),
            name: p.name.clone(),
            cubes: p.cubes.clone(),
            users: p.users.clone(),
            exp: store::time::now_micros()
                .saturating_add(i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX)),
        };
        let body = hex::encode(serde_json::to_vec(&claims).unwrap_or_default());
        let mac = hex::encode(self.forward_mac(&body).finalize().into_bytes());
        format!("{body}.{mac}")
    }

    /// The principal of a forwarded search: 401 unless the token's signature is this
    /// deployment's and it has not expired.
    pub fn verify_forward(&self, token: &str) -> Result<Principal, ServerError> {
        let bad = |why: &str| ServerError::Unauthorized(format!("forwarded search: {why}"));
        let (body, mac) = token
            .split_once('.')
            .ok_or_else(|| bad("malformed scope"))?;
        let mac = hex::decode(mac).map_err(|_| bad("malformed signature"))?;
        self.forward_mac(body)
            .verify_slice(&mac)
            .map_err(|_| bad("the scope's signature is not this deployment's"))?;
        let claims: ForwardClaims = hex::decode(body)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| bad("malformed scope"))?;
        if claims.exp < store::time::now_micros() {
            return Err(bad("the scope expired"));
        }
        Ok(Principal {
            id: claims.id,
            name: claims.name,
            cubes: claims.cubes,
            users: claims.users,
            read: true,
            write: false,
            admin: false,
            rate_limit_per_minute: 0,
        })
    }

    /// Takes one request from the caller's bucket; 429 with the wait when it is empty.
    pub fn admit(&self, p: &Principal) -> Result<(), ServerError> {
        let rate = if p.rate_limit_per_minute > 0 {
            p.rate_limit_per_minute
        } else if matches!(p.id.as_str(), "master" | "open" | "local") {
            0
        } else {
            self.default_rate
        };
        if rate == 0 {
            return Ok(());
        }
        let cap = rate as f64;
        let per_sec = cap / 60.0;
        let now = Instant::now();
        let mut g = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = g.entry(p.id.clone()).or_insert(Bucket {
            tokens: cap,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * per_sec).min(cap);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - b.tokens) / per_sec).ceil() as u64;
            Err(ServerError::RateLimited {
                message: format!(
                    "key \"{}\" is over its limit of {rate} requests per minute",
                    p.name
                ),
                retry_after_secs: wait.max(1),
            })
        }
    }

    /// Adds a created key to the live table.
    pub fn insert(&self, r: &ApiKeyRecord) {
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(r.key_sha256.clone(), Arc::new(from_record(r)));
    }

    /// Removes a created key from the live table.
    pub fn remove(&self, r: &ApiKeyRecord) {
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&r.key_sha256);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(keys: Vec<KeyConfig>, master: &str) -> AuthConfig {
        AuthConfig {
            master_key: master.into(),
            rate_limit_per_minute: 2,
            keys,
            forward_secret: String::new(),
        }
    }

    fn key(name: &str, secret: &str, cubes: &[&str]) -> KeyConfig {
        KeyConfig {
            name: name.into(),
            key: secret.into(),
            key_sha256: String::new(),
            cubes: cubes.iter().map(|s| s.to_string()).collect(),
            users: any(),
            read: true,
            write: false,
            rate_limit_per_minute: 0,
        }
    }

    #[test]
    fn schemes_scopes_and_buckets() {
        let a = Auth::new(&cfg(vec![key("a", "sa", &["team-a-*"])], ""), "", &[]).unwrap();
        assert!(!a.is_open());
        assert!(a.authenticate(None).is_err());
        assert!(a.authenticate(Some("Basic sa")).is_err());
        assert!(a.authenticate(Some("Token nope")).is_err());
        let p = a.authenticate(Some("Token sa")).unwrap();
        assert_eq!(a.authenticate(Some("bearer sa")).unwrap().name, "a");
        assert!(
            p.check(Access::Read, &["team-a-1".into()], Some("u"))
                .is_ok()
        );
        let e = p.check(Access::Read, &["team-b".into()], None).unwrap_err();
        assert_eq!(e.status(), 403);
        assert_eq!(
            p.check(Access::Write, &["team-a-1".into()], None)
                .unwrap_err()
                .status(),
            403
        );
        assert!(a.admit(&p).is_ok() && a.admit(&p).is_ok());
        assert_eq!(a.admit(&p).unwrap_err().status(), 429);
    }

    #[test]
    fn forwarded_scopes_are_signed_read_only_and_expire() {
        let a = Auth::new(&cfg(vec![key("a", "sa", &["team-a-*"])], "m"), "", &[]).unwrap();
        let p = a.authenticate(Some("Token sa")).unwrap();
        let t = a.sign_forward(&p, std::time::Duration::from_secs(30));
        assert!(!t.contains("sa\""), "the key never travels");
        let q = a.verify_forward(&t).unwrap();
        assert_eq!(
            (q.cubes.clone(), q.read, q.write),
            (p.cubes.clone(), true, false)
        );
        // Another deployment (other keys) cannot forge or replay it; tampering breaks it.
        let other = Auth::new(&cfg(vec![key("b", "sb", &["*"])], "m2"), "", &[]).unwrap();
        assert_eq!(other.verify_forward(&t).unwrap_err().status(), 401);
        let (body, mac) = t.split_once('.').unwrap();
        let forged = hex::encode(
            String::from_utf8(hex::decode(body).unwrap())
                .unwrap()
                .replace("team-a-*", "*"),
        );
        assert_eq!(
            a.verify_forward(&format!("{forged}.{mac}"))
                .unwrap_err()
                .status(),
            401
        );
        assert_eq!(a.verify_forward("nonsense").unwrap_err().status(), 401);
        let old = a.sign_forward(&p, std::time::Duration::ZERO);
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_eq!(a.verify_forward(&old).unwrap_err().status(), 401);
    }

    #[test]
    fn open_mode_and_bad_config() {
        let a = Auth::new(&cfg(vec![], ""), "", &[]).unwrap();
        assert!(a.is_open());
        // MEMOS_API_KEYS: KEY (every cube) or KEY:CUBE+CUBE.
        let e = Auth::new(&cfg(vec![], ""), "k1, k2:c1+c2", &[]).unwrap();
        assert!(!e.is_open());
        let k1 = e.authenticate(Some("Token k1")).unwrap();
        assert!(k1.allows_cube("anything"));
        let k2 = e.authenticate(Some("Token k2")).unwrap();
        assert!(k2.allows_cube("c2") && !k2.allows_cube("c3"));
        assert!(Auth::new(&cfg(vec![], ""), "k3:", &[]).is_err());
        assert!(a.authenticate(None).unwrap().admin);
        let mut k = key("x", "s", &["*"]);
        k.key_sha256 = key_hash("s");
        assert!(Auth::new(&cfg(vec![k], ""), "", &[]).is_err());
        let m = Auth::new(&cfg(vec![], "m"), "", &[]).unwrap();
        assert!(!m.is_open());
        assert!(m.authenticate(Some("Token m")).unwrap().admin);
    }
}
