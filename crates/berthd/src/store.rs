//! berthd's state on disk: an embedded transactional database (redb, pure
//! Rust) at `<root>/berth.redb`. Every write is durable when it returns.
//!
//! Writes are group-committed: a write is queued, and the first writer to
//! find no commit in progress commits everything queued so far in one
//! transaction (one fdatasync) while the others wait for it. Alone, a write
//! costs what it did as its own transaction; eight containers changing
//! state at once share commits instead of queueing behind each other's
//! fdatasync. The queue keeps the order of submission, so the event log
//! commits in sequence order.
//!
//! Tables: `containers` (id → JSON record), `events` (seq → JSON event),
//! `meta` (`last_seq`: the last event sequence number ever appended, kept
//! apart from `events` so compaction never lets it go back), `networks`
//! (user networks) and `plans` (each container's network plan).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, SystemTime};

use berth_core::event::Event;
use berth_core::store::{blocking, Pending, Store, StoreError};
use berth_core::ContainerRecord;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NETWORKS: TableDefinition<&str, &[u8]> = TableDefinition::new("networks");
/// Each container's network plan (id → JSON, `net::Plan`).
const PLANS: TableDefinition<&str, &[u8]> = TableDefinition::new("plans");

/// How the event log is bounded.
#[derive(Debug, Clone, Copy)]
pub struct EventRetention {
    /// Keep at most this many events.
    pub max_events: u64,
    /// Drop events older than this.
    pub max_age: Duration,
}

pub struct DbStore {
    db: Database,
    /// Changed live by a config reload (SIGHUP).
    retention: std::sync::Mutex<EventRetention>,
    group: Group,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// A table keyed by name or id, holding JSON.
type JsonTable = TableDefinition<'static, &'static str, &'static [u8]>;

/// One change of a queued write, serialized before it is queued so that
/// applying it can fail only with the database.
enum Op {
    Put {
        table: JsonTable,
        key: String,
        json: Vec<u8>,
    },
    Remove {
        table: JsonTable,
        key: String,
    },
    Event {
        seq: u64,
        json: Vec<u8>,
    },
}

/// The writes waiting for a commit, and the outcomes of committed ones
/// until their writers collect them.
#[derive(Default)]
struct Group {
    state: Mutex<GroupState>,
    /// Signalled when a commit ends.
    committed: Condvar,
}

/// The writer committing for the group, while it commits. Dropped while
/// unwinding from a commit that panicked, it lets the next writer lead and
/// fails the writes it carried, so no writer waits for them forever; after
/// a commit that returned, the leader records the outcomes itself and
/// forgets the guard.
struct Leader<'a> {
    group: &'a Group,
    tickets: Vec<u64>,
    /// Cleared once the commit returned.
    unwinding: bool,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if !self.unwinding {
            return;
        }
        let mut g = self.group.state.lock().unwrap_or_else(|p| p.into_inner());
        g.committing = false;
        for t in self.tickets.drain(..) {
            g.done
                .insert(t, Err("the commit was interrupted".to_string()));
        }
        drop(g);
        self.group.committed.notify_all();
    }
}

#[derive(Default)]
struct GroupState {
    next_ticket: u64,
    /// Each write with its ticket, and whether a writer waits for it (the
    /// outcome of one that no one waits for is only logged).
    queue: Vec<(u64, Vec<Op>, bool)>,
    /// A writer is committing (what it took off the queue).
    committing: bool,
    done: HashMap<u64, Result<(), String>>,
    /// Commits so far, and the writes they carried (tests and tracing).
    commits: u64,
    writes: u64,
}

impl DbStore {
    pub fn open(path: &Path, retention: EventRetention) -> Result<Self, StoreError> {
        let db =
            Database::create(path).map_err(|e| StoreError(format!("{}: {e}", path.display())))?;
        // Create the tables so readers never see them missing.
        let tx = db.begin_write().map_err(err)?;
        {
            tx.open_table(CONTAINERS).map_err(err)?;
            tx.open_table(EVENTS).map_err(err)?;
            tx.open_table(META).map_err(err)?;
            tx.open_table(NETWORKS).map_err(err)?;
            tx.open_table(PLANS).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(Self {
            db,
            retention: std::sync::Mutex::new(retention),
            group: Group::default(),
        })
    }

    /// Queue a write; it commits in order with everything queued before it.
    /// `watched`: a writer will wait for it with [`DbStore::wait_ops`].
    fn submit_ops(&self, ops: Vec<Op>, watched: bool) -> u64 {
        let mut g = self.group.state.lock().unwrap_or_else(|p| p.into_inner());
        g.next_ticket += 1;
        let ticket = g.next_ticket;
        g.queue.push((ticket, ops, watched));
        ticket
    }

    /// Commit whatever is queued (writes no one waits for, see
    /// `NetworkStore::queue_plan`), at a clean shutdown.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.write(Vec::new())
    }

