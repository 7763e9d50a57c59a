//! The metrics recorded where things happen: run and attempt outcomes in the
//! engine, webhook answers in the listener, cron lateness in the scheduler.
//! A leaf below all of them; `prometheus` registers these families for
//! `GET /metrics` and adds what it reads at each scrape.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use sluice_shared::run::{AttemptState, RunState};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    pipeline: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PipelineLabel {
    pipeline: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    kind: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: u16,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Run durations: from a second to a day.
fn run_duration_histogram() -> Histogram {
    Histogram::new([
        0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
    ])
}

/// Request latencies: a webhook is answered once its run is committed (ms).
fn latency_buckets() -> [f64; 10] {
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0]
}

/// The metrics recorded where things happen (engine, webhook listener, cron);
/// cheap to clone, every clone records into the same families.
#[derive(Clone, Debug)]
pub struct Telemetry {
    runs_finished: Family<RunLabels, Counter>,
    run_duration: HistogramFamily<PipelineLabel>,
    attempts: Family<AttemptLabels, Counter>,
    webhook_requests: Family<StatusLabel, Counter>,
    webhook_intake: Histogram,
    cron_lateness: Histogram,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self {
            runs_finished: Family::default(),
            run_duration: Family::new_with_constructor(run_duration_histogram),
            attempts: Family::default(),
            webhook_requests: Family::default(),
            webhook_intake: Histogram::new(latency_buckets()),
            cron_lateness: Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0]),
        }
    }
}

impl Telemetry {
    /// A run of `pipeline` ended in `state` after `took` (None: it never ran).
    pub fn run_finished(&self, pipeline: &str, state: RunState, took: Option<Duration>) {
        self.runs_finished
            .get_or_create(&RunLabels {
                pipeline: pipeline.to_owned(),
                state: state.as_str().to_owned(),
            })
            .inc();
        if let Some(took) = took {
            self.run_duration
                .get_or_create(&PipelineLabel {
                    pipeline: pipeline.to_owned(),
                })
                .observe(took.as_secs_f64());
        }
    }

    /// A node attempt of `kind` ended with `outcome`.
    pub fn attempt_finished(&self, kind: &str, outcome: AttemptState) {
        self.attempts
            .get_or_create(&AttemptLabels {
                kind: kind.to_owned(),
                outcome: outcome.as_str().to_owned(),
            })
            .inc();
    }

    /// A `POST /hooks/...` request was answered with `status` after `took`.
    pub fn webhook_answered(&self, status: u16, took: Duration) {
        self.webhook_requests
            .get_or_create(&StatusLabel { status })
            .inc();
        self.webhook_intake.observe(took.as_secs_f64());
    }

    /// A cron fire ran `late` after its scheduled time.
    pub fn cron_fired_late(&self, late: Duration) {
        self.cron_lateness.observe(late.as_secs_f64());
    }

    /// Registers the recorded families in `registry` (names without its prefix).
    pub fn register(self, registry: &mut Registry) {
        registry.register(
            "runs_finished",
            "Runs that reached a final state, by pipeline and state",
            self.runs_finished,
        );
        registry.register(
            "run_duration_seconds",
            "Time from a run's start to its end, by pipeline",
            self.run_duration,
        );
        registry.register(
            "node_attempts",
            "Node attempts that ended, by node kind and outcome",
            self.attempts,
        );
        registry.register(
            "webhook_requests",
            "Webhook requests (POST /hooks/...) answered, by HTTP status",
            self.webhook_requests,
        );
        registry.register(
            "webhook_intake_seconds",
            "Time to answer a webhook request (a 202 waits for the run's commit)",
            self.webhook_intake,
        );
        registry.register(
            "cron_lateness_seconds",
            "How late after its scheduled time a cron fire ran",
            self.cron_lateness,
        );
    }
}
