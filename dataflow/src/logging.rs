//! How every Volley binary logs: `tracing` lines on stderr, filtered by
//! `RUST_LOG`, else by the binary's own default level.

use tracing_subscriber::EnvFilter;

/// Installs the log subscriber of a Volley binary; `default_filter` (such as
/// `"info"`) applies when `RUST_LOG` is unset or invalid.
pub fn init_logging(default_filter: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
}
