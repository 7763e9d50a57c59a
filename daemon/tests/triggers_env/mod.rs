//! Fixture for trigger tests: a real engine and registry on a temp directory
//! and the suite's store (SQLite there, or a PostgreSQL database of its own),
//! with pipeline files written the way an operator would.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sluice_daemon::engine::{Engine, EngineOptions};
use sluice_daemon::registry::Registry;
use sluice_daemon::secrets::Secrets;
use sluice_daemon::store::{Durability, Store};

use crate::common::Backend;
use sluice_daemon::triggers::Triggers;
use sluice_shared::validate::ValidateOptions;

pub struct Env {
    pub dir: tempfile::TempDir,
    pub pipelines: PathBuf,
    pub store: Store,
    pub engine: Engine,
    pub registry: Arc<Registry>,
    pub triggers: Triggers,
    pub secrets: Secrets,
    /// Where the store lives (last: a PostgreSQL database outlives the engine).
    pub backend: Backend,
}

/// A stopped [`Env`]'s directory and store, to open again as after a restart.
pub struct Stopped {
    pub dir: tempfile::TempDir,
    backend: Backend,
}

pub fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
}

impl Env {
    /// An engine and registry over `files` (name → text) in a fresh pipelines directory.
    pub async fn new(files: &[(&str, &str)], secrets: BTreeMap<String, String>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::open(dir, files, secrets).await
    }

    /// [`Env::new`] under `limits` (caps, rates) instead of the defaults.
    pub async fn with_limits(
        files: &[(&str, &str)],
        secrets: BTreeMap<String, String>,
        limits: sluice_daemon::limits::LimitsConfig,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = Backend::new().await;
        Self::open_with(dir, backend, files, secrets, limits).await
    }

    /// The same on an existing directory, with a new store.
    pub async fn open(
        dir: tempfile::TempDir,
        files: &[(&str, &str)],
        secrets: BTreeMap<String, String>,
    ) -> Self {
        let backend = Backend::new().await;
        Self::open_on(dir, backend, files, secrets).await
    }

    /// A stopped environment again, on its directory and store (a restart).
    pub async fn reopen(
        stopped: Stopped,
        files: &[(&str, &str)],
        secrets: BTreeMap<String, String>,
    ) -> Self {
        Self::open_on(stopped.dir, stopped.backend, files, secrets).await
    }

    async fn open_on(
        dir: tempfile::TempDir,
        backend: Backend,
        files: &[(&str, &str)],
        secrets: BTreeMap<String, String>,
    ) -> Self {
        Self::open_with(dir, backend, files, secrets, Default::default()).await
    }

    async fn open_with(
        dir: tempfile::TempDir,
        backend: Backend,
        files: &[(&str, &str)],
        secrets: BTreeMap<String, String>,
        limits: sluice_daemon::limits::LimitsConfig,
    ) -> Self {
        let pipelines = dir.path().join("pipelines");
        std::fs::create_dir_all(&pipelines).expect("mkdir");
        for (name, text) in files {
            write_file(&pipelines.join(name), text);
        }
        let store = backend
            .open(&dir.path().join("sluice.db"), Durability::Full)
            .await;
        let secrets = Secrets::from_map(secrets);
        let engine = Engine::start(
            store.clone(),
            &secrets,
            EngineOptions {
                workers: 8,
                plugins_dir: dir.path().join("plugins"),
                shutdown_grace: Duration::from_millis(0),
                limits: Arc::new(sluice_daemon::limits::Limits::new(limits)),
                ..EngineOptions::default()
            },
        )
        .expect("engine");
        engine.recover().await.expect("recover");
        let registry = Arc::new(
            Registry::new(store.clone(), engine.events())
                .await
                .expect("registry"),
        );
        registry
            .reload(&pipelines, &ValidateOptions::default())
            .await
            .expect("reload");
        let triggers = Triggers::new(engine.clone(), Arc::clone(&registry));
        Self {
            dir,
            pipelines,
            store,
            engine,
            registry,
            triggers,
            secrets,
            backend,
        }
    }

    /// Stops the engine and hands back the directory and store (to reopen them).
    pub async fn stop(self) -> Stopped {
        self.engine.shutdown().await;
        Stopped {
            dir: self.dir,
            backend: self.backend,
        }
    }
}
