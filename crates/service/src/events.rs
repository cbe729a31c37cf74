//! Fan-out of device events to live sessions.
//!
//! Events are dispatched from the committer thread after the write that caused
//! them is durable, in commit order; commit order follows each device's write order
//! (its shard lock is held while queueing), so a device's desired notifications reach
//! its sessions in `$version` order. Mailboxes are unbounded so that the committer
//! never blocks on a slow session and no notification is dropped while the session
//! lives; a session that stops reading is closed by its keep-alive.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};

pub use twinhub_core::DeviceEvent;

/// A session's subscription to its device's events; dropping it unsubscribes.
///
/// A mailbox rather than a channel: an idle device connection holds one of these
/// for its whole life, and tokio's unbounded channel allocates a 32-slot block up
/// front (about 2.7 KB per connection). The queue here allocates only when an
/// event arrives and stays unbounded, so the committer never blocks and nothing
/// is dropped while the session lives.
pub struct DeviceWatch {
    mailbox: Arc<Mailbox>,
}

#[derive(Default)]
struct Mailbox {
    state: Mutex<MailboxState>,
}

#[derive(Default)]
struct MailboxState {
    queue: VecDeque<DeviceEvent>,
    waker: Option<Waker>,
    /// The hub is gone: no event will come again.
    closed: bool,
}

impl Mailbox {
    fn state(&self) -> MutexGuard<'_, MailboxState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn deliver(&self, events: &[DeviceEvent]) {
        let waker = {
            let mut state = self.state();
            state.queue.extend(events.iter().cloned());
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    fn close(&self) {
        let waker = {
            let mut state = self.state();
            state.closed = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl DeviceWatch {
    /// The next event, in the order they were published; `None` once the hub is
    /// gone and every queued event was taken.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<DeviceEvent>> {
        let mut state = self.mailbox.state();
        if let Some(event) = state.queue.pop_front() {
            if state.queue.is_empty() {
                // A burst of notifications leaves no buffer behind on an idle session.
                state.queue = VecDeque::new();
            }
            return Poll::Ready(Some(event));
        }
        if state.closed {
            return Poll::Ready(None);
        }
        match &state.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Waits for the next event; see [`DeviceWatch::poll_recv`].
    pub async fn recv(&mut self) -> Option<DeviceEvent> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }
}

/// Mailboxes per device id; a dropped [`DeviceWatch`] leaves a dead `Weak` that
/// the next watch or publish for the device sweeps away.
#[derive(Default)]
pub(crate) struct Watchers {
    by_device: Mutex<HashMap<String, Vec<Weak<Mailbox>>>>,
}

impl Watchers {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Vec<Weak<Mailbox>>>> {
        self.by_device.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn watch(&self, device_id: &str) -> DeviceWatch {
        let mailbox = Arc::new(Mailbox::default());
        let mut map = self.map();
        let mailboxes = map.entry(device_id.to_owned()).or_default();
        mailboxes.retain(|m| m.strong_count() > 0);
        mailboxes.push(Arc::downgrade(&mailbox));
        DeviceWatch { mailbox }
    }

    pub(crate) fn publish(&self, device_id: &str, events: Vec<DeviceEvent>) {
        if events.is_empty() {
            return;
        }
        let mut map = self.map();
        let Some(mailboxes) = map.get_mut(device_id) else {
            return;
        };
        mailboxes.retain(|weak| match weak.upgrade() {
            Some(mailbox) => {
                mailbox.deliver(&events);
                true
            }
            None => false,
        });
        if mailboxes.is_empty() {
            map.remove(device_id);
        }
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        for mailbox in self.map().values().flatten().filter_map(Weak::upgrade) {
            mailbox.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desired(version: i64) -> DeviceEvent {
        DeviceEvent::Desired {
            version,
            payload: serde_json::json!({ "$version": version }),
        }
    }

    #[tokio::test]
    async fn events_arrive_in_order_and_only_for_their_device() {
        let watchers = Watchers::default();
        let mut a = watchers.watch("a");
        let mut b = watchers.watch("b");
        watchers.publish("a", vec![desired(2), desired(3)]);
        watchers.publish("a", vec![DeviceEvent::Kick]);
        assert_eq!(a.recv().await, Some(desired(2)));
        assert_eq!(a.recv().await, Some(desired(3)));
        assert_eq!(a.recv().await, Some(DeviceEvent::Kick));
        let pending = std::future::poll_fn(|cx| Poll::Ready(b.poll_recv(cx).is_pending())).await;
        assert!(pending, "b got a's events");
    }

    #[tokio::test]
    async fn a_waiting_session_is_woken() {
        let watchers = Arc::new(Watchers::default());
        let mut a = watchers.watch("a");
        let publisher = watchers.clone();
        let waiting = tokio::spawn(async move { a.recv().await });
        tokio::task::yield_now().await;
        publisher.publish("a", vec![desired(7)]);
        assert_eq!(waiting.await.unwrap(), Some(desired(7)));
    }

    #[tokio::test]
    async fn dropped_watches_are_swept_and_a_gone_hub_ends_the_stream() {
        let watchers = Watchers::default();
        let first = watchers.watch("a");
        drop(first);
        let mut second = watchers.watch("a");
        assert_eq!(watchers.map()["a"].len(), 1, "the dead mailbox was swept");
        watchers.publish("a", vec![DeviceEvent::Kick]);
        drop(watchers);
        assert_eq!(second.recv().await, Some(DeviceEvent::Kick));
        assert_eq!(second.recv().await, None);
    }
}
