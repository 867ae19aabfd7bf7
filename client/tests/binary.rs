//! The `volley` binary on an embedded cluster.

use std::process::Command;

#[test]
fn volley_help_documents_every_exit_code() {
    let output = Command::new(env!("CARGO_BIN_EXE_volley"))
        .arg("--help")
        .output()
        .expect("run");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for code in [
        "0  success",
        "1  a query or job failed",
        "2  bad usage",
        "3  scheduler unreachable",
        "4  timed out",
        "5  cancelled",
        "6  not authenticated, or not allowed",
    ] {
        assert!(help.contains(code), "missing `{code}` in:\n{help}");
    }
}

#[test]
fn volley_sql_runs_statements_on_an_embedded_cluster_in_order() {
    let output = Command::new(env!("CARGO_BIN_EXE_volley"))
        .args([
            "sql",
            "--format",
            "csv",
            "-q",
            "-c",
            "CREATE VIEW v AS SELECT * FROM (VALUES (1, 'a'), (2, 'b'), (3, 'c')) AS t(id, name)",
            "-c",
            "SELECT name FROM v WHERE id >= 2 ORDER BY id",
        ])
        .env_remove("VOLLEY_SCHEDULER")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "name\nb\nc\n");
}
