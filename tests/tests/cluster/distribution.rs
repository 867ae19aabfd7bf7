//! The distribution is real: queries become several stages whose tasks run
//! on every executor, and executors serve shuffle data to each other.

use std::collections::HashSet;

use volley_tests::{assert_same_rows, is_ordered, local_tpch_context, run_script, tpch_query};

use super::tpch_context;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_q5_runs_as_several_stages_on_both_executors_which_shuffle_to_each_other() {
    let ctx = tpch_context().await;
    run_script(&ctx, &tpch_query(5)).await.expect("q5 runs");
    let job = ctx.last_job().expect("q5 ran as a job");
    let executors: Vec<String> = ctx
        .embedded_cluster()
        .expect("embedded")
        .executor_ids()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(executors.len(), 2);

    assert!(
        job.stages_total >= 3,
        "q5 ran only {} stages",
        job.stages_total
    );
    assert_eq!(job.stages_done, job.stages_total);
    assert!(
        job.bytes_shuffled > 0 && job.rows_shuffled > 0,
        "nothing was shuffled: {job:?}"
    );

    let ran_tasks: HashSet<&String> = job
        .stages
        .iter()
        .flat_map(|s| s.tasks_by_executor.keys())
        .collect();
    for executor in &executors {
        assert!(
            ran_tasks.contains(executor),
            "executor {executor} ran no task"
        );
    }
    for (from, to) in [
        (&executors[0], &executors[1]),
        (&executors[1], &executors[0]),
    ] {
        let served = job
            .traffic
            .iter()
            .find(|t| &t.from_executor == from && &t.to_executor == to)
            .map_or(0, |t| t.bytes);
        assert!(
            served > 0,
            "executor {from} served no shuffle data to {to}: {:?}",
            job.traffic
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stage_of_a_job_has_as_many_tasks_as_partitions_and_all_finish() {
    // SELECT l_returnflag, count(*) FROM lineitem GROUP BY l_returnflag ORDER BY 1
    let ctx = tpch_context().await;
    let batches = run_script(
        &ctx,
        "SELECT l_returnflag, count(*) AS n FROM lineitem GROUP BY l_returnflag ORDER BY 1",
    )
    .await
    .expect("query runs");
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
    let job = ctx.last_job().expect("ran as a job");
    for stage in &job.stages {
        assert_eq!(
            stage.tasks_done, stage.partitions,
            "stage {}",
            stage.stage_id
        );
        let by_executor: u32 = stage.tasks_by_executor.values().sum();
        assert_eq!(by_executor, stage.partitions, "stage {}", stage.stage_id);
    }
    // The hash aggregation's repartition is a stage boundary.
    assert!(job.stages_total >= 2, "{job:?}");
    assert!(
        job.stages
            .iter()
            .any(|s| s.plan.contains("ShuffleWriterExec"))
    );
}

/// Runs TPC-H q3 and checks each stage's timeline: it ran, its longest
/// task is one of its tasks, and it ended after its inputs did. With
/// `barriers`, each stage also started only after its inputs finished.
async fn check_stage_timeline(ctx: &volley_client::Context, barriers: bool) {
    run_script(ctx, &tpch_query(3)).await.expect("q3 runs");
    let job = ctx.last_job().expect("ran as a job");
    assert!(job.stages.len() >= 3, "{job:?}");
    let job_micros = (job.ended_at_ms - job.started_at_ms + 1) * 1000;
    for stage in &job.stages {
        let id = stage.stage_id;
        assert!(stage.started_after_us > 0, "stage {id} never started");
        assert!(
            stage.finished_after_us >= stage.started_after_us,
            "stage {id} finished before it started: {stage:?}"
        );
        assert!(
            stage.finished_after_us <= job_micros,
            "stage {id} finished after the job: {stage:?}"
        );
        assert!(stage.task_busy_us > 0, "stage {id} ran no task time");
        assert!(
            stage.longest_task_us > 0 && stage.longest_task_us <= stage.task_busy_us,
            "stage {id}'s longest task is not one of its tasks: {stage:?}"
        );
        for input in &stage.input_stages {
            let input = &job.stages[*input as usize];
            assert!(
                stage.finished_after_us >= input.finished_after_us,
                "stage {id} finished before its input stage {} did",
                input.stage_id
            );
            if barriers {
                assert!(
                    stage.started_after_us >= input.finished_after_us,
                    "stage {id} started before its input stage {} finished",
                    input.stage_id
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stage_reports_when_it_ran_and_finishes_only_after_its_inputs_finished() {
    let ctx = tpch_context().await;
    check_stage_timeline(&ctx, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_pipelined_exchange_every_stage_starts_only_after_its_inputs_finished() {
    let ctx = tpch_context().await;
    ctx.sql("SET volley.pipelined_exchange = false")
        .await
        .expect("the setting exists");
    check_stage_timeline(&ctx, true).await;
}

async fn wait_for_stored_outputs(
    ctx: &volley_client::Context,
    done: impl Fn(u32) -> bool,
    what: &str,
) {
    // Executors report what they hold with every heartbeat (once a second);
    // polled without a deadline (what it waits for is said once, so a hang
    // is explained in the log).
    let mut said = false;
    loop {
        let executors = ctx.scheduler().executors().await.expect("cluster info");
        let held: u32 = executors.iter().map(|e| e.stored_outputs).sum();
        if done(held) {
            return;
        }
        if !said {
            eprintln!("waiting: {what} (executors hold {held} map outputs)");
            said = true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_stays_on_the_executors_until_read_and_then_nothing_is_left() {
    use futures::StreamExt;
    let ctx = tpch_context().await;
    // A large result: the client buffers two batches and the executors keep
    // the rest until it is read.
    let mut stream = ctx
        .sql("SELECT l_orderkey, l_comment FROM lineitem")
        .await
        .expect("plan")
        .execute_stream()
        .await
        .expect("start");
    let first = stream.next().await.expect("rows").expect("runs");
    assert!(first.num_rows() > 0);
    wait_for_stored_outputs(&ctx, |held| held > 0, "the unread result is held").await;
    // Dropping the stream releases the result (or cancels the job).
    drop(stream);
    wait_for_stored_outputs(&ctx, |held| held == 0, "after the stream was dropped").await;

    // A result read to its end is released too, and intermediate stages are
    // dropped when the job ends.
    let rows = ctx
        .sql(&tpch_query(3))
        .await
        .expect("plan q3")
        .collect()
        .await
        .expect("q3 runs");
    assert!(!rows.is_empty());
    let job = ctx.last_job().expect("ran as a job");
    assert!(job.stages_total >= 3);
    wait_for_stored_outputs(&ctx, |held| held == 0, "after the result was read").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_reading_more_than_its_partitions_hold_runs_in_more_tasks_with_datafusions_answer() {
    // TPC-H q18 reads lineitem twice, orders and customer: tens of MB at SF
    // 0.1, against 4 MB a partition here.
    let sql = tpch_query(18);
    let expected = run_script(&local_tpch_context().await.expect("local context"), &sql)
        .await
        .expect("q18 on single-node DataFusion");
    let ctx = tpch_context().await;
    ctx.sql("SET volley.partition_bytes = 4000000")
        .await
        .expect("the setting exists");
    let actual = run_script(&ctx, &sql).await.expect("q18 runs");
    assert_same_rows(&expected, &actual, is_ordered(&sql), "TPC-H q18");
    let job = ctx.last_job().expect("ran as a job");
    let widest = job.stages.iter().map(|s| s.partitions).max().unwrap_or(0);
    assert!(
        widest > 4 && widest % 4 == 0,
        "planned for 4 slots, sized by input: {widest} partitions"
    );
    for stage in &job.stages {
        assert_eq!(
            stage.tasks_done, stage.partitions,
            "stage {}",
            stage.stage_id
        );
    }
}
