//! Chaos: an executor process SIGKILLed at a seeded random moment of TPC-H
//! q3, q5, q8, q9, q18 and q21; every answer equals the fault-free one and
//! recovery is visible in the job's counters. Three seeds per query here;
//! `volley-bench chaos --seeds N` runs more and prints `recovered K/N`.
//! The same with the scheduler killed and restarted with its state store,
//! the client following the job across the restart.

use volley_tests::chaos::{ChaosRun, Victim, run_chaos};
use volley_tests::tpch_dir;

fn assert_all_recovered(runs: &[ChaosRun]) {
    let failed: Vec<_> = runs
        .iter()
        .filter(|r| !(r.correct && r.recovered))
        .collect();
    for run in runs {
        eprintln!(
            "q{:02} seed {} killed after {:?}: {}",
            run.query,
            run.seed,
            run.killed_after,
            run.problem.as_deref().unwrap_or("recovered")
        );
    }
    assert!(
        failed.is_empty(),
        "{} of {} runs failed: {failed:#?}",
        failed.len(),
        runs.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_executor_at_a_random_moment_never_changes_an_answer() {
    let runs = run_chaos(
        tpch_dir(),
        &[3, 5, 8, 9, 18, 21],
        &[1, 2, 3],
        Victim::Executor,
    )
    .await;
    assert_all_recovered(&runs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_scheduler_at_a_random_moment_never_changes_an_interactive_answer() {
    let runs = run_chaos(tpch_dir(), &[3, 9, 21], &[1, 2], Victim::Scheduler).await;
    assert_all_recovered(&runs);
}
