//! Stage plans on the wire: DataFusion's own physical-plan protobuf
//! (`datafusion-proto`), extended by [`VolleyCodec`] with the two exchange
//! operators. The scheduler encodes; executors decode.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::csv::WriterBuilder;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::file_options::csv_writer::CsvWriterOptions;
use datafusion::datasource::file_format::csv::CsvSink;
use datafusion::datasource::physical_plan::FileSink;
use datafusion::datasource::sink::DataSinkExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{AggregateUDF, ScalarUDF, WindowUDF};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::window::{PlainAggregateWindowExpr, SlidingAggregateWindowExpr};
use datafusion::physical_plan::aggregates::{AggregateExec, PhysicalGroupBy};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::recursive_query::RecursiveQueryExec;
use datafusion::physical_plan::windows::{
    BoundedWindowAggExec, StandardWindowExpr, WindowAggExec, WindowUDFExpr,
};
use datafusion::physical_plan::work_table::WorkTableExec;
use datafusion::physical_plan::{ExecutionPlan, PlanProperties, WindowExpr};
use datafusion_proto::physical_plan::from_proto::{
    parse_physical_expr_with_converter, parse_protobuf_partitioning,
};
use datafusion_proto::physical_plan::to_proto::{
    serialize_partitioning, serialize_physical_expr_with_converter,
};
use datafusion_proto::physical_plan::{
    PhysicalExtensionCodec, PhysicalPlanDecodeContext, PhysicalPlanNodeExt,
    PhysicalProtoConverterExtension,
};
use datafusion_proto::protobuf;
use prost::Message;
use volley_proto::v1;

use crate::error::{ExchangeError, volley_internal};
use crate::file_output::{FileOutputExec, OutputFormat};
use crate::ids::{JobId, StageId};
use crate::location::PartitionLocation;
use crate::shuffle_reader::{ExchangeKind, ShuffleReaderExec};
use crate::shuffle_writer::ShuffleWriterExec;
use crate::stage_properties::{decode_properties, encode_properties};
use crate::window_functions::{ReversedWindowUdf, builtin_window_function};

/// Encodes and decodes Volley's exchange operators inside DataFusion plans,
/// and the operators of a recursive query, which datafusion-proto cannot.
#[derive(Debug, Default)]
pub struct VolleyCodec {
    /// While encoding a recursive query: its work table's schema, by name.
    work_table_schemas: Mutex<HashMap<String, SchemaRef>>,
}

