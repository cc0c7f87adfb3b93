//! Memory records: internal ids, insert, update (with history), versions, delete (complete, with derived memories and covering KV caches), processed events, snapshot iteration.

#[allow(unused_imports)]
use super::*;

impl Store {
    pub(crate) fn next_id(&self, wtxn: &mut RwTxn) -> Result<u32> {
        let id = match self.meta.get(wtxn, META_NEXT_ID)? {
            Some(b) => u32::from_le_bytes(
                b.try_into()
                    .map_err(|_| StoreError::Codec("next_id".into()))?,
            ),
            None => 0,
        };
        let next = id
            .checked_add(1)
            .ok_or_else(|| StoreError::InvalidArgument("id space exhausted".into()))?;
        self.meta.put(wtxn, META_NEXT_ID, &next.to_le_bytes())?;
        Ok(id)
    }

    /// Inserts a new memory like [`Store::insert`], but its field bitmaps, postings and lexical
    /// statistics go to `buf` instead of LMDB: a batch writes each of those keys once, with
    /// [`Store::flush_index`], instead of re-reading and re-writing it per memory. Everything
    /// else (record, id, vector, content hash, cube) is written in `wtxn` at once. Until the
    /// buffer is flushed, the bitmaps and postings in `wtxn` do not show the memory: flush
    /// before anything that reads them in the same transaction (updates, deletes, filters).
    /// Keys LMDB could not hold are refused here, so a flush fails only for transient reasons.
    pub fn insert_into(
        &self,
        wtxn: &mut RwTxn,
        r: &MemoryRecord,
        embedding: &[f32],
        buf: &mut IndexBuffer,
    ) -> Result<u32> {
        model::check_dims(self.opts.dimensions, embedding)?;
        validate_key_part("cube_id", &r.cube_id)?;
        self.check_room(wtxn)?;
        let keys = field_keys(r);
        for k in &keys {
            self.check_key(k)?;
        }
        if self.ids.get(wtxn, &r.id)?.is_some() {
            return Err(StoreError::InvalidArgument(format!(
                "memory {} already exists",
                r.id
            )));
        }
        let id = self.next_id(wtxn)?;
        self.ids.put(wtxn, &r.id, &k32(id))?;
        // Ids only grow, so new records and vectors are appended: LMDB then fills pages
        // completely instead of splitting them in half (half the file size for vectors).
        self.records
            .put_with_flags(wtxn, PutFlags::APPEND, &k32(id), &r.encode()?)?;
        self.vectors
            .put_with_flags(wtxn, PutFlags::APPEND, &k32(id), &vec_to_bytes(embedding))?;
        self.ann_pending
            .put(wtxn, &k32(id), &pending_value(true, &r.cube_id))?;
        for k in keys {
            buf.fields.entry(k).or_default().insert(id);
        }
        buf.ids.insert(id);
        self.index_hash(wtxn, r, id, true)?;
        if r.status == Status::Activated {
            self.lexical
                .buffer(&mut buf.lexical, &r.cube_id, id, &r.memory);
        }
        if self.cubes.get(wtxn, &r.cube_id)?.is_none() {
            let info = CubeInfo {
                cube_id: r.cube_id.clone(),
                name: r.cube_id.clone(),
                owner_id: r.user_id.clone(),
                created_at: r.created_at,
                kind: "cube".into(),
                description: String::new(),
            };
            self.put_cube(wtxn, &info)?;
        }
        Ok(id)
    }

    /// Writes a batch's buffered bitmaps, postings and statistics: each key read and written
    /// once; postings appended to the last block of their term without decoding it.
    pub fn flush_index(&self, wtxn: &mut RwTxn, buf: IndexBuffer) -> Result<()> {
        for (k, add) in buf.fields {
            let b = self.bitmap(wtxn, &k)? | add;
            self.fields.put(wtxn, &k, &bitmap_bytes(&b))?;
        }
        self.lexical.flush(wtxn, buf.lexical)
    }

