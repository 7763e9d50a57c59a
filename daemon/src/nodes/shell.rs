//! `shell`: run a script with `<shell> -c` in its own process group, a clean
//! environment and no inherited descriptors (see [`super::process`]).
//!
//! Template values in `run` never become script text: each is passed in an
//! environment variable (`SLUICE_T_<n>`) that the rendered script references,
//! so the shell expands it without parsing it, and secrets stay out of argv
//! (`/proc/<pid>/cmdline` is readable by every local user; the environment only
//! by the same user). `env` values and `workdir` are rendered as plain text
//! (they are never parsed by a shell). Processes the script leaves running in
//! its group are stopped when it exits.

use std::path::PathBuf;

use serde_json::{Value, json};
use sluice_shared::model::node::ShellNode;
use sluice_shared::template::{Escape, SHELL_VALUE_PREFIX};

use super::process::{self, End, Spec, exit_code_retryable, signal_name};
use super::{Execute, MAX_CAPTURE, NodeContext, NodeError, Outcome, render};
use crate::nodes::render_error;

/// The interpreter when the node names none.
pub const DEFAULT_SHELL: &str = "/bin/sh";

impl Execute for ShellNode {
    /// Runs the script once. A non-zero exit fails the attempt; it is
    /// retryable when `retry_if.exit_codes` is empty (any failure may be
    /// transient) or lists the code (then only listed codes are retried).
    /// Death by a signal sluice did not send is retryable; a cancelled attempt,
    /// a missing workdir and an interpreter that cannot start are not.
    async fn execute(&self, ctx: &NodeContext) -> Result<Outcome, NodeError> {
        let result = run(self, ctx).await;
        // The node ends its attempt's log: the engine relies on that.
        ctx.log.finish().await;
        result
    }
}

async fn run(node: &ShellNode, ctx: &NodeContext) -> Result<Outcome, NodeError> {
    let rendered = ctx
        .templates
        .render_shell(&node.run, &ctx.template)
        .map_err(|e| render_error(ctx, "run", &e))?;
    let mut env = Vec::with_capacity(node.env.len() + rendered.env.len());
    for (name, value) in &node.env {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(NodeError::fatal(format!(
                "invalid environment variable name '{name}' in `env`"
            )));
        }
        if name.starts_with(SHELL_VALUE_PREFIX) {
            return Err(NodeError::fatal(format!(
                "`env` may not set '{name}': the {SHELL_VALUE_PREFIX} prefix carries template values into `run`"
            )));
        }
        env.push((
            name.clone(),
            render(ctx, &format!("env.{name}"), value, Escape::Text)?,
        ));
    }
    let workdir = match &node.workdir {
        Some(dir) => Some(checked_workdir(ctx, render(ctx, "workdir", dir, Escape::Text)?).await?),
        None => None,
    };
    // Last, so nothing inherited can stand in for a value.
    env.extend(rendered.env);
    let script = rendered.script;
    let shell = node.shell.as_deref().unwrap_or(DEFAULT_SHELL);
    let script_len = script.len();
    let spec = Spec {
        program: shell.into(),
        args: vec!["-c".into(), script],
        env,
        inherit_env: node.inherit_env.clone(),
        workdir,
        stdin: None,
        log_stdout: true,
        stdout_cap: MAX_CAPTURE,
        stderr_cap: MAX_CAPTURE,
    };
    let finished = process::run(ctx, spec).await.map_err(|e| {
        let why = if e.raw_os_error() == Some(libc::E2BIG) {
            format!(
                "the rendered script ({script_len} bytes) or one of its values is too long to pass to a process (128 KiB each, about 2 MiB in all)"
            )
        } else {
            e.to_string()
        };
        let message = format!(
            "cannot start the shell '{}': {why}",
            ctx.redactor.redact(shell)
        );
        // Out of file descriptors passes; the retry policy gets another go.
        if crate::fdlimit::is_exhaustion(&e) {
            NodeError::retryable(message)
        } else {
            NodeError::fatal(message)
        }
    })?;

    let stdout = finished.stdout.text(&ctx.redactor);
    let stderr = finished.stderr.text(&ctx.redactor);
    let last_stderr = finished
        .stderr
        .last_line()
        .map(|l| ctx.redactor.redact(l).into_owned());
    match finished.end {
        End::Exited(0) => Ok(Outcome::Done(
            json!({ "exit_code": 0, "stdout": stdout, "stderr": stderr }),
        )),
        End::Exited(code) => {
            let output = json!({ "exit_code": code, "stdout": stdout, "stderr": stderr });
            let message = with_detail(format!("exit code {code}"), last_stderr);
            let error = if exit_code_retryable(&ctx.retry_if, code) {
                NodeError::retryable(message)
            } else {
                NodeError::fatal(message)
            };
            Err(error.with_output(output))
        }
        End::Signalled(signal) => {
            let name = signal_name(signal);
            let output = json!({ "exit_code": Value::Null, "signal": name, "stdout": stdout, "stderr": stderr });
            Err(
                NodeError::retryable(with_detail(format!("killed by {name}"), last_stderr))
                    .with_output(output),
            )
        }
        End::Cancelled => {
            let output = json!({ "exit_code": Value::Null, "stdout": stdout, "stderr": stderr });
            Err(NodeError::fatal("cancelled").with_output(output))
        }
    }
}

