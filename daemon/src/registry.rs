//! The pipelines the daemon knows: loaded from the pipelines directory, each
//! valid file stored as a version, each invalid one reported while the
//! previous version stays active. Triggers and the socket API read from here.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use sluice_shared::Diagnostic;
use sluice_shared::Pipeline;
use sluice_shared::document::DocPath;
use sluice_shared::event::Event;
use sluice_shared::loader::{FileKind, is_pipeline_path, load_set, read_pipeline_text};
use sluice_shared::validate::ValidateOptions;
use tokio::sync::broadcast;

use sluice_shared::model::trigger::WebhookAuth;

use crate::secrets::{KeyLengths, MIN_AUTH_KEY_LEN, Secrets};
use crate::store::{Store, StoreError, VersionId};

/// One known pipeline.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The active definition.
    pub pipeline: Arc<Pipeline>,
    /// The file it came from.
    pub source: PathBuf,
    /// Its stored version.
    pub version_id: VersionId,
    /// Its version number (1, 2, ...).
    pub version: i64,
    /// Not disabled by an operator.
    pub enabled: bool,
    /// Its file still exists (a deleted file disables the pipeline).
    pub present: bool,
}

impl Entry {
    /// Whether triggers may start runs of it.
    pub fn runnable(&self) -> bool {
        self.enabled && self.present
    }
}

/// What a reload changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Pipelines added or changed (new versions).
    pub updated: Vec<String>,
    /// Pipelines whose file disappeared.
    pub removed: Vec<String>,
    /// Files rejected, with their problems.
    pub rejected: Vec<PathBuf>,
    /// Of `rejected`, the files whose problems are new or changed since the
    /// previous reload (logged once per change, not at every reload).
    pub newly_rejected: Vec<PathBuf>,
    /// The directory or files that could not be read (an I/O error other
    /// than "not found"); what was loaded from them stays as it was.
    pub unreadable: Vec<PathBuf>,
}

/// What listing the pipelines directory found.
#[derive(Debug, Default)]
struct Listing {
    /// Pipeline files, sorted, with their metadata.
    files: Vec<(PathBuf, std::fs::Metadata)>,
    /// Entries named like pipeline files whose metadata cannot be read.
    unreadable: Vec<(PathBuf, std::io::Error)>,
}

/// Pipeline files with their text, or why their content is unusable.
type Sources = Vec<(PathBuf, Result<String, String>)>;

/// Reads the listed files: their texts (or why their content is unusable),
/// files refused for their permissions, and files that cannot be read now.
fn read_listing(listing: Listing) -> (Sources, Vec<Diagnostic>, Vec<Diagnostic>) {
    let mut sources = Vec::with_capacity(listing.files.len());
    let mut refused: Vec<Diagnostic> = Vec::new();
    let mut unreadable = listing.unreadable;
    for (f, meta) in listing.files {
        if let Some(why) = unsafe_permissions(&f, &meta) {
            let mut d = Diagnostic::error(&DocPath::root(), why);
            d.file = f.clone();
            refused.push(d);
            continue;
        }
        match read_pipeline_text(&f) {
            Ok(text) => sources.push((f, Ok(text))),
            // Deleted since it was listed: as if it had not been.
            Err(e)
                if e.io()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) => {}
            Err(sluice_shared::loader::ReadError::Io(e)) => unreadable.push((f, e)),
            // The file's content is the problem: reported like invalid YAML.
            Err(e) => sources.push((f, Err(e.to_string()))),
        }
    }
    let unreadable: Vec<Diagnostic> = unreadable
        .iter()
        .map(|(f, e)| {
            io_diagnostic(
                f,
                "pipeline file",
                e,
                "its loaded version (if any) stays active",
            )
        })
        .collect();
    (sources, refused, unreadable)
}

/// Lists the pipeline files of `dir`. Failing to list it at all is an error;
/// an entry that vanished meanwhile (or a dangling link) is simply absent,
/// and one that cannot be examined for another reason is kept aside so its
/// pipeline is not taken for removed.
fn list_dir(dir: &Path) -> std::io::Result<Listing> {
    let mut listing = Listing::default();
    for entry in std::fs::read_dir(dir)? {
        // A failure part-way (EIO, a directory swapped under us) makes the
        // whole listing untrustworthy: missing entries would read as deletions.
        let path = entry?.path();
        if !is_pipeline_path(&path) {
            continue;
        }
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => listing.files.push((path, meta)),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => listing.unreadable.push((path, e)),
        }
    }
    listing.files.sort_by(|a, b| a.0.cmp(&b.0));
    listing.unreadable.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(listing)
}

