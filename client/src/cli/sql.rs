//! `volley sql`: run SQL statements on a cluster (or an embedded one) and
//! print their results; without `-c`/`-f` on a terminal, an interactive
//! shell (`shell.rs`).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::error::DataFusionError;
use datafusion::sql::parser::DFParser;
use futures::StreamExt;
use volley_client::tpch::{default_tpch_dir, generate_tpch, register_tpch};
use volley_client::{ClientError, Context, EmbeddedClusterConfig, JobId, v1};
use volley_dataflow::split_statements;

use super::connection::{ConnectionArgs, check_url};
use super::output::{Expanded, Format, Layout, ResultWriter, terminal_width};
use super::progress::{Progress, recovery_note};

/// Arguments of `volley sql`.
#[derive(Debug, clap::Args)]
pub(crate) struct SqlArgs {
    /// URL of the scheduler; without it an embedded cluster is started.
    #[arg(long, env = "VOLLEY_SCHEDULER")]
    scheduler: Option<String>,
    #[command(flatten)]
    connection: ConnectionArgs,
    /// SQL to run (repeatable; each may hold several statements).
    #[arg(
        short = 'c',
        long = "command",
        value_name = "SQL",
        allow_hyphen_values = true
    )]
    commands: Vec<String>,
    /// A file of SQL statements to run (repeatable).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Output format (default: table on a terminal, csv otherwise).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Rows a table shows at most (0: all; default: 40 on a terminal, all otherwise).
    #[arg(long, value_name = "N")]
    max_rows: Option<usize>,
    /// Generate TPC-H data at this scale factor and register its 8 tables.
    #[arg(long, value_name = "SF")]
    tpch: Option<f64>,
    /// Executors of the embedded cluster.
    #[arg(long, default_value_t = 2)]
    executors: usize,
    /// Another directory the embedded cluster may read tables from and
    /// write output to, besides the working directory and the data cache
    /// (repeatable).
    #[arg(long = "allow-path", value_name = "DIR")]
    allow_paths: Vec<std::path::PathBuf>,
    /// Do not report rows and time after each statement.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Keep going after a failing statement (the exit code is still 1).
    #[arg(long)]
    continue_on_error: bool,
}

/// How results are shown; the shell's meta-commands change it.
#[derive(Debug)]
pub(crate) struct Display {
    pub(crate) format: Format,
    pub(crate) max_rows: usize,
    pub(crate) quiet: bool,
    pub(crate) timing: bool,
    /// `\o FILE`: results go there instead of stdout.
    pub(crate) output: Option<(PathBuf, std::fs::File)>,
    /// `\x`: rows as blocks of lines (on), or when a row does not fit the
    /// terminal (auto).
    pub(crate) expanded: Expanded,
}

