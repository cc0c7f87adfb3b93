//! Everything beside memories: KV caches, cubes, dead letters, source offsets, API keys, feedback records.

#[allow(unused_imports)]
use super::*;

impl Store {
    /// Stores an activation (KV) cache entry under its cube and name, replacing any previous.
    pub fn put_kv(&self, wtxn: &mut RwTxn, e: &KvEntry) -> Result<()> {
        validate_key_part("cube_id", &e.cube_id)?;
        let k = join(&[e.cube_id.as_bytes(), e.name.as_bytes()]);
        self.kv.put(wtxn, &k, &postcard::to_stdvec(e)?)?;
        Ok(())
    }

    /// A cube's activation (KV) cache entries.
    pub fn kv_entries(&self, txn: &RoTxn, cube: &str) -> Result<Vec<KvEntry>> {
        let mut prefix = cube.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.kv.prefix_iter(txn, &prefix)? {
            let (_, v) = item?;
            out.push(postcard::from_bytes(v)?);
        }
        Ok(out)
    }

    /// One activation (KV) cache entry by cube and name.
    pub fn kv_entry(&self, txn: &RoTxn, cube: &str, name: &str) -> Result<Option<KvEntry>> {
        let k = join(&[cube.as_bytes(), name.as_bytes()]);
        match self.kv.get(txn, &k)? {
            Some(v) => Ok(Some(postcard::from_bytes(v)?)),
            None => Ok(None),
        }
    }

    /// One activation (KV) cache entry's metadata, without decoding its tensors.
    pub fn kv_head(&self, txn: &RoTxn, cube: &str, name: &str) -> Result<Option<KvHead>> {
        let k = join(&[cube.as_bytes(), name.as_bytes()]);
        match self.kv.get(txn, &k)? {
            Some(v) => Ok(Some(postcard::from_bytes(v)?)),
            None => Ok(None),
        }
    }

    /// Removes an activation (KV) cache entry; whether one was there.
    pub fn delete_kv(&self, wtxn: &mut RwTxn, cube: &str, name: &str) -> Result<bool> {
        let k = join(&[cube.as_bytes(), name.as_bytes()]);
        Ok(self.kv.delete(wtxn, &k)?)
    }

    /// Creates or replaces a cube's info.
    pub fn put_cube(&self, wtxn: &mut RwTxn, c: &CubeInfo) -> Result<()> {
        validate_key_part("cube_id", &c.cube_id)?;
        self.cubes.put(wtxn, &c.cube_id, &postcard::to_stdvec(c)?)?;
        Ok(())
    }

    /// A cube's info.
    pub fn cube(&self, txn: &RoTxn, cube: &str) -> Result<Option<CubeInfo>> {
        self.cubes
            .get(txn, cube)?
            .map(|b| Ok(postcard::from_bytes(b)?))
            .transpose()
    }

    /// Removes a cube's info (its memories are deleted separately, in the same transaction).
    pub fn remove_cube(&self, wtxn: &mut RwTxn, cube: &str) -> Result<bool> {
        self.vecmem.forget(cube);
        Ok(self.cubes.delete(wtxn, cube)?)
    }

    /// All cubes.
    pub fn cubes(&self, txn: &RoTxn) -> Result<Vec<CubeInfo>> {
        let mut out = Vec::new();
        for item in self.cubes.iter(txn)? {
            let (_, b) = item?;
            out.push(postcard::from_bytes(b)?);
        }
        Ok(out)
    }

    /// Records a dead letter: the original bytes, where they came from and why they failed.
    pub fn put_dead_letter(&self, wtxn: &mut RwTxn, dl: &DeadLetter) -> Result<u64> {
        let seq = match self.dead_letters.last(wtxn)? {
            Some((k, _)) => u64::from_be_bytes(k.try_into().unwrap_or([0; 8])) + 1,
            None => 0,
        };
        self.dead_letters
            .put(wtxn, &seq.to_be_bytes(), &postcard::to_stdvec(dl)?)?;
        Ok(seq)
    }

