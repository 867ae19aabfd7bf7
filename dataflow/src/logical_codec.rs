//! A client's logical plan on the wire to the scheduler: datafusion-proto,
//! extended by [`VolleyLogicalCodec`] with what it cannot carry alone.
//! In-memory tables (`MemTable`: `read_batch`, `CREATE TABLE AS`, `VALUES`
//! tables) travel with their batches. Calls of user-defined functions travel
//! with the types the client resolved for them, so the scheduler can plan
//! them with a stand-in ([`PlannedUdf`], [`PlannedUdaf`], [`PlannedUdwf`]);
//! the executors run the real code.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::common::config::CsvOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{ScalarValue, TableReference, not_impl_err, plan_err};
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::datasource::file_format::csv::CsvFormatFactory;
use datafusion::datasource::file_format::json::JsonFormatFactory;
use datafusion::datasource::file_format::parquet::ParquetFormatFactory;
use datafusion::datasource::listing::{ListingTable, ListingTableConfig};
use datafusion::datasource::{MemTable, provider_as_source, source_as_provider};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{
    AggregateUDF, Cast, Expr, Extension, FetchType, LogicalPlan, ScalarUDF, Volatility, WindowUDF,
    dml::CopyTo,
};
use datafusion_proto::bytes::{
    logical_plan_from_bytes_with_extension_codec, logical_plan_to_bytes_with_extension_codec,
};
use datafusion_proto::logical_plan::{DefaultLogicalExtensionCodec, LogicalExtensionCodec};
use prost::Message;
use volley_proto::v1;

use crate::codec::{decode_schema, encode_schema};
use crate::error::volley_internal;
use crate::function_calls::{
    FunctionCalls, is_builtin_aggregate, is_builtin_scalar, is_builtin_window,
};
use crate::functions::{PlannedCall, PlannedUdf};
use crate::planned_aggregate::PlannedUdaf;
use crate::planned_window::PlannedUdwf;
use crate::wire_types::{from_wire, to_wire, wire_schema};

/// Encodes a client's logical plan for the scheduler.
pub fn encode_logical_plan(plan: &LogicalPlan) -> Result<Vec<u8>> {
    let codec = VolleyLogicalCodec {
        calls: FunctionCalls::of(plan)?,
        copy_options: match plan {
            LogicalPlan::Copy(copy) => copy.options.clone(),
            _ => HashMap::new(),
        },
        ..VolleyLogicalCodec::default()
    };
    let carried = with_float16_literals_as_casts(plan.clone())?;
    let datafusion_plan = logical_plan_to_bytes_with_extension_codec(&carried, &codec)
        .map_err(cannot_carry)?
        .to_vec();
    Ok(v1::ClientPlan {
        datafusion_plan,
        table_globs: table_globs(plan)?,
    }
    .encode_to_vec())
}

/// datafusion-proto 55 writes a Float16 literal as a Float32 one, and the
/// scheduler then planned Float16 columns against Float32 values ("Invalid
/// arithmetic operation: Float16 + Float32"). Each becomes a cast of the
/// Float32 value to Float16, which travels whole and gives the same value.
fn with_float16_literals_as_casts(plan: LogicalPlan) -> Result<LogicalPlan> {
    Ok(plan
        .transform_up_with_subqueries(|node| {
            node.map_expressions(|expr| {
                expr.transform_up(|e| match e {
                    Expr::Literal(ScalarValue::Float16(value), _) => {
                        Ok(Transformed::yes(Expr::Cast(Cast::new(
                            Box::new(Expr::Literal(
                                ScalarValue::Float32(value.map(f32::from)),
                                None,
                            )),
                            DataType::Float16,
                        ))))
                    }
                    other => Ok(Transformed::no(other)),
                })
            })
        })?
        .data)
}

/// A plan datafusion-proto cannot encode is a limit of Volley's wire, not
/// a bug in DataFusion, as its `Internal` error would tell the user.
fn cannot_carry(error: DataFusionError) -> DataFusionError {
    match error {
        DataFusionError::Internal(message) => DataFusionError::NotImplemented(format!(
            "Volley cannot send this plan to the cluster yet: {message}"
        )),
        other => other,
    }
}

