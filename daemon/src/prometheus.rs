//! `GET /metrics`: the daemon's counters, gauges and histograms in the
//! Prometheus text format (OpenMetrics flavour, via `prometheus-client`).
//!
//! Label values come only from bounded sets: pipeline names of loaded files,
//! node kinds, run and attempt states, HTTP status codes and limit names.
//! Nothing a caller controls (a webhook path naming no pipeline, a header, a
//! user name) becomes a label, and no secret ever does.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use crate::engine::Engine;
use crate::limits::Limits;
use crate::triggers::Triggers;

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// Gauges set from the store and the engine at each scrape.
#[derive(Debug, Default)]
struct Gauges {
    runs: Family<StateLabel, Gauge>,
    approvals_pending: Gauge,
    workers: Gauge,
    workers_busy: Gauge,
    pipelines: Gauge,
}

/// The `/metrics` endpoint's registry: the recorded families, gauges read at
/// each scrape, counters the triggers and limits already keep, and process
/// figures from `/proc`.
pub struct Exporter {
    registry: Registry,
    gauges: Arc<Gauges>,
    engine: Engine,
    pipelines: Arc<crate::registry::Registry>,
}

impl Exporter {
    /// An exporter over `engine`'s telemetry and `triggers`' counters.
    pub fn new(engine: Engine, triggers: Triggers) -> Self {
        let t = engine.telemetry().clone();
        let mut registry = Registry::with_prefix("sluice");
        t.register(&mut registry);
        let gauges = Arc::new(Gauges::default());
        registry.register(
            "runs",
            "Unfinished runs by state (queued, running, waiting)",
            gauges.runs.clone(),
        );
        registry.register(
            "approvals_pending",
            "Approvals waiting for a decision",
            gauges.approvals_pending.clone(),
        );
        registry.register(
            "workers",
            "Node attempts that may execute at once",
            gauges.workers.clone(),
        );
        registry.register(
            "workers_busy",
            "Node attempts executing now",
            gauges.workers_busy.clone(),
        );
        registry.register("pipelines", "Pipelines loaded", gauges.pipelines.clone());
        let pipelines = Arc::clone(triggers.registry());
        registry.register_collector(Box::new(TriggerCounters {
            triggers,
            limits: Arc::clone(engine.limits()),
        }));
        registry.register_collector(Box::new(ProcessCollector));
        Self {
            registry,
            gauges,
            engine,
            pipelines,
        }
    }

    /// The exposition text, gauges refreshed now.
    pub async fn render(&self) -> Result<String, std::fmt::Error> {
        let store = self.engine.store();
        match store.state_counts().await {
            Ok((queued, running, waiting)) => {
                for (state, n) in [
                    ("queued", queued),
                    ("running", running),
                    ("waiting", waiting),
                ] {
                    self.gauges
                        .runs
                        .get_or_create(&StateLabel { state })
                        .set(gauge_value(n));
                }
            }
            Err(e) => tracing::warn!(error = %e, "metrics: cannot count runs"),
        }
        match store.pending_approvals().await {
            Ok(n) => {
                self.gauges.approvals_pending.set(gauge_value(n));
            }
            Err(e) => tracing::warn!(error = %e, "metrics: cannot count approvals"),
        }
        let workers = self.engine.workers();
        self.gauges.workers.set(gauge_value(workers.workers as u64));
        self.gauges
            .workers_busy
            .set(gauge_value(workers.busy as u64));
        self.gauges
            .pipelines
            .set(gauge_value(self.pipelines.list().len() as u64));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Counters kept by the triggers and the limits, read at each scrape.
struct TriggerCounters {
    triggers: Triggers,
    limits: Arc<Limits>,
}

impl std::fmt::Debug for TriggerCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TriggerCounters")
    }
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    let m = encoder.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(m)
}

impl Collector for TriggerCounters {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let c = self.triggers.counters().snapshot();
        counter(
            &mut encoder,
            "cron_fires",
            "Cron fires that started a run",
            c.cron_fires,
        )?;
        counter(
            &mut encoder,
            "cron_misfires",
            "Cron fires that did not run as scheduled (daemon down, clock jump, refused)",
            c.misfires,
        )?;
        counter(
            &mut encoder,
            "overlap_skipped",
            "Triggers dropped by on_overlap: skip",
            c.overlap_skipped,
        )?;
        let mut m = encoder.encode_descriptor(
            "limit_refusals",
            "Triggers refused by a limit, by limit",
            None,
            MetricType::Counter,
        )?;
        for (limit, n) in self.limits.refusal_totals() {
            let labels = [("limit", limit)];
            ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// `process_*` figures from `/proc/self` (the names Prometheus' own clients use).
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(p) = crate::procstat::read() else {
            return Ok(());
        };
        // Registered without the `sluice_` prefix would be nicer, but the
        // registry prefixes collectors too; dashboards match `sluice_process_*`.
        let cpu = ConstCounter::new(p.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                p.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                p.virtual_bytes,
            ),
            ("process_open_fds", "Open file descriptors", p.open_fds),
            ("process_max_fds", "File descriptor limit", p.max_fds),
            ("process_threads", "OS threads", p.threads),
        ] {
            let g = ConstGauge::new(gauge_value(value));
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        let start = ConstGauge::new(p.start_time_seconds);
        start.encode(encoder.encode_descriptor(
            "process_start_time_seconds",
            "Start time of the process since the epoch, in seconds",
            None,
            start.metric_type(),
        )?)?;
        Ok(())
    }
}
