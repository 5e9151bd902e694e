//! A fake [`Backend`] for the mapping's unit tests: fixed answers for the
//! system calls, recorded requests, and `Unimplemented` for the rest.

use std::sync::Mutex;

use berth_api::v1;
use tonic::Status;

use crate::{Backend, BoxStream, InputStream};

#[derive(Default)]
pub struct Fake {
    pub info: v1::InfoResponse,
    pub engine: crate::Engine,
    /// Every request, as `Debug` text, in order.
    pub calls: Mutex<Vec<String>>,
}

impl Fake {
    fn record(&self, what: impl std::fmt::Debug) {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{what:?}"));
    }
}

fn nope<T>() -> Result<T, Status> {
    Err(Status::unimplemented("not in the fake"))
}

#[async_trait::async_trait]
impl Backend for Fake {
    async fn version(&self, r: v1::VersionRequest) -> Result<v1::VersionResponse, Status> {
        self.record(r);
        Ok(v1::VersionResponse {
            version: "9.9.9".into(),
            runtime: "/usr/sbin/runc".into(),
            root: "/var/lib/berth".into(),
        })
    }
    async fn info(&self, r: v1::InfoRequest) -> Result<v1::InfoResponse, Status> {
        self.record(r);
        Ok(self.info.clone())
    }
    async fn engine(&self) -> Result<crate::Engine, Status> {
        Ok(self.engine.clone())
    }
    async fn create(&self, r: v1::CreateRequest) -> Result<v1::CreateResponse, Status> {
        self.record(r);
        nope()
    }
    async fn start(&self, r: v1::StartRequest) -> Result<v1::StartResponse, Status> {
        self.record(r);
        nope()
    }
    async fn list(&self, r: v1::ListRequest) -> Result<v1::ListResponse, Status> {
        self.record(r);
        nope()
    }
    async fn inspect(&self, r: v1::InspectRequest) -> Result<v1::InspectResponse, Status> {
        self.record(&r);
        Err(Status::not_found(format!("no such container: {}", r.id)))
    }
    async fn wait(&self, r: v1::WaitRequest) -> Result<v1::WaitResponse, Status> {
        self.record(r);
        nope()
    }
    async fn kill(&self, r: v1::KillRequest) -> Result<v1::KillResponse, Status> {
        self.record(r);
        nope()
    }
    async fn stop(&self, r: v1::StopRequest) -> Result<v1::StopResponse, Status> {
        self.record(r);
        nope()
    }
    async fn pause(&self, r: v1::PauseRequest) -> Result<v1::PauseResponse, Status> {
        self.record(r);
        nope()
    }
    async fn resume(&self, r: v1::ResumeRequest) -> Result<v1::ResumeResponse, Status> {
        self.record(r);
        nope()
    }
    async fn delete(&self, r: v1::DeleteRequest) -> Result<v1::DeleteResponse, Status> {
        self.record(r);
        nope()
    }
    async fn logs(&self, r: v1::LogsRequest) -> Result<BoxStream<v1::LogEntry>, Status> {
        self.record(r);
        nope()
    }
    async fn exec(&self, r: v1::ExecRequest) -> Result<v1::ExecResponse, Status> {
        self.record(r);
        nope()
    }
    async fn attach(&self, _input: InputStream) -> Result<BoxStream<v1::AttachResponse>, Status> {
        self.record("attach");
        nope()
    }
}
