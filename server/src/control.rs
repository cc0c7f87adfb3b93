//! Memory control: versions and time travel, soft delete and recover, knowledge-base files and
//! per-tool statistics. Methods on [`Memos`], shared by REST, the cloud API and the CLI.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use store::search::{AsOf, visible_at};
use store::{Filter, MemoryRecord, MemoryType, Status};

use crate::auth::{Access, Principal};
use crate::error::ServerError;
use crate::service::Memos;

/// `info` keys a soft delete sets (MemOS PolarDB names).
const DELETE_RECORD_ID: &str = "delete_record_id";
const DELETE_TIME: &str = "delete_time";

impl Memos {
    /// A memory the caller may read: its current record (or the version visible at `at`) and,
    /// when asked, every earlier full version (oldest first).
    pub async fn memory_versions(
        &self,
        id: String,
        at: AsOf,
        with_versions: bool,
        p: &Principal,
    ) -> Result<(Option<MemoryRecord>, Vec<MemoryRecord>), ServerError> {
        p.check(Access::Read, &[], None)?;
        let scope = p.scope();
        self.blocking(move |store| {
            let txn = store.read_txn()?;
            let Some(cur) = store.get_visible(&txn, &id, &scope)? else {
                return Err(ServerError::NotFound(format!("memory {id} not found")));
            };
            let versions = if with_versions {
                store.versions(&txn, &id)?
            } else {
                Vec::new()
            };
            let shown = if at.is_set() {
                visible_at(store, &txn, &cur, at)?
            } else {
                Some(cur)
            };
            Ok((shown, versions))
        })
        .await
    }

    /// Creates a knowledge base (a cube of kind `knowledgebase`) owned by the caller: 403
    /// outside the key's cube scope, 409 if the id exists.
    pub async fn create_kb(
        &self,
        id: String,
        name: String,
        description: String,
        p: &Principal,
    ) -> Result<store::CubeInfo, ServerError> {
        p.check(Access::Write, std::slice::from_ref(&id), None)?;
        self.create_cube(store::CubeInfo {
            cube_id: id,
            name,
            owner_id: p.id.clone(),
            created_at: store::time::now_micros(),
            kind: "knowledgebase".into(),
            description,
        })
        .await
    }

    /// Replaces a memory's text (re-embedded); the previous version is kept in its history.
    pub async fn update_memory(
        &self,
        id: String,
        text: String,
        p: &Principal,
    ) -> Result<MemoryRecord, ServerError> {
        self.update_fields(id, Some(text), None, None, p).await
    }

    /// Updates a memory's text (re-embedded; the key follows it unless `title` is given), its
    /// title (key) or its status, as one new version.
    pub async fn update_fields(
        &self,
        id: String,
        text: Option<String>,
        title: Option<String>,
        status: Option<store::Status>,
        p: &Principal,
    ) -> Result<MemoryRecord, ServerError> {
        if text.as_ref().is_some_and(|t| t.trim().is_empty()) {
            return Err(ServerError::BadRequest("content is empty".into()));
        }
        let v = match &text {
            Some(t) => Some(self.embed_query(t).await?),
            None => None,
        };
        let p = p.clone();
        self.committer
            .run("update", move |store, w| {
                let Some(mut r) = store.get_visible(w, &id, &p.scope())? else {
                    return Err(ServerError::NotFound(format!("memory {id} not found")));
                };
                p.check(Access::Write, std::slice::from_ref(&r.cube_id), None)?;
                if let Some(text) = text {
                    r.key = Some(operators::window::key_of(&text));
                    r.memory = text;
                }
                if let Some(t) = title {
                    r.key = Some(t);
                }
                if let Some(s) = status {
                    r.status = s;
                }
                let r = store.update(w, &r, v.as_deref(), "update", None)?;
                w.touch(&r.cube_id);
                Ok(r)
            })
            .await
    }

