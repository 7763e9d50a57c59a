//! The console's state: everything a view draws from, nothing else.

use std::collections::HashMap;

use sluice_shared::diagnostic::Diagnostic;
use sluice_shared::protocol::{
    ApprovalInfo, AuditEntry, HelloResult, LimitsUsageResult, MetricsResult, PipelineSummary, Role,
    RunDetail, RunSummary, StatusResult,
};
use sluice_shared::run::{RunId, RunState};

use super::inputs::DeclaredInput;
use super::keymap::{Action, Keymap, Scope};
use super::lineedit::LineEdit;
use super::logbuf::LogBuf;

/// Options fixed at start.
#[derive(Clone, Debug)]
pub struct Options {
    /// Shown in the header: the socket path.
    pub daemon: String,
    /// No state-changing keys at all.
    pub readonly: bool,
    /// Only bold, reverse and underline.
    pub mono: bool,
    /// No Unicode symbols.
    pub ascii: bool,
    /// Lines kept per node log.
    pub log_cap: usize,
    /// Time zone for clock times.
    pub tz: jiff::tz::TimeZone,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            daemon: String::new(),
            readonly: false,
            mono: false,
            ascii: false,
            log_cap: super::logbuf::DEFAULT_CAP,
            tz: jiff::tz::TimeZone::UTC,
        }
    }
}

/// The connection as the header shows it.
#[derive(Clone, Debug, PartialEq)]
pub enum Conn {
    /// First attempt under way.
    Connecting,
    /// Handshake done; `synced` once the event subscription is live.
    Connected {
        /// The daemon's `hello`.
        hello: HelloResult,
        /// Subscribed and resynchronised.
        synced: bool,
    },
    /// Down since `since_ms`; next try at `retry_at_ms`.
    Disconnected {
        /// When it went down.
        since_ms: i64,
        /// Next attempt.
        retry_at_ms: i64,
        /// Why.
        error: String,
    },
}

/// A top-level view or a detail view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// Runs table.
    Runs,
    /// One run.
    Detail,
    /// Approvals.
    Approvals,
    /// Pipelines.
    Pipelines,
    /// Metrics.
    Metrics,
    /// Audit trail.
    Audit,
}

impl View {
    /// The keymap scope of the view.
    pub fn scope(self) -> Scope {
        match self {
            View::Runs => Scope::Runs,
            View::Detail => Scope::Detail,
            View::Approvals => Scope::Approvals,
            View::Pipelines => Scope::Pipelines,
            View::Metrics => Scope::Metrics,
            View::Audit => Scope::Audit,
        }
    }

    /// Title.
    pub fn title(self) -> &'static str {
        match self {
            View::Runs => "Runs",
            View::Detail => "Run",
            View::Approvals => "Approvals",
            View::Pipelines => "Pipelines",
            View::Metrics => "Metrics",
            View::Audit => "Audit",
        }
    }
}

/// A scrollable selection over `len` rows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cursor {
    /// Selected row.
    pub selected: usize,
    /// First row drawn (kept so the selection stays visible).
    pub offset: usize,
}

impl Cursor {
    /// Moves by `delta` within `len` rows.
    pub fn step(&mut self, delta: isize, len: usize) {
        if len == 0 {
            self.selected = 0;
            return;
        }
        let next = self.selected as isize + delta;
        self.selected = next.clamp(0, len as isize - 1) as usize;
    }

    /// Keeps `selected` inside `len` rows.
    pub fn clamp(&mut self, len: usize) {
        self.selected = self.selected.min(len.saturating_sub(1));
    }

    /// The first row to draw for a window of `height` rows (only these are rendered).
    pub fn window(&self, height: usize, len: usize) -> usize {
        if height == 0 || len <= height {
            return 0;
        }
        let mut offset = self.offset.min(len - height);
        if self.selected < offset {
            offset = self.selected;
        } else if self.selected >= offset + height {
            offset = self.selected + 1 - height;
        }
        offset
    }
}

/// The runs table.
#[derive(Clone, Debug, Default)]
pub struct RunsState {
    /// Loaded rows, newest first.
    pub rows: Vec<RunSummary>,
    /// Keyset cursor of the next page; None on the last page.
    pub next: Option<RunId>,
    /// A page request is in flight.
    pub loading: bool,
    /// Selection.
    pub cursor: Cursor,
    /// The filter as typed.
    pub filter: String,
    /// Bumped when the filter changes, to drop replies to an older one.
    pub generation: u64,
    /// Events changed rows: refetch the first page on the next tick.
    pub dirty: bool,
    /// Indices of the rows the local text filter keeps (unused without one),
    /// kept up to date by `update` so that drawing never scans every row.
    pub matching: Vec<usize>,
    /// The highlighted run, by id: the view highlights this run and every
    /// action (open, retry, cancel) targets it, so the two cannot disagree
    /// however the rows under it change.
    pub selected_id: Option<RunId>,
    /// The next first page replaces the rows instead of merging (after a
    /// reconnect nothing loaded before is trusted to be complete).
    pub replace: bool,
}

