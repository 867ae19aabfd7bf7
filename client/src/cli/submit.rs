//! `volley submit`: send a SQL script to the scheduler as a detached job.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use volley_client::{ClientError, SchedulerClient, v1};

use super::jobs::{follow, outcome, parse_duration, status_json, summary};

/// Output formats of `--output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OutputFormat {
    /// Apache Parquet.
    Parquet,
    /// CSV with a header line.
    Csv,
    /// Newline-delimited JSON.
    Json,
}

/// Arguments of `volley submit`.
#[derive(Debug, clap::Args)]
pub(crate) struct SubmitArgs {
    /// The SQL script to run.
    file: PathBuf,
    /// URL of the scheduler.
    #[arg(
        long,
        env = "VOLLEY_SCHEDULER",
        default_value = "http://127.0.0.1:50050"
    )]
    scheduler: String,
    /// A name for the job (default: the script's file name).
    #[arg(long)]
    name: Option<String>,
    /// Replace `${KEY}` in the script with VALUE (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    params: Vec<(String, String)>,
    /// Write the result of the script's last query here, one file per
    /// partition, written by the executors: a local directory that must not
    /// exist (or be empty) and appears only if the job succeeds, or an
    /// empty `s3://bucket/prefix` (credentials from the `AWS_*` variables
    /// of the scheduler and executors), whose files a failed job deletes.
    #[arg(long, value_name = "PATH")]
    output: Option<String>,
    /// Format of `--output`.
    #[arg(long, value_enum, default_value = "parquet")]
    output_format: OutputFormat,
    /// Follow the job to its end; the exit code is the job's.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this long (e.g. 90s, 5m, 1h), cancelling the job.
    #[arg(long, value_parser = parse_duration, requires = "wait")]
    timeout: Option<Duration>,
    /// Print the job's status as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

fn parse_param(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

/// Substitutes `${KEY}` parameters; a parameter the script uses but was
/// not given is an error, one given but unused a warning.
pub(crate) fn substitute(
    script: &str,
    params: &[(String, String)],
) -> Result<(String, Vec<String>), ClientError> {
    let values: HashMap<&str, &str> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut used = std::collections::HashSet::new();
    let mut out = String::with_capacity(script.len());
    let mut rest = script;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(ClientError::Usage(
                "the script has a `${` without its closing `}`".into(),
            ));
        };
        let key = &after[..end];
        match values.get(key) {
            Some(value) => {
                out.push_str(value);
                used.insert(key.to_string());
            }
            None => {
                return Err(ClientError::Usage(format!(
                    "the script uses ${{{key}}} but no --param {key}=VALUE was given"
                )));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    let unused = params
        .iter()
        .filter(|(k, _)| !used.contains(k))
        .map(|(k, _)| k.clone())
        .collect();
    Ok((out, unused))
}

pub(crate) async fn run(args: SubmitArgs) -> Result<(), ClientError> {
    let script = std::fs::read_to_string(&args.file)
        .map_err(|e| ClientError::Usage(format!("cannot read {}: {e}", args.file.display())))?;
    let (script, unused) = substitute(&script, &args.params)?;
    for key in unused {
        eprintln!(
            "warning: --param {key} is not used by {}",
            args.file.display()
        );
    }
    let name = args.name.clone().unwrap_or_else(|| {
        args.file
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default()
    });
    let output = args.output.as_ref().map(|path| v1::OutputSpec {
        path: absolute(path),
        format: match args.output_format {
            OutputFormat::Parquet => v1::OutputFormat::Parquet,
            OutputFormat::Csv => v1::OutputFormat::Csv,
            OutputFormat::Json => v1::OutputFormat::Json,
        } as i32,
    });
    let client = SchedulerClient::connect(&args.scheduler).await?;
    let job_id = client
        .submit_script(script, name, HashMap::new(), output)
        .await?;
    if args.json {
        eprintln!("{job_id}");
    } else {
        println!("{job_id}");
    }
    let status = if args.wait {
        match follow(&client, &job_id, args.timeout).await {
            Ok(status) => status,
            Err(e @ ClientError::Timeout { .. }) => {
                if args.json {
                    println!("{}", status_json(&client.status(&job_id).await?));
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        }
    } else {
        // Detached: report only failures the scheduler found at once.
        let status = client.status(&job_id).await?;
        if status.state != v1::JobState::Failed as i32 {
            if args.json {
                println!("{}", status_json(&status));
            }
            return Ok(());
        }
        status
    };
    if args.json {
        println!("{}", status_json(&status));
    } else if std::io::stderr().is_terminal() || args.wait {
        eprintln!("{}", summary(&status));
    }
    outcome(&status)
}

/// Output paths are resolved here: the scheduler's working directory is not
/// the user's.
fn absolute(path: &str) -> String {
    if path.contains("://") {
        return path.to_string();
    }
    std::path::absolute(path).map_or_else(|_| path.to_string(), |p| p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_substituted_and_unused_ones_reported() {
        let params = vec![
            ("day".to_string(), "2024-01-01".to_string()),
            ("extra".to_string(), "1".to_string()),
        ];
        let (script, unused) = substitute("SELECT '${day}' AS d, '${day}'", &params).unwrap();
        assert_eq!(script, "SELECT '2024-01-01' AS d, '2024-01-01'");
        assert_eq!(unused, vec!["extra".to_string()]);
    }

    #[test]
    fn a_parameter_the_script_needs_but_was_not_given_is_a_usage_error() {
        let error = substitute("SELECT ${missing}", &[]).unwrap_err();
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains("missing"), "{error}");
    }
}
