//! The user functions of the `udf` examples, compiled into both the client
//! (`udf.rs`) and the custom executor (`udf_executor.rs`).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::cast::as_float64_array;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use volley_client::UdfRegistry;

/// `net_price(price, discount)`: `price * (1 - discount)`.
pub(crate) fn net_price() -> ScalarUDF {
    create_udf(
        "net_price",
        vec![DataType::Float64, DataType::Float64],
        DataType::Float64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let price = as_float64_array(&arrays[0])?;
            let discount = as_float64_array(&arrays[1])?;
            let net: Float64Array = price
                .iter()
                .zip(discount.iter())
                .map(|(p, d)| Some(p? * (1.0 - d?)))
                .collect();
            Ok(ColumnarValue::Array(Arc::new(net) as ArrayRef))
        }),
    )
}

/// Every function of the example.
pub(crate) fn registry() -> UdfRegistry {
    UdfRegistry::new().with_udf(net_price())
}
