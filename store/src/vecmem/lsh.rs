//! Near-duplicate candidates at a cost that does not grow with the cube: locality-sensitive
//! hashing by random hyperplanes, banded.
//!
//! A vector's bits are the signs of a pseudo-random rotation of it (per block of
//! `padded = dims.next_power_of_two()` coordinates: three rounds of random signs, each followed
//! by a Walsh-Hadamard transform — a fast stand-in for a dense Gaussian projection). Two vectors
//! at cosine `c` agree on a bit with probability `1 − arccos(c) / π`. The bits are cut into
//! [`BANDS`] bands of [`BITS`]; a vector is a candidate for a query when one band matches
//! exactly. With 44 bands of 22 bits, a pair at cosine 0.95 is found with probability 0.988
//! and at 0.97 with 0.999, while an unrelated pair at cosine 0.4 (typical of two texts under
//! the hashed-trigram embedder, whose vectors share common trigrams) collides with
//! probability 0.002 and one at cosine 0.1 (typical of a sentence model) with 4 · 10⁻⁵. The raw
//! sign bits of the coordinates cannot serve: the hashed embedder's are nearly all zero.
//!
//! The index keeps every position's keys and, per band, a sorted list of (key, position) with a
//! small sorted list of recent changes beside it, merged in linear time when it fills up. A
//! replaced vector gets new keys; its old entries stay in the lists until the next merge and
//! are ignored meanwhile (an entry counts only when its key is the position's current key).

/// Bands of bits per vector.
pub(crate) const BANDS: usize = 44;
/// Bits per band.
pub(crate) const BITS: usize = 22;
/// Recent changes kept beside a band's sorted list before a merge.
const RECENT_MAX: usize = 1024;

/// The band keys of one vector.
pub(crate) type Keys = [u32; BANDS];

/// The pseudo-random rotation shared by every cube of a store.
pub(crate) struct Rotation {
    padded: usize,
    blocks: usize,
    /// `blocks × 3 × padded` random signs.
    signs: Vec<f32>,
}

impl Rotation {
    /// A fixed rotation for vectors of `dims` dimensions (the same in every process, so keys
    /// can be compared across loads).
    pub(crate) fn new(dims: usize) -> Rotation {
        let padded = dims.max(1).next_power_of_two().max(64);
        let blocks = (BANDS * BITS).div_ceil(padded);
        // xorshift64: deterministic and dependency-free.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let signs = (0..blocks * 3 * padded)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if (x >> 32) & 1 == 0 { 1.0 } else { -1.0 }
            })
            .collect();
        Rotation {
            padded,
            blocks,
            signs,
        }
    }

    /// The band keys of `v` (any length up to the rotation's dimensions; longer is cut).
    pub(crate) fn keys(&self, v: &[f32]) -> Keys {
        let mut out = [0u32; BANDS];
        let mut all = vec![0f32; self.blocks * self.padded];
        let n = v.len().min(self.padded);
        for (b, buf) in all.chunks_exact_mut(self.padded).enumerate() {
            buf[..n].copy_from_slice(&v[..n]);
            for r in 0..3 {
                let s = &self.signs[(b * 3 + r) * self.padded..][..self.padded];
                for (x, s) in buf.iter_mut().zip(s) {
                    *x *= s;
                }
                fwht(buf);
            }
        }
        // Branch-free: the signs are unpredictable.
        for (key, band) in out.iter_mut().zip(all.chunks_exact(BITS)) {
            *key = band
                .iter()
                .enumerate()
                .fold(0, |k, (j, &x)| k | (u32::from(x > 0.0) << j));
        }
        out
    }
}

/// In-place Walsh-Hadamard transform (unnormalised; only signs are used). `x.len()` is a power
/// of two, at least 8. The first three levels run as 8-point transforms in registers; the
/// rest are butterflies over runs of 8 or more, which the compiler vectorises.
fn fwht(x: &mut [f32]) {
    let n = x.len();
    for c in x.chunks_exact_mut(8) {
        let (a0, a1) = (c[0] + c[1], c[0] - c[1]);
        let (a2, a3) = (c[2] + c[3], c[2] - c[3]);
        let (a4, a5) = (c[4] + c[5], c[4] - c[5]);
        let (a6, a7) = (c[6] + c[7], c[6] - c[7]);
        let (b0, b2) = (a0 + a2, a0 - a2);
        let (b1, b3) = (a1 + a3, a1 - a3);
        let (b4, b6) = (a4 + a6, a4 - a6);
        let (b5, b7) = (a5 + a7, a5 - a7);
        c[0] = b0 + b4;
        c[4] = b0 - b4;
        c[1] = b1 + b5;
        c[5] = b1 - b5;
        c[2] = b2 + b6;
        c[6] = b2 - b6;
        c[3] = b3 + b7;
        c[7] = b3 - b7;
    }
    let mut h = 8;
    while h < n {
        for chunk in x.chunks_exact_mut(2 * h) {
            let (a, b) = chunk.split_at_mut(h);
            for (p, q) in a.iter_mut().zip(b.iter_mut()) {
                let (u, w) = (*p, *q);
                *p = u + w;
                *q = u - w;
            }
        }
        h *= 2;
    }
}

