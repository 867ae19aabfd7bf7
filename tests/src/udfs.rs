//! User functions for the tests: compiled into the test client and into
//! `volley-test-executor`, the custom executor binary the multi-process
//! tests run, exactly as a user's program and executor would share them.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int64Array, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::cast::{as_float64_array, as_int64_array, as_string_array};
use datafusion::common::{ScalarValue, exec_err};
use datafusion::error::Result;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, ColumnarValue, PartitionEvaluator, ScalarUDF, Volatility, WindowUDF,
    create_udaf, create_udf, create_udwf,
};
use volley_client::UdfRegistry;

/// `volley_mask(text)`: the text with every digit replaced by `#`.
pub fn mask() -> ScalarUDF {
    create_udf(
        "volley_mask",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let text = as_string_array(&arrays[0])?;
            let masked: StringArray = text
                .iter()
                .map(|v| v.map(|s| s.replace(|c: char| c.is_ascii_digit(), "#")))
                .collect();
            Ok(ColumnarValue::Array(Arc::new(masked) as ArrayRef))
        }),
    )
}

/// `volley_gate(n, path)`: `n`, once the file at `path` exists; until then
/// the task waits. Tests hold a query's tasks mid-flight with it and let
/// them go by creating the file.
pub fn gate() -> ScalarUDF {
    create_udf(
        "volley_gate",
        vec![DataType::Int64, DataType::Utf8],
        DataType::Int64,
        Volatility::Volatile,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let paths = as_string_array(&arrays[1])?;
            if let Some(path) = paths.iter().flatten().next() {
                while !std::path::Path::new(path).exists() {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
            Ok(ColumnarValue::Array(Arc::clone(&arrays[0])))
        }),
    )
}

/// `volley_panic_at(n, at)`: `n`, but panics (a stand-in for a kernel bug)
/// when `n` equals `at`.
pub fn panic_at() -> ScalarUDF {
    create_udf(
        "volley_panic_at",
        vec![DataType::Int64, DataType::Int64],
        DataType::Int64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| -> Result<ColumnarValue> {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let (n, at) = (as_int64_array(&arrays[0])?, as_int64_array(&arrays[1])?);
            for i in 0..n.len() {
                if n.is_valid(i) && at.is_valid(i) && n.value(i) == at.value(i) {
                    panic!("volley_panic_at reached {}", n.value(i));
                }
            }
            Ok(ColumnarValue::Array(Arc::new(n.clone()) as ArrayRef))
        }),
    )
}

/// `volley_spread(x)`: an aggregate, the largest `x` less the smallest.
/// Its state is two values, so a distributed plan must carry both from the
/// partial aggregation to the final one.
pub fn spread() -> AggregateUDF {
    create_udaf(
        "volley_spread",
        vec![DataType::Float64],
        Arc::new(DataType::Float64),
        Volatility::Immutable,
        Arc::new(|_| Ok(Box::<Spread>::default())),
        Arc::new(vec![DataType::Float64, DataType::Float64]),
    )
}

#[derive(Debug, Default)]
struct Spread {
    min: Option<f64>,
    max: Option<f64>,
}

impl Spread {
    fn add(&mut self, values: &ArrayRef) -> Result<()> {
        for v in as_float64_array(values)?.iter().flatten() {
            self.min = Some(self.min.map_or(v, |m| m.min(v)));
            self.max = Some(self.max.map_or(v, |m| m.max(v)));
        }
        Ok(())
    }
}

impl Accumulator for Spread {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.add(&values[0])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        if states.len() != 2 {
            return exec_err!("volley_spread has two state columns, got {}", states.len());
        }
        self.add(&states[0])?;
        self.add(&states[1])
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![
            ScalarValue::Float64(self.min),
            ScalarValue::Float64(self.max),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64(
            self.max.zip(self.min).map(|(a, b)| a - b),
        ))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
    }
}

/// `volley_running_count(text) OVER (...)`: a window function, how many
/// rows so far in the window's partition have a non-null `text`.
pub fn running_count() -> WindowUDF {
    create_udwf(
        "volley_running_count",
        DataType::Utf8,
        Arc::new(DataType::Int64),
        Volatility::Immutable,
        Arc::new(|| Ok(Box::new(RunningCount))),
    )
}

#[derive(Debug)]
struct RunningCount;

impl PartitionEvaluator for RunningCount {
    fn evaluate_all(&mut self, values: &[ArrayRef], num_rows: usize) -> Result<ArrayRef> {
        let text = &values[0];
        let mut seen = 0;
        let counts: Int64Array = (0..num_rows)
            .map(|i| {
                seen += i64::from(text.is_valid(i));
                seen
            })
            .collect();
        Ok(Arc::new(counts))
    }
}

/// Every test function.
pub fn registry() -> UdfRegistry {
    UdfRegistry::new()
        .with_udf(mask())
        .with_udf(panic_at())
        .with_udf(gate())
        .with_udaf(spread())
        .with_udwf(running_count())
}
