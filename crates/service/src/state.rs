//! The hub's working state and its write path.
//!
//! Devices are sharded by id. Each shard is a `BTreeMap` behind a std mutex: the
//! mutex orders the writes of the devices in it and is never held across an
//! `.await` (it only covers the pure core operation and queueing the result for
//! commit, a few microseconds). Ordered maps give queries a stable key order to page
//! in without sorting.
//!
//! A write is acknowledged only after the [`Committer`] reports it durable; its
//! events are published from the committer thread at the same moment, in commit
//! order. The in-memory state is updated before the commit, so a read can see a
//! write a little before it is acknowledged, never after a failure is reported for
//! it: after a storage failure the hub refuses every further write (fail-stop).

use crate::clock::{Clock, SystemClock};
use crate::events::{DeviceEvent, Watchers};
use crate::metrics::Counters;
use crate::shard::{lock, shard_index, Shard, SHARDS};
pub use crate::shard::{DeviceRecord, ModuleRecord};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use tokio::sync::oneshot;
use twinhub_core::policy::Policy;
use twinhub_core::{ErrorCode, HubError, Limits, Timestamp};
use twinhub_store::{Committer, Mutation, Space, Store, StoreError};

/// What the hub needs to know at start.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// The hub's host names; the first is the one put in connection strings.
    /// SAS tokens must be scoped to one of them.
    pub host_names: Vec<String>,
    /// Twin limits.
    pub limits: Limits,
    /// Shared access policies at start. [`Hub::set_policies`] replaces them while
    /// the hub runs; [`Hub::policies`] is the current set.
    pub policies: Vec<Policy>,
}

impl HubConfig {
    /// The host name used in connection strings.
    pub fn primary_host(&self) -> &str {
        self.host_names.first().map_or("localhost", String::as_str)
    }
}

pub(crate) struct Inner {
    pub(crate) config: HubConfig,
    shards: Vec<Mutex<Shard>>,
    committer: Committer,
    pub(crate) watchers: Watchers,
    failed: AtomicBool,
    /// Set by [`Hub::close`]: writes are refused from then on.
    closing: AtomicBool,
    pub(crate) counters: Counters,
    pub(crate) policies: crate::auth::Policies,
    pub(crate) methods: crate::methods::Methods,
    clock: Arc<dyn Clock>,
}

impl Inner {
    /// Tells `device_id`'s live sessions about `events`, and counts them.
    pub(crate) fn publish(&self, device_id: &str, events: Vec<DeviceEvent>) {
        self.counters.published(&events);
        self.watchers.publish(device_id, events);
    }
}

/// Resolves once a queued write is durable (or failed).
pub(crate) type Ack = oneshot::Receiver<Result<(), HubError>>;

/// A write queued for commit in its device's order, with its value for the
/// caller once it is durable.
pub(crate) struct Queued<T> {
    /// `None` for a write that stores nothing.
    ack: Option<Ack>,
    value: T,
}

impl<T> Queued<T> {
    /// Waits until the write is durable and returns its value, or the storage
    /// failure that lost it.
    pub(crate) async fn durable(self) -> Result<T, HubError> {
        let Some(ack) = self.ack else {
            return Ok(self.value);
        };
        match ack.await {
            Ok(Ok(())) => Ok(self.value),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(storage_failed()),
        }
    }
}

/// The hub: a cheap-to-clone handle to its shared state.
#[derive(Clone)]
pub struct Hub {
    pub(crate) inner: Arc<Inner>,
}

/// What a write does to the stored record.
pub(crate) enum Change {
    /// Nothing to store (a no-op write, or in-memory-only state).
    None,
    /// Store the record as it now is.
    Upsert,
    /// Remove the record.
    Delete,
}

/// The result of a write closure: the value for the caller, what to store, and
/// the events to publish once it is durable: the device's own, and those of its
/// modules' identities, each addressed by client id (`{device}/{module}`).
pub(crate) struct Effect<T> {
    pub(crate) value: T,
    pub(crate) change: Change,
    pub(crate) events: Vec<DeviceEvent>,
    pub(crate) module_events: Vec<(String, DeviceEvent)>,
}

impl<T> Effect<T> {
    pub(crate) fn upsert(value: T, events: Vec<DeviceEvent>) -> Self {
        Self {
            value,
            change: Change::Upsert,
            events,
            module_events: Vec::new(),
        }
    }

