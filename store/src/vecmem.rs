//! The RAM-resident vector index: per cube, every vector as a 1-bit sign code and an int8 code,
//! loaded lazily from LMDB and bounded by a memory budget (least recently used cubes are
//! evicted).
//!
//! A search scans the cube's candidates in three steps: Hamming distance on the sign codes picks
//! a shortlist (skipped for small cubes), int8 dot products re-rank it, and the best few are
//! scored exactly with their f32 vectors read from the caller's LMDB snapshot. The codes only
//! *choose* candidates: every returned score is exact and comes from the snapshot, so a code
//! that is stale (a vector replaced after the cube was loaded) can cost recall, never a wrong
//! score, and an id the caller's snapshot does not hold is never returned.
//!
//! Codes follow the store without hooks into its write transactions: ids only grow, so every
//! candidate above the highest loaded id is new — it is read from the snapshot, scored exactly
//! and appended. Replaced vectors are marked stale by [`VecMem::invalidate`] (called by
//! `Store::update`) and re-read on the next search; deleted ids drop out because candidates come
//! from the snapshot's bitmaps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use roaring::RoaringBitmap;

mod lsh;

/// Near-duplicate probes use the cube's LSH index above this many candidates; below it they
/// score every candidate's int8 code.
const LSH_ABOVE: usize = 1024;

/// Tuning of the RAM index.
#[derive(Debug, Clone, Copy)]
pub struct VecMemOptions {
    /// Bytes of codes kept in RAM for all cubes together; least recently used cubes are
    /// evicted beyond it. A cube larger than the whole budget is never loaded (searched by the
    /// persisted index and exact reads instead).
    pub budget_bytes: usize,
    /// Cubes with at most this many candidates skip the sign-code step (int8 for all).
    pub exact_below: usize,
    /// Sign-code shortlist: this many candidates per requested result (at least 200).
    pub shortlist_factor: usize,
    /// int8 re-ranking keeps this many per requested result for the exact f32 rescoring.
    pub rescore_factor: usize,
}

impl Default for VecMemOptions {
    fn default() -> Self {
        VecMemOptions {
            budget_bytes: 512 << 20,
            exact_below: 4096,
            shortlist_factor: 40,
            rescore_factor: 4,
        }
    }
}

/// One cube's codes. Ids are kept sorted (they only grow), so a candidate bitmap is matched by
/// a merge walk.
#[derive(Default)]
struct Codes {
    ids: Vec<u32>,
    /// `words` u64 sign bits per vector.
    signs: Vec<u64>,
    /// `dims` int8 values per vector.
    q8: Vec<i8>,
    /// Dequantisation scale per vector.
    scales: Vec<f32>,
    /// The near-duplicate index over the positions, built on the cube's first probe and kept
    /// up to date from then on (`None` until then, and after an insertion in the middle).
    lsh: Option<lsh::Lsh>,
}

impl Codes {
    fn bytes(&self, dims: usize) -> usize {
        self.ids.len() * bytes_per_vector(dims) + self.lsh.as_ref().map_or(0, lsh::Lsh::bytes)
    }

    /// Builds the LSH index from the int8 codes (dequantised), when it is missing.
    fn ensure_lsh(&mut self, dims: usize, rot: &lsh::Rotation) {
        if self.lsh.as_ref().is_some_and(|l| l.len() == self.ids.len()) {
            return;
        }
        let mut v = vec![0f32; dims];
        let keys = (0..self.ids.len())
            .map(|p| {
                let s = self.scales[p];
                for (x, q) in v.iter_mut().zip(&self.q8[p * dims..(p + 1) * dims]) {
                    *x = *q as f32 * s;
                }
                rot.keys(&v)
            })
            .collect();
        self.lsh = Some(lsh::Lsh::build(keys));
    }

    fn max_id(&self) -> Option<u32> {
        self.ids.last().copied()
    }