/// The error recorded for a path the file system would not let us read.
fn io_diagnostic(path: &Path, what: &str, e: &std::io::Error, keeps: &str) -> Diagnostic {
    let mut d = Diagnostic::error(
        &DocPath::root(),
        format!("cannot read {what} {}: {e}; {keeps}", path.display()),
    )
    .with_hint(Some(
        "fix the cause; the next change, SIGHUP or retry reloads it".to_owned(),
    ));
    d.file = path.to_owned();
    d
}

#[derive(Default)]
struct State {
    pipelines: BTreeMap<String, Entry>,
    errors: BTreeMap<PathBuf, Vec<Diagnostic>>,
    disabled: BTreeSet<String>,
}

/// The registry; cheap to share behind an `Arc`.
pub struct Registry {
    state: RwLock<State>,
    // One reload at a time: a slow reload holding older file contents must not
    // finish after a newer one and roll a pipeline back.
    reloading: tokio::sync::Mutex<()>,
    store: Store,
    events: broadcast::Sender<Event>,
    /// Pipeline changes alone, for listeners that care about nothing else
    /// (schedules, the audit trail): on the engine's bus they would wake for
    /// every event of every run.
    changes: broadcast::Sender<Event>,
    /// The secrets configured, when known: webhook triggers naming others are
    /// pointed out as their pipeline loads.
    secret_names: RwLock<Option<BTreeSet<String>>>,
    /// The configured secrets' lengths as credentials: webhook triggers naming
    /// one too short for their `auth` are errors (their deliveries get a 401).
    key_lengths: RwLock<BTreeMap<String, KeyLengths>>,
}

/// The secrets a pipeline's webhook triggers name that are too short to
/// authenticate for the trigger's `auth`, with why.
fn weak_webhook_secrets(
    p: &Pipeline,
    lengths: &BTreeMap<String, KeyLengths>,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for t in &p.triggers {
        let sluice_shared::model::Trigger::Webhook(w) = t else {
            continue;
        };
        let Some(secret) = w.webhook.secret.as_ref() else {
            continue;
        };
        for name in secret.names() {
            let Some(l) = lengths.get(name) else { continue };
            let why = match w.webhook.auth {
                WebhookAuth::Hmac => match l.hmac {
                    None => Some("is a whsec_ value that is not valid base64".to_owned()),
                    Some(n) if n < MIN_AUTH_KEY_LEN => Some(format!(
                        "is an HMAC key of {n} bytes; at least {MIN_AUTH_KEY_LEN} are required"
                    )),
                    Some(_) => None,
                },
                WebhookAuth::Bearer if l.bearer < MIN_AUTH_KEY_LEN => Some(format!(
                    "is a bearer secret of {} bytes; at least {MIN_AUTH_KEY_LEN} are required",
                    l.bearer
                )),
                _ => None,
            };
            if let Some(why) = why
                && !out.iter().any(|(n, _)| n == name)
            {
                out.push((name.to_owned(), why));
            }
        }
    }
    out
}

fn weak_secret_message(secret: &str, why: &str) -> String {
    format!(
        "a webhook trigger names secret '{secret}', which {why}: it never authenticates, and deliveries it would sign are refused (401)"
    )
}

fn log_weak_secrets(p: &Pipeline, lengths: &BTreeMap<String, KeyLengths>) {
    for (secret, why) in weak_webhook_secrets(p, lengths) {
        tracing::error!(pipeline = %p.name, "pipeline '{}': {}", p.name, weak_secret_message(&secret, &why));
    }
}

/// The secrets a pipeline's webhook triggers name that are not configured.
fn missing_webhook_secrets(p: &Pipeline, known: &BTreeSet<String>) -> Vec<String> {
    let mut missing: Vec<String> = p
        .triggers
        .iter()
        .filter_map(|t| match t {
            sluice_shared::model::Trigger::Webhook(w) => w.webhook.secret.as_ref(),
            sluice_shared::model::Trigger::Cron(_) => None,
        })
        .flat_map(|s| s.names())
        .filter(|n| !known.contains(*n))
        .map(str::to_owned)
        .collect();
    missing.sort();
    missing.dedup();
    missing
}

