//! The Postgres wire protocol (pgwire): `psql`, Grafana's Postgres data source and any
//! Postgres driver can query memory.
//!
//! - Login: user and database `memos`. With API keys configured the password is the key
//!   (cleartext over loopback or a trusted network, as the REST API's keys); the key's scope
//!   becomes the connection's [`Session`] and every query on it is scoped. Without keys, only
//!   loopback clients are let in, without a password.
//! - Simple and extended protocol (prepared statements with `$n` parameters).
//! - `BEGIN`/`COMMIT`/`ROLLBACK` and `SET` are accepted and do nothing (drivers send them);
//!   everything else that is not a query is refused, as over HTTP.

use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float32Array, Float64Array, Int64Array, StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float32Type, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use futures::{Sink, stream};
use pgwire::api::auth::cleartext::CleartextPasswordAuth;
use pgwire::api::auth::driver::AuthOutcome;
use pgwire::api::auth::mechanism::AuthMechanismFactory;
use pgwire::api::auth::{
    AuthDriver, AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
    protocol_negotiation, save_startup_parameters_to_metadata,
};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DataRowEncoder, DescribePortalResponse, DescribeResponse, DescribeStatementResponse, FieldInfo,
    QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{NoopQueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::net::TcpListener;

use crate::{Engine, Session, SqlError};

/// How connections log in.
pub trait PgAuth: Send + Sync + 'static {
    /// Whether a password (an API key) is required.
    fn requires_key(&self) -> bool;
    /// The session of a key; `None` if the key is unknown or may not read.
    fn session_for_key(&self, key: &str) -> Option<Session>;
    /// The session of a password-less loopback client (only when no key is required).
    fn open_session(&self) -> Session;
    /// Called after every statement (for metrics).
    fn observe(&self, _elapsed: std::time::Duration, _ok: bool) {}
}

/// The login name and database every client uses.
pub const USER: &str = "memos";

fn pg_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_owned(),
        code.to_owned(),
        message,
    )))
}

/// SQLSTATE of each error (exhaustive: a new variant must pick its code).
pub fn sqlstate(e: &SqlError) -> &'static str {
    match e {
        SqlError::Invalid(_) => "42601",
        SqlError::ReadOnly(_) => "25006",
        SqlError::Timeout(_) => "57014",
        SqlError::MemoryLimit { .. } => "53200",
        SqlError::TooManyRows(_) => "54000",
        SqlError::Forbidden(_) => "42501",
        SqlError::Search(_) => "22023",
        SqlError::RateLimited(_) => "53400",
        SqlError::Revoked(_) => "28000",
        SqlError::Store(_) => "58000",
        SqlError::Execution(_) => "XX000",
    }
}

fn to_pg(e: SqlError) -> PgWireError {
    pg_error(sqlstate(&e), e.to_string())
}

struct KeySource {
    auth: Arc<dyn PgAuth>,
}

impl Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySource")
    }
}

#[async_trait]
impl AuthSource<Session> for KeySource {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        Err(PgWireError::InvalidPassword(
            login.user().unwrap_or_default().to_owned(),
        ))
    }

    async fn verify_password(
        &self,
        login: &LoginInfo,
        presented: &[u8],
    ) -> PgWireResult<Option<Session>> {
        let key = std::str::from_utf8(presented).unwrap_or("");
        match self.auth.session_for_key(key) {
            Some(s) => Ok(Some(s)),
            None => Err(PgWireError::InvalidPassword(
                login.user().unwrap_or_default().to_owned(),
            )),
        }
    }
}

