//! Distributed `EXPLAIN`: the stages the cluster runs, planned by the
//! scheduler. Golden snapshots of all 22 TPC-H queries make a plan
//! regression a visible diff in review (`cargo insta review`, or
//! `INSTA_UPDATE=always` to accept).

use datafusion::arrow::array::{Array, StringArray};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::sql::parser::DFParser;
use volley_client::{Context, DISTRIBUTED_PLAN};
use volley_tests::{tpch_dir, tpch_query};

use super::tpch_context;

/// The (plan_type, plan) rows of an EXPLAIN answer.
fn explain_rows(batches: &[RecordBatch]) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    for batch in batches {
        let column = |i: usize| {
            batch
                .column(i)
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("EXPLAIN answers text")
                .clone()
        };
        let (types, plans) = (column(0), column(1));
        for row in 0..batch.num_rows() {
            rows.push((types.value(row).to_string(), plans.value(row).to_string()));
        }
    }
    rows
}

/// The distributed plan of the query in `script` (its statements before
/// the query run first, as q15's view), with the test data's directory
/// written `$TPCH` so the snapshot holds on any machine.
async fn distributed_plan(ctx: &Context, script: &str) -> String {
    let mut plan = None;
    for statement in DFParser::parse_sql(script).expect("TPC-H parses") {
        let text = statement.to_string();
        let lower = text.trim_start().to_lowercase();
        if plan.is_none() && (lower.starts_with("select") || lower.starts_with("with")) {
            let batches = ctx
                .sql(&format!("EXPLAIN {text}"))
                .await
                .expect("EXPLAIN plans")
                .collect()
                .await
                .expect("EXPLAIN answers");
            let rows = explain_rows(&batches);
            assert_eq!(rows.len(), 1, "EXPLAIN shows the distributed plan only");
            assert_eq!(rows[0].0, DISTRIBUTED_PLAN);
            plan = Some(rows[0].1.clone());
        } else {
            ctx.sql(&text)
                .await
                .expect("statement plans")
                .collect()
                .await
                .expect("statement runs");
        }
    }
    // Object store paths are shown without their leading slash.
    let dir = tpch_dir().display().to_string();
    plan.expect("the script has a query")
        .replace(&dir, "$TPCH")
        .replace(dir.trim_start_matches('/'), "$TPCH")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_distributed_explain_of_every_tpch_query_matches_its_snapshot() {
    let ctx = tpch_context().await;
    for n in 1..=22 {
        let plan = distributed_plan(&ctx, &tpch_query(n)).await;
        assert!(plan.contains("Stage 0"), "q{n}: {plan}");
        insta::assert_snapshot!(format!("tpch_q{n:02}"), plan);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_verbose_adds_datafusions_own_plans_before_the_distributed_one() {
    let ctx = tpch_context().await;
    let batches = ctx
        .sql("EXPLAIN VERBOSE SELECT o_orderpriority, count(*) FROM orders GROUP BY 1")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let rows = explain_rows(&batches);
    let types: Vec<&str> = rows.iter().map(|(t, _)| t.as_str()).collect();
    assert!(types.contains(&"initial_logical_plan"), "{types:?}");
    assert!(types.contains(&"physical_plan"), "{types:?}");
    assert_eq!(types.last(), Some(&DISTRIBUTED_PLAN), "{types:?}");
    assert!(
        ctx.last_job().is_none(),
        "EXPLAIN plans on the scheduler and runs no job"
    );
    let distributed = &rows.last().unwrap().1;
    assert!(
        distributed.contains("reads stage 0 (hash)"),
        "{distributed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_of_a_query_the_cluster_cannot_plan_is_a_clear_error() {
    let ctx = tpch_context().await;
    let error = ctx
        .sql("EXPLAIN SELECT * FROM no_such_table")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("no_such_table"), "{error}");
}

/// The `metrics=[...]` value of `name` on `line`.
fn metric(line: &str, name: &str) -> u64 {
    let start = line.find(&format!("{name}=")).expect("the metric is shown") + name.len() + 1;
    line[start..]
        .split([',', ']'])
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} is a number on: {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_analyze_runs_on_the_cluster_and_sums_each_operators_rows_over_its_tasks() {
    let ctx = tpch_context().await;
    let lineitem_rows = ctx
        .sql("SELECT count(*) FROM lineitem")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap()[0]
        .column(0)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()
        .unwrap()
        .value(0) as u64;
    let batches = ctx
        .sql(
            "EXPLAIN ANALYZE SELECT l_returnflag, sum(l_quantity) FROM lineitem \
             GROUP BY l_returnflag",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let rows = explain_rows(&batches);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, volley_client::DISTRIBUTED_PLAN_WITH_METRICS);
    let text = &rows[0].1;
    let job = ctx.last_job().expect("EXPLAIN ANALYZE ran a job");
    assert_eq!(job.stages.len(), 2, "{text}");
    assert!(
        text.starts_with(&format!("job {}: 2 stages", job.job_id)),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("Stage ")).count(),
        2,
        "{text}"
    );
    assert!(text.contains("tasks took median"), "{text}");
    // The scan ran in several tasks; its rows, summed over them, are the
    // whole table.
    let scan = text
        .lines()
        .find(|l| l.trim_start().starts_with("DataSourceExec"))
        .expect("a scan");
    assert_eq!(metric(scan, "output_rows"), lineitem_rows, "{text}");
    assert!(job.stages[0].partitions > 1, "{text}");
    // The final aggregate answers one row per return flag.
    let last_aggregate = text
        .lines()
        .rfind(|l| l.trim_start().starts_with("AggregateExec: mode=Final"))
        .expect("a final aggregate");
    assert_eq!(metric(last_aggregate, "output_rows"), 3, "{text}");
    assert!(text.contains("spill_count=0"), "{text}");
}
