//! Keys as data: one table of (scope, keys, action, description) drives key
//! handling, the footer hints and the `?` overlay. Users override keys per
//! action in a TOML file; a key bound twice where both apply is refused.

use std::collections::BTreeMap;
use std::fmt;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use sluice_shared::protocol::Role;

/// Where a binding applies. Global bindings apply in every view unless a
/// view binds the same key (which the conflict check forbids).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Every view.
    Global,
    /// The runs table.
    Runs,
    /// One run: nodes and the selected node's log.
    Detail,
    /// The approvals queue and history.
    Approvals,
    /// Pipelines.
    Pipelines,
    /// Metrics.
    Metrics,
    /// The audit trail.
    Audit,
}

impl Scope {
    /// All scopes, in help-overlay order.
    pub const ALL: [Scope; 7] = [
        Scope::Global,
        Scope::Runs,
        Scope::Detail,
        Scope::Approvals,
        Scope::Pipelines,
        Scope::Metrics,
        Scope::Audit,
    ];

    /// The name used in the keys file and the help overlay.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::Runs => "runs",
            Scope::Detail => "run",
            Scope::Approvals => "approvals",
            Scope::Pipelines => "pipelines",
            Scope::Metrics => "metrics",
            Scope::Audit => "audit",
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.name() == s)
    }
}