/// Startup: checks user/database, then cleartext password = API key (or loopback trust).
struct Startup {
    auth: Arc<dyn PgAuth>,
    driver: AuthDriver<DefaultServerParameterProvider, Session>,
    cleartext: CleartextPasswordAuth<KeySource>,
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                let user = client.metadata().get("user").cloned().unwrap_or_default();
                let db = client
                    .metadata()
                    .get("database")
                    .cloned()
                    .unwrap_or_else(|| user.clone());
                if user != USER || db != USER {
                    return Err(pg_error(
                        "28000",
                        format!(
                            "connect as user \"{USER}\" to database \"{USER}\" (got user \"{user}\", database \"{db}\"); the password is your API key"
                        ),
                    ));
                }
                if !self.auth.requires_key() {
                    if !client.socket_addr().ip().is_loopback() {
                        return Err(pg_error(
                            "28000",
                            "no API keys are configured: only loopback clients may connect".into(),
                        ));
                    }
                    client.session_extensions().insert(self.auth.open_session());
                    return self.driver.complete_authentication(client, None).await;
                }
                let mechanism = AuthMechanismFactory::<Session>::create(&self.cleartext);
                match self.driver.begin_authentication(client, mechanism).await? {
                    AuthOutcome::InProgress => Ok(()),
                    AuthOutcome::Authenticated { .. } => {
                        Err(pg_error("28P01", "a password (API key) is required".into()))
                    }
                }
            }
            PgWireFrontendMessage::PasswordMessageFamily(m) => {
                match self.driver.advance_authentication(client, m).await {
                    Ok(AuthOutcome::InProgress) => Ok(()),
                    Ok(AuthOutcome::Authenticated {
                        identity: Some(session),
                        final_message,
                    }) => {
                        client.session_extensions().insert(session);
                        self.driver
                            .complete_authentication(client, final_message)
                            .await
                    }
                    Ok(AuthOutcome::Authenticated { identity: None, .. }) | Err(_) => {
                        Err(pg_error(
                            "28P01",
                            "password authentication failed: unknown API key".into(),
                        ))
                    }
                }
            }
            _ => Ok(()),
        }
    }
}

/// Query handling (simple and extended).
struct Queries {
    engine: Arc<Engine>,
    parser: Arc<NoopQueryParser>,
    auth: Arc<dyn PgAuth>,
}

impl Queries {
    async fn run(
        &self,
        sql: &str,
        params: Vec<ScalarValue>,
        session: &Session,
    ) -> Result<crate::QueryOutput, SqlError> {
        if let Some(g) = &session.guard {
            g.admit()?;
        }
        let started = std::time::Instant::now();
        let r = self.engine.query_with_params(sql, params, session).await;
        self.auth.observe(started.elapsed(), r.is_ok());
        r
    }
}

fn session_of<C: ClientInfo>(client: &C) -> PgWireResult<Session> {
    client
        .session_extensions()
        .get::<Session>()
        .map(|s| (*s).clone())
        .ok_or_else(|| pg_error("28000", "not authenticated".into()))
}

/// Statements a driver sends that do nothing on a read-only store.
fn no_op_tag(sql: &str) -> Option<&'static str> {
    let first = sql
        .trim_start()
        .split(|c: char| c.is_whitespace() || c == ';')
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    match first.as_str() {
        "BEGIN" | "START" => Some("BEGIN"),
        "COMMIT" | "END" => Some("COMMIT"),
        "ROLLBACK" | "ABORT" => Some("ROLLBACK"),
        "SET" | "RESET" | "DISCARD" => Some("SET"),
        _ => None,
    }
}

/// Splits a simple-protocol string into statements (parsed, so `;` inside strings is safe).
fn statements(sql: &str) -> Result<Vec<String>, SqlError> {
    use datafusion::sql::parser::DFParser;
    let parsed = DFParser::parse_sql(sql).map_err(|e| SqlError::Invalid(e.to_string()));
    match parsed {
        Ok(stmts) => Ok(stmts.into_iter().map(|s| s.to_string()).collect()),
        // A statement DataFusion cannot parse may still be a driver no-op (`SET x TO y`).
        Err(e) => {
            let parts: Vec<String> = sql
                .split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            if !parts.is_empty() && parts.iter().all(|p| no_op_tag(p).is_some()) {
                Ok(parts)
            } else {
                Err(e)
            }
        }
    }
}

