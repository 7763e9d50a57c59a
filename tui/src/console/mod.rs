//! The operator console: `sluice` with no subcommand.
//!
//! Elm-style: [`app::App`] is the state, [`msg::Msg`] the input,
//! [`update::update`] the only place state changes, and [`views::draw`] a pure
//! function of the state. The run loop here owns the terminal, the keyboard
//! stream, a one-second tick and the socket task ([`conn`]), and carries out
//! the effects `update` returns.

pub mod app;
pub mod conn;
pub mod inputs;
pub mod keymap;
pub mod lineedit;
pub mod logbuf;
pub mod msg;
pub mod theme;
pub mod update;
pub mod views;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{DisableBracketedPaste, EnableBracketedPaste, Event, EventStream};
use ratatui::crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::crossterm::{cursor, execute};
use tokio::sync::mpsc;

use app::{App, Options};
use keymap::Keymap;
use msg::{Effect, Msg};

/// When to use colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorChoice {
    /// Colour unless `NO_COLOR` is set or `TERM=dumb`.
    #[default]
    Auto,
    /// Always colour.
    Always,
    /// Bold, reverse and underline only.
    Never,
}

/// How the console was asked to start.
#[derive(Clone, Debug, Default)]
pub struct ConsoleOptions {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// No state-changing keys.
    pub readonly: bool,
    /// Colour choice.
    pub color: ColorChoice,
    /// ASCII symbols only.
    pub ascii: bool,
    /// A keys file; the default location when None.
    pub keys: Option<PathBuf>,
}

/// Where the keys file is looked for by default.
pub fn default_keys_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("sluice").join("console.toml"))
}

/// The default keymap with the keys file applied (a missing default file is fine).
pub fn load_keymap(path: Option<&Path>) -> anyhow::Result<Keymap> {
    let (path, explicit) = match path {
        Some(p) => (Some(p.to_path_buf()), true),
        None => (default_keys_file(), false),
    };
    let Some(path) = path else {
        return Ok(Keymap::defaults());
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => Keymap::defaults()
            .with_overrides(&text)
            .with_context(|| format!("{}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Ok(Keymap::defaults()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Whether to draw in monochrome.
pub fn monochrome(choice: ColorChoice) -> bool {
    match choice {
        ColorChoice::Never => true,
        ColorChoice::Always => false,
        ColorChoice::Auto => {
            std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
                || std::env::var("TERM").is_ok_and(|t| t == "dumb")
        }
    }
}

fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = execute!(
        std::io::stdout(),
        DisableBracketedPaste,
        LeaveAlternateScreen,
        cursor::Show
    );
}

/// Puts the terminal back however the console ends (return, error, panic unwinding).
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// The OSC 52 sequence that puts `text` on the clipboard of the terminal the
/// operator sits at — it travels over SSH; inside tmux it is also sent
/// wrapped for passthrough, since tmux may not forward it otherwise.
pub fn osc52(text: &str, tmux: bool) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
    let seq = format!("\x1b]52;c;{encoded}\x07");
    if tmux {
        format!("{seq}\x1bPtmux;{}\x1b\\", seq.replace('\x1b', "\x1b\x1b"))
    } else {
        seq
    }
}

/// Runs the console until the operator quits.
pub async fn run(opts: ConsoleOptions) -> anyhow::Result<()> {
    let keymap = load_keymap(opts.keys.as_deref())?;
    {
        use std::io::IsTerminal;
        if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
            anyhow::bail!(
                "the console needs a terminal; for scripts use a subcommand (sluice --help)"
            );
        }
    }
    let mono = monochrome(opts.color);
    if opts.color == ColorChoice::Always {
        ratatui::crossterm::style::Colored::set_ansi_color_disabled(false);
    }
    let options = Options {
        daemon: opts.socket.display().to_string(),
        readonly: opts.readonly,
        mono,
        ascii: opts.ascii,
        tz: jiff::tz::TimeZone::system(),
        ..Options::default()
    };
    let mut app = App::new(options, keymap, sluice_shared::time::now_ms());

    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        previous(info);
    }));
    enable_raw_mode().context("switching the terminal to raw mode")?;
    let _guard = TerminalGuard;
    execute!(
        std::io::stdout(),
        EnterAlternateScreen,
        EnableBracketedPaste
    )
    .context("opening the alternate screen")?;
    let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
    terminal.clear()?;
    if let Ok(size) = terminal.size() {
        app.size = (size.width, size.height);
    }

    let (call_tx, call_rx) = mpsc::unbounded_channel();
    let (msg_tx, mut msg_rx) = mpsc::unbounded_channel();
    let socket_task = tokio::spawn(conn::run(opts.socket.clone(), call_rx, msg_tx));
    let mut events = EventStream::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let tmux = std::env::var_os("TMUX").is_some();
    // A dropped SSH session (SIGHUP) or a kill (SIGTERM) ends the console like
    // `q` does, so whoever started it (`sluice demo`) can clean up after it.
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup()).context("watching SIGHUP")?;
    let mut terminate = signal(SignalKind::terminate()).context("watching SIGTERM")?;

    'outer: loop {
        terminal.draw(|f| views::draw(f, &app))?;
        let first = tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(Event::Key(k))) => Msg::Key(k),
                Some(Ok(Event::Resize(w, h))) => Msg::Resize(w, h),
                Some(Ok(Event::Paste(s))) => Msg::Paste(s),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e).context("reading the terminal"),
                None => break,
            },
            m = msg_rx.recv() => match m {
                Some(m) => m,
                None => break,
            },
            _ = tick.tick() => Msg::Tick(sluice_shared::time::now_ms()),
            _ = hangup.recv() => break,
            _ = terminate.recv() => break,
        };
        // Take whatever else is already queued before drawing again, so a burst
        // of events costs one frame, not one frame each.
        let mut batch = vec![first];
        while batch.len() < 2000 {
            match msg_rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        for m in batch {
            if let Msg::Resize(..) = m {
                terminal.autoresize()?;
            }
            for effect in update::update(&mut app, m) {
                match effect {
                    Effect::Call {
                        tag,
                        method,
                        params,
                    } => {
                        let _ = call_tx.send(conn::Call {
                            tag,
                            method,
                            params,
                        });
                    }
                    Effect::Copy(text) => {
                        let mut out = std::io::stdout();
                        let _ = out.write_all(osc52(&text, tmux).as_bytes());
                        let _ = out.flush();
                    }
                    Effect::Quit => break 'outer,
                }
            }
        }
    }
    drop(call_tx);
    socket_task.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn osc52_carries_the_text_in_padded_standard_base64() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foob", "Zm9vYg=="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(osc52(plain, false), format!("\x1b]52;c;{coded}\x07"));
        }
        // Inside tmux the sequence also goes wrapped for passthrough, its ESCs doubled.
        assert_eq!(
            osc52("hi", true),
            "\x1b]52;c;aGk=\x07\x1bPtmux;\x1b\x1b]52;c;aGk=\x07\x1b\\"
        );
    }
}
