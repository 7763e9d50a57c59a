//! Exec plugins: any node kind that is not built in runs the executable
//! `sluice-node-<kind>` from the plugins directory. It reads one JSON document
//! on stdin (`node`, `attempt`, the rendered `config` and the run's `context`
//! without secrets), writes log lines to stderr and prints one JSON document on
//! stdout, which is the node's output. It runs like a shell script: own process
//! group, clean environment (only the daemon's base set), no inherited
//! descriptors, the group stopped on cancel (see [`super::process`]).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sluice_shared::model::node::PluginNode;

use super::process::{self, End, Spec, exit_code_retryable, signal_name};
use super::shell::with_detail;
use super::{Execute, MAX_CAPTURE, NodeContext, NodeError, Outcome, render_json};

/// Largest stdout (the JSON output) a plugin may print.
pub const MAX_PLUGIN_OUTPUT: usize = 10 * 1024 * 1024;

/// The executable's file name for a kind.
pub fn executable_name(kind: &str) -> String {
    format!("sluice-node-{kind}")
}

impl Execute for PluginNode {
    /// Runs the plugin once. A non-zero exit is retryable by the same rule as
    /// `shell` (any code when `retry_if.exit_codes` is empty, else the listed
    /// ones); a missing executable and invalid JSON output are not.
    async fn execute(&self, ctx: &NodeContext) -> Result<Outcome, NodeError> {
        let result = run(self, ctx).await;
        // The node ends its attempt's log: the engine relies on that.
        ctx.log.finish().await;
        result
    }
}

async fn run(node: &PluginNode, ctx: &NodeContext) -> Result<Outcome, NodeError> {
    // The kind becomes a file name: keep it from walking out of the directory.
    if node.kind.is_empty()
        || !node
            .kind
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(NodeError::fatal(format!(
            "invalid plugin kind '{}': only letters, digits, '-' and '_' are allowed",
            node.kind
        )));
    }
    let name = executable_name(&node.kind);
    let path = ctx.plugins_dir.join(&name);
    check_executable(&path).await?;

    let config = render_json(ctx, "config", &node.config)?;
    let input = json!({
        "node": ctx.node,
        "attempt": ctx.attempt,
        "config": config,
        "context": ctx.context_json(),
    });
    let mut stdin = serde_json::to_vec(&input)
        .map_err(|e| NodeError::fatal(format!("cannot encode the input for {name}: {e}")))?;
    stdin.push(b'\n');

    let spec = Spec {
        program: path.clone(),
        stdin: Some(stdin),
        log_stdout: false,
        stdout_cap: MAX_PLUGIN_OUTPUT,
        stderr_cap: MAX_CAPTURE,
        ..Spec::default()
    };
    let finished = process::run(ctx, spec).await.map_err(|e| {
        let message = format!("cannot start plugin {}: {e}", path.display());
        // Out of file descriptors passes; the retry policy gets another go.
        if crate::fdlimit::is_exhaustion(&e) {
            NodeError::retryable(message)
        } else {
            NodeError::fatal(message)
        }
    })?;

    let stderr = finished.stderr.text(&ctx.redactor);
    let last_stderr = finished
        .stderr
        .last_line()
        .map(|l| ctx.redactor.redact(l).into_owned());
    match finished.end {
        End::Exited(0) => {
            let Some(bytes) = finished.stdout.complete_bytes() else {
                return Err(NodeError::fatal(format!(
                    "plugin {name} printed more than {} MiB",
                    MAX_PLUGIN_OUTPUT / (1024 * 1024)
                )));
            };
            let output: Value = serde_json::from_slice(bytes).map_err(|e| {
                NodeError::fatal(format!("plugin {name} printed invalid JSON: {e}"))
            })?;
            Ok(Outcome::Done(ctx.redactor.redact_json(output)))
        }
        End::Exited(code) => {
            let message = with_detail(
                format!("plugin {name} failed with exit code {code}"),
                last_stderr,
            );
            let error = if exit_code_retryable(&ctx.retry_if, code) {
                NodeError::retryable(message)
            } else {
                NodeError::fatal(message)
            };
            Err(error.with_output(json!({ "exit_code": code, "stderr": stderr })))
        }
        End::Signalled(signal) => {
            let name_of_signal = signal_name(signal);
            let message = with_detail(
                format!("plugin {name} was killed by {name_of_signal}"),
                last_stderr,
            );
            Err(NodeError::retryable(message).with_output(
                json!({ "exit_code": Value::Null, "signal": name_of_signal, "stderr": stderr }),
            ))
        }
        End::Cancelled => Err(NodeError::fatal("cancelled")
            .with_output(json!({ "exit_code": Value::Null, "stderr": stderr }))),
    }
}

/// Refuses up front what spawning would report vaguely (ENOENT, EACCES).
async fn check_executable(path: &Path) -> Result<(), NodeError> {
    let shown = path.display();
    match tokio::fs::metadata(path).await {
        Ok(meta) if !meta.is_file() => Err(NodeError::fatal(format!(
            "plugin {shown} is not a regular file"
        ))),
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => Err(NodeError::fatal(format!(
            "plugin {shown} is not executable (chmod +x it)"
        ))),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(NodeError::fatal(format!(
            "plugin {shown} does not exist (no executable for this node kind)"
        ))),
        Err(e) => Err(NodeError::fatal(format!("cannot use plugin {shown}: {e}"))),
    }
}

