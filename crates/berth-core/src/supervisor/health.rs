//! The record side of health checks: berthd's checker (berthd/src/health.rs)
//! runs the check as an exec and reports each result here, under the
//! container's lock like every other change. A change of status is one
//! durable write with its `health_status` event; a result that changes
//! nothing is only shown to readers (no write per check).

use super::{info_of, Result, Supervisor};
use crate::container::{Health, HealthResult, HealthStatus, State, HEALTH_LOG_MAX};
use crate::event::{EventInfo, EventType};

impl Supervisor {
    /// A new run of `key` (identified by its `started_at`) starts its checks
    /// from `starting`. False when that run is over.
    pub async fn health_begin(&self, key: &str, started_at: &str) -> Result<bool> {
        let entry = self.lookup(key)?;
        let mut ctr = entry.ctr.lock().await;
        if ctr.rec.state != State::Running || ctr.rec.started_at.as_deref() != Some(started_at) {
            return Ok(false);
        }
        let log = ctr.rec.health.take().map(|h| h.log).unwrap_or_default();
        ctr.rec.health = Some(Health {
            status: HealthStatus::Starting,
            failing_streak: 0,
            log,
        });
        self.commit(&entry, &ctr, false)?;
        Ok(true)
    }

    /// Record one result of the check of run `started_at`: forget its exec,
    /// keep the result (the last [`HEALTH_LOG_MAX`]), update the status.
    /// `counts` is false during the start period (a failure then does not
    /// count). False when that run is over.
    pub async fn health_result(
        &self,
        key: &str,
        started_at: &str,
        exec_id: &str,
        result: HealthResult,
        retries: u32,
        counts: bool,
    ) -> Result<bool> {
        let entry = self.lookup(key)?;
        let mut ctr = entry.ctr.lock().await;
        ctr.rec.execs.remove(exec_id);
        let current = ctr.rec.state.is_live() && ctr.rec.started_at.as_deref() == Some(started_at);
        if !current {
            entry.publish_snapshot(&ctr, false);
            return Ok(false);
        }
        let mut h = ctr.rec.health.clone().unwrap_or_default();
        let before = h.status;
        if result.exit_code == 0 {
            h.status = HealthStatus::Healthy;
            h.failing_streak = 0;
        } else if counts || h.status != HealthStatus::Starting {
            h.failing_streak += 1;
            if h.failing_streak >= retries {
                h.status = HealthStatus::Unhealthy;
            }
        }
        h.log.push(result);
        if h.log.len() > HEALTH_LOG_MAX {
            let extra = h.log.len() - HEALTH_LOG_MAX;
            h.log.drain(..extra);
        }
        let status = h.status;
        ctr.rec.health = Some(h);
        if status != before {
            let info = EventInfo {
                status: status.as_str().into(),
                ..info_of(&ctr.rec)
            };
            self.commit_event(&entry, &ctr, false, EventType::HealthStatus, info)?;
        } else {
            entry.publish_snapshot(&ctr, false);
        }
        Ok(true)
    }
}