    fn push(&mut self, dims: usize, keys: &dyn Fn(&[f32]) -> lsh::Keys, id: u32, v: &[f32]) {
        let words = dims.div_ceil(64);
        let (q, scale) = quantize(v);
        let new_signs = signs(v, words);
        match self.ids.binary_search(&id) {
            Ok(pos) => {
                self.q8[pos * dims..(pos + 1) * dims].copy_from_slice(&q);
                self.scales[pos] = scale;
                self.signs[pos * words..(pos + 1) * words].copy_from_slice(&new_signs);
                if let Some(l) = &mut self.lsh {
                    l.set(pos, keys(v));
                }
            }
            Err(pos) if pos == self.ids.len() => {
                self.ids.push(id);
                self.q8.extend_from_slice(&q);
                self.scales.push(scale);
                self.signs.extend_from_slice(&new_signs);
                if let Some(l) = &mut self.lsh {
                    l.set(pos, keys(v));
                }
            }
            Err(pos) => {
                // Positions after it shift: the LSH index is rebuilt on the next probe.
                self.lsh = None;
                self.ids.insert(pos, id);
                self.q8.splice(pos * dims..pos * dims, q);
                self.scales.insert(pos, scale);
                self.signs
                    .splice(pos * words..pos * words, new_signs.iter().copied());
            }
        }
    }
}

struct Entry {
    codes: Arc<RwLock<Codes>>,
    last_used: u64,
    /// Bytes of its codes at the last search.
    bytes: usize,
}

/// The RAM-resident vector index of a store (see the module docs).
pub struct VecMem {
    dims: usize,
    opts: VecMemOptions,
    rotation: lsh::Rotation,
    /// LSH keys of recent probe queries by a hash of the vector's bits: a draft probes before
    /// it is stored, and its keys are taken from here when its vector joins the codes.
    probed: Mutex<HashMap<u64, lsh::Keys>>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    cubes: HashMap<String, Entry>,
    /// Ids whose vector was replaced, per cube, not yet re-read.
    stale: HashMap<String, RoaringBitmap>,
    tick: u64,
    evictions: u64,
    /// Bytes of all cubes' codes, as of their last searches.
    total: usize,
}

/// Nearest neighbours as (id, exact cosine), best first.
pub type Hits = Vec<(u32, f32)>;

/// A probe for near duplicates: only vectors whose cosine may reach `min_cosine` matter.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    /// Candidates whose int8 estimate is below this by more than the quantisation error can
    /// bound are not scored exactly (they cannot reach it).
    pub min_cosine: f32,
}

/// What a search needs from the store: the candidates' f32 vectors from the caller's snapshot.
pub trait VectorSource {
    /// The vector of `id`, if the snapshot has one.
    fn vector(&self, id: u32) -> crate::Result<Option<Vec<f32>>>;

    /// The exact dot product of `query` with the vector of `id` (a source that holds the
    /// vectors as bytes scores them in place, without a copy).
    fn dot(&self, id: u32, query: &[f32]) -> crate::Result<Option<f32>> {
        Ok(self.vector(id)?.map(|v| crate::vector::dot(query, &v)))
    }
}

/// Counters for metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct VecMemStats {
    /// Cubes loaded.
    pub cubes: usize,
    /// Vectors held.
    pub vectors: usize,
    /// Bytes of codes held.
    pub bytes: usize,
    /// Cubes evicted since start.
    pub evictions: u64,
}