/// The path a kind's executable would have (for messages and validation).
pub fn executable_path(plugins_dir: &Path, kind: &str) -> PathBuf {
    plugins_dir.join(executable_name(kind))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    use serde_json::json;
    use sluice_shared::model::node::RetryIf;

    use super::*;
    use crate::nodes::test_support::{ATTEMPT_SECS, Deadline, context, lines_of};

    /// Installs `script` as the plugin for `kind` in `dir`.
    fn install(dir: &Path, kind: &str, script: &str) {
        let path = executable_path(dir, kind);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Runs the plugin, retrying only the spawn failure "Text file busy": a
    /// parallel test forking while this one still had the script open for
    /// writing holds a writable descriptor to it until that child's exec.
    async fn execute(node: &PluginNode, ctx: &NodeContext) -> Result<Outcome, NodeError> {
        for _ in 0..100 {
            match node
                .execute(ctx)
                .deadline(ATTEMPT_SECS, "the node attempt")
                .await
            {
                Err(e) if e.message.contains("Text file busy") => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                other => return other,
            }
        }
        panic!("the plugin stayed busy");
    }

    fn plugin(kind: &str, config: Value) -> PluginNode {
        PluginNode {
            kind: kind.into(),
            config,
        }
    }

    #[tokio::test]
    async fn echoes_its_input_which_becomes_the_output() {
        let dir = tempfile::tempdir().unwrap();
        install(
            dir.path(),
            "echo",
            "#!/bin/sh\necho 'reading input' >&2\ncat\n",
        );
        let (mut ctx, mut rx) = context(
            json!({ "inputs": { "topic": "rust" } }),
            &[("key", "k3y-value")],
        );
        ctx.plugins_dir = dir.path().to_owned();
        let node = plugin(
            "echo",
            json!({ "q": "about {{ inputs.topic }}", "n": 2, "key": "{{ secrets.key }}" }),
        );
        let out = match execute(&node, &ctx).await {
            Ok(Outcome::Done(v)) => v,
            other => panic!("{other:?}"),
        };
        assert_eq!(out["node"], "n");
        assert_eq!(out["attempt"], 1);
        assert_eq!(out["config"]["q"], "about rust");
        assert_eq!(out["config"]["n"], 2);
        // The plugin gets the secret it was configured with; the stored output does not show it.
        assert_eq!(out["config"]["key"], "***");
        assert_eq!(out["context"], json!({ "inputs": { "topic": "rust" } }));
        assert_eq!(lines_of(&mut rx, "stderr"), ["reading input"]);
    }

    #[tokio::test]
    async fn a_failing_plugin_reports_its_code_and_last_stderr_line() {
        let dir = tempfile::tempdir().unwrap();
        install(
            dir.path(),
            "fail",
            "#!/bin/sh\necho 'step one' >&2\necho 'quota exceeded' >&2\nexit 3\n",
        );
        let (mut ctx, _rx) = context(json!({}), &[]);
        ctx.plugins_dir = dir.path().to_owned();
        let err = execute(&plugin("fail", Value::Null), &ctx)
            .await
            .unwrap_err();
        assert_eq!(
            err.message,
            "plugin sluice-node-fail failed with exit code 3: quota exceeded"
        );
        assert!(err.retryable);
        assert_eq!(err.output.unwrap()["exit_code"], 3);
        ctx.retry_if = RetryIf {
            exit_codes: vec![75],
            statuses: vec![],
        };
        assert!(
            !execute(&plugin("fail", Value::Null), &ctx)
                .await
                .unwrap_err()
                .retryable
        );
    }

    #[tokio::test]
    async fn garbage_on_stdout_is_a_fatal_error() {
        let dir = tempfile::tempdir().unwrap();
        install(
            dir.path(),
            "garbage",
            "#!/bin/sh\necho 'this is not json'\n",
        );
        let (mut ctx, _rx) = context(json!({}), &[]);
        ctx.plugins_dir = dir.path().to_owned();
        let err = execute(&plugin("garbage", Value::Null), &ctx)
            .await
            .unwrap_err();
        assert!(
            err.message
                .starts_with("plugin sluice-node-garbage printed invalid JSON: "),
            "{}",
            err.message
        );
        assert!(!err.retryable);
    }

    #[tokio::test]
    async fn missing_or_unusable_executables_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ctx, _rx) = context(json!({}), &[]);
        ctx.plugins_dir = dir.path().to_owned();
        let err = execute(&plugin("absent", Value::Null), &ctx)
            .await
            .unwrap_err();
        let path = executable_path(dir.path(), "absent");
        assert_eq!(
            err.message,
            format!(
                "plugin {} does not exist (no executable for this node kind)",
                path.display()
            )
        );
        assert!(!err.retryable);

        install(dir.path(), "plain", "#!/bin/sh\necho '{}'\n");
        let path = executable_path(dir.path(), "plain");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = execute(&plugin("plain", Value::Null), &ctx)
            .await
            .unwrap_err();
        assert_eq!(
            err.message,
            format!("plugin {} is not executable (chmod +x it)", path.display())
        );

        let err = execute(&plugin("../bin/sh", Value::Null), &ctx)
            .await
            .unwrap_err();
        assert!(
            err.message.starts_with("invalid plugin kind"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn cancel_stops_a_plugin_that_never_finishes() {
        let dir = tempfile::tempdir().unwrap();
        install(
            dir.path(),
            "hang",
            "#!/bin/sh\necho ready >&2\nexec sleep 1000\n",
        );
        let (mut ctx, mut rx) = context(json!({}), &[]);
        ctx.plugins_dir = dir.path().to_owned();
        let node = plugin("hang", Value::Null);
        let (result, ()) = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::join!(execute(&node, &ctx), async {
                while let Some(msg) = rx.recv().await {
                    if matches!(&msg, crate::nodes::LogMsg::Line(l) if l.line == "ready") {
                        break;
                    }
                }
                ctx.cancel.cancel();
            })
        })
        .await
        .expect("the attempt ends after cancel");
        assert_eq!(result.unwrap_err().message, "cancelled");
    }
}
