//! The cron scheduler: one actor owns every schedule's next fire time in a
//! deadline map and sleeps until the earliest (at most a minute at a time, so
//! a wall-clock jump or a suspended host is noticed), as mini-redis's purge
//! task does. Fire times come from croner in each trigger's IANA zone (see
//! `sluice_shared::cron`), always computed from the previous *scheduled* time,
//! so a slow fire never shifts the schedule.
//!
//! Every schedule keeps a cursor in the store ("every fire up to here is
//! handled"). Fires found between the cursor and now that are more than
//! [`MISFIRE_THRESHOLD`] late did not run on time — the daemon was down, the
//! host slept, the clock jumped — and go to the misfire policy and the ledger.
//!
//! Time comes from a [`Clock`], so tests drive the scheduler with a
//! [`ManualClock`] instead of waiting.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use sluice_shared::cron::Schedule;
use sluice_shared::event::Event;
use sluice_shared::model::Trigger;
use sluice_shared::model::trigger::CronTrigger;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Counters, Triggers};
use crate::store::StoreError;
use crate::store::triggers::{Misfire, ScheduleProgress, ScheduleRow};

mod clock;
mod fires;

pub use clock::{Clock, ManualClock, SystemClock};
use fires::{FireJob, fires_between};

/// A fire this late (or less) still runs as scheduled; later ones are misfires.
pub const MISFIRE_THRESHOLD: SignedDuration = SignedDuration::from_secs(60);

/// The scheduler sleeps at most this long before looking at the clock again.
pub const MAX_SLEEP: SignedDuration = SignedDuration::from_secs(60);

/// Counting missed fires stops here (a per-second schedule down for a month).
const MAX_COUNTED: i64 = 100_000;

/// What the scheduler last did: it handled every fire due at or before `now`,
/// and will wake next at `next` (tests wait on this instead of sleeping).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tick {
    /// The clock time it processed up to.
    pub now: Timestamp,
    /// The earliest scheduled fire, if any.
    pub next: Option<Timestamp>,
}

/// One schedule as the console shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScheduleInfo {
    /// Pipeline name.
    pub pipeline: String,
    /// Short id within the pipeline (see [`short_id`]): what `pause` and `resume` take.
    pub id: String,
    /// The stored key (`<expression>@<zone>`, `#2`... for repeats); also accepted.
    pub key: String,
    /// The cron expression.
    pub cron: String,
    /// The zone it is read in.
    pub timezone: String,
    /// Paused (by the file or an operator).
    pub paused: bool,
    /// Next fire, RFC 3339 with offset.
    pub next: Option<String>,
    /// Every fire up to here is handled (ms).
    pub handled_until: i64,
}

/// Why a pause or resume was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// No such schedule.
    #[error("pipeline '{pipeline}' has no schedule '{id}'{}", known_ids(.known))]
    NotFound {
        /// The pipeline.
        pipeline: String,
        /// The schedule id asked for.
        id: String,
        /// The pipeline's schedule ids.
        known: Vec<String>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The scheduler has stopped.
    #[error("the scheduler has stopped")]
    Stopped,
}

fn known_ids(known: &[String]) -> String {
    if known.is_empty() {
        " (it has no cron triggers)".to_owned()
    } else {
        format!("; its schedules: {}", known.join(", "))
    }
}

enum Command {
    Reload(oneshot::Sender<()>),
    SetPaused {
        pipeline: String,
        id: String,
        paused: bool,
        by: Option<String>,
        reply: oneshot::Sender<Result<(), ScheduleError>>,
    },
    List(oneshot::Sender<Vec<ScheduleInfo>>),
}

/// Handle to the scheduler actor; cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    tx: mpsc::Sender<Command>,
    ticks: watch::Receiver<Tick>,
}

