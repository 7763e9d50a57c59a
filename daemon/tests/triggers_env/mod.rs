//! Fixture for trigger tests: a real engine and registry on a temp directory,
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

    /// The same on an existing directory (after a restart).
    pub async fn open(
        dir: tempfile::TempDir,
        files: &[(&str, &str)],
        secrets: BTreeMap<String, String>,
    ) -> Self {
        let pipelines = dir.path().join("pipelines");
        std::fs::create_dir_all(&pipelines).expect("mkdir");
        for (name, text) in files {
            write_file(&pipelines.join(name), text);
        }
        let store = Store::open(&dir.path().join("sluice.db"), Durability::Full)
            .await
            .expect("store");
        let secrets = Secrets::from_map(secrets);
        let engine = Engine::start(
            store.clone(),
            &secrets,
            EngineOptions {
                workers: 8,
                plugins_dir: dir.path().join("plugins"),
                shutdown_grace: Duration::from_millis(0),
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
        }
    }

    /// Stops the engine and hands back the directory (to reopen it).
    pub async fn stop(self) -> tempfile::TempDir {
        self.engine.shutdown().await;
        self.dir
    }
}
