//! Named background workers.
//!
//! Every loop a Meridian process runs besides answering calls (replication
//! shippers, probers, lease refreshers, jobs, health reporters) is started through
//! [`Workers::spawn`] under a name. The registry can list them with their state
//! (`meridian workers`), and [`Workers::shutdown`] stops every one and waits for
//! all of them together, so a process exits promptly and never leaves a loop
//! running past its shutdown.
//!
//! A worker's body does not need to watch for shutdown itself: it is cancelled
//! at its next `.await` once shutdown begins. A body that wants to say what it is
//! doing calls [`note`] (or [`beat`]) from anywhere inside it; the call finds the
//! worker through a task-local, so deep code needs no handle passed down.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How many finished workers the list keeps (the most recent), so short-lived
/// ones (a job, a shipper whose standby moved) stay visible for a while without
/// the list growing forever.
const KEEP_FINISHED: usize = 64;

/// What a worker is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerState {
    /// Its body runs.
    Running,
    /// Its body returned by itself.
    Finished,
    /// Stopped by shutdown (or by whoever started it).
    Stopped,
    /// Its body panicked; the message says with what.
    Failed(String),
}

impl WorkerState {
    /// Its name (`running`, `finished`, `stopped`, `failed`).
    pub fn name(&self) -> &'static str {
        match self {
            WorkerState::Running => "running",
            WorkerState::Finished => "finished",
            WorkerState::Stopped => "stopped",
            WorkerState::Failed(_) => "failed",
        }
    }
}

/// One worker as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStatus {
    /// Its name, unique among running workers of the process
    /// (`replication-shipper:orders->eu-west`).
    pub name: String,
    /// Its state.
    pub state: WorkerState,
    /// What it last said it was doing ([`note`]); empty if it never said.
    pub detail: String,
    /// When it started (Unix ms).
    pub started_unix_ms: u64,
    /// When it last reported progress ([`note`], [`beat`]); 0 if never.
    pub progress_unix_ms: u64,
    /// When it ended (Unix ms); 0 while it runs.
    pub ended_unix_ms: u64,
}

/// The workers of one process. Cheap to clone; clones share the registry.
#[derive(Clone)]
pub struct Workers {
    inner: Arc<Inner>,
}

struct Inner {
    stop: watch::Sender<bool>,
    entries: Mutex<Vec<Entry>>,
}

struct Entry {
    status: Arc<Mutex<WorkerStatus>>,
    task: Option<JoinHandle<()>>,
    stop: Option<watch::Sender<bool>>,
}

impl Default for Workers {
    fn default() -> Self {
        Self::new()
    }
}

tokio::task_local! {
    static CURRENT: Arc<Mutex<WorkerStatus>>;
}

/// Records what the current worker is doing (shown by `meridian workers`) and
/// counts as progress. Does nothing outside a worker.
pub fn note(detail: impl Into<String>) {
    let detail = detail.into();
    let _ = CURRENT.try_with(|status| {
        let mut status = status.lock().unwrap_or_else(|e| e.into_inner());
        status.detail = detail;
        status.progress_unix_ms = now_unix_ms();
    });
}

