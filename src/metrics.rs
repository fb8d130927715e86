//! anteroom's Prometheus registry and the way metric families are made.
//!
//! Each family is registered by the module that records it, in the style of
//! linkerd2-proxy (`XMetrics::register(&registry) -> XMetrics`): rooms
//! (`room`), visitor events (`events`), per-route traffic (`traffic`), the
//! store (`store`). This module only holds the registry they share.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// The registry every family of this process is registered in.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// A registry with the `anteroom_` prefix and `build_info`.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new_custom(Some("anteroom".to_owned()), None)?;
        let build = IntGaugeVec::new(
            Opts::new("build_info", "Version of the running anteroom."),
            &["version"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        registry.register(Box::new(build))?;
        // CPU, memory, file descriptors, threads, start time, under the
        // conventional unprefixed `process_*` names.
        let process = prometheus::process_collector::ProcessCollector::for_self();
        prometheus::register(Box::new(process)).or_else(|e| match e {
            prometheus::Error::AlreadyReg => Ok(()),
            e => Err(e),
        })?;
        Ok(Metrics { registry })
    }

    /// Where families are registered.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric, with the process's.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        let mut families = self.registry.gather();
        families.extend(prometheus::gather());
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&families, &mut out);
        out
    }
}

/// Registers a counter family.
pub fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

/// Registers a gauge without labels.
pub fn gauge(registry: &Registry, name: &str, help: &str) -> Result<IntGauge, prometheus::Error> {
    let g = IntGauge::with_opts(Opts::new(name, help))?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

/// Registers a gauge family.
pub fn gauges(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, prometheus::Error> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

/// Registers a histogram family.
pub fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> Result<HistogramVec, prometheus::Error> {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )?;
    registry.register(Box::new(h.clone()))?;
    Ok(h)
}
