//! How every Volley binary logs: `tracing` lines on stderr, filtered by
//! `RUST_LOG`, else by the binary's own default level; and, when asked,
//! exports traces (`telemetry.rs`). Stage plans, which
//! hold a query's literals and paths, are logged (at debug) only when
//! `VOLLEY_LOG_PLANS=1` asks for them ([`log_plans`]).

use std::io::IsTerminal;
use std::sync::LazyLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::telemetry::{TelemetryGuard, otlp_layer};

/// Installs the log subscriber of Volley binary `service` (such as
/// `volley-scheduler`); `default_filter` (such as `"info"`) applies when
/// `RUST_LOG` is unset or invalid. With `OTEL_EXPORTER_OTLP_ENDPOINT` set,
/// spans are exported as traces too (`telemetry.rs`); keep the guard alive
/// until the process ends, which flushes them. Call it inside the tokio
/// runtime.
pub fn init_logging(service: &str, default_filter: &str) -> TelemetryGuard {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in a log file
        // or a CI log.
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter);
    let (otlp, guard) = otlp_layer(service);
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otlp)
        .try_init();
    guard
}

/// Whether stage plans may be logged: only with `VOLLEY_LOG_PLANS=1`, since
/// they carry query literals (and so whatever data a query names).
pub fn log_plans() -> bool {
    static LOG_PLANS: LazyLock<bool> =
        LazyLock::new(|| std::env::var("VOLLEY_LOG_PLANS").is_ok_and(|v| v == "1"));
    *LOG_PLANS
}
