//! Events: every state change, appended to a durable log before it is
//! published, with a sequence number that only grows (also across daemon
//! restarts). Subscribers resume from a sequence number; one that falls
//! behind catches up from the log, and is told with a `missed` record only
//! when the log no longer holds what it missed (compaction).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex};

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
    /// An image was pulled (`name`: the reference).
    Pull,
    /// An image came in from an archive.
    Load,
    /// An image was written to an archive.
    Save,
    /// An image got a name.
    Tag,
    /// An image lost a name.
    Untag,
    /// A container was put on a network (`attributes.container`).
    Connect,
    /// A container was taken off a network (`attributes.container`).
    Disconnect,
}

impl EventType {
    pub const ALL: [EventType; 22] = [
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
        EventType::Pull,
        EventType::Load,
        EventType::Save,
        EventType::Tag,
        EventType::Untag,
        EventType::Connect,
        EventType::Disconnect,
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
            EventType::Pull => "pull",
            EventType::Load => "load",
            EventType::Save => "save",
            EventType::Tag => "tag",
            EventType::Untag => "untag",
            EventType::Connect => "connect",
            EventType::Disconnect => "disconnect",
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

/// What an event is about. The log only stores the kind: what an image,
/// a volume or a network is stays the daemon's business.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectKind {
    /// Records written before there were other kinds have no `object`:
    /// they are container events.
    #[default]
    Container,
    Image,
    Volume,
    Network,
}

impl ObjectKind {
    pub const ALL: [ObjectKind; 4] = [
        ObjectKind::Container,
        ObjectKind::Image,
        ObjectKind::Volume,
        ObjectKind::Network,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            ObjectKind::Container => "container",
            ObjectKind::Image => "image",
            ObjectKind::Volume => "volume",
            ObjectKind::Network => "network",
        }
    }

