//! The `--json` contract of `volley submit`, `volley jobs` and `volley
//! executors`: stdout carries exactly one JSON value, also when the command
//! fails (bad usage, an unreachable scheduler, a timeout), with
//! `error.kind` and `error.message`, so a CI script can always parse it.

use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use volley_client::ClientError;

/// Whether this process has printed its one JSON value.
static PRINTED: AtomicBool = AtomicBool::new(false);

/// Prints `value` as this command's JSON answer.
pub(crate) fn print_json(value: &Value) {
    PRINTED.store(true, Ordering::SeqCst);
    println!("{value}");
}

/// Whether `--json` was asked for, read from the raw arguments (before
/// parsing, which may be what failed). Arguments after `--` are values.
pub(crate) fn wants_json(args: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    args.into_iter()
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

/// The JSON answer for a command that failed before it could print one.
pub(crate) fn error_object(kind: &str, message: &str, exit_code: u8) -> Value {
    json!({
        "state": Value::Null,
        "error": {"kind": kind, "message": message},
        "exit_code": exit_code,
    })
}

/// Prints the failure `error` as the JSON answer, unless the command has
/// already printed one (a failed job's status carries its own error).
pub(crate) fn print_error_unless_printed(error: &ClientError, message: &str) {
    if !PRINTED.load(Ordering::SeqCst) {
        print_json(&error_object(error.kind(), message, error.exit_code()));
    }
}

/// A job status (`status_json`) whose wait gave up: state `timed_out`,
/// error kind `timeout`; `job_state` keeps what the cluster says of the
/// job (`cancelled`, or `running` when it was left to run).
pub(crate) fn timed_out(mut status: Value, error: &ClientError) -> Value {
    if let Some(object) = status.as_object_mut() {
        let job_state = object.remove("state").unwrap_or(Value::Null);
        object.insert("state".into(), Value::String("timed_out".into()));
        object.insert("job_state".into(), job_state);
        object.insert(
            "error".into(),
            json!({"kind": error.kind(), "message": error.to_string()}),
        );
        object.insert("exit_code".into(), json!(error.exit_code()));
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_asked_for_anywhere_before_a_double_dash() {
        let args = |list: &[&str]| list.iter().map(|a| a.into()).collect::<Vec<_>>();
        assert!(wants_json(args(&["volley", "jobs", "list", "--json"])));
        assert!(wants_json(args(&["volley", "--json", "jobs"])));
        assert!(!wants_json(args(&["volley", "jobs", "list"])));
        assert!(!wants_json(args(&["volley", "sql", "--", "--json"])));
    }

    #[test]
    fn a_timed_out_status_keeps_the_jobs_own_state_apart() {
        let error = ClientError::Timeout {
            job_id: "j1".into(),
            after: std::time::Duration::from_secs(5),
            cancelled: false,
        };
        let status = timed_out(json!({"job_id": "j1", "state": "running"}), &error);
        assert_eq!(status["state"], "timed_out");
        assert_eq!(status["job_state"], "running");
        assert_eq!(status["error"]["kind"], "timeout");
        assert_eq!(status["exit_code"], 4);
    }
}
