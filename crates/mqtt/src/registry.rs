//! Sessions by client id: one live connection per identity, and where the
//! subscriptions of clean-session-0 clients come from and go to.
//!
//! The SDKs connect with clean session 0 and never re-subscribe after a
//! reconnect (spec §2.4). The backend owns the stored subscriptions (durably, so
//! they survive a hub restart); the registry decides, under one lock, which
//! connection is a client's current one, and only that one reads them at CONNECT
//! and writes its changes through. Doing both under the same lock means a
//! kicked connection's late SUBSCRIBE can never overwrite what its successor
//! read.
//!
//! One std mutex guards the map: it is held for a hash-map operation and the
//! backend's in-memory session read or queued write, never across an `.await`,
//! and taken only on connect, disconnect and (rare) SUBSCRIBEs.

use crate::backend::{DeviceBackend, Identity};
use crate::session::Subscriptions;
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::oneshot;
use twinhub_core::HubError;

/// Where stored sessions live: the backend, or a map in tests.
pub(crate) trait SessionStore {
    fn load(&self, identity: &Identity) -> Option<Subscriptions>;
    fn save(
        &self,
        identity: &Identity,
        subscriptions: Option<Subscriptions>,
    ) -> BoxFuture<'static, Result<(), HubError>>;
}

impl<T: DeviceBackend + ?Sized> SessionStore for T {
    fn load(&self, identity: &Identity) -> Option<Subscriptions> {
        self.stored_session(identity)
    }

    fn save(
        &self,
        identity: &Identity,
        subscriptions: Option<Subscriptions>,
    ) -> BoxFuture<'static, Result<(), HubError>> {
        self.save_session(identity, subscriptions)
    }
}

/// A durable session change in progress.
pub(crate) type Saving = BoxFuture<'static, Result<(), HubError>>;

/// What a connection gets when it opens its session.
pub(crate) struct Opened {
    /// Identifies this connection in later calls.
    pub(crate) connection: u64,
    /// Whether a stored session was resumed (CONNACK session-present).
    pub(crate) session_present: bool,
    /// The subscriptions to start with.
    pub(crate) subscriptions: Subscriptions,
    /// Resolves (or fails) when a newer connection of the same client replaces this one.
    pub(crate) kicked: oneshot::Receiver<()>,
    /// A clean session forgetting the stored one: to await before CONNACK.
    pub(crate) forgetting: Option<Saving>,
}

struct Entry {
    connection: u64,
    kick: oneshot::Sender<()>,
    /// Clean session 0: changes are stored.
    persistent: bool,
}

/// The live connections of all clients.
#[derive(Default)]
pub(crate) struct SessionRegistry {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    next_connection: u64,
}

