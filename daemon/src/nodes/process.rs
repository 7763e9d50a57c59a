//! Child processes for `shell` and exec-plugin nodes.
//!
//! Every child runs in its own process group with a clean environment and no
//! file descriptors beyond 0-2, so a script cannot see the daemon's sockets,
//! database or credentials and can be stopped as a whole. Its stdout and
//! stderr are streamed to the node log line by line while a capped copy is
//! kept for the node's output.
//!
//! Stopping a group: SIGTERM to the group, up to [`TERM_GRACE`] for it to go,
//! then SIGKILL. That happens on cancel, and also when the script itself exits
//! while processes it started still run in its group: they are the node's and
//! must not outlive it (a process that really should, detaches with `setsid`).
//!
//! The group id is the leader's pid. While any member lives the kernel keeps
//! that id reserved, so signalling the group cannot reach a stranger; only in
//! the instant after the last member is reaped could the id be recycled,
//! which needs the whole pid space to wrap around in between.

use std::future::Future;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sluice_shared::model::node::RetryIf;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::time::Instant;

use super::{LogSink, NodeContext};
use crate::attempt_log::MAX_LINE_BYTES;
use crate::fdlimit;
use crate::secrets::Redactor;

/// How long a process group gets between SIGTERM and SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(2);

/// How long output pipes may stay open once the group is gone (a process that
/// left the group with `setsid` can hold them forever).
const PIPE_GRACE: Duration = Duration::from_secs(2);

/// How often a stopping group is checked.
const GROUP_POLL: Duration = Duration::from_millis(10);

/// Bytes kept past a cap before redacting, so a secret that straddles the cap
/// is still recognised whole and masked instead of leaking its first half.
const REDACT_SLACK: usize = 16 * 1024;

/// Longest "last stderr line" quoted in error messages.
const LAST_LINE_CHARS: usize = 300;

/// Upper bound for marking descriptors close-on-exec when `close_range` is unavailable.
const FALLBACK_MAX_FD: libc::c_int = 1024;

/// How long starting a child may keep failing for want of file descriptors
/// (waiting with backoff) before the attempt fails, retryably.
const SPAWN_EXHAUSTION_LIMIT: Duration = Duration::from_secs(30);

/// The umask children start with; `NO_UMASK`: the daemon's own.
static CHILD_UMASK: AtomicU32 = AtomicU32::new(NO_UMASK);
const NO_UMASK: u32 = u32::MAX;

/// Gives node processes `mask` as their umask, where the daemon itself runs
/// with `own`. sluiced runs with 077 so its own files are private, but
/// scripts should create files as the operator's shell (or the unit's
/// `UMask=`) would, so they get the umask sluiced was started with. When the
/// two are the same (a unit with `UMask=0077`), children simply inherit it.
pub fn set_child_umask(mask: u32, own: u32) {
    let differs = if mask == own { NO_UMASK } else { mask };
    CHILD_UMASK.store(differs, Ordering::Relaxed);
}

/// What to run and how.
#[derive(Debug, Default)]
pub struct Spec {
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// The node's own variables, set last (they win over everything else).
    pub env: Vec<(String, String)>,
    /// Names copied from the daemon's environment when set there.
    pub inherit_env: Vec<String>,
    /// Working directory (else the daemon's).
    pub workdir: Option<PathBuf>,
    /// Bytes written to stdin, which is then closed; `None` gives `/dev/null`.
    pub stdin: Option<Vec<u8>>,
    /// Whether stdout lines go to the log (a plugin's stdout is its JSON output, not a log).
    pub log_stdout: bool,
    /// Bytes of stdout kept.
    pub stdout_cap: usize,
    /// Bytes of stderr kept.
    pub stderr_cap: usize,
}

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// It exited with this code.
    Exited(i32),
    /// A signal that sluice did not send killed it.
    Signalled(i32),
    /// The attempt was cancelled and the group stopped.
    Cancelled,
}

/// A finished child: how it ended and what it printed.
#[derive(Debug)]
pub struct Finished {
    /// How it ended.
    pub end: End,
    /// Its stdout, capped.
    pub stdout: Captured,
    /// Its stderr, capped.
    pub stderr: Captured,
}

/// One output stream, capped.
#[derive(Debug)]
pub struct Captured {
    bytes: Vec<u8>,
    total: u64,
    cap: usize,
    last_line: Option<String>,
}