/// Records that the current worker made progress (a round of its loop
/// completed). Does nothing outside a worker.
pub fn beat() {
    let _ = CURRENT.try_with(|status| {
        status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .progress_unix_ms = now_unix_ms();
    });
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Stops one worker started with [`Workers::spawn_stoppable`] (dropping it
/// does not stop the worker).
pub struct WorkerStop {
    stop: watch::Sender<bool>,
    task: Arc<Mutex<WorkerStatus>>,
}

impl WorkerStop {
    /// Asks the worker to stop; it is cancelled at its next `.await`.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Whether the worker's body is still running.
    pub fn is_running(&self) -> bool {
        self.task.lock().unwrap_or_else(|e| e.into_inner()).state == WorkerState::Running
    }
}

impl Workers {
    /// An empty registry.
    pub fn new() -> Self {
        Workers {
            inner: Arc::new(Inner {
                stop: watch::channel(false).0,
                entries: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Starts `body` as the worker `name`. It runs until it returns or until
    /// [`Workers::shutdown`]. Started after shutdown began, it does not run.
    pub fn spawn<F>(&self, name: impl Into<String>, body: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.start(name.into(), body, None);
    }

    /// Like [`Workers::spawn`], and returns a handle that stops this one
    /// worker (a shipper whose standby moved away).
    pub fn spawn_stoppable<F>(&self, name: impl Into<String>, body: F) -> WorkerStop
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (stop, _) = watch::channel(false);
        let status = self.start(name.into(), body, Some(stop.clone()));
        WorkerStop { stop, task: status }
    }

    fn start<F>(
        &self,
        name: String,
        body: F,
        own_stop: Option<watch::Sender<bool>>,
    ) -> Arc<Mutex<WorkerStatus>>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let status = Arc::new(Mutex::new(WorkerStatus {
            name,
            state: WorkerState::Running,
            detail: String::new(),
            started_unix_ms: now_unix_ms(),
            progress_unix_ms: 0,
            ended_unix_ms: 0,
        }));
        if self.stopping() {
            // Shutdown has begun: the worker never starts.
            {
                let mut record = status.lock().unwrap_or_else(|e| e.into_inner());
                record.state = WorkerState::Stopped;
                record.ended_unix_ms = record.started_unix_ms;
            }
            self.entries().push(Entry {
                status: status.clone(),
                task: None,
                stop: own_stop,
            });
            return status;
        }
        let mut shutdown = self.inner.stop.subscribe();
        let mut own = own_stop.as_ref().map(|s| s.subscribe());
        let record = status.clone();
        let task = tokio::spawn(async move {
            let mut body = tokio::spawn(CURRENT.scope(record.clone(), body));
            let own_stop = async {
                match own.as_mut() {
                    Some(own) => {
                        let _ = own.wait_for(|stopped| *stopped).await;
                    }
                    None => std::future::pending().await,
                }
            };
            let state = tokio::select! {
                result = &mut body => match result {
                    Ok(()) => WorkerState::Finished,
                    Err(error) if error.is_panic() => WorkerState::Failed(panic_message(error)),
                    Err(_) => WorkerState::Stopped,
                },
                _ = async { let _ = shutdown.wait_for(|stopped| *stopped).await; } => stop_body(body).await,
                _ = own_stop => stop_body(body).await,
            };
            if let WorkerState::Failed(why) = &state {
                let name = record
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .name
                    .clone();
                tracing::error!(worker = %name, panic = %why, "worker failed");
            }
            let mut record = record.lock().unwrap_or_else(|e| e.into_inner());
            record.state = state;
            record.ended_unix_ms = now_unix_ms();
        });
        let mut entries = self.entries();
        entries.push(Entry {
            status: status.clone(),
            task: Some(task),
            stop: own_stop,
        });
        prune(&mut entries);
        status
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.inner.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every worker (running ones and the most recent finished ones), in the
    /// order they started.
    pub fn list(&self) -> Vec<WorkerStatus> {
        self.entries()
            .iter()
            .map(|e| e.status.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }

    /// Whether shutdown has begun.
    pub fn stopping(&self) -> bool {
        *self.inner.stop.borrow()
    }

    /// Stops every worker and waits for all of them together, at most
    /// `grace`. Returns the names of workers still running after it (stuck in
    /// blocking code); they are left to end with the process.
    pub async fn shutdown(&self, grace: Duration) -> Vec<String> {
        let _ = self.inner.stop.send(true);
        let tasks: Vec<(Arc<Mutex<WorkerStatus>>, JoinHandle<()>)> = {
            let mut entries = self.entries();
            entries
                .iter_mut()
                .filter_map(|e| {
                    if let Some(stop) = &e.stop {
                        let _ = stop.send(true);
                    }
                    e.task.take().map(|t| (e.status.clone(), t))
                })
                .collect()
        };
        let deadline = tokio::time::Instant::now() + grace;
        let mut stuck = Vec::new();
        for (status, task) in tasks {
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                stuck.push(
                    status
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .name
                        .clone(),
                );
            }
        }
        if !stuck.is_empty() {
            tracing::warn!(workers = ?stuck, "workers still running after the shutdown grace period");
        }
        stuck
    }
}

/// Cancels a worker's body and waits until it is dropped.
async fn stop_body(body: JoinHandle<()>) -> WorkerState {
    body.abort();
    match body.await {
        Err(error) if error.is_panic() => WorkerState::Failed(panic_message(error)),
        _ => WorkerState::Stopped,
    }
}

fn panic_message(error: tokio::task::JoinError) -> String {
    let payload = error.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panicked".to_string())
}

/// Drops the oldest ended workers beyond [`KEEP_FINISHED`].
fn prune(entries: &mut Vec<Entry>) {
    let ended = |e: &Entry| {
        e.status.lock().unwrap_or_else(|e| e.into_inner()).state != WorkerState::Running
    };
    let mut excess = entries.iter().filter(|e| ended(e)).count();
    if excess <= KEEP_FINISHED {
        return;
    }
    excess -= KEEP_FINISHED;
    entries.retain(|e| {
        if excess > 0 && ended(e) {
            excess -= 1;
            false
        } else {
            true
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts drops: a worker's body holds one, so the count says whether the
    /// body really ended.
    struct DropCount(Arc<AtomicUsize>);
    impl Drop for DropCount {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !condition() {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn shutdown_stops_and_awaits_every_worker() {
        let workers = Workers::new();
        let dropped = Arc::new(AtomicUsize::new(0));
        for i in 0..5 {
            let guard = DropCount(dropped.clone());
            workers.spawn(format!("loop-{i}"), async move {
                let _guard = guard;
                loop {
                    beat();
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        }
        workers.spawn("short", async {});
        wait_until("the short worker finishes", || {
            workers
                .list()
                .iter()
                .any(|w| w.state == WorkerState::Finished)
        })
        .await;
        let listed = workers.list();
        assert_eq!(listed.len(), 6);
        assert_eq!(
            listed
                .iter()
                .filter(|w| w.state == WorkerState::Running)
                .count(),
            5
        );
        let started = std::time::Instant::now();
        let stuck = workers.shutdown(Duration::from_secs(2)).await;
        assert!(stuck.is_empty(), "{stuck:?}");
        assert!(started.elapsed() < Duration::from_secs(1));
        // Awaited: every body is dropped by the time shutdown returns.
        assert_eq!(dropped.load(Ordering::SeqCst), 5);
        for worker in workers.list() {
            let expected = if worker.name == "short" {
                WorkerState::Finished
            } else {
                WorkerState::Stopped
            };
            assert_eq!(worker.state, expected, "{}", worker.name);
            assert!(worker.ended_unix_ms >= worker.started_unix_ms);
        }
        // Started after shutdown: never runs.
        let ran = Arc::new(AtomicUsize::new(0));
        let counter = ran.clone();
        workers.spawn("late", async move {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        wait_until("the late worker ends", || {
            workers
                .list()
                .iter()
                .any(|w| w.name == "late" && w.state != WorkerState::Running)
        })
        .await;
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn notes_panics_and_single_stops_are_reported() {
        let workers = Workers::new();
        workers.spawn("noter", async {
            note("shipping orders from 42");
            std::future::pending::<()>().await;
        });
        workers.spawn("crasher", async {
            panic!("boom");
        });
        let one = workers.spawn_stoppable("one", std::future::pending::<()>());
        wait_until("the note and the panic are recorded", || {
            let list = workers.list();
            list.iter()
                .any(|w| w.detail == "shipping orders from 42" && w.progress_unix_ms > 0)
                && list
                    .iter()
                    .any(|w| w.state == WorkerState::Failed("boom".into()))
        })
        .await;
        assert!(one.is_running());
        one.stop();
        wait_until("the single worker stops", || !one.is_running()).await;
        let state = |name: &str| {
            workers
                .list()
                .into_iter()
                .find(|w| w.name == name)
                .map(|w| w.state)
        };
        assert_eq!(state("one"), Some(WorkerState::Stopped));
        assert_eq!(state("noter"), Some(WorkerState::Running));
        assert!(workers.shutdown(Duration::from_secs(1)).await.is_empty());
        assert_eq!(state("noter"), Some(WorkerState::Stopped));
    }

    #[tokio::test]
    async fn finished_workers_are_pruned_beyond_the_limit() {
        let workers = Workers::new();
        workers.spawn("long", std::future::pending::<()>());
        for i in 0..(KEEP_FINISHED + 10) {
            workers.spawn(format!("short-{i}"), async {});
            wait_until("it finishes", || {
                workers
                    .list()
                    .iter()
                    .all(|w| w.name == "long" || w.state == WorkerState::Finished)
            })
            .await;
        }
        workers.spawn("last", async {});
        let list = workers.list();
        assert!(list.len() <= KEEP_FINISHED + 2, "{}", list.len());
        assert_eq!(list[0].name, "long", "running workers are never pruned");
        workers.shutdown(Duration::from_secs(1)).await;
    }
}
