//! Group commit: one writer thread owns the [`Store`], collects every write that
//! arrives while the previous commit is running, and commits them together.
//!
//! A durable commit costs one fsync (about half a millisecond here); sharing it
//! between hundreds of writes is what lets the hub acknowledge tens of thousands of
//! writes per second. Jobs are committed in submission order and their completions
//! run in that order on the writer thread, so callers can publish effects (device
//! notifications) in commit order without further locking.

use crate::{Mutation, Store, StoreError};
use std::sync::mpsc;
use std::thread::JoinHandle;

/// Most jobs in one transaction: bounds the latency one commit adds.
const MAX_JOBS_PER_COMMIT: usize = 4096;

type Completion = Box<dyn FnOnce(Result<(), &StoreError>) + Send>;

struct Job {
    mutations: Vec<Mutation>,
    done: Completion,
}

/// Handle to the writer thread. Cheap to clone; the thread stops (after committing
/// everything already submitted) when the last handle is dropped.
#[derive(Clone)]
pub struct Committer {
    jobs: mpsc::Sender<Job>,
}

impl Committer {
    /// Starts the writer thread that owns `store`.
    pub fn start<S: Store>(store: S) -> Result<(Self, JoinHandle<()>), StoreError> {
        let (jobs, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("twinhub-committer".into())
            .spawn(move || run(store, rx))
            .map_err(|e| StoreError::Backend(format!("cannot start the committer thread: {e}")))?;
        Ok((Self { jobs }, handle))
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

fn run<S: Store>(mut store: S, rx: mpsc::Receiver<Job>) {
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
            if let Err(e) = store.commit(&batch) {
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
        drop(committer);
        handle.join().unwrap();
        assert_eq!(*order.lock().unwrap(), (0..500).collect::<Vec<_>>());
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
        drop(committer);
        handle.join().unwrap();
        assert_eq!(*results.lock().unwrap(), vec![true, true, true]);
    }
}