impl Scheduler {
    /// Starts the scheduler: loads schedules from the registry, then fires them
    /// until `shutdown`. Pipeline changes the registry announces reschedule.
    pub fn spawn(triggers: Triggers, clock: Arc<dyn Clock>, shutdown: CancellationToken) -> Self {
        let (tx, rx) = mpsc::channel(64);
        let now = clock.now();
        let (tick_tx, ticks) = watch::channel(Tick { now, next: None });
        let events = triggers.registry().subscribe_changes();
        let actor = Actor {
            triggers,
            clock,
            started: now,
            schedules: HashMap::new(),
            inactive: HashMap::new(),
            due: BTreeSet::new(),
            ticks: tick_tx,
        };
        tokio::spawn(actor.run(rx, events, shutdown));
        Self { tx, ticks }
    }

    /// Re-reads the registry now; returns once the schedules are updated.
    pub async fn reload(&self) -> Result<(), ScheduleError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Reload(tx))
            .await
            .map_err(|_| ScheduleError::Stopped)?;
        rx.await.map_err(|_| ScheduleError::Stopped)
    }

    /// Pauses (`true`) or resumes (`false`) a schedule, remembered across restarts.
    /// Fires that come due while paused are skipped and recorded when it resumes.
    pub async fn set_paused(
        &self,
        pipeline: &str,
        id: &str,
        paused: bool,
        by: Option<&str>,
    ) -> Result<(), ScheduleError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::SetPaused {
                pipeline: pipeline.to_owned(),
                id: id.to_owned(),
                paused,
                by: by.map(str::to_owned),
                reply,
            })
            .await
            .map_err(|_| ScheduleError::Stopped)?;
        rx.await.map_err(|_| ScheduleError::Stopped)?
    }

    /// Every schedule with its next fire.
    pub async fn list(&self) -> Result<Vec<ScheduleInfo>, ScheduleError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::List(tx))
            .await
            .map_err(|_| ScheduleError::Stopped)?;
        rx.await.map_err(|_| ScheduleError::Stopped)
    }

    /// The latest tick.
    pub fn tick(&self) -> Tick {
        *self.ticks.borrow()
    }

    /// Waits until every fire due at or before `t` has been handled.
    pub async fn settled(&self, t: Timestamp) -> Result<Tick, ScheduleError> {
        let mut rx = self.ticks.clone();
        rx.wait_for(|tick| tick.now >= t)
            .await
            .map(|tick| *tick)
            .map_err(|_| ScheduleError::Stopped)
    }
}

/// The schedule ids of a pipeline's cron triggers, in file order:
/// `<expression>@<zone>`, with `#2`, `#3`... for repeats of the same pair.
pub fn schedule_ids(triggers: &[Trigger]) -> Vec<(String, CronTrigger)> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for t in triggers {
        if let Trigger::Cron(c) = t {
            let base = format!(
                "{}@{}",
                c.cron.trim(),
                c.timezone.as_deref().unwrap_or("local")
            );
            let n = seen.entry(base.clone()).or_insert(0);
            *n += 1;
            let id = if *n == 1 { base } else { format!("{base}#{n}") };
            out.push((id, c.clone()));
        }
    }
    out
}

/// A schedule's short id: six hex digits of the SHA-256 of its stored key
/// (`<expression>@<zone>`), so it needs no shell quoting, stays the same
/// across restarts and reorderings of the file, and changes only with the
/// expression or the zone (which make it another schedule anyway).
pub fn short_id(key: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    digest[..3].iter().map(|b| format!("{b:02x}")).collect()
}

type Key = (String, String);

struct Sched {
    trigger: CronTrigger,
    schedule: Schedule,
    /// Every fire at or before this is handled.
    cursor: Timestamp,
    /// The file says `paused: true`.
    file_paused: bool,
    /// An operator's choice, which wins over the file.
    operator_paused: Option<bool>,
    /// The fire the deadline map holds for it.
    next: Option<Timestamp>,
}

impl Sched {
    fn paused(&self) -> bool {
        self.operator_paused.unwrap_or(self.file_paused)
    }
}