impl Captured {
    /// An empty capture keeping up to `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Self {
            bytes: Vec::new(),
            total: 0,
            cap,
            last_line: None,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        let room = (self.cap + REDACT_SLACK).saturating_sub(self.bytes.len());
        self.bytes
            .extend_from_slice(&chunk[..room.min(chunk.len())]);
    }

    fn note_line(&mut self, line: &str) {
        let line = line.trim();
        if !line.is_empty() {
            self.last_line = Some(line.chars().take(LAST_LINE_CHARS).collect());
        }
    }

    /// Whether the stream was longer than the cap.
    pub fn truncated(&self) -> bool {
        self.total > self.cap as u64
    }

    /// Everything the stream carried, when it fit under the cap.
    pub fn complete_bytes(&self) -> Option<&[u8]> {
        (!self.truncated()).then_some(self.bytes.as_slice())
    }

    /// The last non-empty line (unredacted; callers redact before showing it).
    pub fn last_line(&self) -> Option<&str> {
        self.last_line.as_deref()
    }

    /// The kept text, lossily decoded, secrets masked, with a marker when cut.
    pub fn text(&self, redactor: &Redactor) -> String {
        let decoded = String::from_utf8_lossy(&self.bytes);
        let mut text = redactor.redact(&decoded).into_owned();
        if self.truncated() {
            let mut cut = self.cap.min(text.len());
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push_str(&format!(
                "\n[truncated: {} bytes in all, the first {} kept]",
                self.total, self.cap
            ));
        }
        text
    }
}

/// Whether a failed exit should be retried. With no `retry_if.exit_codes`
/// every non-zero exit is retryable (the retry policy then decides how often);
/// listing codes narrows retries to exactly those.
pub fn exit_code_retryable(retry_if: &RetryIf, code: i32) -> bool {
    retry_if.exit_codes.is_empty() || retry_if.exit_codes.contains(&code)
}

/// A signal's conventional name (`SIGKILL`), or its number.
pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("signal {signal}"),
    };
    name.to_owned()
}

/// Runs a child to its end (or until the attempt is cancelled), streaming its
/// output to `ctx.log`. An error means it could not be started.
pub async fn run(ctx: &NodeContext, spec: Spec) -> io::Result<Finished> {
    let mut stdout_cap = Captured::new(spec.stdout_cap);
    let mut stderr_cap = Captured::new(spec.stderr_cap);
    if ctx.cancel.is_cancelled() {
        return Ok(Finished {
            end: End::Cancelled,
            stdout: stdout_cap,
            stderr: stderr_cap,
        });
    }

    let mut cmd = command(&spec, &ctx.base_env);
    // Last, so a node's own `env` cannot hide its processes from a restart.
    if let Some(marker) = &ctx.marker {
        cmd.env(super::ATTEMPT_MARKER, marker);
    }
    let Some(mut child) = spawn(ctx, &mut cmd).await? else {
        return Ok(Finished {
            end: End::Cancelled,
            stdout: stdout_cap,
            stderr: stderr_cap,
        });
    };
    let pgid = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .ok_or_else(|| io::Error::other("the child has no process id"))?;
    // From here until the group has been stopped, dropping this future (the
    // engine giving up on the attempt) must not leave the group running.
    let mut guard = GroupGuard { pgid, armed: true };
    if let Some(record) = &ctx.on_spawn {
        record(pgid, super::pgroup::start_time(pgid).unwrap_or(0));
    }

    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let stdout_log = spec.log_stdout.then_some(&ctx.log);

    let (cancelled, status) = {
        let io = async {
            tokio::join!(
                pump(stdout, "stdout", stdout_log, &mut stdout_cap),
                pump(stderr, "stderr", Some(&ctx.log), &mut stderr_cap),
                feed(stdin, spec.stdin.as_deref()),
            );
        };
        tokio::pin!(io);
        let mut io_done = false;

        // 1. Until the leader exits or the attempt is cancelled. An exit that
        //    races with a cancel wins: the script's own result is the truth.
        let (cancelled, reaped) = pumping(&mut io, &mut io_done, async {
            tokio::select! {
                biased;
                status = child.wait() => (false, Some(status)),
                () = ctx.cancel.cancelled() => (true, None),
            }
        })
        .await;

        // 2. Stop what is left of the group, reaping the leader, while still
        //    reading its output so a process blocked on a full pipe can act
        //    on SIGTERM.
        if cancelled {
            ctx.log
                .note("cancelled: stopping the process group (SIGTERM, then SIGKILL after 2 s)")
                .await;
        }
        let (status, leftovers) =
            pumping(&mut io, &mut io_done, stop_group(&mut child, pgid, reaped)).await;
        guard.armed = false;
        if leftovers && !cancelled {
            ctx.log
                .note("processes left running in the node's process group were stopped")
                .await;
        }

        // 3. Collect the rest of the output. Only a process that escaped the
        //    group can still hold the pipes; it does not get to stall the node.
        if !io_done && tokio::time::timeout(PIPE_GRACE, io.as_mut()).await.is_err() {
            ctx.log
                .note("stopped reading output: a process outside the node's process group still holds stdout or stderr open")
                .await;
        }
        (cancelled, status?)
    };

    Ok(Finished {
        end: if cancelled {
            End::Cancelled
        } else {
            end_of(status)
        },
        stdout: stdout_cap,
        stderr: stderr_cap,
    })
}