/// One cube's LSH index over the positions of its codes.
pub(crate) struct Lsh {
    keys: Vec<Keys>,
    /// Per band: (key, position), sorted.
    sorted: Vec<Vec<(u32, u32)>>,
    /// Per band: where each run of keys with the same top bits starts in `sorted` (so a
    /// lookup reads one directory entry and a short run instead of binary-searching).
    dirs: Vec<Directory>,
    /// Per band: changes since the last merge, sorted.
    recent: Vec<Vec<(u32, u32)>>,
    changes: usize,
}

/// Offsets into a band's sorted list by the keys' top bits.
struct Directory {
    shift: u32,
    starts: Vec<u32>,
}

impl Directory {
    fn build(sorted: &[(u32, u32)]) -> Directory {
        // About two entries per slot, between 2⁴ and 2¹⁶ slots.
        let top = (usize::BITS - sorted.len().leading_zeros())
            .saturating_sub(1)
            .clamp(4, 16)
            .min(BITS as u32);
        let shift = BITS as u32 - top;
        let slots = 1usize << top;
        let mut starts = Vec::with_capacity(slots + 1);
        let mut i = 0;
        for slot in 0..slots {
            while i < sorted.len() && ((sorted[i].0 >> shift) as usize) < slot {
                i += 1;
            }
            starts.push(i as u32);
        }
        starts.push(sorted.len() as u32);
        Directory { shift, starts }
    }

    /// The run of `sorted` that can hold `key`.
    fn run(&self, key: u32) -> std::ops::Range<usize> {
        let slot = (key >> self.shift) as usize;
        match (self.starts.get(slot), self.starts.get(slot + 1)) {
            (Some(&a), Some(&b)) => a as usize..b as usize,
            _ => 0..0,
        }
    }

    fn bytes(&self) -> usize {
        self.starts.capacity() * 4
    }
}

impl Lsh {
    /// The index of positions `0..keys.len()` with these keys.
    pub(crate) fn build(keys: Vec<Keys>) -> Lsh {
        let sorted: Vec<Vec<(u32, u32)>> = (0..BANDS)
            .map(|b| {
                let mut v: Vec<(u32, u32)> = keys
                    .iter()
                    .enumerate()
                    .map(|(p, k)| (k[b], p as u32))
                    .collect();
                v.sort_unstable();
                v
            })
            .collect();
        Lsh {
            keys,
            dirs: sorted.iter().map(|v| Directory::build(v)).collect(),
            sorted,
            recent: vec![Vec::new(); BANDS],
            changes: 0,
        }
    }

    /// Positions indexed.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Sets the keys of position `pos`: a replaced vector, or a new one at the end
    /// (`pos == len()`). Positions in between cannot be inserted (the caller rebuilds).
    pub(crate) fn set(&mut self, pos: usize, k: Keys) {
        if pos == self.keys.len() {
            self.keys.push(k);
        } else if let Some(slot) = self.keys.get_mut(pos) {
            *slot = k;
        } else {
            return;
        }
        for (b, recent) in self.recent.iter_mut().enumerate() {
            let e = (k[b], pos as u32);
            let i = recent.partition_point(|x| *x < e);
            if recent.get(i) != Some(&e) {
                recent.insert(i, e);
            }
        }
        self.changes += 1;
        if self.changes >= RECENT_MAX {
            self.merge();
        }
    }

    /// Merges the recent changes into the sorted lists, dropping entries whose key is no
    /// longer their position's.
    fn merge(&mut self) {
        for b in 0..BANDS {
            let old = std::mem::take(&mut self.sorted[b]);
            let new = std::mem::take(&mut self.recent[b]);
            let mut out = Vec::with_capacity(old.len() + new.len());
            let (mut i, mut j) = (0, 0);
            while i < old.len() || j < new.len() {
                let e = if j == new.len() || (i < old.len() && old[i] <= new[j]) {
                    i += 1;
                    old[i - 1]
                } else {
                    j += 1;
                    new[j - 1]
                };
                let live = self.keys.get(e.1 as usize).is_some_and(|k| k[b] == e.0);
                if live && out.last() != Some(&e) {
                    out.push(e);
                }
            }
            self.dirs[b] = Directory::build(&out);
            self.sorted[b] = out;
        }
        self.changes = 0;
    }