/// Which pane of the run detail keys move.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DetailFocus {
    /// The node list.
    #[default]
    Nodes,
    /// The log.
    Log,
}

/// One open run.
#[derive(Clone, Debug)]
pub struct DetailState {
    /// Which run.
    pub id: RunId,
    /// Its data, once fetched.
    pub run: Option<RunDetail>,
    /// Selected node.
    pub nodes: Cursor,
    /// The node whose log is loaded.
    pub log_node: Option<String>,
    /// The log.
    pub log: LogBuf,
    /// Bumped when another node's log is loaded.
    pub log_generation: u64,
    /// The initial `logs.get` paging is still running; events wait in `pending`.
    pub log_loading: bool,
    /// Events that arrived while the log was loading.
    pub pending: Vec<super::logbuf::LogEntry>,
    /// Selected log line.
    pub log_cursor: usize,
    /// Keep the newest line in view.
    pub follow: bool,
    /// Lines that arrived while not following.
    pub unseen: u64,
    /// Wrap long lines.
    pub wrap: bool,
    /// Show timestamps.
    pub timestamps: bool,
    /// Horizontal scroll in columns.
    pub hscroll: usize,
    /// The last search.
    pub search: Option<String>,
    /// Keys move this pane.
    pub focus: DetailFocus,
    /// Events changed the run: refetch on the next tick.
    pub dirty: bool,
}

impl DetailState {
    /// A run about to be fetched.
    pub fn new(id: RunId, log_cap: usize) -> Self {
        Self {
            id,
            run: None,
            nodes: Cursor::default(),
            log_node: None,
            log: LogBuf::with_capacity(log_cap),
            log_generation: 0,
            log_loading: false,
            pending: Vec::new(),
            log_cursor: 0,
            follow: true,
            unseen: 0,
            wrap: false,
            timestamps: false,
            hscroll: 0,
            search: None,
            focus: DetailFocus::Nodes,
            dirty: false,
        }
    }

    /// The selected node's id.
    pub fn selected_node(&self) -> Option<&str> {
        self.run
            .as_ref()
            .and_then(|r| r.nodes.get(self.nodes.selected))
            .map(|n| n.id.as_str())
    }
}

/// The approvals view.
#[derive(Clone, Debug, Default)]
pub struct ApprovalsState {
    /// Pending, oldest first.
    pub pending: Vec<ApprovalInfo>,
    /// Decided ones (history tab).
    pub history: Vec<ApprovalInfo>,
    /// Showing the history tab.
    pub show_history: bool,
    /// Selection in the tab shown.
    pub cursor: Cursor,
    /// The selected approval's run.
    pub context: Option<RunDetail>,
    /// Events suggest a change: refetch on the next tick.
    pub dirty: bool,
    /// Fetched at least once.
    pub loaded: bool,
}

impl ApprovalsState {
    /// The rows of the tab shown.
    pub fn rows(&self) -> &[ApprovalInfo] {
        if self.show_history {
            &self.history
        } else {
            &self.pending
        }
    }

    /// The selected approval.
    pub fn selected(&self) -> Option<&ApprovalInfo> {
        self.rows().get(self.cursor.selected)
    }
}

/// The pipelines view.
#[derive(Clone, Debug, Default)]
pub struct PipelinesState {
    /// Pipelines.
    pub rows: Vec<PipelineSummary>,
    /// Problems of rejected files.
    pub errors: Vec<Diagnostic>,
    /// Selection.
    pub cursor: Cursor,
    /// Events suggest a change.
    pub dirty: bool,
}

/// A modal on top of the view.
#[derive(Clone, Debug, PartialEq)]
pub enum Overlay {
    /// Every key; the number is the scroll offset.
    Help(usize),
    /// The `:` command line.
    Command(LineEdit),
    /// A one-line text prompt (filter, search).
    Prompt(Prompt),
    /// A confirmation, optionally with a text field (boxed: it is much
    /// larger than the other overlays).
    Dialog(Box<Dialog>),
}

/// What a text prompt is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromptKind {
    /// Runs filter.
    Filter,
    /// Log search.
    Search,
}

/// A one-line prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct Prompt {
    /// What it is for.
    pub kind: PromptKind,
    /// The text so far.
    pub text: LineEdit,
}

/// Which part of a dialog has the focus. Dialogs open on Cancel (or the text field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialogFocus {
    /// The text field.
    Field,
    /// The Cancel button.
    Cancel,
    /// The confirm button.
    Confirm,
}

