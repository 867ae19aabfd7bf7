//! What each operator of a stage's plan did in one task: output rows,
//! compute time and spills, read from DataFusion's metrics after the task
//! ran. The scheduler sums them over a stage's tasks for `EXPLAIN ANALYZE`
//! and the web UI.
//!
//! A stage's plan is decoded once per executor and shared by its tasks
//! there, so an operator's metrics hold every partition it ran; only the
//! ones of this task's partition are taken.

use std::sync::Arc;

use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::MetricValue;
use volley_proto::v1;

/// The operators of `plan`, in pre-order (the order `displayable(..)
/// .indent()` prints them), with the metrics of `partition`.
pub(crate) fn operator_metrics(
    plan: &Arc<dyn ExecutionPlan>,
    partition: usize,
) -> Vec<v1::OperatorMetrics> {
    let mut operators = Vec::new();
    collect(plan, partition, 0, &mut operators);
    operators
}

fn collect(
    node: &Arc<dyn ExecutionPlan>,
    partition: usize,
    depth: u32,
    into: &mut Vec<v1::OperatorMetrics>,
) {
    let mut operator = v1::OperatorMetrics {
        depth,
        name: node.name().to_string(),
        ..Default::default()
    };
    if let Some(metrics) = node.metrics() {
        for metric in metrics.iter() {
            if metric.partition() != Some(partition) {
                continue;
            }
            let value = metric.value();
            let amount = value.as_usize() as u64;
            match value {
                MetricValue::OutputRows(_) => operator.output_rows += amount,
                MetricValue::ElapsedCompute(_) => operator.elapsed_compute_ns += amount,
                MetricValue::SpillCount(_) => operator.spill_count += amount,
                MetricValue::SpilledBytes(_) => operator.spilled_bytes += amount,
                _ => {}
            }
        }
    }
    into.push(operator);
    for child in node.children() {
        collect(child, partition, depth + 1, into);
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    use super::*;

    #[tokio::test]
    async fn each_operator_reports_the_rows_of_the_partition_the_task_ran() {
        let ctx = SessionContext::new();
        let df = ctx
            .sql("SELECT column1 FROM (VALUES (1), (2), (3)) WHERE column1 > 1")
            .await
            .unwrap();
        let plan = df.create_physical_plan().await.unwrap();
        let batches = datafusion::physical_plan::collect(Arc::clone(&plan), ctx.task_ctx())
            .await
            .unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
        let operators = operator_metrics(&plan, 0);
        assert_eq!(operators[0].depth, 0);
        assert!(operators.windows(2).all(|w| w[1].depth <= w[0].depth + 1));
        let filter = operators
            .iter()
            .find(|o| o.name == "FilterExec")
            .expect("a filter in the plan");
        assert_eq!(filter.output_rows, 2);
        // Another partition ran nothing.
        assert!(
            operator_metrics(&plan, 7)
                .iter()
                .all(|o| o.output_rows == 0)
        );
    }
}
