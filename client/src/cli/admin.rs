//! `volley users`, `volley secret` and `volley certs`: making the
//! credentials a secure cluster starts with.

use std::io::Write;
use std::path::PathBuf;

use volley_client::ClientError;
use volley_security::{ClusterSecret, Role, UserName, Users};

/// Arguments of `volley users`.
#[derive(Debug, clap::Args)]
pub(crate) struct UsersArgs {
    #[command(subcommand)]
    command: UsersCommand,
}

#[derive(Debug, clap::Subcommand)]
enum UsersCommand {
    /// Add a user to a users file (created if missing, readable by its
    /// owner only) and print their new token, once, on stdout.
    Add {
        /// The user's name.
        name: String,
        /// What they may do: admin (everything), submit (run and manage
        /// their own jobs) or read (look only).
        #[arg(long, default_value = "submit")]
        role: String,
        /// The users file the scheduler reads (`--users`).
        #[arg(long)]
        users: PathBuf,
    },
}

/// Arguments of `volley secret`.
#[derive(Debug, clap::Args)]
pub(crate) struct SecretArgs {
    #[command(subcommand)]
    command: SecretCommand,
}

#[derive(Debug, clap::Subcommand)]
enum SecretCommand {
    /// Write a new random cluster secret to FILE (readable by its owner
    /// only); give the same file to the scheduler and every executor.
    Generate {
        /// Where to write it; an existing file is never replaced.
        file: PathBuf,
    },
    /// Print the token a metrics scraper (Prometheus) presents to read
    /// `/metrics` on the scheduler and the executors, and nothing else.
    MetricsToken {
        /// The cluster secret file.
        file: PathBuf,
    },
}

/// Arguments of `volley certs`.
#[derive(Debug, clap::Args)]
pub(crate) struct CertsArgs {
    #[command(subcommand)]
    command: CertsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum CertsCommand {
    /// Make a development CA and a certificate for the given hosts in DIR:
    /// ca.pem (for --tls-ca), node.pem and node-key.pem (for --tls-cert and
    /// --tls-key), ca-key.pem (keep it private). Use your own CA in production.
    Generate {
        /// The directory to write to.
        dir: PathBuf,
        /// Host names and IP addresses the certificate is valid for.
        #[arg(long, value_delimiter = ',', required = true)]
        hosts: Vec<String>,
    },
}

fn usage(e: impl std::fmt::Display) -> ClientError {
    ClientError::Usage(e.to_string())
}

pub(crate) fn run_users(args: UsersArgs) -> Result<(), ClientError> {
    let UsersCommand::Add { name, role, users } = args.command;
    let name: UserName = name.parse().map_err(usage)?;
    let role: Role = role.parse().map_err(usage)?;
    let existing = if users.exists() {
        Users::load(&users).map_err(usage)?
    } else {
        Users::default()
    };
    let text = std::fs::read_to_string(&users).unwrap_or_default();
    if text
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name.as_str()))
    {
        return Err(usage(format!(
            "{} already has a user `{name}`",
            users.display()
        )));
    }
    let (user, token) = Users::create(name, role).map_err(usage)?;
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&users)?;
    writeln!(file, "{}", user.to_line())?;
    eprintln!(
        "added `{}` ({}) to {} ({} users before); their token follows, shown only now:",
        user.name(),
        user.role(),
        users.display(),
        existing.len()
    );
    println!("{}", token.expose());
    Ok(())
}

pub(crate) fn run_secret(args: SecretArgs) -> Result<(), ClientError> {
    match args.command {
        SecretCommand::Generate { file } => {
            ClusterSecret::create_file(&file).map_err(usage)?;
            eprintln!("wrote a new cluster secret to {}", file.display());
        }
        SecretCommand::MetricsToken { file } => {
            let secret = ClusterSecret::load(&file).map_err(usage)?;
            println!("{}", secret.metrics_credential().expose());
        }
    }
    Ok(())
}

pub(crate) fn run_certs(args: CertsArgs) -> Result<(), ClientError> {
    let CertsCommand::Generate { dir, hosts } = args.command;
    let written = volley_security::tls::generate(&dir, &hosts).map_err(usage)?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}
