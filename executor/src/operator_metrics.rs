//! What each operator of a stage's plan has done on this executor: output
//! rows, compute time and spills, read from DataFusion's metrics after a
//! task ran.
//!
//! A stage attempt's plan is decoded once per executor and shared by its
//! tasks there, so its metrics add up everything its tasks ran on this
//! executor, whichever partitions each ran (a task under a
//! `CoalescePartitionsExec` runs every partition of what is below it, and a
//! `CollectLeft` join's build side runs once for all of them). Each task
//! reports that running total; the scheduler keeps the latest per executor
//! and sums over executors for `EXPLAIN ANALYZE` and the web UI.

use std::sync::Arc;

use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::MetricValue;
use volley_proto::v1;

/// The operators of `plan`, in pre-order (the order `displayable(..)
/// .indent()` prints them), with their metrics over every partition run.
pub(crate) fn operator_metrics(plan: &Arc<dyn ExecutionPlan>) -> Vec<v1::OperatorMetrics> {
    let mut operators = Vec::new();
    collect(plan, 0, &mut operators);
    operators
}

fn collect(node: &Arc<dyn ExecutionPlan>, depth: u32, into: &mut Vec<v1::OperatorMetrics>) {
    let mut operator = v1::OperatorMetrics {
        depth,
        name: node.name().to_string(),
        ..Default::default()
    };
    if let Some(metrics) = node.metrics() {
        for metric in metrics.iter() {
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
        collect(child, depth + 1, into);
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    use super::*;

    #[tokio::test]
    async fn each_operator_reports_the_rows_of_every_partition_it_ran() {
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
        let operators = operator_metrics(&plan);
        assert_eq!(operators[0].depth, 0);
        assert!(operators.windows(2).all(|w| w[1].depth <= w[0].depth + 1));
        let filter = operators
            .iter()
            .find(|o| o.name == "FilterExec")
            .expect("a filter in the plan");
        assert_eq!(filter.output_rows, 2);
    }
}
