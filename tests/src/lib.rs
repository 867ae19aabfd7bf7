//! Shared helpers of Volley's integration tests: TPC-H data generated once
//! per machine, the TPC-H queries, single-node DataFusion as the oracle, and
//! a differential comparison of results (rows as multisets unless the query
//! orders them; floats to a relative tolerance of [`FLOAT_TOLERANCE`]).
//!
//! The tests themselves live in `tests/`: `cluster` (in-process clusters over
//! real gRPC on loopback) and `binaries` (the real `volley-scheduler`,
//! `volley-executor` and `volley` processes).
#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::{Array, Float32Array, Float64Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::error::Result;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::DFParser;
use volley_client::tpch::{generate_tpch, register_tpch};

pub mod chaos;
pub mod host_cluster;
pub mod hosts;
pub mod processes;
pub mod tbl;
pub mod udfs;

/// Relative tolerance for floating-point results: distributed aggregation
/// adds in another order than single-node DataFusion.
pub const FLOAT_TOLERANCE: f64 = 1e-9;

/// The TPC-H scale factor of the shared test data.
pub const TEST_SCALE_FACTOR: f64 = 0.1;

/// The TPC-H tables at [`TEST_SCALE_FACTOR`], generated on first use and
/// cached next to the test binaries (`target/<profile>/volley-test-data`,
/// or `$VOLLEY_TEST_DATA_DIR`), shared by test binaries and runs.
pub fn tpch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::var_os("VOLLEY_TEST_DATA_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                let exe = std::env::current_exe().ok()?;
                Some(exe.parent()?.parent()?.join("volley-test-data"))
            })
            .unwrap_or_else(|| std::env::temp_dir().join("volley-test-data"));
        let dir = base.join(format!("tpch-sf{TEST_SCALE_FACTOR}"));
        // Four files per large table so scans have partitions to spread.
        generate_tpch(TEST_SCALE_FACTOR, &dir, 4).expect("generate TPC-H test data");
        dir
    })
}

/// The directories test clusters may read and write: the shared test data,
/// the system temp dir (where tests make their scratch directories) and the
/// working directory.
pub fn test_paths() -> Vec<PathBuf> {
    let mut paths = vec![std::env::temp_dir()];
    if let Some(base) = tpch_dir().parent() {
        paths.push(base.to_path_buf());
    }
    if let Ok(cwd) = std::env::current_dir() {
        paths.push(cwd);
    }
    paths
}

