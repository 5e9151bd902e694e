//! Events: every state change, appended to a durable log before it is
//! published, with a sequence number that only grows (also across daemon
//! restarts). Subscribers resume from a sequence number; one that falls
//! behind catches up from the log, and is told with a `missed` record only
//! when the log no longer holds what it missed (compaction).

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::store::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventType {
    Create,
    Start,
    ExecAdded,
    ExecStarted,
    /// The init exited (the container stopped).
    Exit,
    ExecExit,
    Pause,
    Resume,
    Oom,
    Restart,
    Delete,
    /// Limits or the restart policy changed (`berth update`).
    Update,
    /// The health status changed (`status`: starting, healthy, unhealthy).
    #[serde(rename = "health_status")]
    HealthStatus,
    /// The container got a new name (`name`; the old one in `old_name`).
    Rename,
    /// Not a state change: `missed` events were compacted away before this
    /// subscriber could read them.
    Missed,
}

impl EventType {
    pub const ALL: [EventType; 15] = [
        EventType::Create,
        EventType::Start,
        EventType::ExecAdded,
        EventType::ExecStarted,
        EventType::Exit,
        EventType::ExecExit,
        EventType::Pause,
        EventType::Resume,
        EventType::Oom,
        EventType::Restart,
        EventType::Delete,
        EventType::Update,
        EventType::HealthStatus,
        EventType::Rename,
        EventType::Missed,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            EventType::Create => "create",
            EventType::Start => "start",
            EventType::ExecAdded => "exec-added",
            EventType::ExecStarted => "exec-started",
            EventType::Exit => "exit",
            EventType::ExecExit => "exec-exit",
            EventType::Pause => "pause",
            EventType::Resume => "resume",
            EventType::Oom => "oom",
            EventType::Restart => "restart",
            EventType::Delete => "delete",
            EventType::Update => "update",
            EventType::HealthStatus => "health_status",
            EventType::Rename => "rename",
            EventType::Missed => "missed",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::ALL
            .iter()
            .find(|t| t.as_str() == s)
            .copied()
            .ok_or_else(|| {
                let names: Vec<_> = EventType::ALL.iter().map(|t| t.as_str()).collect();
                format!("unknown event type {s:?}: use one of {}", names.join(", "))
            })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    /// RFC 3339, UTC, nanoseconds.
    pub time: String,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub container: String,
    #[serde(default)]
    pub name: String,
    /// `init` or an exec id; empty where no process applies.
    #[serde(default)]
    pub process: String,
    #[serde(default)]
    pub pid: i32,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// For `missed`: how many events were lost.
    #[serde(default)]
    pub missed: u64,
    /// For `health_status`: the new status.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// For `rename`: the name before.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub old_name: String,
}

/// What a publisher says; the bus adds `seq` and `time`.
#[derive(Debug, Clone, Default)]
pub struct EventInfo {
    pub container: String,
    pub name: String,
    pub process: String,
    pub pid: i32,
    pub exit_code: Option<i32>,
    pub status: String,
    pub old_name: String,
}

pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

/// How many events a subscriber reads from the log at a time.
const BATCH: usize = 512;
/// Live events buffered per subscriber before it must catch up from the log.
const LIVE_BUFFER: usize = 1024;

struct BusInner {
    store: Arc<dyn Store>,
    tx: broadcast::Sender<Event>,
    /// The last sequence number handed out. Held while appending, so the log
    /// and the live stream see events in the same order.
    seq: Mutex<u64>,
}

/// The event bus: durable append, then live broadcast.
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<BusInner>,
}

impl EventBus {
    /// A bus continuing after the last sequence number the store has seen.
    pub fn new(store: Arc<dyn Store>) -> Result<Self, crate::store::StoreError> {
        let (_, last) = store.event_bounds()?;
        let (tx, _) = broadcast::channel(LIVE_BUFFER);
        Ok(Self {
            inner: Arc::new(BusInner {
                store,
                tx,
                seq: Mutex::new(last),
            }),
        })
    }

