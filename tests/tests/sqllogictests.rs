//! DataFusion's own SQL conformance suite, run on a Volley cluster.
//!
//! The `.slt` files come from the published `datafusion-sqllogictest`
//! package of the DataFusion version Volley uses (found with `cargo
//! metadata`, copied to a scratch directory so their relative paths and
//! scratch writes work). Every statement and query goes through
//! `volley-client` to an embedded cluster of two executors, each file in a
//! session of its own with `target_partitions = 4`, and is checked by
//! DataFusion's own engine adapter and result normalization. The TPC-H files
//! run on SF 0.1 tables generated here with `tpchgen`.
//!
//! Records that snapshot DataFusion's single-node `EXPLAIN` output are
//! skipped and counted. Every other record must pass, or be listed with its
//! reason in `tests/sqllogictests/expectations.txt`; a listed record that
//! passes is an error too, so the list stays true.
//!
//! `VOLLEY_SLT=name` runs the files whose path contains `name`;
//! `VOLLEY_SLT_ALL_PROBLEMS=1` ignores the expectations and shows every
//! failing record with its error; `VOLLEY_SLT_ROUND_TRIP=1` also fails
//! every query whose physical plan reads differently once its logical plan
//! went to the scheduler and back;
//! `VOLLEY_SLT_BASELINE=1` runs them on single-node DataFusion instead (in
//! this same harness, ignoring the expectations), to tell Volley's
//! differences from the harness's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_sqllogictest::{DataFusion, df_value_validator, value_normalizer};
use futures::StreamExt;
use indicatif::ProgressBar;
use sqllogictest::{Record, parse_file, strict_column_validator};
use volley_client::{Context, EmbeddedCluster, EmbeddedClusterConfig};

/// Subdirectories of `test_files` that need what the package does not
/// ship or Volley does not build with (a Postgres server; Spark functions).
const EXCLUDED_DIRS: [&str; 3] = ["spark", "pg_compat", "sqlite"];

/// Files run at once.
const CONCURRENT_FILES: usize = 3;

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run())
}

/// What one file's run found.
#[derive(Default)]
struct FileOutcome {
    /// Records run and passed.
    passed: usize,
    /// EXPLAIN records not run.
    skipped: usize,
    /// Failing records listed in the expectations.
    expected_failures: usize,
    /// Problems that fail the file.
    problems: Vec<String>,
}

