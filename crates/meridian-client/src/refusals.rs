//! Gateways and nodes report the calls they refused to the control plane,
//! which writes them to its audit log under the refused caller's name. The
//! queue is bounded (a flood of refused calls costs at most [`QUEUED`]
//! records per flush; the rest are counted), and a report that cannot be
//! delivered is dropped with a warning rather than retried forever.

use crate::Client;
use meridian_proto::v1 as pb;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Refused calls kept between two reports at most.
pub const QUEUED: usize = 256;
/// How often the queue is sent.
const FLUSH: Duration = Duration::from_secs(1);

/// The refused calls waiting to be reported.
#[derive(Debug, Default)]
pub struct RefusalReporter {
    queue: Mutex<(Vec<pb::RefusedCallInfo>, u64)>,
}

impl RefusalReporter {
    /// An empty reporter.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Queues one refused call (or counts it when the queue is full).
    pub fn refused(&self, actor: String, api: &str, target: String, reason: String) {
        let at_unix_ms = meridian_access::now_unix_ms();
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.0.len() < QUEUED {
            queue.0.push(pb::RefusedCallInfo {
                at_unix_ms,
                actor,
                api: api.to_string(),
                target,
                reason,
            });
        } else {
            queue.1 = queue.1.saturating_add(1);
        }
    }

    fn take(&self) -> (Vec<pb::RefusedCallInfo>, u64) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        (std::mem::take(&mut queue.0), std::mem::take(&mut queue.1))
    }

    /// Starts [`RefusalReporter::run`] towards the control plane at
    /// `endpoints`, dialed with `dialer`, as the worker `refusal-reporter`.
    pub fn start(
        self: Arc<Self>,
        endpoints: Vec<String>,
        dialer: meridian_net::Dialer,
        workers: &meridian_net::workers::Workers,
    ) -> Result<(), crate::ClientError> {
        let control = Client::with_options(
            endpoints,
            crate::ClientOptions {
                attempt_timeout: Duration::from_secs(2),
                retry_budget: Duration::from_secs(5),
                dialer,
                ..Default::default()
            },
        )?;
        workers.spawn("refusal-reporter", self.run(control));
        Ok(())
    }

    /// Sends what was queued to the control plane every second, forever.
    pub async fn run(self: Arc<Self>, control: Client) {
        loop {
            tokio::time::sleep(FLUSH).await;
            let (refused, dropped) = self.take();
            if refused.is_empty() && dropped == 0 {
                continue;
            }
            let count = refused.len();
            if let Err(err) = control.report_refusals(refused, dropped).await {
                tracing::warn!(error = %err, count, "could not report refused calls to the control plane");
            }
        }
    }
}
