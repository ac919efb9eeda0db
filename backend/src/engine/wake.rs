//! Wake-ups for long-polls: a waiter subscribes to a key (a device's mailbox, a user's mailbox,
//! a command's status) before it reads the database, and a writer wakes the key after it
//! commits. No waiter polls the database in a loop, and no wake-up falls between a read and a
//! wait, because a change after subscribing is remembered by the subscription.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

#[derive(Debug, Default)]
pub struct Wakeups {
    slots: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Where wake-ups go for the other replicas (PostgreSQL NOTIFY), when there are any.
    publish: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<String>>,
}

impl Wakeups {
    pub fn subscribe(self: &Arc<Self>, key: String) -> Subscription {
        let mut slots = self.slots.lock().expect("wakeups lock");
        let rx = slots
            .entry(key.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        Subscription {
            wakeups: Arc::clone(self),
            key,
            rx: Some(rx),
        }
    }

    /// Wakes the waiters of `key` here and on every other replica.
    pub fn wake(&self, key: &str) {
        self.wake_local(key);
        if let Some(tx) = self.publish.get() {
            let _ = tx.send(key.to_owned());
        }
    }

    /// Sends every later wake-up to `tx` as well (set once, at start).
    pub fn publish_to(&self, tx: tokio::sync::mpsc::UnboundedSender<String>) {
        let _ = self.publish.set(tx);
    }

    /// Wakes the waiters of `key` in this process only.
    pub fn wake_local(&self, key: &str) {
        let slots = self.slots.lock().expect("wakeups lock");
        if let Some(tx) = slots.get(key) {
            tx.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// Wakes every waiter in this process: after wake-ups from other replicas may have been
    /// missed (the listener's connection was lost), each waiter reads again.
    pub fn wake_all_local(&self) {
        let slots = self.slots.lock().expect("wakeups lock");
        for tx in slots.values() {
            tx.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// Keys with at least one waiter (for tests and metrics).
    pub fn waiting(&self) -> usize {
        self.slots.lock().expect("wakeups lock").len()
    }
}

pub fn device_key(device_id: &str) -> String {
    format!("device:{device_id}")
}

pub fn user_key(group_id: &str, user_id: &str) -> String {
    format!("user:{group_id}:{user_id}")
}

pub fn command_key(command_id: &str) -> String {
    format!("command:{command_id}")
}

pub struct Subscription {
    wakeups: Arc<Wakeups>,
    key: String,
    rx: Option<watch::Receiver<u64>>,
}

impl Subscription {
    /// Resolves once the key was woken after this subscription was made (or after the last
    /// `changed` that resolved).
    pub async fn changed(&mut self) {
        if let Some(rx) = self.rx.as_mut() {
            // The sender lives in the map while any subscription does, so this cannot fail.
            let _ = rx.changed().await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.rx.take());
        let mut slots = self.wakeups.slots.lock().expect("wakeups lock");
        if slots.get(&self.key).is_some_and(|tx| tx.receiver_count() == 0) {
            slots.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_wake_after_subscribing_is_not_lost_and_slots_are_freed() {
        let w = Arc::new(Wakeups::default());
        let mut sub = w.subscribe(device_key("d1"));
        w.wake(&device_key("d1"));
        tokio::time::timeout(Duration::from_secs(1), sub.changed())
            .await
            .unwrap();
        w.wake(&device_key("other"));
        assert!(tokio::time::timeout(Duration::from_millis(50), sub.changed())
            .await
            .is_err());
        assert_eq!(w.waiting(), 1);
        drop(sub);
        assert_eq!(w.waiting(), 0);
    }
}
