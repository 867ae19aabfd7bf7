//! User-defined functions across the cluster: scalar, aggregate and window.
//! Their code must be on the executors that run them: a program compiles
//! one [`UdfRegistry`] into its client and into a custom executor binary.
//! The scheduler never needs the code: it plans each call with the types
//! the client resolved, carried by a stand-in ([`PlannedUdf`] here,
//! `PlannedUdaf` and `PlannedUdwf` beside it).

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::{exec_err, plan_err};
use datafusion::error::Result;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{
    AggregateUDF, ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility, WindowUDF,
};

/// User functions by name, shared by a client and its executors.
#[derive(Clone, Debug, Default)]
pub struct UdfRegistry {
    scalar: BTreeMap<String, Arc<ScalarUDF>>,
    aggregate: BTreeMap<String, Arc<AggregateUDF>>,
    window: BTreeMap<String, Arc<WindowUDF>>,
}

impl UdfRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `udf` (replacing one of the same name).
    pub fn with_udf(mut self, udf: impl Into<Arc<ScalarUDF>>) -> Self {
        self.register(udf);
        self
    }

    /// Adds `udf` (replacing one of the same name).
    pub fn register(&mut self, udf: impl Into<Arc<ScalarUDF>>) {
        let udf = udf.into();
        self.scalar.insert(udf.name().to_string(), udf);
    }

    /// Adds the aggregate `udaf` (replacing one of the same name).
    pub fn with_udaf(mut self, udaf: impl Into<Arc<AggregateUDF>>) -> Self {
        let udaf = udaf.into();
        self.aggregate.insert(udaf.name().to_string(), udaf);
        self
    }

    /// Adds the window function `udwf` (replacing one of the same name).
    pub fn with_udwf(mut self, udwf: impl Into<Arc<WindowUDF>>) -> Self {
        let udwf = udwf.into();
        self.window.insert(udwf.name().to_string(), udwf);
        self
    }

    /// The registered scalar functions, by name.
    pub fn udfs(&self) -> impl Iterator<Item = &Arc<ScalarUDF>> {
        self.scalar.values()
    }

    /// The registered aggregate functions, by name.
    pub fn udafs(&self) -> impl Iterator<Item = &Arc<AggregateUDF>> {
        self.aggregate.values()
    }

    /// The registered window functions, by name.
    pub fn udwfs(&self) -> impl Iterator<Item = &Arc<WindowUDF>> {
        self.window.values()
    }

    /// Whether no function is registered.
    pub fn is_empty(&self) -> bool {
        self.scalar.is_empty() && self.aggregate.is_empty() && self.window.is_empty()
    }

    /// Registers every function in a DataFusion registry (a session state or
    /// context).
    pub fn register_into(&self, registry: &mut dyn FunctionRegistry) -> Result<()> {
        for udf in self.scalar.values() {
            registry.register_udf(Arc::clone(udf))?;
        }
        for udaf in self.aggregate.values() {
            registry.register_udaf(Arc::clone(udaf))?;
        }
        for udwf in self.window.values() {
            registry.register_udwf(Arc::clone(udwf))?;
        }
        Ok(())
    }
}

/// One call of a user function as the client planned it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PlannedCall {
    /// The arguments' types.
    pub args: Vec<DataType>,
    /// The result.
    pub result: FieldRef,
}

/// Stands in for a user function on the scheduler, which plans with it but
/// never runs it: the executors decode the call by name to their own
/// registered implementation.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PlannedUdf {
    name: String,
    signature: Signature,
    calls: Vec<PlannedCall>,
}

impl PlannedUdf {
    /// A stand-in for `name`, called as in `calls`.
    pub fn new(name: impl Into<String>, volatility: Volatility, calls: Vec<PlannedCall>) -> Self {
        Self {
            name: name.into(),
            signature: Signature::variadic_any(volatility),
            calls,
        }
    }

    fn call(&self, args: &[DataType]) -> Result<&PlannedCall> {
        match self.calls.iter().find(|c| c.args == args) {
            Some(call) => Ok(call),
            None => plan_err!(
                "the client did not plan a call of `{}` with arguments {args:?}",
                self.name
            ),
        }
    }
}

impl ScalarUDFImpl for PlannedUdf {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.call(arg_types)?.result.data_type().clone())
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let types: Vec<DataType> = args
            .arg_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        Ok(Arc::clone(&self.call(&types)?.result))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!(
            "`{}` runs only on executors built with it; the scheduler cannot run it",
            self.name
        )
    }
}