fn warn_missing_secrets(p: &Pipeline, known: &BTreeSet<String>) {
    for secret in missing_webhook_secrets(p, known) {
        tracing::warn!(
            pipeline = %p.name,
            "a webhook trigger of pipeline '{}' names secret '{secret}', which is not configured: its deliveries are refused (500) until it is",
            p.name
        );
    }
}

/// Why a file may not be loaded even though it parses: someone else could change it.
fn unsafe_permissions(path: &Path, meta: &std::fs::Metadata) -> Option<String> {
    let mode = meta.mode() & 0o777;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if mode & 0o022 != 0 {
        return Some(format!(
            "refusing to load: the file is writable by {} (mode {mode:o}); run `chmod go-w {}`",
            if mode & 0o002 != 0 {
                "every user"
            } else {
                "its group"
            },
            path.display()
        ));
    }
    if meta.uid() != me && meta.uid() != 0 {
        return Some(format!(
            "refusing to load: the file belongs to uid {}, not to the daemon's user (uid {me}) or root",
            meta.uid()
        ));
    }
    None
}

impl Registry {
    /// An empty registry; operator choices are read from the store.
    pub async fn new(store: Store, events: broadcast::Sender<Event>) -> Result<Self, StoreError> {
        let disabled = store.disabled_pipelines().await?;
        Ok(Self {
            state: RwLock::new(State {
                disabled,
                ..State::default()
            }),
            reloading: tokio::sync::Mutex::new(()),
            store,
            events,
            changes: broadcast::channel(1024).0,
            secret_names: RwLock::new(None),
            key_lengths: RwLock::new(BTreeMap::new()),
        })
    }

    /// Sets the names of the configured secrets and warns about every present
    /// pipeline whose webhook trigger names another (its deliveries would get
    /// a 500 until the secret exists); later loads are checked as they happen.
    pub fn set_secret_names(&self, names: BTreeSet<String>) {
        let Ok(mut known) = self.secret_names.write() else {
            return;
        };
        if known.as_ref() == Some(&names) {
            return;
        }
        for entry in self.list().iter().filter(|e| e.present) {
            warn_missing_secrets(&entry.pipeline, &names);
        }
        *known = Some(names);
    }

    /// Takes the configured secrets' names and lengths (never their values):
    /// see [`Registry::set_secret_names`]; webhook triggers naming a secret
    /// too short to authenticate are logged as errors and reported by
    /// [`Registry::warnings`].
    pub fn set_secrets(&self, secrets: &Secrets) {
        let lengths = secrets.key_lengths();
        if let Ok(mut l) = self.key_lengths.write()
            && *l != lengths
        {
            for entry in self.list().iter().filter(|e| e.present) {
                log_weak_secrets(&entry.pipeline, &lengths);
            }
            *l = lengths;
        }
        self.set_secret_names(secrets.names());
    }

    /// Problems of loaded pipelines that do not stop them loading: webhook
    /// triggers naming secrets that are not configured (warnings; none until
    /// the secrets are known) or too short to authenticate (errors).
    pub fn warnings(&self) -> Vec<Diagnostic> {
        let lengths = self
            .key_lengths
            .read()
            .map(|l| l.clone())
            .unwrap_or_default();
        let mut out = Vec::new();
        for entry in self.list().iter().filter(|e| e.present) {
            for (secret, why) in weak_webhook_secrets(&entry.pipeline, &lengths) {
                let mut d = Diagnostic::error(&DocPath::root(), weak_secret_message(&secret, &why))
                    .with_hint(Some(format!(
                        "replace {secret} with at least {MIN_AUTH_KEY_LEN} random bytes (e.g. `openssl rand -base64 32`) and reload sluiced with SIGHUP"
                    )));
                d.file = entry.source.clone();
                out.push(d);
            }
        }
        let Some(known) = self.secret_names.read().ok().and_then(|k| k.clone()) else {
            return out;
        };
        for entry in self.list().iter().filter(|e| e.present) {
            for secret in missing_webhook_secrets(&entry.pipeline, &known) {
                let mut d = Diagnostic::warning(
                    &DocPath::root(),
                    format!(
                        "a webhook trigger names secret '{secret}', which is not configured: deliveries are refused (500) until it is"
                    ),
                )
                .with_hint(Some(format!(
                    "add {secret} to the secrets file (or $CREDENTIALS_DIRECTORY) and reload sluiced with SIGHUP"
                )));
                d.file = entry.source.clone();
                out.push(d);
            }
        }
        out
    }