/// `message`, followed by the last line the process wrote to stderr, if any.
pub(crate) fn with_detail(message: String, last_stderr: Option<String>) -> String {
    match last_stderr {
        Some(line) => format!("{message}: {line}"),
        None => message,
    }
}

/// Checks the working directory up front: spawning in a missing one fails with
/// the same ENOENT as a missing interpreter, which would point at the wrong thing.
async fn checked_workdir(ctx: &NodeContext, dir: String) -> Result<PathBuf, NodeError> {
    let shown = ctx.redactor.redact(&dir).into_owned();
    match tokio::fs::metadata(&dir).await {
        Ok(meta) if meta.is_dir() => Ok(PathBuf::from(dir)),
        Ok(_) => Err(NodeError::fatal(format!(
            "workdir '{shown}' is not a directory"
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(NodeError::fatal(format!(
            "workdir '{shown}' does not exist"
        ))),
        Err(e) => Err(NodeError::fatal(format!(
            "cannot use workdir '{shown}': {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use serde_json::json;
    use sluice_shared::model::node::RetryIf;
    use tokio::time::Instant;

    use super::*;
    use crate::nodes::test_support::{ATTEMPT_SECS, Deadline, context, drain, lines_of};

    fn shell(run: &str) -> ShellNode {
        ShellNode {
            run: run.into(),
            ..ShellNode::default()
        }
    }

    fn done(outcome: Result<Outcome, NodeError>) -> Value {
        match outcome {
            Ok(Outcome::Done(v)) => v,
            other => panic!("expected Done, got {other:?}"),
        }
    }

    /// Waits (polling, with a deadline) until no process is left in the group.
    async fn assert_group_gone(pgid: i32) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // SAFETY: kill with signal 0 only checks for existence.
            let alive = unsafe { libc::kill(-pgid, 0) } == 0;
            if !alive {
                assert_eq!(
                    std::io::Error::last_os_error().raw_os_error(),
                    Some(libc::ESRCH)
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "process group {pgid} still has processes"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Reads log lines until one starts with `prefix`; returns the rest of it.
    async fn wait_for_line(
        rx: &mut tokio::sync::mpsc::Receiver<crate::nodes::LogMsg>,
        prefix: &str,
    ) -> String {
        loop {
            let msg = rx
                .recv()
                .await
                .expect("the log stays open while the node runs");
            let crate::nodes::LogMsg::Line(line) = msg else {
                continue;
            };
            if let Some(rest) = line.line.strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
    }

    #[tokio::test]
    async fn prints_output_exit_code_and_streams_lines_in_order() {
        let (ctx, mut rx) = context(json!({}), &[]);
        let node =
            shell("for i in 1 2 3; do echo line$i; done; echo warn >&2; printf 'no newline'");
        let out = done(
            node.execute(&ctx)
                .deadline(ATTEMPT_SECS, "the node attempt")
                .await,
        );
        assert_eq!(out["exit_code"], 0);
        assert_eq!(out["stdout"], "line1\nline2\nline3\nno newline");
        assert_eq!(out["stderr"], "warn\n");
        let lines = drain(&mut rx);
        let stdout: Vec<&str> = lines
            .iter()
            .filter(|l| l.stream == "stdout")
            .map(|l| l.line.as_str())
            .collect();
        assert_eq!(stdout, ["line1", "line2", "line3", "no newline"]);
        assert!(
            lines
                .iter()
                .any(|l| l.stream == "stderr" && l.line == "warn")
        );
        assert!(
            lines.windows(2).all(|w| w[0].seq < w[1].seq),
            "sequence numbers increase"
        );
    }

    #[tokio::test]
    async fn template_values_reach_the_script_as_data_in_and_out_of_quotes() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("pwned");
        let evil = format!("\"; touch {}; echo \"$(touch {0})", marker.display());
        let (ctx, _rx) = context(json!({ "inputs": { "evil": evil } }), &[]);
        let out = done(
            shell("echo {{ inputs.evil }}; echo \"[{{ inputs.evil }}]\"")
                .execute(&ctx)
                .deadline(ATTEMPT_SECS, "the node attempt")
                .await,
        );
        assert_eq!(out["stdout"], format!("{evil}\n[{evil}]\n"));
        assert!(!marker.exists(), "the input was executed");
    }

    #[tokio::test]
    async fn env_may_not_use_the_prefix_that_carries_values() {
        let (ctx, _rx) = context(json!({ "inputs": { "v": "x" } }), &[]);
        let node = ShellNode {
            env: [("SLUICE_T_0".to_owned(), "spoof".to_owned())]
                .into_iter()
                .collect(),
            ..shell("echo {{ inputs.v }}")
        };
        let err = node.execute(&ctx).await.unwrap_err();
        assert!(
            err.message.contains("may not set 'SLUICE_T_0'"),
            "{}",
            err.message
        );
        assert!(!err.retryable);
    }

    #[tokio::test]
    async fn environment_is_clean_layered_and_workdir_applies() {
        // Cargo sets these in every test process: stand-ins for the daemon's
        // own variables (NOTIFY_SOCKET and the like) that must not leak.
        assert!(
            std::env::var_os("CARGO_MANIFEST_DIR").is_some(),
            "run the tests under cargo"
        );
        let pkg = std::env::var("CARGO_PKG_NAME").expect("run the tests under cargo");
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _rx) = context(json!({ "inputs": { "name": "world; ls" } }), &[]);
        let node = ShellNode {
            run: "env | sed 's/^/env:/'; echo \"greeting=$GREETING\"; echo \"manifest=${CARGO_MANIFEST_DIR:-unset}\"; pwd".into(),
            env: [("GREETING".to_owned(), "hi {{ inputs.name }}".to_owned())].into_iter().collect(),
            inherit_env: vec!["CARGO_PKG_NAME".into(), "SLUICE_TEST_NEVER_SET".into()],
            workdir: Some(dir.path().to_string_lossy().into_owned()),
            ..ShellNode::default()
        };
        let out = done(
            node.execute(&ctx)
                .deadline(ATTEMPT_SECS, "the node attempt")
                .await,
        );
        let stdout = out["stdout"].as_str().unwrap();
        let lines: Vec<&str> = stdout.lines().collect();
        assert!(lines.contains(&"greeting=hi world; ls"), "{stdout}");
        assert!(lines.contains(&"manifest=unset"), "{stdout}");
        assert!(
            lines.contains(&format!("env:CARGO_PKG_NAME={pkg}").as_str()),
            "{stdout}"
        );
        assert!(lines.iter().any(|l| l.starts_with("env:PATH=")), "{stdout}");
        let names: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("env:"))
            .filter_map(|l| l.split('=').next())
            .collect();
        // Whatever the shell adds itself (PWD, ...) is fine; nothing else is.
        for name in names {
            assert!(
                [
                    "PATH",
                    "GREETING",
                    "CARGO_PKG_NAME",
                    "PWD",
                    "OLDPWD",
                    "SHLVL",
                    "_"
                ]
                .contains(&name),
                "unexpected variable {name} in {stdout}"
            );
        }
        let cwd = dir.path().canonicalize().unwrap();
        assert_eq!(
            lines.last().copied(),
            Some(cwd.to_str().unwrap()),
            "{stdout}"
        );
    }

    #[tokio::test]
    async fn no_descriptor_beyond_stderr_reaches_the_script() {
        // A descriptor the daemon holds without close-on-exec (as a C library
        // might): plain spawning would hand it to the child.
        let file = tempfile::tempfile().unwrap();
        // SAFETY: dup of a valid descriptor; the copy is closed below.
        let leaked = unsafe { libc::dup(file.as_raw_fd()) };
        assert!(leaked > 2);
        let (ctx, _rx) = context(json!({}), &[]);
        // `ls` lists its own descriptors: 0-2 as given, plus 3 for the
        // directory it is reading. Anything inherited would push that to 4+.
        let node = shell(&format!(
            "ls /proc/self/fd; if [ -e /proc/$$/fd/{leaked} ]; then echo leaked; else echo clean; fi"
        ));
        let out = node
            .execute(&ctx)
            .deadline(ATTEMPT_SECS, "the node attempt")
            .await;
        // SAFETY: closing the descriptor dup'ed above.
        unsafe { libc::close(leaked) };
        let out = done(out);
        let lines: Vec<&str> = out["stdout"].as_str().unwrap().lines().collect();
        assert_eq!(lines, ["0", "1", "2", "3", "clean"]);
    }

    #[tokio::test]
    async fn cancel_kills_the_whole_process_group() {
        let (ctx, mut rx) = context(json!({}), &[]);
        let node = shell("sleep 1000 & echo \"group $$\"; wait");
        let (result, pgid) = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::join!(node.execute(&ctx), async {
                let pgid: i32 = wait_for_line(&mut rx, "group ").await.parse().unwrap();
                ctx.cancel.cancel();
                pgid
            })
        })
        .await
        .expect("the attempt ends after cancel");
        let err = result.unwrap_err();
        assert_eq!(err.message, "cancelled");
        assert!(!err.retryable);
        assert_group_gone(pgid).await;
    }

    #[tokio::test]
    async fn cancel_escalates_to_sigkill_when_sigterm_is_ignored() {
        let (ctx, mut rx) = context(json!({}), &[]);
        let node = shell("trap '' TERM; sleep 1000 & echo \"group $$\"; wait");
        let (result, pgid) = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::join!(node.execute(&ctx), async {
                let pgid: i32 = wait_for_line(&mut rx, "group ").await.parse().unwrap();
                ctx.cancel.cancel();
                pgid
            })
        })
        .await
        .expect("SIGKILL ends the attempt");
        assert_eq!(result.unwrap_err().message, "cancelled");
        assert_group_gone(pgid).await;
    }

    #[tokio::test]
    async fn processes_left_behind_are_stopped_when_the_script_exits() {
        let (ctx, mut rx) = context(json!({}), &[]);
        let node = shell("sleep 1000 & echo $$");
        let out = tokio::time::timeout(Duration::from_secs(30), node.execute(&ctx))
            .await
            .expect("a background child does not hold the node open");
        let pgid: i32 = done(out)["stdout"]
            .as_str()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_group_gone(pgid).await;
        assert!(
            lines_of(&mut rx, "sluice")
                .iter()
                .any(|l| l.contains("were stopped"))
        );
    }

    #[tokio::test]
    async fn secrets_are_redacted_in_log_output_and_errors() {
        let (ctx, mut rx) = context(json!({}), &[("token", "s3cr3t-value")]);
        let node =
            shell("echo token is {{ secrets.token }}; echo bad {{ secrets.token }} >&2; exit 2");
        let err = node
            .execute(&ctx)
            .deadline(ATTEMPT_SECS, "the node attempt")
            .await
            .unwrap_err();
        assert_eq!(err.message, "exit code 2: bad ***");
        let output = err.output.unwrap();
        assert_eq!(output["stdout"], "token is ***\n");
        assert_eq!(output["stderr"], "bad ***\n");
        let lines = drain(&mut rx);
        assert!(lines.iter().any(|l| l.line == "token is ***"));
        assert!(lines.iter().all(|l| !l.line.contains("s3cr3t")));
    }

    #[tokio::test]
    async fn a_failed_exit_carries_output_and_follows_the_retry_rule() {
        let (mut ctx, _rx) = context(json!({}), &[]);
        let node = shell("echo out; echo first >&2; echo 'last words' >&2; exit 3");
        let err = node
            .execute(&ctx)
            .deadline(ATTEMPT_SECS, "the node attempt")
            .await
            .unwrap_err();
        assert_eq!(err.message, "exit code 3: last words");
        assert!(
            err.retryable,
            "with no exit_codes listed every failure is retryable"
        );
        let output = err.output.unwrap();
        assert_eq!(output["exit_code"], 3);
        assert_eq!(output["stdout"], "out\n");
        ctx.retry_if = RetryIf {
            exit_codes: vec![4],
            statuses: vec![],
        };
        assert!(
            !node
                .execute(&ctx)
                .deadline(ATTEMPT_SECS, "the node attempt")
                .await
                .unwrap_err()
                .retryable
        );
        ctx.retry_if = RetryIf {
            exit_codes: vec![3],
            statuses: vec![],
        };
        assert!(
            node.execute(&ctx)
                .deadline(ATTEMPT_SECS, "the node attempt")
                .await
                .unwrap_err()
                .retryable
        );
    }

    #[tokio::test]
    async fn death_by_signal_is_retryable_and_named() {
        let (ctx, _rx) = context(json!({}), &[]);
        let err = shell("kill -KILL $$")
            .execute(&ctx)
            .deadline(ATTEMPT_SECS, "the node attempt")
            .await
            .unwrap_err();
        assert!(err.retryable);
        assert!(err.message.contains("SIGKILL"), "{}", err.message);
        assert_eq!(err.output.unwrap()["signal"], "SIGKILL");
    }

    #[tokio::test]
    async fn missing_workdir_and_interpreter_are_clear_fatal_errors() {
        let (ctx, _rx) = context(json!({ "inputs": { "x": "abc" } }), &[]);
        let node = ShellNode {
            workdir: Some("/nonexistent/dir-{{ inputs.x }}".into()),
            ..shell("true")
        };
        let err = node
            .execute(&ctx)
            .deadline(ATTEMPT_SECS, "the node attempt")
            .await
            .unwrap_err();
        assert_eq!(err.message, "workdir '/nonexistent/dir-abc' does not exist");
        assert!(!err.retryable);
        let node = ShellNode {
            shell: Some("/nonexistent/bin/zsh".into()),
            ..shell("true")
        };
        let err = node
            .execute(&ctx)
            .deadline(ATTEMPT_SECS, "the node attempt")
            .await
            .unwrap_err();
        assert!(
            err.message
                .starts_with("cannot start the shell '/nonexistent/bin/zsh': "),
            "{}",
            err.message
        );
        assert!(!err.retryable);
        let err = shell("echo {{ inputs.missing }}")
            .execute(&ctx)
            .await
            .unwrap_err();
        assert!(
            err.message.starts_with("cannot render `run`"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn captured_output_is_capped_and_marked() {
        let (ctx, mut rx) = context(json!({}), &[]);
        let out = done(
            shell("head -c 200000 /dev/zero | tr '\\0' a; echo")
                .execute(&ctx)
                .await,
        );
        let stdout = out["stdout"].as_str().unwrap();
        assert!(stdout.len() < MAX_CAPTURE + 100);
        assert!(
            stdout.ends_with("[truncated: 200001 bytes in all, the first 65536 kept]"),
            "{}",
            &stdout[stdout.len() - 80..]
        );
        let lines = lines_of(&mut rx, "stdout");
        assert_eq!(lines.len(), 1);
        assert!(lines[0].ends_with("[line truncated]"));
    }
}
