//! The durable job queue: background work (fine extraction) stored in LMDB by the transaction
//! that made it due, served round-robin across cubes, removed by the transaction that settles
//! it. A crash between the two runs the job again; its writes are keyed by the job, so a rerun
//! cannot duplicate them.
//!
//! Keys are `cube\0seq` (seq: big-endian u64 from a counter in `meta`), so one cube's jobs are
//! contiguous and in the order they were queued, and "the next cube after this one" is one
//! range seek.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

use heed::{RoTxn, RwTxn};
use serde::{Deserialize, Serialize};

use crate::{Result, Store, StoreError, join, validate_key_part};

/// `meta` key of the last job sequence number handed out.
const META_JOB_SEQ: &str = "job_seq";

/// A unit of background work for one cube.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// What to do (`fine`: LLM extraction of the event's fast memories).
    pub kind: String,
    /// Cube.
    pub cube_id: String,
    /// User the work is for.
    pub user_id: String,
    /// The event that made it due.
    pub event_id: String,
    /// The memories it works on.
    pub memory_ids: Vec<String>,
    /// Hints (`custom_tags`).
    pub tags: Vec<String>,
    /// Queued, unix micros.
    pub queued_at: i64,
}

/// A queued job's address: its cube and sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobKey {
    /// Cube.
    pub cube_id: String,
    /// Sequence number (queue order across the store).
    pub seq: u64,
}

impl JobKey {
    fn bytes(&self) -> Vec<u8> {
        join(&[self.cube_id.as_bytes(), &self.seq.to_be_bytes()])
    }

    fn parse(k: &[u8]) -> Result<JobKey> {
        let bad = || StoreError::Codec("jobs key".into());
        let cut = k.len().checked_sub(9).ok_or_else(bad)?;
        if k[cut] != 0 {
            return Err(bad());
        }
        let seq = u64::from_be_bytes(k[cut + 1..].try_into().map_err(|_| bad())?);
        let cube_id = std::str::from_utf8(&k[..cut])
            .map_err(|_| bad())?
            .to_string();
        Ok(JobKey { cube_id, seq })
    }
}