    /// Reads every pipeline file in `dir` and applies the result.
    pub async fn reload(
        &self,
        dir: &Path,
        opts: &ValidateOptions,
    ) -> Result<ReloadReport, StoreError> {
        let _one_at_a_time = self.reloading.lock().await;
        let listing = match list_dir(dir) {
            Ok(listing) => listing,
            Err(e) => return Ok(self.keep_on_unreadable_dir(dir, &e)),
        };
        let (mut sources, refused, unreadable) = read_listing(listing);
        // Of two files claiming one name, the one that came later is in error:
        // files that already own a name go first (then name order).
        let owners: BTreeMap<PathBuf, String> = self.state.read().map_or_else(
            |_| BTreeMap::new(),
            |state| {
                state
                    .pipelines
                    .iter()
                    .filter(|(_, e)| e.present)
                    .map(|(name, e)| (e.source.clone(), name.clone()))
                    .collect()
            },
        );
        sources.sort_by_key(|(f, _)| !owners.contains_key(f));
        let set = load_set(&sources, opts);
        let mut report = ReloadReport::default();
        let mut seen_files: BTreeSet<PathBuf> = BTreeSet::new();
        let mut new_errors: BTreeMap<PathBuf, Vec<Diagnostic>> = BTreeMap::new();
        // A name whose file cannot be read right now stays with that file:
        // another file claiming it meanwhile must not take it over.
        let mut held: BTreeMap<String, PathBuf> = BTreeMap::new();
        for d in unreadable {
            if let Some(name) = owners.get(&d.file) {
                held.insert(name.clone(), d.file.clone());
            }
            report.unreadable.push(d.file.clone());
            seen_files.insert(d.file.clone());
            new_errors.entry(d.file.clone()).or_default().push(d);
        }
        for d in refused {
            seen_files.insert(d.file.clone());
            new_errors.entry(d.file.clone()).or_default().push(d);
        }
        let mut valid: Vec<(PathBuf, Pipeline)> = Vec::new();
        for f in set.files {
            seen_files.insert(f.path.clone());
            if !f.is_valid() {
                new_errors.insert(f.path.clone(), f.diagnostics.clone());
                continue;
            }
            if f.kind == FileKind::Pipeline
                && let Some(p) = f.pipeline
            {
                if let Some(owner) = held.get(&p.name) {
                    let mut d = Diagnostic::error(
                        &DocPath::root(),
                        format!(
                            "pipeline name '{}' is already used by {}, which cannot be read right now",
                            p.name,
                            owner.display()
                        ),
                    );
                    d.file = f.path.clone();
                    new_errors.entry(f.path.clone()).or_default().push(d);
                    continue;
                }
                valid.push((f.path, p));
            }
        }
        // Store new versions before switching, so an entry always names a stored version.
        let mut stored = Vec::with_capacity(valid.len());
        for (path, p) in valid {
            let id = self.store.save_version(&p, Some(&path)).await?;
            let number = self
                .store
                .latest_version_number(&p.name)
                .await?
                .unwrap_or(1);
            stored.push((path, p, id, number));
        }
        let events = self.switch_to(stored, &seen_files, new_errors, &mut report);
        for e in events {
            self.announce(e);
        }
        Ok(report)
    }

    /// Receives every pipeline change (`PipelineChanged`) from now on; the
    /// engine's bus carries them too, among the runs' events.
    pub fn subscribe_changes(&self) -> broadcast::Receiver<Event> {
        self.changes.subscribe()
    }

    /// Sends `event` on the engine's bus, and on the changes bus if it is a pipeline change.
    fn announce(&self, event: Event) {
        if matches!(event, Event::PipelineChanged { .. }) {
            let _ = self.changes.send(event.clone());
        }
        let _ = self.events.send(event);
    }