fn decode_error(what: &str, e: impl std::fmt::Display) -> DataFusionError {
    volley_internal(format!("cannot decode {what}: {e}"))
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
                let columns = input.schema().fields().len();
                let summarize: Vec<usize> = writer
                    .summarize_columns
                    .iter()
                    .map(|c| *c as usize)
                    .collect();
                if summarize.iter().any(|c| *c >= columns) {
                    return Err(decode_error(
                        "shuffle writer",
                        "a summarized column out of range",
                    ));
                }
                let shuffle_writer = ShuffleWriterExec::try_new(
                    JobId::from(writer.job_id),
                    StageId(writer.stage_id),
                    Arc::clone(input),
                    partitioning,
                )?;
                Ok(Arc::new(if summarize.is_empty() {
                    shuffle_writer
                } else {
                    shuffle_writer.with_key_summaries(summarize, writer.summary_bits_log2)
                }))
            }
            Some(v1::exchange_node::Kind::Reader(reader)) => {
                let schema = decode_schema(&reader.schema)?;
                let kind = match v1::ExchangeKind::try_from(reader.kind) {
                    Ok(v1::ExchangeKind::Repartition) => ExchangeKind::Repartition,
                    Ok(v1::ExchangeKind::Passthrough) => ExchangeKind::Passthrough,
                    _ => return Err(decode_error("shuffle reader", "unknown exchange kind")),
                };
                let properties = reader
                    .properties
                    .as_ref()
                    .ok_or_else(|| decode_error("shuffle reader", "no properties"))?;
                let decode_ctx = PhysicalPlanDecodeContext::new(ctx, self);
                let (partitioning, equivalence) =
                    decode_properties(properties, &schema, &decode_ctx, proto_converter)?;
                if partitioning.partition_count() != reader.partitions as usize {
                    return Err(decode_error(
                        "shuffle reader",
                        "its partitioning and partition count disagree",
                    ));
                }
                let promised = PlanProperties::new(
                    equivalence,
                    partitioning,
                    EmissionType::Incremental,
                    Boundedness::Bounded,
                );
                let unresolved =
                    ShuffleReaderExec::new_unresolved(StageId(reader.input_stage), &promised, kind);
                if reader.streamed_map_tasks > 0 {
                    Ok(Arc::new(
                        unresolved.streamed(reader.streamed_map_tasks as usize),
                    ))
                } else if reader.resolved {
                    let locations = reader
                        .locations
                        .iter()
                        .map(|p| p.locations.iter().map(PartitionLocation::from).collect())
                        .collect();
                    Ok(Arc::new(unresolved.with_locations(locations)?))
                } else {
                    Ok(Arc::new(unresolved))
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
            Some(v1::exchange_node::Kind::RecursiveQuery(query)) => {
                let [static_term, recursive_term] = inputs else {
                    return Err(decode_error("recursive query", "expected two inputs"));
                };
                Ok(Arc::new(RecursiveQueryExec::try_new(
                    query.name,
                    decode_schema(&query.schema)?,
                    Arc::clone(static_term),
                    Arc::clone(recursive_term),
                    query.is_distinct,
                )?))
            }
            Some(v1::exchange_node::Kind::WorkTable(table)) => {
                let projection = table
                    .projected
                    .then(|| table.projection.iter().map(|i| *i as usize).collect());
                Ok(Arc::new(WorkTableExec::new(
                    table.name,
                    decode_schema(&table.schema)?,
                    projection,
                )?))
            }
            None => Err(decode_error("exchange node", "empty")),
        }
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
        if buf.is_empty() && builtin_window_function(name).is_none() {
            // A user window function the task's registry lacks.
            return Err(ExchangeError::UnknownFunction {
                name: name.to_string(),
            }
            .into());
        }
        let node =
            v1::WindowFunctionNode::decode(buf).map_err(|e| decode_error("window function", e))?;
        let function = builtin_window_function(name).ok_or_else(|| {
            DataFusionError::NotImplemented(format!(
                "the window function `{name}` is not one of DataFusion's own, and Volley \
                 runs only those"
            ))
        })?;
        if node.reversed {
            Ok(Arc::new(WindowUDF::new_from_impl(ReversedWindowUdf::new(
                function,
            ))))
        } else {
            Ok(function)
        }
    }

    fn try_decode_udaf(&self, name: &str, _buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        // Reached only when the task's registry lacks the function.
        Err(ExchangeError::UnknownFunction {
            name: name.to_string(),
        }
        .into())
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
                summarize_columns: writer.key_summaries().0.iter().map(|c| *c as u32).collect(),
                summary_bits_log2: writer.key_summaries().1,
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
                streamed_map_tasks: reader.streamed_map_tasks().unwrap_or(0) as u32,
                properties: Some(encode_properties(
                    reader.properties().output_partitioning(),
                    reader.properties().equivalence_properties(),
                    self,
                    proto_converter,
                )?),
            })
        } else if let Some(output) = node.downcast_ref::<FileOutputExec>() {
            v1::exchange_node::Kind::FileOutput(v1::FileOutputNode {
                dir: output.dir().to_string(),
                format: output_format_to_proto(output.format()) as i32,
            })
        } else if let Some(query) = node.downcast_ref::<RecursiveQueryExec>() {
            v1::exchange_node::Kind::RecursiveQuery(v1::RecursiveQueryNode {
                name: query.name().to_string(),
                schema: encode_schema(query.schema().as_ref())?,
                is_distinct: query.is_distinct(),
            })
        } else if let Some(table) = node.downcast_ref::<WorkTableExec>() {
            let full = self
                .work_table_schemas
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(table.name())
                .cloned()
                .ok_or_else(|| {
                    volley_internal(format!(
                        "the work table {} outside its recursive query",
                        table.name()
                    ))
                })?;
            let read = table.schema();
            let projection = if read.as_ref() == full.as_ref() {
                None
            } else {
                // The work table holds the query's rows; which of its
                // columns this scan reads, by name (DataFusion keeps the
                // projection private).
                Some(
                    read.fields()
                        .iter()
                        .map(|f| {
                            let mut matches = full
                                .fields()
                                .iter()
                                .enumerate()
                                .filter(|(_, g)| g.name() == f.name());
                            match (matches.next(), matches.next()) {
                                (Some((i, _)), None) => Ok(i as u32),
                                _ => Err(DataFusionError::NotImplemented(format!(
                                    "Volley cannot send the work table {} reading column {}",
                                    table.name(),
                                    f.name()
                                ))),
                            }
                        })
                        .collect::<Result<Vec<_>>>()?,
                )
            };
            v1::exchange_node::Kind::WorkTable(v1::WorkTableNode {
                name: table.name().to_string(),
                schema: encode_schema(full.as_ref())?,
                projected: projection.is_some(),
                projection: projection.unwrap_or_default(),
            })
        } else {
            return Err(DataFusionError::NotImplemented(format!(
                "Volley cannot send the operator {} to executors",
                node.name()
            )));
        };
        v1::ExchangeNode { kind: Some(kind) }
            .encode(buf)
            .map_err(|e| volley_internal(format!("cannot encode exchange node: {e}")))
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
        datafusion_proto::bytes::physical_plan_to_bytes_with_proto_converter(
            plan,
            &VolleyCodec::default(),
            &VolleyProtoConverter,
        )?
        .to_vec(),
    )
}