    /// Nothing to store or publish.
    pub(crate) fn unchanged(value: T) -> Self {
        Self {
            value,
            change: Change::None,
            events: Vec::new(),
            module_events: Vec::new(),
        }
    }
}

impl Hub {
    /// Loads every device from `store` and starts the group committer. The returned
    /// handle finishes once every clone of the hub is dropped and all writes are
    /// committed; join it on shutdown.
    pub fn open<S: Store>(
        config: HubConfig,
        store: S,
    ) -> Result<(Self, JoinHandle<()>), StoreError> {
        Self::open_with_clock(config, store, Arc::new(SystemClock))
    }

    /// [`Hub::open`] with the time read from `clock` instead of the wall clock.
    pub fn open_with_clock<S: Store>(
        config: HubConfig,
        mut store: S,
        clock: Arc<dyn Clock>,
    ) -> Result<(Self, JoinHandle<()>), StoreError> {
        let mut shards = crate::load::load_shards(&mut store, SHARDS)?;
        crate::sessions::load_sessions(&mut store, &mut shards)?;
        let (committer, handle) = Committer::start(store)?;
        let inner = Inner {
            policies: crate::auth::Policies::new(config.policies.clone()),
            config,
            shards: shards.into_iter().map(Mutex::new).collect(),
            committer,
            watchers: Watchers::default(),
            failed: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            counters: Counters::default(),
            methods: crate::methods::Methods::default(),
            clock,
        };
        Ok((
            Self {
                inner: Arc::new(inner),
            },
            handle,
        ))
    }

