//! How every Volley binary logs: `tracing` lines on stderr, filtered by
//! `RUST_LOG`, else by the binary's own default level. Stage plans, which
//! hold a query's literals and paths, are logged (at debug) only when
//! `VOLLEY_LOG_PLANS=1` asks for them ([`log_plans`]).

use std::io::IsTerminal;
use std::sync::LazyLock;

use tracing_subscriber::EnvFilter;

/// Installs the log subscriber of a Volley binary; `default_filter` (such as
/// `"info"`) applies when `RUST_LOG` is unset or invalid.
pub fn init_logging(default_filter: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never in a log file
        // or a CI log.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Whether stage plans may be logged: only with `VOLLEY_LOG_PLANS=1`, since
/// they carry query literals (and so whatever data a query names).
pub fn log_plans() -> bool {
    static LOG_PLANS: LazyLock<bool> =
        LazyLock::new(|| std::env::var("VOLLEY_LOG_PLANS").is_ok_and(|v| v == "1"));
    *LOG_PLANS
}
