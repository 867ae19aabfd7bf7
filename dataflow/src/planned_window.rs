//! User-defined window functions on the scheduler: [`PlannedUdwf`] stands
//! in for one, with the result the client resolved for each call. The
//! executors run the real code, found by name in their `UdfRegistry`.

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, FieldRef, Schema};
use datafusion::common::{exec_err, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{
    PartitionEvaluator, Signature, Volatility, WindowUDF, WindowUDFImpl,
};
use prost::Message;
use volley_proto::v1;

use crate::codec::{decode_schema, encode_schema};
use crate::error::volley_internal;
use crate::planned_aggregate::{decode_types, encode_types};

/// One call of a user window function as the client planned it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WindowCall {
    arguments: Vec<DataType>,
    result: FieldRef,
}

impl WindowCall {
    /// Resolves a call of `udwf` with these arguments.
    pub fn resolve(udwf: &WindowUDF, arguments: &[FieldRef]) -> Result<Self> {
        let result = udwf.field(WindowUDFFieldArgs::new(arguments, udwf.name()))?;
        Ok(Self {
            arguments: arguments.iter().map(|f| f.data_type().clone()).collect(),
            result,
        })
    }
}

/// Stands in for a user window function on the scheduler, which plans with
/// it but never runs it.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PlannedUdwf {
    name: String,
    signature: Signature,
    calls: Vec<WindowCall>,
}

impl PlannedUdwf {
    /// The wire form of a user window function's calls in a client's plan.
    pub fn encode(calls: &[WindowCall]) -> Result<Vec<u8>> {
        let calls = calls
            .iter()
            .map(|call| {
                Ok(v1::WindowCall {
                    arguments: encode_types(&call.arguments)?,
                    result: encode_schema(&Schema::new(vec![Arc::clone(&call.result)]))?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(v1::UserWindowNode { calls }.encode_to_vec())
    }

    /// The stand-in for `name` from what a client sent.
    pub fn decode(name: &str, bytes: &[u8]) -> Result<WindowUDF> {
        let node = v1::UserWindowNode::decode(bytes)
            .map_err(|e| volley_internal(format!("cannot decode window function `{name}`: {e}")))?;
        let mut calls = Vec::with_capacity(node.calls.len());
        for call in &node.calls {
            let result = decode_schema(&call.result)?;
            let Some(result) = result.fields().first() else {
                return Err(volley_internal("a window function call without a result"));
            };
            calls.push(WindowCall {
                arguments: decode_types(&call.arguments)?,
                result: Arc::clone(result),
            });
        }
        Ok(WindowUDF::new_from_impl(Self {
            name: name.to_string(),
            signature: Signature::variadic_any(Volatility::Immutable),
            calls,
        }))
    }
}

impl WindowUDFImpl for PlannedUdwf {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn partition_evaluator(
        &self,
        _args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        // The planner asks for one to learn whether the function can run
        // on bounded memory; this one says no, so the plan buffers each
        // partition, which is right for any function.
        Ok(Box::new(PlannedEvaluator {
            name: self.name.clone(),
        }))
    }

    fn field(&self, field_args: WindowUDFFieldArgs) -> Result<FieldRef> {
        let arguments: Vec<DataType> = field_args
            .input_fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        match self.calls.iter().find(|c| c.arguments == arguments) {
            Some(call) => Ok(Arc::new(
                call.result.as_ref().clone().with_name(field_args.name()),
            )),
            None => plan_err!(
                "the client did not plan a call of `{}` with arguments {arguments:?}",
                self.name
            ),
        }
    }
}

/// What the scheduler's planner sees of a user window function's evaluator.
#[derive(Debug)]
struct PlannedEvaluator {
    name: String,
}

impl PartitionEvaluator for PlannedEvaluator {
    fn evaluate_all(&mut self, _values: &[ArrayRef], _num_rows: usize) -> Result<ArrayRef> {
        exec_err!(
            "`{}` runs only on executors built with it; the scheduler cannot run it",
            self.name
        )
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::Field;
    use datafusion::functions_window::ntile::ntile_udwf;

    use super::*;

    #[test]
    fn a_stand_in_gives_the_result_the_real_function_gives_under_the_plans_name() {
        let ntile = ntile_udwf();
        let input = vec![Arc::new(Field::new("n", DataType::Int64, false))];
        let call = WindowCall::resolve(&ntile, &input).unwrap();
        let bytes = PlannedUdwf::encode(&[call]).unwrap();
        let stand_in = PlannedUdwf::decode("ntile", &bytes).unwrap();
        let name = "ntile(Int64(3)) ORDER BY [t.a ASC]";
        assert_eq!(
            stand_in
                .field(WindowUDFFieldArgs::new(&input, name))
                .unwrap(),
            ntile.field(WindowUDFFieldArgs::new(&input, name)).unwrap()
        );
        let other = vec![Arc::new(Field::new("n", DataType::Utf8, false))];
        let message = stand_in
            .field(WindowUDFFieldArgs::new(&other, name))
            .unwrap_err()
            .to_string();
        assert!(message.contains("`ntile`"), "{message}");
    }
}
