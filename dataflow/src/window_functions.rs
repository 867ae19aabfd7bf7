//! Window function calls that datafusion-proto cannot carry as they are.
//!
//! DataFusion may evaluate a window function call reversed: `lag(a)` over
//! `ORDER BY id` as `lead(a)` over `ORDER BY id DESC`, so that two windows
//! share one sort. The reversed call is the same function with an
//! `is_reversed` flag its evaluator reads (for `lag`/`lead` with a default
//! or `IGNORE NULLS`, and `nth_value`), and that flag is private to
//! DataFusion's `WindowUDFExpr` and absent from its protobuf. So the
//! scheduler marks such a call (`VolleyCodec` writes a
//! `WindowFunctionNode` as the function's definition) and the executor
//! decodes it as a [`ReversedWindowUdf`], which hands its evaluator the
//! flag.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::error::Result;
use datafusion::logical_expr::function::{
    ExpressionArgs, PartitionEvaluatorArgs, WindowUDFFieldArgs,
};
use datafusion::logical_expr::{
    PartitionEvaluator, ReversedUDWF, Signature, WindowUDF, WindowUDFImpl,
};
use datafusion::physical_expr::PhysicalExpr;

/// DataFusion's own window function named `name` (or aliased so).
pub(crate) fn builtin_window_function(name: &str) -> Option<Arc<WindowUDF>> {
    datafusion::functions_window::all_default_window_functions()
        .into_iter()
        .find(|f| f.name() == name || f.aliases().iter().any(|a| a == name))
}

/// A window function whose every call is evaluated reversed (see the
/// module doc); otherwise the function itself.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct ReversedWindowUdf {
    inner: Arc<WindowUDF>,
}

impl ReversedWindowUdf {
    pub(crate) fn new(inner: Arc<WindowUDF>) -> Self {
        Self { inner }
    }
}

impl WindowUDFImpl for ReversedWindowUdf {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn expressions(&self, expr_args: ExpressionArgs) -> Vec<Arc<dyn PhysicalExpr>> {
        self.inner.expressions(expr_args)
    }

    fn partition_evaluator(
        &self,
        args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        self.inner
            .partition_evaluator_factory(PartitionEvaluatorArgs::new(
                args.input_exprs(),
                args.input_fields(),
                true,
                args.ignore_nulls(),
            ))
    }

    fn field(&self, field_args: WindowUDFFieldArgs) -> Result<FieldRef> {
        self.inner.field(field_args)
    }

    fn sort_options(&self) -> Option<datafusion::arrow::compute::SortOptions> {
        self.inner.sort_options()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn reverse_expr(&self) -> ReversedUDWF {
        self.inner.reverse_expr()
    }
}
