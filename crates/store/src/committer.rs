//! Group commit: one writer thread owns the [`Store`], collects every write that
//! arrives while the previous commit is running, and commits them together.
//!
//! A durable commit costs one fsync (about half a millisecond here); sharing it
//! between hundreds of writes is what lets the hub acknowledge tens of thousands of
//! writes per second. Jobs are committed in submission order and their completions
//! run in that order on the writer thread, so callers can publish effects (device
//! notifications) in commit order without further locking.
//!
//! The thread counts what it does in [`CommitStats`] (commits, writes per commit,
//! failures) for the hub's metrics.

use crate::{Mutation, Store, StoreError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

/// Most jobs in one transaction: bounds the latency one commit adds.
const MAX_JOBS_PER_COMMIT: usize = 4096;

type Completion = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

struct Job {
    mutations: Vec<Mutation>,
    done: Completion,
}

/// Upper bounds of the batch-size histogram buckets (jobs per commit); the last
/// bucket is [`MAX_JOBS_PER_COMMIT`].
pub const BATCH_BUCKETS: [u64; 6] = [1, 8, 64, 512, 2048, MAX_JOBS_PER_COMMIT as u64];

/// What the writer thread has done since it started. Written by that thread
/// only, read by anyone (relaxed: each counter is a monotonic count on its own).
#[derive(Debug, Default)]
pub struct CommitStats {
    commits: AtomicU64,
    jobs: AtomicU64,
    mutations: AtomicU64,
    failures: AtomicU64,
    commit_micros: AtomicU64,
    /// Commits whose job count was at most the bucket's bound (not cumulative).
    batches: [AtomicU64; BATCH_BUCKETS.len()],
}

/// A copy of [`CommitStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStatsSnapshot {
    /// Transactions committed (or attempted, counting failures).
    pub commits: u64,
    /// Units of work ([`Committer::submit`] calls) in those transactions.
    pub jobs: u64,
    /// Mutations written, after keeping the last of each key.
    pub mutations: u64,
    /// Commits that failed (the hub stops acknowledging writes after one).
    pub failures: u64,
    /// Time spent committing, microseconds.
    pub commit_micros: u64,
    /// Cumulative histogram of jobs per commit: `batches[i]` commits held at
    /// most `BATCH_BUCKETS[i]` jobs.
    pub batches: [u64; BATCH_BUCKETS.len()],
}