impl VecMem {
    /// An empty index for vectors of `dims` dimensions.
    pub fn new(dims: usize, opts: VecMemOptions) -> VecMem {
        VecMem {
            dims,
            opts,
            rotation: lsh::Rotation::new(dims),
            probed: Mutex::new(HashMap::new()),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// RAM per vector: id, scale, int8 code and sign code.
    pub fn bytes_per_vector(&self) -> usize {
        bytes_per_vector(self.dims)
    }

    /// Marks a vector as replaced: the next search of its cube re-reads it.
    pub fn invalidate(&self, cube: &str, id: u32) {
        let mut g = self.lock();
        if g.cubes.contains_key(cube) {
            g.stale.entry(cube.to_string()).or_default().insert(id);
        }
    }

    /// Forgets a cube's codes (after a cube is dropped).
    pub fn forget(&self, cube: &str) {
        let mut g = self.lock();
        if let Some(e) = g.cubes.remove(cube) {
            g.total = g.total.saturating_sub(e.bytes);
        }
        g.stale.remove(cube);
    }

    /// Counters.
    pub fn stats(&self) -> VecMemStats {
        let g = self.lock();
        let mut s = VecMemStats {
            cubes: g.cubes.len(),
            evictions: g.evictions,
            ..Default::default()
        };
        for e in g.cubes.values() {
            let c = e.codes.read().unwrap_or_else(|p| p.into_inner());
            s.vectors += c.ids.len();
            s.bytes += c.bytes(self.dims);
        }
        s
    }

    /// The LSH keys of a probe's query, remembered for when the vector is stored.
    fn probe_keys(&self, v: &[f32]) -> lsh::Keys {
        let k = self.rotation.keys(v);
        let mut m = self.probed.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= 1 << 16 {
            m.clear();
        }
        m.insert(bits_hash(v), k);
        k
    }

    /// The LSH keys of a vector joining the codes: remembered from its probe, or computed.
    fn stored_keys(&self, v: &[f32]) -> lsh::Keys {
        let known = self
            .probed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&bits_hash(v));
        known.unwrap_or_else(|| self.rotation.keys(v))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `k` nearest of `candidates` (ids of `cube` in the caller's snapshot) to the unit
    /// vector `query`, as (id, exact cosine), best first. `all` is the cube's whole id set in
    /// the same snapshot (what a load reads). Returns `None` when the cube does not fit the
    /// budget (the caller falls back to its persisted index).
    pub fn search(
        &self,
        src: &dyn VectorSource,
        cube: &str,
        all: &RoaringBitmap,
        query: &[f32],
        k: usize,
        candidates: &RoaringBitmap,
    ) -> crate::Result<Option<Vec<(u32, f32)>>> {
        Ok(self
            .search_many(src, cube, all, &[query], k, candidates, None)?
            .map(|mut v| v.pop().unwrap_or_default()))
    }

    /// [`VecMem::search`] for several queries over the same candidates (the codes are brought
    /// up to date and the candidates located once). With a [`Probe`] (near-duplicate
    /// detection, where only the very closest vectors matter), a cube of more than
    /// `LSH_ABOVE` candidates is narrowed by its LSH index (a cost that does not grow with the
    /// cube), a smaller one has every int8 code scored, and only the candidates that may reach
    /// the probe's cosine are scored exactly.
    #[allow(clippy::too_many_arguments)]
    pub fn search_many(
        &self,
        src: &dyn VectorSource,
        cube: &str,
        all: &RoaringBitmap,
        queries: &[&[f32]],
        k: usize,
        candidates: &RoaringBitmap,
        probe: Option<Probe>,
    ) -> crate::Result<Option<Vec<Hits>>> {
        if k == 0 || candidates.is_empty() || queries.is_empty() {
            return Ok(Some(vec![Vec::new(); queries.len()]));
        }
        if all.len() as usize * self.bytes_per_vector() > self.opts.budget_bytes {
            return Ok(None);
        }
        let (codes, stale) = self.entry(cube);
        // Bring the codes up to date with this snapshot: new ids (above the highest loaded id,
        // or a cube seen for the first time) and replaced vectors.
        {
            let fresh = {
                let c = codes.read().unwrap_or_else(|p| p.into_inner());
                let mut fresh = match c.max_id() {
                    // Nothing above the highest loaded id (the common case): no copy of `all`.
                    Some(m) if all.max().is_none_or(|x| x <= m) => RoaringBitmap::new(),
                    Some(m) => all.range(m + 1..).collect(),
                    None => all.clone(),
                };
                if !stale.is_empty() {
                    fresh |= &(&stale & all);
                }
                fresh
            };
            if !fresh.is_empty() {
                let mut read = Vec::with_capacity(fresh.len() as usize);
                for id in &fresh {
                    if let Some(v) = src.vector(id)? {
                        read.push((id, v));
                    }
                }
                let mut c = codes.write().unwrap_or_else(|p| p.into_inner());
                for (id, v) in &read {
                    c.push(self.dims, &|v| self.stored_keys(v), *id, v);
                }
            }
        }
        if probe.is_some() {
            let mut c = codes.write().unwrap_or_else(|p| p.into_inner());
            if c.ids.len() > LSH_ABOVE {
                c.ensure_lsh(self.dims, &self.rotation);
            }
        }
        let bytes = codes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .bytes(self.dims);
        self.account(cube, bytes);
        let c = codes.read().unwrap_or_else(|p| p.into_inner());
        let pos = positions(&c, candidates);
        let ranked: Vec<Vec<u32>> = queries
            .iter()
            .map(|q| self.rank(&c, &pos, q, k, probe))
            .collect();
        drop(c);
        // Exact scores from the snapshot.
        let mut out = Vec::with_capacity(queries.len());
        for (q, hits) in queries.iter().zip(ranked) {
            let mut exact = Vec::with_capacity(hits.len());
            for id in hits {
                if let Some(d) = src.dot(id, q)? {
                    exact.push((id, d));
                }
            }
            out.push(crate::lexical::top_k(exact, k));
        }
        Ok(Some(out))
    }

    /// The cube's codes (created empty if absent) and the ids marked stale since the last
    /// search (taken).
    fn entry(&self, cube: &str) -> (Arc<RwLock<Codes>>, RoaringBitmap) {
        let mut g = self.lock();
        g.tick += 1;
        let tick = g.tick;
        let stale = g.stale.remove(cube).unwrap_or_default();
        let e = g.cubes.entry(cube.to_string()).or_insert_with(|| Entry {
            codes: Arc::default(),
            last_used: tick,
            bytes: 0,
        });
        e.last_used = tick;
        (e.codes.clone(), stale)
    }

    /// Records a cube's size, then evicts least recently used cubes (never `cube` itself)
    /// until the codes fit the budget.
    fn account(&self, cube: &str, bytes: usize) {
        let mut g = self.lock();
        let before = match g.cubes.get_mut(cube) {
            Some(e) => std::mem::replace(&mut e.bytes, bytes),
            None => return,
        };
        g.total = g.total + bytes - before.min(g.total + bytes);
        while g.total > self.opts.budget_bytes {
            let oldest = g
                .cubes
                .iter()
                .filter(|(c, _)| c.as_str() != cube)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(c, e)| (c.clone(), e.bytes));
            let Some((victim, b)) = oldest else {
                return;
            };
            g.cubes.remove(&victim);
            g.stale.remove(&victim);
            g.total -= b;
            g.evictions += 1;
        }
    }

    /// The ids worth scoring exactly, best first by their int8 score.
    fn rank(
        &self,
        c: &Codes,
        pos: &[u32],
        query: &[f32],
        k: usize,
        probe: Option<Probe>,
    ) -> Vec<u32> {
        let dims = self.dims;
        let words = dims.div_ceil(64);
        let rescore = (k * self.opts.rescore_factor).max(k + 16);
        let shortlist = match probe {
            Some(_) => None,
            None if pos.len() > self.opts.exact_below.max(rescore) => {
                Some((k * self.opts.shortlist_factor).max(200))
            }
            None => None,
        };
        let near: Vec<u32>;
        let pos = match (probe, &c.lsh) {
            (Some(_), Some(l)) if pos.len() > LSH_ABOVE && l.len() == c.ids.len() => {
                // Positions sharing a band with the query, among the candidates.
                let mut found = Vec::new();
                l.candidates(&self.probe_keys(query), &mut found);
                found.retain(|p| pos.binary_search(p).is_ok());
                near = found;
                &near
            }
            _ => pos,
        };
        let short: Vec<u32>;
        let pos = match shortlist.filter(|s| pos.len() > *s) {
            None => pos,
            Some(shortlist) => {
                // Sign codes: Hamming distance ranks a shortlist. Distances are small integers,
                // so the shortlist is cut by a histogram (no sort, no pairs allocated).
                let qs = signs(query, words);
                let mut dist = Vec::new();
                kernels::hamming_many(&qs, &c.signs, pos, &mut dist);
                short = nearest_by_distance(&dist, shortlist)
                    .into_iter()
                    .map(|i| pos[i])
                    .collect();
                &short
            }
        };
        let (q, qscale) = quantize(query);
        let mut scored: Vec<(f32, u32)> = pos
            .iter()
            .map(|&p| {
                let p = p as usize;
                let d = kernels::dot_i8(&q, &c.q8[p * dims..(p + 1) * dims]);
                (d as f32 * qscale * c.scales[p], p as u32)
            })
            .collect();
        if let Some(probe) = probe {
            // Rounding moves each int8 component by at most half a step, so a code is off its
            // vector by at most `scale / 2 · √dims` (Euclidean), and the estimate of a dot
            // product of unit vectors by at most `eq + ev · (1 + eq)`. A candidate below the
            // threshold by more than that cannot reach it exactly.
            let half_root = 0.5 * (dims as f32).sqrt();
            let eq = qscale * half_root;
            scored.retain(|&(est, p)| {
                let ev = c.scales[p as usize] * half_root;
                est + eq + ev * (1.0 + eq) + 1e-4 >= probe.min_cosine
            });
        }
        let keep = rescore.min(scored.len());
        if keep == 0 {
            return Vec::new();
        }
        scored.select_nth_unstable_by(keep - 1, |a, b| b.0.total_cmp(&a.0));
        scored.truncate(keep);
        scored.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        scored.into_iter().map(|(_, p)| c.ids[p as usize]).collect()
    }
}

/// A hash of a vector's exact bits (a collision costs LSH recall for one vector, never a
/// wrong score).
fn bits_hash(v: &[f32]) -> u64 {
    v.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ u64::from(x.to_bits())).wrapping_mul(0x0100_0000_01b3)
    })
}

