//! Writing query results in the formats `volley` offers.

use std::io::Write;

use datafusion::arrow::array::Array;
use datafusion::arrow::csv::WriterBuilder;
use datafusion::arrow::json::{ArrayWriter, LineDelimitedWriter};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::error::Result;

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// An aligned table for people.
    Table,
    /// Comma-separated values with a header line.
    Csv,
    /// Tab-separated values with a header line.
    Tsv,
    /// One JSON array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// A Markdown table.
    Markdown,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        <Format as clap::ValueEnum>::from_str(s, true).map_err(|_| {
            format!("unknown format `{s}`: use table, csv, tsv, json, ndjson or markdown")
        })
    }
}

/// Keeps the first `max_rows` rows (0: all); returns them and how many were left out.
fn truncate(batches: &[RecordBatch], max_rows: usize) -> (Vec<RecordBatch>, usize) {
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    if max_rows == 0 || total <= max_rows {
        return (batches.to_vec(), 0);
    }
    let mut kept = Vec::new();
    let mut remaining = max_rows;
    for batch in batches {
        if remaining == 0 {
            break;
        }
        let take = remaining.min(batch.num_rows());
        kept.push(batch.slice(0, take));
        remaining -= take;
    }
    (kept, total - max_rows)
}

fn cell_text(column: &dyn Array, row: usize) -> Result<String> {
    let options = FormatOptions::default().with_null("NULL");
    Ok(ArrayFormatter::try_new(column, &options)?
        .value(row)
        .to_string())
}

fn write_markdown(out: &mut dyn Write, batches: &[RecordBatch]) -> Result<()> {
    let Some(first) = batches.first() else {
        return Ok(());
    };
    let names: Vec<String> = first
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    writeln!(out, "| {} |", names.join(" | "))?;
    writeln!(
        out,
        "|{}",
        names.iter().map(|_| " --- |").collect::<String>()
    )?;
    for batch in batches {
        for row in 0..batch.num_rows() {
            let cells = batch
                .columns()
                .iter()
                .map(|c| cell_text(c.as_ref(), row).map(|t| t.replace('|', "\\|")))
                .collect::<Result<Vec<_>>>()?;
            writeln!(out, "| {} |", cells.join(" | "))?;
        }
    }
    Ok(())
}

/// Whether `batches` answer an EXPLAIN: the columns `plan_type, plan`.
fn is_explain(batches: &[RecordBatch]) -> bool {
    batches.first().is_some_and(|b| {
        let names: Vec<&str> = b
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        names == ["plan_type", "plan"]
    })
}

/// An EXPLAIN answer as a person reads it: each plan under its name, its
/// lines indented as they are, never squeezed into a table cell.
fn write_explain(out: &mut dyn Write, batches: &[RecordBatch]) -> Result<()> {
    for batch in batches {
        for row in 0..batch.num_rows() {
            let plan_type = cell_text(batch.column(0).as_ref(), row)?;
            let plan = cell_text(batch.column(1).as_ref(), row)?;
            writeln!(out, "{plan_type}:")?;
            for line in plan.lines() {
                writeln!(out, "  {line}")?;
            }
        }
    }
    Ok(())
}

/// When a table is shown one row per block, a column per line (`\x`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expanded {
    /// Always rows across.
    Off,
    /// Always vertical.
    On,
    /// Vertical when a row does not fit the terminal.
    Auto,
}

/// How a table fits the screen: its layout and the terminal's width.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    pub(crate) expanded: Expanded,
    /// Columns of the terminal (`None`: not a terminal, never cut).
    pub(crate) width: Option<usize>,
}

impl Layout {
    /// Rows across, nothing cut: for files and pipes.
    pub(crate) const PLAIN: Layout = Layout {
        expanded: Expanded::Off,
        width: None,
    };
}

/// The terminal's width, if stdout is one.
pub(crate) fn terminal_width() -> Option<usize> {
    terminal_size::terminal_size_of(std::io::stdout()).map(|(w, _)| usize::from(w.0))
}