    /// Switches the registry to the stored versions of this reload, marks
    /// pipelines whose file is gone as removed and records the rejected
    /// files; returns the events to announce.
    fn switch_to(
        &self,
        stored: Vec<(PathBuf, Pipeline, VersionId, i64)>,
        seen_files: &BTreeSet<PathBuf>,
        new_errors: BTreeMap<PathBuf, Vec<Diagnostic>>,
        report: &mut ReloadReport,
    ) -> Vec<Event> {
        let mut events = Vec::new();
        let Ok(mut state) = self.state.write() else {
            return events;
        };
        let present: BTreeSet<String> = stored.iter().map(|(_, p, _, _)| p.name.clone()).collect();
        let loaded_from: BTreeSet<PathBuf> = stored.iter().map(|(f, _, _, _)| f.clone()).collect();
        for (path, p, id, number) in stored {
            let name = p.name.clone();
            let enabled = !state.disabled.contains(&name);
            let changed = state
                .pipelines
                .get(&name)
                .is_none_or(|e| e.version_id != id || !e.present);
            let added = !state.pipelines.contains_key(&name);
            let pipeline = Arc::new(p);
            state.pipelines.insert(
                name.clone(),
                Entry {
                    pipeline: Arc::clone(&pipeline),
                    source: path,
                    version_id: id,
                    version: number,
                    enabled,
                    present: true,
                },
            );
            if changed {
                if let Some(known) = self.secret_names.read().ok().and_then(|k| k.clone()) {
                    warn_missing_secrets(&pipeline, &known);
                }
                if let Ok(lengths) = self.key_lengths.read() {
                    log_weak_secrets(&pipeline, &lengths);
                }
                report.updated.push(name.clone());
                events.push(Event::PipelineChanged {
                    name,
                    version: Some(number),
                    enabled,
                    change: if added { "added" } else { "updated" }.into(),
                });
            }
        }
        // A pipeline whose file is gone is disabled; one whose file is now invalid keeps its version.
        for (name, entry) in state.pipelines.iter_mut() {
            if present.contains(name) || !entry.present {
                continue;
            }
            // Listed but unreadable, refused or invalid: not removed (a file
            // now defining another name did remove this one). A file that
            // vanished between listing and reading was not recorded.
            if seen_files.contains(&entry.source) && !loaded_from.contains(&entry.source) {
                continue;
            }
            entry.present = false;
            report.removed.push(name.clone());
            events.push(Event::PipelineChanged {
                name: name.clone(),
                version: Some(entry.version),
                enabled: false,
                change: "removed".into(),
            });
        }
        for (file, diagnostics) in &new_errors {
            if state.errors.get(file) != Some(diagnostics) {
                // The same lines `sluice validate` prints, so the journal says why.
                for d in diagnostics {
                    tracing::warn!("{d}");
                }
                events.push(Event::ConfigError {
                    file: file.display().to_string(),
                    diagnostics: diagnostics.clone(),
                });
                report.newly_rejected.push(file.clone());
            }
            report.rejected.push(file.clone());
        }
        state.errors = new_errors;
        events
    }

    /// The directory cannot be listed: every pipeline stays as it was (a
    /// failed read is not a deletion) and the error is recorded for the
    /// directory until a later reload can list it.
    fn keep_on_unreadable_dir(&self, dir: &Path, e: &std::io::Error) -> ReloadReport {
        let d = io_diagnostic(
            dir,
            "the pipelines directory",
            e,
            "the pipelines loaded before stay as they were",
        );
        let report = ReloadReport {
            unreadable: vec![dir.to_owned()],
            ..ReloadReport::default()
        };
        let diagnostics = vec![d];
        let changed = {
            let Ok(mut state) = self.state.write() else {
                return report;
            };
            if state.errors.get(dir) == Some(&diagnostics) {
                false
            } else {
                state.errors.insert(dir.to_owned(), diagnostics.clone());
                true
            }
        };
        // Logged and announced once per distinct error, not on every retry.
        if changed {
            tracing::error!(dir = %dir.display(), error = %e, "cannot read the pipelines directory; keeping the pipelines loaded before");
            let _ = self.events.send(Event::ConfigError {
                file: dir.display().to_string(),
                diagnostics,
            });
        }
        report
    }

    /// A pipeline by name.
    pub fn get(&self, name: &str) -> Option<Entry> {
        self.state.read().ok()?.pipelines.get(name).cloned()
    }