async fn run() -> ExitCode {
    let package = slt_package_dir();
    let work = tempfile::Builder::new()
        .prefix("volley-slt-")
        .tempdir()
        .expect("scratch dir");
    // The files' relative paths (`test_files/...`, `../../testing/...`)
    // assume the working directory `datafusion/sqllogictest`.
    let root = work.path().join("datafusion").join("sqllogictest");
    copy_dir(&package.join("test_files"), &root.join("test_files")).expect("copy test files");
    std::env::set_current_dir(&root).expect("enter the scratch dir");

    let filter = std::env::var("VOLLEY_SLT").ok();
    let baseline = std::env::var_os("VOLLEY_SLT_BASELINE").is_some();
    let files = slt_files(&root, filter.as_deref());
    if files.iter().any(|f| f.starts_with("test_files/tpch")) {
        let data = tpch_tbl_dir();
        std::os::unix::fs::symlink(&data, root.join("test_files/tpch/data"))
            .expect("link the TPC-H data");
    }
    let expectations = if baseline || std::env::var_os("VOLLEY_SLT_ALL_PROBLEMS").is_some() {
        Expectations::default()
    } else {
        Expectations::load()
    };

    let cluster = EmbeddedCluster::start(EmbeddedClusterConfig {
        slots_per_executor: 2,
        target_partitions: Some(4),
        memory_per_executor: 2 << 30,
        // The scratch copy (the files' relative paths), the package and
        // the generated TPC-H data its tpch files link to; not the whole
        // temp dir: records that write to /tmp then behave the same
        // whatever another program left there.
        allowed_paths: {
            let mut paths = vec![work.path().to_path_buf(), package.clone()];
            paths.extend(volley_tests::tpch_dir().parent().map(Path::to_path_buf));
            paths
        },
        ..EmbeddedClusterConfig::with_executors(2)
    })
    .await
    .expect("start the embedded cluster");
    let url = cluster.scheduler_url();
    println!(
        "sqllogictests: {} files from {} on {}",
        files.len(),
        package.display(),
        if baseline {
            "single-node DataFusion (baseline)".to_string()
        } else {
            format!("a Volley cluster of 2 executors at {url}")
        }
    );

    let started = Instant::now();
    let mut outcomes: BTreeMap<String, FileOutcome> = futures::stream::iter(files.clone())
        .map(|file| {
            let url = url.clone();
            let link = cluster.link();
            let expectations = &expectations;
            async move {
                // No deadline: a file that hangs keeps the suite from
                // ending, which fails it.
                let outcome = run_file(&url, link, &file, baseline, expectations).await;
                (file, outcome)
            }
        })
        .buffer_unordered(CONCURRENT_FILES)
        .collect()
        .await;

    // Listed whole files that did not even run (e.g. filtered) are fine;
    // listed records of files that ran and passed are not.
    for (file, outcome) in outcomes.iter_mut() {
        for stale in expectations.unused(file, outcome) {
            outcome.problems.push(stale);
        }
    }

    // One file asked for: every problem; the whole suite: the first few.
    let shown = if filter.is_some() { usize::MAX } else { 5 };
    let (mut passed, mut failed) = (0, 0);
    let (mut records, mut skipped, mut expected) = (0, 0, 0);
    for (file, outcome) in &outcomes {
        records += outcome.passed;
        skipped += outcome.skipped;
        expected += outcome.expected_failures;
        if outcome.problems.is_empty() {
            passed += 1;
            println!(
                "ok    {file}: {} passed, {} EXPLAIN skipped, {} expected to fail",
                outcome.passed, outcome.skipped, outcome.expected_failures
            );
        } else {
            failed += 1;
            println!(
                "FAIL  {file}: {} passed, {} EXPLAIN skipped, {} expected to fail, {} unexpected:",
                outcome.passed,
                outcome.skipped,
                outcome.expected_failures,
                outcome.problems.len()
            );
            for problem in outcome.problems.iter().take(shown) {
                println!("      {}", problem.replace('\n', "\n      "));
            }
        }
    }
    println!(
        "records: {records} passed, {skipped} EXPLAIN skipped, {expected} expected to fail; {:.0?}",
        started.elapsed()
    );
    println!("{passed} passed, {failed} failed");
    drop(cluster);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs one file in a session of its own.
async fn run_file(
    url: &str,
    link: volley_client::Link,
    file: &str,
    baseline: bool,
    expectations: &Expectations,
) -> FileOutcome {
    let mut outcome = FileOutcome::default();
    let relative = PathBuf::from(file);
    if let Err(e) = datafusion_sqllogictest::setup_scratch_dir(&relative) {
        outcome.problems.push(format!("scratch dir: {e}"));
        return outcome;
    }
    // Keep the Volley context (its link to the cluster) for the whole file.
    let (session, _context) = if baseline {
        let config = SessionConfig::new().with_target_partitions(4);
        (SessionContext::new_with_config(config), None)
    } else {
        let context = match Context::remote_with(url, link).await {
            Ok(context) => context,
            Err(e) => {
                outcome.problems.push(format!("cannot connect: {e}"));
                return outcome;
            }
        };
        // VOLLEY_SLT_ROUND_TRIP=1: every plan's trip to the scheduler is
        // checked too, and must plan to the same text after decoding (see
        // volley_client::Context::check_plan_round_trip).
        context.check_plan_round_trip(std::env::var_os("VOLLEY_SLT_ROUND_TRIP").is_some());
        let session = context.session().clone();
        let _ = session
            .sql("SET datafusion.execution.target_partitions = 4")
            .await;
        (session, Some(context))
    };
    let records = match parse_file::<datafusion_sqllogictest::DFColumnType>(&relative) {
        Ok(records) => records,
        Err(e) => {
            outcome.problems.push(format!("cannot parse: {e}"));
            return outcome;
        }
    };
    let engine_path = relative.clone();
    let mut runner = sqllogictest::Runner::new(move || {
        let session = session.clone();
        let path = engine_path.clone();
        async move { Ok(DataFusion::new(session, path, ProgressBar::hidden())) }
    });
    runner.add_label("Datafusion");
    runner.with_column_validator(strict_column_validator);
    runner.with_normalizer(value_normalizer);
    runner.with_validator(df_value_validator);

    let whole_file = expectations.whole_file(file);
    for record in records {
        if let Record::Halt { .. } = record {
            break;
        }
        let counted = matches!(record, Record::Statement { .. } | Record::Query { .. });
        if is_explain(&record) {
            outcome.skipped += 1;
            continue;
        }
        match runner.run_async(record).await {
            Ok(_) if counted => outcome.passed += 1,
            Ok(_) => {}
            Err(e) => {
                let location = e.location();
                let key = format!("{}:{}", relative_to_root(location.file()), location.line());
                if whole_file.is_some() || expectations.record(&key).is_some() {
                    outcome.expected_failures += 1;
                    expectations.mark_used(&key, file);
                } else {
                    outcome
                        .problems
                        .push(format!("{key}: {}", e.display(false)));
                }
            }
        }
    }
    runner.shutdown_async().await;
    outcome
}

/// Does the record snapshot DataFusion's single-node plan?
fn is_explain<T: sqllogictest::ColumnType>(record: &Record<T>) -> bool {
    let sql = match record {
        Record::Query { sql, .. } | Record::Statement { sql, .. } => sql,
        _ => return false,
    };
    let words: Vec<String> = sql
        .split_whitespace()
        .take(2)
        .map(str::to_ascii_lowercase)
        .collect();
    words.first().is_some_and(|w| w == "explain")
}

/// A path as the expectations name it: relative to `datafusion/sqllogictest`.
fn relative_to_root(path: &str) -> String {
    match path.find("test_files/") {
        Some(at) => path[at..].to_string(),
        None => path.to_string(),
    }
}

/// The `.slt` files to run, relative to `root`.
fn slt_files(root: &Path, filter: Option<&str>) -> Vec<String> {
    let mut files = Vec::new();
    let mut stack = vec![root.join("test_files")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if path.is_dir() {
                if !EXCLUDED_DIRS.contains(&name.as_str()) && name != "scratch" {
                    stack.push(path);
                }
            } else if name.ends_with(".slt") {
                let relative = path
                    .strip_prefix(root)
                    .expect("under root")
                    .to_string_lossy()
                    .to_string();
                if filter.is_none_or(|f| relative.contains(f)) {
                    files.push(relative);
                }
            }
        }
    }
    files.sort();
    files
}

