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
//!
//! The parent directory is watched too, for the directory's own name: deploy
//! tools swap a whole directory by renaming (`pipelines` → `pipelines.old`, a
//! new `pipelines` renamed in place), and an inotify watch stays with the old
//! inode. Before each reload the directory's identity is compared with the
//! one watched, and the watch is rebuilt on the new directory when it
//! changed. While the directory (or a file in it) cannot be read, the
//! registry keeps what it had and reloads are retried every
//! [`WatchOptions::retry`], so the error clears on its own once the cause is
//! gone (EMFILE, a directory briefly missing mid-swap).
//!
//! The debounce is written here rather than taken from
//! `notify-debouncer-mini`, which keeps only each event's path: it cannot
//! tell the `Access` events of a reload's own reads (notify's inotify backend
//! watches `IN_OPEN`) from edits, so every reload would schedule the next,
//! and it drops events without a path, which is how an overflowed inotify
//! queue asks for a rescan ([`notify::Event::need_rescan`]).

use std::os::unix::fs::MetadataExt;
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
    /// While the last reload could not read everything (or failed), reload
    /// again after this long even if nothing changes.
    pub retry: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        // Editors finish a rename-save within a few milliseconds; 100 ms of quiet
        // keeps save-to-active well under 300 ms while coalescing bursts.
        Self {
            debounce: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            retry: Duration::from_secs(5),
        }
    }
}

type RescanReply = oneshot::Sender<Result<ReloadReport, StoreError>>;

/// Watches a pipelines directory until dropped or shut down.
pub struct Watcher {
    rescans: mpsc::Sender<(Option<ValidateOptions>, RescanReply)>,
    dir: PathBuf,
}

/// A directory's identity: the same path may name another directory later.
type DirId = (u64, u64);

fn dir_id(dir: &Path) -> Option<DirId> {
    std::fs::metadata(dir)
        .ok()
        .filter(std::fs::Metadata::is_dir)
        .map(|m| (m.dev(), m.ino()))
}