pub(crate) async fn run(args: SqlArgs) -> Result<(), ClientError> {
    let interactive =
        args.commands.is_empty() && args.files.is_empty() && std::io::stdin().is_terminal();
    let ctx = connect(&args).await?;
    if let Some(sf) = args.tpch {
        let dir = default_tpch_dir(sf);
        if !args.quiet {
            eprintln!("Generating TPC-H SF {sf} in {} (cached) ...", dir.display());
        }
        generate_tpch(sf, &dir, 4)?;
        register_tpch(&ctx, &dir).await?;
    }
    let on_terminal = std::io::stdout().is_terminal();
    let mut display = Display {
        format: args.format.unwrap_or(if on_terminal {
            Format::Table
        } else {
            Format::Csv
        }),
        max_rows: args.max_rows.unwrap_or(if on_terminal { 40 } else { 0 }),
        quiet: args.quiet,
        timing: true,
        output: None,
        expanded: Expanded::Auto,
    };
    if interactive {
        return super::shell::run(&ctx, &mut display).await;
    }
    let mut scripts: Vec<(Option<PathBuf>, String)> =
        args.commands.iter().map(|c| (None, c.clone())).collect();
    for file in &args.files {
        let text = std::fs::read_to_string(file).map_err(|e| {
            ClientError::Query(DataFusionError::Plan(format!(
                "cannot read SQL file {}: {e}",
                file.display()
            )))
        })?;
        scripts.push((Some(file.clone()), text));
    }
    if scripts.is_empty() {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        scripts.push((None, text));
    }
    let mut first_error = None;
    for (file, script) in scripts {
        if let Err(e) = run_script(
            &ctx,
            file.as_deref(),
            &script,
            &mut display,
            args.continue_on_error,
        )
        .await
        {
            if !args.continue_on_error {
                return Err(e);
            }
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

async fn connect(args: &SqlArgs) -> Result<Context, ClientError> {
    match &args.scheduler {
        Some(url) => {
            check_url(url)?;
            Context::remote_with(url, args.connection.link()?).await
        }
        None => {
            let mut config = EmbeddedClusterConfig::with_executors(args.executors);
            config
                .allowed_paths
                .extend(args.allow_paths.iter().cloned());
            Context::embedded_with(config).await
        }
    }
}

/// Runs a script's statements in order; an error names the failing
/// statement (and its file and line when it has them).
pub(crate) async fn run_script(
    ctx: &Context,
    file: Option<&std::path::Path>,
    script: &str,
    display: &mut Display,
    continue_on_error: bool,
) -> Result<(), ClientError> {
    let statements = split_statements(script)?;
    let several = statements.len() > 1 || file.is_some();
    let mut first_error = None;
    for (number, statement) in statements.iter().enumerate() {
        if let Err(e) = run_sql(ctx, &statement.sql, display).await {
            let e = if several {
                let place = match file {
                    Some(file) => format!("{}:{}", file.display(), statement.line),
                    None => format!("line {}", statement.line),
                };
                locate(e, &format!("statement {} ({place})", number + 1))
            } else {
                e
            };
            if !continue_on_error {
                return Err(e);
            }
            eprintln!("Error: {}", super::one_line(&e));
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Prefixes an error with where it happened, keeping its exit code.
fn locate(error: ClientError, place: &str) -> ClientError {
    match error {
        ClientError::JobFailed {
            job_id,
            kind,
            message,
            query_error,
        } => ClientError::JobFailed {
            job_id,
            kind,
            message: format!("{place} failed: {message}"),
            query_error,
        },
        ClientError::Query(e) => match volley_client::find_client_error(&e) {
            Some(ClientError::JobFailed {
                job_id,
                kind,
                message,
                query_error,
            }) => ClientError::JobFailed {
                job_id: job_id.clone(),
                kind: *kind,
                message: format!("{place} failed: {message}"),
                query_error: query_error.clone(),
            },
            _ => ClientError::Query(DataFusionError::Plan(format!(
                "{place} failed: {}",
                super::one_line(&ClientError::Query(e))
            ))),
        },
        other => other,
    }
}

/// Runs one SQL statement (text) and prints its result. Ctrl-C cancels its
/// job on the cluster.
pub(crate) async fn run_sql(
    ctx: &Context,
    sql: &str,
    display: &mut Display,
) -> Result<(), ClientError> {
    let mut parsed = DFParser::parse_sql(sql).map_err(ClientError::Query)?;
    let Some(statement) = parsed.pop_front() else {
        return Ok(());
    };
    let started = Instant::now();
    let progress = std::io::stderr().is_terminal().then(Progress::new);
    let current_job: Arc<Mutex<Option<String>>> = Arc::default();
    {
        let progress = progress.clone();
        let current_job = Arc::clone(&current_job);
        ctx.set_job_observer(Some(Arc::new(move |status: &v1::JobStatus| {
            *current_job.lock().unwrap_or_else(|p| p.into_inner()) = Some(status.job_id.clone());
            if let Some(progress) = &progress {
                progress.update(status);
            }
        })));
    }
    let on_file = display.output.is_some();
    let layout = if on_file {
        Layout::PLAIN
    } else {
        Layout {
            expanded: display.expanded,
            width: terminal_width(),
        }
    };
    let max_rows = if on_file { 0 } else { display.max_rows };
    let format = display.format;
    let output = &mut display.output;
    // The result is written as its batches arrive: memory holds at most a
    // table's worth of rows, and once a row limit is reached the stream is
    // dropped, which cancels (or releases) the job on the cluster.
    let query = async {
        let plan = ctx.state().statement_to_plan(statement).await?;
        let df = ctx.execute_logical_plan(plan).await?;
        let schema = Arc::clone(df.schema().inner());
        if schema.fields().is_empty() {
            df.collect().await?;
            return Ok(None);
        }
        let mut stream = df.execute_stream().await?;
        let mut writer = ResultWriter::new(format, Arc::clone(&schema), max_rows, layout);
        let mut first = true;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            if first {
                // The result starts: the progress line gives way to it.
                first = false;
                if let Some(progress) = &progress {
                    progress.stop();
                }
            }
            let more = match output {
                Some((_, file)) => writer.push(file, batch)?,
                None => writer.push(&mut std::io::stdout().lock(), batch)?,
            };
            if !more {
                break;
            }
        }
        drop(stream);
        if let Some(progress) = &progress {
            progress.stop();
        }
        let cut = writer.cut();
        let rows = match output {
            Some((_, file)) => {
                let rows = writer.finish(file)?;
                file.flush()?;
                rows
            }
            None => {
                let mut stdout = std::io::stdout().lock();
                let rows = writer.finish(&mut stdout)?;
                stdout.flush()?;
                rows
            }
        };
        Ok::<_, DataFusionError>(Some((rows, cut)))
    };
    tokio::pin!(query);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let outcome = loop {
        tokio::select! {
            result = &mut query => break result.map_err(ClientError::Query),
            _ = tick.tick() => {
                if let Some(progress) = &progress {
                    progress.tick();
                }
            }
            _ = tokio::signal::ctrl_c() => {
                let job = current_job.lock().unwrap_or_else(|p| p.into_inner()).clone();
                if let Some(job) = &job {
                    let _ = ctx.scheduler().cancel(&JobId::from(job.as_str())).await;
                }
                break Err(ClientError::JobFailed {
                    job_id: JobId::from(job.unwrap_or_default()),
                    kind: v1::ErrorKind::Cancelled,
                    message: "cancelled (Ctrl-C); the job was stopped on the cluster".into(),
                    query_error: None,
                });
            }
        }
    };
    ctx.set_job_observer(None);
    if let Some(progress) = &progress {
        progress.stop();
    }
    let Some((rows, cut)) = outcome? else {
        // DDL and SET: nothing to print but that it worked.
        if !display.quiet {
            eprintln!("OK in {:.3}s", started.elapsed().as_secs_f64());
        }
        return Ok(());
    };
    if !display.quiet {
        let plural = if rows == 1 { "" } else { "s" };
        let shown = if cut { " shown" } else { "" };
        // A query that lost an executor says so, rather than leaving the
        // user to wonder why its progress went back.
        // Only this query's job: one whose result was cut short never
        // reached its end here, so the session's last job is another's.
        let this_job = current_job
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let recovered = ctx
            .last_job()
            .filter(|job| Some(&job.job_id) == this_job.as_ref())
            .and_then(|job| recovery_note(&job))
            .map(|note| format!(" ({note})"))
            .unwrap_or_default();
        if display.timing {
            eprintln!(
                "{rows} row{plural}{shown} in {:.3}s{recovered}",
                started.elapsed().as_secs_f64()
            );
        } else {
            eprintln!("{rows} row{plural}{shown}{recovered}");
        }
    }
    Ok(())
}
