//! The gRPC `Volumes` service over [`Volumes`]: which containers use a
//! volume is read from their specs' mount sources (a volume's `_data`), so
//! no second record can disagree with the containers'.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use berth_api::v1;
use berth_core::{ContainerRecord, Supervisor};
use tonic::{Request, Response, Status};

use crate::volumes::{VolumeError, VolumeRecord, Volumes};

pub struct VolumesApi {
    vols: Arc<Volumes>,
    sup: Supervisor,
}

pub fn volume_status(e: VolumeError) -> Status {
    match e {
        VolumeError::BadName(_) => Status::invalid_argument(e.to_string()),
        VolumeError::NotFound(_) => Status::not_found(e.to_string()),
        VolumeError::InUse(..) => Status::failed_precondition(e.to_string()),
        VolumeError::Io(..) => Status::internal(e.to_string()),
    }
}

/// The volumes a container mounts.
pub fn volumes_of(vols: &Volumes, rec: &ContainerRecord) -> Vec<String> {
    rec.spec
        .mounts()
        .iter()
        .flatten()
        .filter_map(|m| m.source().as_ref().and_then(|s| vols.name_of(s)))
        .collect()
}

/// Volume name → ids of the containers (any state) that mount it.
pub fn users(vols: &Volumes, sup: &Supervisor) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for rec in sup.list(true) {
        for v in volumes_of(vols, &rec) {
            out.entry(v).or_default().push(rec.id.clone());
        }
    }
    out
}

impl VolumesApi {
    pub fn new(vols: Arc<Volumes>, sup: Supervisor) -> Self {
        Self { vols, sup }
    }

    fn proto(&self, r: VolumeRecord, users: &HashMap<String, Vec<String>>) -> v1::Volume {
        v1::Volume {
            mountpoint: self.vols.data(&r.name).to_string_lossy().into_owned(),
            containers: users.get(&r.name).cloned().unwrap_or_default(),
            name: r.name,
            driver: "local".into(),
            created: r.created,
            labels: r.labels.into_iter().collect(),
            anonymous: r.anonymous,
        }
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Volumes) -> Result<T, VolumeError> + Send + 'static,
    {
        let vols = self.vols.clone();
        tokio::task::spawn_blocking(move || f(&vols))
            .await
            .map_err(|e| Status::internal(format!("volume operation failed: {e}")))?
            .map_err(volume_status)
    }
}

#[tonic::async_trait]
impl berth_api::VolumesService for VolumesApi {
    async fn create(
        &self,
        req: Request<v1::CreateVolumeRequest>,
    ) -> Result<Response<v1::Volume>, Status> {
        let r = req.into_inner();
        for k in r.labels.keys() {
            if k.is_empty() {
                return Err(Status::invalid_argument(
                    "a volume label needs a key: --label KEY=VALUE",
                ));
            }
        }
        let labels: BTreeMap<String, String> = r.labels.into_iter().collect();
        let name = (!r.name.is_empty()).then_some(r.name);
        let (rec, _) = self
            .blocking(move |v| v.create(name.as_deref(), labels, false))
            .await?;
        let users = users(&self.vols, &self.sup);
        Ok(Response::new(self.proto(rec, &users)))
    }

    async fn list(
        &self,
        req: Request<v1::ListVolumesRequest>,
    ) -> Result<Response<v1::ListVolumesResponse>, Status> {
        let dangling = req.into_inner().dangling;
        let recs = self.blocking(|v| v.list()).await?;
        let users = users(&self.vols, &self.sup);
        let volumes = recs
            .into_iter()
            .filter(|r| !dangling || !users.contains_key(&r.name))
            .map(|r| self.proto(r, &users))
            .collect();
        Ok(Response::new(v1::ListVolumesResponse { volumes }))
    }