    /// Whether memory `uuid`'s index entries wait in `buf` (see [`IndexBuffer::holds`]).
    pub fn buffered(&self, txn: &RoTxn, buf: &IndexBuffer, uuid: &str) -> Result<bool> {
        Ok(match self.internal_id(txn, uuid)? {
            Some(id) => buf.holds(id),
            None => false,
        })
    }

    /// Internal id of a memory uuid.
    pub fn internal_id(&self, txn: &RoTxn, uuid: &str) -> Result<Option<u32>> {
        Ok(self
            .ids
            .get(txn, uuid)?
            .map(|b| u32::from_be_bytes(b.try_into().unwrap_or([0; 4]))))
    }

    /// Loads a record by internal id (without its embedding).
    pub fn record(&self, txn: &RoTxn, id: u32) -> Result<Option<MemoryRecord>> {
        self.records
            .get(txn, &k32(id))?
            .map(MemoryRecord::decode)
            .transpose()
    }

    /// Loads a record by uuid (without its embedding).
    pub fn get(&self, txn: &RoTxn, uuid: &str) -> Result<Option<MemoryRecord>> {
        match self.internal_id(txn, uuid)? {
            Some(id) => self.record(txn, id),
            None => Ok(None),
        }
    }

    /// Loads a record by uuid with its embedding.
    pub fn get_with_embedding(&self, txn: &RoTxn, uuid: &str) -> Result<Option<MemoryRecord>> {
        let Some(id) = self.internal_id(txn, uuid)? else {
            return Ok(None);
        };
        let Some(mut r) = self.record(txn, id)? else {
            return Ok(None);
        };
        r.embedding = self.embedding(txn, id)?.unwrap_or_default();
        Ok(Some(r))
    }

    /// Cosine of `query` with the stored (unit) embedding of an internal id, without copying it.
    pub fn cosine(&self, txn: &RoTxn, id: u32, query: &[f32]) -> Result<Option<f32>> {
        Ok(self
            .vectors
            .get(txn, &k32(id))?
            .map(|b| vector::dot_bytes(query, b)))
    }

    /// The stored embedding of an internal id.
    pub fn embedding(&self, txn: &RoTxn, id: u32) -> Result<Option<Vec<f32>>> {
        Ok(self.vectors.get(txn, &k32(id))?.map(bytes_to_vec))
    }

    /// Inserts a new memory with its embedding. Returns its internal id.
    /// Fails if the uuid already exists (use [`Store::update`]).
    pub fn insert(&self, wtxn: &mut RwTxn, r: &MemoryRecord, embedding: &[f32]) -> Result<u32> {
        let mut buf = IndexBuffer::default();
        let id = self.insert_into(wtxn, r, embedding, &mut buf)?;
        self.flush_index(wtxn, buf)?;
        Ok(id)
    }

