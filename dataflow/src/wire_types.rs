//! Columns that cannot cross Arrow IPC as they are, and how they travel.
//!
//! Arrow IPC cannot write a dictionary whose values are a dictionary
//! (`arrow_cast(.., 'Dictionary(Int32, Dictionary(UInt32, Utf8))')`), and
//! IPC is how batches cross Flight and how in-memory tables travel in a
//! plan. Such a column travels with its inner dictionary unpacked
//! ([`wire_type`]), and whoever reads it casts it back to the type it
//! expects ([`from_wire`]), so the types a reader sees are the producer's.

use std::sync::Arc;

use crate::message_slices::without_message_slices;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;

/// The type a column of `data_type` travels as.
pub fn wire_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Dictionary(key, value) => match value.as_ref() {
            DataType::Dictionary(_, inner) => {
                DataType::Dictionary(key.clone(), Box::new(wire_type(inner)))
            }
            _ => data_type.clone(),
        },
        _ => data_type.clone(),
    }
}

/// `schema` with each field of its [`wire_type`] (the same `Arc` when
/// nothing changes).
pub fn wire_schema(schema: &SchemaRef) -> SchemaRef {
    if schema
        .fields()
        .iter()
        .all(|f| wire_type(f.data_type()) == *f.data_type())
    {
        return Arc::clone(schema);
    }
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_data_type(wire_type(f.data_type())))
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` as it travels, in `wire` (from [`wire_schema`]).
pub fn to_wire(batch: RecordBatch, wire: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    if batch.schema().fields() == wire.fields() {
        return Ok(batch);
    }
    retype(&batch, wire)
}

/// A batch that travelled, as its reader expects it, holding no more of
/// the message it was decoded from than it uses
/// ([`without_message_slices`]).
pub fn from_wire(batch: RecordBatch, expected: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let batch = without_message_slices(batch)?;
    let differs = batch
        .schema()
        .fields()
        .iter()
        .zip(expected.fields())
        .any(|(got, want)| got.data_type() != want.data_type());
    if !differs {
        return Ok(batch);
    }
    retype(&batch, expected)
}

fn retype(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(Arc::clone(column))
            } else {
                cast(column, field.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(Arc::clone(schema), columns)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{ArrayRef, StringArray};

    use super::*;

    #[test]
    fn a_dictionary_of_dictionaries_travels_unpacked_and_comes_back_whole() -> Result<(), ArrowError>
    {
        let nested = DataType::Dictionary(
            Box::new(DataType::Int32),
            Box::new(DataType::Dictionary(
                Box::new(DataType::UInt32),
                Box::new(DataType::Utf8),
            )),
        );
        let strings: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", "a"]));
        // As arrow_cast(arrow_cast(s, 'Dictionary(UInt32, Utf8)'), ...) does.
        let inner = cast(
            &strings,
            &DataType::Dictionary(Box::new(DataType::UInt32), Box::new(DataType::Utf8)),
        )?;
        let column = cast(&inner, &nested)?;
        let batch = RecordBatch::try_from_iter([("c", column)])?;
        let wire = wire_schema(&batch.schema());
        assert_eq!(
            wire.field(0).data_type(),
            &DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
        );
        let sent = to_wire(batch.clone(), &wire)?;
        let back = from_wire(sent, &batch.schema())?;
        assert_eq!(back, batch);
        Ok(())
    }
}
