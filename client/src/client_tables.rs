//! Tables that exist only in the client. Files (listing tables) are read by
//! the executors where they lie, and in-memory tables travel inside the
//! plan; any other table provider (a table function such as
//! `generate_series`, a streaming or custom table) has nothing the cluster
//! could open, so the client scans it itself and sends the rows as an
//! in-memory table, up to [`MAX_CLIENT_TABLE_BYTES`].

use std::sync::Arc;

use datafusion::catalog::cte_worktable::CteWorkTable;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::{MemTable, provider_as_source, source_as_provider};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::collect;

/// The most bytes of a client-only table sent with a plan.
pub(crate) const MAX_CLIENT_TABLE_BYTES: usize = 256 * 1024 * 1024;

/// Must the client read this provider itself?
fn is_client_only(provider: &Arc<dyn TableProvider>) -> bool {
    // A recursive query's work table is part of the plan, not data.
    !(provider.is::<ListingTable>() || provider.is::<MemTable>() || provider.is::<CteWorkTable>())
}

/// Replaces every scan of a client-only table in `plan` (subqueries
/// included) by a scan of an in-memory copy of it.
pub(crate) async fn materialize_client_tables(
    plan: &LogicalPlan,
    session: &dyn Session,
) -> Result<LogicalPlan> {
    // Find them (by identity: a provider scanned twice is read once).
    let mut found: Vec<(String, Arc<dyn TableProvider>)> = Vec::new();
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Ok(provider) = source_as_provider(&scan.source)
            && is_client_only(&provider)
            && !found.iter().any(|(_, p)| Arc::ptr_eq(p, &provider))
        {
            found.push((scan.table_name.to_string(), provider));
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if found.is_empty() {
        return Ok(plan.clone());
    }
    let mut copies: Vec<(Arc<dyn TableProvider>, Arc<MemTable>)> = Vec::new();
    for (name, provider) in found {
        let exec = provider.scan(session, None, &[], None).await?;
        let batches = collect(exec, session.task_ctx()).await?;
        let bytes: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
        if bytes > MAX_CLIENT_TABLE_BYTES {
            return Err(DataFusionError::Plan(format!(
                "the table `{name}` exists only in this client and holds {bytes} bytes, more \
                 than the {MAX_CLIENT_TABLE_BYTES} a plan may carry to the cluster; write it \
                 to files the executors can read"
            )));
        }
        let copy = Arc::new(MemTable::try_new(provider.schema(), vec![batches])?);
        copies.push((provider, copy));
    }
    let rewritten = plan.clone().transform_up_with_subqueries(|node| {
        let LogicalPlan::TableScan(mut scan) = node else {
            return Ok(Transformed::no(node));
        };
        let copy = source_as_provider(&scan.source).ok().and_then(|provider| {
            copies
                .iter()
                .find(|(original, _)| Arc::ptr_eq(original, &provider))
                .map(|(_, copy)| Arc::clone(copy))
        });
        match copy {
            Some(copy) => {
                scan.source = provider_as_source(copy);
                Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
            }
            None => Ok(Transformed::no(LogicalPlan::TableScan(scan))),
        }
    })?;
    Ok(rewritten.data)
}
