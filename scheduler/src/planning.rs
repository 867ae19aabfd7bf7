//! Turns a submitted logical plan into a job: decode it, plan it physically
//! for the cluster's size, cut it into stages.

use std::sync::Arc;

use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::listing::ListingTable;
use datafusion::error::DataFusionError;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::sanity_checker::SanityCheckPlan;
use datafusion::physical_plan::{ExecutionPlan, displayable};
use datafusion::prelude::SessionConfig;
use volley_dataflow::{
    JobId, OutputFormat, classify_error, decode_logical_plan, describe_files, encode_plan,
    encode_schema, query_error, volley_internal, volley_options,
};
use volley_proto::v1;
use volley_security::PathPolicy;

use crate::job::Job;
use crate::output_target::{OutputTarget, check_copy_target};
use crate::partition_safety::check_independent_partitions;
use crate::partition_sizing::plan_sized;
use crate::planning_session::PlanningSessions;
use crate::runtime_filters::plan_runtime_filters;
use crate::scan_balance::balance_file_groups;
use crate::script::directory_copy;
use crate::stage_planner::{StagePlan, cut_into_stages};
use crate::wire_memory::memory_scans_for_the_wire;

/// Plans a submitted job; a plan that cannot be planned becomes a job that
/// failed at submission, with a typed error the client can show.
pub(crate) async fn plan_job(
    job_id: JobId,
    request: v1::SubmitJobRequest,
    target_partitions: usize,
    policy: &PathPolicy,
    planning: Arc<PlanningSessions>,
) -> Job {
    let name = request.name.clone();
    match try_plan(&job_id, request, target_partitions, policy, &planning).await {
        Ok(job) => job,
        Err(e) => Job::failed_at_submit(
            job_id,
            name,
            v1::JobError {
                kind: classify_error(&e) as i32,
                message: e.to_string(),
                query_error: query_error(&e),
            },
        ),
    }
}

/// Makes a physical plan from a [`PlanningSessions`] session ready to run as tasks:
/// scans spread by whole files (unless `volley.balance_file_groups` is
/// off), in-memory scans made sendable (`wire_memory`), and the result
/// checked again: every operator's required input
/// partitioning and ordering still holds.
pub(crate) fn prepare_for_tasks(
    physical: Arc<dyn ExecutionPlan>,
    config: &SessionConfig,
) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
    let physical = if volley_options(config).balance_file_groups {
        balance_file_groups(physical)?
    } else {
        physical
    };
    let physical = memory_scans_for_the_wire(physical)?;
    check_independent_partitions(&physical)?;
    check_requirements(physical, config)
}

/// A logical plan as the stages that run it: DataFusion's physical planner
/// (its errors naming the tables' paths), with as many partitions as its
/// input's size calls for ([`plan_sized`]), then [`plan_stages`]. The one
/// path from a logical plan to stages, for a plan job and for each
/// statement of a script job.
pub(crate) async fn logical_to_stages(
    job_id: &JobId,
    logical: &LogicalPlan,
    state: &SessionState,
    output: Option<(String, OutputFormat)>,
    first_stage: u32,
) -> datafusion::error::Result<(Vec<u8>, Vec<StagePlan>)> {
    let (physical, state) = plan_sized(logical, state).await?;
    plan_stages(job_id, physical, output, state.config(), first_stage)
}

/// A physical plan from a [`PlanningSessions`] session as the stages that run it:
/// made ready for tasks ([`prepare_for_tasks`]), cut, and each stage
/// checked ([`check_stages`]); with the encoded schema of its result. The
/// one path from a physical plan to stages, for plan and script jobs.
pub(crate) fn plan_stages(
    job_id: &JobId,
    physical: Arc<dyn ExecutionPlan>,
    output: Option<(String, OutputFormat)>,
    config: &SessionConfig,
    first_stage: u32,
) -> datafusion::error::Result<(Vec<u8>, Vec<StagePlan>)> {
    let physical = prepare_for_tasks(physical, config)?;
    let schema = encode_schema(physical.schema().as_ref())?;
    let options = volley_options(config);
    let mut stages = cut_into_stages(
        job_id,
        physical,
        output,
        first_stage,
        options.runtime_filters,
    )?;
    if options.runtime_filters {
        plan_runtime_filters(&mut stages)?;
    }
    for stage in &mut stages {
        stage.pipelined = options.pipelined_exchange;
        stage.releases_outputs = options.release_outputs;
    }
    check_stages(&stages, config)?;
    Ok((schema, stages))
}