/// Starts the child. Out of file descriptors (EMFILE/ENFILE) is waited out
/// with backoff, noted once in the node log, for up to
/// [`SPAWN_EXHAUSTION_LIMIT`]; `None`: the attempt was cancelled meanwhile.
async fn spawn(ctx: &NodeContext, cmd: &mut Command) -> io::Result<Option<Child>> {
    let started = Instant::now();
    let mut backoff = fdlimit::Backoff::default();
    loop {
        // Right before the spawn (again on every retry): a descriptor some
        // thread opened without close-on-exec meanwhile must not reach the
        // child. A descriptor opened between this call and the spawn still
        // could; every descriptor sluice opens itself is close-on-exec.
        mark_inherited_fds_cloexec();
        let e = match cmd.spawn() {
            Ok(child) => return Ok(Some(child)),
            Err(e) => e,
        };
        if !fdlimit::is_exhaustion(&e) || started.elapsed() >= SPAWN_EXHAUSTION_LIMIT {
            return Err(e);
        }
        let (pause, first) = backoff.failed();
        if first {
            tracing::warn!(run = %ctx.run, node = %ctx.node, error = %e, "cannot start a node process yet: out of file descriptors; retrying");
            ctx.log
                .note(&format!(
                    "cannot start the process yet ({e}); retrying for up to {} s",
                    SPAWN_EXHAUSTION_LIMIT.as_secs()
                ))
                .await;
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = ctx.cancel.cancelled() => return Ok(None),
        }
    }
}

fn end_of(status: ExitStatus) -> End {
    match (status.code(), status.signal()) {
        (Some(code), _) => End::Exited(code),
        (None, Some(signal)) => End::Signalled(signal),
        // wait() reports only exits and deaths by signal; keep a sane value anyway.
        (None, None) => End::Exited(-1),
    }
}