    /// Append `kind` to the log, then publish it. A failed append is logged
    /// and the event still goes out live: losing durability of one event is
    /// better than hiding a state change from every subscriber.
    pub fn publish(&self, kind: EventType, info: EventInfo) -> Event {
        let (ev, _) = self.publish_with(kind, info, None, None, || {});
        ev
    }

    /// As [`EventBus::publish`], writing the container's record (or its
    /// removal) in the same durable write as the event; `before_live` runs
    /// after the write and before anyone sees the event (so readers of the
    /// state never lag behind it). Returns the store's verdict too.
    pub fn publish_with(
        &self,
        kind: EventType,
        info: EventInfo,
        save: Option<&crate::container::ContainerRecord>,
        remove: Option<&str>,
        before_live: impl FnOnce(),
    ) -> (Event, Result<(), crate::store::StoreError>) {
        let (mut evs, written) =
            self.publish_all_with(vec![(kind, info)], save, remove, before_live);
        (evs.remove(0), written)
    }

    /// As [`EventBus::publish_with`], for events that happen together (an
    /// exit and the auto-remove that follows it): consecutive sequence
    /// numbers, one durable write, then published live in order.
    pub fn publish_all_with(
        &self,
        events: Vec<(EventType, EventInfo)>,
        save: Option<&crate::container::ContainerRecord>,
        remove: Option<&str>,
        before_live: impl FnOnce(),
    ) -> (Vec<Event>, Result<(), crate::store::StoreError>) {
        let mut seq = self.inner.seq.lock().unwrap_or_else(|p| p.into_inner());
        let time = now_rfc3339();
        let evs: Vec<Event> = events
            .into_iter()
            .map(|(kind, info)| {
                *seq += 1;
                Event {
                    seq: *seq,
                    time: time.clone(),
                    kind,
                    container: info.container,
                    name: info.name,
                    process: info.process,
                    pid: info.pid,
                    exit_code: info.exit_code,
                    missed: 0,
                    status: info.status,
                    old_name: info.old_name,
                }
            })
            .collect();
        let written = self.inner.store.write_with_events(save, remove, &evs);
        if let Err(e) = &written {
            for ev in &evs {
                tracing::error!(seq = ev.seq, container = %ev.container, error = %e, "cannot append event to the log");
            }
        }
        before_live();
        for ev in &evs {
            let _ = self.inner.tx.send(ev.clone());
        }
        (evs, written)
    }

    /// The last sequence number published.
    pub fn last_seq(&self) -> u64 {
        *self.inner.seq.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every event after `since` (0: from the start of the log), then live.
    pub fn subscribe(&self, since: u64) -> Subscription {
        // Subscribe before reading the log, so nothing falls in between.
        let rx = self.inner.tx.subscribe();
        Subscription {
            inner: self.inner.clone(),
            rx,
            next: since + 1,
            backlog: VecDeque::new(),
            caught_up: false,
        }
    }
}

/// One subscriber's ordered, gap-free view of the event stream.
pub struct Subscription {
    inner: Arc<BusInner>,
    rx: broadcast::Receiver<Event>,
    /// The next sequence number this subscriber wants.
    next: u64,
    backlog: VecDeque<Event>,
    caught_up: bool,
}

impl Subscription {
    /// Read the log from `self.next`. Returns a `missed` record when the log
    /// starts later than that (compacted).
    fn refill(&mut self) -> Option<Event> {
        let store = &self.inner.store;
        let (first, _) = match store.event_bounds() {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the event log");
                return None;
            }
        };
        if first > self.next {
            let missed = first - self.next;
            let seq = first - 1;
            self.next = first;
            return Some(Event {
                seq,
                time: now_rfc3339(),
                kind: EventType::Missed,
                container: String::new(),
                name: String::new(),
                process: String::new(),
                pid: 0,
                exit_code: None,
                missed,
                status: String::new(),
                old_name: String::new(),
            });
        }
        match store.events_after(self.next - 1, BATCH) {
            Ok(evs) => {
                if evs.len() < BATCH {
                    self.caught_up = true;
                }
                self.backlog.extend(evs);
            }
            Err(e) => tracing::error!(error = %e, "cannot read the event log"),
        }
        None
    }

