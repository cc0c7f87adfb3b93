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

/// An approximate-nearest-neighbour index over unit vectors, addressed by internal `u32` ids.
pub trait VectorIndex: Send + Sync {
    /// Backend name for logs and benchmarks.
    fn name(&self) -> &'static str;
    /// Stages a vector. It becomes searchable through the index after [`VectorIndex::build`].
    fn add(&self, wtxn: &mut RwTxn, id: u32, vector: &[f32]) -> Result<()>;
    /// Removes a vector. Takes effect after [`VectorIndex::build`].
    fn remove(&self, wtxn: &mut RwTxn, id: u32) -> Result<bool>;
    /// Incrementally (re)builds the structure for everything staged since the last build.
    fn build(&self, wtxn: &mut RwTxn) -> Result<()>;
    /// Ids currently searchable in the built structure.
    fn indexed(&self, rtxn: &RoTxn) -> Result<RoaringBitmap>;
    /// The `k` nearest built items among `candidates`, as (id, cosine similarity), best first.
    fn search(
        &self,
        rtxn: &RoTxn,
        query: &[f32],
        k: usize,
        candidates: &RoaringBitmap,
    ) -> Result<Vec<(u32, f32)>>;
}

/// arroy (random-projection trees in LMDB) with cosine distance.
pub struct ArroyIndex {
    db: arroy::Database<'static, Cosine>,
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

    fn writer(&self) -> arroy::Writer<Cosine> {
        arroy::Writer::new(self.db, 0, self.dims)
    }
}

impl VectorIndex for ArroyIndex {
    fn name(&self) -> &'static str {
        "arroy"
    }

    fn add(&self, wtxn: &mut RwTxn, id: u32, vector: &[f32]) -> Result<()> {
        Ok(self.writer().add_item(wtxn, id, vector)?)
    }

    fn remove(&self, wtxn: &mut RwTxn, id: u32) -> Result<bool> {
        Ok(self.writer().del_item(wtxn, id)?)
    }

    fn build(&self, wtxn: &mut RwTxn) -> Result<()> {
        let w = self.writer();
        if w.need_build(wtxn)? {
            let mut rng = StdRng::seed_from_u64(0x6d656d6f73);
            w.builder(&mut rng).build(wtxn)?;
        }
        Ok(())
    }

    fn indexed(&self, rtxn: &RoTxn) -> Result<RoaringBitmap> {
        match arroy::Reader::<Cosine>::open(rtxn, 0, self.db) {
            Ok(r) => Ok(r.item_ids().clone()),
            Err(arroy::Error::MissingMetadata(_)) => Ok(RoaringBitmap::new()),
            Err(e) => Err(e.into()),
        }
    }

    fn search(
        &self,
        rtxn: &RoTxn,
        query: &[f32],
        k: usize,
        candidates: &RoaringBitmap,
    ) -> Result<Vec<(u32, f32)>> {
        let reader = match arroy::Reader::<Cosine>::open(rtxn, 0, self.db) {
            Ok(r) => r,
            Err(arroy::Error::MissingMetadata(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        if k == 0 || candidates.is_empty() {
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
    a.iter().zip(b).map(|(x, y)| x * y).sum()
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
