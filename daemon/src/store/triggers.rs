//! What triggers keep across restarts: cron schedule cursors and pauses, the
//! misfire ledger, and delivery keys that deduplicate redelivered triggers.

use serde::Serialize;
use sluice_shared::run::{RunId, RunState};
use sqlx::Row;

use super::writer::{RunRow, Write, Written};
use super::{NewRun, SqlArg, Store, StoreError, now_ms};

/// Stored state of one cron schedule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ScheduleRow {
    /// Pipeline name.
    pub pipeline: String,
    /// Schedule id within the pipeline.
    pub schedule: String,
    /// Fires at or before this instant (ms) are handled.
    pub handled_until: Option<i64>,
    /// Scheduled time (ms) of the last fire that started a run.
    pub last_fired_at: Option<i64>,
    /// The run it started.
    pub last_run: Option<RunId>,
    /// An operator's pause (`Some(true)`) or resume (`Some(false)`); `None` follows the file.
    pub paused: Option<bool>,
    /// Who paused or resumed it.
    pub paused_by: Option<String>,
}

/// One ledger entry: fires that did not run as scheduled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Misfire {
    /// Pipeline name.
    pub pipeline: String,
    /// Schedule id.
    pub schedule: String,
    /// First missed fire (ms).
    pub due_first: i64,
    /// Last missed fire (ms); equal to `due_first` for a single fire.
    pub due_last: i64,
    /// How many fires this entry covers.
    pub missed: i64,
    /// Why they did not run ("daemon was not running", "2 runs in flight (max_runs 2)").
    pub reason: String,
    /// What was done ("skipped", "ran once").
    pub action: String,
    /// The run started instead, if any.
    pub run: Option<RunId>,
}

/// A ledger entry as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MisfireRecord {
    /// Ledger id.
    pub id: i64,
    /// The entry.
    #[serde(flatten)]
    pub misfire: Misfire,
    /// When it was recorded (ms).
    pub recorded_at: i64,
}

/// Progress of one schedule, committed together.
#[derive(Clone, Debug, Default)]
pub struct ScheduleProgress {
    /// New cursor: every fire at or before it is handled.
    pub handled_until: i64,
    /// A fire that started a run: its scheduled time (ms) and the run.
    pub fired: Option<(i64, RunId)>,
    /// Ledger entries to add.
    pub misfires: Vec<Misfire>,
}

fn opt_text(s: Option<&str>) -> SqlArg {
    s.map_or(SqlArg::Null, |v| SqlArg::Text(v.to_owned()))
}

impl Store {
    /// Commits `run` unless `key` already names an unexpired run of the same
    /// pipeline. Returns the run and whether it was created now. The check and
    /// the insert are one write in the single writer, so concurrent identical
    /// deliveries make exactly one run.
    pub async fn create_run_once(
        &self,
        run: NewRun,
        key: &str,
        ttl_ms: i64,
    ) -> Result<(RunId, bool), StoreError> {
        let at = now_ms();
        match self
            .write(Write::CreateRunOnce {
                run: RunRow::encode(std::sync::Arc::new(run))?,
                key: key.to_owned(),
                expires_at: at.saturating_add(ttl_ms),
                at,
            })
            .await?
        {
            Written::Id(id) => Ok((RunId(id), true)),
            Written::Existing(id) => Ok((RunId(id), false)),
            other => Err(StoreError::Data(format!(
                "unexpected write result {other:?}"
            ))),
        }
    }

    /// The run an unexpired delivery key names.
    pub async fn run_for_key(
        &self,
        pipeline: &str,
        key: &str,
    ) -> Result<Option<RunId>, StoreError> {
        let id: Option<i64> = sqlx::query_scalar(
            "SELECT run_id FROM trigger_keys WHERE pipeline = ? AND key = ? AND expires_at > ?",
        )
        .bind(pipeline)
        .bind(key)
        .bind(now_ms())
        .fetch_optional(self.reads())
        .await?;
        Ok(id.map(RunId))
    }

    /// Deletes delivery keys that expired before `now_ms`; returns how many.
    pub async fn prune_trigger_keys(&self, now_ms: i64) -> Result<i64, StoreError> {
        self.exec(vec![(
            "DELETE FROM trigger_keys WHERE expires_at <= ?".into(),
            vec![SqlArg::Int(now_ms)],
        )])
        .await
    }

