//! openraft's own conformance suite, run against Meridian's fjall log store and
//! state-machine adapter.

use fjall::{Keyspace, KeyspaceCreateOptions};
use meridian_raft::log_store::LogStore;
use meridian_raft::metrics::StorageMetrics;
use meridian_raft::{Application, ApplyBatch, StateMachineStore, StorageEngine, TypeConfig};
use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use std::io;
use std::sync::Arc;

/// A minimal application: stores each command under its index.
struct Recorder {
    data: Keyspace,
}

impl Application for Recorder {
    fn keyspaces(&self) -> Vec<Keyspace> {
        vec![self.data.clone()]
    }

    fn apply(&self, index: u64, command: &[u8], batch: &mut ApplyBatch) -> io::Result<Vec<u8>> {
        batch.insert(&self.data, index.to_be_bytes().to_vec(), command.to_vec());
        Ok(command.to_vec())
    }

    fn restored(&self) -> io::Result<()> {
        Ok(())
    }
}

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir =
            tempfile::tempdir().map_err(|e| StorageError::write(TypeConfig::err_from_error(&e)))?;
        let open = || -> io::Result<(LogStore, StateMachineStore)> {
            let engine = StorageEngine::open(dir.path(), Arc::new(StorageMetrics::default()))?;
            let app = Recorder {
                data: engine.keyspace("recorder", KeyspaceCreateOptions::default)?,
            };
            let log = LogStore::open(&engine)?;
            let sm = StateMachineStore::open(&engine, Arc::new(app))?;
            Ok((log, sm))
        };
        let (log, sm) = open().map_err(|e| StorageError::write(TypeConfig::err_from_error(&e)))?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite() {
    Suite::test_all(Builder).await.expect("storage suite");
}