    /// MemOS `delete_memory_by_record_id`: soft-deletes the activated memories of a cube (or
    /// only `memory_ids`), tagging them with `record_id` so [`Memos::recover`] can restore
    /// exactly them. `hard` deletes them for good instead (with a receipt).
    pub async fn soft_delete(
        &self,
        cube: String,
        record_id: String,
        memory_ids: Option<Vec<String>>,
        hard: bool,
        p: &Principal,
    ) -> Result<Value, ServerError> {
        store::validate_key_part("record_id", &record_id)?;
        p.check(Access::Write, std::slice::from_ref(&cube), None)?;
        let scope = p.scope();
        self.committer.run("soft_delete", move |store, wtxn| {
            wtxn.touch(&cube);
            let ids: Vec<String> = match memory_ids {
                Some(ids) => {
                    for id in &ids {
                        match store.get_visible(wtxn, id, &scope)? {
                            Some(r) if r.cube_id == cube => {}
                            _ => {
                                return Err(ServerError::NotFound(format!(
                                    "memory {id} not found in cube {cube}; nothing was deleted"
                                )));
                            }
                        }
                    }
                    ids
                }
                None => store.matching_ids(wtxn, &cube, &Filter::And(vec![]), &scope)?,
            };
            if hard {
                let receipt = store.delete(wtxn, &ids)?;
                return Ok(json!({"status": "success", "hard_delete": true,
                    "deleted": receipt.ids.len(), "receipt": receipt}));
            }
            let now = store::time::now_micros();
            let mut n = 0;
            for id in &ids {
                let Some(mut r) = store.get(wtxn, id)? else {
                    continue;
                };
                if r.status != Status::Activated {
                    continue;
                }
                r.status = Status::Deleted;
                r.info.insert(DELETE_RECORD_ID.into(), json!(record_id));
                r.info
                    .insert(DELETE_TIME.into(), json!(store::time::micros_to_rfc3339(now)));
                store.update(wtxn, &r, None, "soft_delete", None)?;
                n += 1;
            }
            Ok(json!({"status": "success", "hard_delete": false, "deleted": n, "record_id": record_id}))
        })
        .await
    }

    /// MemOS `recover_memory_by_record_id`: restores what a soft delete with `record_id` took.
    pub async fn recover(
        &self,
        cube: String,
        record_id: String,
        p: &Principal,
    ) -> Result<Value, ServerError> {
        p.check(Access::Write, std::slice::from_ref(&cube), None)?;
        let scope = p.scope();
        self.committer
            .run("recover", move |store, wtxn| {
                wtxn.touch(&cube);
                let deleted = store.field_ids(wtxn, &cube, "status", Status::Deleted.as_str())?;
                let deleted = store.restrict(wtxn, &cube, &scope, deleted)?;
                let mut n = 0;
                for id in &deleted {
                    let Some(mut r) = store.record(wtxn, id)? else {
                        continue;
                    };
                    if r.info.get(DELETE_RECORD_ID).and_then(Value::as_str) != Some(&record_id) {
                        continue;
                    }
                    r.status = Status::Activated;
                    r.info.remove(DELETE_RECORD_ID);
                    r.info.remove(DELETE_TIME);
                    store.update(wtxn, &r, None, "recover", None)?;
                    n += 1;
                }
                if n == 0 {
                    return Err(ServerError::NotFound(format!(
                        "no memories of cube {cube} were deleted with record id {record_id}"
                    )));
                }
                Ok(json!({"status": "success", "recovered": n, "record_id": record_id}))
            })
            .await
    }