    /// The next event, in sequence order, without gaps. `None` when the bus
    /// is gone (daemon shutting down).
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(ev) = self.backlog.pop_front() {
                if ev.seq < self.next {
                    continue;
                }
                self.next = ev.seq + 1;
                return Some(ev);
            }
            if !self.caught_up {
                if let Some(missed) = self.refill() {
                    return Some(missed);
                }
                if !self.backlog.is_empty() {
                    continue;
                }
                self.caught_up = true;
            }
            match self.rx.recv().await {
                Ok(ev) if ev.seq < self.next => continue,
                Ok(ev) if ev.seq == self.next => {
                    self.next += 1;
                    return Some(ev);
                }
                // A gap: the live buffer overflowed or we subscribed while
                // the log was being read. The log has what we need.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.caught_up = false;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next event if one is ready now, without waiting.
    pub fn try_next(&mut self) -> Option<Event> {
        loop {
            if let Some(ev) = self.backlog.pop_front() {
                if ev.seq < self.next {
                    continue;
                }
                self.next = ev.seq + 1;
                return Some(ev);
            }
            if !self.caught_up {
                if let Some(missed) = self.refill() {
                    return Some(missed);
                }
                self.caught_up = self.backlog.is_empty();
                continue;
            }
            match self.rx.try_recv() {
                Ok(ev) if ev.seq < self.next => continue,
                Ok(ev) if ev.seq == self.next => {
                    self.next += 1;
                    return Some(ev);
                }
                Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {
                    self.caught_up = false;
                }
                Err(_) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;

    fn info(c: &str) -> EventInfo {
        EventInfo {
            container: c.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn replay_then_live_without_gaps() {
        let store = Arc::new(MemStore::default());
        let bus = EventBus::new(store.clone()).unwrap();
        for _ in 0..3 {
            bus.publish(EventType::Create, info("a"));
        }
        let mut sub = bus.subscribe(1);
        bus.publish(EventType::Start, info("a"));
        let seqs: Vec<u64> = [
            sub.next().await.unwrap(),
            sub.next().await.unwrap(),
            sub.next().await.unwrap(),
        ]
        .iter()
        .map(|e| e.seq)
        .collect();
        assert_eq!(seqs, vec![2, 3, 4]);
        assert!(sub.try_next().is_none());
    }

    #[tokio::test]
    async fn slow_subscriber_catches_up_from_the_log() {
        let store = Arc::new(MemStore::default());
        let bus = EventBus::new(store.clone()).unwrap();
        let mut sub = bus.subscribe(0);
        for _ in 0..(LIVE_BUFFER * 3) {
            bus.publish(EventType::Create, info("a"));
        }
        for want in 1..=(LIVE_BUFFER * 3) as u64 {
            assert_eq!(sub.next().await.unwrap().seq, want);
        }
    }

    #[tokio::test]
    async fn compacted_events_are_reported_as_missed() {
        let store = Arc::new(MemStore::default());
        let bus = EventBus::new(store.clone()).unwrap();
        for _ in 0..10 {
            bus.publish(EventType::Create, info("a"));
        }
        store.compact_keep_last(4);
        let mut sub = bus.subscribe(2);
        let m = sub.next().await.unwrap();
        assert_eq!(m.kind, EventType::Missed);
        assert_eq!(m.missed, 4); // 3, 4, 5, 6 are gone
        assert_eq!(sub.next().await.unwrap().seq, 7);
    }

    #[tokio::test]
    async fn seq_continues_after_restart() {
        let store = Arc::new(MemStore::default());
        {
            let bus = EventBus::new(store.clone()).unwrap();
            bus.publish(EventType::Create, info("a"));
            bus.publish(EventType::Start, info("a"));
        }
        let bus = EventBus::new(store.clone()).unwrap();
        assert_eq!(bus.publish(EventType::Exit, info("a")).seq, 3);
    }

    #[test]
    fn type_names() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>().unwrap(), t);
        }
        assert!("nope".parse::<EventType>().is_err());
        assert_eq!(
            serde_json::to_string(&EventType::ExecAdded).unwrap(),
            "\"exec-added\""
        );
    }
}