struct Actor {
    triggers: Triggers,
    clock: Arc<dyn Clock>,
    /// When this scheduler started: missed fires before it are downtime.
    started: Timestamp,
    schedules: HashMap<Key, Sched>,
    /// Schedules dropped because their pipeline was disabled or removed, with
    /// why: fires missed meanwhile are skipped, not caught up, when they return.
    inactive: HashMap<Key, String>,
    due: BTreeSet<(Timestamp, String, String)>,
    ticks: watch::Sender<Tick>,
}

/// What one schedule's due fires came to.
struct Handled {
    key: Key,
    cursor: Timestamp,
}

impl Actor {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        mut events: broadcast::Receiver<Event>,
        shutdown: CancellationToken,
    ) {
        self.reload().await;
        let mut events_open = true;
        loop {
            let now = self.clock.now();
            self.fire_due(now).await;
            let next = self.due.first().map(|(t, _, _)| *t);
            self.ticks.send_replace(Tick { now, next });
            let cap = now.saturating_add(MAX_SLEEP).unwrap_or(now);
            let wake = next.map_or(cap, |n| n.min(cap));
            let mut sleep = self.clock.sleep_until(wake);
            // The registry's bus carries pipeline changes only (listening to
            // the engine's, every run's events woke this actor ~5 times per
            // run); anything else keeps the same sleep rather than a new turn.
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    cmd = rx.recv() => match cmd {
                        Some(cmd) => {
                            self.command(cmd).await;
                            break;
                        }
                        None => return,
                    },
                    e = events.recv(), if events_open => match e {
                        Ok(Event::PipelineChanged { .. }) | Err(broadcast::error::RecvError::Lagged(_)) => {
                            self.reload().await;
                            break;
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Closed) => events_open = false,
                    },
                    () = shutdown.cancelled() => return,
                }
            }
        }
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Reload(reply) => {
                self.reload().await;
                let _ = reply.send(());
            }
            Command::SetPaused {
                pipeline,
                id,
                paused,
                by,
                reply,
            } => {
                let r = self.set_paused(pipeline, id, paused, by).await;
                let _ = reply.send(r);
            }
            Command::List(reply) => {
                let mut out: Vec<ScheduleInfo> = self
                    .schedules
                    .iter()
                    .map(|((pipeline, id), s)| ScheduleInfo {
                        pipeline: pipeline.clone(),
                        id: short_id(id),
                        key: id.clone(),
                        cron: s.trigger.cron.clone(),
                        timezone: s
                            .schedule
                            .timezone()
                            .iana_name()
                            .unwrap_or("local")
                            .to_owned(),
                        paused: s.paused(),
                        next: s.next.map(|t| {
                            t.to_zoned(s.schedule.timezone().clone())
                                .strftime("%Y-%m-%dT%H:%M:%S%:z")
                                .to_string()
                        }),
                        handled_until: s.cursor.as_millisecond(),
                    })
                    .collect();
                out.sort_by(|a, b| (&a.pipeline, &a.id).cmp(&(&b.pipeline, &b.id)));
                let _ = reply.send(out);
            }
        }
    }

    /// Makes the schedules match the registry's runnable pipelines.
    async fn reload(&mut self) {
        let stored: HashMap<Key, ScheduleRow> = match self
            .triggers
            .engine()
            .store()
            .schedule_rows()
            .await
        {
            Ok(rows) => rows
                .into_iter()
                .map(|r| ((r.pipeline.clone(), r.schedule.clone()), r))
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "cannot read schedule state; keeping the current schedules");
                return;
            }
        };
        let now = self.clock.now();
        let mut wanted: HashMap<Key, CronTrigger> = HashMap::new();
        let mut why_inactive: HashMap<String, String> = HashMap::new();
        for entry in self.triggers.registry().list() {
            let name = entry.pipeline.name.clone();
            let ids = schedule_ids(&entry.pipeline.triggers);
            if !entry.runnable() {
                let why = if entry.present {
                    "the pipeline was disabled"
                } else {
                    "the pipeline's file was removed"
                };
                why_inactive.insert(name, why.to_owned());
                continue;
            }
            for (id, trigger) in ids {
                wanted.insert((name.clone(), id), trigger);
            }
        }
        // Drop what is gone, remembering why so its return does not catch up.
        let gone: Vec<Key> = self
            .schedules
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(s) = self.schedules.remove(&key) {
                if let Some(t) = s.next {
                    self.due.remove(&(t, key.0.clone(), key.1.clone()));
                }
                let why = why_inactive
                    .get(&key.0)
                    .cloned()
                    .unwrap_or_else(|| "the schedule was removed from its file".into());
                self.inactive.insert(key, why);
            }
        }
        let mut progress: Vec<(Key, ScheduleProgress)> = Vec::new();
        for (key, trigger) in wanted {
            let schedule = match Schedule::new(
                &trigger.cron,
                trigger.timezone.as_deref(),
                trigger.seconds,
            ) {
                Ok(s) => s,
                Err(e) => {
                    // Validation rejects these before they reach the registry.
                    tracing::error!(pipeline = ?key.0, schedule = ?key.1, error = %e, "invalid schedule");
                    continue;
                }
            };
            if let Some(s) = self.schedules.get_mut(&key) {
                // Same expression and zone (the id says so): keep the cursor, take new inputs.
                s.file_paused = trigger.paused;
                s.trigger = trigger;
                s.schedule = schedule;
                continue;
            }
            let row = stored.get(&key);
            let operator_paused = row.and_then(|r| r.paused);
            let mut cursor = row
                .and_then(|r| r.handled_until)
                .and_then(|ms| Timestamp::from_millisecond(ms).ok());
            let returning = self.inactive.remove(&key);
            let sched_paused = operator_paused.unwrap_or(trigger.paused);
            match (cursor, returning) {
                (None, _) => {
                    // Never seen: start from now, and persist that, so downtime before
                    // the first fire is still noticed.
                    cursor = Some(now);
                    progress.push((
                        key.clone(),
                        ScheduleProgress {
                            handled_until: now.as_millisecond(),
                            ..Default::default()
                        },
                    ));
                }
                (Some(c), Some(why)) if c < now && !sched_paused => {
                    let m = self.skip_range(&key, &schedule, c, now, &why);
                    cursor = Some(now);
                    progress.push((
                        key.clone(),
                        ScheduleProgress {
                            handled_until: now.as_millisecond(),
                            misfires: m.into_iter().collect(),
                            ..Default::default()
                        },
                    ));
                }
                _ => {}
            }
            let cursor = cursor.unwrap_or(now);
            self.schedules.insert(
                key,
                Sched {
                    file_paused: trigger.paused,
                    trigger,
                    schedule,
                    cursor,
                    operator_paused,
                    next: None,
                },
            );
        }
        for (key, p) in progress {
            self.persist(&key, p).await;
        }
        let keys: Vec<Key> = self.schedules.keys().cloned().collect();
        for key in keys {
            self.plan(&key);
        }
    }

    /// Puts a schedule's next fire in the deadline map (none while paused).
    fn plan(&mut self, key: &Key) {
        let Some(s) = self.schedules.get_mut(key) else {
            return;
        };
        if let Some(t) = s.next.take() {
            self.due.remove(&(t, key.0.clone(), key.1.clone()));
        }
        if s.paused() {
            return;
        }
        if let Some(next) = s.schedule.next_after(s.cursor) {
            let t = next.timestamp();
            s.next = Some(t);
            self.due.insert((t, key.0.clone(), key.1.clone()));
        }
    }

    async fn set_paused(
        &mut self,
        pipeline: String,
        id: String,
        paused: bool,
        by: Option<String>,
    ) -> Result<(), ScheduleError> {
        // The short id (as `sluice schedules` shows it) or the stored key.
        let id = self
            .schedules
            .keys()
            .find(|(p, k)| *p == pipeline && short_id(k) == id)
            .map_or(id, |(_, k)| k.clone());
        let key = (pipeline, id);
        let Some(s) = self.schedules.get(&key) else {
            let known = self
                .schedules
                .keys()
                .filter(|(p, _)| *p == key.0)
                .map(|(_, id)| short_id(id))
                .collect();
            return Err(ScheduleError::NotFound {
                pipeline: key.0,
                id: key.1,
                known,
            });
        };
        let was_paused = s.paused();
        let store = self.triggers.engine().store().clone();
        store
            .set_schedule_paused(&key.0, &key.1, Some(paused), by.as_deref())
            .await?;
        let now = self.clock.now();
        let mut misfire = None;
        if let Some(s) = self.schedules.get_mut(&key) {
            s.operator_paused = Some(paused);
            if was_paused && !paused && s.cursor < now {
                // Fires that came due while paused are skipped, not caught up.
                let (schedule, cursor) = (s.schedule.clone(), s.cursor);
                s.cursor = now;
                misfire =
                    Some(self.skip_range(&key, &schedule, cursor, now, "the schedule was paused"));
            }
        }
        if let Some(m) = misfire {
            self.persist(
                &key,
                ScheduleProgress {
                    handled_until: now.as_millisecond(),
                    misfires: m.into_iter().collect(),
                    ..Default::default()
                },
            )
            .await;
        }
        self.plan(&key);
        Ok(())
    }

    /// A ledger entry for fires in `(from, to]` that are skipped because `why`.
    fn skip_range(
        &self,
        key: &Key,
        schedule: &Schedule,
        from: Timestamp,
        to: Timestamp,
        why: &str,
    ) -> Option<Misfire> {
        let fires = fires_between(schedule, from, to);
        let (first, last) = (fires.first?, fires.last?);
        Counters::add(
            &self.triggers.counters().misfires,
            u64::try_from(fires.count).unwrap_or(0),
        );
        Some(Misfire {
            pipeline: key.0.clone(),
            schedule: key.1.clone(),
            due_first: first.as_millisecond(),
            due_last: last.as_millisecond(),
            missed: fires.count,
            reason: why.to_owned(),
            action: "skipped".into(),
            run: None,
        })
    }

    async fn persist(&self, key: &Key, progress: ScheduleProgress) {
        if let Err(e) = self
            .triggers
            .engine()
            .store()
            .schedule_progress(&key.0, &key.1, progress)
            .await
        {
            tracing::error!(pipeline = ?key.0, schedule = ?key.1, error = %e, "cannot record schedule progress");
        }
    }

    /// Handles every schedule with a fire at or before `now`; schedules are
    /// handled concurrently (their commits share group commits) and all are
    /// finished before this returns.
    async fn fire_due(&mut self, now: Timestamp) {
        let mut keys = Vec::new();
        while let Some((t, _, _)) = self.due.first() {
            if *t > now {
                break;
            }
            if let Some((_, p, id)) = self.due.pop_first() {
                keys.push((p, id));
            }
        }
        if keys.is_empty() {
            return;
        }
        let mut tasks = JoinSet::new();
        for key in keys {
            let Some(s) = self.schedules.get_mut(&key) else {
                continue;
            };
            s.next = None;
            let job = FireJob {
                triggers: self.triggers.clone(),
                key: key.clone(),
                trigger: s.trigger.clone(),
                schedule: s.schedule.clone(),
                cursor: s.cursor,
                now,
                started: self.started,
            };
            tasks.spawn(job.run());
        }
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(h) => {
                    if let Some(s) = self.schedules.get_mut(&h.key) {
                        s.cursor = h.cursor;
                    }
                    self.plan(&h.key);
                }
                Err(e) => tracing::error!(error = %e, "a cron fire task failed"),
            }
        }
    }
}
