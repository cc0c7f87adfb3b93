//! Vector index abstraction and its arroy implementation.
//!
//! The trait is deliberately small so a second backend (hannoy, HNSW on LMDB) can be measured
//! against arroy later. Every method takes the caller's transaction: the vector writes commit
//! atomically with the records and postings of the same batch.

use arroy::distances::Cosine;
use heed::{RoTxn, RwTxn};
use rand::SeedableRng;
use rand::rngs::StdRng;
use roaring::RoaringBitmap;

use crate::error::Result;

/// How many arroy indexes the store's vectors are spread over: a cube's vectors all live in
/// the shard its id hashes to ([`shard_of`]), so a search for one cube opens one shard's trees,
/// and a fold rebuilds only the shards that changed. Never one index for the whole store.
pub const ANN_SHARDS: u16 = 64;

/// The arroy shard of a cube (FNV-1a of its id; stable across versions and platforms).
pub fn shard_of(cube: &str) -> u16 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in cube.as_bytes() {
        h = (h ^ *b as u64).wrapping_mul(0x100000001b3);
    }
    (h % ANN_SHARDS as u64) as u16
}

/// An approximate-nearest-neighbour index over unit vectors, addressed by internal `u32` ids
/// and split into shards (`0..ANN_SHARDS`), each an index of its own.
pub trait VectorIndex: Send + Sync {
    /// Backend name for logs and benchmarks.
    fn name(&self) -> &'static str;
    /// Stages a vector in `shard`. It becomes searchable after [`VectorIndex::build`].
    fn add(&self, wtxn: &mut RwTxn, shard: u16, id: u32, vector: &[f32]) -> Result<()>;
    /// Removes a vector from `shard`. Takes effect after [`VectorIndex::build`].
    fn remove(&self, wtxn: &mut RwTxn, shard: u16, id: u32) -> Result<bool>;
    /// Incrementally (re)builds `shard` for everything staged in it since its last build.
    fn build(&self, wtxn: &mut RwTxn, shard: u16) -> Result<()>;
    /// Ids currently searchable in the built structure of `shard`.
    fn indexed(&self, rtxn: &RoTxn, shard: u16) -> Result<RoaringBitmap>;
    /// The `k` nearest built items of `shard` among `candidates`, as (id, cosine similarity),
    /// best first.
    fn search(
        &self,
        rtxn: &RoTxn,
        shard: u16,
        query: &[f32],
        k: usize,
        candidates: &RoaringBitmap,
    ) -> Result<Vec<(u32, f32)>>;
}

/// arroy (random-projection trees in LMDB) with cosine distance; a shard is an arroy index.
pub struct ArroyIndex {
    pub(crate) db: arroy::Database<'static, Cosine>,
    dims: usize,
    /// Multiplier on arroy's default `search_k`; higher trades latency for recall.
    pub oversampling: usize,
}

impl ArroyIndex {
    /// Wraps an opened arroy database.
    pub fn new(db: arroy::Database<'static, Cosine>, dims: usize) -> Self {
        ArroyIndex {
            db,
            dims,
            oversampling: 4,
        }
    }

    /// LMDB statistics of the arroy database.
    pub fn stat(&self, rtxn: &RoTxn) -> Result<heed::DatabaseStat> {
        Ok(self
            .db
            .remap_types::<heed::types::Bytes, heed::types::Bytes>()
            .stat(rtxn)?)
    }

    /// Drops every shard (a layout migration rebuilds them from the vectors).
    pub fn clear(&self, wtxn: &mut RwTxn) -> Result<()> {
        Ok(self.db.clear(wtxn)?)
    }

    /// Whether nothing is stored in any shard.
    pub fn is_empty(&self, rtxn: &RoTxn) -> Result<bool> {
        Ok(self.db.is_empty(rtxn)?)
    }

    fn writer(&self, shard: u16) -> arroy::Writer<Cosine> {
        arroy::Writer::new(self.db, shard, self.dims)
    }

    fn reader<'t>(&self, rtxn: &'t RoTxn, shard: u16) -> Result<Option<arroy::Reader<'t, Cosine>>> {
        match arroy::Reader::<Cosine>::open(rtxn, shard, self.db) {
            Ok(r) => Ok(Some(r)),
            Err(arroy::Error::MissingMetadata(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

impl VectorIndex for ArroyIndex {
    fn name(&self) -> &'static str {
        "arroy"
    }

    fn add(&self, wtxn: &mut RwTxn, shard: u16, id: u32, vector: &[f32]) -> Result<()> {
        Ok(self.writer(shard).add_item(wtxn, id, vector)?)
    }

    fn remove(&self, wtxn: &mut RwTxn, shard: u16, id: u32) -> Result<bool> {
        Ok(self.writer(shard).del_item(wtxn, id)?)
    }

    fn build(&self, wtxn: &mut RwTxn, shard: u16) -> Result<()> {
        let w = self.writer(shard);
        if w.need_build(wtxn)? {
            let mut rng = StdRng::seed_from_u64(0x6d656d6f73 ^ shard as u64);
            w.builder(&mut rng).build(wtxn)?;
        }
        Ok(())
    }

    fn indexed(&self, rtxn: &RoTxn, shard: u16) -> Result<RoaringBitmap> {
        Ok(self
            .reader(rtxn, shard)?
            .map(|r| r.item_ids().clone())
            .unwrap_or_default())
    }

    fn search(
        &self,
        rtxn: &RoTxn,
        shard: u16,
        query: &[f32],
        k: usize,
        candidates: &RoaringBitmap,
    ) -> Result<Vec<(u32, f32)>> {
        if k == 0 || candidates.is_empty() {
            return Ok(Vec::new());
        }
        let Some(reader) = self.reader(rtxn, shard)? else {
            return Ok(Vec::new());
        };
        if reader.item_ids().is_disjoint(candidates) {
            return Ok(Vec::new());
        }
        let mut q = reader.nns(k);
        q.candidates(candidates);
        if let Some(o) = std::num::NonZeroUsize::new(self.oversampling) {
            q.oversampling(o);
        }
        let hits = q.by_vector(rtxn, query)?;
        // arroy's cosine distance is (1 - cos) / 2.
        Ok(hits
            .into_iter()
            .map(|(id, d)| (id, 1.0 - 2.0 * d))
            .collect())
    }
}

/// Dot product (= cosine for unit vectors).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent sums: the shape LLVM vectorises (one sum cannot be reordered).
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

/// Dot product of a vector with little-endian f32 bytes (as stored), without allocating.
pub fn dot_bytes(a: &[f32], b: &[u8]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = b.chunks_exact(32).zip(a.chunks_exact(8));
    let mut done = 0;
    for (cb, ca) in chunks {
        for i in 0..8 {
            let x = f32::from_le_bytes([cb[4 * i], cb[4 * i + 1], cb[4 * i + 2], cb[4 * i + 3]]);
            acc[i] += x * ca[i];
        }
        done += 8;
    }
    let mut sum: f32 = acc.iter().sum();
    for (i, x) in a.iter().enumerate().skip(done) {
        if let Some(c) = b.get(4 * i..4 * i + 4) {
            sum += x * f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
    }
    sum
}

/// Encodes a vector as little-endian f32 bytes.
pub fn vec_to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Decodes little-endian f32 bytes.
pub fn bytes_to_vec(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}