/// The text of TPC-H query `n` (1 to 22).
pub fn tpch_query(n: usize) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("queries/tpch")
        .join(format!("q{n:02}.sql"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A single-node DataFusion session over the TPC-H test data: the oracle.
pub async fn local_tpch_context() -> Result<SessionContext> {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(4));
    register_tpch(&ctx, tpch_dir()).await?;
    Ok(ctx)
}

/// Runs each statement of `script` and returns the last one's rows.
pub async fn run_script(ctx: &SessionContext, script: &str) -> Result<Vec<RecordBatch>> {
    let mut last = Vec::new();
    for statement in DFParser::parse_sql(script)? {
        let plan = ctx.state().statement_to_plan(statement).await?;
        last = ctx.execute_logical_plan(plan).await?.collect().await?;
    }
    Ok(last)
}

/// Does the script's last statement end with an ORDER BY (so row order is
/// part of the answer)?
pub fn is_ordered(script: &str) -> bool {
    let last = script
        .split(';')
        .map(str::trim)
        .rfind(|s| !s.is_empty() && !s.to_lowercase().starts_with("drop"))
        .unwrap_or_default()
        .to_lowercase();
    match last.rfind("order by") {
        // An ORDER BY inside a subquery is followed by a closing parenthesis.
        Some(at) => !last[at..].contains(')'),
        None => false,
    }
}

#[derive(Debug, Clone)]
enum Cell {
    Text(String),
    Float(f64),
}

fn rows(batches: &[RecordBatch]) -> Vec<Vec<Cell>> {
    let mut rows = Vec::new();
    let options = FormatOptions::default().with_null("NULL");
    for batch in batches {
        let columns: Vec<Arc<dyn Array>> = batch.columns().to_vec();
        for row in 0..batch.num_rows() {
            let mut cells = Vec::with_capacity(columns.len());
            for column in &columns {
                let cell = match column.data_type() {
                    DataType::Float64 if column.is_valid(row) => Cell::Float(
                        column
                            .as_any()
                            .downcast_ref::<Float64Array>()
                            .expect("f64")
                            .value(row),
                    ),
                    DataType::Float32 if column.is_valid(row) => Cell::Float(f64::from(
                        column
                            .as_any()
                            .downcast_ref::<Float32Array>()
                            .expect("f32")
                            .value(row),
                    )),
                    _ => {
                        let formatter = ArrayFormatter::try_new(column.as_ref(), &options)
                            .expect("formattable");
                        Cell::Text(formatter.value(row).to_string())
                    }
                };
                cells.push(cell);
            }
            rows.push(cells);
        }
    }
    rows
}

fn sort_key(row: &[Cell]) -> String {
    row.iter()
        .map(|c| match c {
            Cell::Text(s) => s.clone(),
            // Coarse enough that rounding noise never changes the order.
            Cell::Float(f) => format!("{f:.4e}"),
        })
        .collect::<Vec<_>>()
        .join("\u{1f}")
}

fn cells_equal(a: &Cell, b: &Cell) -> bool {
    match (a, b) {
        (Cell::Text(a), Cell::Text(b)) => a == b,
        (Cell::Float(a), Cell::Float(b)) => {
            a == b || (a - b).abs() <= FLOAT_TOLERANCE * a.abs().max(b.abs()).max(1e-300)
        }
        _ => false,
    }
}

/// Compares two results: the same column names and the same rows (in the
/// same order if `ordered`); the error says where they first differ.
pub fn compare_rows(
    expected: &[RecordBatch],
    actual: &[RecordBatch],
    ordered: bool,
) -> std::result::Result<(), String> {
    let names = |batches: &[RecordBatch]| {
        batches.first().map(|b| {
            b.schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect::<Vec<_>>()
        })
    };
    if let (Some(e), Some(a)) = (names(expected), names(actual))
        && e != a
    {
        return Err(format!("column names differ: expected {e:?}, got {a:?}"));
    }
    let mut expected_rows = rows(expected);
    let mut actual_rows = rows(actual);
    if expected_rows.len() != actual_rows.len() {
        return Err(format!(
            "expected {} rows, got {}",
            expected_rows.len(),
            actual_rows.len()
        ));
    }
    if !ordered {
        expected_rows.sort_by_cached_key(|r| sort_key(r));
        actual_rows.sort_by_cached_key(|r| sort_key(r));
    }
    for (i, (e, a)) in expected_rows.iter().zip(actual_rows.iter()).enumerate() {
        let same = e.len() == a.len() && e.iter().zip(a.iter()).all(|(x, y)| cells_equal(x, y));
        if !same {
            return Err(format!(
                "row {i} differs:\n expected {e:?}\n   actual {a:?}"
            ));
        }
    }
    Ok(())
}

/// Asserts that `actual` holds the same rows as `expected` (in the same
/// order if `ordered`), with the same column names.
pub fn assert_same_rows(
    expected: &[RecordBatch],
    actual: &[RecordBatch],
    ordered: bool,
    what: &str,
) {
    if let Err(difference) = compare_rows(expected, actual, ordered) {
        panic!("{what}: {difference}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outer_order_by_is_ordered_and_an_inner_one_is_not() {
        assert!(is_ordered("select a from t order by a"));
        assert!(!is_ordered(
            "select * from (select a from t order by a limit 3)"
        ));
        assert!(is_ordered(
            "create view v as select 1; select * from v order by 1; drop view v;"
        ));
        assert!(!is_ordered("select count(*) from t"));
    }

    #[test]
    fn float_noise_is_tolerated_but_a_real_difference_is_not() {
        assert!(cells_equal(&Cell::Float(1.0), &Cell::Float(1.0 + 1e-12)));
        assert!(!cells_equal(&Cell::Float(1.0), &Cell::Float(1.0001)));
        assert!(!cells_equal(
            &Cell::Text("1".into()),
            &Cell::Text("2".into())
        ));
    }
}