/// A state-changing action waiting for confirmation.
#[derive(Clone, Debug, PartialEq)]
pub enum PendingAction {
    /// Retry a run.
    Retry {
        /// The run.
        run: RunId,
        /// Every node.
        all: bool,
    },
    /// Cancel a run.
    Cancel(RunId),
    /// Decide an approval.
    Decide {
        /// Approval id.
        id: i64,
        /// Approve or reject.
        approve: bool,
    },
    /// Trigger a pipeline (the field holds the inputs).
    Trigger {
        /// The pipeline.
        name: String,
        /// The inputs it declares, whose types say how to read the field's
        /// values; None when its definition was not available.
        inputs: Option<Vec<DeclaredInput>>,
    },
    /// Enable or disable a pipeline.
    SetEnabled {
        /// The pipeline.
        name: String,
        /// New state.
        enabled: bool,
    },
}

/// A confirmation dialog.
#[derive(Clone, Debug, PartialEq)]
pub struct Dialog {
    /// Title ("Retry run #12?").
    pub title: String,
    /// Explanation lines.
    pub body: Vec<String>,
    /// Confirm button label.
    pub confirm: String,
    /// The dismiss button's label ("Cancel"; "Keep running" where "Cancel" would
    /// read like the action itself).
    pub dismiss: String,
    /// A text field (reason, inputs) and its label.
    pub field: Option<(String, LineEdit)>,
    /// The field must not be empty.
    pub required: bool,
    /// Focus.
    pub focus: DialogFocus,
    /// What happens on confirm.
    pub action: PendingAction,
    /// Sent with the call so the daemon can apply it once.
    pub idempotency_key: String,
    /// Why confirm did nothing (empty required field).
    pub error: Option<String>,
}

impl Dialog {
    /// Whether `y` and `n` confirm and dismiss while a button has the focus:
    /// only in a dialog without a text field. In one with a field (the
    /// trigger form's inputs, an approval's reason) letters typed on a button
    /// go back into the field, so a reason that goes on after `Enter` ("yes,
    /// tested") never approves or cancels; only `Enter` on a button acts.
    pub fn yes_no_keys(&self) -> bool {
        self.field.is_none()
    }
}

/// A message in the footer.
#[derive(Clone, Debug, PartialEq)]
pub struct Flash {
    /// Text.
    pub text: String,
    /// An error (red / bold).
    pub error: bool,
    /// Shown until (ms).
    pub until_ms: i64,
}

/// All state.
#[derive(Clone, Debug)]
pub struct App {
    /// Fixed options.
    pub opts: Options,
    /// Bindings in force.
    pub keymap: Keymap,
    /// Connection.
    pub conn: Conn,
    /// Data on screen is from before the last disconnect.
    pub stale: bool,
    /// Current view.
    pub view: View,
    /// Views to go back to.
    pub back: Vec<View>,
    /// Modal.
    pub overlay: Option<Overlay>,
    /// Now (ms), from ticks: views never read the clock themselves.
    pub now_ms: i64,
    /// Terminal size.
    pub size: (u16, u16),
    /// `status`.
    pub status: Option<StatusResult>,
    /// Runs.
    pub runs: RunsState,
    /// Open run.
    pub detail: Option<DetailState>,
    /// Approvals.
    pub approvals: ApprovalsState,
    /// Pipelines.
    pub pipelines: PipelinesState,
    /// Metrics.
    pub metrics: Option<MetricsResult>,
    /// Per-user usage against the limits (`limits.usage`).
    pub usage: Option<LimitsUsageResult>,
    /// The daemon has no `limits.usage` (older daemon).
    pub usage_unavailable: bool,
    /// Audit rows, newest first.
    pub audit: Vec<AuditEntry>,
    /// Audit selection.
    pub audit_cursor: Cursor,
    /// Footer message.
    pub flash: Option<Flash>,
    /// Last event sequence number seen (a gap means events were dropped).
    pub last_seq: Option<u64>,
    /// Counter for idempotency keys.
    pub action_counter: u64,
    /// Pipelines by run id, for rows created by events.
    pub run_pipelines: HashMap<RunId, String>,
    /// Set by `Quit`.
    pub quit: bool,
    /// When status and the current view were last polled (ms).
    pub polled_ms: i64,
    /// The daemon answered at least once (handshake and subscription).
    pub connected_once: bool,
}

impl App {
    /// A fresh console, not connected yet.
    pub fn new(opts: Options, keymap: Keymap, now_ms: i64) -> Self {
        Self {
            opts,
            keymap,
            conn: Conn::Connecting,
            stale: false,
            view: View::Runs,
            back: Vec::new(),
            overlay: None,
            now_ms,
            size: (80, 24),
            status: None,
            runs: RunsState::default(),
            detail: None,
            approvals: ApprovalsState::default(),
            pipelines: PipelinesState::default(),
            metrics: None,
            usage: None,
            usage_unavailable: false,
            audit: Vec::new(),
            audit_cursor: Cursor::default(),
            flash: None,
            last_seq: None,
            action_counter: 0,
            run_pipelines: HashMap::new(),
            quit: false,
            polled_ms: now_ms,
            connected_once: false,
        }
    }