    /// Replaces a memory with a new version. The previous version is appended to `history`
    /// (and its full snapshot kept in the history database); `version` is bumped.
    /// `embedding` None keeps the existing vector.
    pub fn update(
        &self,
        wtxn: &mut RwTxn,
        new: &MemoryRecord,
        embedding: Option<&[f32]>,
        update_type: &str,
        merged_from: Option<String>,
    ) -> Result<MemoryRecord> {
        let id = self
            .internal_id(wtxn, &new.id)?
            .ok_or_else(|| StoreError::NotFound(new.id.clone()))?;
        let old = self
            .record(wtxn, id)?
            .ok_or_else(|| StoreError::NotFound(new.id.clone()))?;
        let mut hk = new.id.as_bytes().to_vec();
        hk.push(0);
        hk.extend_from_slice(&old.version.to_be_bytes());
        self.history.put(wtxn, &hk, &old.encode()?)?;
        let mut rec = new.clone();
        rec.cube_id = old.cube_id.clone();
        rec.version = old.version + 1;
        rec.history = old.history.clone();
        rec.history.push(HistoryEntry {
            version: old.version,
            memory: old.memory.clone(),
            update_type: update_type.to_string(),
            archived_at: time::now_micros(),
            merged_from,
        });
        rec.updated_at = time::now_micros();
        // Only what changed is re-indexed: the field bitmaps of keys that differ, the content
        // hash and the postings when the text or the status changed (a merge keeps the cube,
        // user, session and type, so it rewrites no cube-wide bitmap).
        self.reindex_fields(wtxn, &old, &rec, id)?;
        let was = old.status == Status::Activated;
        let is = rec.status == Status::Activated;
        let text_changed = old.memory != rec.memory;
        if was && (!is || text_changed) {
            self.lexical.remove(wtxn, &old.cube_id, id, &old.memory)?;
        }
        self.records.put(wtxn, &k32(id), &rec.encode()?)?;
        if is && (!was || text_changed) {
            self.lexical.add(wtxn, &rec.cube_id, id, &rec.memory)?;
        }
        if let Some(v) = embedding {
            model::check_dims(self.opts.dimensions, v)?;
            self.vectors.put(wtxn, &k32(id), &vec_to_bytes(v))?;
            self.ann_pending
                .put(wtxn, &k32(id), &pending_value(true, &rec.cube_id))?;
            self.vecmem.invalidate(&rec.cube_id, id);
        }
        Ok(rec)
    }

    /// Stores a full earlier version of a memory (its `version` numbers it), as [`Store::update`]
    /// does; used to import a cube's history.
    pub fn put_version(&self, wtxn: &mut RwTxn, v: &MemoryRecord) -> Result<()> {
        let mut hk = v.id.as_bytes().to_vec();
        hk.push(0);
        hk.extend_from_slice(&v.version.to_be_bytes());
        self.history.put(wtxn, &hk, &v.encode()?)?;
        Ok(())
    }

    /// Previous full versions of a memory, oldest first.
    pub fn versions(&self, txn: &RoTxn, uuid: &str) -> Result<Vec<MemoryRecord>> {
        let mut prefix = uuid.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.history.prefix_iter(txn, &prefix)? {
            let (_, v) = item?;
            out.push(MemoryRecord::decode(v)?);
        }
        Ok(out)
    }