impl CommitStats {
    fn record(&self, jobs: usize, mutations: usize, failed: bool, took: std::time::Duration) {
        let jobs = jobs as u64;
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.jobs.fetch_add(jobs, Ordering::Relaxed);
        self.mutations
            .fetch_add(mutations as u64, Ordering::Relaxed);
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.commit_micros.fetch_add(micros, Ordering::Relaxed);
        let bucket = BATCH_BUCKETS
            .iter()
            .position(|bound| jobs <= *bound)
            .unwrap_or(BATCH_BUCKETS.len() - 1);
        self.batches[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn snapshot(&self) -> CommitStatsSnapshot {
        let mut batches = [0; BATCH_BUCKETS.len()];
        let mut total = 0;
        for (out, count) in batches.iter_mut().zip(&self.batches) {
            total += count.load(Ordering::Relaxed);
            *out = total;
        }
        CommitStatsSnapshot {
            commits: self.commits.load(Ordering::Relaxed),
            jobs: self.jobs.load(Ordering::Relaxed),
            mutations: self.mutations.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            commit_micros: self.commit_micros.load(Ordering::Relaxed),
            batches,
        }
    }
}

/// Handle to the writer thread. Cheap to clone; the thread stops (after committing
/// everything already submitted) when the last handle is dropped.
#[derive(Clone)]
pub struct Committer {
    jobs: mpsc::Sender<Job>,
    stats: Arc<CommitStats>,
}

impl Committer {
    /// Starts the writer thread that owns `store`.
    pub fn start<S: Store>(store: S) -> Result<(Self, JoinHandle<()>), StoreError> {
        let (jobs, rx) = mpsc::channel();
        let stats = Arc::new(CommitStats::default());
        let counted = Arc::clone(&stats);
        let handle = std::thread::Builder::new()
            .name("twinhub-committer".into())
            .spawn(move || run(store, rx, &counted))
            .map_err(|e| StoreError::Backend(format!("cannot start the committer thread: {e}")))?;
        Ok((Self { jobs, stats }, handle))
    }

    /// What the writer thread has done so far.
    pub fn stats(&self) -> CommitStatsSnapshot {
        self.stats.snapshot()
    }

    /// Queues `mutations` as one unit; `done` runs on the writer thread once they
    /// are durable (or failed). Units submitted earlier are committed no later.
    pub fn submit(
        &self,
        mutations: Vec<Mutation>,
        done: impl FnOnce(Result<(), &StoreError>) + Send + 'static,
    ) {
        let job = Job {
            mutations,
            done: Box::new(done),
        };
        if let Err(mpsc::SendError(job)) = self.jobs.send(job) {
            (job.done)(Err(&StoreError::Stopped));
        }
    }
}

fn run<S: Store>(mut store: S, rx: mpsc::Receiver<Job>, stats: &CommitStats) {
    let mut failed: Option<StoreError> = None;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_JOBS_PER_COMMIT {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        // After a failure nothing more is committed: acknowledging later writes while
        // earlier ones were lost would break the order callers rely on.
        if failed.is_none() {
            let batch = last_per_key(
                jobs.iter_mut()
                    .flat_map(|j| std::mem::take(&mut j.mutations)),
            );
            let started = std::time::Instant::now();
            let result = store.commit(&batch);
            stats.record(jobs.len(), batch.len(), result.is_err(), started.elapsed());
            if let Err(e) = result {
                tracing::error!(error = %e, "commit failed; the hub stops acknowledging writes");
                failed = Some(e);
            }
        }
        let result = failed.as_ref().map_or(Ok(()), Err);
        for job in jobs {
            (job.done)(result);
        }
    }
}

/// Keeps only the last mutation of each key: a device written ten times while
/// the previous commit ran is stored once, with its latest state.
fn last_per_key(mutations: impl DoubleEndedIterator<Item = Mutation>) -> Vec<Mutation> {
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<Mutation> = mutations
        .rev()
        .filter(|m| {
            let key = match m {
                Mutation::Put { space, key, .. } | Mutation::Delete { space, key } => {
                    (*space, key.clone())
                }
            };
            seen.insert(key)
        })
        .collect();
    kept.reverse();
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Space, SqliteStore};
    use std::sync::{Arc, Mutex};

    /// The stats once every job submitted so far has completed.
    fn stats_after_all(committer: &Committer) -> CommitStatsSnapshot {
        let (tx, rx) = mpsc::channel();
        committer.submit(Vec::new(), move |_| tx.send(()).unwrap());
        rx.recv().unwrap();
        committer.stats()
    }

    #[test]
    fn completions_run_in_submission_order_after_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let (committer, handle) = Committer::start(SqliteStore::open(&path).unwrap()).unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        for i in 0..500 {
            let order = order.clone();
            let m = Mutation::Put {
                space: Space::Devices,
                key: format!("k{}", i % 7),
                value: i.to_string().into_bytes(),
            };
            committer.submit(vec![m], move |r| {
                assert!(r.is_ok());
                order.lock().unwrap().push(i);
            });
        }
        let stats = stats_after_all(&committer);
        drop(committer);
        handle.join().unwrap();
        assert_eq!(*order.lock().unwrap(), (0..500).collect::<Vec<_>>());
        assert_eq!(stats.jobs, 501, "500 and the barrier");
        assert!(stats.commits >= 1 && stats.commits <= 501);
        assert!(stats.mutations >= 7 && stats.mutations <= 500);
        assert_eq!(stats.batches[BATCH_BUCKETS.len() - 1], stats.commits);
        assert_eq!(stats.failures, 0);
        let mut store = SqliteStore::open(&path).unwrap();
        let rows = store.load(Space::Devices).unwrap();
        // The last write of each key wins.
        assert_eq!(rows.len(), 7);
        assert!(rows.contains(&("k0".to_string(), b"497".to_vec())));
    }

    #[test]
    fn only_the_last_write_of_a_key_is_kept_in_order() {
        let put = |k: &str, v: &str| Mutation::Put {
            space: Space::Devices,
            key: k.into(),
            value: v.as_bytes().to_vec(),
        };
        let del = |k: &str| Mutation::Delete {
            space: Space::Devices,
            key: k.into(),
        };
        let session = Mutation::Put {
            space: Space::Sessions,
            key: "a".into(),
            value: b"s".to_vec(),
        };
        let kept = last_per_key(
            vec![
                put("a", "1"),
                put("b", "1"),
                session.clone(),
                put("a", "2"),
                del("b"),
                put("c", "1"),
            ]
            .into_iter(),
        );
        assert_eq!(kept, vec![session, put("a", "2"), del("b"), put("c", "1")]);
    }

    struct Failing;
    impl Store for Failing {
        fn load(&mut self, _: Space) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
            Ok(Vec::new())
        }
        fn commit(&mut self, _: &[Mutation]) -> Result<(), StoreError> {
            Err(StoreError::Backend("disk full".into()))
        }
        fn check_integrity(&mut self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_commit_fails_every_later_job() {
        let (committer, handle) = Committer::start(Failing).unwrap();
        let results = Arc::new(Mutex::new(Vec::new()));
        for _ in 0..3 {
            let results = results.clone();
            committer.submit(Vec::new(), move |r| {
                results.lock().unwrap().push(r.is_err())
            });
        }
        let stats = stats_after_all(&committer);
        drop(committer);
        handle.join().unwrap();
        assert_eq!(*results.lock().unwrap(), vec![true, true, true]);
        // Nothing is attempted after the first failure.
        assert_eq!(stats.failures, 1);
    }
}