    /// The files of a knowledge base (or of any cube): one entry per file id with its name,
    /// chunk count and memory ids, from the chunks' `file_ids`.
    pub async fn kb_files(
        &self,
        cube: String,
        only: Option<Vec<String>>,
        scope: store::Scope,
    ) -> Result<Vec<Value>, ServerError> {
        self.blocking(move |store| {
            let txn = store.read_txn()?;
            let ids = store.type_ids(&txn, &cube, &[MemoryType::RawFileMemory])?
                & store.field_ids(&txn, &cube, "status", Status::Activated.as_str())?;
            let ids = store.restrict(&txn, &cube, &scope, ids)?;
            let mut files: BTreeMap<String, Value> = BTreeMap::new();
            for id in &ids {
                let Some(r) = store.record(&txn, id)? else {
                    continue;
                };
                for f in &r.file_ids {
                    if only.as_ref().is_some_and(|o| !o.contains(f)) {
                        continue;
                    }
                    let e = files.entry(f.clone()).or_insert_with(|| {
                        json!({
                            "file_id": f,
                            "knowledgebase_id": cube,
                            "file_name": r.info.get("file_name").cloned().unwrap_or(Value::Null),
                            "mime": r.info.get("mime").cloned().unwrap_or(Value::Null),
                            "status": "completed",
                            "created_at": store::time::micros_to_rfc3339(r.created_at),
                            "chunks": 0,
                            "memory_ids": [],
                        })
                    });
                    e["chunks"] = json!(e["chunks"].as_u64().unwrap_or(0) + 1);
                    if let Some(a) = e["memory_ids"].as_array_mut() {
                        a.push(json!(r.id));
                    }
                }
            }
            Ok(files.into_values().collect())
        })
        .await
    }

    /// Success statistics per tool in a cube, from its tool-trajectory memories:
    /// `[{tool, calls, successes, failures, success_rate, last_error, last_used}]`.
    pub async fn tool_stats(&self, cube: String, p: &Principal) -> Result<Vec<Value>, ServerError> {
        p.check(Access::Read, std::slice::from_ref(&cube), None)?;
        let scope = p.scope();
        self.blocking(move |store| {
            let txn = store.read_txn()?;
            let ids = store.type_ids(&txn, &cube, &[MemoryType::ToolTrajectoryMemory])?
                & store.field_ids(&txn, &cube, "status", Status::Activated.as_str())?;
            let ids = store.restrict(&txn, &cube, &scope, ids)?;
            #[derive(Default)]
            struct S {
                calls: u64,
                ok: u64,
                last_error: Option<String>,
                last_used: i64,
            }
            let mut by: BTreeMap<String, S> = BTreeMap::new();
            for id in &ids {
                let Some(r) = store.record(&txn, id)? else {
                    continue;
                };
                let Some(tool) = r.info.get("tool_name").and_then(Value::as_str) else {
                    continue;
                };
                let s = by.entry(tool.to_string()).or_default();
                s.calls += 1;
                let t = r.event_time.unwrap_or(r.created_at);
                let success = r
                    .info
                    .get("success")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                if success {
                    s.ok += 1;
                } else if t >= s.last_used || s.last_error.is_none() {
                    s.last_error = r
                        .info
                        .get("error")
                        .and_then(Value::as_str)
                        .map(String::from)
                        .or(Some(r.memory.clone()));
                }
                s.last_used = s.last_used.max(t);
            }
            Ok(by
                .into_iter()
                .map(|(tool, s)| {
                    json!({
                        "tool": tool,
                        "calls": s.calls,
                        "successes": s.ok,
                        "failures": s.calls - s.ok,
                        "success_rate": s.ok as f64 / s.calls.max(1) as f64,
                        "last_error": s.last_error,
                        "last_used": store::time::micros_to_rfc3339(s.last_used),
                    })
                })
                .collect())
        })
        .await
    }

