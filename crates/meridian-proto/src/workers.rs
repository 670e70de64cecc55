//! The `meridian.v1.Workers` service over a process's
//! [`meridian_net::workers::Workers`], shared by every role; each role says
//! who may call it.

use crate::v1 as pb;
use meridian_net::workers::{WorkerState, WorkerStatus, Workers};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Decides whether a `ListWorkers` call may proceed.
pub type Authorize =
    Arc<dyn Fn(&Request<pb::ListWorkersRequest>) -> Result<(), Status> + Send + Sync>;

/// Serves the workers of one process.
pub struct WorkersService {
    process: String,
    workers: Workers,
    authorize: Authorize,
}

impl WorkersService {
    /// The service of `process` (its name in listings), asking `authorize`
    /// about every call.
    pub fn new(process: impl Into<String>, workers: Workers, authorize: Authorize) -> Self {
        WorkersService {
            process: process.into(),
            workers,
            authorize,
        }
    }

    /// The tonic server to add to a router.
    pub fn server(self) -> pb::workers_server::WorkersServer<Self> {
        pb::workers_server::WorkersServer::new(self)
    }
}

/// One worker on the wire.
pub fn worker_info(status: &WorkerStatus) -> pb::WorkerInfo {
    let (state, failure) = match &status.state {
        WorkerState::Running => (pb::WorkerState::Running, String::new()),
        WorkerState::Finished => (pb::WorkerState::Finished, String::new()),
        WorkerState::Stopped => (pb::WorkerState::Stopped, String::new()),
        WorkerState::Failed(why) => (pb::WorkerState::Failed, why.clone()),
    };
    pb::WorkerInfo {
        name: status.name.clone(),
        state: state.into(),
        detail: status.detail.clone(),
        started_unix_ms: status.started_unix_ms,
        progress_unix_ms: status.progress_unix_ms,
        ended_unix_ms: status.ended_unix_ms,
        failure,
    }
}

#[tonic::async_trait]
impl pb::workers_server::Workers for WorkersService {
    async fn list_workers(
        &self,
        request: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        (self.authorize)(&request)?;
        Ok(Response::new(pb::ListWorkersResponse {
            process: self.process.clone(),
            workers: self.workers.list().iter().map(worker_info).collect(),
        }))
    }
}
