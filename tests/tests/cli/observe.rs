//! Seeing what a cluster does, as an operator would: Prometheus `/metrics`
//! on the scheduler and every executor, parsed by the official Prometheus
//! client's OpenMetrics parser, and the web UI driven in headless Chromium
//! (Selenium), with a screenshot of each page kept under
//! `target/tmp/ui-screenshots`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use volley_tests::processes::{
    ClusterSpec, credentials, start_cluster_with, volley, volley_tpch_csv,
};
use volley_tests::tpch_dir;

use super::{endless_script, write};

fn tool(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tools")
        .join(name)
}

/// `base`'s `/metrics`, scraped with `token` and parsed.
fn scrape(base: &str, token: Option<&str>) -> Value {
    let mut command = Command::new("python3");
    command
        .arg(tool("scrape_metrics.py"))
        .arg(format!("{base}/metrics"))
        .arg(credentials().ca());
    match token {
        Some(token) => command.env("VOLLEY_SCRAPE_TOKEN", token),
        None => command.env_remove("VOLLEY_SCRAPE_TOKEN"),
    };
    let output = command.output().expect("run python3 scrape_metrics.py");
    assert!(
        output.status.success(),
        "scraping {base}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the scraper prints JSON")
}

/// The sum of the samples named `name` whose labels include `labels`.
fn value(scraped: &Value, name: &str, labels: &[(&str, &str)]) -> f64 {
    scraped["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .filter(|s| s[0] == name && labels.iter().all(|(k, v)| s[1][*k] == *v))
        .map(|s| s[2].as_f64().unwrap_or_default())
        .sum()
}

fn jobs(url: &str, data: &Path) -> Vec<Value> {
    let listed = volley(&["jobs", "list", "--json", "--scheduler", url], data);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    serde_json::from_slice::<Value>(&listed.stdout)
        .expect("a JSON array")
        .as_array()
        .expect("an array")
        .clone()
}

fn total(jobs: &[Value], pick: impl Fn(&Value) -> f64) -> f64 {
    jobs.iter().map(pick).sum()
}

#[test]
fn metrics_of_the_scheduler_and_executors_move_by_what_a_query_did() {
    let cluster = start_cluster_with(&ClusterSpec {
        http: true,
        ..ClusterSpec::default()
    });
    let scheduler = cluster.http_url.clone().expect("an HTTP port");
    let token = credentials().cluster_secret().metrics_credential();
    let token = token.expose();

    // Nobody without a credential reads metrics; a user or the metrics
    // token may, and the token reads nothing else.
    assert_eq!(scrape(&scheduler, None)["status"], 401);
    assert_eq!(
        scrape(&cluster.executor_metrics_urls[0], None)["status"],
        401
    );
    assert_eq!(
        scrape(&scheduler, Some(credentials().token("reader")))["status"],
        200
    );
    let api = Command::new("python3")
        .args(["-c", "import sys, ssl, urllib.request as u\nr = u.Request(sys.argv[1], headers={'Authorization': 'Bearer ' + sys.argv[2]})\ntry:\n    u.urlopen(r, context=ssl.create_default_context(cafile=sys.argv[3]))\n    print(200)\nexcept u.HTTPError as e:\n    print(e.code)"])
        .arg(format!("{scheduler}/api/jobs"))
        .arg(token)
        .arg(credentials().ca())
        .output()
        .expect("python3");
    assert_eq!(String::from_utf8_lossy(&api.stdout).trim(), "401");

    let before: Vec<Value> = std::iter::once(&scheduler)
        .chain(&cluster.executor_metrics_urls)
        .map(|url| scrape(url, Some(token)))
        .collect();
    let data = tempfile::tempdir().unwrap();
    let ran = volley_tpch_csv(
        &cluster.url,
        data.path(),
        &[],
        "SELECT l_returnflag, count(*) AS n FROM lineitem GROUP BY l_returnflag",
    );
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let after: Vec<Value> = std::iter::once(&scheduler)
        .chain(&cluster.executor_metrics_urls)
        .map(|url| scrape(url, Some(token)))
        .collect();
    for scraped in &after {
        assert_eq!(scraped["status"], 200, "{scraped}");
        let content_type = scraped["content_type"].as_str().unwrap_or_default();
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
    }

    let jobs = jobs(&cluster.url, data.path());
    assert!(!jobs.is_empty());
    let tasks = total(&jobs, |j| j["tasks"]["total"].as_f64().unwrap_or_default());
    let shuffled = total(&jobs, |j| j["bytes_shuffled"].as_f64().unwrap_or_default());
    let delta = |i: usize, name: &str, labels: &[(&str, &str)]| {
        value(&after[i], name, labels) - value(&before[i], name, labels)
    };
    // The scheduler: every job and task the query made, and no failure.
    assert_eq!(
        delta(0, "volley_jobs_submitted_total", &[]),
        jobs.len() as f64
    );
    assert_eq!(
        delta(0, "volley_jobs_finished_total", &[("state", "succeeded")]),
        jobs.len() as f64
    );
    assert_eq!(delta(0, "volley_tasks_launched_total", &[]), tasks);
    assert_eq!(delta(0, "volley_task_duration_seconds_count", &[]), tasks);
    assert_eq!(delta(0, "volley_task_failures_total", &[]), 0.0);
    assert_eq!(
        value(&after[0], "volley_executors", &[("state", "active")]),
        2.0
    );
    assert_eq!(value(&after[0], "volley_slots", &[("state", "busy")]), 0.0);
    assert!(value(&after[0], "volley_placement_latency_seconds_count", &[]) >= 1.0);
    // The executors: together they ran every task, wrote at least what
    // was shuffled, and served the result over Flight.
    let executors = 1..after.len();
    let sum = |name: &str, labels: &[(&str, &str)]| -> f64 {
        executors.clone().map(|i| delta(i, name, labels)).sum()
    };
    assert_eq!(
        sum("volley_executor_tasks_total", &[("outcome", "succeeded")]),
        tasks
    );
    assert!(shuffled > 0.0);
    assert!(sum("volley_executor_shuffle_bytes_written_total", &[]) >= shuffled);
    assert!(sum("volley_executor_shuffle_bytes_read_total", &[]) > 0.0);
    assert!(sum("volley_executor_shuffle_bytes_served_total", &[]) > 0.0);
    assert!(sum("volley_executor_flight_bytes_out_total", &[]) > 0.0);
    assert_eq!(sum("volley_executor_fetch_failures_total", &[]), 0.0);
    for scraped in &after[1..] {
        assert!(value(scraped, "volley_executor_memory_pool_limit_bytes", &[]) > 0.0);
        for gauge in [
            "volley_executor_spill_data_bytes",
            "volley_executor_spill_file_bytes",
        ] {
            let exported = scraped["samples"]
                .as_array()
                .expect("samples")
                .iter()
                .any(|s| s[0] == gauge);
            assert!(exported, "{gauge} is not exported");
        }
    }
}

/// Where the UI test keeps its screenshots (a test artefact).
fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

#[test]
fn the_web_ui_shows_every_stage_and_task_while_a_job_runs_and_after() {
    let cluster = start_cluster_with(&ClusterSpec {
        http: true,
        ..ClusterSpec::default()
    });
    let ui = cluster.http_url.clone().expect("an HTTP port");
    let data = tempfile::tempdir().unwrap();
    // A job that has finished...
    let script = format!(
        "CREATE EXTERNAL TABLE lineitem STORED AS PARQUET LOCATION '{}/';\n\
         SELECT l_returnflag, l_linestatus, count(*) AS n FROM lineitem GROUP BY 1, 2;\n",
        tpch_dir().join("lineitem").display()
    );
    let finished = volley(
        &[
            "submit",
            &write(data.path(), "done.sql", &script),
            "--scheduler",
            &cluster.url,
            "--wait",
            "--json",
        ],
        data.path(),
    );
    assert!(
        finished.status.success(),
        "{}",
        String::from_utf8_lossy(&finished.stderr)
    );
    let finished: Value = serde_json::from_slice(&finished.stdout).expect("status JSON");
    let finished_id = finished["job_id"].as_str().expect("job id").to_string();
    // ...and one that runs until it is cancelled.
    let submitted = volley(
        &[
            "submit",
            &write(data.path(), "endless.sql", &endless_script()),
            "--scheduler",
            &cluster.url,
        ],
        data.path(),
    );
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let running_id = String::from_utf8_lossy(&submitted.stdout)
        .trim()
        .to_string();

    let shots = screenshot_dir();
    let mut browser = Command::new("python3")
        .arg(tool("ui_check.py"))
        .arg(&ui)
        .arg(&shots)
        .args([
            "login".to_string(),
            format!("jobs:jobs:{running_id}"),
            format!("job:job-running:{running_id}:running"),
            format!("live:{running_id}:cancelled"),
            format!("job:job-finished:{finished_id}:succeeded"),
            "executors:executors".to_string(),
        ])
        .env("VOLLEY_UI_TOKEN", credentials().token("admin"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3 ui_check.py");
    let stdout = browser.stdout.take().expect("stdout");
    let mut last = String::new();
    let mut running_stages = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("a line");
        if line == "shown job-running" {
            // The page shows the running job: what the scheduler says of
            // it now, then cancel it from elsewhere; the page must turn
            // to cancelled by itself.
            let status = volley(
                &[
                    "jobs",
                    "status",
                    &running_id,
                    "--json",
                    "--scheduler",
                    &cluster.url,
                ],
                data.path(),
            );
            let status: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
            running_stages = status["stages"]["total"].as_u64();
            let cancelled = volley(
                &["jobs", "cancel", &running_id, "--scheduler", &cluster.url],
                data.path(),
            );
            assert!(
                cancelled.status.success(),
                "{}",
                String::from_utf8_lossy(&cancelled.stderr)
            );
        }
        last = line;
    }
    let output = browser.wait_with_output().expect("the browser script ends");
    assert!(
        output.status.success(),
        "ui_check.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(&last).expect("the report");
    let steps = report["steps"].as_array().expect("steps");

    assert!(
        steps[1]["rows"].as_u64() >= Some(2),
        "both jobs listed: {}",
        steps[1]
    );
    let running = &steps[2];
    assert_eq!(running["state_text"], "running");
    assert_eq!(running["stage_nodes"].as_u64(), running_stages, "{running}");
    assert_eq!(running["stage_rows"].as_u64(), running_stages, "{running}");
    assert!(running["task_bars"].as_u64() >= Some(1), "{running}");
    assert_eq!(
        steps[3]["same_page"], true,
        "updated live, without a reload"
    );

    let done = &steps[4];
    assert_eq!(done["state_text"], "succeeded");
    assert_eq!(done["stage_nodes"], finished["stages"]["total"], "{done}");
    assert_eq!(
        done["stage_edges"].as_u64(),
        finished["stages"]["total"].as_u64().map(|n| n - 1),
        "{done}"
    );
    assert_eq!(
        done["task_bars"], finished["tasks"]["total"],
        "every task attempt: {done}"
    );
    assert!(done["executor_lanes"].as_u64() >= Some(1), "{done}");
    assert!(
        done["source"]
            .as_str()
            .is_some_and(|s| s.contains("GROUP BY 1, 2")),
        "the page shows the script: {done}"
    );
    // Stage 1 reads (through a hash exchange) every row stage 0 wrote.
    let rows = done["rows_in_out"].as_array().expect("rows in and out");
    assert_eq!(rows.len(), 2, "{done}");
    assert_eq!(rows[0][0], "0", "stage 0 reads no stage: {done}");
    assert_eq!(rows[1][0], rows[0][1], "{done}");
    assert_eq!(
        done["plans_with_metrics"], finished["stages"]["total"],
        "every stage's plan has its operators' metrics: {done}"
    );
    assert_eq!(steps[5]["rows"], 2, "both executors");
    for cells in steps[5]["shuffle"].as_array().expect("shuffle cells") {
        for cell in cells.as_array().expect("three cells") {
            let text = cell.as_str().unwrap_or_default();
            assert!(
                text.ends_with(" B") || text.ends_with("iB"),
                "a size in bytes: {}",
                steps[5]
            );
        }
    }
    for page in ["jobs", "job-running", "job-finished", "executors"] {
        let shot = shots.join(format!("{page}.png"));
        let size = std::fs::metadata(&shot)
            .map(|m| m.len())
            .unwrap_or_default();
        assert!(size > 1000, "a screenshot of {page} at {}", shot.display());
    }
}
