//! TPC-H tables in dbgen's text format (`.tbl`: `|`-separated fields, each
//! line ending in `|`), as DataFusion's sqllogictest TPC-H files read them.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};

fn write_rows<T: std::fmt::Display>(
    dir: &Path,
    table: &str,
    rows: impl Iterator<Item = T>,
) -> std::io::Result<()> {
    let mut out = BufWriter::new(File::create(dir.join(format!("{table}.tbl")))?);
    for row in rows {
        writeln!(out, "{row}")?;
    }
    out.flush()
}

/// Writes the eight tables at `scale_factor` as `DIR/<table>.tbl`.
pub fn write_tpch_tbl(scale_factor: f64, dir: &Path) -> std::io::Result<()> {
    write_rows(
        dir,
        "nation",
        NationGenerator::new(scale_factor, 1, 1).iter(),
    )?;
    write_rows(
        dir,
        "region",
        RegionGenerator::new(scale_factor, 1, 1).iter(),
    )?;
    write_rows(dir, "part", PartGenerator::new(scale_factor, 1, 1).iter())?;
    write_rows(
        dir,
        "supplier",
        SupplierGenerator::new(scale_factor, 1, 1).iter(),
    )?;
    write_rows(
        dir,
        "partsupp",
        PartSuppGenerator::new(scale_factor, 1, 1).iter(),
    )?;
    write_rows(
        dir,
        "customer",
        CustomerGenerator::new(scale_factor, 1, 1).iter(),
    )?;
    write_rows(
        dir,
        "orders",
        OrderGenerator::new(scale_factor, 1, 1).iter(),
    )?;
    write_rows(
        dir,
        "lineitem",
        LineItemGenerator::new(scale_factor, 1, 1).iter(),
    )
}