/// datafusion-proto's plan encoding, with what it drops put back for
/// window function calls such as `lag` or `first_value` (DataFusion's own
/// window functions are user-defined ones to it): `IGNORE NULLS`
/// (datafusion-proto 55 writes `ignore_nulls: false` for every such call;
/// its decoder reads the flag back), and a reversed evaluation (see
/// `window_functions`; decoded by [`VolleyCodec::try_decode_udwf`]); and
/// aggregates' empty grouping sets (see [`EMPTY_GROUPING_SETS`]).
struct VolleyProtoConverter;

impl PhysicalProtoConverterExtension for VolleyProtoConverter {
    fn proto_to_execution_plan(
        &self,
        proto: &protobuf::PhysicalPlanNode,
        ctx: &PhysicalPlanDecodeContext<'_>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = proto.try_into_physical_plan_with_context(ctx, self)?;
        match &proto.physical_plan_type {
            Some(protobuf::physical_plan_node::PhysicalPlanType::Aggregate(node)) => {
                with_empty_grouping_sets(plan, &node.group_expr_name)
            }
            Some(protobuf::physical_plan_node::PhysicalPlanType::CsvSink(node)) => {
                match node.sink.as_ref().and_then(|s| s.writer_options.as_ref()) {
                    Some(sent) => without_empty_csv_formats(
                        plan,
                        [
                            sent.date_format.is_empty(),
                            sent.datetime_format.is_empty(),
                            sent.timestamp_format.is_empty(),
                            sent.time_format.is_empty(),
                        ],
                    ),
                    None => Ok(plan),
                }
            }
            _ => Ok(plan),
        }
    }

