//! Per-cube field bitmaps: maintenance on insert/update/delete, filter evaluation by pushdown, candidate sets.

#[allow(unused_imports)]
use super::*;

impl Store {
    pub(crate) fn bitmap(&self, txn: &RoTxn, key: &[u8]) -> Result<RoaringBitmap> {
        bitmap_from(self.fields.get(txn, key)?)
    }

    pub(crate) fn bitmap_update(
        &self,
        wtxn: &mut RwTxn,
        key: &[u8],
        id: u32,
        add: bool,
    ) -> Result<()> {
        let mut b = self.bitmap(wtxn, key)?;
        let changed = if add { b.insert(id) } else { b.remove(id) };
        if changed {
            if b.is_empty() {
                self.fields.delete(wtxn, key)?;
            } else {
                self.fields.put(wtxn, key, &bitmap_bytes(&b))?;
            }
        }
        Ok(())
    }

    pub(crate) fn index_fields(
        &self,
        wtxn: &mut RwTxn,
        r: &MemoryRecord,
        id: u32,
        add: bool,
    ) -> Result<()> {
        for k in field_keys(r) {
            self.bitmap_update(wtxn, &k, id, add)?;
        }
        self.index_hash(wtxn, r, id, add)
    }

    /// Moves memory `id` from the field bitmaps and content hash of `old` to those of `new`,
    /// touching only the keys that differ.
    pub(crate) fn reindex_fields(
        &self,
        wtxn: &mut RwTxn,
        old: &MemoryRecord,
        new: &MemoryRecord,
        id: u32,
    ) -> Result<()> {
        let before = field_keys(old);
        let after = field_keys(new);
        for k in before.iter().filter(|k| !after.contains(k)) {
            self.bitmap_update(wtxn, k, id, false)?;
        }
        for k in after.iter().filter(|k| !before.contains(k)) {
            self.bitmap_update(wtxn, k, id, true)?;
        }
        let same_hash = old.cube_id == new.cube_id
            && old.memory == new.memory
            && old.memory_type.bucket() == new.memory_type.bucket()
            && old.status == new.status;
        if !same_hash {
            self.index_hash(wtxn, old, id, false)?;
            self.index_hash(wtxn, new, id, true)?;
        }
        Ok(())
    }

    pub(crate) fn index_hash(
        &self,
        wtxn: &mut RwTxn,
        r: &MemoryRecord,
        id: u32,
        add: bool,
    ) -> Result<()> {
        let cube = r.cube_id.as_str();
        let hk = join(&[
            cube.as_bytes(),
            &model::content_hash(r.memory_type.bucket(), &r.memory),
        ]);
        if add {
            if r.status == Status::Activated {
                self.hashes.put(wtxn, &hk, &k32(id))?;
            }
        } else if self.hashes.get(wtxn, &hk)? == Some(&k32(id)[..]) {
            self.hashes.delete(wtxn, &hk)?;
        }
        Ok(())
    }

    /// Every internal id of a cube (any status).
    pub fn cube_ids(&self, txn: &RoTxn, cube: &str) -> Result<RoaringBitmap> {
        self.bitmap(txn, &field_key(cube, "", ""))
    }

    /// Ids of a cube whose indexed `field` equals `value`.
    pub fn field_ids(
        &self,
        txn: &RoTxn,
        cube: &str,
        field: &str,
        value: &str,
    ) -> Result<RoaringBitmap> {
        self.bitmap(txn, &field_key(cube, field, value))
    }

    /// Ids of a cube that satisfy `filter`, among `base`. Equality/`in` on indexed fields are
    /// answered from bitmaps; other conditions are checked on the records of the narrowed set.
    pub fn filter_ids(
        &self,
        txn: &RoTxn,
        cube: &str,
        filter: &Filter,
        base: &RoaringBitmap,
    ) -> Result<RoaringBitmap> {
        if filter.is_true() {
            return Ok(base.clone());
        }
        if filter.fully_indexed() {
            return Ok(self.bitmap_eval(txn, cube, filter, base)? & base);
        }
        let (narrowed, rest): (RoaringBitmap, Vec<&Filter>) = match filter {
            Filter::And(parts) => {
                let mut b = base.clone();
                let mut rest = Vec::new();
                for p in parts {
                    if p.fully_indexed() {
                        b &= self.bitmap_eval(txn, cube, p, base)?;
                    } else {
                        rest.push(p);
                    }
                }
                (b, rest)
            }
            f => (base.clone(), vec![f]),
        };
        let mut out = RoaringBitmap::new();
        for id in &narrowed {
            if let Some(r) = self.record(txn, id)?
                && rest.iter().all(|f| f.matches(&r))
            {
                out.insert(id);
            }
        }
        Ok(out)
    }

    pub(crate) fn bitmap_eval(
        &self,
        txn: &RoTxn,
        cube: &str,
        f: &Filter,
        base: &RoaringBitmap,
    ) -> Result<RoaringBitmap> {
        Ok(match f {
            Filter::True => base.clone(),
            Filter::And(v) => {
                let mut b = base.clone();
                for p in v {
                    b &= self.bitmap_eval(txn, cube, p, base)?;
                }
                b
            }
            Filter::Or(v) => {
                let mut b = RoaringBitmap::new();
                for p in v {
                    b |= self.bitmap_eval(txn, cube, p, base)?;
                }
                b
            }
            Filter::Not(p) => base - self.bitmap_eval(txn, cube, p, base)?,
            Filter::Cond { .. } => {
                let (field, values) = f
                    .indexed_values()
                    .ok_or_else(|| StoreError::InvalidFilter("not indexed".into()))?;
                let mut b = RoaringBitmap::new();
                for v in values {
                    b |= self.bitmap(txn, &field_key(cube, field, &v))?;
                }
                b
            }
        })
    }

    /// Activated ids of a cube, optionally of some memory types, that satisfy `filter`.
    pub fn candidates(
        &self,
        txn: &RoTxn,
        cube: &str,
        types: Option<&[MemoryType]>,
        filter: &Filter,
    ) -> Result<RoaringBitmap> {
        let mut base = self.field_ids(txn, cube, "status", Status::Activated.as_str())?;
        if let Some(types) = types {
            base &= self.type_ids(txn, cube, types)?;
        }
        self.filter_ids(txn, cube, filter, &base)
    }

    /// Ids of a cube (any status) whose memory type is one of `types`.
    pub fn type_ids(&self, txn: &RoTxn, cube: &str, types: &[MemoryType]) -> Result<RoaringBitmap> {
        let mut t = RoaringBitmap::new();
        for ty in types {
            t |= self.field_ids(txn, cube, "memory_type", ty.as_str())?;
        }
        Ok(t)
    }

    /// Uuids of every memory of a cube (any status) that `scope` sees and that satisfies
    /// `filter`: what a delete by filter removes.
    pub fn matching_ids(
        &self,
        txn: &RoTxn,
        cube: &str,
        filter: &Filter,
        scope: &Scope,
    ) -> Result<Vec<String>> {
        let all = self.restrict(txn, cube, scope, self.cube_ids(txn, cube)?)?;
        let mut ids = Vec::new();
        for id in &self.filter_ids(txn, cube, filter, &all)? {
            if let Some(r) = self.record(txn, id)? {
                ids.push(r.id);
            }
        }
        Ok(ids)
    }
}
