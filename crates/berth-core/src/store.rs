//! What the model persists, behind a trait: berthd implements it on an
//! embedded transactional database; tests use [`MemStore`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::container::ContainerRecord;
use crate::event::Event;

#[derive(Debug, thiserror::Error)]
#[error("state store: {0}")]
pub struct StoreError(pub String);

pub trait Store: Send + Sync + 'static {
    fn load_containers(&self) -> Result<Vec<ContainerRecord>, StoreError>;
    /// Insert or replace, durably.
    fn save_container(&self, rec: &ContainerRecord) -> Result<(), StoreError>;
    fn remove_container(&self, id: &str) -> Result<(), StoreError>;
    /// Append one event, durably.
    fn append_event(&self, ev: &Event) -> Result<(), StoreError>;
    /// Up to `limit` events with `seq > after`, in order.
    fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError>;
    /// (first seq still in the log, last seq ever appended). With an empty
    /// log: (last + 1, last).
    fn event_bounds(&self) -> Result<(u64, u64), StoreError>;
    /// Save a record (or remove one) and append the event that says so, as
    /// one durable write where the store can. The default does them in turn.
    fn write_with_event(
        &self,
        save: Option<&ContainerRecord>,
        remove: Option<&str>,
        ev: &Event,
    ) -> Result<(), StoreError> {
        if let Some(rec) = save {
            self.save_container(rec)?;
        }
        if let Some(id) = remove {
            self.remove_container(id)?;
        }
        self.append_event(ev)
    }
    /// As [`Store::write_with_event`], for several events that happen
    /// together (an exit and the auto-remove that follows it): one durable
    /// write where the store can. The default does them in turn.
    fn write_with_events(
        &self,
        save: Option<&ContainerRecord>,
        remove: Option<&str>,
        evs: &[Event],
    ) -> Result<(), StoreError> {
        if let Some(rec) = save {
            self.save_container(rec)?;
        }
        if let Some(id) = remove {
            self.remove_container(id)?;
        }
        evs.iter().try_for_each(|ev| self.append_event(ev))
    }
    /// Start the write of [`Store::write_with_events`] and return at once;
    /// [`Pending::wait`] finishes it. Writes submitted one after another
    /// become durable in that order, and none is visible to readers before
    /// the ones submitted earlier: the event bus submits under its sequence
    /// lock and waits outside it, so a store that commits everything
    /// waiting in one transaction (group commit) lets unrelated containers
    /// share an fdatasync instead of queueing behind each other's. The
    /// default writes at once.
    fn submit<'a>(
        &'a self,
        save: Option<&ContainerRecord>,
        remove: Option<&str>,
        evs: &[Event],
    ) -> Pending<'a> {
        Pending::done(self.write_with_events(save, remove, evs))
    }
}

/// A durable write that was started by [`Store::submit`] and is finished
/// by [`Pending::wait`]: a store that commits several waiting writes as one
/// (group commit) queues it, the others have done it already.
#[must_use = "a submitted write is only known durable once waited for"]
pub struct Pending<'a>(PendingInner<'a>);

type Wait<'a> = Box<dyn FnOnce() -> Result<(), StoreError> + Send + 'a>;

enum PendingInner<'a> {
    Done(Result<(), StoreError>),
    Queued(Wait<'a>),
}

impl<'a> Pending<'a> {
    /// A write that has already happened (or failed).
    pub fn done(result: Result<(), StoreError>) -> Self {
        Self(PendingInner::Done(result))
    }

    /// A write that `wait` finishes; `wait` may block (a commit).
    pub fn queued(wait: impl FnOnce() -> Result<(), StoreError> + Send + 'a) -> Self {
        Self(PendingInner::Queued(Box::new(wait)))
    }

    /// Block until the write is durable, or failed. Call it where a thread
    /// may block: inside [`blocking`] on a tokio runtime.
    pub fn wait(self) -> Result<(), StoreError> {
        match self.0 {
            PendingInner::Done(r) => r,
            PendingInner::Queued(w) => w(),
        }
    }
}

/// Run `f`, which blocks (a commit), without stalling the other tasks of a
/// multi-threaded runtime's worker: `block_in_place` hands them to another
/// worker meanwhile. Elsewhere (tests, a current-thread runtime) it just runs.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// An in-memory store for tests.
#[derive(Default)]
pub struct MemStore {
    containers: Mutex<HashMap<String, ContainerRecord>>,
    events: Mutex<(BTreeMap<u64, Event>, u64)>,
    /// Records saved so far (each a durable write in a real store).
    saves: std::sync::atomic::AtomicUsize,
}

impl MemStore {
    /// How many times a record was saved.
    pub fn saves(&self) -> usize {
        self.saves.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Drop all but the newest `n` events, as a compaction would.
    pub fn compact_keep_last(&self, n: usize) {
        let mut g = self.events.lock().unwrap_or_else(|p| p.into_inner());
        while g.0.len() > n {
            g.0.pop_first();
        }
    }
}

impl Store for MemStore {
    fn load_containers(&self) -> Result<Vec<ContainerRecord>, StoreError> {
        let g = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        Ok(g.values().cloned().collect())
    }

    fn save_container(&self, rec: &ContainerRecord) -> Result<(), StoreError> {
        self.saves.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut g = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        g.insert(rec.id.clone(), rec.clone());
        Ok(())
    }

    fn remove_container(&self, id: &str) -> Result<(), StoreError> {
        let mut g = self.containers.lock().unwrap_or_else(|p| p.into_inner());
        g.remove(id);
        Ok(())
    }

    fn append_event(&self, ev: &Event) -> Result<(), StoreError> {
        let mut g = self.events.lock().unwrap_or_else(|p| p.into_inner());
        g.0.insert(ev.seq, ev.clone());
        g.1 = g.1.max(ev.seq);
        Ok(())
    }

    fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let g = self.events.lock().unwrap_or_else(|p| p.into_inner());
        Ok(g.0
            .range(after + 1..)
            .take(limit)
            .map(|(_, e)| e.clone())
            .collect())
    }

    fn event_bounds(&self) -> Result<(u64, u64), StoreError> {
        let g = self.events.lock().unwrap_or_else(|p| p.into_inner());
        let first = g.0.keys().next().copied().unwrap_or(g.1 + 1);
        Ok((first, g.1))
    }
}