    /// All dead letters, oldest first, with their sequence numbers.
    pub fn dead_letters(&self, txn: &RoTxn) -> Result<Vec<(u64, DeadLetter)>> {
        let mut out = Vec::new();
        for item in self.dead_letters.iter(txn)? {
            let (k, v) = item?;
            out.push((
                u64::from_be_bytes(k.try_into().unwrap_or([0; 8])),
                postcard::from_bytes(v)?,
            ));
        }
        Ok(out)
    }

    /// Stores a source position (e.g. `kafka/memos.events/3` → next offset) in the batch's
    /// transaction, so a restart resumes exactly after the last committed batch.
    pub fn set_offset(&self, wtxn: &mut RwTxn, source: &str, position: &str) -> Result<()> {
        self.offsets.put(wtxn, source, position.as_bytes())?;
        Ok(())
    }

    /// A stored source position.
    pub fn offset(&self, txn: &RoTxn, source: &str) -> Result<Option<String>> {
        Ok(self
            .offsets
            .get(txn, source)?
            .map(|b| String::from_utf8_lossy(b).into_owned()))
    }

    /// Stores (or replaces) an API key, keyed by its id.
    pub fn put_api_key(&self, wtxn: &mut RwTxn, k: &ApiKeyRecord) -> Result<()> {
        validate_key_part("key id", &k.id)?;
        self.api_keys.put(wtxn, &k.id, &postcard::to_stdvec(k)?)?;
        Ok(())
    }

    /// Removes an API key; false if there was none.
    pub fn delete_api_key(&self, wtxn: &mut RwTxn, id: &str) -> Result<bool> {
        Ok(self.api_keys.delete(wtxn, id)?)
    }

    /// All stored API keys.
    pub fn api_keys(&self, txn: &RoTxn) -> Result<Vec<ApiKeyRecord>> {
        let mut out = Vec::new();
        for item in self.api_keys.iter(txn)? {
            let (_, v) = item?;
            out.push(postcard::from_bytes(v)?);
        }
        Ok(out)
    }

    /// Records feedback under its cube, in arrival order.
    pub fn put_feedback(&self, wtxn: &mut RwTxn, f: &FeedbackRecord) -> Result<()> {
        validate_key_part("cube_id", &f.cube_id)?;
        let mut key = f.cube_id.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(&f.created_at.to_be_bytes());
        key.extend_from_slice(f.id.as_bytes());
        self.feedback.put(wtxn, &key, &postcard::to_stdvec(f)?)?;
        Ok(())
    }

    /// One feedback record by cube and id.
    pub fn feedback_by_id(
        &self,
        txn: &RoTxn,
        cube: &str,
        id: &str,
    ) -> Result<Option<FeedbackRecord>> {
        Ok(self.feedback(txn, cube)?.into_iter().find(|f| f.id == id))
    }

    /// A cube's feedback, oldest first.
    pub fn feedback(&self, txn: &RoTxn, cube: &str) -> Result<Vec<FeedbackRecord>> {
        let mut prefix = cube.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.feedback.prefix_iter(txn, &prefix)? {
            let (_, v) = item?;
            out.push(decode_feedback(v)?);
        }
        Ok(out)
    }

    /// Dead letters with sequence numbers `>= from`, at most `max`, oldest first.
    pub fn dead_letters_from(
        &self,
        txn: &RoTxn,
        from: u64,
        max: usize,
    ) -> Result<Vec<(u64, DeadLetter)>> {
        let mut out = Vec::new();
        let start = from.to_be_bytes();
        for item in self.dead_letters.range(
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
            out.push((
                u64::from_be_bytes(k.try_into().unwrap_or([0; 8])),
                postcard::from_bytes(v)?,
            ));
        }
        Ok(out)
    }
}
