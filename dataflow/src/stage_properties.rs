//! The properties an exchange promises, on the wire.
//!
//! Where the scheduler cuts an exchange out of a plan, the
//! `ShuffleReaderExec` that takes its place must promise the operators
//! above it what the exchange did: its partitioning (an interleaving union
//! checks that its inputs are hash-partitioned alike) and each partition's
//! orderings, constants and equal expressions (a window over `PARTITION BY
//! a` needs its input ordered by `a`, or `a` constant). DataFusion rebuilds
//! every operator when an executor decodes a stage plan, and an operator
//! whose input has lost these properties fails to build, or worse, builds
//! with another mode. So the reader carries them, encoded here with
//! datafusion-proto's expression messages.

use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::common::ScalarValue;
use datafusion::error::Result;
use datafusion::physical_expr::{
    AcrossPartitions, ConstExpr, EquivalenceProperties, LexOrdering, Partitioning, PhysicalExpr,
};
use datafusion_proto::physical_plan::from_proto::{
    parse_physical_sort_exprs, parse_protobuf_partitioning,
};
use datafusion_proto::physical_plan::to_proto::{
    serialize_partitioning, serialize_physical_sort_exprs,
};
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf;
use prost::Message;
use volley_proto::v1;

use crate::error::volley_internal;

fn decode_error(what: &str, e: impl std::fmt::Display) -> datafusion::error::DataFusionError {
    volley_internal(format!("cannot decode a reader's {what}: {e}"))
}

/// Encodes `partitioning` and `equivalence` (over the reader's schema).
pub fn encode_properties(
    partitioning: &Partitioning,
    equivalence: &EquivalenceProperties,
    codec: &dyn PhysicalExtensionCodec,
    converter: &dyn PhysicalProtoConverterExtension,
) -> Result<v1::StageProperties> {
    let expr_bytes = |expr: &Arc<dyn PhysicalExpr>| -> Result<Vec<u8>> {
        Ok(converter
            .physical_expr_to_proto(expr, codec)?
            .encode_to_vec())
    };
    let orderings = equivalence
        .oeq_class()
        .iter()
        .map(|ordering| {
            let nodes = serialize_physical_sort_exprs(ordering.iter().cloned(), codec, converter)?;
            Ok(protobuf::PhysicalSortExprNodeCollection {
                physical_sort_expr_nodes: nodes,
            }
            .encode_to_vec())
        })
        .collect::<Result<Vec<_>>>()?;
    let constants = equivalence
        .constants()
        .iter()
        .map(|constant| {
            let (uniform, value) = match &constant.across_partitions {
                AcrossPartitions::Heterogeneous => (false, Vec::new()),
                AcrossPartitions::Uniform(None) => (true, Vec::new()),
                AcrossPartitions::Uniform(Some(value)) => (
                    true,
                    protobuf::ScalarValue::try_from(value)
                        .map_err(|e| volley_internal(format!("cannot encode a constant: {e}")))?
                        .encode_to_vec(),
                ),
            };
            Ok(v1::ConstantExpr {
                expr: expr_bytes(&constant.expr)?,
                uniform,
                value,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let equivalences = equivalence
        .eq_group()
        .iter()
        .map(|class| {
            Ok(v1::EquivalentExprs {
                exprs: class.iter().map(expr_bytes).collect::<Result<Vec<_>>>()?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(v1::StageProperties {
        partitioning: serialize_partitioning(partitioning, codec, converter)?.encode_to_vec(),
        orderings,
        constants,
        equivalences,
    })
}

/// Decodes what [`encode_properties`] wrote, over `schema`.
pub fn decode_properties(
    properties: &v1::StageProperties,
    schema: &Arc<Schema>,
    ctx: &PhysicalPlanDecodeContext<'_>,
    converter: &dyn PhysicalProtoConverterExtension,
) -> Result<(Partitioning, EquivalenceProperties)> {
    let expr = |bytes: &[u8]| -> Result<Arc<dyn PhysicalExpr>> {
        let node =
            protobuf::PhysicalExprNode::decode(bytes).map_err(|e| decode_error("expression", e))?;
        converter.proto_to_physical_expr(&node, schema, ctx)
    };
    let partitioning = protobuf::Partitioning::decode(properties.partitioning.as_slice())
        .map_err(|e| decode_error("partitioning", e))?;
    let partitioning = parse_protobuf_partitioning(Some(&partitioning), ctx, schema, converter)?
        .ok_or_else(|| decode_error("partitioning", "empty"))?;
    let mut orderings: Vec<LexOrdering> = Vec::new();
    for bytes in &properties.orderings {
        let nodes = protobuf::PhysicalSortExprNodeCollection::decode(bytes.as_slice())
            .map_err(|e| decode_error("ordering", e))?;
        let exprs =
            parse_physical_sort_exprs(&nodes.physical_sort_expr_nodes, ctx, schema, converter)?;
        orderings.extend(LexOrdering::new(exprs));
    }
    let mut equivalence = EquivalenceProperties::new(Arc::clone(schema));
    for class in &properties.equivalences {
        let exprs = class
            .exprs
            .iter()
            .map(|bytes| expr(bytes))
            .collect::<Result<Vec<_>>>()?;
        if let Some((first, rest)) = exprs.split_first() {
            for other in rest {
                equivalence.add_equal_conditions(Arc::clone(first), Arc::clone(other))?;
            }
        }
    }
    let constants = properties
        .constants
        .iter()
        .map(|constant| {
            let across = if !constant.uniform {
                AcrossPartitions::Heterogeneous
            } else if constant.value.is_empty() {
                AcrossPartitions::Uniform(None)
            } else {
                let proto = protobuf::ScalarValue::decode(constant.value.as_slice())
                    .map_err(|e| decode_error("constant", e))?;
                let value =
                    ScalarValue::try_from(&proto).map_err(|e| decode_error("constant", e))?;
                AcrossPartitions::Uniform(Some(value))
            };
            Ok(ConstExpr::new(expr(&constant.expr)?, across))
        })
        .collect::<Result<Vec<_>>>()?;
    equivalence.add_constants(constants)?;
    equivalence.add_orderings(orderings);
    Ok((partitioning, equivalence))
}
