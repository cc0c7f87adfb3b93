//! A BM25 index kept in LMDB.
//!
//! Postings are stored per (cube, term) in blocks: key = `cube 0x00 term 0x00 first_doc(u32 BE)`,
//! value = packed `(doc u32 LE, tf u16 LE, doc_len u16 LE)` entries sorted by doc. Keeping the
//! document length inside the posting lets a query score a term with one sequential read and
//! no per-document lookups. Per-cube statistics (document count, total length) live in `stats`.

use std::collections::HashMap;

use heed::types::Bytes;
use heed::{Database, RoTxn, RwTxn};
use roaring::RoaringBitmap;

use crate::error::Result;
use crate::text::tokenize;

/// Maximum postings per block before a block is split.
const BLOCK: usize = 512;
const ENTRY: usize = 8;
/// A batch appends to a term's last block only while it holds fewer entries than this.
const APPEND_BELOW: usize = 256;

/// BM25 parameters.
#[derive(Debug, Clone, Copy)]
pub struct Bm25Params {
    /// Term-frequency saturation.
    pub k1: f32,
    /// Length normalisation.
    pub b: f32,
}

impl Default for Bm25Params {
    fn default() -> Self {
        Bm25Params { k1: 1.5, b: 0.75 }
    }
}

/// Handle to the lexical databases.
#[derive(Clone, Copy)]
pub struct LexicalIndex {
    pub(crate) postings: Database<'static, Bytes, Bytes>,
    pub(crate) stats: Database<'static, Bytes, Bytes>,
}

fn term_prefix(cube: &str, term: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(cube.len() + term.len() + 6);
    k.extend_from_slice(cube.as_bytes());
    k.push(0);
    k.extend_from_slice(term.as_bytes());
    k.push(0);
    k
}

fn block_key(prefix: &[u8], doc: u32) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&doc.to_be_bytes());
    k
}

fn decode(block: &[u8]) -> impl Iterator<Item = (u32, u16, u16)> + '_ {
    block.chunks_exact(ENTRY).map(|e| {
        (
            u32::from_le_bytes([e[0], e[1], e[2], e[3]]),
            u16::from_le_bytes([e[4], e[5]]),
            u16::from_le_bytes([e[6], e[7]]),
        )
    })
}

fn encode(entries: &[(u32, u16, u16)]) -> Vec<u8> {
    let mut v = Vec::with_capacity(entries.len() * ENTRY);
    for (d, tf, len) in entries {
        v.extend_from_slice(&d.to_le_bytes());
        v.extend_from_slice(&tf.to_le_bytes());
        v.extend_from_slice(&len.to_le_bytes());
    }
    v
}

/// Postings of a batch kept in memory: encoded entries per term prefix (doc ids ascending) and
/// per-cube statistics deltas.
#[derive(Debug, Default)]
pub struct PostingsBuffer {
    terms: HashMap<Vec<u8>, Vec<u8>>,
    stats: HashMap<String, (u64, u64)>,
}

impl PostingsBuffer {
    /// Nothing buffered.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty() && self.stats.is_empty()
    }

    /// Adds `other`'s postings (of later documents).
    pub fn absorb(&mut self, other: PostingsBuffer) {
        for (k, v) in other.terms {
            self.terms.entry(k).or_default().extend_from_slice(&v);
        }
        for (c, (d, t)) in other.stats {
            let e = self.stats.entry(c).or_default();
            e.0 += d;
            e.1 += t;
        }
    }
}

fn term_counts(text: &str) -> (HashMap<String, u16>, u16) {
    let toks = tokenize(text);
    let len = toks.len().min(u16::MAX as usize) as u16;
    let mut tf: HashMap<String, u16> = HashMap::new();
    for t in toks {
        let e = tf.entry(t).or_default();
        *e = e.saturating_add(1);
    }
    (tf, len)
}

