//! Metrics: per-shard single-writer cells summed at scrape time, rendered as Prometheus text.
//!
//! - [`cells`]: [`ShardRecorder`] (one per shard, the only writer) and [`Registry`] (the reader).
//! - [`families`]: the exported families, their label enums, and [`MetricsSnapshot::render`].
//! - [`text`]: the text-format writer (counters, gauges, histograms, label escaping).
//!
//! Nothing on the hot path touches a shared, contended cache line: a shard increments its own
//! cells with plain relaxed stores; `/metrics` reads them all once per scrape.

pub mod cells;
pub mod families;
pub mod limits;
pub mod text;
pub mod tls;
pub mod websocket;

pub use cells::{RecorderSlots, Registry, ShardRecorder};
pub use families::{
    CloseCause, ConnState, DeliveryKind, Direction, DropReason, MetricsSnapshot, ShardLoop,
    SkipReason,
};
pub use limits::Limit;
pub use text::{HistogramSnapshot, MetricType, TextWriter, CONTENT_TYPE};