/// The directory of the `datafusion-sqllogictest` package, from `cargo metadata`.
fn slt_package_dir() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata JSON");
    let packages = metadata["packages"].as_array().expect("packages");
    let package = packages
        .iter()
        .find(|p| p["name"] == "datafusion-sqllogictest")
        .expect("datafusion-sqllogictest is a dependency of volley-tests");
    let manifest = PathBuf::from(package["manifest_path"].as_str().expect("manifest path"));
    manifest.parent().expect("package dir").to_path_buf()
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// The SF 0.1 TPC-H tables as dbgen's `.tbl` files (`|`-separated, with a
/// trailing `|`), generated once next to the other test data.
fn tpch_tbl_dir() -> PathBuf {
    let dir = volley_tests::tpch_dir()
        .parent()
        .expect("test data dir")
        .join("tpch-tbl-sf0.1");
    if dir.join("_complete").exists() {
        return dir;
    }
    std::fs::create_dir_all(&dir).expect("create tbl dir");
    volley_tests::tbl::write_tpch_tbl(0.1, &dir).expect("generate .tbl files");
    std::fs::write(dir.join("_complete"), b"").expect("mark complete");
    dir
}

/// The checked-in list of records (and whole files) known to fail, each
/// with its reason.
#[derive(Default)]
struct Expectations {
    files: BTreeMap<String, String>,
    records: BTreeMap<String, String>,
    used: std::sync::Mutex<BTreeSet<String>>,
}

impl Expectations {
    fn load() -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("sqllogictests/expectations.txt");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let mut expectations = Self::default();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, reason) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let reason = reason.trim().to_string();
            assert!(!reason.is_empty(), "expectation without a reason: {line}");
            if key.contains(".slt:") || key.contains(".part:") {
                expectations.records.insert(key.to_string(), reason);
            } else {
                expectations.files.insert(key.to_string(), reason);
            }
        }
        expectations
    }

    fn whole_file(&self, file: &str) -> Option<&String> {
        self.files.get(file)
    }

    fn record(&self, key: &str) -> Option<&String> {
        self.records.get(key)
    }

    fn mark_used(&self, key: &str, file: &str) {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        used.insert(key.to_string());
        used.insert(file.to_string());
    }

    /// Entries for `file` that its run did not need: listed failures that
    /// now pass.
    fn unused(&self, file: &str, outcome: &FileOutcome) -> Vec<String> {
        let used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let mut stale = Vec::new();
        if self.files.contains_key(file) && outcome.expected_failures == 0 {
            stale.push(format!(
                "{file} is listed as failing but every record passed: remove it from expectations.txt"
            ));
        }
        let stem = file.trim_end_matches(".slt");
        for key in self.records.keys() {
            let record_file = key.rsplit_once(':').map_or(key.as_str(), |(f, _)| f);
            let belongs = record_file == file
                || (file.ends_with("tpch.slt")
                    && record_file.starts_with(stem.trim_end_matches("tpch")));
            if belongs && !used.contains(key) {
                stale.push(format!(
                    "{key} is listed as failing but passed: remove it from expectations.txt"
                ));
            }
        }
        stale
    }
}