    /// Block until the write `ticket` is committed: commit the queue if no
    /// one is committing, or wait for the commit in progress (which may
    /// have taken this write along, or leaves it for the next).
    fn wait_ops(&self, ticket: u64) -> Result<(), StoreError> {
        let mut g = self.group.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(r) = g.done.remove(&ticket) {
                return r.map_err(StoreError);
            }
            if g.committing {
                g = self
                    .group
                    .committed
                    .wait(g)
                    .unwrap_or_else(|p| p.into_inner());
                continue;
            }
            g.committing = true;
            let (batch, watched): (Vec<_>, Vec<_>) = std::mem::take(&mut g.queue)
                .into_iter()
                .map(|(t, ops, w)| ((t, ops), w))
                .unzip();
            drop(g);
            let mut leader = Leader {
                group: &self.group,
                unwinding: true,
                tickets: batch
                    .iter()
                    .zip(&watched)
                    .filter(|(_, w)| **w)
                    .map(|((t, _), _)| *t)
                    .collect(),
            };
            let outcomes = self.commit_batch(batch);
            // The outcomes and the end of this commit in one step: a
            // writer woken by it finds its outcome, never an idle group
            // it would commit again for nothing.
            leader.unwinding = false;
            drop(leader);
            g = self.group.state.lock().unwrap_or_else(|p| p.into_inner());
            g.commits += 1;
            g.writes += outcomes.len() as u64;
            for ((t, r), w) in outcomes.into_iter().zip(watched) {
                if w {
                    g.done.insert(t, r);
                } else if let Err(e) = r {
                    tracing::error!(error = %e, "a queued write failed");
                }
            }
            g.committing = false;
            self.group.committed.notify_all();
        }
    }

    /// Commit `batch` in one transaction. If that fails and it held more
    /// than one write, each is tried in a transaction of its own, so one
    /// write's failure is not every writer's.
    fn commit_batch(&self, batch: Vec<(u64, Vec<Op>)>) -> Vec<(u64, Result<(), String>)> {
        let all = self.transaction(|tx| {
            batch
                .iter()
                .try_for_each(|(_, ops)| ops.iter().try_for_each(|op| self.apply(tx, op)))
        });
        match all {
            Ok(()) => batch.into_iter().map(|(t, _)| (t, Ok(()))).collect(),
            Err(e) if batch.len() == 1 => batch
                .into_iter()
                .map(|(t, _)| (t, Err(e.0.clone())))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, writes = batch.len(), "a group commit failed; committing its writes one by one");
                batch
                    .into_iter()
                    .map(|(t, ops)| {
                        let r =
                            self.transaction(|tx| ops.iter().try_for_each(|op| self.apply(tx, op)));
                        (t, r.map_err(|e| e.0))
                    })
                    .collect()
            }
        }
    }

    fn transaction(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        f(&tx)?;
        tx.commit().map_err(err)
    }

    fn apply(&self, tx: &redb::WriteTransaction, op: &Op) -> Result<(), StoreError> {
        match op {
            Op::Put { table, key, json } => {
                tx.open_table(*table)
                    .map_err(err)?
                    .insert(key.as_str(), json.as_slice())
                    .map_err(err)?;
            }
            Op::Remove { table, key } => {
                tx.open_table(*table)
                    .map_err(err)?
                    .remove(key.as_str())
                    .map_err(err)?;
            }
            Op::Event { seq, json } => self.put_event(tx, *seq, json)?,
        }
        Ok(())
    }

    /// The changes of a record save or removal and its events, serialized.
    fn ops(
        save: Option<&ContainerRecord>,
        remove: Option<&str>,
        evs: &[Event],
    ) -> Result<Vec<Op>, StoreError> {
        let mut ops = Vec::with_capacity(evs.len() + 1);
        if let Some(rec) = save {
            ops.push(Op::Put {
                table: CONTAINERS,
                key: rec.id.clone(),
                json: serde_json::to_vec(rec).map_err(err)?,
            });
        }
        if let Some(id) = remove {
            ops.push(Op::Remove {
                table: CONTAINERS,
                key: id.to_string(),
            });
        }
        for ev in evs {
            ops.push(Op::Event {
                seq: ev.seq,
                json: serde_json::to_vec(ev).map_err(err)?,
            });
        }
        Ok(ops)
    }

    /// Queue `ops` and wait until they are durable.
    fn write(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let ticket = self.submit_ops(ops, true);
        blocking(|| self.wait_ops(ticket))
    }

    /// (commits, writes) so far: writes / commits is the group commit's
    /// batching.
    #[cfg(test)]
    fn commit_counts(&self) -> (u64, u64) {
        let g = self.group.state.lock().unwrap_or_else(|p| p.into_inner());
        (g.commits, g.writes)
    }

    fn retention(&self) -> EventRetention {
        // A poisoned lock still holds a valid Copy value.
        *self.retention.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// New bounds for the event log, from the next event or compaction on.
    pub fn set_retention(&self, retention: EventRetention) {
        *self.retention.lock().unwrap_or_else(|p| p.into_inner()) = retention;
    }

    /// Append an event, bound the log by count (a little at a time, right
    /// here), and keep the high mark of sequence numbers.
    fn put_event(
        &self,
        tx: &redb::WriteTransaction,
        seq: u64,
        json: &[u8],
    ) -> Result<(), StoreError> {
        let mut t = tx.open_table(EVENTS).map_err(err)?;
        t.insert(seq, json).map_err(err)?;
        let len = t.len().map_err(err)?;
        let max_events = self.retention().max_events;
        if len > max_events {
            for _ in 0..(len - max_events) {
                if t.pop_first().map_err(err)?.is_none() {
                    break;
                }
            }
        }
        let mut m = tx.open_table(META).map_err(err)?;
        let last = m
            .get("last_seq")
            .map_err(err)?
            .map(|g| g.value())
            .unwrap_or(0);
        m.insert("last_seq", last.max(seq)).map_err(err)?;
        Ok(())
    }

    /// Drop events beyond the retention bounds, oldest first. Sequence
    /// numbers are never reused: `meta.last_seq` keeps the high mark.
    pub fn compact(&self) -> Result<u64, StoreError> {
        let retention = self.retention();
        let cutoff = SystemTime::now()
            .checked_sub(retention.max_age)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let tx = self.db.begin_write().map_err(err)?;
        let mut dropped = 0;
        {
            let mut t = tx.open_table(EVENTS).map_err(err)?;
            loop {
                let len = t.len().map_err(err)?;
                let Some((k, v)) = t.first().map_err(err)? else {
                    break;
                };
                let key = k.value();
                let too_many = len > retention.max_events;
                let too_old = serde_json::from_slice::<Event>(v.value())
                    .ok()
                    .and_then(|e| humantime::parse_rfc3339(&e.time).ok())
                    .is_some_and(|t| t < cutoff);
                drop((k, v));
                if !(too_many || too_old) {
                    break;
                }
                t.remove(key).map_err(err)?;
                dropped += 1;
            }
        }
        tx.commit().map_err(err)?;
        Ok(dropped)
    }
}