impl SessionRegistry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every operation leaves the map consistent, so a poisoned lock is usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a session for `identity`, kicking any live connection of it. With
    /// `clean_session` the stored session is discarded ([MQTT-3.1.2-6]); without,
    /// it is resumed ([MQTT-3.1.2-4]) and this connection's changes are stored.
    pub(crate) fn open(
        &self,
        identity: &Identity,
        clean_session: bool,
        store: &(impl SessionStore + ?Sized),
    ) -> Opened {
        let (kick, kicked) = oneshot::channel();
        let mut inner = self.lock();
        inner.next_connection += 1;
        let connection = inner.next_connection;
        let previous = inner.entries.insert(
            identity.client_id(),
            Entry {
                connection,
                kick,
                persistent: !clean_session,
            },
        );
        // A live clean-session-0 connection has a session even before it
        // subscribes; a stored one is one with subscriptions.
        let live_session = previous.as_ref().is_some_and(|old| old.persistent);
        if let Some(old) = previous {
            // The old connection may already be gone; nothing to do then.
            let _ = old.kick.send(());
        }
        let stored = store.load(identity);
        let (subscriptions, forgetting) = match (clean_session, stored) {
            (false, stored) => (stored, None),
            (true, Some(_)) => (None, Some(store.save(identity, None))),
            (true, None) => (None, None),
        };
        Opened {
            connection,
            session_present: !clean_session && (live_session || subscriptions.is_some()),
            subscriptions: subscriptions.unwrap_or_default(),
            kicked,
            forgetting,
        }
    }

    /// Records the subscriptions of `connection`, if it is still the client's
    /// current one and its session is stored: returns the durable write then.
    /// An empty set forgets the stored session.
    pub(crate) fn update(
        &self,
        identity: &Identity,
        connection: u64,
        subscriptions: Subscriptions,
        store: &(impl SessionStore + ?Sized),
    ) -> Option<Saving> {
        let inner = self.lock();
        let entry = inner.entries.get(&identity.client_id())?;
        if entry.connection != connection || !entry.persistent {
            return None;
        }
        let stored = (!subscriptions.is_empty()).then_some(subscriptions);
        Some(store.save(identity, stored))
    }

    /// Runs `f` under the registry's lock if `connection` is still the client's
    /// current one: what it tells the backend cannot then overwrite what a newer
    /// connection of the client told it. Returns whether it ran.
    pub(crate) fn if_current(&self, client_id: &str, connection: u64, f: impl FnOnce()) -> bool {
        let inner = self.lock();
        let current = inner
            .entries
            .get(client_id)
            .is_some_and(|e| e.connection == connection);
        if current {
            f();
        }
        current
    }

    /// Ends `connection`. Returns whether it was the client's current connection
    /// (false when a newer one replaced it): only then is the client offline.
    pub(crate) fn close(&self, client_id: &str, connection: u64) -> bool {
        let mut inner = self.lock();
        if inner
            .entries
            .get(client_id)
            .is_none_or(|e| e.connection != connection)
        {
            return false;
        }
        inner.entries.remove(client_id);
        true
    }

    /// Live connections.
    pub(crate) fn live(&self) -> usize {
        self.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::QoS;
    use futures_util::FutureExt;

    /// Stored sessions in a map, with a log of the writes.
    #[derive(Default)]
    struct Map {
        sessions: Mutex<HashMap<String, Subscriptions>>,
        writes: Mutex<Vec<(String, Option<Subscriptions>)>>,
    }

    impl SessionStore for Map {
        fn load(&self, identity: &Identity) -> Option<Subscriptions> {
            self.sessions
                .lock()
                .unwrap()
                .get(&identity.client_id())
                .copied()
        }

        fn save(&self, identity: &Identity, s: Option<Subscriptions>) -> Saving {
            let id = identity.client_id();
            self.writes.lock().unwrap().push((id.clone(), s));
            let mut sessions = self.sessions.lock().unwrap();
            match s {
                Some(s) => sessions.insert(id, s),
                None => sessions.remove(&id),
            };
            futures_util::future::ready(Ok(())).boxed()
        }
    }

    fn subs() -> Subscriptions {
        Subscriptions {
            twin_responses: Some(QoS::AtMostOnce),
            desired: Some(QoS::AtLeastOnce),
            ..Subscriptions::default()
        }
    }

    fn dev(id: &str) -> Identity {
        Identity::device(id)
    }

    #[test]
    fn clean_session_0_stores_and_restores_subscriptions() {
        let (r, store) = (SessionRegistry::default(), Map::default());
        let first = r.open(&dev("dev1"), false, &store);
        assert!(!first.session_present);
        assert!(first.forgetting.is_none());
        assert!(r
            .update(&dev("dev1"), first.connection, subs(), &store)
            .is_some());
        assert!(r.close("dev1", first.connection));
        assert_eq!(r.live(), 0);
        assert_eq!(store.load(&dev("dev1")), Some(subs()));

        let second = r.open(&dev("dev1"), false, &store);
        assert!(second.session_present);
        assert_eq!(second.subscriptions, subs());
        // Unsubscribing from everything forgets the stored session.
        assert!(r
            .update(
                &dev("dev1"),
                second.connection,
                Subscriptions::default(),
                &store
            )
            .is_some());
        assert_eq!(store.load(&dev("dev1")), None);
    }

    #[test]
    fn clean_session_1_forgets_and_stores_nothing() {
        let (r, store) = (SessionRegistry::default(), Map::default());
        let first = r.open(&dev("dev1"), false, &store);
        r.update(&dev("dev1"), first.connection, subs(), &store);
        r.close("dev1", first.connection);
        let clean = r.open(&dev("dev1"), true, &store);
        assert!(!clean.session_present);
        assert_eq!(clean.subscriptions, Subscriptions::default());
        assert!(clean.forgetting.is_some(), "the stored session is deleted");
        assert_eq!(store.load(&dev("dev1")), None);
        assert!(r
            .update(&dev("dev1"), clean.connection, subs(), &store)
            .is_none());
        r.close("dev1", clean.connection);
        assert!(!r.open(&dev("dev1"), false, &store).session_present);
        // Nothing stored: a clean connect has nothing to delete.
        assert!(r.open(&dev("dev1"), true, &store).forgetting.is_none());
    }

    #[test]
    fn a_new_connection_kicks_the_old_and_inherits_its_subscriptions() {
        let (r, store) = (SessionRegistry::default(), Map::default());
        let mut old = r.open(&dev("dev1"), false, &store);
        r.update(&dev("dev1"), old.connection, subs(), &store);
        let new = r.open(&dev("dev1"), false, &store);
        assert_eq!(old.kicked.try_recv(), Ok(()));
        assert!(new.session_present);
        assert_eq!(new.subscriptions, subs());
        // The kicked connection's late writes and close change nothing.
        let writes = store.writes.lock().unwrap().len();
        assert!(r
            .update(
                &dev("dev1"),
                old.connection,
                Subscriptions::default(),
                &store
            )
            .is_none());
        assert_eq!(store.writes.lock().unwrap().len(), writes);
        assert!(!r.close("dev1", old.connection));
        assert_eq!(r.live(), 1);
        assert!(r.close("dev1", new.connection));
        assert_eq!(r.live(), 0);
        assert_eq!(r.open(&dev("dev1"), false, &store).subscriptions, subs());
    }

    #[test]
    fn clients_are_independent() {
        let (r, store) = (SessionRegistry::default(), Map::default());
        let a = r.open(&dev("a"), false, &store);
        let b = r.open(&dev("b"), false, &store);
        r.update(&dev("a"), a.connection, subs(), &store);
        assert_eq!(r.live(), 2);
        assert!(r.close("b", b.connection));
        assert!(!r.close("b", b.connection), "closing twice is harmless");
        assert_eq!(r.live(), 1);
        assert_eq!(store.load(&dev("b")), None);
    }
}