/// Postgres type of an Arrow type (text for anything without a closer match).
pub fn pg_type(t: &DataType) -> Type {
    match t {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => Type::INT8,
        DataType::Float16 | DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Timestamp(_, Some(_)) => Type::TIMESTAMPTZ,
        DataType::Timestamp(_, None) => Type::TIMESTAMP,
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            match f.data_type() {
                DataType::Float32 | DataType::Float16 => Type::FLOAT4_ARRAY,
                DataType::Float64 => Type::FLOAT8_ARRAY,
                DataType::Int64 | DataType::Int32 => Type::INT8_ARRAY,
                _ => Type::TEXT_ARRAY,
            }
        }
        _ => Type::TEXT,
    }
}

fn fields(schema: &SchemaRef, format: &Format) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            FieldInfo::new(
                f.name().clone(),
                None,
                None,
                pg_type(f.data_type()),
                format.format_for(i),
            )
        })
        .collect()
}

/// One column, cast once to the Rust shape its Postgres type is encoded from.
enum Col {
    Bool(BooleanArray),
    Int(Int64Array),
    F32(Float32Array),
    F64(Float64Array),
    Ts(Int64Array),
    TextList(ArrayRef),
    FloatList(ArrayRef),
    IntList(ArrayRef),
    Text(StringArray),
}

fn prepare(a: &ArrayRef, ty: &Type) -> PgWireResult<Col> {
    let c = |t: &DataType| cast(a, t).map_err(|e| pg_error("XX000", e.to_string()));
    Ok(match *ty {
        Type::BOOL => Col::Bool(c(&DataType::Boolean)?.as_boolean().clone()),
        Type::INT2 | Type::INT4 | Type::INT8 => {
            Col::Int(c(&DataType::Int64)?.as_primitive().clone())
        }
        Type::FLOAT4 => Col::F32(c(&DataType::Float32)?.as_primitive().clone()),
        Type::FLOAT8 => Col::F64(c(&DataType::Float64)?.as_primitive().clone()),
        Type::TIMESTAMPTZ | Type::TIMESTAMP => {
            let us = c(&DataType::Timestamp(TimeUnit::Microsecond, None))?;
            let micros =
                cast(&us, &DataType::Int64).map_err(|e| pg_error("XX000", e.to_string()))?;
            Col::Ts(micros.as_primitive().clone())
        }
        Type::TEXT_ARRAY => Col::TextList(a.clone()),
        Type::FLOAT4_ARRAY | Type::FLOAT8_ARRAY => Col::FloatList(a.clone()),
        Type::INT8_ARRAY => Col::IntList(a.clone()),
        _ => Col::Text(c(&DataType::Utf8)?.as_string::<i32>().clone()),
    })
}

fn list_item(a: &ArrayRef, row: usize) -> Option<ArrayRef> {
    if a.is_null(row) {
        return None;
    }
    Some(match a.data_type() {
        DataType::FixedSizeList(..) => a.as_fixed_size_list().value(row),
        DataType::LargeList(_) => a.as_list::<i64>().value(row),
        _ => a.as_list::<i32>().value(row),
    })
}

