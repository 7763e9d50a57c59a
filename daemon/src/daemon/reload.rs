//! Reloading a running daemon (what SIGHUP asks for): `sluiced.toml` read
//! again with the same flags, new limits and secrets applied, the pipelines
//! directory rescanned. What cannot be reloaded is logged and the daemon
//! keeps what it had; the service manager hears RELOADING=1, then READY=1
//! either way.

use crate::registry::ReloadReport;

use super::Handle;

/// What a reload did. Every problem is logged too.
#[derive(Debug, Default)]
pub struct ReloadOutcome {
    /// The rescan of the pipelines directory, when it ran to the end.
    pub pipelines: Option<ReloadReport>,
    /// What could not be reloaded (the configuration, the secrets, the
    /// rescan), one message each; the previous state stays for those.
    pub problems: Vec<String>,
}

impl Handle {
    /// Reloads as on SIGHUP. Limits change at once (usage counters and
    /// running runs are kept); webhook authentication uses the new secrets
    /// while node templates keep the ones the engine started with; a changed
    /// pipelines directory needs a restart. Reloads run one at a time.
    pub async fn reload(&self) -> ReloadOutcome {
        let inner = &self.inner;
        let manager = &inner.settings.service_manager;
        let mut validate = inner.reloading.lock().await;
        // Once a stop has begun the service manager must hear no READY=1 again.
        if inner.stop_triggers.is_cancelled() {
            return ReloadOutcome {
                pipelines: None,
                problems: vec!["the daemon is stopping; nothing reloaded".into()],
            };
        }
        if let Err(e) = manager.reloading() {
            tracing::warn!(error = %e, "cannot tell the service manager about the reload");
        }
        let mut problems = Vec::new();
        match inner.settings.reread() {
            Ok(new) => {
                inner.engine.limits().reload(new.config.limits.clone());
                match new.load_secrets() {
                    Ok(secrets) => {
                        inner.registry.set_secrets(&secrets);
                        inner.webhook.set_secrets(secrets);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "secrets not reloaded; keeping the previous ones");
                        problems.push(format!("secrets not reloaded: {e}"));
                    }
                }
                if new.paths.pipelines != inner.settings.paths.pipelines {
                    tracing::warn!(dir = %new.paths.pipelines.display(), "the pipelines directory changed; restart sluiced to use it");
                }
                *validate = new.validate_options();
            }
            Err(e) => {
                tracing::error!(error = %e, "sluiced.toml not reloaded; keeping the previous configuration");
                problems.push(format!("sluiced.toml not reloaded: {e}"));
            }
        }
        let rescanned = match &inner.watcher {
            Some(w) => w
                .rescan(Some(validate.clone()))
                .await
                .map_err(|e| e.to_string()),
            None => inner
                .registry
                .reload(&inner.settings.paths.pipelines, &validate)
                .await
                .map_err(|e| e.to_string()),
        };
        let pipelines = match rescanned {
            Ok(report) => Some(report),
            Err(e) => {
                tracing::error!(error = %e, "rescanning the pipelines directory failed");
                problems.push(format!("rescanning the pipelines directory failed: {e}"));
                None
            }
        };
        // Ready again whether or not the new files were good: the previous
        // versions keep running (RELOADING=1 … READY=1).
        let status = crate::watchdog::status_line(&inner.engine, &inner.registry).await;
        // A stop begun meanwhile had the last word (STOPPING=1): no READY=1 after it.
        if !inner.stop_triggers.is_cancelled()
            && let Err(e) = manager.ready(&status)
        {
            tracing::warn!(error = %e, "cannot tell the service manager the reload is done");
        }
        ReloadOutcome {
            pipelines,
            problems,
        }
    }
}