    fn execution_plan_to_proto(
        &self,
        plan: &Arc<dyn ExecutionPlan>,
        codec: &dyn PhysicalExtensionCodec,
    ) -> Result<protobuf::PhysicalPlanNode> {
        if let Some(query) = plan.downcast_ref::<RecursiveQueryExec>()
            && let Some(volley) = (codec as &dyn std::any::Any).downcast_ref::<VolleyCodec>()
        {
            volley
                .work_table_schemas
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(query.name().to_string(), query.schema());
        }
        if plan.is::<ShuffleWriterExec>()
            || plan.is::<ShuffleReaderExec>()
            || plan.is::<FileOutputExec>()
            || plan.is::<RecursiveQueryExec>()
            || plan.is::<WorkTableExec>()
        {
            // datafusion-proto encodes an extension's inputs without the
            // converter, which would skip the fixes below for a stage's
            // whole plan; so Volley's own operators are encoded here.
            let mut buf = Vec::new();
            codec.try_encode(Arc::clone(plan), &mut buf, self)?;
            let inputs = plan
                .children()
                .into_iter()
                .map(|input| self.execution_plan_to_proto(input, codec))
                .collect::<Result<Vec<_>>>()?;
            return Ok(protobuf::PhysicalPlanNode {
                physical_plan_type: Some(
                    protobuf::physical_plan_node::PhysicalPlanType::Extension(
                        protobuf::PhysicalExtensionNode { node: buf, inputs },
                    ),
                ),
            });
        }
        let mut node = protobuf::PhysicalPlanNode::try_from_physical_plan_with_converter(
            Arc::clone(plan),
            codec,
            self,
        )?;
        if let Some(aggregate) = plan.downcast_ref::<AggregateExec>()
            && let Some(protobuf::physical_plan_node::PhysicalPlanType::Aggregate(proto)) =
                node.physical_plan_type.as_mut()
        {
            let group_by = aggregate.group_expr();
            if group_by.has_grouping_set() && group_by.expr().is_empty() {
                // The grouping sets are flattened to one flag per
                // expression each, so sets of no expression vanish: the
                // decoded aggregate had no set and emitted no row. Names
                // beyond the expressions are read by nobody else.
                proto.group_expr_name =
                    vec![format!("{EMPTY_GROUPING_SETS}{}", group_by.groups().len())];
            }
        }
        let window_exprs = if let Some(window) = plan.downcast_ref::<BoundedWindowAggExec>() {
            Some(window.window_expr())
        } else {
            plan.downcast_ref::<WindowAggExec>()
                .map(|window| window.window_expr())
        };
        if let (Some(exprs), Some(protobuf::physical_plan_node::PhysicalPlanType::Window(proto))) =
            (window_exprs, node.physical_plan_type.as_mut())
        {
            if exprs.len() != proto.window_expr.len() {
                return Err(volley_internal(
                    "a window operator encoded with another number of expressions",
                ));
            }
            for (expr, proto) in exprs.iter().zip(proto.window_expr.iter_mut()) {
                if has_aggregate_filter(expr) {
                    // datafusion-proto 55 has no place for it and would
                    // drop it: every row would be counted.
                    return Err(DataFusionError::NotImplemented(format!(
                        "Volley cannot yet run a window aggregate with FILTER on a cluster: {}",
                        expr.name()
                    )));
                }
                let Some(call) = window_function_call(expr) else {
                    continue;
                };
                // `Debug` derives from the call's fields and ends with the
                // two flags DataFusion keeps private.
                let fields = format!("{call:?}");
                proto.ignore_nulls |= fields.ends_with("ignore_nulls: true }");
                if fields.contains("is_reversed: true,") {
                    if proto.fun_definition.is_some() {
                        return Err(DataFusionError::NotImplemented(format!(
                            "Volley cannot yet send the reversed window function call {} \
                             to executors",
                            expr.name()
                        )));
                    }
                    proto.fun_definition =
                        Some(v1::WindowFunctionNode { reversed: true }.encode_to_vec());
                }
            }
        }
        Ok(node)
    }

    fn physical_expr_to_proto(
        &self,
        expr: &Arc<dyn PhysicalExpr>,
        codec: &dyn PhysicalExtensionCodec,
    ) -> Result<protobuf::PhysicalExprNode> {
        serialize_physical_expr_with_converter(expr, codec, self)
    }

    fn proto_to_physical_expr(
        &self,
        proto: &protobuf::PhysicalExprNode,
        input_schema: &Schema,
        ctx: &PhysicalPlanDecodeContext<'_>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        parse_physical_expr_with_converter(proto, input_schema, ctx, self)
    }
}

/// How an aggregate's count of empty grouping sets (`GROUPING SETS (())`)
/// travels: as its only group expression name, with no expression.
const EMPTY_GROUPING_SETS: &str = "volley.empty_grouping_sets=";

/// A decoded aggregate with its empty grouping sets put back (see
/// [`EMPTY_GROUPING_SETS`]).
fn with_empty_grouping_sets(
    plan: Arc<dyn ExecutionPlan>,
    names: &[String],
) -> Result<Arc<dyn ExecutionPlan>> {
    let [name] = names else {
        return Ok(plan);
    };
    let Some(count) = name.strip_prefix(EMPTY_GROUPING_SETS) else {
        return Ok(plan);
    };
    let count: usize = count
        .parse()
        .map_err(|e| decode_error("empty grouping sets", e))?;
    let Some(aggregate) = plan.downcast_ref::<AggregateExec>() else {
        return Err(decode_error("empty grouping sets", plan.name()));
    };
    let group_by = PhysicalGroupBy::new(Vec::new(), Vec::new(), vec![Vec::new(); count], true);
    let rebuilt = AggregateExec::try_new(
        *aggregate.mode(),
        group_by,
        aggregate.aggr_expr().to_vec(),
        aggregate.filter_expr().to_vec(),
        Arc::clone(aggregate.input()),
        aggregate.input_schema(),
    )?
    .with_limit_options(aggregate.limit_options());
    if rebuilt.schema() != plan.schema() {
        return Err(decode_error(
            "empty grouping sets",
            "the aggregate's schema changed",
        ));
    }
    Ok(Arc::new(rebuilt))
}

