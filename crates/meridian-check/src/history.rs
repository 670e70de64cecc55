//! Recording a history: every call's invocation and completion, as an
//! outside client sees them.
//!
//! Times are the recorder's own monotonic clock (nanoseconds since it was
//! made), taken just before a call is sent and just after its answer
//! arrives, so the real interval of the operation lies inside.

use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::Instant;

/// What a call asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// Write a value (bytes as a string, for readable dumps).
    Put(String),
    /// Remove the key.
    Delete,
    /// Read the key.
    Get,
}

/// What a call returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    /// A write or delete took effect.
    Done,
    /// A read found this value (`None`: the key was absent).
    Value(Option<String>),
    /// Refused before anything was done (it certainly did not take effect).
    Refused,
    /// No answer, or an answer that does not say: the call may or may not
    /// have taken effect, at any time from its invocation on.
    Unknown,
}

/// One operation of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// Which client made it (for dumps).
    pub client: u64,
    /// The key.
    pub key: String,
    /// What it asked.
    pub input: Input,
    /// What came back.
    pub output: Output,
    /// When it was invoked (ns on the recorder's clock).
    pub called_ns: u64,
    /// When it completed (ns; `u64::MAX` for unknown outcomes).
    pub returned_ns: u64,
}

/// Records operations from many concurrent clients.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    operations: Mutex<Vec<Operation>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

/// An operation that has been invoked and not yet completed.
#[derive(Debug)]
#[must_use = "complete the call with `Recorder::complete`"]
pub struct Pending {
    client: u64,
    key: String,
    input: Input,
    called_ns: u64,
}

impl Recorder {
    /// An empty history whose clock starts now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            operations: Mutex::new(Vec::new()),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX - 1)
    }

    /// Notes that `client` is about to call `input` on `key`.
    pub fn invoke(&self, client: u64, key: &str, input: Input) -> Pending {
        Pending {
            client,
            key: key.to_string(),
            input,
            called_ns: self.now_ns(),
        }
    }

    /// Notes the answer to a pending call.
    pub fn complete(&self, pending: Pending, output: Output) {
        let returned_ns = match output {
            Output::Unknown => u64::MAX,
            _ => self.now_ns().max(pending.called_ns),
        };
        self.operations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Operation {
                client: pending.client,
                key: pending.key,
                input: pending.input,
                output,
                called_ns: pending.called_ns,
                returned_ns,
            });
    }

    /// Every completed operation so far.
    pub fn operations(&self) -> Vec<Operation> {
        self.operations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