fn command(spec: &Spec, base_env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(&spec.program);
    // Layers, later ones winning: nothing of the daemon's own environment,
    // then the daemon's base set (PATH, ...), then names the node asked to
    // inherit, then the node's own variables.
    cmd.args(&spec.args).env_clear();
    cmd.envs(base_env.iter().map(|(k, v)| (k, v)));
    for name in &spec.inherit_env {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    if let Some(dir) = &spec.workdir {
        cmd.current_dir(dir);
    }
    cmd.stdin(if spec.stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0)
    .kill_on_drop(true);
    let umask = CHILD_UMASK.load(Ordering::Relaxed);
    // Without code to run between fork and exec, std starts the child with
    // posix_spawn (vfork-like: the daemon's page tables are not copied, which
    // made fork most of a shell step's cost). Descriptors are sealed
    // close-on-exec in the parent just before, so the child still starts
    // with only 0, 1 and 2 (tests/statedir.rs checks both ways). Only a umask other
    // than the daemon's own needs the closure, and with it the fd sweep
    // comes along as a second guard.
    if umask == NO_UMASK {
        // Instead of the sweep in the child, `spawn` seals descriptors in the
        // parent (one system call) right before each spawn.
        return cmd;
    }
    // SAFETY: the closure runs in the forked child between fork and exec,
    // where only async-signal-safe functions may be called. It makes raw
    // `close_range`/`fcntl`/`umask` system calls on integer arguments and
    // nothing else: no allocation, no locks, no panics.
    unsafe {
        cmd.pre_exec(move || {
            mark_inherited_fds_cloexec();
            libc::umask(umask as libc::mode_t);
            Ok(())
        });
    }
    cmd
}

/// Marks every descriptor the daemon inherited above 2 close-on-exec (they
/// stay usable by the daemon). Call once at start: a parent may hand down
/// descriptors without the flag (a shell's, a build tool's jobserver pipe),
/// and children started by posix_spawn must not inherit them.
pub fn seal_inherited_descriptors() {
    mark_inherited_fds_cloexec();
}

/// Marks every descriptor above 2 close-on-exec, in the child before exec
/// (and in the daemon before each posix_spawn and once at start).
///
/// Close-on-exec rather than closing: std reports a failed `exec` (a missing
/// interpreter) to the parent through a close-on-exec pipe that is open at this
/// point; closing it would turn "No such file or directory" into a child that
/// aborts. With `CLOSE_RANGE_CLOEXEC` every descriptor is closed by the
/// successful exec itself, so the program starts with only 0, 1 and 2.
fn mark_inherited_fds_cloexec() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a raw system call with integer arguments (Linux 5.11+).
        let done = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        } == 0;
        if done {
            return;
        }
    }
    for fd in 3..FALLBACK_MAX_FD {
        // SAFETY: fcntl on a descriptor that is not open fails with EBADF and
        // has no other effect; FD_CLOEXEC is the only descriptor flag.
        unsafe {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
}

/// Sends `signal` to the group; true when some process in it received it.
fn signal_group(pgid: i32, signal: libc::c_int) -> bool {
    // kill(-1) and kill(0) would address every process or our own group.
    if pgid <= 1 {
        return false;
    }
    // SAFETY: kill has no memory-safety preconditions; a negative pid names the group.
    let sent = unsafe { libc::kill(-pgid, signal) } == 0;
    // EPERM: the group exists but someone in it changed credentials; it is still alive.
    sent || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether any process is left in the group (an unreaped zombie counts).
fn group_alive(pgid: i32) -> bool {
    signal_group(pgid, 0)
}

/// SIGTERM to the group, [`TERM_GRACE`] to go, then SIGKILL; the leader is
/// reaped on the way (`reaped`: it already was). Returns its exit status and
/// whether anything was there to stop.
async fn stop_group(
    child: &mut Child,
    pgid: i32,
    reaped: Option<io::Result<ExitStatus>>,
) -> (io::Result<ExitStatus>, bool) {
    // An unreaped leader counts as a member even as a zombie, so this only
    // says "nothing there" when the leader was reaped and nobody else is left.
    if !signal_group(pgid, libc::SIGTERM) {
        let status = match reaped {
            Some(status) => status,
            None => child.wait().await,
        };
        return (status, false);
    }
    let deadline = Instant::now() + TERM_GRACE;
    let status = match reaped {
        Some(status) => status,
        None => match tokio::time::timeout_at(deadline, child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                signal_group(pgid, libc::SIGKILL);
                child.wait().await
            }
        },
    };
    // The leader is reaped; whatever answers now is a live member (or a
    // zombie orphan its new parent has not collected yet).
    while group_alive(pgid) {
        if Instant::now() >= deadline {
            signal_group(pgid, libc::SIGKILL);
            break;
        }
        tokio::time::sleep(GROUP_POLL).await;
    }
    (status, true)
}

/// SIGKILLs the group if the attempt is dropped before it was stopped.
struct GroupGuard {
    pgid: i32,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            signal_group(self.pgid, libc::SIGKILL);
        }
    }
}

/// Drives `fut` to completion while also driving the output pumps.
async fn pumping<F: Future>(
    io: &mut Pin<&mut impl Future<Output = ()>>,
    io_done: &mut bool,
    fut: F,
) -> F::Output {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            biased;
            out = &mut fut => return out,
            () = io.as_mut(), if !*io_done => *io_done = true,
        }
    }
}

/// Writes the input and closes stdin.
async fn feed(stdin: Option<ChildStdin>, data: Option<&[u8]>) {
    let (Some(mut pipe), Some(data)) = (stdin, data) else {
        return;
    };
    // A child that exits without reading its input breaks the pipe; that is
    // its business and shows in its exit status, not an error of ours.
    let _ = pipe.write_all(data).await;
    let _ = pipe.shutdown().await;
}

/// One line being assembled; bounded so a stream without newlines cannot grow memory.
#[derive(Default)]
struct LineBuf {
    bytes: Vec<u8>,
    cut: bool,
}

impl LineBuf {
    // LogSink cuts lines at MAX_LINE_BYTES after redacting; the slack lets it
    // see a secret that straddles the cut.
    const MAX: usize = MAX_LINE_BYTES + REDACT_SLACK;

