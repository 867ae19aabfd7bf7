//! The `volley` command as users and CI scripts run it: output formats and
//! help texts (snapshots), every exit code, batch jobs with `volley submit`
//! and `volley jobs`, and the interactive shell in a pseudo-terminal.

mod batch;
mod exit_codes;
mod formats;
mod history;
mod observe;
mod shell;
mod startup;
mod traces;

use std::path::Path;

/// A script that registers lineitem and runs a join producing hundreds of
/// millions of rows: it runs until cancelled or timed out.
fn endless_script() -> String {
    let lineitem = volley_tests::tpch_dir().join("lineitem");
    format!(
        "CREATE EXTERNAL TABLE lineitem STORED AS PARQUET LOCATION '{}/';\n\
         SELECT count(*) FROM lineitem a JOIN lineitem b ON a.l_linestatus = b.l_linestatus;\n",
        lineitem.display()
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write script");
    path.display().to_string()
}
