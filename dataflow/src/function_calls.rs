//! Which calls of user functions a client's plan makes, with the types the
//! client's session resolved for them: what the logical codec sends so the
//! scheduler can plan those calls without the functions' code.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::DFSchema;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::Result;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::expr::{AggregateFunction, WindowFunction};
use datafusion::logical_expr::{
    AggregateUDF, Expr, ExprSchemable, LogicalPlan, WindowFunctionDefinition,
};

use crate::functions::PlannedCall;
use crate::planned_aggregate::AggregateCall;
use crate::planned_window::WindowCall;

/// Names (and aliases) of the functions every DataFusion session has.
struct Builtins {
    scalar: HashSet<String>,
    aggregate: HashSet<String>,
    window: HashSet<String>,
}

static BUILTINS: LazyLock<Builtins> = LazyLock::new(|| {
    let state = SessionStateBuilder::new().with_default_features().build();
    Builtins {
        scalar: state.scalar_functions().keys().cloned().collect(),
        aggregate: state.aggregate_functions().keys().cloned().collect(),
        window: state.window_functions().keys().cloned().collect(),
    }
});

/// Is `name` one of DataFusion's own scalar functions, or Volley's (known
/// everywhere)?
pub(crate) fn is_builtin_scalar(name: &str) -> bool {
    BUILTINS.scalar.contains(name) || name == crate::scalar_subquery::SCALAR_SUBQUERY_VALUE
}

/// Is `name` one of DataFusion's own aggregate functions?
pub(crate) fn is_builtin_aggregate(name: &str) -> bool {
    BUILTINS.aggregate.contains(name)
}

/// Is `name` one of DataFusion's own window functions?
pub(crate) fn is_builtin_window(name: &str) -> bool {
    BUILTINS.window.contains(name)
}

/// Every call of a user function in a plan, by function name.
#[derive(Debug, Default)]
pub(crate) struct FunctionCalls {
    pub(crate) scalar: HashMap<String, Vec<PlannedCall>>,
    pub(crate) aggregate: HashMap<String, Vec<AggregateCall>>,
    pub(crate) window: HashMap<String, Vec<WindowCall>>,
}

impl FunctionCalls {
    /// The calls in `plan` and its subqueries.
    pub(crate) fn of(plan: &LogicalPlan) -> Result<Self> {
        let mut calls = Self::default();
        plan.apply_with_subqueries(|node| {
            let schema = expression_schema(node)?;
            node.apply_expressions(|expr| {
                expr.apply(|e| {
                    calls.note(e, &schema)?;
                    Ok(TreeNodeRecursion::Continue)
                })
            })?;
            Ok(TreeNodeRecursion::Continue)
        })?;
        Ok(calls)
    }

    /// Notes `e` if it calls a user function. A call whose types cannot be
    /// resolved here fails on the scheduler with a message naming the
    /// function.
    fn note(&mut self, e: &Expr, schema: &DFSchema) -> Result<()> {
        match e {
            Expr::ScalarFunction(f) if !is_builtin_scalar(f.func.name()) => {
                let args: Result<Vec<DataType>> =
                    f.args.iter().map(|a| a.get_type(schema)).collect();
                if let (Ok(args), Ok((_, result))) = (args, e.to_field(schema)) {
                    add(
                        &mut self.scalar,
                        f.func.name(),
                        PlannedCall { args, result },
                    );
                }
            }
            Expr::AggregateFunction(AggregateFunction { func, params })
                if !is_builtin_aggregate(func.name()) =>
            {
                let ordering: Result<Vec<DataType>> = params
                    .order_by
                    .iter()
                    .map(|sort| sort.expr.get_type(schema))
                    .collect();
                if let (Ok(args), Ok(ordering)) = (argument_fields(&params.args, schema), ordering)
                {
                    self.note_aggregate(func, &args, &ordering, params.distinct);
                }
            }
            Expr::WindowFunction(window) => {
                let WindowFunction { fun, params } = window.as_ref();
                let Ok(args) = argument_fields(&params.args, schema) else {
                    return Ok(());
                };
                match fun {
                    WindowFunctionDefinition::AggregateUDF(func)
                        if !is_builtin_aggregate(func.name()) =>
                    {
                        self.note_aggregate(func, &args, &[], params.distinct);
                    }
                    WindowFunctionDefinition::WindowUDF(func)
                        if !is_builtin_window(func.name()) =>
                    {
                        if let Ok(call) = WindowCall::resolve(func, &args) {
                            add(&mut self.window, func.name(), call);
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn note_aggregate(
        &mut self,
        func: &Arc<AggregateUDF>,
        args: &[FieldRef],
        ordering: &[DataType],
        distinct: bool,
    ) {
        if let Ok(call) = AggregateCall::resolve(func, args, ordering, distinct) {
            add(&mut self.aggregate, func.name(), call);
        }
    }
}

fn add<T: PartialEq>(calls: &mut HashMap<String, Vec<T>>, name: &str, call: T) {
    let known = calls.entry(name.to_string()).or_default();
    if !known.contains(&call) {
        known.push(call);
    }
}

fn argument_fields(args: &[Expr], schema: &DFSchema) -> Result<Vec<FieldRef>> {
    args.iter().map(|a| Ok(a.to_field(schema)?.1)).collect()
}

/// The schema a node's expressions are evaluated against.
fn expression_schema(node: &LogicalPlan) -> Result<DFSchema> {
    if let LogicalPlan::TableScan(scan) = node {
        return DFSchema::try_from_qualified_schema(scan.table_name.clone(), &scan.source.schema());
    }
    let mut schema = DFSchema::empty();
    for input in node.inputs() {
        schema.merge(input.schema());
    }
    Ok(schema)
}