    /// Every known pipeline, by name.
    pub fn list(&self) -> Vec<Entry> {
        self.state
            .read()
            .map(|s| s.pipelines.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Files currently rejected, with their problems.
    pub fn errors(&self) -> Vec<Diagnostic> {
        self.state
            .read()
            .map(|s| s.errors.values().flatten().cloned().collect())
            .unwrap_or_default()
    }

    /// Enables or disables a pipeline (remembered across restarts).
    pub async fn set_enabled(
        &self,
        name: &str,
        enabled: bool,
        by: Option<&str>,
    ) -> Result<bool, StoreError> {
        if self.get(name).is_none() {
            return Ok(false);
        }
        self.store.set_pipeline_enabled(name, enabled, by).await?;
        let version = {
            let Ok(mut state) = self.state.write() else {
                return Ok(false);
            };
            if enabled {
                state.disabled.remove(name);
            } else {
                state.disabled.insert(name.to_owned());
            }
            state.pipelines.get_mut(name).map(|e| {
                e.enabled = enabled;
                e.version
            })
        };
        self.announce(Event::PipelineChanged {
            name: name.to_owned(),
            version,
            enabled,
            change: if enabled { "enabled" } else { "disabled" }.into(),
        });
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    async fn registry(dir: &Path) -> (Registry, broadcast::Receiver<Event>) {
        let store = Store::open(&dir.join("s.db"), crate::store::Durability::Normal)
            .await
            .unwrap();
        let (tx, rx) = broadcast::channel(64);
        (Registry::new(store, tx).await.unwrap(), rx)
    }

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    #[tokio::test]
    async fn valid_changes_become_versions_and_invalid_ones_keep_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("p");
        std::fs::create_dir(&pdir).unwrap();
        let (reg, _rx) = registry(dir.path()).await;
        let opts = ValidateOptions::default();
        let file = pdir.join("hello.yaml");
        write(
            &file,
            "nodes:\n  - id: a\n    kind: shell\n    run: echo 1\n",
        );
        let r = reg.reload(&pdir, &opts).await.unwrap();
        assert_eq!(r.updated, vec!["hello"]);
        assert_eq!(reg.get("hello").unwrap().version, 1);
        write(
            &file,
            "nodes:\n  - id: a\n    kind: shell\n    run: echo 2\n",
        );
        reg.reload(&pdir, &opts).await.unwrap();
        assert_eq!(reg.get("hello").unwrap().version, 2);
        write(&file, "nodes:\n  - id: a\n    kind: shel\n");
        let r = reg.reload(&pdir, &opts).await.unwrap();
        assert_eq!(r.rejected, vec![file.clone()]);
        assert_eq!(
            reg.get("hello").unwrap().version,
            2,
            "the previous version keeps running"
        );
        assert!(reg.errors()[0].message.contains("unknown node kind 'shel'"));
        std::fs::remove_file(&file).unwrap();
        let r = reg.reload(&pdir, &opts).await.unwrap();
        assert_eq!(r.removed, vec!["hello"]);
        assert!(!reg.get("hello").unwrap().runnable());
        assert!(reg.errors().is_empty());
    }

    #[tokio::test]
    async fn webhook_secrets_that_are_not_configured_are_pointed_out() {
        let dir = tempfile::tempdir().unwrap();
        let pdir = dir.path().join("p");
        std::fs::create_dir(&pdir).unwrap();
        let (reg, _rx) = registry(dir.path()).await;
        let file = pdir.join("hook.yaml");
        write(
            &file,
            "triggers:\n  - webhook: { auth: hmac, secret: [hook_key, hook_key_next] }\nnodes:\n  - { id: a, kind: shell, run: echo }\n",
        );
        reg.reload(&pdir, &ValidateOptions::default())
            .await
            .unwrap();
        assert!(reg.warnings().is_empty(), "nothing to compare with yet");
        reg.set_secret_names(BTreeSet::from(["hook_key".to_owned()]));
        let warnings = reg.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].file, file);
        assert!(!warnings[0].is_error());
        assert!(
            warnings[0].message.contains("secret 'hook_key_next'"),
            "{}",
            warnings[0].message
        );
        assert!(
            reg.get("hook").unwrap().runnable(),
            "a warning does not stop the pipeline"
        );
        reg.set_secret_names(BTreeSet::from([
            "hook_key".to_owned(),
            "hook_key_next".to_owned(),
        ]));
        assert!(reg.warnings().is_empty());
    }