    /// The hub's configuration.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// The current time, from the hub's clock.
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    pub(crate) fn shard(&self, device_id: &str) -> MutexGuard<'_, Shard> {
        lock(&self.inner.shards[shard_index(device_id)])
    }

    /// Every shard, for whole-hub reads. Each guard is taken and released by the
    /// caller in turn; never hold two at once.
    pub(crate) fn shards(&self) -> &[Mutex<Shard>] {
        &self.inner.shards
    }

    /// Reads a device's record.
    pub(crate) fn read<T>(
        &self,
        device_id: &str,
        f: impl FnOnce(&DeviceRecord) -> T,
    ) -> Result<T, HubError> {
        let shard = self.shard(device_id);
        shard
            .devices
            .get(device_id)
            .map(f)
            .ok_or_else(|| HubError::device_not_found(device_id))
    }

    /// Changes in-memory-only state of a device (presence); nothing is stored.
    pub(crate) fn touch(&self, device_id: &str, f: impl FnOnce(&mut DeviceRecord)) {
        if let Some(record) = self.shard(device_id).devices.get_mut(device_id) {
            f(record);
        }
    }

    /// The write path. `f` sees the device's slot (`None` if absent) and may change
    /// it; core operations are all-or-nothing, so an `Err` leaves it as it was. The
    /// new record is queued for commit under the shard lock, which orders the
    /// device's writes; the future resolves once the write is durable.
    pub(crate) async fn write<T>(
        &self,
        device_id: &str,
        f: impl FnOnce(&mut Option<DeviceRecord>) -> Result<Effect<T>, HubError>,
    ) -> Result<T, HubError> {
        self.queue_write(device_id, f)?.durable().await
    }

    /// The synchronous half of [`Hub::write`]: runs `f` and queues its result
    /// for commit before returning, so the write has its place in the device's
    /// order when this returns, whenever the caller awaits
    /// [`Queued::durable`].
    pub(crate) fn queue_write<T>(
        &self,
        device_id: &str,
        f: impl FnOnce(&mut Option<DeviceRecord>) -> Result<Effect<T>, HubError>,
    ) -> Result<Queued<T>, HubError> {
        let (ack, value) = {
            self.check_writable()?;
            let mut shard = self.shard(device_id);
            let mut slot = shard.devices.remove(device_id);
            let filed = shard.indexes.keys(slot.as_ref());
            let result = f(&mut slot);
            shard.indexes.update(device_id, filed, slot.as_ref());
            // Encoded only for a write that succeeded and stores something.
            let mutation = match &result {
                Ok(Effect {
                    change: Change::Upsert,
                    ..
                }) => slot.as_ref().map(|record| {
                    serde_json::to_vec(record).map(|value| Mutation::Put {
                        space: Space::Devices,
                        key: device_id.to_owned(),
                        value,
                    })
                }),
                _ => None,
            };
            if let Some(record) = slot {
                shard.devices.insert(device_id.into(), record);
            }
            let effect = result?;
            let mutation = match (effect.change, mutation) {
                (Change::None, _) => {
                    return Ok(Queued {
                        ack: None,
                        value: effect.value,
                    })
                }
                (Change::Upsert, Some(Ok(put))) => put,
                (Change::Upsert, Some(Err(e))) => {
                    return Err(HubError::new(
                        ErrorCode::ServerError,
                        format!("cannot encode the device record: {e}"),
                    ))
                }
                (Change::Delete, _) | (Change::Upsert, None) => Mutation::Delete {
                    space: Space::Devices,
                    key: device_id.to_owned(),
                },
            };
            let mut mutations = vec![mutation];
            // The MQTT sessions of a deleted device or module go with it, in the
            // same commit.
            for key in crate::sessions::session_keys(&shard, device_id) {
                let gone = shard
                    .devices
                    .get(device_id)
                    .is_none_or(|record| !record.holds(&key));
                if gone {
                    shard.sessions.remove(&key);
                    mutations.push(Mutation::Delete {
                        space: Space::Sessions,
                        key,
                    });
                }
            }
            let (tx, rx) = oneshot::channel();
            let inner = Arc::clone(&self.inner);
            let id = device_id.to_owned();
            let (events, module_events) = (effect.events, effect.module_events);
            self.inner.committer.submit(mutations, move |result| {
                let outcome = match result {
                    Ok(()) => {
                        inner.publish(&id, events);
                        for (client_id, event) in module_events {
                            inner.publish(&client_id, vec![event]);
                        }
                        Ok(())
                    }
                    Err(e) => {
                        inner.failed.store(true, Ordering::Release);
                        tracing::error!(error = %e, device = %id, "write not durable");
                        Err(storage_failed())
                    }
                };
                let _ = tx.send(outcome);
            });
            (rx, effect.value)
        };
        Ok(Queued {
            ack: Some(ack),
            value,
        })
    }

    fn check_writable(&self) -> Result<(), HubError> {
        if self.inner.failed.load(Ordering::Acquire) {
            return Err(storage_failed());
        }
        if self.inner.closing.load(Ordering::Acquire) {
            return Err(HubError::new(
                ErrorCode::ServiceUnavailable,
                "The hub is shutting down.",
            ));
        }
        Ok(())
    }

    /// Queues `mutations` (no events) for commit. Callers queue under the shard
    /// lock of the device they belong to, so that they keep its write order.
    pub(crate) fn submit(&self, mutations: Vec<Mutation>) -> Result<Ack, HubError> {
        self.check_writable()?;
        let (tx, rx) = oneshot::channel();
        let inner = Arc::clone(&self.inner);
        self.inner.committer.submit(mutations, move |result| {
            let outcome = result.map_err(|e| {
                inner.failed.store(true, Ordering::Release);
                tracing::error!(error = %e, "write not durable");
                storage_failed()
            });
            let _ = tx.send(outcome);
        });
        Ok(rx)
    }

    /// Stops accepting writes (they fail with 503 from now on) and resolves once
    /// every write queued before is durable: the last step of a graceful shutdown,
    /// which need not wait for every handle of the hub to be dropped.
    pub async fn close(&self) -> Result<(), HubError> {
        self.inner.closing.store(true, Ordering::Release);
        let (tx, rx) = oneshot::channel();
        // An empty unit: the committer runs completions in submission order, so
        // this one runs after every earlier write's.
        self.inner.committer.submit(Vec::new(), move |result| {
            let _ = tx.send(result.map_err(|_| storage_failed()));
        });
        rx.await.unwrap_or_else(|_| Err(storage_failed()))
    }

    /// What the group committer has done so far.
    pub(crate) fn commit_stats(&self) -> twinhub_store::CommitStatsSnapshot {
        self.inner.committer.stats()
    }
}

pub(crate) fn storage_failed() -> HubError {
    HubError::new(
        ErrorCode::ServiceUnavailable,
        "The hub's storage failed and it no longer accepts writes. Restart it after fixing the storage.",
    )
}
