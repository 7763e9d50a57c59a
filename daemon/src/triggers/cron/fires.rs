//! One schedule's fires: counting those in a range, and firing one (the run
//! committed with its cursor, or the misfire recorded).

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};
use sluice_shared::cron::Schedule;
use sluice_shared::model::trigger::{CronTrigger, MisfirePolicy};
use sluice_shared::run::{TriggerInfo, TriggerKind};

use super::{Handled, Key, MAX_COUNTED, MISFIRE_THRESHOLD};
use crate::store::triggers::{Misfire, ScheduleProgress};
use crate::triggers::{Counters, Fired, TriggerError, Triggers};

/// Fires in `(from, to]`: how many (up to [`MAX_COUNTED`]), the first and the last.
pub(super) struct FireRange {
    pub(super) count: i64,
    pub(super) first: Option<Timestamp>,
    pub(super) last: Option<Timestamp>,
    /// The fire before `last` (so the last can be told apart when it runs on time).
    pub(super) before_last: Option<Timestamp>,
}

pub(super) fn fires_between(schedule: &Schedule, from: Timestamp, to: Timestamp) -> FireRange {
    let mut r = FireRange {
        count: 0,
        first: None,
        last: None,
        before_last: None,
    };
    let mut cursor = from;
    while r.count < MAX_COUNTED {
        let Some(next) = schedule.next_after(cursor) else {
            break;
        };
        let t = next.timestamp();
        if t > to {
            break;
        }
        r.count += 1;
        r.first.get_or_insert(t);
        r.before_last = r.last;
        r.last = Some(t);
        cursor = t;
    }
    r
}

/// The due fires of one schedule, handled off the actor.
pub(super) struct FireJob {
    pub(super) triggers: Triggers,
    pub(super) key: Key,
    pub(super) trigger: CronTrigger,
    pub(super) schedule: Schedule,
    pub(super) cursor: Timestamp,
    pub(super) now: Timestamp,
    pub(super) started: Timestamp,
}