/// `text` cut to `width` characters, ending with `…` when cut.
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Each row as a block of `column | value` lines, as psql's `\x` and
/// DuckDB's `.mode line`: readable however many columns there are. Values
/// longer than the terminal are cut.
fn write_vertical(
    out: &mut dyn Write,
    batches: &[RecordBatch],
    width: Option<usize>,
) -> Result<()> {
    let Some(first) = batches.first() else {
        return Ok(());
    };
    let schema = first.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let name_width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let value_width = width.map(|w| w.saturating_sub(name_width + 3).max(8));
    let mut number = 0;
    for batch in batches {
        for row in 0..batch.num_rows() {
            number += 1;
            let title = format!("-[ RECORD {number} ]");
            let rule = width
                .unwrap_or(40)
                .min(80)
                .saturating_sub(title.chars().count());
            writeln!(out, "{title}{}", "-".repeat(rule))?;
            for (name, column) in names.iter().zip(batch.columns()) {
                let text = cell_text(column.as_ref(), row)?.replace('\n', " ");
                let text = match value_width {
                    Some(w) => fit(&text, w),
                    None => text,
                };
                writeln!(out, "{name:<name_width$} | {text}")?;
            }
        }
    }
    Ok(())
}

/// Writes `batches` in `format`; a table shows at most `max_rows` rows (0:
/// all) and says how many it left out, laid out as `layout` says.
pub(crate) fn write_batches(
    out: &mut dyn Write,
    format: Format,
    batches: &[RecordBatch],
    max_rows: usize,
    layout: Layout,
) -> Result<()> {
    match format {
        Format::Table if is_explain(batches) => write_explain(out, batches)?,
        Format::Table => {
            let (shown, omitted) = truncate(batches, max_rows);
            let table = if shown.iter().any(|b| b.num_rows() > 0) {
                Some(pretty_format_batches(&shown)?.to_string())
            } else {
                None
            };
            let too_wide = |table: &str| {
                layout.width.is_some_and(|w| {
                    table.lines().map(|l| l.chars().count()).max().unwrap_or(0) > w
                })
            };
            if let Some(table) = table {
                let vertical = match layout.expanded {
                    Expanded::On => true,
                    Expanded::Auto => too_wide(&table),
                    Expanded::Off => false,
                };
                if vertical {
                    write_vertical(out, &shown, layout.width)?;
                } else {
                    writeln!(out, "{table}")?;
                }
            } else if let Some(batch) = batches.first() {
                // Show the columns even when there are no rows.
                let empty = [batch.slice(0, 0)];
                writeln!(out, "{}", pretty_format_batches(&empty)?)?;
            }
            if omitted > 0 {
                writeln!(
                    out,
                    "({omitted} more rows not shown; use --max-rows 0 or \\format csv for all)"
                )?;
            }
        }
        Format::Csv | Format::Tsv => {
            let delimiter = if format == Format::Csv { b',' } else { b'\t' };
            let mut writer = WriterBuilder::new()
                .with_header(true)
                .with_delimiter(delimiter)
                .build(&mut *out);
            for batch in batches {
                writer.write(batch)?;
            }
        }
        Format::Json => {
            let mut writer = ArrayWriter::new(&mut *out);
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
            if batches.iter().all(|b| b.num_rows() == 0) {
                write!(out, "[]")?;
            }
            writeln!(out)?;
        }
        Format::Ndjson => {
            let mut writer = LineDelimitedWriter::new(&mut *out);
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
        Format::Markdown => write_markdown(out, batches)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn wide_rows() -> Vec<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("l_orderkey", DataType::Int64, false),
            Field::new("l_comment", DataType::Utf8, false),
        ]));
        let long = "a comment that goes on and on well past any terminal's edge ".repeat(3);
        vec![
            RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(Int64Array::from(vec![1, 2])),
                    Arc::new(StringArray::from(vec![long.as_str(), "short"])),
                ],
            )
            .unwrap(),
        ]
    }

    #[test]
    fn a_row_wider_than_the_terminal_is_shown_vertically_and_cut_to_fit() {
        let layout = Layout {
            expanded: Expanded::Auto,
            width: Some(80),
        };
        let mut out = Vec::new();
        write_batches(&mut out, Format::Table, &wide_rows(), 0, layout).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("-[ RECORD 1 ]"), "{text}");
        assert!(text.contains("l_orderkey | 1"), "{text}");
        assert!(text.contains("-[ RECORD 2 ]"), "{text}");
        assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
        assert!(text.contains('…'), "{text}");
    }

    #[test]
    fn a_table_that_fits_stays_across_and_a_pipe_is_never_cut() {
        let mut out = Vec::new();
        write_batches(&mut out, Format::Table, &wide_rows(), 0, Layout::PLAIN).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("+-"), "{text}");
        assert!(!text.contains('…'), "{text}");
        let mut out = Vec::new();
        let on = Layout {
            expanded: Expanded::On,
            width: None,
        };
        write_batches(&mut out, Format::Table, &wide_rows(), 0, on).unwrap();
        assert!(String::from_utf8(out).unwrap().starts_with("-[ RECORD 1 ]"));
    }
}