    async fn inspect(
        &self,
        req: Request<v1::InspectVolumeRequest>,
    ) -> Result<Response<v1::Volume>, Status> {
        let name = req.into_inner().name;
        let rec = self.blocking(move |v| v.get(&name)).await?;
        let users = users(&self.vols, &self.sup);
        Ok(Response::new(self.proto(rec, &users)))
    }

    async fn remove(
        &self,
        req: Request<v1::RemoveVolumeRequest>,
    ) -> Result<Response<v1::RemoveVolumeResponse>, Status> {
        let r = req.into_inner();
        let user = users(&self.vols, &self.sup)
            .get(&r.name)
            .and_then(|u| u.first().cloned());
        let name = r.name.clone();
        match self
            .blocking(move |v| v.remove(&name, user.as_deref()))
            .await
        {
            Err(e) if r.force && e.code() == tonic::Code::NotFound => {}
            other => other?,
        }
        Ok(Response::new(v1::RemoveVolumeResponse {}))
    }

    async fn prune(
        &self,
        _req: Request<v1::PruneVolumesRequest>,
    ) -> Result<Response<v1::PruneVolumesResponse>, Status> {
        let recs = self.blocking(|v| v.list()).await?;
        let users = users(&self.vols, &self.sup);
        let mut removed = Vec::new();
        for r in recs {
            if users.contains_key(&r.name) {
                continue;
            }
            let name = r.name.clone();
            match self.blocking(move |v| v.remove(&name, None)).await {
                Ok(()) => removed.push(r.name),
                Err(e) if e.code() == tonic::Code::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Response::new(v1::PruneVolumesResponse { removed }))
    }
}

/// `--rm`: when a container made with it is deleted (auto-removed, or by
/// `rm`), its anonymous volumes no other container uses go with it, as
/// Docker's auto-remove does (`rm -v`). A watcher of the event bus: the
/// supervisor, which removes the container, knows nothing of volumes.
pub fn spawn_auto_remove_volumes(vols: Arc<Volumes>, sup: Supervisor) {
    let bus = sup.events().clone();
    // Subscribed before the containers are listed: one created in between
    // is seen by its create event.
    let mut sub = bus.subscribe(bus.last_seq());
    let anonymous = |vols: &Volumes, rec: &ContainerRecord| -> Vec<String> {
        volumes_of(vols, rec)
            .into_iter()
            .filter(|n| vols.get(n).map(|r| r.anonymous).unwrap_or(false))
            .collect()
    };
    // Container id → its anonymous volumes, for containers made with --rm
    // (read while they exist: a deleted container's record is gone).
    let mut watched: HashMap<String, Vec<String>> = sup
        .list(true)
        .into_iter()
        .filter(|r| r.config.auto_remove)
        .map(|r| (r.id.clone(), anonymous(&vols, &r)))
        .collect();
    tokio::spawn(async move {
        use berth_core::event::EventType;
        while let Some(ev) = sub.next().await {
            // A volume's or a network's create or delete is not a
            // container's.
            if !ev.object.is_container() {
                continue;
            }
            match ev.kind {
                EventType::Create => {
                    if let Ok(rec) = sup.inspect(&ev.container) {
                        if rec.config.auto_remove {
                            watched.insert(rec.id.clone(), anonymous(&vols, &rec));
                        }
                    }
                }
                EventType::Delete => {
                    let Some(names) = watched.remove(&ev.container) else {
                        continue;
                    };
                    if names.is_empty() {
                        continue;
                    }
                    let in_use = users(&vols, &sup);
                    let vols = vols.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        for n in names {
                            if in_use.contains_key(&n) {
                                continue;
                            }
                            match vols.remove(&n, None) {
                                Ok(()) => tracing::info!(volume = %n, "anonymous volume of a --rm container removed"),
                                Err(VolumeError::NotFound(_)) => {}
                                Err(e) => tracing::warn!(volume = %n, error = %e, "cannot remove an anonymous volume"),
                            }
                        }
                    })
                    .await;
                }
                _ => {}
            }
        }
    });
}