macro_rules! actions {
    ($($variant:ident = $name:literal),+ $(,)?) => {
        /// Something a key does.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Action {
            $(#[doc = $name] $variant),+
        }

        impl Action {
            /// The name used in the keys file.
            pub fn name(self) -> &'static str {
                match self {
                    $(Action::$variant => $name),+
                }
            }

            fn from_name(s: &str) -> Option<Self> {
                match s {
                    $($name => Some(Action::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

actions! {
    Quit = "quit",
    Back = "back",
    Help = "help",
    Command = "command",
    ViewRuns = "view_runs",
    ViewPipelines = "view_pipelines",
    ViewApprovals = "view_approvals",
    ViewMetrics = "view_metrics",
    ViewAudit = "view_audit",
    Up = "up",
    Down = "down",
    PageUp = "page_up",
    PageDown = "page_down",
    Top = "top",
    Bottom = "bottom",
    Refresh = "refresh",
    Open = "open",
    Filter = "filter",
    Retry = "retry",
    RetryAll = "retry_all",
    Cancel = "cancel",
    FocusNext = "focus_next",
    Left = "left",
    Right = "right",
    Follow = "follow",
    Search = "search",
    NextMatch = "next_match",
    PrevMatch = "prev_match",
    Wrap = "wrap",
    Timestamps = "timestamps",
    Copy = "copy",
    Approve = "approve",
    Reject = "reject",
    HistoryTab = "history_tab",
    Trigger = "trigger",
    Enable = "enable",
    Disable = "disable",
}

impl Action {
    /// The role the daemon requires, for actions that change state.
    pub fn required_role(self) -> Option<Role> {
        match self {
            Action::Retry
            | Action::RetryAll
            | Action::Cancel
            | Action::Approve
            | Action::Reject
            | Action::Trigger => Some(Role::Operator),
            Action::Enable | Action::Disable => Some(Role::Admin),
            _ => None,
        }
    }

    /// True when the action changes the daemon's state (and so needs a confirmation).
    pub fn changes_state(self) -> bool {
        self.required_role().is_some()
    }
}

/// A key as bindings name it: a key code and whether Ctrl is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// The key.
    pub code: KeyCode,
    /// Ctrl held.
    pub ctrl: bool,
}

impl Key {
    const fn plain(code: KeyCode) -> Self {
        Self { code, ctrl: false }
    }

    const fn ch(c: char) -> Self {
        Self::plain(KeyCode::Char(c))
    }

    const fn ctrl(c: char) -> Self {
        Self {
            code: KeyCode::Char(c),
            ctrl: true,
        }
    }

    /// The binding key of a terminal key event; None for Alt chords, which
    /// terminals and tmux deliver unreliably and nothing is bound to.
    pub fn from_event(ev: &KeyEvent) -> Option<Self> {
        if ev.modifiers.contains(KeyModifiers::ALT) {
            return None;
        }
        let code = match ev.code {
            KeyCode::BackTab => KeyCode::BackTab,
            KeyCode::Char(c) if ev.modifiers.contains(KeyModifiers::CONTROL) => {
                KeyCode::Char(c.to_ascii_lowercase())
            }
            other => other,
        };
        Some(Self {
            code,
            ctrl: ev.modifiers.contains(KeyModifiers::CONTROL),
        })
    }

    /// Parses `q`, `G`, `/`, `enter`, `esc`, `tab`, `up`, `pgdn`, `ctrl-r`, `space`, `f5`.
    pub fn parse(s: &str) -> Option<Self> {
        let lower = s.to_ascii_lowercase();
        if let Some(rest) = lower.strip_prefix("ctrl-") {
            let mut chars = rest.chars();
            return match (chars.next(), chars.next()) {
                (Some(c), None) if c.is_ascii_alphanumeric() => Some(Self::ctrl(c)),
                _ => None,
            };
        }
        let code = match lower.as_str() {
            "enter" | "return" => KeyCode::Enter,
            "esc" | "escape" => KeyCode::Esc,
            "tab" => KeyCode::Tab,
            "backtab" => KeyCode::BackTab,
            "up" => KeyCode::Up,
            "down" => KeyCode::Down,
            "left" => KeyCode::Left,
            "right" => KeyCode::Right,
            "pgup" | "pageup" => KeyCode::PageUp,
            "pgdn" | "pagedown" => KeyCode::PageDown,
            "home" => KeyCode::Home,
            "end" => KeyCode::End,
            "space" => KeyCode::Char(' '),
            "backspace" => KeyCode::Backspace,
            "delete" | "del" => KeyCode::Delete,
            f if f.starts_with('f') && f.len() > 1 => KeyCode::F(f[1..].parse().ok()?),
            _ => {
                let mut chars = s.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) if !c.is_control() => KeyCode::Char(c),
                    _ => return None,
                }
            }
        };
        Some(Self::plain(code))
    }

    /// How the key is shown in hints; `ascii` avoids arrows.
    pub fn label(self, ascii: bool) -> String {
        let base = match self.code {
            KeyCode::Enter => "Enter".to_string(),
            KeyCode::Esc => "Esc".to_string(),
            KeyCode::Tab => "Tab".to_string(),
            KeyCode::BackTab => "BackTab".to_string(),
            KeyCode::Up => if ascii { "Up" } else { "↑" }.to_string(),
            KeyCode::Down => if ascii { "Down" } else { "↓" }.to_string(),
            KeyCode::Left => if ascii { "Left" } else { "←" }.to_string(),
            KeyCode::Right => if ascii { "Right" } else { "→" }.to_string(),
            KeyCode::PageUp => "PgUp".to_string(),
            KeyCode::PageDown => "PgDn".to_string(),
            KeyCode::Home => "Home".to_string(),
            KeyCode::End => "End".to_string(),
            KeyCode::Backspace => "Bksp".to_string(),
            KeyCode::Delete => "Del".to_string(),
            KeyCode::F(n) => format!("F{n}"),
            KeyCode::Char(' ') => "Space".to_string(),
            KeyCode::Char(c) => c.to_string(),
            other => format!("{other:?}"),
        };
        if self.ctrl {
            format!("Ctrl-{base}")
        } else {
            base
        }
    }
}

/// One row of the keymap.
#[derive(Clone, Debug)]
pub struct Binding {
    /// Where it applies.
    pub scope: Scope,
    /// The keys (the first is shown in the footer).
    pub keys: Vec<Key>,
    /// What it does.
    pub action: Action,
    /// For the help overlay and the footer.
    pub desc: &'static str,
    /// Shown in the footer (the rest only in `?`).
    pub footer: bool,
}

/// The bindings in force.
#[derive(Clone, Debug)]
pub struct Keymap {
    /// Every binding.
    pub bindings: Vec<Binding>,
}

/// Why a keys file was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeymapError {
    /// Not TOML, or not the expected shape.
    #[error("keys file: {0}")]
    Syntax(String),
    /// An unknown scope, action or key name.
    #[error("keys file: {0}")]
    Unknown(String),
    /// One key would do two things in the same place.
    #[error(
        "keys file: key '{key}' is bound to both '{first}' and '{second}' in {scope}; change one of them"
    )]
    Conflict {
        /// The key.
        key: String,
        /// The scope where both apply.
        scope: &'static str,
        /// One action.
        first: &'static str,
        /// The other.
        second: &'static str,
    },
}

