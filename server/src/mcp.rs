//! MCP server (the official Rust SDK, `rmcp`): memory tools for agents over stdio (`memos mcp`)
//! and streamable HTTP (`/mcp` on the REST port, behind the same API-key authentication).
//!
//! Tools: `add_memory`, `search_memories` (filters honoured — MemOS's MCP drops them),
//! `get_memory`, `update_memory`, `delete_memory`, `delete_all_memories`, `add_feedback`,
//! `chat`, `list_cubes`. Every call runs as the caller's key (HTTP: the `Authorization` header;
//! stdio: `MEMOS_API_KEY`, or the local principal when no keys are configured), with the same
//! scope checks as REST. Service errors come back as tool errors (`isError`) with the message.

use std::sync::Arc;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{AddRequest, DeleteRequest, FeedbackRequest, SearchRequest, format_item};
use crate::auth::{Access, Principal};
use crate::chat::ChatRequest;
use crate::error::ServerError;
use crate::service::Memos;

/// The MCP service: one per session (HTTP) or per process (stdio).
#[derive(Clone)]
pub struct MemosMcp {
    memos: Arc<Memos>,
    fixed: Option<Arc<Principal>>,
    tool_router: ToolRouter<Self>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct AddMemoryArgs {
    /// End user the memory is about.
    user_id: String,
    /// Plain text to remember (or give `messages`).
    content: Option<String>,
    /// Chat messages `[{role, content}]` to remember.
    messages: Option<Vec<Value>>,
    /// Cube to write (default: the user id).
    cube_id: Option<String>,
    /// Conversation id.
    session_id: Option<String>,
    /// fast (default) or fine (LLM extraction afterwards, when configured).
    mode: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct SearchArgs {
    /// End user.
    user_id: String,
    /// What to look for.
    query: String,
    /// Cubes to read (default: the user id).
    cube_ids: Option<Vec<String>>,
    /// Results wanted (default 10).
    top_k: Option<usize>,
    /// MemOS filter, e.g. {"and": [{"memory_type": "UserMemory"}, {"created_at": {"gt": "2024-01-01"}}]}.
    filter: Option<Value>,
    /// Only memories as they were at this time (RFC 3339).
    as_of: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct IdArgs {
    /// Memory id.
    memory_id: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct UpdateArgs {
    /// Memory id.
    memory_id: String,
    /// The new text (the old one is kept in the memory's history).
    content: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct CubeArgs {
    /// Cube whose memories are all deleted (hard delete, with a receipt).
    cube_id: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct FeedbackArgs {
    /// End user.
    user_id: String,
    /// What the user said about the memories ("No, it's X not Y", "forget that …").
    feedback_content: String,
    /// Cube (default: the user id).
    cube_id: Option<String>,
    /// Memories the answer used.
    retrieved_memory_ids: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct ChatArgs {
    /// End user.
    user_id: String,
    /// The question.
    query: String,
    /// Cubes to read (default: the user id).
    cube_ids: Option<Vec<String>>,
    /// Add the exchange as memory (default true).
    add_message_on_answer: Option<bool>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct NoArgs {}

fn reply(r: Result<Value, ServerError>) -> Result<CallToolResult, ErrorData> {
    Ok(match r {
        Ok(v) => CallToolResult::success(vec![ContentBlock::text(
            serde_json::to_string_pretty(&v).unwrap_or_default(),
        )]),
        Err(e) => {
            CallToolResult::error(vec![ContentBlock::text(format!("{} ({})", e, e.status()))])
        }
    })
}

impl MemosMcp {
    /// A service; `fixed` is the caller for stdio (HTTP reads it from each request).
    pub fn new(memos: Arc<Memos>, fixed: Option<Arc<Principal>>) -> MemosMcp {
        MemosMcp {
            memos,
            fixed,
            tool_router: Self::tool_router(),
        }
    }

    fn principal(&self, ctx: &RequestContext<RoleServer>) -> Result<Arc<Principal>, ServerError> {
        if let Some(p) = &self.fixed {
            return Ok(p.clone());
        }
        ctx.extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Arc<Principal>>().cloned())
            .ok_or_else(|| ServerError::Unauthorized("no API key on this MCP request".into()))
    }
}

#[tool_router]
impl MemosMcp {
    #[tool(
        description = "Remember something: a text or chat messages, for a user (stored at once, searchable immediately)."
    )]
    async fn add_memory(
        &self,
        Parameters(a): Parameters<AddMemoryArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(
            async {
                let p = self.principal(&ctx)?;
                let messages = match (a.messages, a.content) {
                    (Some(m), _) => json!(m),
                    (None, Some(c)) => json!([{"role": "user", "content": c}]),
                    (None, None) => {
                        return Err(ServerError::BadRequest("give content or messages".into()));
                    }
                };
                let mut req = AddRequest {
                    user_id: Some(a.user_id),
                    writable_cube_ids: a.cube_id.map(|c| vec![c]),
                    session_id: a.session_id,
                    mode: a.mode,
                    messages: Some(messages),
                    async_mode: Some("sync".into()),
                    ..Default::default()
                };
                self.memos.fetch_documents(&mut req.messages).await?;
                let events = self.memos.add_events(&req, &p)?;
                Ok(json!(self.memos.add_sync(events).await?))
            }
            .await,
        )
    }

    #[tool(
        description = "Search a user's memories (text, preferences, tools) with an optional MemOS filter and as_of time."
    )]
    async fn search_memories(
        &self,
        Parameters(a): Parameters<SearchArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(
            async {
                let p = self.principal(&ctx)?;
                let req = SearchRequest {
                    query: a.query,
                    user_id: Some(a.user_id),
                    readable_cube_ids: a.cube_ids,
                    top_k: a.top_k.unwrap_or(10),
                    filter: a.filter,
                    as_of: a.as_of,
                    ..Default::default()
                };
                self.memos.search(&req, &p).await
            }
            .await,
        )
    }

    #[tool(description = "One memory by id, with its metadata and history.")]
    async fn get_memory(
        &self,
        Parameters(a): Parameters<IdArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(
            async {
                let p = self.principal(&ctx)?;
                let (found, _) = self.memos.get_by_ids(vec![a.memory_id.clone()], &p).await?;
                found
                    .first()
                    .map(|r| format_item(r, None, None, false))
                    .ok_or_else(|| {
                        ServerError::NotFound(format!("memory {} not found", a.memory_id))
                    })
            }
            .await,
        )
    }

    #[tool(description = "Change a memory's text; the previous version stays in its history.")]
    async fn update_memory(
        &self,
        Parameters(a): Parameters<UpdateArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(
            async {
                let p = self.principal(&ctx)?;
                let r = self.memos.update_memory(a.memory_id, a.content, &p).await?;
                Ok(format_item(&r, None, None, false))
            }
            .await,
        )
    }

    #[tool(
        description = "Delete one memory for good (its vector, index entries, history and derived memories too); returns the receipt."
    )]
    async fn delete_memory(
        &self,
        Parameters(a): Parameters<IdArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(
            async {
                let p = self.principal(&ctx)?;
                let req = DeleteRequest {
                    memory_ids: Some(vec![a.memory_id]),
                    ..Default::default()
                };
                self.memos.delete(&req, &p).await
            }
            .await,
        )
    }

    #[tool(description = "Delete every memory of a cube for good; returns the receipt.")]
    async fn delete_all_memories(
        &self,
        Parameters(a): Parameters<CubeArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(
            async {
                let p = self.principal(&ctx)?;
                self.memos
                    .soft_delete(a.cube_id, "mcp-delete-all".into(), None, true, &p)
                    .await
            }
            .await,
        )
    }

    #[tool(
        description = "Correct memories with the user's feedback; returns what was added, updated and archived."
    )]
    async fn add_feedback(
        &self,
        Parameters(a): Parameters<FeedbackArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(
            async {
                let p = self.principal(&ctx)?;
                let req = FeedbackRequest {
                    user_id: Some(a.user_id),
                    feedback_content: Some(a.feedback_content),
                    writable_cube_ids: a.cube_id.map(|c| vec![c]),
                    retrieved_memory_ids: a.retrieved_memory_ids,
                    ..Default::default()
                };
                let events = self.memos.feedback_events(&req, &p)?;
                let cubes: Vec<String> = events.iter().map(|e| e.cube_id.clone()).collect();
                let id = events.first().map(|e| e.id()).unwrap_or_default();
                self.memos.add_sync(events).await?;
                self.memos.feedback_outcome(cubes, id).await
            }
            .await,
        )
    }

    #[tool(description = "Answer a question with the user's memories (needs an LLM configured).")]
    async fn chat(
        &self,
        Parameters(a): Parameters<ChatArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(
            async {
                let p = self.principal(&ctx)?;
                let req = ChatRequest {
                    user_id: Some(a.user_id),
                    query: a.query,
                    readable_cube_ids: a.cube_ids,
                    add_message_on_answer: a.add_message_on_answer.unwrap_or(true),
                    ..Default::default()
                };
                self.memos.chat_complete(&req, &p).await
            }
            .await,
        )
    }

    #[tool(
        description = "The cubes (and knowledge bases) this key may read, with their memory counts."
    )]
    async fn list_cubes(
        &self,
        Parameters(_a): Parameters<NoArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        reply(
            async {
                let p = self.principal(&ctx)?;
                p.check(Access::Read, &[], None)?;
                let scope = p.scope();
                let cubes = self
                    .memos
                    .blocking(move |store| {
                        let txn = store.read_txn()?;
                        let mut out = Vec::new();
                        for c in store.cubes(&txn)? {
                            if !scope.allows_cube(&c.cube_id) {
                                continue;
                            }
                            let all = store.cube_ids(&txn, &c.cube_id)?;
                            let n = store.restrict(&txn, &c.cube_id, &scope, all)?.len();
                            out.push((c, n));
                        }
                        Ok(out)
                    })
                    .await?;
                Ok(json!(
                    cubes
                        .into_iter()
                        .map(
                            |(c, n)| json!({"cube_id": c.cube_id, "name": c.name, "kind": c.kind,
                        "owner_id": c.owner_id, "memories": n})
                        )
                        .collect::<Vec<_>>()
                ))
            }
            .await,
        )
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for MemosMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

/// The streamable-HTTP MCP endpoint (mounted at `/mcp` behind authentication).
pub fn http_service(
    memos: Arc<Memos>,
) -> rmcp::transport::streamable_http_server::StreamableHttpService<
    MemosMcp,
    rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
> {
    rmcp::transport::streamable_http_server::StreamableHttpService::new(
        move || Ok(MemosMcp::new(memos.clone(), None)),
        Default::default(),
        rmcp::transport::streamable_http_server::StreamableHttpServerConfig::default()
            // Host checks live in the router for every route (`http::guard_open_mode`: open
            // mode answers loopback names only); with keys every request needs a key.
            .disable_allowed_hosts(),
    )
}

/// Serves MCP over stdin/stdout until the client closes it.
pub async fn serve_stdio(memos: Arc<Memos>, principal: Arc<Principal>) -> Result<(), ServerError> {
    use rmcp::ServiceExt;
    let server = MemosMcp::new(memos, Some(principal))
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| ServerError::Unavailable(format!("mcp: {e}")))?;
    server
        .waiting()
        .await
        .map_err(|e| ServerError::Unavailable(format!("mcp: {e}")))?;
    Ok(())
}
