//! The daemon's own log: to stderr (in the journal's format when stderr is
//! the journal) and to rolling files in `[log] dir`.
//!
//! Under systemd, stderr is a stream to journald, which stamps every line
//! itself and splits at newlines; so there each event is one line, without our
//! timestamp, prefixed with its syslog priority (`<3>` error … `<7>` debug,
//! sd-daemon(3)) so `journalctl -p warning` filters it. The native journal
//! protocol (tracing-journald) would add structured fields but needs its own
//! socket, which the sandbox and the journal-stream detection already cover
//! well enough for an operator; the fields stay in the text (`run=12 node=x`).

use std::path::PathBuf;

use tracing::{Event, Level, Subscriber};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{Format, Full, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{Log, LogRotation};

/// The environment variable that overrides `[log] level`.
pub const LOG_ENV: &str = "SLUICE_LOG";

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// `[log] level` (or `SLUICE_LOG`) is not a filter.
    #[error("[log] level (or SLUICE_LOG) '{text}' is not a log filter: {message}")]
    Level {
        /// What was given.
        text: String,
        /// Why it is not a filter.
        message: String,
    },
    /// The log directory cannot be used.
    #[error("cannot write log files to {dir}: {message}")]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// What failed.
        message: String,
    },
    /// A global subscriber was already set.
    #[error("logging was already set up")]
    AlreadySet,
}

/// Keeps the file writer's thread; dropping it flushes what is buffered.
#[must_use = "dropping the guard stops the file writer"]
pub struct LogGuard {
    _files: Option<WorkerGuard>,
}

/// The filter `[log] level` asks for, unless `SLUICE_LOG` says otherwise.
pub fn filter(log: &Log) -> Result<EnvFilter, LoggingError> {
    let text = std::env::var(LOG_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| log.level.clone());
    EnvFilter::try_new(&text).map_err(|e| LoggingError::Level {
        text,
        message: e.to_string(),
    })
}

/// Checks `[log]` without installing anything (for `sluiced check-config`).
pub fn check(log: &Log) -> Result<(), LoggingError> {
    EnvFilter::try_new(&log.level).map_err(|e| LoggingError::Level {
        text: log.level.clone(),
        message: e.to_string(),
    })?;
    Ok(())
}

/// The rolling file appender for `[log]`, when a directory is set.
pub fn appender(log: &Log) -> Result<Option<RollingFileAppender>, LoggingError> {
    let Some(dir) = log.resolved_dir() else {
        return Ok(None);
    };
    let err = |message: String| LoggingError::Dir {
        dir: dir.clone(),
        message,
    };
    std::fs::create_dir_all(&dir).map_err(|e| err(e.to_string()))?;
    let rotation = match log.rotation {
        LogRotation::Hourly => Rotation::HOURLY,
        LogRotation::Daily => Rotation::DAILY,
        LogRotation::Never => Rotation::NEVER,
    };
    let mut builder = RollingFileAppender::builder()
        .rotation(rotation)
        .filename_prefix("sluiced")
        .filename_suffix("log");
    if log.keep > 0 {
        builder = builder.max_log_files(log.keep);
    }
    builder
        .build(&dir)
        .map(Some)
        .map_err(|e| err(e.to_string()))
}

/// Installs the global subscriber: stderr (journal format when stderr is the
/// journal) and, with `files` and a directory, rolling files written off the
/// async threads.
pub fn init(log: &Log, files: bool) -> Result<LogGuard, LoggingError> {
    let journal = crate::systemd::stderr_is_journal();
    let stderr_layer = if journal {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .event_format(JournalFormat::default())
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed()
    };
    let files = if files { appender(log)? } else { None };
    let (file_layer, guard) = match files {
        Some(files) => {
            let (writer, guard) = tracing_appender::non_blocking(files);
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(false)
                .event_format(OneLine(Format::default()));
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(filter(log)?)
        .with(stderr_layer)
        .with(file_layer)
        .try_init()
        .map_err(|_| LoggingError::AlreadySet)?;
    Ok(LogGuard { _files: guard })
}

use tracing_subscriber::Layer as _;

/// syslog priority of a level (sd-daemon(3) prefixes).
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Formats with `inner`, then makes the event one line: a newline inside a
/// message or field becomes a visible `\n`, so one event is one journal entry
/// and one file line.
fn one_line<S, N, F>(
    inner: &F,
    ctx: &FmtContext<'_, S, N>,
    event: &Event<'_>,
) -> Result<String, std::fmt::Error>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    let mut text = String::new();
    inner.format_event(ctx, Writer::new(&mut text), event)?;
    let body = text.trim_end_matches(['\n', '\r']);
    Ok(body.replace('\r', "\\r").replace('\n', "\\n"))
}

/// The journal's format: `<priority>target: message fields`, no timestamp.
pub struct JournalFormat(Format<Full, ()>);

impl Default for JournalFormat {
    fn default() -> Self {
        Self(
            Format::default()
                .without_time()
                .with_level(false)
                .with_ansi(false),
        )
    }
}

impl<S, N> FormatEvent<S, N> for JournalFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let line = one_line(&self.0, ctx, event)?;
        writeln!(writer, "<{}>{line}", priority(event.metadata().level()))
    }
}

/// Any format, one line per event (the files' format: timestamps kept).
struct OneLine<F>(F);

impl<S, N, F> FormatEvent<S, N> for OneLine<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let line = one_line(&self.0, ctx, event)?;
        writeln!(writer, "{line}")
    }
}
