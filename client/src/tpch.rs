//! TPC-H data for trying Volley at once: the 8 tables generated in-process by
//! the `tpchgen` crates, written as Parquet (several files per large table,
//! so scans have partitions to spread), cached per scale factor.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow,
    RecordBatchIterator, RegionArrow, SupplierArrow,
};

/// The eight TPC-H tables.
pub const TPCH_TABLES: [&str; 8] = [
    "customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier",
];

/// Where `volley` caches generated data: `$VOLLEY_DATA_DIR`, else
/// `$XDG_CACHE_HOME/volley`, else `~/.cache/volley`, else the temp dir.
pub fn data_dir() -> PathBuf {
    std::env::var_os("VOLLEY_DATA_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("volley")))
        .or_else(|| {
            std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache").join("volley"))
        })
        .unwrap_or_else(|| std::env::temp_dir().join("volley"))
}

/// Where TPC-H data of `scale_factor` is cached, under [`data_dir`].
pub fn default_tpch_dir(scale_factor: f64) -> PathBuf {
    data_dir().join("tpch").join(format!("sf{scale_factor}"))
}

fn iterator(table: &str, sf: f64, part: i32, parts: i32) -> Box<dyn RecordBatchIterator> {
    match table {
        "customer" => Box::new(CustomerArrow::new(CustomerGenerator::new(sf, part, parts))),
        "lineitem" => Box::new(LineItemArrow::new(LineItemGenerator::new(sf, part, parts))),
        "nation" => Box::new(NationArrow::new(NationGenerator::new(sf, part, parts))),
        "orders" => Box::new(OrderArrow::new(OrderGenerator::new(sf, part, parts))),
        "part" => Box::new(PartArrow::new(PartGenerator::new(sf, part, parts))),
        "partsupp" => Box::new(PartSuppArrow::new(PartSuppGenerator::new(sf, part, parts))),
        "region" => Box::new(RegionArrow::new(RegionGenerator::new(sf, part, parts))),
        _ => Box::new(SupplierArrow::new(SupplierGenerator::new(sf, part, parts))),
    }
}

fn write_parquet(
    path: &Path,
    schema: SchemaRef,
    batches: impl Iterator<Item = RecordBatch>,
) -> Result<()> {
    let tmp = path.with_extension("parquet.tmp");
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut writer = ArrowWriter::try_new(File::create(&tmp)?, schema, Some(props))?;
    for batch in batches {
        writer.write(&batch)?;
    }
    writer.close()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Generates the TPC-H tables at `scale_factor` under `dir/<table>/`, each
/// large table in `parts` files; does nothing if they are already there.
pub fn generate_tpch(scale_factor: f64, dir: &Path, parts: usize) -> Result<()> {
    if !scale_factor.is_finite() || scale_factor <= 0.0 {
        return Err(DataFusionError::Plan(format!(
            "the TPC-H scale factor must be positive, not {scale_factor}"
        )));
    }
    let marker = dir.join("_SUCCESS");
    if marker.exists() {
        return Ok(());
    }
    let parts = parts.max(1) as i32;
    for table in TPCH_TABLES {
        let table_dir = dir.join(table);
        std::fs::create_dir_all(&table_dir)?;
        // Nation and region are tiny fixed tables: one file each.
        let table_parts = if matches!(table, "nation" | "region") {
            1
        } else {
            parts
        };
        for part in 1..=table_parts {
            let batches = iterator(table, scale_factor, part, table_parts);
            let schema = Arc::clone(batches.schema());
            write_parquet(
                &table_dir.join(format!("part-{part}.parquet")),
                schema,
                batches,
            )?;
        }
    }
    File::create(marker)?;
    Ok(())
}

/// Registers the tables under `dir` in `ctx`.
pub async fn register_tpch(ctx: &SessionContext, dir: &Path) -> Result<()> {
    for table in TPCH_TABLES {
        let path = dir.join(table);
        if !path.is_dir() {
            return Err(DataFusionError::Plan(format!(
                "no TPC-H table {table} under {} (generate it with `volley-bench gen`)",
                dir.display()
            )));
        }
        let path = path
            .to_str()
            .ok_or_else(|| DataFusionError::Plan(format!("non-UTF-8 path {}", path.display())))?;
        ctx.register_parquet(table, path, ParquetReadOptions::default())
            .await?;
    }
    Ok(())
}
