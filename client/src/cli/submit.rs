//! `volley submit`: send a SQL script to the scheduler as a detached job.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use volley_client::{ClientError, SchedulerClient, v1};

use super::connection::{ConnectionArgs, scheduler_url};
use super::jobs::{Wait, follow, outcome, parse_duration, print_timed_out, status_json, summary};
use super::json_report::print_json;

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
    /// URL of the scheduler [default: http://127.0.0.1:50050, with a note on
    /// stderr].
    #[arg(long, env = "VOLLEY_SCHEDULER")]
    scheduler: Option<String>,
    /// A name for the job (default: the script's file name).
    #[arg(long)]
    name: Option<String>,
    /// Replace `${KEY}` in the script with VALUE as a quoted SQL string,
    /// e.g. `'VALUE'` (repeatable). Write `${KEY}` bare, not in quotes.
    #[arg(long = "param", value_name = "KEY=VALUE", value_parser = parse_string_param)]
    params: Vec<(String, Param)>,
    /// Replace `${KEY}` with a whole number (repeatable).
    #[arg(long = "param-int", value_name = "KEY=N", value_parser = parse_int_param)]
    int_params: Vec<(String, Param)>,
    /// Replace `${KEY}` with `DATE 'YYYY-MM-DD'` (repeatable).
    #[arg(long = "param-date", value_name = "KEY=YYYY-MM-DD", value_parser = parse_date_param)]
    date_params: Vec<(String, Param)>,
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
    /// With --wait: give up after this long (e.g. 90s, 5m, 1h) and cancel
    /// the job, so that it never outlives the CI step that waits for it
    /// (exit 4, `--json` state `timed_out`). To stop waiting but leave the
    /// job running, use `volley jobs wait ID --timeout D` instead.
    #[arg(long, value_parser = parse_duration, requires = "wait")]
    timeout: Option<Duration>,
    /// Print the job's status as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    connection: ConnectionArgs,
}

fn parse_param(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

/// `KEY=VALUE` for `--param`: the value as a quoted SQL string.
fn parse_string_param(text: &str) -> Result<(String, Param), String> {
    parse_param(text).map(|(k, v)| (k, Param::String(v)))
}

/// `KEY=N` for `--param-int`: a whole number.
fn parse_int_param(text: &str) -> Result<(String, Param), String> {
    let (key, value) = parse_param(text)?;
    let n: i64 = value
        .trim()
        .parse()
        .map_err(|_| format!("--param-int {key}: `{value}` is not a whole number"))?;
    Ok((key, Param::Int(n)))
}

/// `KEY=YYYY-MM-DD` for `--param-date`: a date.
fn parse_date_param(text: &str) -> Result<(String, Param), String> {
    let (key, value) = parse_param(text)?;
    let value = value.trim();
    let digits =
        |part: &str, len: usize| part.len() == len && part.bytes().all(|b| b.is_ascii_digit());
    let parts: Vec<&str> = value.split('-').collect();
    match parts[..] {
        [y, m, d] if digits(y, 4) && digits(m, 2) && digits(d, 2) => {
            Ok((key, Param::Date(value.to_string())))
        }
        _ => Err(format!(
            "--param-date {key}: `{value}` is not a date like 2024-01-31"
        )),
    }
}

/// A script parameter's value, always substituted as one SQL literal, so no
/// value can change the statement around it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Param {
    /// `'text'`, quotes inside doubled.
    String(String),
    /// A whole number.
    Int(i64),
    /// `DATE 'YYYY-MM-DD'`.
    Date(String),
}

impl Param {
    fn literal(&self) -> String {
        match self {
            Param::String(text) => format!("'{}'", text.replace('\'', "''")),
            Param::Int(n) => n.to_string(),
            Param::Date(date) => format!("DATE '{date}'"),
        }
    }
}