    /// Adds files to a knowledge base (one `document` event each, written synchronously):
    /// text, Markdown, HTML (`content`) or PDF (`data_base64`). Returns one entry per file.
    pub async fn kb_add_files(
        &self,
        kb: &store::CubeInfo,
        files: &[crate::api::KbFile],
        skills: bool,
    ) -> Result<Vec<Value>, ServerError> {
        let id = &kb.cube_id;
        let mut events = Vec::new();
        let mut names = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let text = f.content.clone().filter(|c| !c.trim().is_empty());
            let data = f.data_base64.clone().filter(|c| !c.trim().is_empty());
            if text.is_none() == data.is_none() {
                return Err(ServerError::BadRequest(format!(
                    "file[{i}] needs exactly one of content (text, Markdown, HTML) or data_base64 (e.g. PDF)"
                )));
            }
            let file_id = f
                .file_id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            store::validate_key_part("file_id", &file_id)?;
            let name = f.file_name.clone().unwrap_or_else(|| file_id.clone());
            let mut payload =
                json!({"filename": name, "file_id": file_id, "kb_id": id, "mime": f.mime});
            match (text, data) {
                (Some(t), _) => payload["text"] = json!(t),
                (_, Some(d)) => payload["data_base64"] = json!(d),
                _ => {}
            }
            let kind = if skills {
                // The file as a skill upload: one file part (text, or base64 data).
                let data = match (&payload["text"], &payload["data_base64"]) {
                    (Value::String(t), _) => t.clone(),
                    (_, Value::String(d)) => format!("data:;base64,{d}"),
                    _ => String::new(),
                };
                payload = json!({"messages": [{"role": "user", "content": [{"type": "file",
                    "file": {"filename": name, "file_id": file_id, "file_data": data}}]}]});
                operators::event::EventKind::Skill
            } else {
                operators::event::EventKind::Document
            };
            let e = operators::event::Event {
                version: operators::event::EVENT_VERSION,
                event_id: Some(format!("{id}/{file_id}")),
                kind,
                cube_id: id.clone(),
                user_id: kb.owner_id.clone(),
                session_id: None,
                agent_id: None,
                app_id: None,
                time: Some(store::time::micros_to_rfc3339(store::time::now_micros())),
                mode: operators::event::Mode::Fast,
                tags: vec!["knowledgebase".into()],
                info: Default::default(),
                payload,
            };
            e.validate()?;
            events.push(e);
            names.push((file_id, name));
        }
        let added = self.add_sync_outcomes(events).await?;
        Ok(names
            .into_iter()
            .zip(added)
            .map(|((fid, name), r)| match r {
                Ok(mems) => {
                    let ids: Vec<String> = mems.into_iter().map(|a| a.memory_id).collect();
                    json!({"file_id": fid, "file_name": name, "status": "completed",
                           "knowledgebase_id": id, "chunks": ids.len(), "memory_ids": ids})
                }
                Err(e) => json!({"file_id": fid, "file_name": name, "status": "failed",
                                 "knowledgebase_id": id, "error": e.to_string(),
                                 "chunks": 0, "memory_ids": []}),
            })
            .collect())
    }

    /// Deletes files (every chunk and what derives from them) from the given cubes, in one
    /// transaction; returns the receipt.
    pub async fn delete_files(
        &self,
        cubes: Vec<String>,
        file_ids: Vec<String>,
        scope: store::Scope,
    ) -> Result<store::DeleteReceipt, ServerError> {
        if file_ids.is_empty() {
            return Err(ServerError::BadRequest("file_ids is empty".into()));
        }
        self.committer
            .run("delete", move |store, wtxn| {
                let filter = Filter::Cond {
                    field: "file_ids".into(),
                    op: store::filter::Op::In,
                    value: json!(file_ids),
                };
                let deletion = pipelines::delete::Deletion {
                    target: pipelines::delete::Target::Filters(
                        cubes.iter().map(|c| (c.clone(), filter.clone())).collect(),
                    ),
                    scope,
                    cube: None,
                    user: None,
                    missing: pipelines::delete::Missing::Refuse,
                };
                let receipt = pipelines::delete::apply(store, wtxn, &deletion)?;
                for c in &receipt.cubes {
                    wtxn.touch(c);
                }
                Ok(receipt)
            })
            .await
    }
}
