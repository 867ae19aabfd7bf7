//! `volley health`: whether a scheduler or an executor serves, from its
//! standard gRPC health service (`grpc.health.v1`), for scripts and
//! Kubernetes probes. Exit 0 serving, 1 not serving (starting, draining),
//! 3 unreachable, 6 not authenticated.

use std::path::PathBuf;

use volley_client::{ClientError, Link, check_health};
use volley_security::ClusterSecret;
use volley_security::tls::ClientTls;

use super::connection::ConnectionArgs;

/// Arguments of `volley health`.
#[derive(Debug, clap::Args)]
pub(crate) struct HealthArgs {
    /// URL of the scheduler or executor, e.g. https://scheduler:50050.
    url: String,
    /// Present the cluster's credential, from the cluster secret file,
    /// instead of a user's token: an executor answers only to it.
    #[arg(long, env = "VOLLEY_CLUSTER_SECRET_FILE", hide_env_values = true)]
    cluster_secret_file: Option<PathBuf>,
    /// CA certificate for an https:// URL (with --cluster-secret-file).
    #[arg(long)]
    ca: Option<PathBuf>,
    #[command(flatten)]
    connection: ConnectionArgs,
}

pub(crate) async fn run(args: HealthArgs) -> Result<(), ClientError> {
    let link = match &args.cluster_secret_file {
        Some(path) => {
            let secret =
                ClusterSecret::load(path).map_err(|e| ClientError::Usage(e.to_string()))?;
            let tls = match &args.ca {
                Some(ca) => {
                    Some(ClientTls::load(ca).map_err(|e| ClientError::Usage(e.to_string()))?)
                }
                None => args.connection.tls()?,
            };
            Link::new(Some(&secret.credential()), tls)
                .map_err(|s| ClientError::Usage(s.message().to_string()))?
        }
        None => args.connection.link()?,
    };
    if check_health(&args.url, &link).await? {
        println!("serving");
        Ok(())
    } else {
        Err(ClientError::NotServing(args.url))
    }
}