/// A decoded CSV sink whose writer writes dates and times as DataFusion
/// does. datafusion-proto 55 writes an unset date or time format as an
/// empty string and reads it back as the format "", with which every
/// timestamp was written as an empty field (`COPY ... STORED AS CSV`).
/// `unset` says which of the date, datetime, timestamp and time formats
/// were sent empty.
fn without_empty_csv_formats(
    plan: Arc<dyn ExecutionPlan>,
    unset: [bool; 4],
) -> Result<Arc<dyn ExecutionPlan>> {
    let Some(exec) = plan.downcast_ref::<DataSinkExec>() else {
        return Ok(plan);
    };
    let sink: &dyn std::any::Any = exec.sink();
    let Some(sink) = sink.downcast_ref::<CsvSink>() else {
        return Ok(plan);
    };
    let options = sink.writer_options();
    let decoded = &options.writer_options;
    let mut builder = WriterBuilder::new()
        .with_header(decoded.header())
        .with_delimiter(decoded.delimiter())
        .with_quote(decoded.quote())
        .with_escape(decoded.escape())
        .with_double_quote(decoded.double_quote())
        .with_null(decoded.null().to_string())
        .with_quote_style(decoded.quote_style())
        .with_ignore_leading_whitespace(decoded.ignore_leading_whitespace())
        .with_ignore_trailing_whitespace(decoded.ignore_trailing_whitespace());
    let formats = [
        decoded.date_format(),
        decoded.datetime_format(),
        decoded.timestamp_format(),
        decoded.time_format(),
    ];
    for (index, (format, unset)) in formats.into_iter().zip(unset).enumerate() {
        let Some(format) = format.filter(|_| !unset) else {
            continue;
        };
        let format = format.to_string();
        builder = match index {
            0 => builder.with_date_format(format),
            1 => builder.with_datetime_format(format),
            2 => builder.with_timestamp_format(format),
            _ => builder.with_time_format(format),
        };
    }
    let sink = CsvSink::new(
        sink.config().clone(),
        CsvWriterOptions {
            writer_options: builder,
            compression: options.compression,
            compression_level: options.compression_level,
        },
    );
    Ok(Arc::new(DataSinkExec::new(
        Arc::clone(exec.input()),
        Arc::new(sink),
        exec.sort_order().clone(),
    )))
}

/// Does this window aggregate have a `FILTER (WHERE ...)`? DataFusion
/// keeps the filter behind a trait it does not export; `Debug` derives
/// from the fields.
fn has_aggregate_filter(expr: &Arc<dyn WindowExpr>) -> bool {
    let any = expr.as_any();
    let fields = if let Some(plain) = any.downcast_ref::<PlainAggregateWindowExpr>() {
        format!("{plain:?}")
    } else if let Some(sliding) = any.downcast_ref::<SlidingAggregateWindowExpr>() {
        format!("{sliding:?}")
    } else {
        return false;
    };
    !fields.contains("filter: None")
}

/// The call of a user-defined window function (DataFusion's `lag` and
/// friends among them), if `expr` is one.
fn window_function_call(expr: &Arc<dyn WindowExpr>) -> Option<&WindowUDFExpr> {
    expr.as_any()
        .downcast_ref::<StandardWindowExpr>()
        .and_then(|standard| {
            standard
                .get_standard_func_expr()
                .as_any()
                .downcast_ref::<WindowUDFExpr>()
        })
}

/// Decodes a stage plan the scheduler encoded.
pub fn decode_plan(bytes: &[u8], ctx: &TaskContext) -> Result<Arc<dyn ExecutionPlan>> {
    datafusion_proto::bytes::physical_plan_from_bytes_with_proto_converter(
        bytes,
        ctx,
        &VolleyCodec::default(),
        &VolleyProtoConverter,
    )
}
