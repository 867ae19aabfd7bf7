//! Stage plans on the wire: DataFusion's own physical-plan protobuf
//! (`datafusion-proto`), extended by [`VolleyCodec`] with the two exchange
//! operators. The scheduler encodes; executors decode.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::ScalarUDF;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::from_proto::parse_protobuf_partitioning;
use datafusion_proto::physical_plan::to_proto::serialize_partitioning;
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf;
use prost::Message;
use volley_proto::v1;

use crate::error::ExchangeError;
use crate::file_output::{FileOutputExec, OutputFormat};
use crate::ids::{JobId, StageId};
use crate::location::PartitionLocation;
use crate::shuffle_reader::{ExchangeKind, ShuffleReaderExec};
use crate::shuffle_writer::ShuffleWriterExec;

/// Encodes and decodes Volley's exchange operators inside DataFusion plans.
#[derive(Debug, Default)]
pub struct VolleyCodec;

fn decode_error(what: &str, e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Internal(format!("cannot decode {what}: {e}"))
}

/// Encodes an Arrow schema as datafusion-proto bytes.
pub fn encode_schema(schema: &Schema) -> Result<Vec<u8>> {
    Ok(protobuf::Schema::try_from(schema)?.encode_to_vec())
}

/// Decodes an Arrow schema from datafusion-proto bytes.
pub fn decode_schema(bytes: &[u8]) -> Result<SchemaRef> {
    let proto = protobuf::Schema::decode(bytes).map_err(|e| decode_error("schema", e))?;
    Ok(Arc::new(Schema::try_from(&proto)?))
}

