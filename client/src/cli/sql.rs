//! `volley sql`: run SQL statements on a cluster (or an embedded one) and
//! print their results.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::sql::parser::DFParser;
use volley_client::tpch::{default_tpch_dir, generate_tpch, register_tpch};
use volley_client::{ClientError, Context, EmbeddedClusterConfig};

use super::output::{Format, write_batches};

/// Arguments of `volley sql`.
#[derive(Debug, clap::Args)]
pub(crate) struct SqlArgs {
    /// URL of the scheduler; without it an embedded cluster is started.
    #[arg(long, env = "VOLLEY_SCHEDULER")]
    scheduler: Option<String>,
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
    /// Generate TPC-H data at this scale factor and register its 8 tables.
    #[arg(long, value_name = "SF")]
    tpch: Option<f64>,
    /// Executors of the embedded cluster.
    #[arg(long, default_value_t = 2)]
    executors: usize,
    /// Do not report rows and time after each query.
    #[arg(long, short = 'q')]
    quiet: bool,
}

pub(crate) async fn run(args: SqlArgs) -> Result<(), ClientError> {
    let ctx = match &args.scheduler {
        Some(url) => Context::remote(url).await?,
        None => {
            Context::embedded_with(EmbeddedClusterConfig::with_executors(args.executors)).await?
        }
    };
    if let Some(sf) = args.tpch {
        let dir = default_tpch_dir(sf);
        if !args.quiet {
            eprintln!("Generating TPC-H SF {sf} in {} (cached) ...", dir.display());
        }
        generate_tpch(sf, &dir, 4)?;
        register_tpch(&ctx, &dir).await?;
    }
    let format = args.format.unwrap_or(if std::io::stdout().is_terminal() {
        Format::Table
    } else {
        Format::Csv
    });
    let mut scripts: Vec<String> = args.commands.clone();
    for file in &args.files {
        let text = std::fs::read_to_string(file).map_err(|e| {
            ClientError::Query(DataFusionError::Plan(format!(
                "cannot read SQL file {}: {e}",
                file.display()
            )))
        })?;
        scripts.push(text);
    }
    if scripts.is_empty() {
        if std::io::stdin().is_terminal() {
            return repl(&ctx, format, args.quiet).await;
        }
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        scripts.push(text);
    }
    for script in scripts {
        run_script(&ctx, &script, format, args.quiet).await?;
    }
    Ok(())
}

/// Runs every statement of `script` in order, stopping at the first error.
async fn run_script(
    ctx: &Context,
    script: &str,
    format: Format,
    quiet: bool,
) -> Result<(), ClientError> {
    let statements = DFParser::parse_sql(script).map_err(ClientError::Query)?;
    for statement in statements {
        let started = Instant::now();
        let plan = ctx.state().statement_to_plan(statement).await?;
        let batches: Vec<RecordBatch> = ctx.execute_logical_plan(plan).await?.collect().await?;
        let mut stdout = std::io::stdout().lock();
        write_batches(&mut stdout, format, &batches)?;
        stdout.flush()?;
        if !quiet {
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            eprintln!(
                "{rows} row{} in {:.3}s",
                if rows == 1 { "" } else { "s" },
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

/// A plain read-eval-print loop: statements end with `;`, `\q` quits.
async fn repl(ctx: &Context, format: Format, quiet: bool) -> Result<(), ClientError> {
    eprintln!("Volley SQL shell. End statements with ';'. \\q quits.");
    let stdin = std::io::stdin();
    let mut buffer = String::new();
    loop {
        eprint!(
            "{}",
            if buffer.is_empty() {
                "volley> "
            } else {
                "   ...> "
            }
        );
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            return Ok(());
        }
        if buffer.is_empty() && line.trim() == "\\q" {
            return Ok(());
        }
        buffer.push_str(&line);
        if buffer.trim_end().ends_with(';') {
            let script = std::mem::take(&mut buffer);
            if let Err(e) = run_script(ctx, &script, format, quiet).await {
                eprintln!("Error: {}", super::one_line(&e));
            }
        }
    }
}
