//! Spreads the files of each scan over its partitions by whole files.
//!
//! DataFusion splits a scan's files into byte ranges of equal size, and a
//! Parquet byte range reads the row groups that start in it. A range that
//! ends just after a file's start therefore reads that file's whole first
//! row group: the two tasks of a TPC-H SF 1 lineitem scan read 4M and 2M
//! rows, so the stage took as long as the larger one. In one process idle
//! partitions steal files from their siblings; here each task reads exactly
//! its own group, so the groups must be even to begin with.
//!
//! When a scan's files can be spread over its partitions whole, largest
//! file first to the least loaded partition, with no partition more than
//! 10% above an even share of the bytes, each file is read whole by one
//! partition. Other scans keep DataFusion's ranges (three equal files over
//! two partitions would not balance whole), and so do scans that declare an
//! output ordering (their files' order within a group matters).
//! `SET volley.balance_file_groups = false` turns this off.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::physical_plan::ExecutionPlan;

/// Rewrites every file scan of `plan` as the module describes.
pub(crate) fn balance_file_groups(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(config) = node
            .downcast_ref::<DataSourceExec>()
            .and_then(|scan| scan.data_source().downcast_ref::<FileScanConfig>())
        else {
            return Ok(Transformed::no(node));
        };
        match whole_file_groups(config) {
            Some(groups) => {
                let config = FileScanConfigBuilder::from(config.clone())
                    .with_file_groups(groups)
                    .build();
                Ok(Transformed::yes(
                    DataSourceExec::from_data_source(config) as Arc<dyn ExecutionPlan>
                ))
            }
            None => Ok(Transformed::no(node)),
        }
    })
    .map(|t| t.data)
}

/// The scan's files as whole files over as many groups as it has now, or
/// `None` to keep its groups.
fn whole_file_groups(config: &FileScanConfig) -> Option<Vec<FileGroup>> {
    let partitions = config.file_groups.len();
    if partitions < 2 || !config.output_ordering.is_empty() {
        return None;
    }
    let mut files: Vec<PartitionedFile> = Vec::new();
    let mut seen = HashSet::new();
    let mut ranged = false;
    for file in config.file_groups.iter().flat_map(|g| g.iter()) {
        ranged |= file.range.is_some();
        if seen.insert(file.object_meta.location.to_string()) {
            let mut whole = file.clone();
            whole.range = None;
            files.push(whole);
        }
    }
    if !ranged || files.len() < partitions {
        return None;
    }
    // Largest first, each to the least loaded group (ties: the lowest index,
    // and files of equal size in path order, so plans are deterministic).
    files.sort_by(|a, b| {
        b.object_meta
            .size
            .cmp(&a.object_meta.size)
            .then_with(|| a.object_meta.location.cmp(&b.object_meta.location))
    });
    let mut groups: Vec<(u64, Vec<PartitionedFile>)> = vec![(0, Vec::new()); partitions];
    let total: u64 = files.iter().map(|f| f.object_meta.size).sum();
    for file in files {
        if let Some((load, members)) = groups.iter_mut().min_by_key(|(load, _)| *load) {
            *load += file.object_meta.size;
            members.push(file);
        }
    }
    // Whole files only where they balance (the largest group within 10% of
    // an even share): three files over two partitions would not.
    let largest = groups.iter().map(|(load, _)| *load).max().unwrap_or(0);
    if u128::from(largest) * partitions as u128 * 10 > u128::from(total) * 11 {
        return None;
    }
    Some(
        groups
            .into_iter()
            .map(|(_, members)| FileGroup::new(members))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use datafusion::error::Result;
    use datafusion::physical_plan::displayable;

    use super::*;

    fn scan_groups(plan: &Arc<dyn ExecutionPlan>) -> Vec<Vec<(String, bool)>> {
        let mut found = Vec::new();
        let _ = Arc::clone(plan).transform_up(|node| {
            if let Some(config) = node
                .downcast_ref::<DataSourceExec>()
                .and_then(|scan| scan.data_source().downcast_ref::<FileScanConfig>())
            {
                found = config
                    .file_groups
                    .iter()
                    .map(|g| {
                        g.iter()
                            .map(|f| (f.object_meta.location.to_string(), f.range.is_some()))
                            .collect()
                    })
                    .collect();
            }
            Ok(Transformed::no(node))
        });
        found
    }

    /// A table of `files` equal Parquet files in a fresh directory, and the
    /// scan groups of a filter over it planned for two partitions.
    async fn planned_scan(files: usize) -> Result<(tempfile::TempDir, Arc<dyn ExecutionPlan>)> {
        let dir = tempfile::tempdir()?;
        let ctx = datafusion::prelude::SessionContext::new_with_config(
            volley_dataflow::session_config()
                .with_target_partitions(2)
                .set_usize("datafusion.optimizer.repartition_file_min_size", 1),
        );
        for i in 0..files {
            // Unordered values: a sorted file would declare an ordering.
            ctx.sql(&format!(
                "COPY (SELECT (v * 7919) % 5003 AS v FROM generate_series(1, 5000) AS t(v)) \
                 TO '{}/part-{i}.parquet'",
                dir.path().display()
            ))
            .await?
            .collect()
            .await?;
        }
        ctx.sql(&format!(
            "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '{}/'",
            dir.path().display()
        ))
        .await?;
        let plan = ctx
            .sql("SELECT v FROM t WHERE v > 10")
            .await?
            .create_physical_plan()
            .await?;
        Ok((dir, plan))
    }

    #[tokio::test]
    async fn a_scan_of_four_equal_files_in_two_partitions_reads_two_whole_files_each() -> Result<()>
    {
        let (_dir, plan) = planned_scan(4).await?;
        let balanced = balance_file_groups(plan)?;
        let after = scan_groups(&balanced);
        assert_eq!(
            after.len(),
            2,
            "{}",
            displayable(balanced.as_ref()).indent(false)
        );
        assert!(after.iter().all(|g| g.len() == 2), "{after:?}");
        assert!(
            after.iter().flatten().all(|(_, ranged)| !ranged),
            "{after:?}"
        );
        let mut all: Vec<&String> = after.iter().flatten().map(|(path, _)| path).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 4, "every file read exactly once: {after:?}");
        Ok(())
    }

    #[tokio::test]
    async fn three_equal_files_in_two_partitions_keep_datafusion_byte_ranges() -> Result<()> {
        let (_dir, plan) = planned_scan(3).await?;
        let before = scan_groups(&plan);
        let after = scan_groups(&balance_file_groups(plan)?);
        assert_eq!(before, after, "whole files would split 2:1");
        assert!(
            after.iter().flatten().filter(|(_, ranged)| *ranged).count() > 3,
            "DataFusion split a file between the partitions: {after:?}"
        );
        Ok(())
    }
}