/// User networks: name → JSON record.
impl crate::net::NetworkStore for DbStore {
    fn load_networks(&self) -> Result<Vec<berth_net::Network>, String> {
        let tx = self.db.begin_read().map_err(|e| e.to_string())?;
        let t = tx.open_table(NETWORKS).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for item in t.iter().map_err(|e| e.to_string())? {
            let (k, v) = item.map_err(|e| e.to_string())?;
            match serde_json::from_slice(v.value()) {
                Ok(n) => out.push(n),
                Err(e) => {
                    tracing::error!(network = k.value(), error = %e, "unreadable network record, skipped")
                }
            }
        }
        Ok(out)
    }

    fn save_network(&self, n: &berth_net::Network) -> Result<(), String> {
        let json = serde_json::to_vec(n).map_err(|e| e.to_string())?;
        self.write(vec![Op::Put {
            table: NETWORKS,
            key: n.name.clone(),
            json,
        }])
        .map_err(|e| e.0)
    }

    fn remove_network(&self, name: &str) -> Result<(), String> {
        self.write(vec![Op::Remove {
            table: NETWORKS,
            key: name.to_string(),
        }])
        .map_err(|e| e.0)
    }

    fn load_plans(&self) -> Result<Vec<(String, Vec<u8>)>, String> {
        let tx = self.db.begin_read().map_err(|e| e.to_string())?;
        let t = tx.open_table(PLANS).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for item in t.iter().map_err(|e| e.to_string())? {
            let (k, v) = item.map_err(|e| e.to_string())?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn queue_plan(&self, id: &str, plan: Option<Vec<u8>>) {
        self.submit_ops(vec![plan_op(id, plan)], false);
    }

    fn write_plan(&self, id: &str, plan: Option<Vec<u8>>) -> Result<(), String> {
        self.write(vec![plan_op(id, plan)]).map_err(|e| e.0)
    }
}

fn plan_op(id: &str, plan: Option<Vec<u8>>) -> Op {
    let key = id.to_string();
    match plan {
        Some(json) => Op::Put {
            table: PLANS,
            key,
            json,
        },
        None => Op::Remove { table: PLANS, key },
    }
}

impl Store for DbStore {
    fn load_containers(&self) -> Result<Vec<ContainerRecord>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(CONTAINERS).map_err(err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(err)? {
            let (k, v) = item.map_err(err)?;
            match serde_json::from_slice(v.value()) {
                Ok(rec) => out.push(rec),
                Err(e) => {
                    tracing::error!(id = k.value(), error = %e, "unreadable container record, skipped")
                }
            }
        }
        Ok(out)
    }

    fn save_container(&self, rec: &ContainerRecord) -> Result<(), StoreError> {
        self.write(Self::ops(Some(rec), None, &[])?)
    }

    fn remove_container(&self, id: &str) -> Result<(), StoreError> {
        self.write(Self::ops(None, Some(id), &[])?)
    }

    fn append_event(&self, ev: &Event) -> Result<(), StoreError> {
        self.write(Self::ops(None, None, std::slice::from_ref(ev))?)
    }

    /// One durable write for a state change and its event.
    fn write_with_event(
        &self,
        save: Option<&ContainerRecord>,
        remove: Option<&str>,
        ev: &Event,
    ) -> Result<(), StoreError> {
        self.write_with_events(save, remove, std::slice::from_ref(ev))
    }

    /// One durable write for changes that happen together.
    fn write_with_events(
        &self,
        save: Option<&ContainerRecord>,
        remove: Option<&str>,
        evs: &[Event],
    ) -> Result<(), StoreError> {
        self.write(Self::ops(save, remove, evs)?)
    }

    /// Queued now, in the order of the calls; durable at `wait`, possibly
    /// in one commit with other writers' changes.
    fn submit<'a>(
        &'a self,
        save: Option<&ContainerRecord>,
        remove: Option<&str>,
        evs: &[Event],
    ) -> Pending<'a> {
        match Self::ops(save, remove, evs) {
            Ok(ops) => {
                let ticket = self.submit_ops(ops, true);
                Pending::queued(move || self.wait_ops(ticket))
            }
            Err(e) => Pending::done(Err(e)),
        }
    }

    fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(EVENTS).map_err(err)?;
        let mut out = Vec::new();
        for item in t.range(after.saturating_add(1)..).map_err(err)?.take(limit) {
            let (_, v) = item.map_err(err)?;
            out.push(serde_json::from_slice(v.value()).map_err(err)?);
        }
        Ok(out)
    }

    fn event_bounds(&self) -> Result<(u64, u64), StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let last = tx
            .open_table(META)
            .map_err(err)?
            .get("last_seq")
            .map_err(err)?
            .map(|g| g.value())
            .unwrap_or(0);
        let first = tx
            .open_table(EVENTS)
            .map_err(err)?
            .first()
            .map_err(err)?
            .map(|(k, _)| k.value())
            .unwrap_or(last + 1);
        Ok((first, last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::event::EventType;

    fn ev(seq: u64) -> Event {
        Event {
            seq,
            time: humantime::format_rfc3339_nanos(SystemTime::now()).to_string(),
            kind: EventType::Create,
            object: Default::default(),
            container: "c".into(),
            name: String::new(),
            process: String::new(),
            pid: 0,
            exit_code: None,
            missed: 0,
            status: String::new(),
            old_name: String::new(),
            attributes: Default::default(),
        }
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("berthd-store-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn retention() -> EventRetention {
        EventRetention {
            max_events: 1000,
            max_age: Duration::from_secs(3600),
        }
    }

    #[test]
    fn writes_waiting_together_share_one_commit() {
        let dir = scratch("group");
        let s = DbStore::open(&dir.join("db"), retention()).unwrap();
        let (c0, w0) = s.commit_counts();
        // Three writers submit before any commits: the first to wait
        // commits all three in one transaction.
        let pending: Vec<_> = (1..=3).map(|i| s.submit(None, None, &[ev(i)])).collect();
        for p in pending {
            p.wait().unwrap();
        }
        assert_eq!(s.commit_counts(), (c0 + 1, w0 + 3));
        let got: Vec<u64> = s
            .events_after(0, 10)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(got, vec![1, 2, 3]);
        // A write alone is its own commit.
        s.append_event(&ev(4)).unwrap();
        assert_eq!(s.commit_counts(), (c0 + 2, w0 + 4));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn queued_plans_become_durable_with_the_next_write_or_a_flush() {
        use crate::net::NetworkStore;
        let dir = scratch("plans");
        let path = dir.join("db");
        {
            let s = DbStore::open(&path, retention()).unwrap();
            // Queued alone: not committed yet.
            s.queue_plan("a", Some(b"{\"a\":1}".to_vec()));
            assert!(s.load_plans().unwrap().is_empty());
            // The next write that is waited for carries it.
            s.append_event(&ev(1)).unwrap();
            assert_eq!(
                s.load_plans().unwrap(),
                vec![("a".to_string(), b"{\"a\":1}".to_vec())]
            );
            s.queue_plan("a", None);
            s.queue_plan("b", Some(b"{}".to_vec()));
            s.flush().unwrap();
            // No outcome is kept for writes no one waits for.
            assert!(s.group.state.lock().unwrap().done.is_empty());
        }
        let s = DbStore::open(&path, retention()).unwrap();
        assert_eq!(
            s.load_plans().unwrap(),
            vec![("b".to_string(), b"{}".to_vec())]
        );
        s.write_plan("b", None).unwrap();
        assert!(s.load_plans().unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn concurrent_writers_all_become_durable_in_order() {
        let dir = scratch("concurrent");
        let path = dir.join("db");
        {
            let s = std::sync::Arc::new(DbStore::open(&path, retention()).unwrap());
            let seq = std::sync::Arc::new(Mutex::new(0u64));
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    let (s, seq) = (s.clone(), seq.clone());
                    std::thread::spawn(move || {
                        for _ in 0..25 {
                            // As the event bus does: number and submit under
                            // one lock, wait outside it.
                            let p = {
                                let mut n = seq.lock().unwrap();
                                *n += 1;
                                s.submit(None, None, &[ev(*n)])
                            };
                            p.wait().unwrap();
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let (commits, writes) = s.commit_counts();
            assert_eq!(writes, 200);
            assert!(commits <= writes);
        }
        let s = DbStore::open(&path, retention()).unwrap();
        let got: Vec<u64> = s
            .events_after(0, 500)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(got, (1..=200).collect::<Vec<_>>());
        assert_eq!(s.event_bounds().unwrap(), (1, 200));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn events_are_bounded_and_seq_survives() {
        let dir = std::env::temp_dir().join(format!("berthd-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db");
        {
            let s = DbStore::open(
                &path,
                EventRetention {
                    max_events: 5,
                    max_age: Duration::from_secs(3600),
                },
            )
            .unwrap();
            for i in 1..=12 {
                s.append_event(&ev(i)).unwrap();
            }
            assert_eq!(s.event_bounds().unwrap(), (8, 12));
            let got: Vec<u64> = s
                .events_after(9, 10)
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect();
            assert_eq!(got, vec![10, 11, 12]);
        }
        let s = DbStore::open(
            &path,
            EventRetention {
                max_events: 0,
                max_age: Duration::from_secs(3600),
            },
        )
        .unwrap();
        s.compact().unwrap();
        assert_eq!(s.event_bounds().unwrap(), (13, 12));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
