//! Which partition a cube lives in, and which partitions this process owns.

use std::collections::BTreeSet;
use std::sync::RwLock;
use std::sync::atomic::{AtomicI32, Ordering};

/// Kafka's murmur2 (the Java client's default partitioner; librdkafka's `murmur2_random`).
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition of a key among `partitions` (Java's `toPositive(murmur2(key)) % n`).
pub fn partition_for(key: &str, partitions: i32) -> i32 {
    ((murmur2(key.as_bytes()) & 0x7fff_ffff) % partitions.max(1) as u32) as i32
}

/// The event-topic partitions this process holds now (updated on every rebalance), so the
/// service can tell whether it owns a cube.
#[derive(Debug, Default)]
pub struct Ownership {
    partitions: RwLock<BTreeSet<i32>>,
    count: AtomicI32,
}

impl Ownership {
    /// The event topic's partition count (0 until known).
    pub fn partition_count(&self) -> i32 {
        self.count.load(Ordering::Relaxed)
    }

    pub(crate) fn set_count(&self, n: i32) {
        self.count.store(n, Ordering::Relaxed);
    }

    pub(crate) fn assign(&self, ps: impl IntoIterator<Item = i32>) {
        self.partitions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .extend(ps);
    }

    pub(crate) fn revoke(&self, ps: impl IntoIterator<Item = i32>) {
        let mut g = self.partitions.write().unwrap_or_else(|p| p.into_inner());
        for p in ps {
            g.remove(&p);
        }
    }

    /// Partitions held now.
    pub fn partitions(&self) -> Vec<i32> {
        self.partitions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect()
    }

    /// Whether this process owns `cube` (true when the partition count is not known yet).
    pub fn owns(&self, cube: &str) -> bool {
        let n = self.partition_count();
        n <= 0
            || self
                .partitions
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&partition_for(cube, n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Reference values of org.apache.kafka.common.utils.Utils.murmur2.
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"abc") as i32, 479470107);
        let p = partition_for("cube-1", 4);
        assert!((0..4).contains(&p));
        let o = Ownership::default();
        assert!(o.owns("anything"), "unknown count: assume local");
        o.set_count(4);
        assert!(!o.owns("cube-1"));
        o.assign([p]);
        assert!(o.owns("cube-1"));
        o.revoke([p]);
        assert!(!o.owns("cube-1"));
    }
}