impl LexicalIndex {
    fn stats(&self, txn: &RoTxn, cube: &str) -> Result<(u64, u64)> {
        Ok(match self.stats.get(txn, cube.as_bytes())? {
            Some(b) if b.len() == 16 => (
                u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
                u64::from_le_bytes(b[8..].try_into().expect("8 bytes")),
            ),
            _ => (0, 0),
        })
    }

    fn put_stats(&self, wtxn: &mut RwTxn, cube: &str, docs: u64, total: u64) -> Result<()> {
        let mut v = [0u8; 16];
        v[..8].copy_from_slice(&docs.to_le_bytes());
        v[8..].copy_from_slice(&total.to_le_bytes());
        self.stats.put(wtxn, cube.as_bytes(), &v)?;
        Ok(())
    }

    /// Finds the block that should hold `doc`: the last block whose key is ≤ doc.
    fn find_block(
        &self,
        txn: &RoTxn,
        prefix: &[u8],
        doc: u32,
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let key = block_key(prefix, doc);
        Ok(match self.postings.get_lower_than_or_equal_to(txn, &key)? {
            Some((k, v)) if k.len() == prefix.len() + 4 && k.starts_with(prefix) => {
                Some((k.to_vec(), v.to_vec()))
            }
            _ => None,
        })
    }

    /// Adds a document's terms. Returns the number of terms indexed.
    pub fn add(&self, wtxn: &mut RwTxn, cube: &str, doc: u32, text: &str) -> Result<usize> {
        let (tf, len) = term_counts(text);
        for (term, n) in &tf {
            self.insert_entry(wtxn, &term_prefix(cube, term), (doc, *n, len))?;
        }
        let (docs, total) = self.stats(wtxn, cube)?;
        self.put_stats(wtxn, cube, docs + 1, total + len as u64)?;
        Ok(tf.len())
    }

    /// Buffers a new document's postings (its id above every document already indexed).
    pub fn buffer(&self, buf: &mut PostingsBuffer, cube: &str, doc: u32, text: &str) {
        let (tf, len) = term_counts(text);
        for (term, n) in &tf {
            let e = buf.terms.entry(term_prefix(cube, term)).or_default();
            e.extend_from_slice(&encode(&[(doc, *n, len)]));
        }
        let s = buf.stats.entry(cube.to_string()).or_default();
        s.0 += 1;
        s.1 += len as u64;
    }

    /// Writes buffered postings: each term's new entries are appended to its last block as
    /// bytes (documents only grow, so the block stays sorted), a full block starts a new one.
    /// Entries that do not sort after the last block (never the case for new documents) take
    /// the one-by-one path.
    pub fn flush(&self, wtxn: &mut RwTxn, buf: PostingsBuffer) -> Result<()> {
        for (prefix, new) in buf.terms {
            let Some(first_new) = decode(&new).next().map(|e| e.0) else {
                continue;
            };
            let last = self
                .postings
                .get_lower_than_or_equal_to(wtxn, &block_key(&prefix, u32::MAX))?
                .filter(|(k, _)| k.len() == prefix.len() + 4 && k.starts_with(&prefix))
                .map(|(k, v)| (k.to_vec(), v.to_vec()));
            let mut rest: &[u8] = &new;
            if let Some((k, v)) = last {
                let last_doc = decode(&v).last().map_or(0, |e| e.0);
                if first_new <= last_doc {
                    // Not an append: merge entry by entry.
                    for (doc, tf, len) in decode(&new) {
                        self.insert_entry(wtxn, &prefix, (doc, tf, len))?;
                    }
                    continue;
                }
                // Append while the block is small (copying it is cheap and it stays inside
                // one LMDB page); a bigger block is left alone and the batch starts a new one.
                let room = if v.len() / ENTRY < APPEND_BELOW {
                    (APPEND_BELOW * 2 - v.len() / ENTRY) * ENTRY
                } else {
                    0
                };
                if room > 0 {
                    let take = room.min(rest.len());
                    let mut joined = v;
                    joined.extend_from_slice(&rest[..take]);
                    self.postings.put(wtxn, &k, &joined)?;
                    rest = &rest[take..];
                }
            }
            for chunk in rest.chunks(BLOCK * ENTRY) {
                let first = decode(chunk).next().map_or(0, |e| e.0);
                self.postings.put(wtxn, &block_key(&prefix, first), chunk)?;
            }
        }
        for (cube, (docs, total)) in buf.stats {
            let (d0, t0) = self.stats(wtxn, &cube)?;
            self.put_stats(wtxn, &cube, d0 + docs, t0 + total)?;
        }
        Ok(())
    }