impl Store {
    /// Queues a job in the caller's transaction; it is due once that transaction commits.
    pub fn put_job(&self, wtxn: &mut RwTxn, job: &JobRecord) -> Result<JobKey> {
        validate_key_part("cube id", &job.cube_id)?;
        let seq = match self.meta.get(wtxn, META_JOB_SEQ)? {
            Some(b) => u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) + 1,
            None => 1,
        };
        self.meta.put(wtxn, META_JOB_SEQ, &seq.to_le_bytes())?;
        let key = JobKey {
            cube_id: job.cube_id.clone(),
            seq,
        };
        self.jobs
            .put(wtxn, &key.bytes(), &postcard::to_stdvec(job)?)?;
        Ok(key)
    }

    /// Removes a job (it is done or failed for good); false when it was not queued.
    pub fn delete_job(&self, wtxn: &mut RwTxn, key: &JobKey) -> Result<bool> {
        Ok(self.jobs.delete(wtxn, &key.bytes())?)
    }

    /// The job at `key`, when still queued.
    pub fn job(&self, txn: &RoTxn, key: &JobKey) -> Result<Option<JobRecord>> {
        match self.jobs.get(txn, &key.bytes())? {
            Some(v) => Ok(Some(postcard::from_bytes(v)?)),
            None => Ok(None),
        }
    }

    /// The next job to run, round-robin across cubes: the oldest job of the first cube after
    /// `after` (wrapping around) that is not in `busy`. None when every queued job is busy.
    pub fn next_job(
        &self,
        txn: &RoTxn,
        after: Option<&str>,
        busy: &HashSet<JobKey>,
    ) -> Result<Option<(JobKey, JobRecord)>> {
        // Every key of cube `c` starts with `c\0`; `c\x01` is past all of them.
        let start = after.map(|c| join(&[c.as_bytes(), &[1]]));
        let from = match &start {
            Some(s) => Bound::Included(s.as_slice()),
            None => Bound::Unbounded,
        };
        let tail = self.jobs.range(txn, &(from, Bound::Unbounded))?;
        if let Some(hit) = self.first_free(tail, busy)? {
            return Ok(Some(hit));
        }
        // Wrap around: the cubes up to and including `after`.
        match &start {
            Some(s) => {
                let head = self
                    .jobs
                    .range(txn, &(Bound::Unbounded, Bound::Excluded(s.as_slice())))?;
                self.first_free(head, busy)
            }
            None => Ok(None),
        }
    }

    fn first_free<'t>(
        &self,
        it: impl Iterator<Item = heed::Result<(&'t [u8], &'t [u8])>>,
        busy: &HashSet<JobKey>,
    ) -> Result<Option<(JobKey, JobRecord)>> {
        for item in it {
            let (k, v) = item?;
            let key = JobKey::parse(k)?;
            if !busy.contains(&key) {
                return Ok(Some((key, postcard::from_bytes(v)?)));
            }
        }
        Ok(None)
    }

    /// Every queued job, cube by cube, each cube's in queue order.
    pub fn jobs(&self, txn: &RoTxn) -> Result<Vec<(JobKey, JobRecord)>> {
        let mut out = Vec::new();
        for item in self.jobs.iter(txn)? {
            let (k, v) = item?;
            out.push((JobKey::parse(k)?, postcard::from_bytes(v)?));
        }
        Ok(out)
    }

    /// Queued jobs per cube.
    pub fn job_counts(&self, txn: &RoTxn) -> Result<BTreeMap<String, usize>> {
        let mut out = BTreeMap::new();
        for item in self.jobs.iter(txn)? {
            let (k, _) = item?;
            *out.entry(JobKey::parse(k)?.cube_id).or_insert(0) += 1;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreOptions;

    fn job(cube: &str, event: &str) -> JobRecord {
        JobRecord {
            kind: "fine".into(),
            cube_id: cube.into(),
            user_id: "u".into(),
            event_id: event.into(),
            memory_ids: vec![format!("{cube}-{event}")],
            tags: vec![],
            queued_at: 0,
        }
    }

    /// Takes jobs one at a time the way the worker does (each settled before the next).
    fn drain(s: &Store) -> Vec<String> {
        let mut order = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let mut w = s.write_txn().unwrap();
            let Some((k, j)) = s.next_job(&w, last.as_deref(), &HashSet::new()).unwrap() else {
                break;
            };
            assert!(s.delete_job(&mut w, &k).unwrap());
            w.commit().unwrap();
            order.push(format!("{}/{}", j.cube_id, j.event_id));
            last = Some(k.cube_id);
        }
        order
    }

    #[test]
    fn jobs_are_served_round_robin_across_cubes_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            dimensions: 4,
            ..Default::default()
        };
        {
            let s = Store::open(dir.path(), opts.clone()).unwrap();
            let mut w = s.write_txn().unwrap();
            // A busy cube queues first and most; a prefix of another cube's name must not
            // share its range.
            for e in ["e1", "e2", "e3", "e4"] {
                s.put_job(&mut w, &job("a", e)).unwrap();
            }
            s.put_job(&mut w, &job("ab", "e1")).unwrap();
            s.put_job(&mut w, &job("b", "e1")).unwrap();
            s.put_job(&mut w, &job("b", "e2")).unwrap();
            w.commit().unwrap();
        }
        let s = Store::open(dir.path(), opts).unwrap();
        let r = s.read_txn().unwrap();
        assert_eq!(s.jobs(&r).unwrap().len(), 7);
        let counts = s.job_counts(&r).unwrap();
        assert_eq!(counts["a"], 4);
        assert_eq!(counts["ab"], 1);
        drop(r);
        assert_eq!(
            drain(&s),
            ["a/e1", "ab/e1", "b/e1", "a/e2", "b/e2", "a/e3", "a/e4"]
        );
        let r = s.read_txn().unwrap();
        assert!(s.jobs(&r).unwrap().is_empty());
    }

    #[test]
    fn busy_jobs_are_skipped_and_sequence_numbers_never_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(
            dir.path(),
            StoreOptions {
                dimensions: 4,
                ..Default::default()
            },
        )
        .unwrap();
        let mut w = s.write_txn().unwrap();
        let k1 = s.put_job(&mut w, &job("a", "e1")).unwrap();
        let k2 = s.put_job(&mut w, &job("a", "e2")).unwrap();
        let k3 = s.put_job(&mut w, &job("b", "e1")).unwrap();
        let busy: HashSet<JobKey> = [k1.clone(), k3.clone()].into();
        let (next, j) = s.next_job(&w, Some("a"), &busy).unwrap().unwrap();
        assert_eq!((next, j.event_id.as_str()), (k2.clone(), "e2"));
        let all: HashSet<JobKey> = [k1.clone(), k2.clone(), k3.clone()].into();
        assert!(s.next_job(&w, None, &all).unwrap().is_none());
        assert!(s.delete_job(&mut w, &k2).unwrap());
        assert!(!s.delete_job(&mut w, &k2).unwrap());
        assert!(s.job(&w, &k2).unwrap().is_none());
        let k4 = s.put_job(&mut w, &job("a", "e3")).unwrap();
        assert!(k4.seq > k3.seq, "{k4:?} after {k3:?}");
        assert!(s.put_job(&mut w, &job("", "e")).is_err());
    }
}