fn b(scope: Scope, keys: &[Key], action: Action, desc: &'static str, footer: bool) -> Binding {
    Binding {
        scope,
        keys: keys.to_vec(),
        action,
        desc,
        footer,
    }
}

impl Default for Keymap {
    fn default() -> Self {
        Self::defaults()
    }
}

impl Keymap {
    /// The built-in bindings. They avoid Alt, Shift+Arrow and Ctrl-Enter
    /// (mangled by tmux and SSH), and no state-changing action sits on `[`,
    /// `O` or `A`–`D`, which split escape sequences can produce.
    pub fn defaults() -> Self {
        use Action as A;
        use KeyCode as K;
        use Scope as S;
        let p = Key::plain;
        let c = Key::ch;
        Self {
            bindings: vec![
                b(
                    S::Global,
                    &[c('q'), p(K::Esc)],
                    A::Back,
                    "back (quit on the top view)",
                    true,
                ),
                b(S::Global, &[Key::ctrl('c')], A::Quit, "quit", false),
                b(S::Global, &[c('?')], A::Help, "help: every key", true),
                b(
                    S::Global,
                    &[c(':')],
                    A::Command,
                    "command line (:runs, :run 12, ...)",
                    false,
                ),
                b(S::Global, &[c('1')], A::ViewRuns, "runs", false),
                b(S::Global, &[c('2')], A::ViewPipelines, "pipelines", false),
                b(S::Global, &[c('3')], A::ViewApprovals, "approvals", false),
                b(S::Global, &[c('4')], A::ViewMetrics, "metrics", false),
                b(S::Global, &[c('5')], A::ViewAudit, "audit trail", false),
                b(S::Global, &[p(K::Up), c('k')], A::Up, "move up", false),
                b(
                    S::Global,
                    &[p(K::Down), c('j')],
                    A::Down,
                    "move down",
                    false,
                ),
                b(
                    S::Global,
                    &[p(K::PageUp), Key::ctrl('u')],
                    A::PageUp,
                    "page up",
                    false,
                ),
                b(
                    S::Global,
                    &[p(K::PageDown), Key::ctrl('d')],
                    A::PageDown,
                    "page down",
                    false,
                ),
                b(S::Global, &[p(K::Home), c('g')], A::Top, "first row", false),
                b(
                    S::Global,
                    &[p(K::End), c('G')],
                    A::Bottom,
                    "last row",
                    false,
                ),
                b(
                    S::Global,
                    &[Key::ctrl('l')],
                    A::Refresh,
                    "refresh from the daemon",
                    false,
                ),
                b(S::Runs, &[p(K::Enter)], A::Open, "open run", true),
                b(
                    S::Runs,
                    &[c('/')],
                    A::Filter,
                    "filter: pipeline, state or text",
                    true,
                ),
                b(S::Runs, &[c('r')], A::Retry, "retry failed nodes", true),
                b(S::Runs, &[c('R')], A::RetryAll, "retry all nodes", false),
                b(S::Runs, &[c('c')], A::Cancel, "cancel run", true),
                b(S::Detail, &[p(K::Tab)], A::FocusNext, "nodes / log", true),
                b(S::Detail, &[c('f')], A::Follow, "follow log", true),
                b(S::Detail, &[c('/')], A::Search, "search log", true),
                b(S::Detail, &[c('n')], A::NextMatch, "next match", false),
                b(S::Detail, &[c('N')], A::PrevMatch, "previous match", false),
                b(S::Detail, &[c('w')], A::Wrap, "wrap lines", false),
                b(S::Detail, &[c('t')], A::Timestamps, "timestamps", false),
                b(
                    S::Detail,
                    &[p(K::Left), c('h')],
                    A::Left,
                    "scroll left half a page",
                    false,
                ),
                b(
                    S::Detail,
                    &[p(K::Right), c('l')],
                    A::Right,
                    "scroll right half a page",
                    false,
                ),
                b(
                    S::Detail,
                    &[c('y')],
                    A::Copy,
                    "copy line / node output (OSC 52)",
                    false,
                ),
                b(S::Detail, &[c('r')], A::Retry, "retry failed nodes", true),
                b(S::Detail, &[c('R')], A::RetryAll, "retry all nodes", true),
                b(S::Detail, &[c('c')], A::Cancel, "cancel run", true),
                b(
                    S::Approvals,
                    &[p(K::Tab)],
                    A::HistoryTab,
                    "pending / history",
                    true,
                ),
                b(S::Approvals, &[p(K::Enter)], A::Open, "open the run", true),
                b(S::Approvals, &[c('a')], A::Approve, "approve", true),
                b(S::Approvals, &[c('x')], A::Reject, "reject", true),
                b(
                    S::Pipelines,
                    &[p(K::Enter)],
                    A::Open,
                    "runs of pipeline",
                    true,
                ),
                b(S::Pipelines, &[c('t')], A::Trigger, "trigger now", true),
                b(S::Pipelines, &[c('e')], A::Enable, "enable", true),
                b(S::Pipelines, &[c('d')], A::Disable, "disable", true),
            ],
        }
    }

