//! Retrieval primitives: vector search per cube (RAM codes, exact pending scan, arroy shards) and BM25.

#[allow(unused_imports)]
use super::*;

impl Store {
    /// Nearest neighbours among `candidates` (ids of `cube`): the cube's RAM-resident codes pick
    /// them and their f32 vectors in this snapshot score them exactly; a cube too large for the
    /// memory budget goes to [`Store::vector_search`]. Returns (id, cosine), best first.
    pub fn vector_search_in(
        &self,
        txn: &RoTxn,
        cube: &str,
        query: &[f32],
        k: usize,
        candidates: &RoaringBitmap,
    ) -> Result<Vec<(u32, f32)>> {
        let mut hits = self.search_in(txn, cube, &[query], k, candidates, None)?;
        Ok(hits.pop().unwrap_or_default())
    }

    /// The `k` nearest of `candidates` (ids of `cube`) to each of `queries` with a cosine of at
    /// least `min_cosine` (near-duplicate detection): the cube's codes are brought up to date
    /// once, each query is narrowed by the cube's LSH index (or, in a small cube, takes every
    /// candidate), re-ranked by int8 dot products, and only the candidates that may reach
    /// `min_cosine` are scored exactly. A cube too large for the memory budget goes to
    /// [`Store::vector_search`] per query.
    pub fn near_neighbours_in(
        &self,
        txn: &RoTxn,
        cube: &str,
        queries: &[&[f32]],
        k: usize,
        candidates: &RoaringBitmap,
        min_cosine: f32,
    ) -> Result<Vec<Vec<(u32, f32)>>> {
        let probe = vecmem::Probe { min_cosine };
        let mut hits = self.search_in(txn, cube, queries, k, candidates, Some(probe))?;
        for h in &mut hits {
            h.retain(|&(_, cos)| cos >= min_cosine);
        }
        Ok(hits)
    }

    /// The RAM codes' search for [`Store::vector_search_in`] and [`Store::near_neighbours_in`],
    /// falling back to [`Store::vector_search`] per query for a cube over the memory budget.
    pub(crate) fn search_in(
        &self,
        txn: &RoTxn,
        cube: &str,
        queries: &[&[f32]],
        k: usize,
        candidates: &RoaringBitmap,
        probe: Option<vecmem::Probe>,
    ) -> Result<Vec<Vec<(u32, f32)>>> {
        for q in queries {
            model::check_dims(self.opts.dimensions, q)?;
        }
        let all = self.cube_ids(txn, cube)?;
        let src = SnapshotVectors { store: self, txn };
        match self
            .vecmem
            .search_many(&src, cube, &all, queries, k, candidates, probe)?
        {
            Some(hits) => Ok(hits),
            None => queries
                .iter()
                .map(|q| self.vector_search_shards(txn, &[shard_of(cube)], q, k, candidates))
                .collect(),
        }
    }

    /// The arroy shards that hold built trees, with how many vectors each indexes.
    pub fn ann_shard_sizes(&self) -> Result<Vec<(u16, u64)>> {
        let txn = self.read_txn()?;
        self.shard_sizes(&txn)
    }

    pub(crate) fn shard_sizes(&self, txn: &RoTxn) -> Result<Vec<(u16, u64)>> {
        let mut out = Vec::new();
        for shard in 0..ANN_SHARDS {
            let n = self.vindex.indexed(txn, shard)?.len();
            if n > 0 {
                out.push((shard, n));
            }
        }
        Ok(out)
    }

    /// Nearest neighbours among `candidates` (any cubes): arroy trees for indexed items plus an
    /// exact scan of the vectors changed since the last fold. Returns (id, cosine), best first.
    pub fn vector_search(
        &self,
        txn: &RoTxn,
        query: &[f32],
        k: usize,
        candidates: &RoaringBitmap,
    ) -> Result<Vec<(u32, f32)>> {
        let all: Vec<u16> = (0..ANN_SHARDS).collect();
        self.vector_search_shards(txn, &all, query, k, candidates)
    }

    /// [`Store::vector_search`] in the arroy shards `shards` (those of the candidates' cubes).
    pub(crate) fn vector_search_shards(
        &self,
        txn: &RoTxn,
        shards: &[u16],
        query: &[f32],
        k: usize,
        candidates: &RoaringBitmap,
    ) -> Result<Vec<(u32, f32)>> {
        model::check_dims(self.opts.dimensions, query)?;
        let pending = self.pending(txn)?;
        let in_delta = candidates & &pending;
        let in_trees = candidates - &pending;
        // Readers of the trees may lag behind deletes; candidates come from the snapshot, so a
        // removed id is never among them.
        let mut hits = Vec::new();
        for &shard in shards {
            hits.extend(self.vindex.search(txn, shard, query, k, &in_trees)?);
        }
        for id in &in_delta {
            if let Some(b) = self.vectors.get(txn, &k32(id))? {
                hits.push((id, vector::dot_bytes(query, b)));
            }
        }
        Ok(lexical::top_k(hits, k))
    }

    /// BM25 over the cube among `candidates`. Returns (id, score), best first.
    pub fn bm25_search(
        &self,
        txn: &RoTxn,
        cube: &str,
        query: &str,
        k: usize,
        candidates: &RoaringBitmap,
    ) -> Result<Vec<(u32, f32)>> {
        self.lexical
            .search(txn, cube, query, k, candidates, self.opts.bm25)
    }
}