/// RAM per vector of `dims` dimensions: id, scale, int8 code and sign code.
fn bytes_per_vector(dims: usize) -> usize {
    4 + 4 + dims + 8 * dims.div_ceil(64)
}

/// Positions of the candidates in the codes (a merge walk of two sorted lists).
fn positions(c: &Codes, candidates: &RoaringBitmap) -> Vec<u32> {
    let mut pos: Vec<u32> = Vec::with_capacity(candidates.len().min(c.ids.len() as u64) as usize);
    let mut it = c.ids.iter().enumerate().peekable();
    for id in candidates {
        while let Some(&(_, &x)) = it.peek() {
            if x < id {
                it.next();
            } else {
                break;
            }
        }
        match it.peek() {
            Some(&(i, &x)) if x == id => pos.push(i as u32),
            Some(_) => {}
            None => break,
        }
    }
    pos
}

/// Symmetric int8 quantisation: `v ≈ q * scale`.
fn quantize(v: &[f32]) -> (Vec<i8>, f32) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 || !max.is_finite() {
        return (vec![0; v.len()], 0.0);
    }
    let inv = 127.0 / max;
    (
        v.iter()
            .map(|x| (x * inv).round().clamp(-127.0, 127.0) as i8)
            .collect(),
        max / 127.0,
    )
}