    fn extend(&mut self, part: &[u8]) {
        let room = Self::MAX.saturating_sub(self.bytes.len());
        if part.len() > room {
            self.cut = true;
        }
        self.bytes.extend_from_slice(&part[..room.min(part.len())]);
    }

    fn take(&mut self) -> Option<String> {
        if self.bytes.is_empty() && !self.cut {
            return None;
        }
        let mut bytes = std::mem::take(&mut self.bytes);
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        if std::mem::take(&mut self.cut) && text.len() <= MAX_LINE_BYTES {
            text.push_str(" [line truncated]");
        }
        Some(text)
    }
}

/// Reads a stream to its end: each line to the log (when given) as it
/// arrives, every byte into the capture up to its cap.
async fn pump<R: AsyncRead + Unpin>(
    reader: Option<R>,
    stream: &str,
    log: Option<&LogSink>,
    capture: &mut Captured,
) {
    let Some(mut reader) = reader else {
        return;
    };
    let mut buf = vec![0u8; 8192];
    let mut line = LineBuf::default();
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // A read error on a pipe means the other end is gone: same as EOF.
            Err(_) => break,
        };
        let chunk = &buf[..n];
        capture.push(chunk);
        for part in chunk.split_inclusive(|b| *b == b'\n') {
            match part.strip_suffix(b"\n") {
                Some(body) => {
                    line.extend(body);
                    let text = line.take().unwrap_or_default();
                    emit(stream, log, capture, &text).await;
                }
                None => line.extend(part),
            }
        }
    }
    // A last line without a newline is still a line.
    if let Some(text) = line.take() {
        emit(stream, log, capture, &text).await;
    }
}

async fn emit(stream: &str, log: Option<&LogSink>, capture: &mut Captured, text: &str) {
    capture.note_line(text);
    if let Some(log) = log {
        log.line(stream, text).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::test_support;
    use serde_json::json;

    #[tokio::test]
    async fn pump_splits_lines_keeps_the_last_one_and_caps_the_capture() {
        let (ctx, mut rx) = test_support::context(json!({}), &[]);
        let input: &[u8] = b"one\r\ntwo\n\nthree without newline";
        let mut capture = Captured::new(8);
        pump(Some(input), "stdout", Some(&ctx.log), &mut capture).await;
        let lines: Vec<String> = test_support::drain(&mut rx)
            .into_iter()
            .map(|l| l.line)
            .collect();
        assert_eq!(lines, ["one", "two", "", "three without newline"]);
        assert_eq!(capture.last_line(), Some("three without newline"));
        assert!(capture.truncated());
        assert!(capture.complete_bytes().is_none());
        let text = capture.text(&Redactor::default());
        assert!(text.starts_with("one\r\ntwo"), "{text}");
        assert!(
            text.ends_with("[truncated: 31 bytes in all, the first 8 kept]"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_secret_straddling_the_cap_is_masked_not_half_shown() {
        let redactor = Redactor::new(["hunter22-secret".to_owned()]);
        let input: &[u8] = b"0123456hunter22-secret tail";
        let mut capture = Captured::new(10);
        pump(Some(input), "stdout", None, &mut capture).await;
        let text = capture.text(&redactor);
        assert!(!text.contains("hunt"), "{text}");
        assert!(text.starts_with("0123456***"), "{text}");
    }

    #[tokio::test]
    async fn endless_lines_are_bounded() {
        let (ctx, mut rx) = test_support::context(json!({}), &[]);
        let big = vec![b'x'; LineBuf::MAX * 2];
        let mut capture = Captured::new(16);
        pump(Some(big.as_slice()), "stdout", Some(&ctx.log), &mut capture).await;
        let lines = test_support::drain(&mut rx);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].line.ends_with("[line truncated]"));
        assert!(lines[0].line.len() < MAX_LINE_BYTES + 100);
    }

    #[test]
    fn exit_codes_retry_unless_narrowed() {
        let any = RetryIf::default();
        assert!(exit_code_retryable(&any, 1));
        let narrowed = RetryIf {
            exit_codes: vec![75],
            statuses: vec![],
        };
        assert!(exit_code_retryable(&narrowed, 75));
        assert!(!exit_code_retryable(&narrowed, 1));
        assert_eq!(signal_name(libc::SIGKILL), "SIGKILL");
        assert_eq!(signal_name(99), "signal 99");
    }

    #[test]
    fn never_signals_everyone() {
        assert!(!signal_group(0, 0));
        assert!(!signal_group(1, 0));
        assert!(!signal_group(-5, 0));
    }
}
