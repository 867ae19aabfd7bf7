//! User-defined aggregate functions on the scheduler: [`PlannedUdaf`]
//! stands in for one, with the result and state fields the client resolved
//! for each call, so the scheduler can split the aggregation into partial
//! and final stages. The executors run the real code, found by name in
//! their `UdfRegistry`.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema};
use datafusion::common::{exec_err, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility,
};
use prost::Message;
use volley_proto::v1;

use crate::codec::{decode_schema, encode_schema};
use crate::error::volley_internal;

/// Stands for the call's name in the state field names a client sends; the
/// scheduler puts the physical plan's name in its place.
const CALL_NAME: &str = "\u{1f}volley:call\u{1f}";

/// Stands for the name of the call's `i`-th ordering column.
fn ordering_name(i: usize) -> String {
    format!("\u{1f}volley:order{i}\u{1f}")
}

/// One call of a user aggregate as the client planned it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AggregateCall {
    arguments: Vec<DataType>,
    ordering: Vec<DataType>,
    distinct: bool,
    result: FieldRef,
    /// Named with [`CALL_NAME`] and [`ordering_name`] placeholders.
    state: Vec<FieldRef>,
}

impl AggregateCall {
    /// Resolves a call of `udaf` with these arguments, `ORDER BY` types and
    /// `DISTINCT`, as the client's own session would.
    pub fn resolve(
        udaf: &AggregateUDF,
        arguments: &[FieldRef],
        ordering: &[DataType],
        distinct: bool,
    ) -> Result<Self> {
        let result = udaf.return_field(arguments)?;
        let ordering_fields: Vec<FieldRef> = ordering
            .iter()
            .enumerate()
            .map(|(i, t)| Arc::new(Field::new(ordering_name(i), t.clone(), true)))
            .collect();
        let state = udaf.state_fields(StateFieldsArgs {
            name: CALL_NAME,
            input_fields: arguments,
            return_field: Arc::clone(&result),
            ordering_fields: &ordering_fields,
            is_distinct: distinct,
        })?;
        Ok(Self {
            arguments: arguments.iter().map(|f| f.data_type().clone()).collect(),
            ordering: ordering.to_vec(),
            distinct,
            result,
            state,
        })
    }

    fn to_proto(&self) -> Result<v1::AggregateCall> {
        Ok(v1::AggregateCall {
            arguments: encode_types(&self.arguments)?,
            ordering: encode_types(&self.ordering)?,
            distinct: self.distinct,
            result: encode_schema(&Schema::new(vec![Arc::clone(&self.result)]))?,
            state: encode_schema(&Schema::new(self.state.clone()))?,
        })
    }

    fn from_proto(call: &v1::AggregateCall) -> Result<Self> {
        let result = decode_schema(&call.result)?;
        let Some(result) = result.fields().first() else {
            return Err(volley_internal("an aggregate call without a result"));
        };
        Ok(Self {
            arguments: decode_types(&call.arguments)?,
            ordering: decode_types(&call.ordering)?,
            distinct: call.distinct,
            result: Arc::clone(result),
            state: decode_schema(&call.state)?.fields().to_vec(),
        })
    }
}

/// `types` as a schema of fields named by position.
pub(crate) fn encode_types(types: &[DataType]) -> Result<Vec<u8>> {
    let fields: Vec<Field> = types
        .iter()
        .enumerate()
        .map(|(i, t)| Field::new(format!("c{i}"), t.clone(), true))
        .collect();
    encode_schema(&Schema::new(fields))
}

pub(crate) fn decode_types(bytes: &[u8]) -> Result<Vec<DataType>> {
    Ok(decode_schema(bytes)?
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect())
}

/// Stands in for a user aggregate on the scheduler, which plans with it but
/// never runs it.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct PlannedUdaf {
    name: String,
    signature: Signature,
    calls: Vec<AggregateCall>,
    /// As [`v1::UserAggregateNode::order_sensitivity`].
    order_sensitivity: i32,
    nullable: bool,
}

impl PlannedUdaf {
    /// The wire form of `udaf`'s calls in a client's plan.
    pub fn encode(udaf: &AggregateUDF, calls: &[AggregateCall]) -> Result<Vec<u8>> {
        let order_sensitivity = match udaf.order_sensitivity() {
            AggregateOrderSensitivity::Insensitive => 0,
            AggregateOrderSensitivity::HardRequirement => 1,
            AggregateOrderSensitivity::SoftRequirement => 2,
            AggregateOrderSensitivity::Beneficial => 3,
        };
        let calls = calls
            .iter()
            .map(AggregateCall::to_proto)
            .collect::<Result<_>>()?;
        Ok(v1::UserAggregateNode {
            calls,
            order_sensitivity,
            nullable: udaf.is_nullable(),
        }
        .encode_to_vec())
    }

    /// The stand-in for `name` from what a client sent.
    pub fn decode(name: &str, bytes: &[u8]) -> Result<AggregateUDF> {
        let node = v1::UserAggregateNode::decode(bytes)
            .map_err(|e| volley_internal(format!("cannot decode aggregate `{name}`: {e}")))?;
        let calls = node
            .calls
            .iter()
            .map(AggregateCall::from_proto)
            .collect::<Result<_>>()?;
        Ok(AggregateUDF::new_from_impl(Self {
            name: name.to_string(),
            signature: Signature::variadic_any(Volatility::Immutable),
            calls,
            order_sensitivity: node.order_sensitivity,
            nullable: node.nullable,
        }))
    }

    fn call_with(&self, arguments: &[DataType]) -> Result<&AggregateCall> {
        match self.calls.iter().find(|c| c.arguments == arguments) {
            Some(call) => Ok(call),
            None => plan_err!(
                "the client did not plan a call of `{}` with arguments {arguments:?}",
                self.name
            ),
        }
    }
}

