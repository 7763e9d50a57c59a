//! Throughput, success rate and durations, kept in memory from the event
//! stream and seeded from the store at start, so a restart does not blank
//! the console's charts.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use sluice_shared::event::Event;
use sluice_shared::protocol::{MetricsResult, PipelineDurations};
use sluice_shared::run::{RunId, RunState};
use sluice_shared::time::now_ms;

use crate::store::{Store, StoreError};

const MINUTE_MS: i64 = 60_000;
/// Minutes of history kept (one day).
const MINUTES: i64 = 24 * 60;
/// The window duration percentiles are computed over (ms): the last day.
pub const DURATION_WINDOW_MS: i64 = MINUTES * MINUTE_MS;

#[derive(Default)]
struct State {
    started: BTreeMap<i64, u64>,
    finished: BTreeMap<i64, u64>,
    succeeded: BTreeMap<i64, u64>,
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
                s.runs.remove(run);
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
        MetricsResult {
            started_per_minute: per_minute(&s.started),
            finished_per_minute: per_minute(&s.finished),
            started_per_hour: per_hour(&s.started),
            finished_per_hour: per_hour(&s.finished),
            success_rate: (finished > 0).then(|| succeeded as f64 / finished as f64),
            // Filled by the caller from stored durations (see [`durations`]).
            durations: Vec::new(),
            queue_depth,
            active,
            waiting,
            approvals_pending,
            limit_refusals: s.refusals,
            ..MetricsResult::default()
        }
    }
}

/// Duration percentiles per pipeline, exactly, from the stored durations of
/// the window's runs (`(pipeline, ms)`): nearest rank, the smallest duration
/// that at least q of the runs took no longer than (so every percentile is a
/// duration some run took). Sorted by pipeline.
pub fn durations(runs: Vec<(String, i64)>) -> Vec<PipelineDurations> {
    let mut by: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (pipeline, ms) in runs {
        by.entry(pipeline)
            .or_default()
            .push(u64::try_from(ms).unwrap_or(0));
    }
    by.into_iter()
        .map(|(pipeline, mut v)| {
            v.sort_unstable();
            PipelineDurations {
                pipeline,
                count: v.len() as u64,
                p50_ms: nearest_rank(&v, 50),
                p95_ms: nearest_rank(&v, 95),
                p99_ms: nearest_rank(&v, 99),
            }
        })
        .collect()
}

/// The `pct`th percentile of sorted `v` by nearest rank: `v[ceil(pct/100 * n) - 1]`
/// (integer arithmetic, so 95 of 20 runs is exactly the 19th); 0 when empty.
pub fn nearest_rank(v: &[u64], pct: u64) -> u64 {
    let n = v.len() as u64;
    let rank = (pct * n).div_ceil(100).max(1);
    v.get(usize::try_from(rank - 1).unwrap_or(usize::MAX))
        .copied()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(ms: &[i64]) -> PipelineDurations {
        let runs = ms.iter().map(|&m| ("p".to_owned(), m)).collect();
        durations(runs).remove(0)
    }

    #[test]
    fn percentiles_are_exact_nearest_ranks_of_the_stored_durations() {
        // The cases: two hello runs of 15 and 21 ms, one of 7 ms.
        let two = of(&[21, 15]);
        assert_eq!(
            (two.count, two.p50_ms, two.p95_ms, two.p99_ms),
            (2, 15, 21, 21)
        );
        let one = of(&[7]);
        assert_eq!((one.p50_ms, one.p95_ms, one.p99_ms), (7, 7, 7));
        // 1..=100 ms: each percentile is its own rank.
        let hundred = of(&(1..=100).rev().collect::<Vec<_>>());
        assert_eq!(
            (hundred.p50_ms, hundred.p95_ms, hundred.p99_ms),
            (50, 95, 99)
        );
        // 20 runs: p95 is the 19th, p99 the 20th, p50 the 10th.
        let twenty = of(&(1..=20).map(|i| i * 10).collect::<Vec<_>>());
        assert_eq!(
            (twenty.p50_ms, twenty.p95_ms, twenty.p99_ms),
            (100, 190, 200)
        );
        // An outlier shows in p99 only.
        let mut v: Vec<i64> = vec![10; 99];
        v.push(5000);
        let o = of(&v);
        assert_eq!((o.p50_ms, o.p95_ms, o.p99_ms), (10, 10, 10));
        v.push(5000);
        assert_eq!(of(&v).p99_ms, 5000);
        // Per pipeline, sorted by name; nothing for a pipeline without runs.
        let d = durations(vec![("b".into(), 3), ("a".into(), 1), ("b".into(), 5)]);
        assert_eq!(
            d.iter().map(|p| p.pipeline.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(d[1].p50_ms, 3);
        assert_eq!(nearest_rank(&[], 50), 0);
    }
}