    fn insert_entry(&self, wtxn: &mut RwTxn, prefix: &[u8], e: (u32, u16, u16)) -> Result<()> {
        let doc = e.0;
        match self.find_block(wtxn, prefix, doc)? {
            Some((k, v)) => {
                let mut entries: Vec<_> = decode(&v).filter(|x| x.0 != doc).collect();
                let pos = entries.partition_point(|x| x.0 < doc);
                entries.insert(pos, e);
                if entries.len() > BLOCK * 2 {
                    let tail = entries.split_off(BLOCK);
                    self.postings
                        .put(wtxn, &block_key(prefix, tail[0].0), &encode(&tail))?;
                }
                self.postings.put(wtxn, &k, &encode(&entries))?;
            }
            None => {
                self.postings
                    .put(wtxn, &block_key(prefix, doc), &encode(&[e]))?;
            }
        }
        Ok(())
    }

    /// Removes a document previously added with `text`. Returns the number of postings removed.
    pub fn remove(&self, wtxn: &mut RwTxn, cube: &str, doc: u32, text: &str) -> Result<usize> {
        let (tf, len) = term_counts(text);
        let mut removed = 0;
        for term in tf.keys() {
            let prefix = term_prefix(cube, term);
            if let Some((k, v)) = self.find_block(wtxn, &prefix, doc)? {
                let entries: Vec<_> = decode(&v).filter(|e| e.0 != doc).collect();
                if entries.len() * ENTRY != v.len() {
                    removed += 1;
                    if entries.is_empty() {
                        self.postings.delete(wtxn, &k)?;
                    } else {
                        self.postings.put(wtxn, &k, &encode(&entries))?;
                    }
                }
            }
        }
        if removed > 0 {
            let (docs, total) = self.stats(wtxn, cube)?;
            self.put_stats(
                wtxn,
                cube,
                docs.saturating_sub(1),
                total.saturating_sub(len as u64),
            )?;
        }
        Ok(removed)
    }

    /// Scores `query` against the cube with BM25, keeping only documents in `candidates`.
    /// Returns up to `k` (doc, score) pairs, best first: the same documents as exhaustive
    /// scoring followed by [`top_k`], with MaxScore pruning (Turtle & Flood; see
    /// `max_score`): frequent words — "i", "the", "to" — are usually never read in full.
    pub fn search(
        &self,
        txn: &RoTxn,
        cube: &str,
        query: &str,
        k: usize,
        candidates: &RoaringBitmap,
        p: Bm25Params,
    ) -> Result<Vec<(u32, f32)>> {
        let (docs, total) = self.stats(txn, cube)?;
        if k == 0 || docs == 0 || candidates.is_empty() {
            return Ok(Vec::new());
        }
        let avgdl = (total as f32 / docs as f32).max(1.0);
        let mut terms = tokenize(query);
        terms.sort();
        terms.dedup();
        let mut cursors = Vec::with_capacity(terms.len());
        for term in terms {
            let prefix = term_prefix(cube, &term);
            let mut blocks: Vec<&[u8]> = Vec::new();
            let mut df = 0usize;
            for item in self.postings.prefix_iter(txn, &prefix)? {
                let (key, v) = item?;
                if key.len() == prefix.len() + 4 && v.len() >= ENTRY {
                    df += v.len() / ENTRY;
                    blocks.push(&v[..v.len() - v.len() % ENTRY]);
                }
            }
            if df > 0 {
                cursors.push(Cursor::new(blocks, idf(docs, df), p));
            }
        }
        Ok(max_score(cursors, k, candidates, p, avgdl))
    }
}