    /// Hard-deletes memories by uuid, completely and in the caller's transaction: the record,
    /// its vector (trees and delta), postings, field bitmaps, content hash and history; the
    /// memories derived from it (`info.derived_from`, e.g. extracted preferences) and its
    /// earlier archived versions (`info.covered_history`, feedback replacements), recursively;
    /// and every activation (KV) cache entry that covered any of them.
    pub fn delete(&self, wtxn: &mut RwTxn, uuids: &[String]) -> Result<DeleteReceipt> {
        let mut receipt = DeleteReceipt::default();
        // (uuid, reached through a link, the cube a linked memory must be in: links are never
        // followed across cubes, whatever an `info` value says).
        let mut queue: std::collections::VecDeque<(String, bool, Option<String>)> =
            uuids.iter().map(|u| (u.clone(), false, None)).collect();
        let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut removed: std::collections::HashSet<String> = std::collections::HashSet::new();
        // KV entries are keyed by cube and only cover that cube's memories.
        let mut removed_cubes: std::collections::BTreeSet<String> = Default::default();
        while let Some((uuid, derived, within)) = queue.pop_front() {
            let Some(id) = self.internal_id(wtxn, &uuid)? else {
                continue;
            };
            let Some(r) = self.record(wtxn, id)? else {
                continue;
            };
            if within.as_ref().is_some_and(|c| *c != r.cube_id) || !seen.insert(uuid.clone()) {
                continue;
            }
            for child in self.bitmap(wtxn, &field_key(&r.cube_id, LINK_DERIVED, &uuid))? {
                if let Some(c) = self.record(wtxn, child)? {
                    queue.push_back((c.id, true, Some(r.cube_id.clone())));
                }
            }
            if let Some(Value::String(prev)) = r.info.get(model::COVERED_HISTORY) {
                queue.push_back((prev.clone(), true, Some(r.cube_id.clone())));
            }
            self.index_fields(wtxn, &r, id, false)?;
            if r.status == Status::Activated {
                receipt.postings += self.lexical.remove(wtxn, &r.cube_id, id, &r.memory)?;
            }
            self.records.delete(wtxn, &k32(id))?;
            self.ids.delete(wtxn, &uuid)?;
            if self.vectors.delete(wtxn, &k32(id))? {
                receipt.vectors += 1;
            }
            // The trees drop it at the next fold; searches never return it meanwhile, since
            // every candidate set comes from the snapshot's bitmaps.
            self.ann_pending
                .put(wtxn, &k32(id), &pending_value(false, &r.cube_id))?;
            let mut prefix = uuid.as_bytes().to_vec();
            prefix.push(0);
            let keys: Vec<Vec<u8>> = self
                .history
                .prefix_iter(wtxn, &prefix)?
                .map(|i| i.map(|(k, _)| k.to_vec()))
                .collect::<std::result::Result<_, _>>()?;
            for k in keys {
                self.history.delete(wtxn, &k)?;
                receipt.history += 1;
            }
            receipt.records += 1;
            if derived {
                receipt.derived += 1;
            }
            receipt.ids.push(uuid.clone());
            removed.insert(uuid);
            removed_cubes.insert(r.cube_id);
        }
        for cube in &removed_cubes {
            let mut prefix = cube.as_bytes().to_vec();
            prefix.push(0);
            let stale: Vec<Vec<u8>> = self
                .kv
                .prefix_iter(wtxn, &prefix)?
                .filter_map(|i| match i {
                    Ok((k, v)) => match postcard::from_bytes::<KvHead>(v) {
                        Ok(e) if e.memory_ids.iter().any(|m| removed.contains(m)) => {
                            Some(Ok(k.to_vec()))
                        }
                        Ok(_) => None,
                        Err(e) => Some(Err(StoreError::from(e))),
                    },
                    Err(e) => Some(Err(e.into())),
                })
                .collect::<Result<_>>()?;
            for k in stale {
                self.kv.delete(wtxn, &k)?;
                receipt.kv_cache += 1;
            }
        }
        receipt.cubes = removed_cubes.into_iter().collect();
        Ok(receipt)
    }

