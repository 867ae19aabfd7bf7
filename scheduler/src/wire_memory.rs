//! In-memory tables whose columns cannot cross Arrow IPC as they are.
//!
//! datafusion-proto sends an in-memory scan's batches as Arrow IPC, which
//! cannot write a dictionary of dictionaries. Such a scan is rewritten to
//! hold its batches as they travel (`volley_dataflow::wire_type`) under a
//! projection that casts each changed column back, so the operators above
//! see the table's own types.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::source::{DataSource, DataSourceExec};
use datafusion::error::Result;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{CastExpr, Column};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use volley_dataflow::{to_wire, wire_schema};

/// Rewrites every in-memory scan of `plan` as the module describes.
pub(crate) fn memory_scans_for_the_wire(
    plan: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(plan
        .transform_up(|node| {
            let Some(memory) = node
                .downcast_ref::<DataSourceExec>()
                .and_then(|scan| scan.data_source().downcast_ref::<MemorySourceConfig>())
            else {
                return Ok(Transformed::no(node));
            };
            let schema = memory.original_schema();
            let wire = wire_schema(&schema);
            if Arc::ptr_eq(&wire, &schema) || DataSource::fetch(memory).is_some() {
                return Ok(Transformed::no(node));
            }
            let partitions = memory
                .partitions()
                .iter()
                .map(|batches| {
                    batches
                        .iter()
                        .map(|b| to_wire(b.clone(), &wire))
                        .collect::<std::result::Result<Vec<_>, _>>()
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let scan: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(
                MemorySourceConfig::try_new(&partitions, wire, memory.projection().clone())?,
            );
            let wanted = node.schema();
            let exprs = wanted
                .fields()
                .iter()
                .zip(scan.schema().fields())
                .enumerate()
                .map(|(i, (want, got))| {
                    let column: Arc<dyn PhysicalExpr> = Arc::new(Column::new(got.name(), i));
                    let expr = if want.data_type() == got.data_type() {
                        column
                    } else {
                        Arc::new(CastExpr::new(column, want.data_type().clone(), None))
                    };
                    ProjectionExpr::new(expr, want.name().clone())
                })
                .collect::<Vec<_>>();
            Ok(Transformed::yes(
                Arc::new(ProjectionExec::try_new(exprs, scan)?) as Arc<dyn ExecutionPlan>,
            ))
        })?
        .data)
}