/// The globs of every listing table that has some (see
/// [`v1::ClientPlan`]), by table name.
fn table_globs(plan: &LogicalPlan) -> Result<HashMap<String, v1::TableGlobs>> {
    let mut found = HashMap::new();
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && let Ok(provider) = source_as_provider(&scan.source)
            && let Some(table) = provider.downcast_ref::<ListingTable>()
            && table.table_paths().iter().any(|p| p.get_glob().is_some())
        {
            let globs = table
                .table_paths()
                .iter()
                .map(|p| {
                    p.get_glob()
                        .as_ref()
                        .map(|g| g.as_str().to_string())
                        .unwrap_or_default()
                })
                .collect();
            found.insert(scan.table_name.to_string(), v1::TableGlobs { globs });
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(found)
}

/// The plan with the globs of its listing tables put back.
fn with_table_globs(
    plan: LogicalPlan,
    globs: &HashMap<String, v1::TableGlobs>,
) -> Result<LogicalPlan> {
    if globs.is_empty() {
        return Ok(plan);
    }
    Ok(plan
        .transform_up_with_subqueries(|node| {
            let LogicalPlan::TableScan(mut scan) = node else {
                return Ok(Transformed::no(node));
            };
            let Some(table_globs) = globs.get(&scan.table_name.to_string()) else {
                return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
            };
            let provider = source_as_provider(&scan.source)?;
            let Some(table) = provider.downcast_ref::<ListingTable>() else {
                return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
            };
            if table_globs.globs.len() != table.table_paths().len() {
                return Err(codec_error("table globs", "one per path expected"));
            }
            let paths = table
                .table_paths()
                .iter()
                .zip(&table_globs.globs)
                .map(|(path, glob)| {
                    if glob.is_empty() {
                        Ok(path.clone())
                    } else {
                        path.clone().with_glob(glob)
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            // The file schema: the table's, less its partition columns.
            let options = table.options().clone();
            let table_schema = table.schema();
            let fields: Vec<_> = table_schema
                .fields()
                .iter()
                .filter(|f| {
                    !options
                        .table_partition_cols
                        .iter()
                        .any(|(name, _)| name == f.name())
                })
                .cloned()
                .collect();
            let config = ListingTableConfig::new_with_multi_paths(paths)
                .with_listing_options(options)
                .with_schema(Arc::new(Schema::new_with_metadata(
                    fields,
                    table_schema.metadata().clone(),
                )));
            scan.source = provider_as_source(Arc::new(ListingTable::try_new(config)?));
            Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
        })?
        .data)
}

/// Decodes a client's logical plan on the scheduler.
pub fn decode_logical_plan(bytes: &[u8], ctx: &TaskContext) -> Result<LogicalPlan> {
    let client_plan = v1::ClientPlan::decode(bytes).map_err(|e| codec_error("client plan", e))?;
    let codec = VolleyLogicalCodec::default();
    let plan =
        logical_plan_from_bytes_with_extension_codec(&client_plan.datafusion_plan, ctx, &codec)?;
    let plan = with_table_globs(plan, &client_plan.table_globs)?;
    let decoded_options = codec
        .decoded_copy_options
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let plan = match (plan, decoded_options) {
        (LogicalPlan::Copy(copy), Some(options)) if !options.is_empty() => {
            LogicalPlan::Copy(CopyTo::new(
                copy.input,
                copy.output_url,
                copy.partition_by,
                copy.file_type,
                options,
            ))
        }
        (plan, _) => plan,
    };
    without_encoded_unlimited_fetch(plan)
}

/// datafusion-proto 55 writes a `LIMIT` without a fetch (`OFFSET 2`
/// alone) as a fetch of `i64::MAX` and reads that back as a fetch; the
/// physical plan then overflowed `skip + fetch` and returned no rows. A
/// fetch of `i64::MAX` rows means no limit in any case.
fn without_encoded_unlimited_fetch(plan: LogicalPlan) -> Result<LogicalPlan> {
    Ok(plan
        .transform_up_with_subqueries(|node| match node {
            LogicalPlan::Limit(mut limit)
                if matches!(limit.get_fetch_type()?, FetchType::Literal(Some(n)) if n == i64::MAX as usize) =>
            {
                limit.fetch = None;
                Ok(Transformed::yes(LogicalPlan::Limit(limit)))
            }
            other => Ok(Transformed::no(other)),
        })?
        .data)
}

/// Carries in-memory tables, user-function calls and what datafusion-proto
/// loses of file formats in logical plans.
#[derive(Debug, Default)]
pub struct VolleyLogicalCodec {
    /// When encoding: each user function's calls in the plan.
    calls: FunctionCalls,
    /// When encoding a COPY: its `OPTIONS`, sent with its format.
    copy_options: HashMap<String, String>,
    /// When decoding: the `OPTIONS` that came with a COPY's format.
    decoded_copy_options: Mutex<Option<HashMap<String, String>>>,
}

fn codec_error(what: &str, e: impl std::fmt::Display) -> DataFusionError {
    volley_internal(format!("cannot decode {what}: {e}"))
}

impl LogicalExtensionCodec for VolleyLogicalCodec {
    fn try_decode(
        &self,
        _buf: &[u8],
        _inputs: &[LogicalPlan],
        _ctx: &TaskContext,
    ) -> Result<Extension> {
        not_impl_err!("Volley cannot run plans with extension nodes")
    }

    fn try_encode(&self, node: &Extension, _buf: &mut Vec<u8>) -> Result<()> {
        not_impl_err!(
            "Volley cannot send the plan node {} to the cluster",
            node.node.name()
        )
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        _ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        let node = v1::MemoryTableNode::decode(buf).map_err(|e| codec_error("memory table", e))?;
        let mut partitions = Vec::with_capacity(node.partitions.len());
        for bytes in node.partitions {
            let reader = StreamReader::try_new(Cursor::new(bytes), None)?;
            let batches = reader
                .map(|batch| batch.and_then(|b| from_wire(b, &schema)))
                .collect::<std::result::Result<Vec<RecordBatch>, _>>()?;
            partitions.push(batches);
        }
        if partitions.is_empty() {
            partitions.push(Vec::new());
        }
        let table = MemTable::try_new(schema, partitions)
            .map_err(|e| e.context(format!("decoding in-memory table {table_ref}")))?;
        Ok(Arc::new(table))
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let Some(table) = node.downcast_ref::<MemTable>() else {
            return not_impl_err!(
                "Volley cannot send the table `{table_ref}` to the cluster: only files \
                 (Parquet, CSV, JSON, Avro, Arrow) and in-memory tables can be read there"
            );
        };
        let schema = table.schema();
        let wire = wire_schema(&schema);
        let mut partitions = Vec::with_capacity(table.batches.len());
        for partition in &table.batches {
            let Ok(batches) = partition.try_read() else {
                return plan_err!("the in-memory table `{table_ref}` is being written to");
            };
            let mut writer = StreamWriter::try_new(Vec::new(), &wire)?;
            for batch in batches.iter() {
                writer.write(&to_wire(batch.clone(), &wire)?)?;
            }
            writer.finish()?;
            partitions.push(writer.into_inner()?);
        }
        v1::MemoryTableNode { partitions }
            .encode(buf)
            .map_err(|e| volley_internal(format!("cannot encode memory table: {e}")))
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn FileFormatFactory>> {
        let node = v1::FileFormatNode::decode(buf).map_err(|e| codec_error("file format", e))?;
        *self
            .decoded_copy_options
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(node.copy_options);
        match node.kind {
            // No options: the session's, as the client would have used.
            Some(v1::file_format_node::Kind::CsvOptions(bytes)) if bytes.is_empty() => {
                Ok(Arc::new(CsvFormatFactory::new()))
            }
            Some(v1::file_format_node::Kind::CsvOptions(bytes)) => {
                let proto = datafusion_proto_common::CsvOptions::decode(bytes.as_slice())
                    .map_err(|e| codec_error("CSV options", e))?;
                let options = CsvOptions::try_from(&proto)?;
                Ok(Arc::new(CsvFormatFactory::new_with_options(options)))
            }
            Some(v1::file_format_node::Kind::Datafusion(bytes)) => {
                DefaultLogicalExtensionCodec {}.try_decode_file_format(&bytes, ctx)
            }
            Some(v1::file_format_node::Kind::SessionFormat(name)) => match name.as_str() {
                "parquet" => Ok(Arc::new(ParquetFormatFactory::new())),
                "json" => Ok(Arc::new(JsonFormatFactory::new())),
                other => Err(codec_error("file format", other)),
            },
            None => Err(codec_error("file format", "empty")),
        }
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> Result<()> {
        let kind = match node.downcast_ref::<CsvFormatFactory>() {
            Some(csv) => v1::file_format_node::Kind::CsvOptions(match &csv.options {
                Some(options) => {
                    datafusion_proto_common::CsvOptions::try_from(options)?.encode_to_vec()
                }
                None => Vec::new(),
            }),
            None if node
                .downcast_ref::<ParquetFormatFactory>()
                .is_some_and(|f| f.options.is_none()) =>
            {
                v1::file_format_node::Kind::SessionFormat("parquet".into())
            }
            None if node
                .downcast_ref::<JsonFormatFactory>()
                .is_some_and(|f| f.options.is_none()) =>
            {
                v1::file_format_node::Kind::SessionFormat("json".into())
            }
            None => {
                let mut bytes = Vec::new();
                DefaultLogicalExtensionCodec {}.try_encode_file_format(&mut bytes, node)?;
                v1::file_format_node::Kind::Datafusion(bytes)
            }
        };
        v1::FileFormatNode {
            kind: Some(kind),
            copy_options: self.copy_options.clone(),
        }
        .encode(buf)
        .map_err(|e| volley_internal(format!("cannot encode file format: {e}")))
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        if buf.is_empty() {
            return plan_err!("unknown function `{name}`");
        }
        let node = v1::UserFunctionNode::decode(buf).map_err(|e| codec_error(name, e))?;
        let mut calls = Vec::with_capacity(node.calls.len());
        for bytes in &node.calls {
            let schema = decode_schema(bytes)?;
            let Some((result, args)) = schema.fields().split_last() else {
                return Err(codec_error(name, "a call without a result"));
            };
            calls.push(PlannedCall {
                args: args.iter().map(|f| f.data_type().clone()).collect(),
                result: Arc::clone(result),
            });
        }
        let volatility = match node.volatility {
            0 => Volatility::Immutable,
            1 => Volatility::Stable,
            _ => Volatility::Volatile,
        };
        Ok(Arc::new(ScalarUDF::new_from_impl(PlannedUdf::new(
            name, volatility, calls,
        ))))
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        if is_builtin_scalar(node.name()) {
            return Ok(());
        }
        let mut calls = Vec::new();
        for call in self.calls.scalar.get(node.name()).into_iter().flatten() {
            let mut fields: Vec<Field> = call
                .args
                .iter()
                .enumerate()
                .map(|(i, t)| Field::new(format!("arg{i}"), t.clone(), true))
                .collect();
            fields.push(call.result.as_ref().clone());
            calls.push(encode_schema(&Schema::new(fields))?);
        }
        let volatility = match node.signature().volatility {
            Volatility::Immutable => 0,
            Volatility::Stable => 1,
            Volatility::Volatile => 2,
        };
        v1::UserFunctionNode { calls, volatility }
            .encode(buf)
            .map_err(|e| volley_internal(format!("cannot encode function: {e}")))
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        if buf.is_empty() {
            return plan_err!("unknown aggregate function `{name}`");
        }
        Ok(Arc::new(PlannedUdaf::decode(name, buf)?))
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        if is_builtin_aggregate(node.name()) {
            return Ok(());
        }
        let calls = self.calls.aggregate.get(node.name());
        buf.extend(PlannedUdaf::encode(node, calls.map_or(&[], Vec::as_slice))?);
        Ok(())
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
        if buf.is_empty() {
            return plan_err!("unknown window function `{name}`");
        }
        Ok(Arc::new(PlannedUdwf::decode(name, buf)?))
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
        if is_builtin_window(node.name()) {
            return Ok(());
        }
        let calls = self.calls.window.get(node.name());
        buf.extend(PlannedUdwf::encode(calls.map_or(&[], Vec::as_slice))?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use datafusion::datasource::file_format::DefaultFileType;
    use datafusion::prelude::SessionContext;

    use super::*;

    #[tokio::test]
    async fn an_offset_without_a_limit_stays_without_a_limit_on_the_wire() -> Result<()> {
        // SELECT * FROM (VALUES (1), (2), (3), (4)) OFFSET 2
        // datafusion-proto writes "no fetch" as i64::MAX rows; the
        // scheduler's plan then returned no row at all.
        let ctx = SessionContext::new();
        let plan = ctx
            .sql("SELECT * FROM (VALUES (1), (2), (3), (4)) OFFSET 2")
            .await?
            .into_optimized_plan()?;
        let decoded = decode_logical_plan(&encode_logical_plan(&plan)?, &ctx.task_ctx())?;
        let mut fetches = Vec::new();
        decoded.apply(|node| {
            if let LogicalPlan::Limit(limit) = node {
                fetches.push(limit.get_fetch_type()?);
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        assert!(
            matches!(fetches.as_slice(), [FetchType::Literal(None)]),
            "{decoded}"
        );
        let rows = ctx.execute_logical_plan(decoded).await?.collect().await?;
        assert_eq!(rows.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
        Ok(())
    }

    #[tokio::test]
    async fn a_copy_keeps_its_options_and_its_format_keeps_the_session_defaults() -> Result<()> {
        // COPY (VALUES (1)) TO '/tmp/x.csv' STORED AS CSV
        //   OPTIONS ('format.quote_style' 'Always', 'format.has_header' 'false')
        // datafusion-proto 55 drops a COPY's OPTIONS and gives the format
        // options of its own, to which the OPTIONS no longer apply.
        let ctx = SessionContext::new();
        let plan = ctx
            .state()
            .create_logical_plan(
                "COPY (VALUES (1)) TO '/tmp/volley-never-written.csv' STORED AS CSV \
                 OPTIONS ('format.quote_style' 'Always', 'format.has_header' 'false')",
            )
            .await?;
        let decoded = decode_logical_plan(&encode_logical_plan(&plan)?, &ctx.task_ctx())?;
        let LogicalPlan::Copy(copy) = decoded else {
            panic!("not a COPY: {decoded}");
        };
        assert_eq!(
            copy.options.get("format.quote_style").map(String::as_str),
            Some("Always")
        );
        let factory = copy
            .file_type
            .as_any()
            .downcast_ref::<DefaultFileType>()
            .expect("a file format")
            .as_format_factory();
        let csv = factory.downcast_ref::<CsvFormatFactory>().expect("CSV");
        assert!(csv.options.is_none(), "{:?}", csv.options);
        Ok(())
    }

    #[tokio::test]
    async fn a_float16_literal_stays_float16_on_the_wire() -> Result<()> {
        // SELECT arrow_cast(1.5, 'Float16') + arrow_cast(1, 'Float16')
        // datafusion-proto 55 writes Float16 literals as Float32 ones.
        let ctx = SessionContext::new();
        let plan = ctx
            .sql("SELECT arrow_cast(1.5, 'Float16') + arrow_cast(1, 'Float16') AS f")
            .await?
            .into_optimized_plan()?;
        let decoded = decode_logical_plan(&encode_logical_plan(&plan)?, &ctx.task_ctx())?;
        let batches = ctx.execute_logical_plan(decoded).await?.collect().await?;
        assert_eq!(batches[0].schema().field(0).data_type(), &DataType::Float16);
        assert_eq!(
            datafusion::arrow::util::pretty::pretty_format_batches(&batches)?.to_string(),
            "+-----+\n| f   |\n+-----+\n| 2.5 |\n+-----+"
        );
        Ok(())
    }
}
