//! Throughput, success rate and durations, kept in memory from the event
//! stream and seeded from the store at start, so a restart does not blank
//! the console's charts.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use sluice_shared::event::Event;
use sluice_shared::protocol::{MetricsResult, PipelineDurations};
use sluice_shared::run::{RunId, RunState};

use crate::store::{Store, StoreError};

const MINUTE_MS: i64 = 60_000;
/// Minutes of history kept (one day).
const MINUTES: i64 = 24 * 60;
/// Durations kept per pipeline for percentiles.
const DURATIONS_KEPT: usize = 1000;

#[derive(Default)]
struct State {
    started: BTreeMap<i64, u64>,
    finished: BTreeMap<i64, u64>,
    succeeded: BTreeMap<i64, u64>,
    durations: HashMap<String, VecDeque<u64>>,
    runs: HashMap<RunId, (String, i64)>,
    refusals: u64,
}

/// The metrics collector.
#[derive(Default)]
pub struct Metrics {
    state: Mutex<State>,
}

fn minute(ms: i64) -> i64 {
    ms.div_euclid(MINUTE_MS)
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

impl Metrics {
    /// Seeds from the last day of runs in the store.
    pub async fn seed(&self, store: &Store) -> Result<(), StoreError> {
        let since = now_ms() - MINUTES * MINUTE_MS;
        let runs = store.runs_since(since).await?;
        let Ok(mut s) = self.state.lock() else {
            return Ok(());
        };
        for r in runs {
            if let Some(started) = r.started_at {
                *s.started.entry(minute(started)).or_default() += 1;
                match r.finished_at {
                    Some(fin) => {
                        *s.finished.entry(minute(fin)).or_default() += 1;
                        if r.state == RunState::Succeeded {
                            *s.succeeded.entry(minute(fin)).or_default() += 1;
                        }
                        push_duration(&mut s, &r.pipeline, fin - started);
                    }
                    None => {
                        s.runs.insert(r.id, (r.pipeline.clone(), started));
                    }
                }
            } else {
                s.runs.insert(r.id, (r.pipeline.clone(), 0));
            }
        }
        Ok(())
    }

    /// Takes one event into account.
    pub fn observe(&self, event: &Event) {
        let Ok(mut s) = self.state.lock() else { return };
        let now = now_ms();
        match event {
            Event::RunCreated { run, pipeline } => {
                s.runs.insert(*run, (pipeline.clone(), 0));
            }
            Event::RunState {
                run,
                state: RunState::Running,
                ..
            } => {
                if let Some(entry) = s.runs.get_mut(run)
                    && entry.1 == 0
                {
                    entry.1 = now;
                    *s.started.entry(minute(now)).or_default() += 1;
                }
            }
            Event::RunState { run, state, .. } if state.is_finished() => {
                *s.finished.entry(minute(now)).or_default() += 1;
                if *state == RunState::Succeeded {
                    *s.succeeded.entry(minute(now)).or_default() += 1;
                }
                if let Some((pipeline, started)) = s.runs.remove(run)
                    && started > 0
                {
                    push_duration(&mut s, &pipeline, now - started);
                }
            }
            _ => return,
        }
        let horizon = minute(now) - MINUTES;
        s.started.retain(|m, _| *m > horizon);
        s.finished.retain(|m, _| *m > horizon);
        s.succeeded.retain(|m, _| *m > horizon);
    }

    /// Counts a trigger refused by a limit.
    pub fn refused(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.refusals += 1;
        }
    }

    /// The charts' data; counts of unfinished runs come from the caller.
    pub fn snapshot(
        &self,
        queue_depth: u64,
        active: u64,
        waiting: u64,
        approvals_pending: u64,
    ) -> MetricsResult {
        let Ok(s) = self.state.lock() else {
            return MetricsResult::default();
        };
        let now = minute(now_ms());
        let per_minute = |m: &BTreeMap<i64, u64>| {
            (0..60)
                .rev()
                .map(|i| m.get(&(now - i)).copied().unwrap_or(0))
                .collect::<Vec<_>>()
        };
        let per_hour = |m: &BTreeMap<i64, u64>| {
            (0..24)
                .rev()
                .map(|h| {
                    (0..60)
                        .map(|i| m.get(&(now - h * 60 - i)).copied().unwrap_or(0))
                        .sum()
                })
                .collect::<Vec<_>>()
        };
        let finished: u64 = s.finished.values().sum();
        let succeeded: u64 = s.succeeded.values().sum();
        let mut durations: Vec<PipelineDurations> = s
            .durations
            .iter()
            .map(|(p, d)| {
                let mut v: Vec<u64> = d.iter().copied().collect();
                v.sort_unstable();
                let pct = |q: f64| {
                    v.get(((v.len() as f64 - 1.0) * q).round() as usize)
                        .copied()
                        .unwrap_or(0)
                };
                PipelineDurations {
                    pipeline: p.clone(),
                    count: v.len() as u64,
                    p50_ms: pct(0.5),
                    p95_ms: pct(0.95),
                    p99_ms: pct(0.99),
                }
            })
            .collect();
        durations.sort_by(|a, b| a.pipeline.cmp(&b.pipeline));
        MetricsResult {
            started_per_minute: per_minute(&s.started),
            finished_per_minute: per_minute(&s.finished),
            started_per_hour: per_hour(&s.started),
            finished_per_hour: per_hour(&s.finished),
            success_rate: (finished > 0).then(|| succeeded as f64 / finished as f64),
            durations,
            queue_depth,
            active,
            waiting,
            approvals_pending,
            limit_refusals: s.refusals,
            ..MetricsResult::default()
        }
    }
}

fn push_duration(s: &mut State, pipeline: &str, ms: i64) {
    let d = s.durations.entry(pipeline.to_owned()).or_default();
    if d.len() == DURATIONS_KEPT {
        d.pop_front();
    }
    d.push_back(u64::try_from(ms).unwrap_or(0));
}
