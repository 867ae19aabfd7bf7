//! The event log (`volley-scheduler --event-log DIR`): each job's events as
//! JSON lines, and finished jobs listed again after a scheduler restart.

use std::process::Command;

use serde_json::Value;
use volley_tests::processes::{
    ClusterSpec, binary, credentials, restartable_port, start_cluster_with, start_logging,
    volley_with_env,
};
use volley_tests::tpch_dir;

use super::write;

/// Runs `volley` as the admin user and parses its `--json` output.
fn json(args: &[&str], data: &std::path::Path) -> Value {
    let output = volley_with_env(args, data, &credentials().env("admin"));
    assert!(
        output.status.success(),
        "volley {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

/// GETs a JSON page of the web UI's API as the admin user.
fn api(url: &str) -> Value {
    let output = Command::new("python3")
        .args([
            "-c",
            "import os, sys, ssl, urllib.request as u\n\
             r = u.Request(sys.argv[1], headers={'Authorization': 'Bearer ' + os.environ['VOLLEY_UI_TOKEN']})\n\
             print(u.urlopen(r, context=ssl.create_default_context(cafile=sys.argv[2])).read().decode())",
            url,
        ])
        .arg(credentials().ca())
        .env("VOLLEY_UI_TOKEN", credentials().token("admin"))
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "GET {url}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON")
}

fn ids(jobs: &Value) -> Vec<String> {
    jobs.as_array()
        .expect("a list of jobs")
        .iter()
        .map(|j| j["job_id"].as_str().expect("an id").to_string())
        .collect()
}

#[test]
fn finished_jobs_are_logged_as_json_lines_and_listed_again_after_a_scheduler_restart() {
    let data = tempfile::tempdir().unwrap();
    let events = tempfile::tempdir().unwrap();
    let log_dir = events.path().to_str().unwrap().to_string();
    let mut cluster = start_cluster_with(&ClusterSpec {
        executors: 1,
        scheduler_args: vec![
            "--event-log".into(),
            log_dir.clone(),
            "--job-history".into(),
            "1".into(),
        ],
        ..ClusterSpec::default()
    });
    let script = format!(
        "CREATE EXTERNAL TABLE lineitem STORED AS PARQUET LOCATION '{}/';\n\
         SELECT l_returnflag, count(*) FROM lineitem GROUP BY 1;\n",
        tpch_dir().join("lineitem").display()
    );
    let file = write(data.path(), "counts.sql", &script);
    let submit = [
        "submit",
        &file,
        "--scheduler",
        &cluster.url,
        "--wait",
        "--json",
    ];
    let first = json(&submit, data.path());
    let second = json(&submit, data.path());
    let (first, second) = (
        first["job_id"].as_str().unwrap().to_string(),
        second["job_id"].as_str().unwrap().to_string(),
    );

    // Stopped as a supervisor stops it; every event is on disk.
    assert!(cluster.stop_scheduler("INT").success());
    let text = std::fs::read_to_string(events.path().join(format!("{first}.jsonl")))
        .expect("the first job's event file");
    let events_of: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let kinds: Vec<&str> = events_of
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"job_submitted"), "{text}");
    assert_eq!(kinds.last(), Some(&"job_finished"), "{text}");
    assert_eq!(
        kinds.iter().filter(|k| **k == "stage_started").count(),
        kinds.iter().filter(|k| **k == "stage_finished").count(),
        "{text}"
    );
    assert!(kinds.contains(&"stage_finished"), "{text}");
    assert!(events_of.iter().all(|e| e["job_id"] == first.as_str()));
    assert!(
        events_of[0]["source"]
            .as_str()
            .unwrap()
            .contains("GROUP BY 1")
    );
    let finished = events_of.last().unwrap();
    assert_eq!(finished["state"], "succeeded");
    assert_eq!(finished["user"], "admin");
    let scan = events_of
        .iter()
        .filter(|e| e["event"] == "stage_finished")
        .flat_map(|e| e["operators"].as_array().unwrap().clone())
        .find(|o| o["name"] == "DataSourceExec")
        .expect("the scan's metrics");
    assert!(scan["output_rows"].as_u64() > Some(0), "{scan}");
    for secret in credentials().secrets() {
        assert!(!text.contains(&secret), "no secret in the event log");
    }

    // A new scheduler on the same log, with no executor: the newest job is
    // in its history, both are with --all, and the older one's status is
    // read from the log.
    let http_port = restartable_port();
    let mut scheduler = Command::new(binary("volley-scheduler"));
    scheduler
        .args([
            "--bind",
            "127.0.0.1:0",
            "--event-log",
            &log_dir,
            "--job-history",
            "1",
            "--http-bind",
            &format!("127.0.0.1:{http_port}"),
        ])
        .args(credentials().scheduler_args());
    let (_scheduler, line) = start_logging(scheduler, None);
    let url = line.rsplit(' ').next().unwrap().to_string();
    let listed = json(
        &["jobs", "list", "--json", "--scheduler", &url],
        data.path(),
    );
    assert_eq!(ids(&listed), std::slice::from_ref(&second), "{listed}");
    let all = json(
        &["jobs", "list", "--all", "--json", "--scheduler", &url],
        data.path(),
    );
    assert_eq!(ids(&all), [second.clone(), first.clone()], "{all}");
    let status = json(
        &["jobs", "status", &first, "--json", "--scheduler", &url],
        data.path(),
    );
    assert_eq!(status["state"], "succeeded", "{status}");
    assert_eq!(status["rows_out"], 3, "{status}");

    // The web UI shows both jobs' pages from their final status: the one
    // held in the history and the one only the log holds.
    let http = format!("https://127.0.0.1:{http_port}");
    for id in [&second, &first] {
        let page = api(&format!("{http}/api/jobs/{id}"));
        assert_eq!(page["state"], "succeeded", "{page}");
        assert_eq!(page["from_history"], true, "{page}");
        let stages = page["stage_list"].as_array().expect("stages");
        assert_eq!(stages.len(), 2, "{page}");
        assert!(
            stages.iter().all(|s| s["plan"]
                .as_str()
                .is_some_and(|p| p.contains("metrics=[output_rows="))),
            "{page}"
        );
    }
    let listed = api(&format!("{http}/api/jobs?all=true"));
    assert_eq!(ids(&listed), [second.clone(), first.clone()], "{listed}");

    // Another user sees neither.
    let output = volley_with_env(
        &["jobs", "list", "--all", "--json", "--scheduler", &url],
        data.path(),
        &credentials().env("bob"),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let theirs: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(ids(&theirs).is_empty(), "{theirs}");
    let output = volley_with_env(
        &["jobs", "status", &first, "--json", "--scheduler", &url],
        data.path(),
        &credentials().env("bob"),
    );
    assert!(
        !output.status.success(),
        "another user's logged job is refused"
    );
}
