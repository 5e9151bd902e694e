//! `update`: new limits or a new restart policy for an existing container.

use oci_spec::runtime::LinuxResources;

use super::{info_of, Error, Result, Supervisor};
use crate::event::EventType;
use crate::restart::RestartPolicy;
use crate::spec::Limits;

/// What `update` changes; `None` leaves it as it is.
#[derive(Debug, Clone, Default)]
pub struct Update {
    pub limits: Option<Limits>,
    pub restart: Option<RestartPolicy>,
}

/// The part of `r` a live update writes: the limits, never the device rules
/// (rewriting those would briefly deny the container its devices).
fn live_part(r: &LinuxResources) -> LinuxResources {
    let mut out = LinuxResources::default();
    out.set_devices(None);
    out.set_memory(*r.memory());
    out.set_cpu(r.cpu().clone());
    out.set_pids(*r.pids());
    out.set_block_io(r.block_io().clone());
    out
}

impl Supervisor {
    /// Apply `u` to the container `key`: a live container's cgroup through
    /// its task first, then the record (so a restart, or the next run, keeps
    /// the new limits), with an `update` event in the same durable write.
    /// `check` says whether the host can apply the resulting limits.
    pub async fn update(
        &self,
        key: &str,
        u: Update,
        check: impl Fn(&LinuxResources) -> std::result::Result<(), String>,
    ) -> Result<()> {
        let entry = self.lookup(key)?;
        let mut ctr = entry.ctr.lock().await;
        entry.check_not_removed()?;
        if let Some(policy) = &u.restart {
            if ctr.rec.config.auto_remove && !policy.is_no() {
                return Err(Error::InvalidArgument(format!(
                    "container {} was started with --rm: it cannot have a restart policy",
                    ctr.rec.name
                )));
            }
        }
        let mut new_resources = None;
        if let Some(limits) = &u.limits {
            let mut r = ctr
                .rec
                .spec
                .linux()
                .as_ref()
                .and_then(|l| l.resources().clone())
                .unwrap_or_default();
            limits
                .apply(&mut r)
                .map_err(|e| Error::InvalidArgument(e.to_string()))?;
            check(&r).map_err(Error::InvalidState)?;
            if ctr.rec.state.is_live() {
                if let Some(task) = ctr.task.clone() {
                    task.update(&live_part(&r)).await?;
                }
            }
            new_resources = Some(r);
        }
        if let Some(r) = new_resources {
            let mut linux = ctr.rec.spec.linux().clone().unwrap_or_default();
            linux.set_resources(Some(r));
            std::sync::Arc::make_mut(&mut ctr.rec.spec).set_linux(Some(linux));
        }
        if let Some(policy) = u.restart {
            ctr.rec.config.restart = policy;
        }
        let info = info_of(&ctr.rec);
        self.commit_event(&entry, &ctr, false, EventType::Update, info)
    }
}