    /// The action of `key` in `scope` (the scope's own bindings, then global ones).
    pub fn lookup(&self, scope: Scope, key: Key) -> Option<Action> {
        let find = |s: Scope| {
            self.bindings
                .iter()
                .find(|b| b.scope == s && b.keys.contains(&key))
                .map(|b| b.action)
        };
        find(scope).or_else(|| find(Scope::Global))
    }

    /// The first key of `action` in `scope` (or global), for hints.
    pub fn key_of(&self, scope: Scope, action: Action) -> Option<Key> {
        self.bindings
            .iter()
            .find(|b| (b.scope == scope || b.scope == Scope::Global) && b.action == action)
            .and_then(|b| b.keys.first().copied())
    }

    /// Bindings of one scope, in table order.
    pub fn scope(&self, scope: Scope) -> impl Iterator<Item = &Binding> {
        self.bindings.iter().filter(move |b| b.scope == scope)
    }

    /// Refuses a key that does two things where both would apply: twice in one
    /// scope, or in a view and globally.
    pub fn check(&self) -> Result<(), KeymapError> {
        for (i, x) in self.bindings.iter().enumerate() {
            for y in &self.bindings[i + 1..] {
                let overlap =
                    x.scope == y.scope || x.scope == Scope::Global || y.scope == Scope::Global;
                if !overlap || x.action == y.action {
                    continue;
                }
                if let Some(k) = x.keys.iter().find(|k| y.keys.contains(k)) {
                    let scope = if x.scope == Scope::Global {
                        y.scope
                    } else {
                        x.scope
                    };
                    return Err(KeymapError::Conflict {
                        key: k.label(true),
                        scope: scope.name(),
                        first: x.action.name(),
                        second: y.action.name(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Applies a keys file: `[<scope>]` tables of `action = "key"` or
    /// `action = ["key", ...]`. Actions not named keep their defaults.
    pub fn with_overrides(mut self, text: &str) -> Result<Self, KeymapError> {
        let doc: BTreeMap<String, BTreeMap<String, toml::Value>> =
            toml::from_str(text).map_err(|e| KeymapError::Syntax(e.to_string()))?;
        for (scope_name, actions) in doc {
            let scope = Scope::from_name(&scope_name).ok_or_else(|| {
                KeymapError::Unknown(format!(
                    "unknown section [{scope_name}] (known: {})",
                    Scope::ALL.map(Scope::name).join(", ")
                ))
            })?;
            for (action_name, value) in actions {
                let action = Action::from_name(&action_name).ok_or_else(|| {
                    KeymapError::Unknown(format!(
                        "unknown action '{action_name}' in [{scope_name}]"
                    ))
                })?;
                let names: Vec<String> = match value {
                    toml::Value::String(s) => vec![s],
                    toml::Value::Array(items) => items
                        .into_iter()
                        .map(|v| match v {
                            toml::Value::String(s) => Ok(s),
                            other => Err(KeymapError::Syntax(format!(
                                "[{scope_name}] {action_name}: expected key names, found {other}"
                            ))),
                        })
                        .collect::<Result<_, _>>()?,
                    other => {
                        return Err(KeymapError::Syntax(format!(
                            "[{scope_name}] {action_name}: expected a key name or a list, found {other}"
                        )));
                    }
                };
                let keys = names
                    .iter()
                    .map(|n| {
                        Key::parse(n).ok_or_else(|| {
                            KeymapError::Unknown(format!(
                                "[{scope_name}] {action_name}: unknown key '{n}'"
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                match self
                    .bindings
                    .iter_mut()
                    .find(|b| b.scope == scope && b.action == action)
                {
                    Some(binding) => binding.keys = keys,
                    None => {
                        return Err(KeymapError::Unknown(format!(
                            "'{action_name}' does nothing in [{scope_name}]"
                        )));
                    }
                }
            }
        }
        self.check()?;
        Ok(self)
    }
}

impl fmt::Display for Keymap {
    /// The keys table as Markdown (docs/console.md carries a copy).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "| view | keys | action | what it does |")?;
        writeln!(f, "|---|---|---|---|")?;
        for scope in Scope::ALL {
            for b in self.scope(scope) {
                let keys: Vec<String> = b
                    .keys
                    .iter()
                    .map(|k| format!("`{}`", k.label(true)))
                    .collect();
                writeln!(
                    f,
                    "| {} | {} | {} | {} |",
                    scope.name(),
                    keys.join(" "),
                    b.action.name(),
                    b.desc
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_have_no_conflicts() {
        Keymap::defaults().check().unwrap();
    }

    #[test]
    fn state_changing_keys_avoid_escape_sequence_bytes_and_mangled_chords() {
        for b in &Keymap::defaults().bindings {
            for k in &b.keys {
                if b.action.changes_state() {
                    assert!(
                        !matches!(k.code, KeyCode::Char('[' | 'O' | 'A' | 'B' | 'C' | 'D')),
                        "{:?} on {:?}",
                        b.action,
                        k
                    );
                    assert!(!k.ctrl, "{:?}", b.action);
                }
            }
        }
    }

    #[test]
    fn partial_overrides_apply_and_conflicts_are_refused() {
        let map = Keymap::defaults()
            .with_overrides("[runs]\nopen = [\"enter\", \"o\"]\n")
            .unwrap();
        assert_eq!(map.lookup(Scope::Runs, Key::ch('o')), Some(Action::Open));
        assert_eq!(map.lookup(Scope::Runs, Key::ch('/')), Some(Action::Filter));
        let err = Keymap::defaults()
            .with_overrides("[approvals]\napprove = \"x\"\n")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "keys file: key 'x' is bound to both 'approve' and 'reject' in approvals; change one of them"
        );
        let err = Keymap::defaults()
            .with_overrides("[runs]\nopen = \"q\"\n")
            .unwrap_err();
        assert!(
            err.to_string().contains("'back' and 'open' in runs"),
            "{err}"
        );
        assert!(
            Keymap::defaults()
                .with_overrides("[runs]\nfly = \"z\"\n")
                .is_err()
        );
        assert!(
            Keymap::defaults()
                .with_overrides("[runs]\nopen = \"ctrl-enter-x\"\n")
                .is_err()
        );
    }
}