/// [`check_requirements`] for each stage of a cut plan, and that each
/// stage can be sent to executors.
pub(crate) fn check_stages(
    stages: &[StagePlan],
    config: &SessionConfig,
) -> datafusion::error::Result<()> {
    for stage in stages {
        check_requirements(Arc::clone(&stage.plan), config)
            .map_err(|e| volley_internal(format!("stage {}: {e}", stage.id)))?;
        // What cannot travel to the executors is refused now, with the
        // codec's own reason, not when the stage is launched.
        encode_plan(Arc::clone(&stage.plan))?;
    }
    Ok(())
}

/// DataFusion's `SanityCheckPlan` over a plan Volley changed: each
/// operator's input must still satisfy the partitioning and ordering it
/// requires. Applied to the whole plan and to every stage (whose readers
/// promise what the cut exchange did), it catches a Volley rewrite that
/// would change an answer; such a plan is refused, never run.
pub(crate) fn check_requirements(
    plan: Arc<dyn ExecutionPlan>,
    config: &SessionConfig,
) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
    SanityCheckPlan::new()
        .optimize(plan, config.options())
        .map_err(|e| {
            volley_internal(format!(
                "a plan prepared for the cluster no longer meets its operators' requirements: {e}"
            ))
        })
}

/// Planning reads file metadata; DataFusion's decoders do not always say
/// which file failed, so name the tables' locations.
pub(crate) fn with_table_paths(error: DataFusionError, plan: &LogicalPlan) -> DataFusionError {
    // Only errors from reading files: a planning error about the query
    // itself (a bad window frame, an unknown column) reads as DataFusion's.
    if classify_error(&error) != v1::ErrorKind::User
        || matches!(
            error.find_root(),
            DataFusionError::Plan(_)
                | DataFusionError::SQL(..)
                | DataFusionError::SchemaError(..)
                | DataFusionError::NotImplemented(_)
                | DataFusionError::Configuration(_)
        )
    {
        return error;
    }
    let mut paths = Vec::new();
    let _ = plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Some(listing) = source_as_provider(&scan.source).ok().and_then(|p| {
                p.downcast_ref::<ListingTable>()
                    .map(|l| l.table_paths().clone())
            })
        {
            paths.extend(listing.iter().map(|url| url.to_string()));
        }
        Ok(TreeNodeRecursion::Continue)
    });
    let message = error.to_string();
    if paths.is_empty()
        || paths
            .iter()
            .any(|p| message.contains(p.trim_start_matches("file://")))
    {
        return error;
    }
    DataFusionError::Plan(format!(
        "{message} (while reading {})",
        describe_files(&paths)
    ))
}

async fn try_plan(
    job_id: &JobId,
    request: v1::SubmitJobRequest,
    target_partitions: usize,
    policy: &PathPolicy,
    planning: &PlanningSessions,
) -> datafusion::error::Result<Job> {
    let started = std::time::Instant::now();
    let ctx = planning.for_job(target_partitions, &request.settings)?;
    let logical = decode_logical_plan(&request.logical_plan, &ctx.task_ctx())?;
    let decoded = started.elapsed();
    check_copy_target(&logical, planning.runtime(), policy).await?;
    let source = logical.display_indent().to_string();
    // COPY TO a directory (DataFrame::write_parquet and friends): the
    // executors write their partitions in parallel, staged until success.
    let (logical, output) = match directory_copy(job_id, &logical, policy) {
        Some(Ok((input, target))) => (input, Some(target)),
        Some(Err(e)) => return Err(e),
        None => (logical, None),
    };
    let (schema, stages) = logical_to_stages(
        job_id,
        &logical,
        &ctx.state(),
        output.as_ref().map(OutputTarget::staging_target),
        0,
    )
    .await?;
    tracing::debug!(
        job_id = %job_id,
        decode_ms = decoded.as_secs_f64() * 1e3,
        plan_ms = started.elapsed().as_secs_f64() * 1e3,
        "job planned"
    );
    for stage in stages.iter().filter(|_| volley_dataflow::log_plans()) {
        tracing::debug!(
            job_id = %job_id,
            stage = %stage.id,
            plan = %displayable(stage.plan.as_ref()).indent(false),
            "stage planned"
        );
    }
    let mut job = Job::new(
        job_id.clone(),
        request.name,
        stages,
        request.settings,
        schema,
    )
    .with_source(source);
    // Only a job that will run gets its staging directory (or a check of
    // its prefix).
    if let Some(target) = &output
        && let Err(e) = target.prepare().await
    {
        target.abandon();
        return Err(e);
    }
    job.output_target = output;
    Ok(job)
}
