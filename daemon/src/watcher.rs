//! Live reload of the pipelines directory.
//!
//! The *directory* is watched (non-recursively), not each file: editors save
//! by writing a temporary file and renaming it over the old one, which a
//! per-file watch loses after the first save. Any change to a pipeline file
//! starts a short quiet period; when no further change arrives for
//! [`WatchOptions::debounce`] the whole directory is reloaded through
//! [`Registry::reload`], which turns valid files into new versions, keeps the
//! previous version of invalid ones and announces both on the event bus
//! (the scheduler reschedules from there). Reloads run one at a time, in this
//! task, whether a file change or SIGHUP asked for them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use sluice_shared::validate::ValidateOptions;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::registry::{Registry, ReloadReport};
use crate::store::StoreError;

/// Why watching could not start or a reload failed.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The directory cannot be watched.
    #[error("cannot watch {path}: {source}")]
    Watch {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: notify::Error,
    },
    /// Storing new versions failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The watcher has stopped.
    #[error("the pipeline watcher has stopped")]
    Stopped,
}

/// Debounce settings.
#[derive(Clone, Copy, Debug)]
pub struct WatchOptions {
    /// Reload once no change has arrived for this long.
    pub debounce: Duration,
    /// Reload at the latest this long after the first change, even if changes keep coming.
    pub max_delay: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        // Editors finish a rename-save within a few milliseconds; 100 ms of quiet
        // keeps save-to-active well under 300 ms while coalescing bursts.
        Self {
            debounce: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        }
    }
}

type RescanReply = oneshot::Sender<Result<ReloadReport, StoreError>>;

/// Watches a pipelines directory until dropped or shut down.
pub struct Watcher {
    rescans: mpsc::Sender<(Option<ValidateOptions>, RescanReply)>,
    dir: PathBuf,
    // Dropping it stops notify's thread.
    _notify: RecommendedWatcher,
}

impl Watcher {
    /// Loads `dir` into the registry, then keeps it loaded as files change.
    /// Returns the first load's report with the watcher.
    pub async fn start(
        registry: Arc<Registry>,
        dir: &Path,
        validate: ValidateOptions,
        opts: WatchOptions,
        shutdown: CancellationToken,
    ) -> Result<(Self, ReloadReport), WatchError> {
        let (changes_tx, changes) = mpsc::unbounded_channel::<()>();
        let mut notify = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            match res {
                Ok(event) if is_relevant(&event) => {
                    let _ = changes_tx.send(());
                }
                Ok(_) => {}
                // An overflowed queue or similar: a full rescan catches up.
                Err(e) => {
                    tracing::warn!(error = %e, "pipeline watcher error; rescanning");
                    let _ = changes_tx.send(());
                }
            }
        })
        .map_err(|source| WatchError::Watch {
            path: dir.to_owned(),
            source,
        })?;
        notify
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError::Watch {
                path: dir.to_owned(),
                source,
            })?;
        // Watch first, then load: a change during the first load is not lost.
        let report = registry.reload(dir, &validate).await?;
        log_report(&report);
        let (rescans_tx, rescans) = mpsc::channel(8);
        tokio::spawn(run(
            registry,
            dir.to_owned(),
            validate,
            opts,
            changes,
            rescans,
            shutdown,
        ));
        Ok((
            Self {
                rescans: rescans_tx,
                dir: dir.to_owned(),
                _notify: notify,
            },
            report,
        ))
    }

    /// The watched directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reloads the whole directory now (SIGHUP); `validate` replaces the
    /// validation options when the configuration changed them.
    pub async fn rescan(
        &self,
        validate: Option<ValidateOptions>,
    ) -> Result<ReloadReport, WatchError> {
        let (tx, rx) = oneshot::channel();
        self.rescans
            .send((validate, tx))
            .await
            .map_err(|_| WatchError::Stopped)?;
        Ok(rx.await.map_err(|_| WatchError::Stopped)??)
    }
}

/// Whether a file-system event can change what the directory holds.
fn is_relevant(event: &notify::Event) -> bool {
    let kind_matters = matches!(
        event.kind,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any
    );
    kind_matters && (event.paths.is_empty() || event.paths.iter().any(|p| is_pipeline_name(p)))
}

/// Pipeline file names, not editor leftovers (`.x.yaml.swp`, `x.yaml~`, `4913`).
fn is_pipeline_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if name.starts_with('.') || name.starts_with('#') || name.ends_with('~') {
        return false;
    }
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "toml" | "json")
    )
}

fn log_report(report: &ReloadReport) {
    for name in &report.updated {
        tracing::info!(pipeline = ?name, "pipeline loaded");
    }
    for name in &report.removed {
        tracing::info!(pipeline = ?name, "pipeline file removed; pipeline disabled");
    }
    for file in &report.rejected {
        tracing::warn!(file = %file.display(), "pipeline file rejected; `sluice errors` shows why");
    }
}

async fn run(
    registry: Arc<Registry>,
    dir: PathBuf,
    mut validate: ValidateOptions,
    opts: WatchOptions,
    mut changes: mpsc::UnboundedReceiver<()>,
    mut rescans: mpsc::Receiver<(Option<ValidateOptions>, RescanReply)>,
    shutdown: CancellationToken,
) {
    // (first change, latest change) of a burst not yet reloaded.
    let mut pending: Option<(Instant, Instant)> = None;
    loop {
        let deadline =
            pending.map(|(first, last)| (last + opts.debounce).min(first + opts.max_delay));
        tokio::select! {
            c = changes.recv() => {
                if c.is_none() {
                    return;
                }
                let now = Instant::now();
                pending = Some((pending.map_or(now, |(first, _)| first), now));
            }
            () = sleep_until_opt(deadline) => {
                pending = None;
                match registry.reload(&dir, &validate).await {
                    Ok(report) => log_report(&report),
                    Err(e) => tracing::error!(error = %e, "cannot reload the pipelines directory"),
                }
            }
            r = rescans.recv() => {
                let Some((new_validate, reply)) = r else { return };
                if let Some(v) = new_validate {
                    validate = v;
                }
                // The rescan reads everything, so it covers a burst in progress.
                pending = None;
                let result = registry.reload(&dir, &validate).await;
                if let Ok(report) = &result {
                    log_report(report);
                }
                let _ = reply.send(result);
            }
            () = shutdown.cancelled() => return,
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind, RenameMode};

    fn event(kind: EventKind, path: &str) -> notify::Event {
        notify::Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn editor_temp_files_and_reads_are_ignored() {
        let rename = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        assert!(is_relevant(&event(rename, "/p/hello.yaml")));
        assert!(is_relevant(&event(
            EventKind::Create(CreateKind::File),
            "/p/a.toml"
        )));
        assert!(!is_relevant(&event(
            EventKind::Create(CreateKind::File),
            "/p/4913"
        )));
        assert!(!is_relevant(&event(
            EventKind::Create(CreateKind::File),
            "/p/.hello.yaml.swp"
        )));
        assert!(!is_relevant(&event(
            EventKind::Create(CreateKind::File),
            "/p/hello.yaml~"
        )));
        assert!(!is_relevant(&event(
            EventKind::Access(notify::event::AccessKind::Any),
            "/p/hello.yaml"
        )));
    }
}
