//! How the `volley` commands that talk to a cluster connect: the user's
//! token and the CA its TLS certificates are checked with.

use std::path::PathBuf;

use volley_client::{ClientError, Link, SchedulerClient, Secret, read_token_file};
use volley_security::tls::ClientTls;

/// Credentials of `volley sql`, `volley submit` and `volley jobs`.
#[derive(Debug, clap::Args)]
pub(crate) struct ConnectionArgs {
    /// File holding your token (else the token in the VOLLEY_TOKEN variable;
    /// never pass a token on the command line, where `ps` shows it).
    #[arg(long, env = "VOLLEY_TOKEN_FILE", global = true, hide_env_values = true)]
    token_file: Option<PathBuf>,
    /// CA certificate the cluster's TLS certificates are checked with; the
    /// scheduler URL is then https://.
    #[arg(long, env = "VOLLEY_TLS_CA", global = true, hide_env_values = true)]
    tls_ca: Option<PathBuf>,
}

impl ConnectionArgs {
    /// The TLS of `--tls-ca` (or `VOLLEY_TLS_CA`), if given.
    pub(crate) fn tls(&self) -> Result<Option<ClientTls>, ClientError> {
        self.tls_ca
            .as_deref()
            .map(ClientTls::load)
            .transpose()
            .map_err(|e| ClientError::Usage(e.to_string()))
    }

    /// The link these arguments and the environment describe.
    pub(crate) fn link(&self) -> Result<Link, ClientError> {
        let token = match std::env::var("VOLLEY_TOKEN").ok().filter(|t| !t.is_empty()) {
            Some(token) => Some(Secret::new(token)),
            None => self
                .token_file
                .as_deref()
                .map(read_token_file)
                .transpose()?,
        };
        let tls = self.tls()?;
        Link::new(token.as_ref(), tls).map_err(|s| ClientError::Usage(s.message().to_string()))
    }
}

/// The scheduler a command talks to when neither `--scheduler` nor
/// `VOLLEY_SCHEDULER` names one (it says so on stderr).
pub(crate) const DEFAULT_SCHEDULER: &str = "http://127.0.0.1:50050";

/// The scheduler URL to use: `given`, checked, or [`DEFAULT_SCHEDULER`]
/// with a note on stderr. A URL without `http://` or `https://` is bad
/// usage (exit 2), not an unreachable scheduler.
pub(crate) fn scheduler_url(given: Option<&str>) -> Result<String, ClientError> {
    let Some(url) = given else {
        eprintln!("volley: no --scheduler or VOLLEY_SCHEDULER given; using {DEFAULT_SCHEDULER}");
        return Ok(DEFAULT_SCHEDULER.to_string());
    };
    check_url(url)?;
    Ok(url.to_string())
}

/// Fails with a usage error unless `url` is an `http://` or `https://` URL
/// with a host.
pub(crate) fn check_url(url: &str) -> Result<(), ClientError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(()),
        Some(_) => Err(ClientError::Usage(format!(
            "`{url}` names no host; write e.g. http://scheduler:50050"
        ))),
        None => Err(ClientError::Usage(format!(
            "`{url}` is not a URL: write http://{url} (or https:// with TLS)"
        ))),
    }
}

/// The scheduler and credentials of `volley jobs` and `volley executors`,
/// given once for all their subcommands.
#[derive(Debug, clap::Args)]
pub(crate) struct ClusterArgs {
    /// URL of the scheduler [default: http://127.0.0.1:50050, with a note on
    /// stderr].
    #[arg(long, env = "VOLLEY_SCHEDULER", global = true)]
    scheduler: Option<String>,
    #[command(flatten)]
    pub(crate) connection: ConnectionArgs,
}

impl ClusterArgs {
    /// The scheduler's URL (see [`scheduler_url`]).
    pub(crate) fn url(&self) -> Result<String, ClientError> {
        scheduler_url(self.scheduler.as_deref())
    }

    /// Connects to the scheduler with these credentials.
    pub(crate) async fn connect(&self) -> Result<SchedulerClient, ClientError> {
        SchedulerClient::connect_with(&self.url()?, self.connection.link()?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scheduler_url_without_a_scheme_is_bad_usage() {
        for bad in ["127.0.0.1:50050", "scheduler", "http://", "ftp://host:1"] {
            let error = check_url(bad).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{bad}: {error}");
        }
        assert!(check_url("http://127.0.0.1:50050").is_ok());
        assert!(check_url("https://scheduler.example:443").is_ok());
        let hint = check_url("localhost:50050").unwrap_err().to_string();
        assert!(hint.contains("http://localhost:50050"), "{hint}");
    }
}