impl FireJob {
    pub(super) async fn run(self) -> Handled {
        let range = fires_between(&self.schedule, self.cursor, self.now);
        let Some(last) = range.last else {
            return Handled {
                key: self.key,
                cursor: self.cursor,
            };
        };
        let late = self.now.duration_since(last);
        let on_time = (late <= MISFIRE_THRESHOLD).then_some(last);
        let missed_count = range.count - i64::from(on_time.is_some());
        let missed_last = if on_time.is_some() {
            range.before_last
        } else {
            Some(last)
        };
        let mut progress = ScheduleProgress {
            handled_until: last.as_millisecond(),
            ..Default::default()
        };
        let counters = self.triggers.counters();
        if let (Some(first), Some(missed_last)) = (range.first, missed_last)
            && missed_count > 0
        {
            Counters::add(&counters.misfires, u64::try_from(missed_count).unwrap_or(0));
            let reason = if missed_last < self.started {
                "the daemon was not running".to_owned()
            } else {
                format!(
                    "the scheduler woke {} late (clock jump or suspended host)",
                    sluice_shared::Duration(
                        Duration::try_from(self.now.duration_since(missed_last))
                            .unwrap_or_default()
                    )
                )
            };
            let mut entry = Misfire {
                pipeline: self.key.0.clone(),
                schedule: self.key.1.clone(),
                due_first: first.as_millisecond(),
                due_last: missed_last.as_millisecond(),
                missed: missed_count,
                reason,
                action: "skipped".into(),
                run: None,
            };
            match self.trigger.misfire {
                MisfirePolicy::Skip => entry.action = "skipped (misfire: skip)".into(),
                MisfirePolicy::RunOnce if on_time.is_some() => {
                    entry.action = "skipped: an on-time fire follows at once".into();
                }
                MisfirePolicy::RunOnce => {
                    let age = self.now.duration_since(missed_last);
                    let window = self
                        .trigger
                        .catchup_window
                        .and_then(|w| SignedDuration::try_from(w.std()).ok());
                    if window.is_some_and(|w| age > w) {
                        entry.action = format!(
                            "skipped: the latest missed fire is {} old, beyond catchup_window {}",
                            sluice_shared::Duration(Duration::try_from(age).unwrap_or_default()),
                            self.trigger
                                .catchup_window
                                .map(|w| w.to_string())
                                .unwrap_or_default()
                        );
                    } else {
                        let catchup = json!({
                            "missed": missed_count,
                            "first": self.rfc3339(first),
                            "last": self.rfc3339(missed_last),
                        });
                        match self.fire(missed_last, Some(catchup)).await {
                            Ok(Fired::Started { run, .. }) => {
                                entry.action = "ran once (misfire: run_once)".into();
                                entry.run = Some(run);
                                progress.fired = Some((missed_last.as_millisecond(), run));
                            }
                            Ok(Fired::Skipped { reason }) => {
                                entry.action = format!("catch-up run skipped: {reason}");
                            }
                            Err(e) => entry.action = format!("catch-up run failed to start: {e}"),
                        }
                    }
                }
            }
            progress.misfires.push(entry);
        }
        if let Some(t) = on_time {
            match self.fire(t, None).await {
                Ok(Fired::Started { run, .. }) => {
                    Counters::add(&counters.cron_fires, 1);
                    let late = jiff::Timestamp::now().duration_since(t);
                    self.triggers
                        .engine()
                        .telemetry()
                        .cron_fired_late(std::time::Duration::try_from(late).unwrap_or_default());
                    progress.fired = Some((t.as_millisecond(), run));
                }
                Ok(Fired::Skipped { reason }) => {
                    Counters::add(&counters.misfires, 1);
                    progress
                        .misfires
                        .push(self.single(t, reason, "skipped (on_overlap: skip)"));
                }
                Err(TriggerError::Limited(r)) => {
                    // A fire refused by a limit is recorded as such, with the limit's words.
                    Counters::add(&counters.misfires, 1);
                    tracing::warn!(pipeline = ?self.key.0, schedule = ?self.key.1, limit = r.limit.as_str(), "cron fire refused by a limit");
                    let action = match r.limit {
                        crate::limits::LimitKind::Queue | crate::limits::LimitKind::UserQueue => {
                            "refused (queue full)"
                        }
                        _ => "refused (limits)",
                    };
                    progress.misfires.push(self.single(t, r.message, action));
                }
                Err(e) => {
                    Counters::add(&counters.misfires, 1);
                    tracing::error!(pipeline = ?self.key.0, schedule = ?self.key.1, error = %e, "cron fire failed");
                    let reason = match &e {
                        TriggerError::Disabled { .. } => e.to_string(),
                        _ => format!("the run could not be started: {e}"),
                    };
                    progress.misfires.push(self.single(t, reason, "not run"));
                }
            }
        }
        if let Err(e) = self
            .triggers
            .engine()
            .store()
            .schedule_progress(&self.key.0, &self.key.1, progress)
            .await
        {
            // The fire's run (if any) carries a delivery key, so handling it again
            // after a restart finds the same run rather than starting another.
            tracing::error!(pipeline = ?self.key.0, schedule = ?self.key.1, error = %e, "cannot record schedule progress");
        }
        Handled {
            key: self.key,
            cursor: last,
        }
    }

    pub(super) fn single(&self, t: Timestamp, reason: String, action: &str) -> Misfire {
        Misfire {
            pipeline: self.key.0.clone(),
            schedule: self.key.1.clone(),
            due_first: t.as_millisecond(),
            due_last: t.as_millisecond(),
            missed: 1,
            reason,
            action: action.to_owned(),
            run: None,
        }
    }

    pub(super) fn rfc3339(&self, t: Timestamp) -> String {
        t.to_zoned(self.schedule.timezone().clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
    }

    pub(super) async fn fire(
        &self,
        at: Timestamp,
        catchup: Option<Value>,
    ) -> Result<Fired, TriggerError> {
        let entry = self.triggers.runnable(&self.key.0)?;
        let mut details = json!({
            "cron": self.trigger.cron,
            "timezone": self.schedule.timezone().iana_name().unwrap_or("local"),
            "schedule": self.key.1,
            "scheduled_at": self.rfc3339(at),
            "inputs": self.trigger.inputs,
        });
        if let (Some(c), Value::Object(m)) = (catchup, &mut details) {
            m.insert("catchup".into(), c);
        }
        let trigger = TriggerInfo {
            kind: TriggerKind::Cron,
            user: entry.pipeline.owner.clone(),
            details,
        };
        let inputs: Map<String, Value> = self
            .trigger
            .inputs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // One key per scheduled instant: a fire handled twice (a crash before its
        // cursor was saved) finds its run instead of starting another.
        let key = format!("cron:{}:{}", self.key.1, at.as_millisecond());
        self.triggers
            .fire(&entry, &inputs, trigger, Some(&key))
            .await
    }
}
