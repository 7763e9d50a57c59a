//! What triggers keep across restarts: cron schedule cursors and pauses, the
//! misfire ledger, and delivery keys that deduplicate redelivered triggers.

use super::backend::{Cols, read};
use super::writer::{RunRow, Write, Written};
use super::{NewRun, SqlArg, Store, StoreError, now_ms};
use serde::Serialize;
use sluice_shared::run::{RunId, RunState};

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
    SqlArg::opt_text(s.map(str::to_owned))
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
        let id: Option<i64> = read!(self, pool => sqlx::query_scalar(
            "SELECT run_id FROM trigger_keys WHERE pipeline = $1 AND key = $2 AND expires_at > $3",
        )
        .bind(pipeline)
        .bind(key)
        .bind(now_ms())
        .fetch_optional(pool)
        .await?);
        Ok(id.map(RunId))
    }

    /// Deletes delivery keys that expired before `now_ms`; returns how many.
    pub async fn prune_trigger_keys(&self, now_ms: i64) -> Result<i64, StoreError> {
        self.exec(vec![(
            "DELETE FROM trigger_keys WHERE expires_at <= $1".into(),
            vec![SqlArg::Int(now_ms)],
        )])
        .await
    }

    /// Unfinished runs (queued, running, waiting) of a pipeline, oldest first.
    pub async fn active_runs(&self, pipeline: &str) -> Result<Vec<(RunId, RunState)>, StoreError> {
        let rows: Vec<(i64, String)> = read!(self, pool => sqlx::query_as(
            "SELECT id, state FROM runs WHERE finished_at IS NULL AND state IN ('queued', 'running', 'waiting') AND pipeline = $1 ORDER BY id",
        )
        .bind(pipeline)
        .fetch_all(pool)
        .await?);
        rows.into_iter()
            .map(|(id, state)| {
                Ok((
                    RunId(id),
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
        Ok(read!(self, pool => sqlx::query_scalar(
            "SELECT DISTINCT pipeline FROM runs WHERE finished_at IS NULL AND state = 'queued'",
        )
        .fetch_all(pool)
        .await?))
    }

    /// Every stored schedule state.
    pub async fn schedule_rows(&self) -> Result<Vec<ScheduleRow>, StoreError> {
        read!(self, pool => sqlx::query("SELECT * FROM schedules ORDER BY pipeline, schedule")
            .fetch_all(pool)
            .await?
            .iter()
            .map(schedule_row)
            .collect())
    }

    /// Records a schedule's progress and its ledger entries in one commit.
    pub async fn schedule_progress(
        &self,
        pipeline: &str,
        schedule: &str,
        progress: ScheduleProgress,
    ) -> Result<(), StoreError> {
        let mut statements = vec![(
            format!(
            "INSERT INTO schedules (pipeline, schedule, handled_until, last_fired_at, last_run_id)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (pipeline, schedule) DO UPDATE SET
                handled_until = {},
                last_fired_at = COALESCE($4, schedules.last_fired_at),
                last_run_id = COALESCE($5, schedules.last_run_id)",
                self.dialect().greatest("COALESCE(schedules.handled_until, $3)", "$3")
            ),
            vec![
                SqlArg::Text(pipeline.into()),
                SqlArg::Text(schedule.into()),
                SqlArg::Int(progress.handled_until),
                SqlArg::opt_int(progress.fired.map(|(at, _)| at)),
                SqlArg::opt_int(progress.fired.map(|(_, run)| run.0)),
            ],
        )];
        let at = now_ms();
        for m in progress.misfires {
            statements.push((
                "INSERT INTO misfires (pipeline, schedule, due_first, due_last, missed, reason, action, run_id, recorded_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                    .to_owned(),
                vec![
                    SqlArg::Text(m.pipeline),
                    SqlArg::Text(m.schedule),
                    SqlArg::Int(m.due_first),
                    SqlArg::Int(m.due_last),
                    SqlArg::Int(m.missed),
                    SqlArg::Text(m.reason),
                    SqlArg::Text(m.action),
                    SqlArg::opt_int(m.run.map(|r| r.0)),
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
            "INSERT INTO schedules (pipeline, schedule, paused, paused_by, paused_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (pipeline, schedule) DO UPDATE SET paused = $3, paused_by = $4, paused_at = $5"
                .into(),
            vec![
                SqlArg::Text(pipeline.into()),
                SqlArg::Text(schedule.into()),
                SqlArg::opt_int(paused.map(i64::from)),
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
        read!(self, pool => sqlx::query(
            "SELECT * FROM misfires WHERE ($1 IS NULL OR pipeline = $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(pipeline)
        .bind(limit)
        .fetch_all(pool)
        .await?
        .iter()
        .map(misfire_record)
        .collect())
    }
}

fn schedule_row(r: &impl Cols) -> Result<ScheduleRow, StoreError> {
    Ok(ScheduleRow {
        pipeline: r.text("pipeline")?,
        schedule: r.text("schedule")?,
        handled_until: r.opt_int("handled_until")?,
        last_fired_at: r.opt_int("last_fired_at")?,
        last_run: r.opt_int("last_run_id")?.map(RunId),
        paused: r.opt_int("paused")?.map(|p| p != 0),
        paused_by: r.opt_text("paused_by")?,
    })
}

fn misfire_record(r: &impl Cols) -> Result<MisfireRecord, StoreError> {
    Ok(MisfireRecord {
        id: r.int("id")?,
        recorded_at: r.int("recorded_at")?,
        misfire: Misfire {
            pipeline: r.text("pipeline")?,
            schedule: r.text("schedule")?,
            due_first: r.int("due_first")?,
            due_last: r.int("due_last")?,
            missed: r.int("missed")?,
            reason: r.text("reason")?,
            action: r.text("action")?,
            run: r.opt_int("run_id")?.map(RunId),
        },
    })
}