    /// Every record of a cube, any status, in insertion order.
    pub fn cube_records(&self, txn: &RoTxn, cube: &str) -> Result<Vec<MemoryRecord>> {
        let mut out = Vec::new();
        for id in self.cube_ids(txn, cube)? {
            if let Some(r) = self.record(txn, id)? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// The version of a memory that was current at system time `t` (unix micros): the last
    /// version whose `updated_at` is at or before `t`, or None if it did not exist yet. Its
    /// `status` says whether it was searchable then. Hard-deleted memories have no versions.
    pub fn version_at(
        &self,
        txn: &RoTxn,
        current: &MemoryRecord,
        t: i64,
    ) -> Result<Option<MemoryRecord>> {
        if current.updated_at <= t {
            return Ok(Some(current.clone()));
        }
        if current.created_at > t {
            return Ok(None);
        }
        let mut best = None;
        for v in self.versions(txn, &current.id)? {
            let since = if v.version == 1 {
                v.created_at
            } else {
                v.updated_at
            };
            if since <= t {
                best = Some(v);
            }
        }
        Ok(best)
    }

    /// Changes the status of a memory (e.g. archive, soft-delete, recover), keeping history.
    pub fn set_status(
        &self,
        wtxn: &mut RwTxn,
        uuid: &str,
        status: Status,
        why: &str,
    ) -> Result<MemoryRecord> {
        let mut r = self
            .get(wtxn, uuid)?
            .ok_or_else(|| StoreError::NotFound(uuid.to_string()))?;
        r.status = status;
        self.update(wtxn, &r, None, why, None)
    }

    /// Whether an event was already processed for this cube.
    pub fn event(&self, txn: &RoTxn, cube: &str, event_id: &str) -> Result<Option<EventRecord>> {
        let k = join(&[cube.as_bytes(), event_id.as_bytes()]);
        Ok(match self.events.get(txn, &k)? {
            Some(b) => Some(postcard::from_bytes(b)?),
            None => None,
        })
    }

    /// Records that an event was processed (in the same transaction as its memories).
    pub fn mark_event(
        &self,
        wtxn: &mut RwTxn,
        cube: &str,
        event_id: &str,
        rec: &EventRecord,
    ) -> Result<()> {
        let k = join(&[cube.as_bytes(), event_id.as_bytes()]);
        self.events.put(wtxn, &k, &postcard::to_stdvec(rec)?)?;
        Ok(())
    }

    /// The activated memory of a cube's bucket with exactly this (normalised) text, if any.
    pub fn find_by_content(
        &self,
        txn: &RoTxn,
        cube: &str,
        bucket: Bucket,
        text: &str,
    ) -> Result<Option<u32>> {
        let hk = join(&[cube.as_bytes(), &model::content_hash(bucket, text)]);
        Ok(self
            .hashes
            .get(txn, &hk)?
            .map(|b| u32::from_be_bytes(b.try_into().unwrap_or([0; 4]))))
    }

    /// Up to `max` records with internal ids `>= from`, in id order (any status, any cube).
    /// A caller pages through the whole table by passing the last id + 1.
    pub fn records_from(
        &self,
        txn: &RoTxn,
        from: u32,
        max: usize,
    ) -> Result<Vec<(u32, MemoryRecord)>> {
        let mut out = Vec::with_capacity(max.min(4096));
        let start = k32(from);
        for item in self.records.range(
            txn,
            &(
                std::ops::Bound::Included(&start[..]),
                std::ops::Bound::Unbounded,
            ),
        )? {
            if out.len() >= max {
                break;
            }
            let (k, v) = item?;
            let id = u32::from_be_bytes(k.try_into().unwrap_or([0; 4]));
            out.push((id, MemoryRecord::decode(v)?));
        }
        Ok(out)
    }

    /// Processed events of one cube (or of every cube with `None`) after `after` (an event id
    /// of that cube previously returned), at most `max`, in (cube, event id) order.
    pub fn events_from(
        &self,
        txn: &RoTxn,
        cube: Option<&str>,
        after: Option<(&str, &str)>,
        max: usize,
    ) -> Result<Vec<(String, String, EventRecord)>> {
        let mut out = Vec::new();
        let prefix: Vec<u8> = match cube {
            Some(c) => {
                let mut p = c.as_bytes().to_vec();
                p.push(0);
                p
            }
            None => Vec::new(),
        };
        // LMDB rejects an empty key, so a scan of every cube starts unbounded.
        let lower = match after {
            Some((c, e)) => std::ops::Bound::Excluded(join(&[c.as_bytes(), e.as_bytes()])),
            None if prefix.is_empty() => std::ops::Bound::Unbounded,
            None => std::ops::Bound::Included(prefix.clone()),
        };
        let lower_ref = match &lower {
            std::ops::Bound::Excluded(k) => std::ops::Bound::Excluded(&k[..]),
            std::ops::Bound::Included(k) => std::ops::Bound::Included(&k[..]),
            std::ops::Bound::Unbounded => std::ops::Bound::Unbounded,
        };
        for item in self
            .events
            .range(txn, &(lower_ref, std::ops::Bound::Unbounded))?
        {
            if out.len() >= max {
                break;
            }
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            let Some(nul) = k.iter().position(|b| *b == 0) else {
                continue;
            };
            let cube = String::from_utf8_lossy(&k[..nul]).into_owned();
            let event = String::from_utf8_lossy(&k[nul + 1..]).into_owned();
            out.push((cube, event, postcard::from_bytes(v)?));
        }
        Ok(out)
    }
}
