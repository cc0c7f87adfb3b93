//! The LMDB environment: opening (format migrations, dimension check), transactions, the background fold of vector changes, sizes and room.

#[allow(unused_imports)]
use super::*;

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: impl AsRef<Path>, opts: StoreOptions) -> Result<Store> {
        let path = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&path)?;
        // SAFETY: the data directory is owned by this process; LMDB's documented caveat is
        // about opening the same environment twice in one process, which `memos` never does.
        let env = unsafe {
            EnvOpenOptions::new()
                .read_txn_without_tls()
                .map_size(lmdb_map_size(opts.map_size))
                .max_dbs(32)
                .max_readers(1024)
                .open(&path)?
        };
        let wtxn = env.write_txn()?;
        type B = Database<'static, Bytes, Bytes>;
        #[allow(clippy::type_complexity)]
        let (
            meta,
            records,
            ids,
            vectors,
            postings,
            stats,
            hashes,
            events,
            history,
            fields,
            cubes,
            arroy_db,
        ): (
            Database<'static, Str, Bytes>,
            B,
            Database<'static, Str, Bytes>,
            B,
            B,
            B,
            B,
            B,
            B,
            B,
            Database<'static, Str, Bytes>,
            arroy::Database<'static, Cosine>,
        ) = env
            .create_databases_and_commit(wtxn, |dbo, wtxn| -> Result<_> {
                Ok(CommitOrAbort::<_, ()>::Commit((
                    dbo.create_database(wtxn, Some("meta"))?,
                    dbo.create_database(wtxn, Some("records"))?,
                    dbo.create_database(wtxn, Some("ids"))?,
                    dbo.create_database(wtxn, Some("vectors"))?,
                    dbo.create_database(wtxn, Some("postings"))?,
                    dbo.create_database(wtxn, Some("lexical_stats"))?,
                    dbo.create_database(wtxn, Some("hashes"))?,
                    dbo.create_database(wtxn, Some("events"))?,
                    dbo.create_database(wtxn, Some("history"))?,
                    dbo.create_database(wtxn, Some("fields"))?,
                    dbo.create_database(wtxn, Some("cubes"))?,
                    dbo.create_database(wtxn, Some("arroy"))?,
                )))
            })?
            .unwrap_commit();
        let wtxn = env.write_txn()?;
        let (dead_letters, offsets, api_keys, feedback, kv, ann_pending, jobs) = env
            .create_databases_and_commit(wtxn, |dbo, wtxn| -> Result<_> {
                Ok(CommitOrAbort::<_, ()>::Commit((
                    dbo.create_database(wtxn, Some("dead_letters"))?,
                    dbo.create_database(wtxn, Some("offsets"))?,
                    dbo.create_database(wtxn, Some("api_keys"))?,
                    dbo.create_database(wtxn, Some("feedback"))?,
                    dbo.create_database(wtxn, Some("kv_cache"))?,
                    dbo.create_database(wtxn, Some("ann_pending"))?,
                    dbo.create_database(wtxn, Some("jobs"))?,
                )))
            })?
            .unwrap_commit();
        let mut vindex = ArroyIndex::new(arroy_db, opts.dimensions);
        vindex.oversampling = opts.ann_oversampling.max(1);
        let store = Store {
            env,
            path,
            meta,
            records,
            ids,
            vectors,
            hashes,
            events,
            history,
            fields,
            cubes,
            dead_letters,
            offsets,
            api_keys,
            feedback,
            kv,
            ann_pending,
            jobs,
            lexical: lexical::LexicalIndex { postings, stats },
            vindex,
            vecmem: vecmem::VecMem::new(opts.dimensions, opts.vecmem),
            opts,
        };
        store.check_dimensions()?;
        store.migrate_format()?;
        store.migrate_pending()?;
        Ok(store)
    }

    /// The format of the data on disk ([`STORE_FORMAT`] once opened by this build).
    pub fn format_version(&self) -> Result<u32> {
        let txn = self.env.read_txn()?;
        read_format(self.meta.get(&txn, META_FORMAT)?)
    }

    /// Brings a store of an older format up to [`STORE_FORMAT`] in one transaction (format 1:
    /// every record and earlier version gains its format byte); refuses a newer format.
    pub(crate) fn migrate_format(&self) -> Result<()> {
        let mut wtxn = self.env.write_txn()?;
        let found = read_format(self.meta.get(&wtxn, META_FORMAT)?)?;
        if found > STORE_FORMAT {
            return Err(StoreError::InvalidArgument(format!(
                "the store in {} has format {found}; this memos reads formats up to {STORE_FORMAT}: upgrade memos",
                self.path.display()
            )));
        }
        if found == STORE_FORMAT {
            return Ok(());
        }
        // Format 1 → 2.
        for db in [&self.records, &self.history] {
            let old: Vec<(Vec<u8>, MemoryRecord)> = db
                .iter(&wtxn)?
                .map(|item| {
                    let (k, v) = item?;
                    Ok((k.to_vec(), MemoryRecord::decode_v1(v)?))
                })
                .collect::<Result<_>>()?;
            for (k, r) in old {
                db.put(&mut wtxn, &k, &r.encode()?)?;
            }
        }
        self.meta
            .put(&mut wtxn, META_FORMAT, &STORE_FORMAT.to_le_bytes())?;
        wtxn.commit()?;
        Ok(())
    }

    /// Stores written before `ann_pending` kept the delta as one bitmap in `meta`.
    pub(crate) fn migrate_pending(&self) -> Result<()> {
        let mut wtxn = self.env.write_txn()?;
        if let Some(b) = self.meta.get(&wtxn, META_PENDING)? {
            let old = bitmap_from(Some(b))?;
            for id in &old {
                self.ann_pending.put(&mut wtxn, &k32(id), &[1])?;
            }
            self.meta.delete(&mut wtxn, META_PENDING)?;
        }
        // One arroy index for the whole store → one per shard: drop the old trees and queue
        // every vector for the background fold, which builds each shard (searches meanwhile
        // use the RAM codes, or read the pending vectors exactly).
        if self.meta.get(&wtxn, META_ANN_LAYOUT)? != Some(ANN_LAYOUT) {
            if !self.vindex.is_empty(&wtxn)? {
                self.vindex.clear(&mut wtxn)?;
                self.ann_pending.clear(&mut wtxn)?;
                let ids: Vec<u32> = self
                    .vectors
                    .iter(&wtxn)?
                    .map(|r| {
                        r.map_err(StoreError::from)
                            .and_then(|(k, _)| id_of_key(k, "vectors"))
                    })
                    .collect::<Result<_>>()?;
                for id in ids {
                    if let Some(r) = self.record(&wtxn, id)? {
                        self.ann_pending.put(
                            &mut wtxn,
                            &k32(id),
                            &pending_value(true, &r.cube_id),
                        )?;
                    }
                }
            }
            self.meta.put(&mut wtxn, META_ANN_LAYOUT, ANN_LAYOUT)?;
        }
        wtxn.commit()?;
        Ok(())
    }

    pub(crate) fn check_dimensions(&self) -> Result<()> {
        let mut wtxn = self.env.write_txn()?;
        match self.meta.get(&wtxn, META_DIMS)? {
            Some(b) => {
                let d =
                    u32::from_le_bytes(b.try_into().map_err(|_| StoreError::Codec("dims".into()))?)
                        as usize;
                if d != self.opts.dimensions {
                    return Err(StoreError::Dimensions {
                        expected: d,
                        received: self.opts.dimensions,
                    });
                }
            }
            None => {
                self.meta.put(
                    &mut wtxn,
                    META_DIMS,
                    &(self.opts.dimensions as u32).to_le_bytes(),
                )?;
            }
        }
        wtxn.commit()?;
        Ok(())
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.opts
    }

    /// Begins the (single) write transaction.
    pub fn write_txn(&self) -> Result<RwTxn<'_>> {
        Ok(self.env.write_txn()?)
    }

    /// Begins a child of `parent` (an LMDB nested transaction). Its writes become part of the
    /// parent with [`Store::commit_child`]; dropping it undoes them and leaves the parent as it
    /// was. The sink applies each event in its own child, so one event that cannot be written
    /// (a key LMDB refuses, a record that does not encode, a panic) is isolated from the rest
    /// of its batch, which still commits in the parent's one transaction.
    pub fn child_txn<'p>(&'p self, parent: &'p mut RwTxn) -> Result<RwTxn<'p>> {
        Ok(self.env.nested_write_txn(parent)?)
    }

    /// The largest key LMDB accepts in this environment (511 bytes in a default LMDB build,
    /// more with the `longer-keys` build heed uses here).
    pub fn max_key_size(&self) -> usize {
        self.env.max_key_size()
    }

    /// LMDB refuses empty keys and keys over [`Store::max_key_size`]; an index key is checked
    /// before it is buffered, so the refusal is the one event's error, not its batch's.
    pub(crate) fn check_key(&self, k: &[u8]) -> Result<()> {
        let max = self.max_key_size();
        if k.is_empty() || k.len() > max {
            return Err(StoreError::InvalidArgument(format!(
                "an index key of {} bytes (cube, field and value together) is beyond LMDB's {max}-byte limit",
                k.len()
            )));
        }
        Ok(())
    }

    /// Folds a child transaction into its parent (nothing is durable until the parent commits).
    pub fn commit_child(&self, child: RwTxn<'_>) -> Result<()> {
        child.commit()?;
        Ok(())
    }

    /// Begins a read transaction: a consistent snapshot.
    pub fn read_txn(&self) -> Result<RoTxn<'_, WithoutTls>> {
        Ok(self.env.read_txn()?)
    }

    /// Commits a write transaction. Vector changes wait in `ann_pending` for the background
    /// fold ([`Store::index_pending`]); nothing is built inside the caller's transaction.
    pub fn commit(&self, wtxn: RwTxn<'_>) -> Result<()> {
        wtxn.commit()?;
        Ok(())
    }

    /// With `force_index`, folds every pending vector change into the arroy trees in the
    /// caller's transaction (imports and benchmarks that want a built index at once); without,
    /// does nothing.
    pub fn finish(&self, wtxn: &mut RwTxn<'_>, force_index: bool) -> Result<()> {
        if !force_index {
            return Ok(());
        }
        let changes: Vec<(u32, bool, Option<u16>)> = self
            .ann_pending
            .iter(wtxn)?
            .map(|r| {
                r.map_err(StoreError::from).and_then(|(k, v)| {
                    let id = id_of_key(k, "ann_pending")?;
                    let shard = match v {
                        [_, hi, lo] => Some(u16::from_be_bytes([*hi, *lo])),
                        _ => None,
                    };
                    Ok((id, v.first() == Some(&1), shard))
                })
            })
            .collect::<Result<_>>()?;
        if changes.is_empty() {
            return Ok(());
        }
        let mut touched = std::collections::BTreeSet::new();
        for (id, add, shard) in changes {
            let v = if add {
                self.vectors.get(wtxn, &k32(id))?.map(bytes_to_vec)
            } else {
                None
            };
            // A change queued without its shard (an older store): the record names the cube.
            let shard = match shard {
                Some(s) => Some(s),
                None => self.record(wtxn, id)?.map(|r| shard_of(&r.cube_id)),
            };
            match (v, shard) {
                (Some(v), Some(shard)) => {
                    self.vindex.add(wtxn, shard, id, &v)?;
                    touched.insert(shard);
                }
                (None, Some(shard)) => {
                    self.vindex.remove(wtxn, shard, id)?;
                    touched.insert(shard);
                }
                // Gone, and its shard unknown: after the layout migration no shard holds it.
                (_, None) => {}
            }
        }
        for shard in touched {
            self.vindex.build(wtxn, shard)?;
        }
        self.ann_pending.clear(wtxn)?;
        Ok(())
    }

    /// Folds the pending vector changes into the arroy trees in a transaction of its own (the
    /// background indexer; never the sink's transaction). Returns how many changes it folded.
    pub fn index_pending(&self) -> Result<u64> {
        let mut wtxn = self.write_txn()?;
        let n = self.ann_pending.len(&wtxn)?;
        if n == 0 {
            return Ok(0);
        }
        self.finish(&mut wtxn, true)?;
        wtxn.commit()?;
        Ok(n)
    }

    /// Whether the persisted ANN (arroy) is needed: the store holds more vectors than the RAM
    /// codes' budget, so some cube may be searched through the trees.
    pub fn ann_needed(&self) -> bool {
        let Ok(txn) = self.read_txn() else {
            return true;
        };
        let n = self.vectors.len(&txn).unwrap_or(u64::MAX);
        n.saturating_mul(self.vecmem.bytes_per_vector() as u64)
            > self.opts.vecmem.budget_bytes as u64
    }

    /// Whether at least `n` vector changes wait for the fold.
    pub fn pending_over(&self, n: u64) -> bool {
        self.read_txn()
            .and_then(|t| Ok(self.ann_pending.len(&t)?))
            .is_ok_and(|len| len >= n)
    }

    /// How many vector changes wait for the background fold.
    pub fn pending_changes(&self, txn: &RoTxn) -> Result<u64> {
        Ok(self.ann_pending.len(txn)?)
    }

    /// Ids whose vector was added or replaced since the last fold (searched exactly).
    pub(crate) fn pending(&self, txn: &RoTxn) -> Result<RoaringBitmap> {
        let mut b = RoaringBitmap::new();
        for r in self.ann_pending.iter(txn)? {
            let (k, v) = r?;
            if v.first() == Some(&1)
                && let Ok(k) = <[u8; 4]>::try_from(k)
            {
                b.insert(u32::from_be_bytes(k));
            }
        }
        Ok(b)
    }

    /// A read transaction that owns its handle on the environment, so it can live as long as a
    /// query does (SQL reads a whole query from one snapshot). It is `Send`, not `Sync`: use it
    /// from one thread at a time.
    pub fn snapshot(&self) -> Result<RoTxn<'static, WithoutTls>> {
        Ok(self.env.clone().static_read_txn()?)
    }

    /// Store-wide counts.
    pub fn stats(&self) -> Result<StoreStats> {
        let txn = self.read_txn()?;
        Ok(StoreStats {
            memories: self.records.len(&txn)?,
            cubes: self.cubes.len(&txn)?,
            events: self.events.len(&txn)?,
            dead_letters: self.dead_letters.len(&txn)?,
            vectors_indexed: self.shard_sizes(&txn)?.iter().map(|(_, n)| n).sum(),
            vectors_pending: self.ann_pending.len(&txn)?,
            vectors_in_memory: self.vecmem.stats(),
            disk_bytes: self.env.real_disk_size().unwrap_or(0),
            databases: self.database_sizes(&txn)?,
        })
    }

    /// Bytes in the pages of every database (what the configured `map_size` limits).
    pub fn used_bytes(&self, txn: &RoTxn) -> Result<u64> {
        let p = |s: heed::DatabaseStat| s.non_free_page_size() as u64;
        Ok(p(self.meta.stat(txn)?)
            + p(self.records.stat(txn)?)
            + p(self.ids.stat(txn)?)
            + p(self.vectors.stat(txn)?)
            + p(self.lexical.postings.stat(txn)?)
            + p(self.lexical.stats.stat(txn)?)
            + p(self.hashes.stat(txn)?)
            + p(self.events.stat(txn)?)
            + p(self.history.stat(txn)?)
            + p(self.fields.stat(txn)?)
            + p(self.cubes.stat(txn)?)
            + p(self.dead_letters.stat(txn)?)
            + p(self.offsets.stat(txn)?)
            + p(self.api_keys.stat(txn)?)
            + p(self.feedback.stat(txn)?)
            + p(self.kv.stat(txn)?)
            + p(self.vindex.stat(txn)?)
            + p(self.ann_pending.stat(txn)?))
    }

    /// [`StoreError::Full`] when the data has reached the configured `map_size` (checked on a
    /// write that adds memories; deletes never check).
    pub fn check_room(&self, txn: &RoTxn) -> Result<()> {
        let used = self.used_bytes(txn)?;
        if used >= self.opts.map_size as u64 {
            return Err(StoreError::Full(format!(
                "{used} bytes in use of map_size_mb = {} MiB: adding is refused, reads and deletes work; delete memories or raise map_size_mb",
                self.opts.map_size >> 20
            )));
        }
        Ok(())
    }

    pub(crate) fn database_sizes(
        &self,
        txn: &RoTxn,
    ) -> Result<std::collections::BTreeMap<String, u64>> {
        let size = |s: heed::DatabaseStat| s.non_free_page_size() as u64;
        let mut m = std::collections::BTreeMap::new();
        m.insert("meta".into(), size(self.meta.stat(txn)?));
        m.insert("records".into(), size(self.records.stat(txn)?));
        m.insert("ids".into(), size(self.ids.stat(txn)?));
        m.insert("vectors".into(), size(self.vectors.stat(txn)?));
        m.insert("postings".into(), size(self.lexical.postings.stat(txn)?));
        m.insert("hashes".into(), size(self.hashes.stat(txn)?));
        m.insert("events".into(), size(self.events.stat(txn)?));
        m.insert("history".into(), size(self.history.stat(txn)?));
        m.insert("fields".into(), size(self.fields.stat(txn)?));
        m.insert("dead_letters".into(), size(self.dead_letters.stat(txn)?));
        m.insert("api_keys".into(), size(self.api_keys.stat(txn)?));
        m.insert("feedback".into(), size(self.feedback.stat(txn)?));
        m.insert("arroy".into(), size(self.vindex.stat(txn)?));
        m.insert("ann_pending".into(), size(self.ann_pending.stat(txn)?));
        Ok(m)
    }
}
