//! `GET /metrics`: the agent's counters in Prometheus's text format (`prometheus-client`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::Agent;
use crate::record::Delivery;

/// The outcome label of a delivery.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    outcome: &'static str,
}

/// What the agent counts.
pub struct Metrics {
    registry: Registry,
    /// Trials running now.
    pub running: Gauge,
    deliveries: Family<Outcome, Counter>,
    latency: Histogram,
}

impl Metrics {
    /// Registered and at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("atropos_injector");
        let running = Gauge::default();
        registry.register(
            "trials_running",
            "Trials running on this node",
            running.clone(),
        );
        let deliveries = Family::<Outcome, Counter>::default();
        registry.register(
            "deliveries",
            "Signals sent by trials, by outcome",
            deliveries.clone(),
        );
        // From 1 µs to ~16 ms: the engine's injection latency is tens to hundreds of µs.
        let latency = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            1e-6, 2.0, 15,
        ));
        registry.register(
            "injection_latency_seconds",
            "From a step being due to its signal sent",
            latency.clone(),
        );
        Metrics {
            registry,
            running,
            deliveries,
            latency,
        }
    }

    /// Counts a delivery.
    pub fn delivered(&self, d: &Delivery) {
        self.deliveries
            .get_or_create(&Outcome {
                outcome: d.outcome.as_str(),
            })
            .inc();
        self.latency.observe(d.latency_ns as f64 / 1e9);
    }

    /// The text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The agent's counters, in Prometheus's text format.
#[utoipa::path(get, path = "/metrics",
    responses(
        (status = 200, description = "OpenMetrics text", body = String, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
        (status = 401, description = "No valid bearer token", body = super::ApiError),
    ))]
pub(super) async fn render(State(agent): State<Arc<Agent>>) -> Response {
    match agent.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => super::refuse(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics"),
    }
}