    /// Positions that share at least one band with `q`, ascending, each once.
    pub(crate) fn candidates(&self, q: &Keys, out: &mut Vec<u32>) {
        out.clear();
        for b in 0..BANDS {
            let run = &self.sorted[b][self.dirs[b].run(q[b])];
            let start = run.partition_point(|x| x.0 < q[b]);
            let recent = &self.recent[b];
            let r0 = recent.partition_point(|x| x.0 < q[b]);
            let hits = run[start..].iter().take_while(|x| x.0 == q[b]);
            let hits = hits.chain(recent[r0..].iter().take_while(|x| x.0 == q[b]));
            for &(key, pos) in hits {
                if self.keys.get(pos as usize).is_some_and(|k| k[b] == key) {
                    out.push(pos);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        let entries: usize = self
            .sorted
            .iter()
            .chain(&self.recent)
            .map(|v| v.capacity())
            .sum();
        let dirs: usize = self.dirs.iter().map(Directory::bytes).sum();
        self.keys.capacity() * std::mem::size_of::<Keys>() + entries * 8 + dirs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64, dims: usize) -> Vec<f32> {
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

    /// `cos · a + sin · (b orthogonalised against a)`: a unit vector at cosine `cos` to `a`.
    fn at_cosine(a: &[f32], b: &[f32], cos: f32) -> Vec<f32> {
        let d: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let mut o: Vec<f32> = b.iter().zip(a).map(|(y, x)| y - d * x).collect();
        let n = o.iter().map(|x| x * x).sum::<f32>().sqrt();
        o.iter_mut().for_each(|x| *x /= n);
        let sin = (1.0 - cos * cos).sqrt();
        a.iter().zip(&o).map(|(x, y)| cos * x + sin * y).collect()
    }

    #[test]
    fn bands_find_near_vectors_and_rarely_unrelated_ones() {
        let dims = 384;
        let rot = Rotation::new(dims);
        // 2,000 unrelated vectors, then 200 queries each with a partner at cosine 0.97.
        let mut keys: Vec<Keys> = (0..2000u64).map(|s| rot.keys(&unit(s, dims))).collect();
        let mut lsh = Lsh::build(keys.clone());
        let mut found = 0;
        let mut unrelated = 0;
        let mut out = Vec::new();
        for s in 0..200u64 {
            let q = unit(10_000 + s, dims);
            let partner = at_cosine(&q, &unit(20_000 + s, dims), 0.97);
            let pos = lsh.len();
            let k = rot.keys(&partner);
            keys.push(k);
            lsh.set(pos, k);
            lsh.candidates(&rot.keys(&q), &mut out);
            found += usize::from(out.contains(&(pos as u32)));
            unrelated += out.iter().filter(|&&p| p as usize != pos).count();
        }
        // Expected 0.999 each: at least 195 of 200. Random vectors are nearly orthogonal:
        // collisions per query ≈ 2,000 × 44 × 2⁻²² ≈ 0.02.
        assert!(found >= 195, "found {found} of 200");
        assert!(
            unrelated <= 40,
            "{unrelated} unrelated candidates over 200 queries"
        );
        // Past RECENT_MAX changes the lists merge; the answers stay the same.
        for s in 0..1100u64 {
            let pos = (s % 2000) as usize;
            let k = rot.keys(&unit(50_000 + s, dims));
            keys[pos] = k;
            lsh.set(pos, k);
        }
        for (pos, k) in keys.iter().enumerate().step_by(97) {
            lsh.candidates(k, &mut out);
            assert!(
                out.contains(&(pos as u32)),
                "position {pos} lost after the merge"
            );
        }
        // A replaced vector is no longer found by its old keys' band alone.
        let old = keys[5];
        let new = rot.keys(&unit(99_999, dims));
        lsh.set(5, new);
        lsh.candidates(&old, &mut out);
        assert!(!out.contains(&5) || (0..BANDS).any(|b| old[b] == new[b]));
    }

    #[test]
    fn the_transform_keeps_angles() {
        // Hadamard rounds are orthogonal up to scale: dot products scale by padded³.
        let rot = Rotation::new(64);
        let a = unit(1, 64);
        let b = unit(2, 64);
        let mut x = a.clone();
        let mut y = b.clone();
        fwht(&mut x);
        fwht(&mut y);
        let d0: f32 = a.iter().zip(&b).map(|(p, q)| p * q).sum();
        let d1: f32 = x.iter().zip(&y).map(|(p, q)| p * q).sum();
        assert!((d1 / 64.0 - d0).abs() < 1e-4, "{d0} vs {}", d1 / 64.0);
        // Against the definition: H[i][j] = (−1)^popcount(i & j).
        for n in [8usize, 64, 512] {
            let v = unit(3, n);
            let mut fast = v.clone();
            fwht(&mut fast);
            for (i, f) in fast.iter().enumerate() {
                let slow: f32 = (0..n)
                    .map(|j| {
                        if (i & j).count_ones() % 2 == 0 {
                            v[j]
                        } else {
                            -v[j]
                        }
                    })
                    .sum();
                assert!((f - slow).abs() < 1e-4, "n {n} row {i}: {f} vs {slow}");
            }
        }
        assert_eq!(rot.keys(&a), rot.keys(&a));
        assert_ne!(rot.keys(&a), rot.keys(&b));
    }
}
