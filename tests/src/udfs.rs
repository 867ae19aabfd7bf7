//! User functions for the tests: compiled into the test client and into
//! `volley-test-executor`, the custom executor binary the multi-process
//! tests run, exactly as a user's program and executor would share them.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::cast::{as_int64_array, as_string_array};
use datafusion::error::Result;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
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

/// Every test function.
pub fn registry() -> UdfRegistry {
    UdfRegistry::new().with_udf(mask()).with_udf(panic_at())
}