impl PhysicalExtensionCodec for VolleyCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let node = v1::ExchangeNode::decode(buf).map_err(|e| decode_error("exchange node", e))?;
        match node.kind {
            Some(v1::exchange_node::Kind::Writer(writer)) => {
                let [input] = inputs else {
                    return Err(decode_error("shuffle writer", "expected one input"));
                };
                let partitioning = if writer.partitioning.is_empty() {
                    None
                } else {
                    let proto = protobuf::Partitioning::decode(writer.partitioning.as_slice())
                        .map_err(|e| decode_error("partitioning", e))?;
                    let decode_ctx = PhysicalPlanDecodeContext::new(ctx, self);
                    parse_protobuf_partitioning(
                        Some(&proto),
                        &decode_ctx,
                        input.schema().as_ref(),
                        proto_converter,
                    )?
                };
                Ok(Arc::new(ShuffleWriterExec::try_new(
                    JobId::from(writer.job_id),
                    StageId(writer.stage_id),
                    Arc::clone(input),
                    partitioning,
                )?))
            }
            Some(v1::exchange_node::Kind::Reader(reader)) => {
                let schema = decode_schema(&reader.schema)?;
                let kind = match v1::ExchangeKind::try_from(reader.kind) {
                    Ok(v1::ExchangeKind::Repartition) => ExchangeKind::Repartition,
                    Ok(v1::ExchangeKind::Passthrough) => ExchangeKind::Passthrough,
                    _ => return Err(decode_error("shuffle reader", "unknown exchange kind")),
                };
                let stage = StageId(reader.input_stage);
                if reader.resolved {
                    let locations = reader
                        .locations
                        .iter()
                        .map(|p| p.locations.iter().map(PartitionLocation::from).collect())
                        .collect();
                    Ok(Arc::new(ShuffleReaderExec::new_resolved(
                        stage, schema, kind, locations,
                    )))
                } else {
                    Ok(Arc::new(ShuffleReaderExec::new_unresolved(
                        stage,
                        schema,
                        reader.partitions as usize,
                        kind,
                    )))
                }
            }
            Some(v1::exchange_node::Kind::FileOutput(output)) => {
                let [input] = inputs else {
                    return Err(decode_error("file output", "expected one input"));
                };
                let format = output_format_from_proto(output.format)?;
                Ok(Arc::new(FileOutputExec::try_new(
                    Arc::clone(input),
                    output.dir,
                    format,
                )?))
            }
            None => Err(decode_error("exchange node", "empty")),
        }
    }

    fn try_decode_udf(&self, name: &str, _buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        // Reached only when the task's registry lacks the function.
        Err(ExchangeError::UnknownFunction {
            name: name.to_string(),
        }
        .into())
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let kind = if let Some(writer) = node.downcast_ref::<ShuffleWriterExec>() {
            let partitioning = match writer.partitioning() {
                Some(p) => serialize_partitioning(p, self, proto_converter)?.encode_to_vec(),
                None => Vec::new(),
            };
            v1::exchange_node::Kind::Writer(v1::ShuffleWriterNode {
                job_id: writer.job_id().to_string(),
                stage_id: writer.stage_id().0,
                partitioning,
            })
        } else if let Some(reader) = node.downcast_ref::<ShuffleReaderExec>() {
            let locations = reader
                .locations()
                .map(|parts| {
                    parts
                        .iter()
                        .map(|pieces| v1::ReaderPartition {
                            locations: pieces.iter().map(v1::PartitionLocation::from).collect(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            v1::exchange_node::Kind::Reader(v1::ShuffleReaderNode {
                input_stage: reader.input_stage().0,
                schema: encode_schema(reader.schema_ref())?,
                partitions: reader.partition_count() as u32,
                kind: match reader.kind() {
                    ExchangeKind::Repartition => v1::ExchangeKind::Repartition,
                    ExchangeKind::Passthrough => v1::ExchangeKind::Passthrough,
                } as i32,
                locations,
                resolved: reader.locations().is_some(),
            })
        } else if let Some(output) = node.downcast_ref::<FileOutputExec>() {
            v1::exchange_node::Kind::FileOutput(v1::FileOutputNode {
                dir: output.dir().to_string(),
                format: output_format_to_proto(output.format()) as i32,
            })
        } else {
            return Err(DataFusionError::NotImplemented(format!(
                "Volley cannot send the operator {} to executors",
                node.name()
            )));
        };
        v1::ExchangeNode { kind: Some(kind) }
            .encode(buf)
            .map_err(|e| DataFusionError::Internal(format!("cannot encode exchange node: {e}")))
    }
}

/// The wire form of an output format.
pub fn output_format_to_proto(format: OutputFormat) -> v1::OutputFormat {
    match format {
        OutputFormat::Parquet => v1::OutputFormat::Parquet,
        OutputFormat::Csv => v1::OutputFormat::Csv,
        OutputFormat::Json => v1::OutputFormat::Json,
    }
}

/// An output format from the wire; unspecified means Parquet.
pub fn output_format_from_proto(format: i32) -> Result<OutputFormat> {
    match v1::OutputFormat::try_from(format) {
        Ok(v1::OutputFormat::Parquet | v1::OutputFormat::Unspecified) => Ok(OutputFormat::Parquet),
        Ok(v1::OutputFormat::Csv) => Ok(OutputFormat::Csv),
        Ok(v1::OutputFormat::Json) => Ok(OutputFormat::Json),
        Err(_) => Err(decode_error("output format", format)),
    }
}

/// Encodes a stage plan for the executors.
pub fn encode_plan(plan: Arc<dyn ExecutionPlan>) -> Result<Vec<u8>> {
    Ok(
        datafusion_proto::bytes::physical_plan_to_bytes_with_extension_codec(plan, &VolleyCodec)?
            .to_vec(),
    )
}

/// Decodes a stage plan the scheduler encoded.
pub fn decode_plan(bytes: &[u8], ctx: &TaskContext) -> Result<Arc<dyn ExecutionPlan>> {
    datafusion_proto::bytes::physical_plan_from_bytes_with_extension_codec(bytes, ctx, &VolleyCodec)
}
