//! The gRPC `Networks` service over [`Net`]'s plain functions (which the
//! Docker API calls too): containers are looked up here, the networks and
//! attachments are `Net`'s.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_api::v1;
use berth_core::Supervisor;
use tonic::{Request, Response, Status};

use crate::net::{Endpoint, Net, NetError};

pub struct NetworksApi {
    net: Arc<Net>,
    sup: Supervisor,
}

pub fn net_status(e: NetError) -> Status {
    let msg = e.to_string();
    match e {
        NetError::Invalid(_) => Status::invalid_argument(msg),
        NetError::NotFound(_) => Status::not_found(msg),
        NetError::Exists(_) => Status::already_exists(msg),
        NetError::InUse(..) => Status::failed_precondition(msg),
        NetError::Failed(_) => Status::internal(msg),
    }
}

impl NetworksApi {
    pub fn new(net: Arc<Net>, sup: Supervisor) -> Self {
        Self { net, sup }
    }

    fn proto(&self, n: berth_net::Network, eps: Vec<Endpoint>) -> v1::Network {
        let name_of = |id: &str| self.sup.inspect(id).map(|r| r.name).unwrap_or_default();
        v1::Network {
            containers: eps
                .into_iter()
                .map(|e| v1::NetworkEndpoint {
                    container_name: name_of(&e.container_id),
                    container_id: e.container_id,
                    ipv4: e.ipv4,
                    gateway: e.gateway,
                    mac: e.mac,
                    aliases: e.aliases,
                    interface: e.ifname,
                })
                .collect(),
            name: n.name,
            id: n.id,
            driver: "bridge".into(),
            bridge: n.bridge,
            subnet: n.subnet.to_string(),
            gateway: n.gateway.to_string(),
            internal: n.internal,
            labels: n.labels.into_iter().collect(),
            created: n.created,
        }
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Net) -> Result<T, NetError> + Send + 'static,
    {
        let net = self.net.clone();
        tokio::task::spawn_blocking(move || f(&net))
            .await
            .map_err(|e| Status::internal(format!("network operation failed: {e}")))?
            .map_err(net_status)
    }

    /// A container's id and whether its init runs now.
    /// A container's id, and its init's pid while it runs.
    fn container(&self, key: &str) -> Result<(String, Option<i32>), Status> {
        let rec = self.sup.inspect(key).map_err(crate::service::status)?;
        let running = (rec.pid > 0 && rec.state.is_live()).then_some(rec.pid);
        Ok((rec.id.clone(), running))
    }
}

#[tonic::async_trait]
impl berth_api::NetworksService for NetworksApi {
    async fn create(
        &self,
        req: Request<v1::CreateNetworkRequest>,
    ) -> Result<Response<v1::Network>, Status> {
        let r = req.into_inner();
        let labels: BTreeMap<String, String> = r.labels.into_iter().collect();
        let n = self
            .blocking(move |net| {
                net.create_network(&r.name, &r.subnet, &r.gateway, r.internal, labels)
            })
            .await?;
        Ok(Response::new(self.proto(n, Vec::new())))
    }

    async fn list(
        &self,
        _req: Request<v1::ListNetworksRequest>,
    ) -> Result<Response<v1::ListNetworksResponse>, Status> {
        let nets = self.blocking(|net| Ok(net.list_networks())).await?;
        let mut networks = Vec::new();
        for n in nets {
            let name = n.name.clone();
            let eps = self.blocking(move |net| Ok(net.endpoints(&name))).await?;
            networks.push(self.proto(n, eps));
        }
        Ok(Response::new(v1::ListNetworksResponse { networks }))
    }

    async fn inspect(
        &self,
        req: Request<v1::InspectNetworkRequest>,
    ) -> Result<Response<v1::Network>, Status> {
        let name = req.into_inner().name;
        let (n, eps) = self
            .blocking(move |net| {
                let n = net.get_network(&name)?;
                let eps = net.endpoints(&n.name);
                Ok((n, eps))
            })
            .await?;
        Ok(Response::new(self.proto(n, eps)))
    }

    async fn remove(
        &self,
        req: Request<v1::RemoveNetworkRequest>,
    ) -> Result<Response<v1::RemoveNetworkResponse>, Status> {
        let r = req.into_inner();
        let name = r.name.clone();
        match self.blocking(move |net| net.remove_network(&name)).await {
            Err(e) if r.force && e.code() == tonic::Code::NotFound => {}
            other => other?,
        }
        Ok(Response::new(v1::RemoveNetworkResponse {}))
    }

    async fn connect_container(
        &self,
        req: Request<v1::ConnectNetworkRequest>,
    ) -> Result<Response<v1::ConnectNetworkResponse>, Status> {
        let r = req.into_inner();
        let (id, running) = self.container(&r.container)?;
        let name = self.sup.inspect(&id).map(|r| r.name).unwrap_or_default();
        self.blocking(move |net| net.connect(&id, &name, &r.network, &r.aliases, &r.ip, running))
            .await?;
        Ok(Response::new(v1::ConnectNetworkResponse {}))
    }

    async fn disconnect_container(
        &self,
        req: Request<v1::DisconnectNetworkRequest>,
    ) -> Result<Response<v1::DisconnectNetworkResponse>, Status> {
        let r = req.into_inner();
        let (id, _) = self.container(&r.container)?;
        self.blocking(move |net| net.disconnect(&id, &r.network, r.force))
            .await?;
        Ok(Response::new(v1::DisconnectNetworkResponse {}))
    }

    async fn prune(
        &self,
        _req: Request<v1::PruneNetworksRequest>,
    ) -> Result<Response<v1::PruneNetworksResponse>, Status> {
        let removed = self.blocking(|net| Ok(net.prune_networks())).await?;
        Ok(Response::new(v1::PruneNetworksResponse { removed }))
    }
}
