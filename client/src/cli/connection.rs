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

/// The scheduler and credentials of `volley jobs` and `volley executors`,
/// given once for all their subcommands.
#[derive(Debug, clap::Args)]
pub(crate) struct ClusterArgs {
    /// URL of the scheduler.
    #[arg(
        long,
        env = "VOLLEY_SCHEDULER",
        default_value = "http://127.0.0.1:50050",
        global = true
    )]
    pub(crate) scheduler: String,
    #[command(flatten)]
    pub(crate) connection: ConnectionArgs,
}

impl ClusterArgs {
    /// Connects to the scheduler with these credentials.
    pub(crate) async fn connect(&self) -> Result<SchedulerClient, ClientError> {
        SchedulerClient::connect_with(&self.scheduler, self.connection.link()?).await
    }
}