    /// Unfinished runs (queued, running, waiting) of a pipeline, oldest first.
    pub async fn active_runs(&self, pipeline: &str) -> Result<Vec<(RunId, RunState)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, state FROM runs WHERE state IN ('queued', 'running', 'waiting') AND pipeline = ? ORDER BY id",
        )
        .bind(pipeline)
        .fetch_all(self.reads())
        .await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get("state")?;
                Ok((
                    RunId(r.try_get("id")?),
                    state
                        .parse()
                        .map_err(|e: sluice_shared::run::UnknownState| {
                            StoreError::Data(e.to_string())
                        })?,
                ))
            })
            .collect()
    }

    /// Pipelines that have queued runs (to look at after missed events).
    pub async fn pipelines_with_queued_runs(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT DISTINCT pipeline FROM runs WHERE state = 'queued'")
                .fetch_all(self.reads())
                .await?,
        )
    }

    /// Every stored schedule state.
    pub async fn schedule_rows(&self) -> Result<Vec<ScheduleRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM schedules ORDER BY pipeline, schedule")
            .fetch_all(self.reads())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ScheduleRow {
                    pipeline: r.try_get("pipeline")?,
                    schedule: r.try_get("schedule")?,
                    handled_until: r.try_get("handled_until")?,
                    last_fired_at: r.try_get("last_fired_at")?,
                    last_run: r.try_get::<Option<i64>, _>("last_run_id")?.map(RunId),
                    paused: r.try_get::<Option<i64>, _>("paused")?.map(|p| p != 0),
                    paused_by: r.try_get("paused_by")?,
                })
            })
            .collect()
    }

    /// Records a schedule's progress and its ledger entries in one commit.
    pub async fn schedule_progress(
        &self,
        pipeline: &str,
        schedule: &str,
        progress: ScheduleProgress,
    ) -> Result<(), StoreError> {
        let mut statements =
            vec![(
            "INSERT INTO schedules (pipeline, schedule, handled_until, last_fired_at, last_run_id)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (pipeline, schedule) DO UPDATE SET
                handled_until = MAX(COALESCE(handled_until, ?3), ?3),
                last_fired_at = COALESCE(?4, last_fired_at),
                last_run_id = COALESCE(?5, last_run_id)"
                .to_owned(),
            vec![
                SqlArg::Text(pipeline.into()),
                SqlArg::Text(schedule.into()),
                SqlArg::Int(progress.handled_until),
                progress.fired.map_or(SqlArg::Null, |(at, _)| SqlArg::Int(at)),
                progress
                    .fired
                    .map_or(SqlArg::Null, |(_, run)| SqlArg::Int(run.0)),
            ],
        )];
        let at = now_ms();
        for m in progress.misfires {
            statements.push((
                "INSERT INTO misfires (pipeline, schedule, due_first, due_last, missed, reason, action, run_id, recorded_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    .to_owned(),
                vec![
                    SqlArg::Text(m.pipeline),
                    SqlArg::Text(m.schedule),
                    SqlArg::Int(m.due_first),
                    SqlArg::Int(m.due_last),
                    SqlArg::Int(m.missed),
                    SqlArg::Text(m.reason),
                    SqlArg::Text(m.action),
                    m.run.map_or(SqlArg::Null, |r| SqlArg::Int(r.0)),
                    SqlArg::Int(at),
                ],
            ));
        }
        self.exec(statements).await.map(|_| ())
    }

    /// Pauses (`Some(true)`), resumes (`Some(false)`) or returns a schedule to
    /// what its file says (`None`).
    pub async fn set_schedule_paused(
        &self,
        pipeline: &str,
        schedule: &str,
        paused: Option<bool>,
        by: Option<&str>,
    ) -> Result<(), StoreError> {
        self.exec(vec![(
            "INSERT INTO schedules (pipeline, schedule, paused, paused_by, paused_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (pipeline, schedule) DO UPDATE SET paused = ?3, paused_by = ?4, paused_at = ?5"
                .into(),
            vec![
                SqlArg::Text(pipeline.into()),
                SqlArg::Text(schedule.into()),
                paused.map_or(SqlArg::Null, |p| SqlArg::Int(i64::from(p))),
                opt_text(by),
                SqlArg::Int(now_ms()),
            ],
        )])
        .await
        .map(|_| ())
    }

    /// Ledger entries, newest first (optionally of one pipeline).
    pub async fn misfires(
        &self,
        pipeline: Option<&str>,
        limit: i64,
    ) -> Result<Vec<MisfireRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM misfires WHERE (?1 IS NULL OR pipeline = ?1) ORDER BY id DESC LIMIT ?2",
        )
        .bind(pipeline)
        .bind(limit)
        .fetch_all(self.reads())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MisfireRecord {
                    id: r.try_get("id")?,
                    recorded_at: r.try_get("recorded_at")?,
                    misfire: Misfire {
                        pipeline: r.try_get("pipeline")?,
                        schedule: r.try_get("schedule")?,
                        due_first: r.try_get("due_first")?,
                        due_last: r.try_get("due_last")?,
                        missed: r.try_get("missed")?,
                        reason: r.try_get("reason")?,
                        action: r.try_get("action")?,
                        run: r.try_get::<Option<i64>, _>("run_id")?.map(RunId),
                    },
                })
            })
            .collect()
    }
}