    /// The caller's role, once known.
    pub fn role(&self) -> Option<Role> {
        match &self.conn {
            Conn::Connected { hello, .. } => Some(hello.role),
            _ => None,
        }
    }

    /// Why `action` cannot be done now, or None when it can.
    pub fn disabled_reason(&self, action: Action) -> Option<String> {
        let need = action.required_role()?;
        if self.opts.readonly {
            return Some("read-only console (--readonly)".into());
        }
        match &self.conn {
            Conn::Connected { hello, synced } => {
                if !synced {
                    Some("resynchronising with the daemon".into())
                } else if hello.role < need {
                    Some(format!(
                        "needs role {} (you are {})",
                        need.as_str(),
                        hello.role.as_str()
                    ))
                } else {
                    None
                }
            }
            _ => Some("not connected to the daemon".into()),
        }
    }

    /// "not connected yet — waiting for sluiced at …" while the daemon has
    /// never answered: empty lists then mean nothing yet, not "none".
    pub fn waiting_for_daemon(&self) -> Option<String> {
        if self.connected_once {
            return None;
        }
        Some(format!(
            "not connected yet — waiting for sluiced at {}",
            self.opts.daemon
        ))
    }

    /// Lines in the `?` help (a heading per scope, a line per binding).
    pub fn help_len(&self) -> usize {
        Scope::ALL
            .iter()
            .map(|&s| match self.keymap.scope(s).count() {
                0 => 0,
                n => n + 1,
            })
            .sum()
    }

    /// Pending approvals, for the badge.
    pub fn approvals_badge(&self) -> u64 {
        if self.approvals.loaded {
            self.approvals.pending.len() as u64
        } else {
            self.status.as_ref().map_or(0, |s| s.approvals_pending)
        }
    }

    /// Rows of the runs table after the local text filter.
    pub fn visible_count(&self) -> usize {
        if local_filter_text(&self.runs.filter).is_empty() {
            self.runs.rows.len()
        } else {
            self.runs.matching.len()
        }
    }

    /// The `i`th row of the runs table after the local text filter.
    pub fn visible_run(&self, i: usize) -> Option<&RunSummary> {
        if local_filter_text(&self.runs.filter).is_empty() {
            self.runs.rows.get(i)
        } else {
            self.runs
                .matching
                .get(i)
                .and_then(|&j| self.runs.rows.get(j))
        }
    }

    /// The highlighted run: the one with `selected_id` if it is listed.
    pub fn selected_run(&self) -> Option<&RunSummary> {
        let id = self.runs.selected_id?;
        (0..self.visible_count())
            .filter_map(|i| self.visible_run(i))
            .find(|r| r.id == id)
    }

    /// Recomputes which rows the local text filter keeps (after rows or the filter changed).
    pub fn refilter(&mut self) {
        let text: Vec<String> = local_filter_text(&self.runs.filter)
            .iter()
            .map(|t| t.to_lowercase())
            .collect();
        self.runs.matching.clear();
        if text.is_empty() {
            return;
        }
        for (i, r) in self.runs.rows.iter().enumerate() {
            let keep = text.iter().all(|t| {
                r.pipeline.to_lowercase().contains(t)
                    || r.id.to_string().contains(t)
                    || r.user.as_deref().unwrap_or("").to_lowercase().contains(t)
                    || r.error.as_deref().unwrap_or("").to_lowercase().contains(t)
                    || r.trigger.kind.as_str().contains(t)
            });
            if keep {
                self.runs.matching.push(i);
            }
        }
    }
}

/// The server-side part of a runs filter: `pipeline:NAME` / `p:NAME` and state names.
pub fn server_filter(filter: &str) -> (Option<String>, Vec<RunState>) {
    let mut pipeline = None;
    let mut states = Vec::new();
    for word in filter.split_whitespace() {
        if let Some(p) = word
            .strip_prefix("pipeline:")
            .or_else(|| word.strip_prefix("p:"))
        {
            pipeline = Some(p.to_string());
        } else if let Ok(s) = word.trim_start_matches("state:").parse::<RunState>() {
            states.push(s);
        }
    }
    (pipeline, states)
}

/// The words of a runs filter matched locally against the loaded rows.
pub fn local_filter_text(filter: &str) -> Vec<&str> {
    filter
        .split_whitespace()
        .filter(|w| {
            !w.starts_with("pipeline:")
                && !w.starts_with("p:")
                && w.trim_start_matches("state:").parse::<RunState>().is_err()
        })
        .collect()
}
