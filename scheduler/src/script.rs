//! Script jobs: a SQL script the scheduler plans and runs itself, so a
//! batch job lives on when the client that submitted it goes away.
//!
//! The driver runs the statements in order in a session of its own: DDL and
//! `SET` run on the scheduler (they only change that session's catalog and
//! settings); every query is planned and cut into stages like a client's job
//! and runs as the next statement of the same job (`SchedulerState::
//! begin_statement`). The last query's result, if an output path was given,
//! is written by the executors, one file per partition, into a staging
//! directory beside the path, which is renamed into place only when the
//! whole script has succeeded (an `s3://` prefix is written in place and
//! cleared on failure: `output_target`). A failure names the statement and
//! its line.

use std::sync::Arc;

use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use tracing::{info, warn};
use volley_dataflow::{JobId, Statement, classify_error, query_error, split_statements};
use volley_proto::v1;
use volley_security::PathPolicy;

use crate::job::Job;
use crate::output_target::{Commit, OutputTarget, check_copy_target};
use crate::planning::logical_to_stages;
use crate::service::Shared;

/// Does this plan run on the scheduler alone?
fn is_local(plan: &LogicalPlan) -> bool {
    matches!(
        plan,
        LogicalPlan::Ddl(_)
            | LogicalPlan::Statement(_)
            | LogicalPlan::Explain(_)
            | LogicalPlan::DescribeTable(_)
    )
}

fn user_error(e: &DataFusionError) -> v1::JobError {
    v1::JobError {
        kind: classify_error(e) as i32,
        message: e.to_string(),
        query_error: query_error(e),
    }
}

/// Runs a script job to its end; every outcome is recorded in the job.
pub(crate) async fn drive(
    shared: Arc<Shared>,
    job_id: JobId,
    statements: Vec<Statement>,
    settings: std::collections::HashMap<String, String>,
    output: Option<OutputTarget>,
    target_partitions: usize,
) {
    let mut copies = Vec::new();
    let outcome = run(
        &shared,
        &job_id,
        &statements,
        &settings,
        output.as_ref(),
        target_partitions,
        &mut copies,
    )
    .await;
    match outcome {
        Ok(true) => {
            // The COPY outputs, then the --output whose files the job lists:
            // committed the way a plan job's output is.
            let lists_files = output.is_some();
            let mut targets = copies;
            targets.extend(output);
            shared.state().finish_script(
                &job_id,
                Commit {
                    targets,
                    lists_files,
                },
            );
        }
        Ok(false) => {
            // Failed or cancelled while running; the job says why.
            output.iter().chain(&copies).for_each(OutputTarget::abandon);
        }
        Err(error) => {
            output.iter().chain(&copies).for_each(OutputTarget::abandon);
            shared.state().fail(&job_id, error);
        }
    }
}

