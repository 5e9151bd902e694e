//! berthd's state on disk: an embedded transactional database (redb, pure
//! Rust) at `<root>/berth.redb`. Every write is one durable transaction.
//!
//! Tables: `containers` (id → JSON record), `events` (seq → JSON event),
//! `meta` (`last_seq`: the last event sequence number ever appended, kept
//! apart from `events` so compaction never lets it go back).

use std::path::Path;
use std::time::{Duration, SystemTime};

use berth_core::event::Event;
use berth_core::store::{Store, StoreError};
use berth_core::ContainerRecord;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NETWORKS: TableDefinition<&str, &[u8]> = TableDefinition::new("networks");

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
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// Run a durable commit (an fdatasync) without stalling the other tasks of
/// a multi-threaded runtime's worker: `block_in_place` hands them to another
/// worker meanwhile. Elsewhere (tests, a current-thread runtime) it just runs.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
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
        }
        tx.commit().map_err(err)?;
        Ok(Self {
            db,
            retention: std::sync::Mutex::new(retention),
        })
    }

    fn retention(&self) -> EventRetention {
        // A poisoned lock still holds a valid Copy value.
        *self.retention.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// New bounds for the event log, from the next event or compaction on.
    pub fn set_retention(&self, retention: EventRetention) {
        *self.retention.lock().unwrap_or_else(|p| p.into_inner()) = retention;
    }

    /// Run `f` in one durable write transaction.
    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        blocking(|| {
            let tx = self.db.begin_write().map_err(err)?;
            f(&tx)?;
            tx.commit().map_err(err)
        })
    }

    fn put_record(
        &self,
        tx: &redb::WriteTransaction,
        rec: &ContainerRecord,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_vec(rec).map_err(err)?;
        tx.open_table(CONTAINERS)
            .map_err(err)?
            .insert(rec.id.as_str(), json.as_slice())
            .map_err(err)?;
        Ok(())
    }

    fn delete_record(&self, tx: &redb::WriteTransaction, id: &str) -> Result<(), StoreError> {
        tx.open_table(CONTAINERS)
            .map_err(err)?
            .remove(id)
            .map_err(err)?;
        Ok(())
    }

    /// Append an event, bound the log by count (a little at a time, right
    /// here), and keep the high mark of sequence numbers.
    fn put_event(&self, tx: &redb::WriteTransaction, ev: &Event) -> Result<(), StoreError> {
        let json = serde_json::to_vec(ev).map_err(err)?;
        let mut t = tx.open_table(EVENTS).map_err(err)?;
        t.insert(ev.seq, json.as_slice()).map_err(err)?;
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
        m.insert("last_seq", last.max(ev.seq)).map_err(err)?;
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
        self.write(|tx| {
            tx.open_table(NETWORKS)
                .map_err(err)?
                .insert(n.name.as_str(), json.as_slice())
                .map_err(err)?;
            Ok(())
        })
        .map_err(|e| e.0)
    }

    fn remove_network(&self, name: &str) -> Result<(), String> {
        self.write(|tx| {
            tx.open_table(NETWORKS)
                .map_err(err)?
                .remove(name)
                .map_err(err)?;
            Ok(())
        })
        .map_err(|e| e.0)
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
        self.write(|tx| self.put_record(tx, rec))
    }

    fn remove_container(&self, id: &str) -> Result<(), StoreError> {
        self.write(|tx| self.delete_record(tx, id))
    }

    fn append_event(&self, ev: &Event) -> Result<(), StoreError> {
        self.write(|tx| self.put_event(tx, ev))
    }

    /// One transaction, one fdatasync, for a state change and its event.
    fn write_with_event(
        &self,
        save: Option<&ContainerRecord>,
        remove: Option<&str>,
        ev: &Event,
    ) -> Result<(), StoreError> {
        self.write_with_events(save, remove, std::slice::from_ref(ev))
    }

    /// One transaction, one fdatasync, for changes that happen together.
    fn write_with_events(
        &self,
        save: Option<&ContainerRecord>,
        remove: Option<&str>,
        evs: &[Event],
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            if let Some(rec) = save {
                self.put_record(tx, rec)?;
            }
            if let Some(id) = remove {
                self.delete_record(tx, id)?;
            }
            evs.iter().try_for_each(|ev| self.put_event(tx, ev))
        })
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
