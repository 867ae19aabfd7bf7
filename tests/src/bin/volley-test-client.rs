//! A client program, built as a user would build one: connects to the
//! scheduler named by its first argument (credentials from `VOLLEY_TOKEN`
//! and `VOLLEY_TLS_CA`), with the test functions registered, runs the SQL
//! script of its second argument and prints the last statement's rows as
//! CSV on stdout, then the final status of its job as one JSON line on
//! stderr (`job {...}`). The multi-host tests run it inside the client's
//! network namespace.

use std::process::ExitCode;

use datafusion::arrow::csv::WriterBuilder;
use volley_client::{Context, link_from_env};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, script] = args.as_slice() else {
        eprintln!("usage: volley-test-client SCHEDULER_URL SQL");
        return ExitCode::from(2);
    };
    match run(url, script).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("volley-test-client: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(url: &str, script: &str) -> Result<(), Box<dyn std::error::Error>> {
    let ctx = Context::remote_with(url, link_from_env()?).await?;
    ctx.register_udfs(&volley_tests::udfs::registry());
    let mut batches = Vec::new();
    for statement in script.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        batches = ctx.sql(statement).await?.collect().await?;
    }
    let mut out = Vec::new();
    {
        let mut writer = WriterBuilder::new().with_header(true).build(&mut out);
        for batch in &batches {
            writer.write(batch)?;
        }
    }
    print!("{}", String::from_utf8(out)?);
    if let Some(job) = ctx.last_job() {
        let recovery = job.recovery.unwrap_or_default();
        eprintln!(
            "job {}",
            serde_json::json!({
                "job_id": job.job_id,
                "tasks_retried": recovery.tasks_retried,
                "map_tasks_rerun": recovery.map_tasks_rerun,
                "stages_rerun": recovery.stages_rerun,
                "executors_lost": recovery.executors_lost,
            })
        );
    }
    Ok(())
}