/// `Ok(true)`: every statement succeeded (the COPY outputs in `copies` wait
/// to be moved into place); `Ok(false)`: the job ended meanwhile; `Err`: a
/// statement could not be planned or run here.
async fn run(
    shared: &Arc<Shared>,
    job_id: &JobId,
    statements: &[Statement],
    settings: &std::collections::HashMap<String, String>,
    output: Option<&OutputTarget>,
    target_partitions: usize,
    copies: &mut Vec<OutputTarget>,
) -> Result<bool, v1::JobError> {
    let ctx = shared
        .planning
        .for_job(target_partitions, settings)
        .map_err(|e| user_error(&e))?;
    let policy = &shared.config.security.paths;
    let runtime = Arc::clone(shared.planning.runtime());
    if let Some(output) = output {
        let prepared = output.prepare().await;
        shared.state().attach_script_output(job_id, output.clone());
        prepared.map_err(|e| user_error(&e))?;
    }
    let mut last_was_query = false;
    // Stage ids go on from one statement to the next.
    let mut next_stage = 0u32;
    let fail_at = |number: usize, statement: &Statement, e: &DataFusionError| v1::JobError {
        kind: classify_error(e) as i32,
        message: format!(
            "statement {} (line {}) failed: {e}",
            number + 1,
            statement.line
        ),
        query_error: None,
    };
    let last_query = statements.len().checked_sub(1);
    for (number, statement) in statements.iter().enumerate() {
        let plan = ctx
            .state()
            .create_logical_plan(&statement.sql)
            .await
            .map_err(|e| fail_at(number, statement, &e))?;
        if is_local(&plan) {
            ctx.execute_logical_plan(plan)
                .await
                .map_err(|e| fail_at(number, statement, &e))?
                .collect()
                .await
                .map_err(|e| fail_at(number, statement, &e))?;
            shared.state().local_statement_done(job_id);
            last_was_query = false;
            continue;
        }
        // COPY (query) TO 'dir/' is written like --output: in parallel by
        // the executors, staged, and moved into place with the job's success.
        check_copy_target(&plan, &runtime, policy)
            .await
            .map_err(|e| fail_at(number, statement, &e))?;
        let (plan, copy_target) = match directory_copy(job_id, &plan, policy) {
            Some(Ok((input, target))) => (input, Some(target)),
            Some(Err(e)) => return Err(fail_at(number, statement, &e)),
            None => (plan, None),
        };
        let state = ctx.state();
        let writes_output = output.is_some() && Some(number) == last_query;
        let target = copy_target
            .as_ref()
            .or(output.filter(|_| writes_output))
            .map(OutputTarget::staging_target);
        let (schema, stages) = async {
            let optimized = state.optimize(&plan)?;
            logical_to_stages(job_id, &optimized, &state, target, next_stage).await
        }
        .await
        .map_err(|e| fail_at(number, statement, &e))?;
        // The statement will run: its COPY target gets its staging
        // directory now, and is cleaned up with the job's other outputs.
        if let Some(target) = &copy_target {
            let prepared = target.prepare().await;
            copies.push(target.clone());
            shared.state().attach_script_output(job_id, target.clone());
            prepared.map_err(|e| fail_at(number, statement, &e))?;
        }
        next_stage += stages.len() as u32;
        let (done, finished) = tokio::sync::oneshot::channel();
        let started = shared.state().begin_statement(
            job_id,
            number as u32 + 1,
            statement.line,
            stages,
            schema,
            done,
        );
        if !started {
            return Ok(false);
        }
        info!(job_id = %job_id, statement = number + 1, line = statement.line, "script statement started");
        if finished.await.is_err() {
            // The job ended (failed or was cancelled) before the statement.
            return Ok(false);
        }
        last_was_query = copy_target.is_none();
    }
    if output.is_some() && !last_was_query {
        warn!(job_id = %job_id, "script with an output path does not end with a query");
        return Err(v1::JobError {
            kind: v1::ErrorKind::User as i32,
            message: "the script's last statement is not a query, so there is no result to write to the output path".into(), query_error: None, });
    }
    Ok(true)
}

/// A `COPY (query) TO 'dir/'` without partitioning: its input and where it
/// goes. `None` for anything else (a COPY to one file runs as DataFusion's
/// own single writer).
pub(crate) fn directory_copy(
    job_id: &JobId,
    plan: &LogicalPlan,
    policy: &PathPolicy,
) -> Option<Result<(LogicalPlan, OutputTarget), DataFusionError>> {
    let LogicalPlan::Copy(copy) = plan else {
        return None;
    };
    let url = copy.output_url.trim_end_matches('/');
    let is_directory =
        copy.output_url.ends_with('/') || !url.rsplit('/').next().unwrap_or(url).contains('.');
    if !copy.partition_by.is_empty() || !is_directory {
        return None;
    }
    let format = match copy.file_type.get_ext().to_lowercase().as_str() {
        "parquet" => v1::OutputFormat::Parquet,
        "csv" => v1::OutputFormat::Csv,
        "json" => v1::OutputFormat::Json,
        other => {
            return Some(Err(DataFusionError::NotImplemented(format!(
                "COPY to {other} files is not supported"
            ))));
        }
    };
    let spec = v1::OutputSpec {
        path: copy.output_url.clone(),
        format: format as i32,
    };
    Some(
        OutputTarget::try_new(job_id, &spec, policy)
            .map(|target| (copy.input.as_ref().clone(), target)),
    )
}

/// Plans a script submission: the job record, or the error that fails it.
pub(crate) fn prepare(
    job_id: &JobId,
    request: &v1::SubmitJobRequest,
    policy: &PathPolicy,
) -> Result<(Job, Vec<Statement>, Option<OutputTarget>), v1::JobError> {
    let statements = split_statements(&request.script).map_err(|e| user_error(&e))?;
    if statements.is_empty() {
        return Err(v1::JobError {
            kind: v1::ErrorKind::User as i32,
            message: "the script has no statements".into(),
            query_error: None,
        });
    }
    let output = request
        .output
        .as_ref()
        .filter(|o| !o.path.is_empty())
        .map(|spec| OutputTarget::try_new(job_id, spec, policy))
        .transpose()
        .map_err(|e| user_error(&e))?;
    let job = Job::new_script(
        job_id.clone(),
        request.name.clone(),
        statements.len() as u32,
        request.settings.clone(),
    );
    Ok((job, statements, output))
}