impl AggregateUDFImpl for PlannedUdaf {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(self.call_with(arg_types)?.result.data_type().clone())
    }

    fn return_field(&self, arg_fields: &[FieldRef]) -> Result<FieldRef> {
        let types: Vec<DataType> = arg_fields.iter().map(|f| f.data_type().clone()).collect();
        Ok(Arc::clone(&self.call_with(&types)?.result))
    }

    fn is_nullable(&self) -> bool {
        self.nullable
    }

    fn accumulator(&self, _acc_args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        exec_err!(
            "`{}` runs only on executors built with it; the scheduler cannot run it",
            self.name
        )
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let arguments: Vec<DataType> = args
            .input_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let ordering: Vec<DataType> = args
            .ordering_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let Some(call) = self.calls.iter().find(|c| {
            c.arguments == arguments && c.ordering == ordering && c.distinct == args.is_distinct
        }) else {
            return plan_err!(
                "the client did not plan a call of `{}` with arguments {arguments:?}, \
                 ordering {ordering:?} and distinct {}",
                self.name,
                args.is_distinct
            );
        };
        let mut names = vec![(CALL_NAME.to_string(), args.name.to_string())];
        for (i, field) in args.ordering_fields.iter().enumerate() {
            names.push((ordering_name(i), field.name().clone()));
        }
        Ok(call
            .state
            .iter()
            .map(|f| Arc::new(renamed_field(f, &names)))
            .collect())
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        match self.order_sensitivity {
            0 => AggregateOrderSensitivity::Insensitive,
            2 => AggregateOrderSensitivity::SoftRequirement,
            // A function that only benefits from order gets it as a hard
            // requirement: the executors' real function is not told its
            // input is ordered (that would take `with_beneficial_ordering`,
            // which the stand-in cannot call), so it stays correct either way.
            _ => AggregateOrderSensitivity::HardRequirement,
        }
    }
}

/// `field` with every placeholder in its name, and its children's names,
/// replaced.
fn renamed_field(field: &Field, names: &[(String, String)]) -> Field {
    let mut name = field.name().clone();
    for (placeholder, real) in names {
        name = name.replace(placeholder.as_str(), real);
    }
    field
        .clone()
        .with_name(name)
        .with_data_type(renamed_type(field.data_type(), names))
}

fn renamed_type(data_type: &DataType, names: &[(String, String)]) -> DataType {
    let child = |f: &FieldRef| Arc::new(renamed_field(f, names));
    match data_type {
        DataType::List(f) => DataType::List(child(f)),
        DataType::LargeList(f) => DataType::LargeList(child(f)),
        DataType::ListView(f) => DataType::ListView(child(f)),
        DataType::LargeListView(f) => DataType::LargeListView(child(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(child(f), *n),
        DataType::Map(f, sorted) => DataType::Map(child(f), *sorted),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(child).collect::<Fields>()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use datafusion::functions_aggregate::average::avg_udaf;
    use datafusion::functions_aggregate::first_last::first_value_udaf;

    use super::*;

    fn through_the_wire(udaf: &AggregateUDF, calls: &[AggregateCall]) -> AggregateUDF {
        let bytes = PlannedUdaf::encode(udaf, calls).unwrap();
        PlannedUdaf::decode(udaf.name(), &bytes).unwrap()
    }

    #[test]
    fn a_stand_in_gives_the_state_fields_the_real_function_gives_under_the_plans_names() {
        let avg = avg_udaf();
        let input = vec![Arc::new(Field::new("x", DataType::Float64, true))];
        let call = AggregateCall::resolve(&avg, &input, &[], false).unwrap();
        let stand_in = through_the_wire(&avg, &[call]);
        let result = stand_in.return_field(&input).unwrap();
        assert_eq!(result.data_type(), &DataType::Float64);
        let args = |return_field| StateFieldsArgs {
            name: "avg(t.x)",
            input_fields: &input,
            return_field,
            ordering_fields: &[],
            is_distinct: false,
        };
        assert_eq!(
            stand_in.state_fields(args(Arc::clone(&result))).unwrap(),
            avg.state_fields(args(result)).unwrap()
        );
    }

    #[test]
    fn ordering_column_names_inside_nested_state_fields_are_the_plans_own() {
        let first = first_value_udaf();
        let input = vec![Arc::new(Field::new("x", DataType::Int32, true))];
        let call = AggregateCall::resolve(&first, &input, &[DataType::Utf8], false).unwrap();
        let stand_in = through_the_wire(&first, &[call]);
        let ordering = vec![Arc::new(Field::new("t.name@1", DataType::Utf8, true))];
        let result = stand_in.return_field(&input).unwrap();
        let args = |return_field| StateFieldsArgs {
            name: "first_value(t.x) ORDER BY [t.name ASC]",
            input_fields: &input,
            return_field,
            ordering_fields: &ordering,
            is_distinct: false,
        };
        assert_eq!(
            stand_in.state_fields(args(Arc::clone(&result))).unwrap(),
            first.state_fields(args(result)).unwrap()
        );
    }

    #[test]
    fn a_call_the_client_did_not_plan_is_a_planning_error_naming_the_function() {
        let avg = avg_udaf();
        let input = vec![Arc::new(Field::new("x", DataType::Float64, true))];
        let call = AggregateCall::resolve(&avg, &input, &[], false).unwrap();
        let stand_in = through_the_wire(&avg, &[call]);
        let other = vec![Arc::new(Field::new("x", DataType::Utf8, true))];
        let message = stand_in.return_field(&other).unwrap_err().to_string();
        assert!(message.contains("`avg`"), "{message}");
    }
}
