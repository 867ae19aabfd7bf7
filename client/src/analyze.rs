//! `EXPLAIN ANALYZE` on a cluster: the query runs there as a job (its rows
//! are counted and dropped), then its stages are described with what every
//! operator did, summed over the stage's tasks (output rows, compute time,
//! spills), and each stage's median and slowest task, so skew shows.
//!
//! The metrics come from the executors with each task's success and are
//! summed by the scheduler (`StageStatus.operators`); this file only runs
//! the job and lays the answer out.

use std::fmt::{self, Write as _};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::StringArray;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;
use volley_proto::v1;
use volley_proto::{annotated_plan, duration_text as duration};

/// The `plan_type` of `EXPLAIN ANALYZE`'s row.
pub const DISTRIBUTED_PLAN_WITH_METRICS: &str = "distributed_plan_with_metrics";

/// Runs its input (a query on the cluster) to the end and answers with the
/// job's stages and their metrics.
pub(crate) struct ClusterAnalyzeExec {
    input: Arc<dyn ExecutionPlan>,
    /// Where the input's job leaves its final status.
    job: Arc<Mutex<Option<v1::JobStatus>>>,
    /// The session's own last job, which the shell reads.
    session_last_job: Arc<Mutex<Option<v1::JobStatus>>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl ClusterAnalyzeExec {
    pub(crate) fn new(
        input: Arc<dyn ExecutionPlan>,
        job: Arc<Mutex<Option<v1::JobStatus>>>,
        session_last_job: Arc<Mutex<Option<v1::JobStatus>>>,
        schema: SchemaRef,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self {
            input,
            job,
            session_last_job,
            schema,
            properties,
        }
    }
}

impl fmt::Debug for ClusterAnalyzeExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterAnalyzeExec")
    }
}

impl DisplayAs for ClusterAnalyzeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("ClusterAnalyzeExec")
    }
}

impl ExecutionPlan for ClusterAnalyzeExec {
    fn name(&self) -> &str {
        "ClusterAnalyzeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(ClusterAnalyzeExec::new(
                input,
                Arc::clone(&self.job),
                Arc::clone(&self.session_last_job),
                Arc::clone(&self.schema),
            ))),
            _ => Err(volley_dataflow::volley_internal(
                "ClusterAnalyzeExec takes one child",
            )),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(volley_dataflow::volley_internal(format!(
                "ClusterAnalyzeExec has one partition, not {partition}"
            )));
        }
        let mut input = self.input.execute(0, context)?;
        let job = Arc::clone(&self.job);
        let session_last_job = Arc::clone(&self.session_last_job);
        let schema = Arc::clone(&self.schema);
        let answer = async move {
            let mut rows = 0;
            while let Some(batch) = input.next().await {
                rows += batch?.num_rows();
            }
            let status = job
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .ok_or_else(|| {
                    volley_dataflow::volley_internal(
                        "EXPLAIN ANALYZE: the query ended without a final job status",
                    )
                })?;
            *session_last_job.lock().unwrap_or_else(|p| p.into_inner()) = Some(status.clone());
            let text = describe_analyzed(&status, rows);
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(StringArray::from(vec![DISTRIBUTED_PLAN_WITH_METRICS])),
                    Arc::new(StringArray::from(vec![text])),
                ],
            )
            .map_err(DataFusionError::from)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            futures::stream::once(answer),
        )))
    }
}

/// A finished job's stages, each with its tasks' timings and its plan with
/// every operator's metrics summed over those tasks.
pub(crate) fn describe_analyzed(status: &v1::JobStatus, rows: usize) -> String {
    let mut text = String::new();
    let tasks: u32 = status.stages.iter().map(|s| s.partitions).sum();
    let elapsed_ms = status.ended_at_ms.saturating_sub(status.started_at_ms);
    let _ = writeln!(
        text,
        "job {}: {} stage{}, {tasks} tasks, {rows} rows out in {}",
        status.job_id,
        status.stages.len(),
        if status.stages.len() == 1 { "" } else { "s" },
        duration(elapsed_ms * 1_000),
    );
    if let Some(r) = &status.recovery {
        let rerun = r.tasks_retried + r.map_tasks_rerun;
        if r.executors_lost > 0 || rerun > 0 {
            let _ = writeln!(
                text,
                "recovery: {} executors lost, {rerun} tasks re-ran",
                r.executors_lost
            );
        }
    }
    for stage in &status.stages {
        let reads = if stage.input_stages.is_empty() {
            String::new()
        } else {
            let inputs: Vec<String> = stage.input_stages.iter().map(u32::to_string).collect();
            format!("; reads stage {}", inputs.join(", "))
        };
        let _ = writeln!(
            text,
            "Stage {}: {} tasks{reads}; {} rows, {} bytes out; tasks took median {}, slowest {}",
            stage.stage_id,
            stage.partitions,
            stage.rows_out,
            stage.bytes_out,
            duration(stage.median_task_us),
            duration(stage.longest_task_us),
        );
        // The job ran: its readers were resolved, whatever the plan as
        // first displayed says.
        let plan = stage.plan.replace(", unresolved", "");
        for line in annotated_plan(&plan, &stage.operators) {
            let _ = writeln!(text, "  {line}");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_plan_line_gets_its_operators_summed_metrics_past_the_cooperative_wrappers() {
        let op = |depth, name: &str, rows| v1::OperatorMetrics {
            depth,
            name: name.into(),
            output_rows: rows,
            elapsed_compute_ns: 2_500_000,
            ..Default::default()
        };
        let status = v1::JobStatus {
            job_id: "j1".into(),
            started_at_ms: 1_000,
            ended_at_ms: 2_500,
            stages: vec![v1::StageStatus {
                stage_id: 0,
                partitions: 2,
                plan: "ShuffleWriterExec: stage=0\n  HashJoinExec: mode=CollectLeft\n    DataSourceExec: x\n    DataSourceExec: y\n".into(),
                median_task_us: 1_500,
                longest_task_us: 3_000_000,
                operators: vec![
                    op(0, "ShuffleWriterExec", 10),
                    op(1, "CooperativeExec", 10),
                    op(2, "HashJoinExec", 10),
                    op(3, "DataSourceExec", 4),
                    op(3, "DataSourceExec", 600),
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = describe_analyzed(&status, 10);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "job j1: 1 stage, 2 tasks, 10 rows out in 1.50s");
        assert!(
            lines[1].ends_with("tasks took median 1.5ms, slowest 3.00s"),
            "{text}"
        );
        assert!(
            lines[3].starts_with(
                "    HashJoinExec: mode=CollectLeft, metrics=[output_rows=10, elapsed_compute=2.5ms"
            ),
            "{text}"
        );
        assert!(
            lines[5].contains("DataSourceExec: y, metrics=[output_rows=600,"),
            "{text}"
        );
    }
}