/// The directory holding `dir` (`.` for a bare relative name).
fn parent_of(dir: &Path) -> PathBuf {
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// A live notify watch (dropping it stops notify's thread).
struct Watch {
    _notify: RecommendedWatcher,
    /// The directory watched, or `None` when only its parent is (it was missing).
    dir_id: Option<DirId>,
}

impl Watch {
    /// Watches `dir` and, when it can, its parent. Failing to watch `dir` is
    /// an error unless `parent_only`.
    fn new(
        dir: &Path,
        changes: &mpsc::UnboundedSender<()>,
        parent_only: bool,
    ) -> Result<Self, notify::Error> {
        let tx = changes.clone();
        let watched = dir.to_owned();
        let mut notify = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            match res {
                Ok(event) if is_relevant(&event, &watched) => {
                    let _ = tx.send(());
                }
                Ok(_) => {}
                // An overflowed queue or similar: a full rescan catches up.
                Err(e) => {
                    tracing::warn!(error = %e, "pipeline watcher error; rescanning");
                    let _ = tx.send(());
                }
            }
        })?;
        // The identity is taken before the watch: were the directory swapped
        // in between, the next check sees a mismatch and watches again,
        // whereas the other order could pair the new identity with the old watch.
        let id = if parent_only { None } else { dir_id(dir) };
        if !parent_only {
            notify.watch(dir, RecursiveMode::NonRecursive)?;
        }
        let parent = parent_of(dir);
        if let Err(e) = notify.watch(&parent, RecursiveMode::NonRecursive) {
            // Edits are still seen; only a swapped directory is not followed
            // before the next SIGHUP.
            tracing::warn!(parent = %parent.display(), error = %e, "cannot watch the directory holding the pipelines directory; a replaced directory is followed only on SIGHUP");
        }
        Ok(Self {
            _notify: notify,
            dir_id: id,
        })
    }
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
        let watch = Watch::new(dir, &changes_tx, false).map_err(|source| WatchError::Watch {
            path: dir.to_owned(),
            source,
        })?;
        let (rescans_tx, rescans) = mpsc::channel(8);
        let mut task = Task {
            registry,
            dir: dir.to_owned(),
            validate,
            opts,
            changes_tx,
            watch: Some(watch),
            retry_at: None,
        };
        // Watch first, then load: a change during the first load is not lost.
        let report = task.reload().await?;
        log_report(&report);
        tokio::spawn(task.run(changes, rescans, shutdown));
        Ok((
            Self {
                rescans: rescans_tx,
                dir: dir.to_owned(),
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

/// Whether a file-system event can change what the directory holds: a
/// pipeline file in it, or the directory itself (renamed, deleted, created
/// — seen by its own watch or its parent's).
fn is_relevant(event: &notify::Event, dir: &Path) -> bool {
    if event.need_rescan() {
        return true;
    }
    let kind_matters = matches!(
        event.kind,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any
    );
    kind_matters
        && (event.paths.is_empty()
            || event.paths.iter().any(|p| {
                (p.parent() == Some(dir) && is_pipeline_name(p))
                    || (p.file_name().is_some() && p.file_name() == dir.file_name())
            }))
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
    // Once per change of a file's problems: a SIGHUP or an unrelated edit
    // does not repeat it.
    for file in &report.newly_rejected {
        tracing::warn!(file = %file.display(), "pipeline file rejected; `sluice errors` shows why");
    }
}

/// The watcher's task: owns the notify watch so it can rebuild it.
struct Task {
    registry: Arc<Registry>,
    dir: PathBuf,
    validate: ValidateOptions,
    opts: WatchOptions,
    changes_tx: mpsc::UnboundedSender<()>,
    watch: Option<Watch>,
    /// When to reload again although nothing changed (the last one was incomplete).
    retry_at: Option<Instant>,
}

impl Task {
    /// Watches the directory now at the path when it is not the one watched.
    fn follow(&mut self) {
        let now = dir_id(&self.dir);
        if self.watch.as_ref().is_some_and(|w| w.dir_id == now) {
            return;
        }
        match Watch::new(&self.dir, &self.changes_tx, now.is_none()) {
            Ok(w) => {
                if now.is_some() && self.watch.is_some() {
                    tracing::info!(dir = %self.dir.display(), "the pipelines directory was replaced; watching the new one");
                }
                self.watch = Some(w);
            }
            // Keep the old watch (if any); the retry tries again.
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot watch the pipelines directory; retrying");
            }
        }
    }

    async fn reload(&mut self) -> Result<ReloadReport, StoreError> {
        self.follow();
        let result = self.registry.reload(&self.dir, &self.validate).await;
        let complete = matches!(&result, Ok(r) if r.unreadable.is_empty())
            && self.watch.as_ref().is_some_and(|w| w.dir_id.is_some());
        self.retry_at = (!complete).then(|| Instant::now() + self.opts.retry);
        result
    }

    async fn run(
        mut self,
        mut changes: mpsc::UnboundedReceiver<()>,
        mut rescans: mpsc::Receiver<(Option<ValidateOptions>, RescanReply)>,
        shutdown: CancellationToken,
    ) {
        // (first change, latest change) of a burst not yet reloaded.
        let mut pending: Option<(Instant, Instant)> = None;
        loop {
            let debounced = pending
                .map(|(first, last)| (last + self.opts.debounce).min(first + self.opts.max_delay));
            let deadline = match (debounced, self.retry_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
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
                    match self.reload().await {
                        Ok(report) => log_report(&report),
                        Err(e) => tracing::error!(error = %e, "cannot reload the pipelines directory"),
                    }
                }
                r = rescans.recv() => {
                    let Some((new_validate, reply)) = r else { return };
                    if let Some(v) = new_validate {
                        self.validate = v;
                    }
                    // The rescan reads everything, so it covers a burst in progress.
                    pending = None;
                    let result = self.reload().await;
                    if let Ok(report) = &result {
                        log_report(report);
                    }
                    let _ = reply.send(result);
                }
                () = shutdown.cancelled() => return,
            }
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

    fn relevant(e: &notify::Event) -> bool {
        is_relevant(e, Path::new("/p"))
    }

    #[test]
    fn editor_temp_files_and_reads_are_ignored() {
        let rename = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        assert!(relevant(&event(rename, "/p/hello.yaml")));
        assert!(relevant(&event(
            EventKind::Create(CreateKind::File),
            "/p/a.toml"
        )));
        assert!(!relevant(&event(
            EventKind::Create(CreateKind::File),
            "/p/4913"
        )));
        assert!(!relevant(&event(
            EventKind::Create(CreateKind::File),
            "/p/.hello.yaml.swp"
        )));
        assert!(!relevant(&event(
            EventKind::Create(CreateKind::File),
            "/p/hello.yaml~"
        )));
        assert!(!relevant(&event(
            EventKind::Access(notify::event::AccessKind::Any),
            "/p/hello.yaml"
        )));
    }

    /// An overflowed queue names no path; it must still cause a full rescan.
    #[test]
    fn a_rescan_request_without_paths_counts() {
        let overflow = notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert!(overflow.paths.is_empty());
        assert!(relevant(&overflow));
        assert!(!relevant(&notify::Event::new(EventKind::Other)));
    }

    #[test]
    fn the_directory_itself_counts_and_its_neighbours_do_not() {
        let rename = EventKind::Modify(ModifyKind::Name(RenameMode::From));
        // The directory renamed away (its own watch) or back (the parent's).
        assert!(relevant(&event(rename, "/p")));
        assert!(relevant(&event(
            EventKind::Create(CreateKind::Folder),
            "/p"
        )));
        // A pipeline-looking file beside the directory, seen by the parent's watch.
        assert!(!relevant(&event(
            EventKind::Create(CreateKind::File),
            "/x.yaml"
        )));
        assert!(!relevant(&event(
            EventKind::Create(CreateKind::Folder),
            "/p.old"
        )));
        // A bare relative directory: its parent is watched as ".".
        let dir = Path::new("pipelines");
        assert_eq!(parent_of(dir), PathBuf::from("."));
        assert!(is_relevant(&event(rename, "./pipelines"), dir));
        assert!(is_relevant(&event(rename, "pipelines/a.yaml"), dir));
        assert!(!is_relevant(&event(rename, "./a.yaml"), dir));
    }
}