/// Indices of the `n` smallest of `dist` (ties at the cut broken by position): a counting
/// selection over the distances' histogram.
fn nearest_by_distance(dist: &[u16], n: usize) -> Vec<usize> {
    if dist.len() <= n {
        return (0..dist.len()).collect();
    }
    let max = dist.iter().copied().max().unwrap_or(0) as usize;
    let mut hist = vec![0usize; max + 1];
    for &d in dist {
        hist[d as usize] += 1;
    }
    // The cut: the smallest distance at which `n` are reached.
    let mut cut = 0;
    let mut below = 0;
    for (d, &h) in hist.iter().enumerate() {
        if below + h >= n {
            cut = d;
            break;
        }
        below += h;
    }
    let mut at_cut = n - below;
    let mut out = Vec::with_capacity(n);
    for (i, &d) in dist.iter().enumerate() {
        let d = d as usize;
        if d < cut {
            out.push(i);
        } else if d == cut && at_cut > 0 {
            out.push(i);
            at_cut -= 1;
        }
    }
    out
}

/// Sign bits, 64 per word.
fn signs(v: &[f32], words: usize) -> Vec<u64> {
    let mut out = vec![0u64; words];
    for (i, x) in v.iter().enumerate() {
        if *x > 0.0 {
            out[i / 64] |= 1 << (i % 64);
        }
    }
    out
}

/// The scan kernels, compiled twice: for AVX2 + POPCNT (chosen at run time when the CPU has
/// them) and for the portable baseline the binary is built for.
mod kernels {
    #[inline(always)]
    fn hamming_generic(a: &[u64], b: &[u64]) -> u32 {
        // Wrapping adds (they cannot wrap: at most 64 per word): with overflow checks on, as in
        // the release and bench profiles, a checked sum is not vectorised.
        a.iter()
            .zip(b)
            .fold(0u32, |s, (x, y)| s.wrapping_add((x ^ y).count_ones()))
    }