/// Substitutes `${KEY}` parameters with quoted SQL literals; a `${KEY}`
/// inside a quoted string or a comment is an error (write it bare: the value
/// arrives quoted). A parameter the script uses but was not given is an
/// error, one given but unused a warning.
pub(crate) fn substitute(
    script: &str,
    params: &[(String, Param)],
) -> Result<(String, Vec<String>), ClientError> {
    let values: HashMap<&str, &Param> = params.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut used = std::collections::HashSet::new();
    let mut out = String::with_capacity(script.len());
    let mut quote: Option<char> = None;
    let mut chars = script.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match quote {
            Some(q) => {
                if script[i..].starts_with("${") {
                    return Err(ClientError::Usage(
                        "the script has a ${...} parameter inside quotes or a comment; write it \
                         bare (e.g. `WHERE day = ${day}`): its value is substituted as a quoted \
                         literal"
                            .into(),
                    ));
                }
                out.push(c);
                let closes = match q {
                    '-' => c == '\n',
                    '*' => c == '*' && chars.peek().is_some_and(|(_, n)| *n == '/'),
                    _ => c == q,
                };
                if closes {
                    if q == '*'
                        && let Some((_, slash)) = chars.next()
                    {
                        out.push(slash);
                    }
                    quote = None;
                }
            }
            None if script[i..].starts_with("${") => {
                let after = &script[i + 2..];
                let Some(end) = after.find('}') else {
                    return Err(ClientError::Usage(
                        "the script has a `${` without its closing `}`".into(),
                    ));
                };
                let key = &after[..end];
                let Some(value) = values.get(key) else {
                    return Err(ClientError::Usage(format!(
                        "the script uses ${{{key}}} but no --param {key}=VALUE was given"
                    )));
                };
                out.push_str(&value.literal());
                used.insert(key.to_string());
                // Skip the key and its closing brace.
                for _ in 0..key.chars().count() + 2 {
                    chars.next();
                }
            }
            None => {
                out.push(c);
                quote = match c {
                    '\'' | '"' => Some(c),
                    '-' if chars.peek().is_some_and(|(_, n)| *n == '-') => Some('-'),
                    '/' if chars.peek().is_some_and(|(_, n)| *n == '*') => Some('*'),
                    _ => None,
                };
            }
        }
    }
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
    let params: Vec<(String, Param)> = args
        .params
        .iter()
        .chain(&args.int_params)
        .chain(&args.date_params)
        .cloned()
        .collect();
    let (script, unused) = substitute(&script, &params)?;
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
    let url = scheduler_url(args.scheduler.as_deref())?;
    let client = SchedulerClient::connect_with(&url, args.connection.link()?).await?;
    let job_id = client
        .submit_script(script, name, HashMap::new(), output)
        .await?;
    if args.json {
        eprintln!("{job_id}");
    } else {
        println!("{job_id}");
    }
    let status = if args.wait {
        let wait = Wait {
            timeout: args.timeout,
            cancel_on_timeout: true,
        };
        match follow(&client, &job_id, wait).await {
            Ok(status) => status,
            Err(e @ ClientError::Timeout { .. }) => {
                if args.json {
                    print_timed_out(&client, &job_id, &e).await;
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
                print_json(&status_json(&status));
            }
            return Ok(());
        }
        status
    };
    if args.json {
        print_json(&status_json(&status));
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
    fn parameters_are_substituted_as_literals_and_unused_ones_reported() {
        let params = vec![
            ("day".to_string(), Param::Date("2024-01-01".into())),
            ("n".to_string(), Param::Int(-3)),
            ("who".to_string(), Param::String("O'Brien".into())),
            ("extra".to_string(), Param::Int(1)),
        ];
        let in_comment = substitute("SELECT 1 -- ${day}", &params);
        assert!(in_comment.is_err(), "a parameter in a comment is refused");
        let (script, unused_now) = substitute("SELECT ${day} AS d, ${n}, ${who}", &params).unwrap();
        assert_eq!(script, "SELECT DATE '2024-01-01' AS d, -3, 'O''Brien'");
        assert_eq!(unused_now, vec!["extra".to_string()]);
    }

    #[test]
    fn a_parameter_value_can_never_change_the_statement_around_it() {
        let attack = "x'; DROP TABLE t; --";
        let params = vec![("v".to_string(), Param::String(attack.into()))];
        let (script, _) = substitute("SELECT * FROM t WHERE a = ${v};", &params).unwrap();
        assert_eq!(script, "SELECT * FROM t WHERE a = 'x''; DROP TABLE t; --';");
        let statements = volley_dataflow::split_statements(&script).unwrap();
        assert_eq!(statements.len(), 1, "{script}");
        let quoted = substitute("SELECT '${v}'", &params).unwrap_err();
        assert_eq!(quoted.exit_code(), 2);
        assert!(parse_int_param("n=1; DROP").is_err());
        assert!(parse_date_param("d=2024-01-01'").is_err());
    }

    #[test]
    fn a_parameter_the_script_needs_but_was_not_given_is_a_usage_error() {
        let error = substitute("SELECT ${missing}", &[]).unwrap_err();
        assert!(substitute("SELECT ${open", &[]).is_err());
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains("missing"), "{error}");
    }
}
