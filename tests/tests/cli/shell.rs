//! The interactive shell in a pseudo-terminal, as a person uses it.

use std::process::Command;

use expectrl::{Expect, Session};
use volley_client::{SchedulerClient, v1};
use volley_tests::processes::{binary, start_cluster};
use volley_tests::tpch_dir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shell_edits_recalls_describes_and_cancels_a_long_query_on_the_cluster() {
    let cluster = start_cluster();
    let home = tempfile::tempdir().unwrap();
    let mut command = Command::new(binary("volley"));
    command
        .args(["sql", "--scheduler", &cluster.url])
        .env("HOME", home.path())
        .env("TERM", "xterm")
        .envs(volley_tests::processes::credentials().env("admin"))
        .env_remove("VOLLEY_SCHEDULER");
    let mut shell = Session::spawn(command).expect("spawn the shell in a pty");
    // No deadline: waiting on the shell's own output is the synchronization.
    shell.set_expect_timeout(None);
    shell.expect("volley> ").unwrap();

    // A statement over two lines.
    shell.send_line("SELECT 40 + 2 AS answer,").unwrap();
    shell.expect("...> ").unwrap();
    shell.send_line("'x' AS tag;").unwrap();
    shell.expect("42").unwrap();
    shell.expect("1 row in").unwrap();
    shell.expect("volley> ").unwrap();

    // \d lists tables and describes one.
    shell
        .send_line(format!(
            "CREATE EXTERNAL TABLE lineitem STORED AS PARQUET LOCATION '{}/';",
            tpch_dir().join("lineitem").display()
        ))
        .unwrap();
    shell.expect("OK in").unwrap();
    shell.expect("volley> ").unwrap();
    shell.send_line("\\d").unwrap();
    shell.expect("lineitem").unwrap();
    shell.expect("volley> ").unwrap();
    shell.send_line("\\d lineitem").unwrap();
    shell.expect("l_orderkey").unwrap();
    shell.expect("volley> ").unwrap();

    // Tab completes a table name after FROM, then a column of the tables
    // the statement mentions.
    shell.send("SELECT count(*) AS n FROM linei\t").unwrap();
    shell.expect("lineitem").unwrap();
    shell.send(" WHERE l_orderk\t").unwrap();
    shell.expect("l_orderkey").unwrap();
    shell.send_line(" > 0;").unwrap();
    shell.expect("1 row in").unwrap();
    shell.expect("volley> ").unwrap();

    // A row limit stops reading the result once it has more rows than it
    // shows.
    shell.send_line("\\max-rows 3").unwrap();
    shell.expect("at most 3 rows").unwrap();
    shell.send_line("SELECT l_orderkey FROM lineitem;").unwrap();
    shell.expect("more rows not shown").unwrap();
    shell.expect("3 rows shown").unwrap();
    shell.expect("volley> ").unwrap();
    shell.send_line("\\max-rows 40").unwrap();
    shell.expect("volley> ").unwrap();

    // \timing off: rows are still reported, without the time.
    shell.send_line("\\timing").unwrap();
    shell.expect("Timing is off.").unwrap();
    shell.expect("volley> ").unwrap();

    // History: nine entries back is the two-line SELECT; run it again.
    for _ in 0..9 {
        shell.send("\x1b[A").unwrap();
    }
    shell.send("\r").unwrap();
    shell.expect("42").unwrap();
    shell.expect("1 row\r").unwrap();
    shell.expect("volley> ").unwrap();

    // Ctrl-C cancels a long query on the cluster and returns to the prompt.
    shell
        .send_line(
            "SELECT count(*) FROM lineitem a JOIN lineitem b ON a.l_linestatus = b.l_linestatus;",
        )
        .unwrap();
    // The progress line shows once the query has run for a while.
    shell.expect("tasks").unwrap();
    shell.send("\x03").unwrap();
    shell.expect("cancelled (Ctrl-C)").unwrap();
    shell.expect("volley> ").unwrap();
    let scheduler = SchedulerClient::connect_with(
        &cluster.url,
        volley_tests::processes::credentials().link("admin"),
    )
    .await
    .unwrap();
    let jobs = scheduler.list_jobs().await.unwrap();
    let newest = jobs.first().expect("the long query ran as a job");
    assert_eq!(newest.state, v1::JobState::Cancelled as i32, "{newest:?}");

    // The shell still works, and \q leaves it.
    shell.send_line("SELECT 7 AS seven;").unwrap();
    shell.expect("seven").unwrap();
    shell.expect("volley> ").unwrap();
    shell.send_line("\\q").unwrap();
    shell.expect(expectrl::Eof).unwrap();
    let history =
        std::fs::read_to_string(home.path().join(".volley_history")).expect("history file");
    assert!(history.contains("SELECT 7 AS seven;"), "{history}");
}