    #[inline(always)]
    fn dot_i8_generic(a: &[i8], b: &[i8]) -> i32 {
        // i16 products summed in i32 lanes: the shape LLVM vectorises to pmaddwd. Wrapping
        // arithmetic, which cannot wrap here (|product| ≤ 16,129, so a lane holds 133,000 of
        // them): with overflow checks on, as in the release and bench profiles, checked adds
        // are not vectorised (measured: one scalar multiply and overflow branch per byte).
        let mut acc = [0i32; 16];
        let ca = a.chunks_exact(16);
        let cb = b.chunks_exact(16);
        let (ra, rb) = (ca.remainder(), cb.remainder());
        for (x, y) in ca.zip(cb) {
            for i in 0..16 {
                acc[i] = acc[i].wrapping_add((x[i] as i32).wrapping_mul(y[i] as i32));
            }
        }
        let mut s = acc.iter().fold(0i32, |s, x| s.wrapping_add(*x));
        for (x, y) in ra.iter().zip(rb) {
            s = s.wrapping_add((*x as i32).wrapping_mul(*y as i32));
        }
        s
    }

    #[inline(always)]
    fn hamming_many_generic(q: &[u64], signs: &[u64], pos: &[u32], out: &mut Vec<u16>) {
        let w = q.len();
        out.clear();
        out.reserve(pos.len());
        for &p in pos {
            let s = &signs[p as usize * w..(p as usize + 1) * w];
            out.push(hamming_generic(q, s) as u16);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,popcnt")]
    fn hamming_many_avx2(q: &[u64], signs: &[u64], pos: &[u32], out: &mut Vec<u16>) {
        hamming_many_generic(q, signs, pos, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn dot_i8_avx2(a: &[i8], b: &[i8]) -> i32 {
        dot_i8_generic(a, b)
    }

    #[cfg(target_arch = "x86_64")]
    fn has_avx2() -> bool {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("popcnt")
        })
    }

    /// Hamming distances of the sign code `q` to the codes at positions `pos` of `signs`
    /// (`q.len()` words each), into `out`: one loop inside the kernel, no call per code.
    pub fn hamming_many(q: &[u64], signs: &[u64], pos: &[u32], out: &mut Vec<u16>) {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU supports AVX2 and POPCNT (checked above).
            return unsafe { hamming_many_avx2(q, signs, pos, out) };
        }
        hamming_many_generic(q, signs, pos, out)
    }

    /// Dot product of two int8 codes.
    pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU supports AVX2 (checked above).
            return unsafe { dot_i8_avx2(a, b) };
        }
        dot_i8_generic(a, b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Mem(HashMap<u32, Vec<f32>>);
    impl VectorSource for Mem {
        fn vector(&self, id: u32) -> crate::Result<Option<Vec<f32>>> {
            Ok(self.0.get(&id).cloned())
        }
    }

    fn unit(seed: u64, dims: usize) -> Vec<f32> {
        // xorshift: deterministic, no dependency.
        let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
        let mut v: Vec<f32> = (0..dims)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 2000) as f32 / 1000.0 - 1.0
            })
            .collect();
        let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
        v.iter_mut().for_each(|a| *a /= n);
        v
    }

    #[test]
    fn kernels_agree_with_plain_loops() {
        let a: Vec<i8> = (0..384).map(|i| ((i * 37) % 255 - 127) as i8).collect();
        let b: Vec<i8> = (0..384).map(|i| ((i * 91) % 255 - 127) as i8).collect();
        let plain: i32 = a.iter().zip(&b).map(|(x, y)| *x as i32 * *y as i32).sum();
        assert_eq!(kernels::dot_i8(&a, &b), plain);
        let x = [u64::MAX, 0, 0b1011];
        let codes = [0, 0, 0b0001, u64::MAX, 0, 0b1011, 0, u64::MAX, 0];
        let mut d = Vec::new();
        kernels::hamming_many(&x, &codes, &[2, 0, 1], &mut d);
        assert_eq!(d, vec![64 + 64 + 3, 64 + 2, 0]);
    }

    #[test]
    fn counting_selection_keeps_the_nearest() {
        let dist: Vec<u16> = vec![9, 3, 7, 3, 0, 12, 3, 5];
        let mut got = nearest_by_distance(&dist, 4);
        got.sort_unstable();
        // 0 at 4, the 3s at 1, 3 and 6.
        assert_eq!(got, vec![1, 3, 4, 6]);
        let mut got = nearest_by_distance(&dist, 3);
        got.sort_unstable();
        assert_eq!(got, vec![1, 3, 4]);
        assert_eq!(nearest_by_distance(&dist, 8).len(), 8);
        assert_eq!(nearest_by_distance(&dist, 20).len(), 8);
    }

    #[test]
    fn finds_exact_neighbours_follows_new_ids_and_respects_candidates() {
        // 100 topics of 50 vectors each: a topic's centre plus noise, as embeddings of
        // related texts cluster.
        let dims = 128;
        let noisy = |centre: u64, seed: u64| {
            let c = unit(centre, dims);
            let n = unit(seed, dims);
            let mut v: Vec<f32> = c.iter().zip(&n).map(|(a, b)| a + 0.6 * b).collect();
            let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
            v.iter_mut().for_each(|a| *a /= norm);
            v
        };
        let mut mem = Mem(HashMap::new());
        for id in 0..5000u32 {
            mem.0
                .insert(id, noisy(id as u64 / 50, 1_000_000 + id as u64));
        }
        let all: RoaringBitmap = (0..5000u32).collect();
        let vm = VecMem::new(
            dims,
            VecMemOptions {
                exact_below: 100,
                ..Default::default()
            },
        );
        // A query equal to a stored vector finds it first with cosine 1.
        let q = mem.0[&1234].clone();
        let hits = vm.search(&mem, "c", &all, &q, 5, &all).unwrap().unwrap();
        assert_eq!(hits[0].0, 1234);
        assert!((hits[0].1 - 1.0).abs() < 1e-5);
        // Exact top 10 vs the index's: recall on random vectors.
        let mut recall = 0;
        for s in 0..20u64 {
            let q = noisy(s * 5, 2_000_000 + s);
            let mut exact: Vec<(u32, f32)> = mem
                .0
                .iter()
                .map(|(id, v)| (*id, crate::vector::dot(&q, v)))
                .collect();
            exact.sort_by(|a, b| b.1.total_cmp(&a.1));
            let got = vm.search(&mem, "c", &all, &q, 10, &all).unwrap().unwrap();
            recall += got
                .iter()
                .filter(|(id, _)| exact[..10].iter().any(|(e, _)| e == id))
                .count();
            // Scores are exact.
            for (id, s) in &got {
                assert!((s - crate::vector::dot(&q, &mem.0[id])).abs() < 1e-6);
            }
        }
        assert!(recall >= 190, "recall {recall}/200");
        // A new id (committed after the load) is found on the next search.
        mem.0.insert(9000, unit(777, dims));
        let mut all2 = all.clone();
        all2.insert(9000);
        let q = mem.0[&9000].clone();
        let hits = vm.search(&mem, "c", &all2, &q, 1, &all2).unwrap().unwrap();
        assert_eq!(hits[0].0, 9000);
        // Candidates restrict the answer.
        let only: RoaringBitmap = [1, 2, 3].into_iter().collect();
        let hits = vm.search(&mem, "c", &all2, &q, 10, &only).unwrap().unwrap();
        assert!(hits.iter().all(|(id, _)| only.contains(*id)));
        assert_eq!(hits.len(), 3);
        // A replaced vector is re-read once invalidated.
        mem.0.insert(2, q.clone());
        vm.invalidate("c", 2);
        let hits = vm.search(&mem, "c", &all2, &q, 2, &only).unwrap().unwrap();
        assert_eq!(hits[0].0, 2);
        assert!((hits[0].1 - 1.0).abs() < 1e-5);
    }

    #[test]
    fn a_probe_scores_exactly_only_what_may_reach_its_threshold() {
        // 60 random vectors plus, for one query, vectors at cosines from 0.90 to 0.99.
        let dims = 384;
        let q = unit(42, dims);
        let noise = unit(4242, dims);
        // Orthogonalise the noise against q, so `cos · q + sin · noise` has cosine `cos`.
        let dq = crate::vector::dot(&q, &noise);
        let mut o: Vec<f32> = noise.iter().zip(&q).map(|(n, a)| n - dq * a).collect();
        let on = o.iter().map(|a| a * a).sum::<f32>().sqrt();
        o.iter_mut().for_each(|a| *a /= on);
        let mut mem = Mem(HashMap::new());
        let cosines = [0.90f32, 0.93, 0.945, 0.955, 0.97, 0.99];
        for (i, c) in cosines.iter().enumerate() {
            let sin = (1.0 - c * c).sqrt();
            let v: Vec<f32> = q.iter().zip(&o).map(|(a, b)| c * a + sin * b).collect();
            mem.0.insert(i as u32, v);
        }
        for id in 10..70u32 {
            mem.0.insert(id, unit(id as u64 * 7, dims));
        }
        let all: RoaringBitmap = mem.0.keys().copied().collect();
        let vm = VecMem::new(dims, VecMemOptions::default());
        struct Counting<'a>(&'a Mem, std::cell::Cell<usize>);
        impl VectorSource for Counting<'_> {
            fn vector(&self, id: u32) -> crate::Result<Option<Vec<f32>>> {
                self.1.set(self.1.get() + 1);
                self.0.vector(id)
            }
        }
        // Load the codes first, so the count below is the exact rescoring only.
        vm.search(&mem, "c", &all, &q, 1, &all).unwrap().unwrap();
        let src = Counting(&mem, std::cell::Cell::new(0));
        let probe = Probe { min_cosine: 0.95 };
        let hits = vm
            .search_many(&src, "c", &all, &[&q], 10, &all, Some(probe))
            .unwrap()
            .unwrap()
            .pop()
            .unwrap();
        let mut found: Vec<u32> = hits
            .iter()
            .filter(|(_, c)| *c >= 0.95)
            .map(|(id, _)| *id)
            .collect();
        found.sort_unstable();
        assert_eq!(found, vec![3, 4, 5], "{hits:?}");
        // Without the threshold, the top 10 (and 16 more) would have been scored exactly; the
        // probe reads the three that qualify and at most the near misses within the bound.
        assert!(
            src.1.get() >= 3 && src.1.get() <= 6,
            "{} exact reads",
            src.1.get()
        );
        // A cube past LSH_ABOVE: 3,000 more random vectors; the probe goes through the LSH
        // index and still finds exactly the three, and a new near vector once it is added.
        for id in 100..3100u32 {
            mem.0.insert(id, unit(id as u64 * 13, dims));
        }
        let all: RoaringBitmap = mem.0.keys().copied().collect();
        let run = |all: &RoaringBitmap, mem: &Mem| {
            let hits = vm
                .search_many(mem, "c", all, &[&q], 10, all, Some(probe))
                .unwrap()
                .unwrap()
                .pop()
                .unwrap();
            let mut found: Vec<u32> = hits
                .iter()
                .filter(|(_, c)| *c >= 0.95)
                .map(|(id, _)| *id)
                .collect();
            found.sort_unstable();
            found
        };
        assert_eq!(run(&all, &mem), vec![3, 4, 5]);
        assert!(vm.lock().cubes["c"].codes.read().unwrap().lsh.is_some());
        let sin = (1.0f32 - 0.96 * 0.96).sqrt();
        let v: Vec<f32> = q.iter().zip(&o).map(|(a, b)| 0.96 * a + sin * b).collect();
        mem.0.insert(5000, v);
        let all: RoaringBitmap = mem.0.keys().copied().collect();
        assert_eq!(run(&all, &mem), vec![3, 4, 5, 5000]);
        // Candidates still restrict a probe.
        let only: RoaringBitmap = [4, 5000].into_iter().chain(100..200).collect();
        let hits = vm
            .search_many(&mem, "c", &all, &[&q], 10, &only, Some(probe))
            .unwrap()
            .unwrap()
            .pop()
            .unwrap();
        let mut ids: Vec<u32> = hits.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![4, 5000]);
    }

    #[test]
    fn the_budget_evicts_least_recently_used_cubes() {
        let dims = 32;
        let mut mem = Mem(HashMap::new());
        for id in 0..300u32 {
            mem.0.insert(id, unit(id as u64, dims));
        }
        let per = bytes_per_vector(dims);
        let vm = VecMem::new(
            dims,
            VecMemOptions {
                budget_bytes: per * 250,
                ..Default::default()
            },
        );
        let a: RoaringBitmap = (0..100u32).collect();
        let b: RoaringBitmap = (100..200u32).collect();
        let c: RoaringBitmap = (200..300u32).collect();
        let q = unit(1, dims);
        for (cube, ids) in [("a", &a), ("b", &b), ("c", &c)] {
            vm.search(&mem, cube, ids, &q, 3, ids).unwrap().unwrap();
        }
        let s = vm.stats();
        assert!(s.bytes <= per * 250, "{s:?}");
        assert_eq!(s.cubes, 2);
        assert_eq!(s.evictions, 1);
        // A cube larger than the whole budget is not loaded.
        let big: RoaringBitmap = (0..300u32).collect();
        assert!(vm.search(&mem, "big", &big, &q, 3, &big).unwrap().is_none());
    }
}
