//! Naming the files a plan reads, so that an error DataFusion raises while
//! decoding one (a truncated Parquet footer says nothing of its path) can be
//! reported with the files it came from.

use std::sync::Arc;

use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::ExecutionPlan;

/// The files `plan` reads for output `partition`: each file scan's group of
/// that index, or all of its files if it has no such group.
pub fn input_files(plan: &Arc<dyn ExecutionPlan>, partition: usize) -> Vec<String> {
    let mut files = Vec::new();
    collect(plan, partition, &mut files);
    files
}

fn collect(plan: &Arc<dyn ExecutionPlan>, partition: usize, out: &mut Vec<String>) {
    if let Some(scan) = plan
        .downcast_ref::<DataSourceExec>()
        .and_then(|exec| exec.data_source().downcast_ref::<FileScanConfig>())
    {
        let groups = match scan.file_groups.get(partition) {
            Some(group) => std::slice::from_ref(group),
            None => scan.file_groups.as_slice(),
        };
        for file in groups.iter().flat_map(|g| g.iter()) {
            let path = format!("/{}", file.path());
            if !out.contains(&path) {
                out.push(path);
            }
        }
    }
    for child in plan.children() {
        collect(child, partition, out);
    }
}

/// "`a`, `b` and 3 more": a short list for one-line error messages.
pub fn describe_files(files: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut text = files
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if files.len() > SHOWN {
        text.push_str(&format!(" and {} more", files.len() - SHOWN));
    }
    text
}
