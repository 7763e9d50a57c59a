//! Styles and state symbols. The colour theme uses the 16 ANSI colours on the
//! terminal's own background; the monochrome theme (`NO_COLOR`, `--color
//! never`) uses only bold, reverse and underline and never sets a colour at
//! all — crossterm turns a stripped colour change into `ESC[;m`, a full reset
//! that would wipe the selection's reverse video.

use ratatui::style::{Color, Modifier, Style};
use sluice_shared::run::{NodeState, RunState};

/// How things look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Theme {
    /// Attributes only.
    pub mono: bool,
    /// ASCII symbols.
    pub ascii: bool,
}

impl Theme {
    fn fg(self, c: Color) -> Style {
        if self.mono {
            Style::new()
        } else {
            Style::new().fg(c)
        }
    }

    /// The selected row: reverse video, visible in both themes.
    pub fn selected(self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
    }

    /// Headings and table headers.
    pub fn heading(self) -> Style {
        Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
    }

    /// Less important text.
    pub fn dim(self) -> Style {
        if self.mono {
            Style::new()
        } else {
            Style::new().fg(Color::DarkGray)
        }
    }

    /// Errors and bad news.
    pub fn error(self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    /// Warnings (stale data, disconnected).
    pub fn warn(self) -> Style {
        if self.mono {
            Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED)
        } else {
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)
        }
    }

    /// Good news.
    pub fn ok(self) -> Style {
        self.fg(Color::Green)
    }

    /// Key names in hints.
    pub fn key(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    /// A key whose action the role, a disconnect or --readonly forbids.
    pub fn disabled(self) -> Style {
        if self.mono {
            Style::new().add_modifier(Modifier::CROSSED_OUT)
        } else {
            Style::new()
                .fg(Color::DarkGray)
                .add_modifier(Modifier::CROSSED_OUT)
        }
    }

    /// A count badge.
    pub fn badge(self) -> Style {
        if self.mono {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new()
                .fg(Color::Yellow)
                .add_modifier(Modifier::BOLD | Modifier::REVERSED)
        }
    }

    /// Colour of a run state.
    pub fn run_state(self, s: RunState) -> Style {
        match s {
            RunState::Queued => self.fg(Color::Blue),
            RunState::Running => self.fg(Color::Cyan),
            RunState::Waiting => self.fg(Color::Yellow),
            RunState::Succeeded => self.fg(Color::Green),
            RunState::Failed => self.error(),
            RunState::Cancelled => self.dim(),
        }
    }

    /// Symbol of a run state.
    pub fn run_symbol(self, s: RunState) -> &'static str {
        match (s, self.ascii) {
            (RunState::Queued, false) => "○",
            (RunState::Running, false) => "●",
            (RunState::Waiting, false) => "◐",
            (RunState::Succeeded, false) => "✓",
            (RunState::Failed, false) => "✗",
            (RunState::Cancelled, false) => "⊘",
            (RunState::Queued, true) => ".",
            (RunState::Running, true) => ">",
            (RunState::Waiting, true) => "~",
            (RunState::Succeeded, true) => "+",
            (RunState::Failed, true) => "x",
            (RunState::Cancelled, true) => "/",
        }
    }

    /// Colour of a node state.
    pub fn node_state(self, s: NodeState) -> Style {
        match s {
            NodeState::Pending => self.dim(),
            NodeState::Running => self.fg(Color::Cyan),
            NodeState::Waiting => self.fg(Color::Yellow),
            NodeState::NeedsDecision => self.warn(),
            NodeState::Succeeded => self.fg(Color::Green),
            NodeState::Failed => self.error(),
            NodeState::Skipped | NodeState::Cancelled => self.dim(),
        }
    }

    /// Symbol of a node state.
    pub fn node_symbol(self, s: NodeState) -> &'static str {
        match (s, self.ascii) {
            (NodeState::Pending, false) => "·",
            (NodeState::Running, false) => "●",
            (NodeState::Waiting, false) => "◐",
            (NodeState::NeedsDecision, _) => "?",
            (NodeState::Succeeded, false) => "✓",
            (NodeState::Failed, false) => "✗",
            (NodeState::Skipped, false) => "↷",
            (NodeState::Cancelled, false) => "⊘",
            (NodeState::Pending, true) => ".",
            (NodeState::Running, true) => ">",
            (NodeState::Waiting, true) => "~",
            (NodeState::Succeeded, true) => "+",
            (NodeState::Failed, true) => "x",
            (NodeState::Skipped, true) => "-",
            (NodeState::Cancelled, true) => "/",
        }
    }

    /// Separator between header items.
    pub fn dot(self) -> &'static str {
        if self.ascii { " | " } else { " · " }
    }
}