fn encode_batch(
    batch: &RecordBatch,
    schema: &Arc<Vec<FieldInfo>>,
    out: &mut Vec<PgWireResult<DataRow>>,
) -> PgWireResult<()> {
    let cols: Vec<Col> = batch
        .columns()
        .iter()
        .zip(schema.iter())
        .map(|(a, f)| prepare(a, f.datatype()))
        .collect::<PgWireResult<_>>()?;
    let mut enc = DataRowEncoder::new(schema.clone());
    for row in 0..batch.num_rows() {
        for col in &cols {
            match col {
                Col::Bool(a) => enc.encode_field(&(!a.is_null(row)).then(|| a.value(row)))?,
                Col::Int(a) => enc.encode_field(&(!a.is_null(row)).then(|| a.value(row)))?,
                Col::F32(a) => enc.encode_field(&(!a.is_null(row)).then(|| a.value(row)))?,
                Col::F64(a) => enc.encode_field(&(!a.is_null(row)).then(|| a.value(row)))?,
                Col::Ts(a) => {
                    let v = (!a.is_null(row))
                        .then(|| chrono::DateTime::from_timestamp_micros(a.value(row)))
                        .flatten();
                    enc.encode_field(&v)?
                }
                Col::Text(a) => enc.encode_field(&(!a.is_null(row)).then(|| a.value(row)))?,
                Col::TextList(a) => {
                    let v: Option<Vec<Option<String>>> = match list_item(a, row) {
                        Some(items) => {
                            let s = cast(&items, &DataType::Utf8)
                                .map_err(|e| pg_error("XX000", e.to_string()))?;
                            let s = s.as_string::<i32>();
                            Some(
                                (0..s.len())
                                    .map(|i| (!s.is_null(i)).then(|| s.value(i).to_string()))
                                    .collect(),
                            )
                        }
                        None => None,
                    };
                    enc.encode_field(&v)?
                }
                Col::FloatList(a) => {
                    let v: Option<Vec<Option<f32>>> = match list_item(a, row) {
                        Some(items) => {
                            let f = cast(&items, &DataType::Float32)
                                .map_err(|e| pg_error("XX000", e.to_string()))?;
                            let f = f.as_primitive::<Float32Type>();
                            Some(f.iter().collect())
                        }
                        None => None,
                    };
                    enc.encode_field(&v)?
                }
                Col::IntList(a) => {
                    let v: Option<Vec<Option<i64>>> = match list_item(a, row) {
                        Some(items) => {
                            let f = cast(&items, &DataType::Int64)
                                .map_err(|e| pg_error("XX000", e.to_string()))?;
                            let f = f.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
                            Some(f.iter().collect())
                        }
                        None => None,
                    };
                    enc.encode_field(&v)?
                }
            }
        }
        out.push(Ok(enc.take_row()));
    }
    Ok(())
}

fn response(out: crate::QueryOutput, format: &Format) -> PgWireResult<Response> {
    let schema = Arc::new(fields(&out.schema, format));
    let mut rows = Vec::with_capacity(out.rows);
    for b in &out.batches {
        encode_batch(b, &schema, &mut rows)?;
    }
    Ok(Response::Query(QueryResponse::new(
        schema,
        stream::iter(rows),
    )))
}

#[async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session_of(client)?;
        let stmts = statements(query).map_err(to_pg)?;
        if stmts.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut out = Vec::with_capacity(stmts.len());
        for sql in stmts {
            if let Some(tag) = no_op_tag(&sql) {
                out.push(Response::Execution(Tag::new(tag)));
                continue;
            }
            let r = self.run(&sql, Vec::new(), &session).await.map_err(to_pg)?;
            out.push(response(r, &Format::UnifiedText)?);
        }
        Ok(out)
    }
}

/// A parameter value decoded as the type the statement expects.
fn param(portal: &Portal<String>, i: usize, want: Option<&DataType>) -> PgWireResult<ScalarValue> {
    let declared = portal.statement.parameter_types.get(i).cloned().flatten();
    let ty = declared.unwrap_or_else(|| want.map(pg_type).unwrap_or(Type::TEXT));
    Ok(match ty {
        Type::BOOL => ScalarValue::Boolean(portal.parameter::<bool>(i, &ty)?),
        Type::INT2 => ScalarValue::Int64(portal.parameter::<i16>(i, &ty)?.map(i64::from)),
        Type::INT4 => ScalarValue::Int64(portal.parameter::<i32>(i, &ty)?.map(i64::from)),
        Type::INT8 => ScalarValue::Int64(portal.parameter::<i64>(i, &ty)?),
        Type::FLOAT4 => ScalarValue::Float32(portal.parameter::<f32>(i, &ty)?),
        Type::FLOAT8 => ScalarValue::Float64(portal.parameter::<f64>(i, &ty)?),
        _ => {
            let t = Type::TEXT;
            ScalarValue::Utf8(portal.parameter::<String>(i, &t)?)
        }
    })
}