/// BM25 inverse document frequency of a term in `df` of `docs` documents.
fn idf(docs: u64, df: usize) -> f32 {
    let (n, df) = (docs as f32, df as f32);
    (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
}

/// A posting's BM25 contribution: `tf` occurrences in a document of `len` tokens.
fn term_score(idf: f32, tf: u16, len: u16, p: Bm25Params, avgdl: f32) -> f32 {
    let tf = tf as f32;
    let norm = p.k1 * (1.0 - p.b + p.b * len as f32 / avgdl);
    idf * tf * (p.k1 + 1.0) / (tf + norm)
}

/// A term's postings, walked in document order.
struct Cursor<'t> {
    blocks: Vec<&'t [u8]>,
    /// First document of each block.
    firsts: Vec<u32>,
    /// Current block and entry.
    b: usize,
    i: usize,
    idf: f32,
    /// Upper bound of the term's contribution (`tf / (tf + norm)` < 1).
    ub: f32,
}

fn doc_at(block: &[u8], i: usize) -> u32 {
    let e = &block[i * ENTRY..i * ENTRY + 4];
    u32::from_le_bytes([e[0], e[1], e[2], e[3]])
}

impl<'t> Cursor<'t> {
    fn new(blocks: Vec<&'t [u8]>, idf: f32, p: Bm25Params) -> Self {
        let firsts = blocks.iter().map(|b| doc_at(b, 0)).collect();
        Cursor {
            blocks,
            firsts,
            b: 0,
            i: 0,
            idf,
            ub: idf * (p.k1 + 1.0),
        }
    }

    /// The current document; `u32::MAX` once exhausted.
    fn doc(&self) -> u32 {
        match self.blocks.get(self.b) {
            Some(block) => doc_at(block, self.i),
            None => u32::MAX,
        }
    }

