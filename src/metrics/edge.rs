//! Metrics of the edge listener: `/sql` requests by status with their latency, and
//! WebSocket clients (opened in total, open now), each labelled with its transport
//! (`http` or `websocket`; TCP clients are in the pool metrics).

use std::cell::RefCell;
use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use super::exporter::reg;

/// `/sql` latency buckets in seconds.
const REQUEST_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0,
];

/// Handles for the edge listener's metrics.
#[derive(Debug, Clone)]
pub struct EdgeMetrics {
    requests: IntCounterVec,
    latency: HistogramVec,
    websockets: IntCounterVec,
    websockets_open: IntGaugeVec,
}

/// Counts a WebSocket as open while it lives.
#[derive(Debug)]
pub struct OpenWebSocket(IntGaugeVec);

impl Drop for OpenWebSocket {
    fn drop(&mut self) {
        self.0.with_label_values(&["websocket"]).dec();
    }
}

impl EdgeMetrics {
    /// Registers the edge metrics in `r`.
    pub(super) fn register(r: &Registry, names: &RefCell<Vec<String>>) -> EdgeMetrics {
        let requests = IntCounterVec::new(
            Opts::new(
                "pgfunnel_edge_requests_total",
                "SQL-over-HTTP requests (POST /sql) by HTTP status",
            ),
            &["transport", "status"],
        )
        .expect("valid counter");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "pgfunnel_edge_request_duration_seconds",
                "SQL-over-HTTP request time from its head to its answer",
            )
            .buckets(REQUEST_BUCKETS.to_vec()),
            &["transport"],
        )
        .expect("valid histogram");
        let websockets = IntCounterVec::new(
            Opts::new(
                "pgfunnel_edge_websockets_total",
                "WebSocket clients accepted on edge_listen",
            ),
            &["transport"],
        )
        .expect("valid counter");
        let websockets_open = IntGaugeVec::new(
            Opts::new(
                "pgfunnel_edge_websockets_open",
                "WebSocket clients connected now",
            ),
            &["transport"],
        )
        .expect("valid gauge");
        EdgeMetrics {
            requests: reg(r, names, requests),
            latency: reg(r, names, latency),
            websockets: reg(r, names, websockets),
            websockets_open: reg(r, names, websockets_open),
        }
    }

    /// Records one `/sql` request.
    pub fn request(&self, status: u16, took: Duration) {
        self.requests
            .with_label_values(&["http", &status.to_string()])
            .inc();
        self.latency
            .with_label_values(&["http"])
            .observe(took.as_secs_f64());
    }

    /// Records a WebSocket client; it counts as open until the guard drops.
    pub fn websocket_opened(&self) -> OpenWebSocket {
        self.websockets.with_label_values(&["websocket"]).inc();
        self.websockets_open.with_label_values(&["websocket"]).inc();
        OpenWebSocket(self.websockets_open.clone())
    }
}