fn param_scalar_for(v: ScalarValue, want: Option<&DataType>) -> ScalarValue {
    match want {
        Some(t) if &v.data_type() != t => v.cast_to(t).unwrap_or(v),
        _ => v,
    }
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = String;
    type QueryParser = NoopQueryParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_describe_statement<C>(
        &self,
        client: &mut C,
        target: &StoredStatement<Self::Statement>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if no_op_tag(&target.statement).is_some() {
            return Ok(DescribeStatementResponse::no_data());
        }
        let session = session_of(client)?;
        let (schema, params) = self
            .engine
            .describe(&target.statement, &session)
            .await
            .map_err(to_pg)?;
        let types = params
            .iter()
            .enumerate()
            .map(|(i, t)| {
                target
                    .parameter_types
                    .get(i)
                    .cloned()
                    .flatten()
                    .unwrap_or_else(|| t.as_ref().map(pg_type).unwrap_or(Type::TEXT))
            })
            .collect();
        Ok(DescribeStatementResponse::new(
            types,
            fields(&schema, &Format::UnifiedBinary),
        ))
    }

    async fn do_describe_portal<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if no_op_tag(&portal.statement.statement).is_some() {
            return Ok(DescribePortalResponse::no_data());
        }
        let session = session_of(client)?;
        let (schema, _) = self
            .engine
            .describe(&portal.statement.statement, &session)
            .await
            .map_err(to_pg)?;
        Ok(DescribePortalResponse::new(fields(
            &schema,
            &portal.result_column_format,
        )))
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let sql = &portal.statement.statement;
        if let Some(tag) = no_op_tag(sql) {
            return Ok(Response::Execution(Tag::new(tag)));
        }
        if sql.trim().is_empty() {
            return Ok(Response::EmptyQuery);
        }
        let session = session_of(client)?;
        let mut params = Vec::new();
        if portal.parameter_len() > 0 {
            let (_, want) = self.engine.describe(sql, &session).await.map_err(to_pg)?;
            for i in 0..portal.parameter_len() {
                let w = want.get(i).and_then(|t| t.as_ref());
                params.push(param_scalar_for(param(portal, i, w)?, w));
            }
        }
        let r = self.run(sql, params, &session).await.map_err(to_pg)?;
        response(r, &portal.result_column_format)
    }
}

struct Handlers {
    startup: Arc<Startup>,
    queries: Arc<Queries>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.queries.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.queries.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }
}

/// Serves the Postgres wire protocol on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    auth: Arc<dyn PgAuth>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let mut params = DefaultServerParameterProvider::default();
    params.server_version = "16.0 (memos)".to_string();
    let source = KeySource { auth: auth.clone() };
    let auth2 = auth.clone();
    let handlers = Arc::new(Handlers {
        startup: Arc::new(Startup {
            auth,
            driver: AuthDriver::new(params),
            cleartext: CleartextPasswordAuth::new(Arc::new(source)),
        }),
        queries: Arc::new(Queries {
            engine,
            parser: Arc::new(NoopQueryParser::new()),
            auth: auth2,
        }),
    });
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, _peer)) => {
                    let h = handlers.clone();
                    tokio::spawn(async move {
                        if let Err(e) = pgwire::tokio::process_socket(socket, None, h).await {
                            tracing::debug!(error = %e, "postgres connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "postgres accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// The address a listener is bound to (for logs and tests).
pub fn local_addr(l: &TcpListener) -> Option<SocketAddr> {
    l.local_addr().ok()
}
