//! Sessions by client id: one live connection per identity, and the
//! subscriptions of clean-session-0 clients kept across connections.
//!
//! The SDKs connect with clean session 0 and never re-subscribe after a
//! reconnect (spec §2.4), so the registry is the owner of each client's
//! subscriptions: a connection writes every change through to it, and a new
//! connection reads them back, even while the old one is still being kicked.
//!
//! One std mutex guards the map: it is held for a hash-map operation, never across
//! an `.await`, and touched only on connect, disconnect and (rare) SUBSCRIBEs.

use crate::session::Subscriptions;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::oneshot;

/// What a connection gets when it opens its session.
#[derive(Debug)]
pub(crate) struct Opened {
    /// Identifies this connection in later calls.
    pub(crate) connection: u64,
    /// Whether a session existed for the client id (CONNACK session-present).
    pub(crate) session_present: bool,
    /// The subscriptions to start with.
    pub(crate) subscriptions: Subscriptions,
    /// Resolves (or fails) when a newer connection of the same client replaces this one.
    pub(crate) kicked: oneshot::Receiver<()>,
}

struct Live {
    connection: u64,
    kick: oneshot::Sender<()>,
}

struct Entry {
    live: Option<Live>,
    subscriptions: Subscriptions,
    /// Kept after the connection closes (clean session 0).
    persistent: bool,
}

/// The sessions of all clients.
#[derive(Default)]
pub(crate) struct SessionRegistry {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    next_connection: u64,
    live: usize,
}

impl SessionRegistry {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every operation leaves the map consistent, so a poisoned lock is usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a session for `client_id`, kicking any live connection of it. With
    /// `clean_session` the stored session is discarded ([MQTT-3.1.2-6]); without,
    /// it is resumed ([MQTT-3.1.2-4]) and kept after the connection ends.
    pub(crate) fn open(&self, client_id: &str, clean_session: bool) -> Opened {
        let (kick, kicked) = oneshot::channel();
        let mut inner = self.lock();
        inner.next_connection += 1;
        let connection = inner.next_connection;
        let previous = inner.entries.remove(client_id);
        let mut session_present = false;
        let mut subscriptions = Subscriptions::default();
        let mut was_live = false;
        if let Some(previous) = previous {
            if let Some(old) = previous.live {
                was_live = true;
                // The old connection may already be gone; nothing to do then.
                let _ = old.kick.send(());
            }
            if !clean_session {
                session_present = true;
                subscriptions = previous.subscriptions;
            }
        }
        if !was_live {
            inner.live += 1;
        }
        inner.entries.insert(
            client_id.to_owned(),
            Entry {
                live: Some(Live { connection, kick }),
                subscriptions,
                persistent: !clean_session,
            },
        );
        Opened {
            connection,
            session_present,
            subscriptions,
            kicked,
        }
    }

    /// Records the subscriptions of `connection`, if it is still the client's.
    pub(crate) fn update(&self, client_id: &str, connection: u64, subscriptions: Subscriptions) {
        let mut inner = self.lock();
        if let Some(entry) = inner.entries.get_mut(client_id) {
            if entry
                .live
                .as_ref()
                .is_some_and(|l| l.connection == connection)
            {
                entry.subscriptions = subscriptions;
            }
        }
    }

    /// Ends `connection`. Returns whether it was the client's current connection
    /// (false when a newer one replaced it): only then is the client offline.
    pub(crate) fn close(&self, client_id: &str, connection: u64) -> bool {
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get_mut(client_id) else {
            return false;
        };
        if entry
            .live
            .as_ref()
            .is_none_or(|l| l.connection != connection)
        {
            return false;
        }
        entry.live = None;
        if !entry.persistent {
            inner.entries.remove(client_id);
        }
        inner.live -= 1;
        true
    }

    /// Live connections.
    pub(crate) fn live(&self) -> usize {
        self.lock().live
    }

    /// Stored sessions (live or not).
    pub(crate) fn stored(&self) -> usize {
        self.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::QoS;

    fn subs() -> Subscriptions {
        Subscriptions {
            twin_responses: Some(QoS::AtMostOnce),
            desired: Some(QoS::AtLeastOnce),
            ..Subscriptions::default()
        }
    }

    #[test]
    fn clean_session_0_restores_subscriptions() {
        let r = SessionRegistry::default();
        let first = r.open("dev1", false);
        assert!(!first.session_present);
        r.update("dev1", first.connection, subs());
        assert!(r.close("dev1", first.connection));
        assert_eq!((r.live(), r.stored()), (0, 1));

        let second = r.open("dev1", false);
        assert!(second.session_present);
        assert_eq!(second.subscriptions, subs());
    }

    #[test]
    fn clean_session_1_drops_them() {
        let r = SessionRegistry::default();
        let first = r.open("dev1", false);
        r.update("dev1", first.connection, subs());
        r.close("dev1", first.connection);
        let clean = r.open("dev1", true);
        assert!(!clean.session_present);
        assert_eq!(clean.subscriptions, Subscriptions::default());
        r.update("dev1", clean.connection, subs());
        r.close("dev1", clean.connection);
        assert_eq!(r.stored(), 0, "a clean session ends with its connection");
        assert!(!r.open("dev1", false).session_present);
    }

    #[test]
    fn a_new_connection_kicks_the_old_and_inherits_its_subscriptions() {
        let r = SessionRegistry::default();
        let mut old = r.open("dev1", false);
        r.update("dev1", old.connection, subs());
        let new = r.open("dev1", false);
        assert_eq!(old.kicked.try_recv(), Ok(()));
        assert!(new.session_present);
        assert_eq!(new.subscriptions, subs());
        // The kicked connection's late writes and close change nothing.
        r.update("dev1", old.connection, Subscriptions::default());
        assert!(!r.close("dev1", old.connection));
        assert_eq!(r.live(), 1);
        assert!(r.close("dev1", new.connection));
        assert_eq!(r.live(), 0);
        assert_eq!(r.open("dev1", false).subscriptions, subs());
    }

    #[test]
    fn clients_are_independent() {
        let r = SessionRegistry::default();
        let a = r.open("a", false);
        let b = r.open("b", false);
        r.update("a", a.connection, subs());
        assert_eq!(r.live(), 2);
        assert!(r.close("b", b.connection));
        assert!(!r.close("b", b.connection), "closing twice is harmless");
        assert_eq!(r.live(), 1);
    }
}