    pub fn is_container(&self) -> bool {
        *self == ObjectKind::Container
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ObjectKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ObjectKind::ALL
            .iter()
            .find(|t| t.as_str() == s)
            .copied()
            .ok_or_else(|| {
                format!("unknown object kind {s:?}: use container, image, volume or network")
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
    /// What the event is about; `container` holds that object's id (an
    /// image id, a volume name, a network id) and `name` its name.
    #[serde(default, skip_serializing_if = "ObjectKind::is_container")]
    pub object: ObjectKind,
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
    /// Details of events about other objects (a network event's
    /// `container`, an image event's `reference`), as their recorder says.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

impl Event {
    /// Whether a subscriber asking for `kinds` (none: every kind) sees
    /// this event. A `missed` record is about every kind: it always passes.
    pub fn is_of(&self, kinds: &[ObjectKind]) -> bool {
        kinds.is_empty() || self.kind == EventType::Missed || kinds.contains(&self.object)
    }
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
    /// The last sequence number handed out. Held while numbering events and
    /// submitting their write, so the log commits them in sequence order;
    /// not held while the write becomes durable.
    seq: Mutex<u64>,
    /// The last sequence number published live. Events go out in sequence
    /// order: a write that committed early waits here for its turn.
    published: Mutex<u64>,
    turn: Condvar,
}

/// Marks a batch of events as published when dropped, so the next batch
/// gets its turn even if publishing this one unwound.
struct Turn<'a> {
    inner: &'a BusInner,
    last: u64,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut p = self
            .inner
            .published
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *p = (*p).max(self.last);
        drop(p);
        self.inner.turn.notify_all();
    }
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
                published: Mutex::new(last),
                turn: Condvar::new(),
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
        let evs = events
            .into_iter()
            .map(|(kind, info)| Event {
                seq: 0,
                time: String::new(),
                kind,
                object: ObjectKind::Container,
                container: info.container,
                name: info.name,
                process: info.process,
                pid: info.pid,
                exit_code: info.exit_code,
                missed: 0,
                status: info.status,
                old_name: info.old_name,
                attributes: BTreeMap::new(),
            })
            .collect();
        self.append(evs, save, remove, before_live)
    }

    /// Record an event about an image, a volume or a network: `id` goes in
    /// the event's id field, `name` in its name. Durable and sequenced as
    /// container events, so `since` replays them too.
    pub fn record(
        &self,
        object: ObjectKind,
        kind: EventType,
        id: &str,
        name: &str,
        attributes: BTreeMap<String, String>,
    ) -> Event {
        let ev = Event {
            seq: 0,
            time: String::new(),
            kind,
            object,
            container: id.to_string(),
            name: name.to_string(),
            process: String::new(),
            pid: 0,
            exit_code: None,
            missed: 0,
            status: String::new(),
            old_name: String::new(),
            attributes,
        };
        let (mut evs, _) = self.append(vec![ev], None, None, || {});
        evs.remove(0)
    }

    /// Number and stamp `evs`, write them (with the container record
    /// change) in one durable write, then publish them live in order.
    fn append(
        &self,
        mut evs: Vec<Event>,
        save: Option<&crate::container::ContainerRecord>,
        remove: Option<&str>,
        before_live: impl FnOnce(),
    ) -> (Vec<Event>, Result<(), crate::store::StoreError>) {
        let inner = &*self.inner;
        // Number the events and submit their write under the sequence lock
        // (the log commits in sequence order), then let it go: the commit
        // itself, an fdatasync, is waited for outside, where other
        // containers' writes can join the same commit.
        let (first, pending) = {
            let mut seq = inner.seq.lock().unwrap_or_else(|p| p.into_inner());
            let first = *seq + 1;
            let time = now_rfc3339();
            for ev in &mut evs {
                *seq += 1;
                ev.seq = *seq;
                ev.time = time.clone();
            }
            (first, inner.store.submit(save, remove, &evs))
        };
        let written = crate::store::blocking(|| {
            let written = pending.wait();
            if evs.is_empty() {
                before_live();
                return written;
            }
            let turn = Turn {
                inner,
                last: first + evs.len() as u64 - 1,
            };
            // Wait for the batches numbered before this one: they were
            // submitted first, so they are durable by now or about to be.
            let mut p = inner.published.lock().unwrap_or_else(|p| p.into_inner());
            while *p + 1 < first {
                p = inner.turn.wait(p).unwrap_or_else(|p| p.into_inner());
            }
            drop(p);
            if let Err(e) = &written {
                for ev in &evs {
                    tracing::error!(seq = ev.seq, object = %ev.object, id = %ev.container, error = %e, "cannot append event to the log");
                }
            }
            before_live();
            for ev in &evs {
                let _ = inner.tx.send(ev.clone());
            }
            drop(turn);
            written
        });
        (evs, written)
    }

    /// The last sequence number published: every event up to it has been
    /// written and sent live, and its `before_live` has run. Subscribing
    /// from here and then reading the state misses nothing.
    pub fn last_seq(&self) -> u64 {
        *self
            .inner
            .published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
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
                object: ObjectKind::Container,
                container: String::new(),
                name: String::new(),
                process: String::new(),
                pid: 0,
                exit_code: None,
                missed,
                status: String::new(),
                old_name: String::new(),
                attributes: BTreeMap::new(),
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

    /// A store whose queued writes become durable after a delay that
    /// varies by sequence number, so later writes often finish first.
    struct SlowStore {
        mem: MemStore,
    }

    impl Store for SlowStore {
        fn load_containers(&self) -> Result<Vec<crate::ContainerRecord>, crate::store::StoreError> {
            self.mem.load_containers()
        }
        fn save_container(
            &self,
            rec: &crate::ContainerRecord,
        ) -> Result<(), crate::store::StoreError> {
            self.mem.save_container(rec)
        }
        fn remove_container(&self, id: &str) -> Result<(), crate::store::StoreError> {
            self.mem.remove_container(id)
        }
        fn append_event(&self, ev: &Event) -> Result<(), crate::store::StoreError> {
            self.mem.append_event(ev)
        }
        fn events_after(
            &self,
            after: u64,
            limit: usize,
        ) -> Result<Vec<Event>, crate::store::StoreError> {
            self.mem.events_after(after, limit)
        }
        fn event_bounds(&self) -> Result<(u64, u64), crate::store::StoreError> {
            self.mem.event_bounds()
        }
        fn submit<'a>(
            &'a self,
            _save: Option<&crate::ContainerRecord>,
            _remove: Option<&str>,
            evs: &[Event],
        ) -> crate::store::Pending<'a> {
            let evs = evs.to_vec();
            crate::store::Pending::queued(move || {
                let delay = (7 - evs[0].seq % 7) * 300;
                std::thread::sleep(std::time::Duration::from_micros(delay));
                evs.iter().try_for_each(|ev| self.mem.append_event(ev))
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_publishers_go_out_in_order_and_after_their_write() {
        let store = Arc::new(SlowStore {
            mem: MemStore::default(),
        });
        let bus = EventBus::new(store.clone()).unwrap();
        let mut sub = bus.subscribe(0);
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let bus = bus.clone();
                tokio::spawn(async move {
                    for _ in 0..10 {
                        bus.publish(EventType::Create, info("a"));
                    }
                })
            })
            .collect();
        for want in 1..=80 {
            let ev = sub.next().await.unwrap();
            assert_eq!(ev.seq, want);
            // Durable before anyone saw it.
            assert_eq!(store.events_after(want - 1, 1).unwrap()[0].seq, want);
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(bus.last_seq(), 80);
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
    fn records_without_an_object_are_container_events() {
        // A record as berthd wrote it before image, volume and network
        // events existed.
        let old = r#"{"seq":7,"time":"2024-01-01T00:00:00.000000000Z","type":"start","container":"abc","name":"web","process":"init","pid":42,"exit_code":null,"missed":0}"#;
        let ev: Event = serde_json::from_str(old).unwrap();
        assert_eq!(ev.object, ObjectKind::Container);
        assert_eq!(ev.kind, EventType::Start);
        assert!(ev.attributes.is_empty());
        // And a container event is written as before: no new keys.
        let back = serde_json::to_value(&ev).unwrap();
        assert!(back.get("object").is_none());
        assert!(back.get("attributes").is_none());
    }

    #[tokio::test]
    async fn recorded_objects_share_the_sequence_and_survive_a_restart() {
        let store = Arc::new(MemStore::default());
        {
            let bus = EventBus::new(store.clone()).unwrap();
            bus.publish(EventType::Create, info("c1"));
            let attrs = BTreeMap::from([("reference".to_string(), "busybox:latest".to_string())]);
            let ev = bus.record(
                ObjectKind::Image,
                EventType::Tag,
                "sha256:1234",
                "busybox:latest",
                attrs,
            );
            assert_eq!(ev.seq, 2);
            bus.record(
                ObjectKind::Volume,
                EventType::Create,
                "data",
                "data",
                BTreeMap::new(),
            );
        }
        let bus = EventBus::new(store.clone()).unwrap();
        let mut sub = bus.subscribe(0);
        let evs = [
            sub.next().await.unwrap(),
            sub.next().await.unwrap(),
            sub.next().await.unwrap(),
        ];
        let kinds: Vec<(ObjectKind, EventType)> = evs.iter().map(|e| (e.object, e.kind)).collect();
        assert_eq!(
            kinds,
            vec![
                (ObjectKind::Container, EventType::Create),
                (ObjectKind::Image, EventType::Tag),
                (ObjectKind::Volume, EventType::Create),
            ]
        );
        assert_eq!(evs[1].container, "sha256:1234");
        assert_eq!(evs[1].attributes["reference"], "busybox:latest");
        // The object survives the log's JSON.
        let json = serde_json::to_string(&evs[1]).unwrap();
        let back: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(back, evs[1]);
    }

    #[test]
    fn object_filters() {
        let mut ev = Event {
            seq: 1,
            time: now_rfc3339(),
            kind: EventType::Create,
            object: ObjectKind::Volume,
            container: "v".into(),
            name: "v".into(),
            process: String::new(),
            pid: 0,
            exit_code: None,
            missed: 0,
            status: String::new(),
            old_name: String::new(),
            attributes: BTreeMap::new(),
        };
        assert!(ev.is_of(&[]));
        assert!(ev.is_of(&[ObjectKind::Volume, ObjectKind::Image]));
        assert!(!ev.is_of(&[ObjectKind::Container]));
        ev.kind = EventType::Missed;
        assert!(ev.is_of(&[ObjectKind::Container]));
        for k in ObjectKind::ALL {
            assert_eq!(k.as_str().parse::<ObjectKind>().unwrap(), k);
        }
        assert!("thing".parse::<ObjectKind>().is_err());
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