    #[tokio::test]
    async fn files_others_can_write_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (reg, _rx) = registry(dir.path()).await;
        let file = dir.path().join("open.yaml");
        write(&file, "nodes:\n  - id: a\n    kind: shell\n    run: echo\n");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        reg.reload(dir.path(), &ValidateOptions::default())
            .await
            .unwrap();
        assert!(reg.get("open").is_none());
        assert!(
            reg.errors()[0].message.contains("writable by every user"),
            "{:?}",
            reg.errors()
        );
    }

    #[tokio::test]
    async fn disabling_is_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("job.yaml");
        write(&file, "nodes:\n  - id: a\n    kind: shell\n    run: echo\n");
        {
            let (reg, _rx) = registry(dir.path()).await;
            reg.reload(dir.path(), &ValidateOptions::default())
                .await
                .unwrap();
            assert!(reg.set_enabled("job", false, Some("alice")).await.unwrap());
            assert!(!reg.set_enabled("nope", false, None).await.unwrap());
        }
        let (reg, _rx) = registry(dir.path()).await;
        reg.reload(dir.path(), &ValidateOptions::default())
            .await
            .unwrap();
        assert!(!reg.get("job").unwrap().enabled);
    }

    const JOB: &str = "nodes:\n  - id: a\n    kind: shell\n    run: echo 1\n";

    /// `hello` loaded (version 1) from `p/hello.yaml`.
    async fn loaded(dir: &Path) -> (Registry, PathBuf, ValidateOptions) {
        let pdir = dir.join("p");
        std::fs::create_dir(&pdir).unwrap();
        let (reg, _rx) = registry(dir).await;
        write(&pdir.join("hello.yaml"), JOB);
        let opts = ValidateOptions::default();
        reg.reload(&pdir, &opts).await.unwrap();
        assert!(reg.get("hello").unwrap().runnable());
        (reg, pdir, opts)
    }

    #[tokio::test]
    async fn a_directory_that_cannot_be_read_keeps_the_loaded_set() {
        let dir = tempfile::tempdir().unwrap();
        let (reg, pdir, opts) = loaded(dir.path()).await;
        // Swapped for a regular file of the same name: ENOTDIR.
        let away = dir.path().join("p.old");
        std::fs::rename(&pdir, &away).unwrap();
        std::fs::write(&pdir, "not a directory").unwrap();
        let r = reg.reload(&pdir, &opts).await.unwrap();
        assert_eq!(r.unreadable, vec![pdir.clone()]);
        assert!(r.removed.is_empty(), "{r:?}");
        let hello = reg.get("hello").unwrap();
        assert!(hello.runnable(), "a failed read is not a deletion");
        assert_eq!(hello.version, 1);
        let errors = reg.errors();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].file, pdir);
        assert!(errors[0].is_error());
        assert!(
            errors[0].message.contains(&pdir.display().to_string())
                && errors[0].message.contains("Not a directory"),
            "names the path and the OS error: {}",
            errors[0].message
        );
        // Again: the same single error, still nothing removed.
        let r = reg.reload(&pdir, &opts).await.unwrap();
        assert!(r.removed.is_empty());
        assert_eq!(reg.errors().len(), 1);
        // Repaired, with an edit made meanwhile: the error clears and the edit loads.
        std::fs::remove_file(&pdir).unwrap();
        std::fs::rename(&away, &pdir).unwrap();
        write(&pdir.join("hello.yaml"), &JOB.replace("echo 1", "echo 2"));
        let r = reg.reload(&pdir, &opts).await.unwrap();
        assert!(r.unreadable.is_empty());
        assert_eq!(r.updated, vec!["hello"]);
        assert_eq!(reg.get("hello").unwrap().version, 2);
        assert!(reg.errors().is_empty(), "{:?}", reg.errors());
    }

    #[tokio::test]
    async fn a_missing_directory_keeps_the_loaded_set() {
        let dir = tempfile::tempdir().unwrap();
        let (reg, pdir, opts) = loaded(dir.path()).await;
        std::fs::rename(&pdir, dir.path().join("gone")).unwrap();
        let r = reg.reload(&pdir, &opts).await.unwrap();
        assert_eq!(r.unreadable, vec![pdir.clone()]);
        assert!(reg.get("hello").unwrap().runnable());
        assert!(
            reg.errors()[0]
                .message
                .contains("No such file or directory"),
            "{:?}",
            reg.errors()
        );
    }

    #[tokio::test]
    async fn a_file_that_cannot_be_read_keeps_its_pipeline_and_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let (reg, pdir, opts) = loaded(dir.path()).await;
        let file = pdir.join("hello.yaml");
        // A link to itself: ELOOP, which root cannot read past either.
        std::fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink("hello.yaml", &file).unwrap();
        // Another file claiming the name meanwhile must not take it over.
        write(
            &pdir.join("copy.yaml"),
            &format!("name: hello\n{}", JOB.replace("echo 1", "echo copy")),
        );
        write(&pdir.join("other.yaml"), JOB);
        let r = reg.reload(&pdir, &opts).await.unwrap();
        assert_eq!(r.unreadable, vec![file.clone()]);
        assert!(r.removed.is_empty(), "{r:?}");
        assert_eq!(r.updated, vec!["other"], "readable files still load");
        let hello = reg.get("hello").unwrap();
        assert!(hello.runnable());
        assert_eq!((hello.version, hello.source), (1, file.clone()));
        let errors = reg.errors();
        let unreadable = errors.iter().find(|d| d.file == file).unwrap();
        assert!(
            unreadable
                .message
                .contains("Too many levels of symbolic links"),
            "{}",
            unreadable.message
        );
        let copy = errors
            .iter()
            .find(|d| d.file == pdir.join("copy.yaml"))
            .unwrap();
        assert!(
            copy.message.contains("cannot be read right now"),
            "{}",
            copy.message
        );
        // Repaired: the file loads again and the copy is the usual duplicate.
        std::fs::remove_file(&file).unwrap();
        write(&file, &JOB.replace("echo 1", "echo 2"));
        let r = reg.reload(&pdir, &opts).await.unwrap();
        assert!(r.unreadable.is_empty());
        assert_eq!(reg.get("hello").unwrap().version, 2);
        assert!(reg.errors().iter().all(|d| d.file != file));
    }

    #[tokio::test]
    async fn a_file_naming_another_pipeline_removes_the_old_name() {
        let dir = tempfile::tempdir().unwrap();
        let (reg, pdir, opts) = loaded(dir.path()).await;
        write(&pdir.join("hello.yaml"), &format!("name: renamed\n{JOB}"));
        let r = reg.reload(&pdir, &opts).await.unwrap();
        assert_eq!(r.updated, vec!["renamed"]);
        assert_eq!(r.removed, vec!["hello"]);
        assert!(!reg.get("hello").unwrap().runnable());
    }

    const EMFILE_CHILD: &str = "SLUICE_TEST_EMFILE_CHILD";

    /// Runs in a process of its own (see the test below): it fills the
    /// descriptor table, which would break any test running beside it.
    #[tokio::test]
    #[ignore = "run by running_out_of_descriptors_keeps_the_loaded_set in a process of its own"]
    async fn emfile_child() {
        assert!(
            std::env::var_os(EMFILE_CHILD).is_some(),
            "only running_out_of_descriptors_keeps_the_loaded_set runs this"
        );
        let dir = tempfile::tempdir().unwrap();
        let (reg, pdir, opts) = loaded(dir.path()).await;
        // A low soft limit keeps the filling quick.
        // SAFETY: a valid resource and pointers to a live rlimit.
        unsafe {
            let mut lim: libc::rlimit = std::mem::zeroed();
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
            lim.rlim_cur = lim.rlim_cur.min(256);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
        let mut fill = Vec::new();
        let full = loop {
            match std::fs::File::open("/dev/null") {
                Ok(f) => fill.push(f),
                Err(e) => break e,
            }
            assert!(fill.len() < 100_000, "the descriptor limit was not reached");
        };
        assert_eq!(full.raw_os_error(), Some(libc::EMFILE), "{full}");
        let r = reg.reload(&pdir, &opts).await;
        drop(fill);
        let r = r.unwrap();
        assert_eq!(r.unreadable, vec![pdir.clone()]);
        assert!(r.removed.is_empty(), "{r:?}");
        assert!(reg.get("hello").unwrap().runnable());
        let errors = reg.errors();
        assert!(
            errors[0].message.contains("Too many open files"),
            "{errors:?}"
        );
        let r = reg.reload(&pdir, &opts).await.unwrap();
        assert!(r.unreadable.is_empty());
        assert!(reg.errors().is_empty(), "{:?}", reg.errors());
    }

    #[test]
    fn running_out_of_descriptors_keeps_the_loaded_set() {
        use std::io::Read;
        let exe = std::env::current_exe().unwrap();
        let mut child = std::process::Command::new(exe)
            .args([
                "registry::tests::emfile_child",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(EMFILE_CHILD, "1")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "timed out after 60 s waiting for the emfile_child test process (killed it)"
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        // It has exited, so its pipes end (its output is small).
        let mut out = String::new();
        let mut err = String::new();
        let _ = child.stdout.take().unwrap().read_to_string(&mut out);
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        assert!(status.success(), "{status}\n{out}\n{err}");
        assert!(
            out.contains("1 passed"),
            "the child ran the test:\n{out}\n{err}"
        );
    }
}