    /// Moves to the first entry at or after `target`.
    fn seek(&mut self, target: u32) {
        if self.doc() >= target {
            return;
        }
        // The last block starting at or before `target` (blocks are in document order).
        let ahead = self.firsts[self.b + 1..].partition_point(|&f| f <= target);
        if ahead > 0 {
            self.b += ahead;
            self.i = 0;
        }
        let block = self.blocks[self.b];
        let n = block.len() / ENTRY;
        let (mut lo, mut hi) = (self.i, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if doc_at(block, mid) < target {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        self.i = lo;
        if lo >= n {
            self.b += 1;
            self.i = 0;
        }
    }

    /// The BM25 contribution of the current entry.
    fn score(&self, p: Bm25Params, avgdl: f32) -> f32 {
        let e = &self.blocks[self.b][self.i * ENTRY..(self.i + 1) * ENTRY];
        let tf = u16::from_le_bytes([e[4], e[5]]);
        let len = u16::from_le_bytes([e[6], e[7]]);
        term_score(self.idf, tf, len, p, avgdl)
    }
}

/// Top `k` by BM25, the same documents as exhaustive scoring, term at a time with MaxScore
/// pruning: terms are read rarest first (highest upper bound); once the terms not yet read
/// cannot lift a document that has none of the read ones above the k-th best partial score,
/// no new document can enter, and the remaining (frequent) terms are only looked up, by
/// binary search in their blocks, for the documents that can still make the top `k`.
fn max_score(
    mut cursors: Vec<Cursor>,
    k: usize,
    candidates: &RoaringBitmap,
    p: Bm25Params,
    avgdl: f32,
) -> Vec<(u32, f32)> {
    cursors.sort_by(|a, b| b.ub.total_cmp(&a.ub));
    let n = cursors.len();
    // rest[i]: the most the terms i.. can add to any document.
    let mut rest = vec![0f32; n + 1];
    for i in (0..n).rev() {
        rest[i] = rest[i + 1] + cursors[i].ub;
    }
    let bound = candidates.max().map_or(0, |m| m as usize + 1);
    let mut allowed = vec![0u64; bound.div_ceil(64)];
    for d in candidates {
        allowed[d as usize >> 6] |= 1 << (d & 63);
    }
    SCORES.with_borrow_mut(|scores| {
        if scores.len() < allowed.len() * 64 {
            scores.resize(allowed.len() * 64, 0.0);
        }
        accumulate(&mut cursors, k, &allowed, &rest, scores, p, avgdl)
    })
}

thread_local! {
    /// Score accumulators indexed by document id, reused across searches on a thread (sized
    /// by the store's largest id; only the entries a search touched are reset after it).
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The body of [`max_score`] over a zeroed `scores` table (at least 64 entries per word of
/// `allowed`), left zeroed again.
fn accumulate(
    cursors: &mut [Cursor],
    k: usize,
    allowed: &[u64],
    rest: &[f32],
    scores: &mut [f32],
    p: Bm25Params,
    avgdl: f32,
) -> Vec<(u32, f32)> {
    let n = cursors.len();
    let bound = allowed.len() * 64;
    let mut touched: Vec<u32> = Vec::new();
    let mut best = 0f32;
    let mut theta = f32::NEG_INFINITY;
    let mut scratch: Vec<f32> = Vec::new();
    let mut read = 0;
    while read < n {
        let c = &cursors[read];
        for block in &c.blocks {
            for (doc, tf, len) in decode(block) {
                let d = doc as usize;
                if d >= bound || allowed[d >> 6] & (1 << (d & 63)) == 0 {
                    continue;
                }
                if scores[d] == 0.0 {
                    touched.push(doc);
                }
                scores[d] += term_score(c.idf, tf, len, p, avgdl);
                best = best.max(scores[d]);
            }
        }
        read += 1;
        if read < n && touched.len() >= k && rest[read] < best {
            scratch.clear();
            scratch.extend(touched.iter().map(|&d| scores[d as usize]));
            scratch.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
            theta = scratch[k - 1];
            if rest[read] < theta {
                break;
            }
        }
    }
    if read < n {
        // Only documents that can still reach the k-th best partial score (ties kept: a tie
        // may win on its id).
        let mut live: Vec<u32> = touched
            .iter()
            .copied()
            .filter(|&d| scores[d as usize] + rest[read] >= theta)
            .collect();
        live.sort_unstable();
        for j in read..n {
            let c = &mut cursors[j];
            for &d in &live {
                c.seek(d);
                if c.doc() == d {
                    scores[d as usize] += c.score(p, avgdl);
                }
            }
            live.retain(|&d| scores[d as usize] + rest[j + 1] >= theta);
        }
        let out = live.iter().map(|&d| (d, scores[d as usize])).collect();
        for &d in &touched {
            scores[d as usize] = 0.0;
        }
        return top_k(out, k);
    }
    let out = touched
        .into_iter()
        .map(|d| (d, std::mem::take(&mut scores[d as usize])))
        .collect();
    top_k(out, k)
}

/// Keeps the `k` highest scores, sorted best first (ties broken by id for determinism).
pub fn top_k(mut v: Vec<(u32, f32)>, k: usize) -> Vec<(u32, f32)> {
    let cmp = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if v.len() > k && k > 0 {
        v.select_nth_unstable_by(k - 1, cmp);
        v.truncate(k);
    }
    v.sort_by(cmp);
    v.truncate(k);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Postings of a synthetic corpus (a skewed vocabulary, so some terms are in most
    /// documents), cut into blocks of `block` entries: term → encoded blocks.
    fn corpus(docs: u32, block: usize) -> (Vec<Vec<Vec<u8>>>, Vec<u16>) {
        let vocab = 40;
        let mut x: u64 = 0x2545F4914F6CDD1D;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut postings: Vec<Vec<(u32, u16, u16)>> = vec![Vec::new(); vocab];
        let mut lens = Vec::new();
        for d in 0..docs {
            let len = 3 + (rnd() % 30) as usize;
            let mut tf = vec![0u16; vocab];
            for _ in 0..len {
                // Term t with probability ~ 1/(t+1): term 0 is in nearly every document.
                let r = (rnd() % 10_000) as f64 / 10_000.0;
                let t = ((vocab as f64).powf(r) - 1.0) as usize;
                tf[t.min(vocab - 1)] += 1;
            }
            for (t, n) in tf.iter().enumerate() {
                if *n > 0 {
                    postings[t].push((d, *n, len as u16));
                }
            }
            lens.push(len as u16);
        }
        let blocks = postings
            .iter()
            .map(|p| p.chunks(block).map(encode).collect())
            .collect();
        (blocks, lens)
    }

    /// Documents in a term's blocks.
    fn df(blocks: &[Vec<u8>]) -> usize {
        blocks.iter().map(|b| b.len() / ENTRY).sum()
    }

    fn exhaustive(
        blocks: &[Vec<Vec<u8>>],
        terms: &[usize],
        docs: u32,
        avgdl: f32,
        cands: &RoaringBitmap,
        k: usize,
    ) -> Vec<(u32, f32)> {
        let p = Bm25Params::default();
        let mut scores = vec![0f32; docs as usize];
        for &t in terms {
            let idf = idf(docs as u64, df(&blocks[t]));
            for b in &blocks[t] {
                for (d, tf, len) in decode(b) {
                    scores[d as usize] += term_score(idf, tf, len, p, avgdl);
                }
            }
        }
        let all = scores
            .iter()
            .enumerate()
            .filter(|(d, s)| **s > 0.0 && cands.contains(*d as u32))
            .map(|(d, s)| (d as u32, *s))
            .collect();
        top_k(all, k)
    }

    #[test]
    fn max_score_finds_the_exhaustive_top_k() {
        let docs = 5000;
        let p = Bm25Params::default();
        for block in [7, 64, 512] {
            let (blocks, lens) = corpus(docs, block);
            let avgdl = lens.iter().map(|l| *l as f32).sum::<f32>() / docs as f32;
            let every: RoaringBitmap = (0..docs).collect();
            let some: RoaringBitmap = (0..docs).filter(|d| d % 3 != 1).collect();
            let queries: [&[usize]; 5] = [&[0], &[0, 1, 2, 3], &[0, 5, 17, 39], &[39], &[1, 2, 30]];
            for terms in queries {
                for cands in [&every, &some] {
                    for k in [1, 10, 100, 6000] {
                        let cursors = terms
                            .iter()
                            .map(|&t| {
                                let idf = idf(docs as u64, df(&blocks[t]));
                                let blocks = blocks[t].iter().map(|b| b.as_slice()).collect();
                                Cursor::new(blocks, idf, p)
                            })
                            .collect();
                        let got = max_score(cursors, k, cands, p, avgdl);
                        let want = exhaustive(&blocks, terms, docs, avgdl, cands, k);
                        assert_eq!(got.len(), want.len(), "terms {terms:?} k {k}");
                        for (g, w) in got.iter().zip(&want) {
                            assert!((g.1 - w.1).abs() <= 1e-4 * w.1, "{g:?} vs {w:?}");
                        }
                        // The same documents (up to scores equal within rounding).
                        let cut = want.last().map_or(0.0, |w| w.1);
                        let firm = |v: &[(u32, f32)]| -> Vec<u32> {
                            let mut ids: Vec<u32> = v
                                .iter()
                                .filter(|x| x.1 > cut + 1e-4 * cut)
                                .map(|x| x.0)
                                .collect();
                            ids.sort_unstable();
                            ids
                        };
                        assert_eq!(
                            firm(&got),
                            firm(&want),
                            "terms {terms:?} k {k} block {block}"
                        );
                    }
                }
            }
        }
    }
}
