//! Turns a submitted logical plan into a job: decode it, plan it physically
//! for the cluster's size, cut it into stages.

use std::sync::Arc;

use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::listing::ListingTable;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::{ExecutionPlan, displayable};
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion::prelude::SessionConfig;
use volley_dataflow::{
    JobId, apply_settings, classify_error, decode_logical_plan, describe_files, encode_schema,
    object_store_runtime, query_error, session_config, volley_options,
};
use volley_proto::v1;

use crate::job::Job;
use crate::output_target::OutputTarget;
use crate::partition_safety::make_partitions_independent;
use crate::scan_balance::balance_file_groups;
use crate::script::directory_copy;
use crate::stage_planner::cut_into_stages;

/// Plans a submitted job; a plan that cannot be planned becomes a job that
/// failed at submission, with a typed error the client can show.
pub(crate) async fn plan_job(
    job_id: JobId,
    request: v1::SubmitJobRequest,
    target_partitions: usize,
) -> Job {
    let name = request.name.clone();
    match try_plan(&job_id, request, target_partitions).await {
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

/// Makes a single-node physical plan ready to run as tasks: scans spread by
/// whole files (unless `volley.balance_file_groups` is off), and no
/// partition relying on its siblings.
pub(crate) fn prepare_for_tasks(
    physical: Arc<dyn ExecutionPlan>,
    config: &SessionConfig,
) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
    let physical = if volley_options(config).balance_file_groups {
        balance_file_groups(physical)?
    } else {
        physical
    };
    make_partitions_independent(physical)
}

/// Planning reads file metadata; DataFusion's decoders do not always say
/// which file failed, so name the tables' locations.
fn with_table_paths(error: DataFusionError, plan: &LogicalPlan) -> DataFusionError {
    if classify_error(&error) != v1::ErrorKind::User {
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
) -> datafusion::error::Result<Job> {
    let config = apply_settings(
        session_config().with_target_partitions(target_partitions.max(1)),
        &request.settings,
    )?;
    let ctx = SessionContext::new_with_config_rt(config, object_store_runtime()?);
    let logical = decode_logical_plan(&request.logical_plan, &ctx.task_ctx())?;
    // COPY TO a directory (DataFrame::write_parquet and friends): the
    // executors write their partitions in parallel, staged until success.
    let (logical, output) = match directory_copy(job_id, &logical) {
        Some(Ok((input, target))) => {
            target.ensure_empty().await?;
            (input, Some(target))
        }
        Some(Err(e)) => return Err(e),
        None => (logical, None),
    };
    let state = ctx.state();
    let physical = DefaultPhysicalPlanner::default()
        .create_physical_plan(&logical, &state)
        .await
        .map_err(|e| with_table_paths(e, &logical))?;
    let physical = prepare_for_tasks(physical, state.config())?;
    let schema = encode_schema(physical.schema().as_ref())?;
    let stages = cut_into_stages(
        job_id,
        Arc::clone(&physical),
        output.as_ref().map(OutputTarget::staging_target),
    )?;
    if let (Some(target), Some(last)) = (&output, stages.last()) {
        target.planned(last.partitions);
    }
    for stage in &stages {
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
    );
    job.output_target = output;
    Ok(job)
}
