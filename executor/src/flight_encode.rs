//! Shuffle and result batches as Arrow Flight messages: an IPC schema
//! message, then each batch (with its dictionaries) as IPC messages.
//!
//! arrow-flight's own `FlightDataEncoder` rewrites the schema it sends
//! (`prepare_schema_for_flight`), and in arrow-flight 59 that turns a
//! `LargeList` field into a `List` one while the data keeps 64-bit offsets,
//! so readers decode garbage or fail. This encoder sends the schema as it
//! is: what a reader decodes has exactly the producer's types.

use arrow_flight::FlightData;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ipc::writer::{
    DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions,
};
use datafusion::arrow::record_batch::RecordBatch;
use futures::{Stream, StreamExt};
use volley_dataflow::{to_wire, wire_schema};

/// Batches holding more data than this are sent, and spilled, in row
/// slices of about this size. Far below gRPC's message limit, and small
/// enough that a reader's memory stays bounded by its inputs: a
/// sort-preserving merge holds about two messages per input, and with
/// whole 8192-row `lineitem` batches (1.8 MB) a 4-way merge needed more than
/// a 16 MiB budget. Large enough that per-message cost is noise.
pub(crate) const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Encodes `batches` (of `schema`) as Flight messages.
pub(crate) fn encode_flight<E>(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, E>> + Send + 'static,
    options: IpcWriteOptions,
) -> impl Stream<Item = Result<FlightData, E>> + Send + 'static
where
    E: From<ArrowError> + Send + 'static,
{
    let generator = IpcDataGenerator::default();
    let wire = wire_schema(&schema);
    // Encoding the schema assigns the dictionary ids the batches then use.
    let mut dictionaries = DictionaryTracker::new(false);
    let schema_message: FlightData = generator
        .schema_to_bytes_with_dictionary_tracker(&wire, &mut dictionaries, &options)
        .into();
    let mut encoder = Encoder {
        options,
        generator,
        dictionaries,
        context: IpcWriteContext::default(),
    };
    let messages = batches.flat_map(move |batch| {
        let encoded = batch.and_then(|batch| {
            to_wire(batch, &wire)
                .and_then(|batch| encoder.encode(&batch))
                .map_err(E::from)
        });
        futures::stream::iter(match encoded {
            Ok(messages) => messages.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => vec![Err(e)],
        })
    });
    futures::stream::once(async move { Ok(schema_message) }).chain(messages)
}

struct Encoder {
    options: IpcWriteOptions,
    generator: IpcDataGenerator,
    dictionaries: DictionaryTracker,
    context: IpcWriteContext,
}

impl Encoder {
    fn encode(&mut self, batch: &RecordBatch) -> Result<Vec<FlightData>, ArrowError> {
        let mut messages = Vec::new();
        for piece in message_pieces(batch) {
            let (dictionaries, data) = self.generator.encode(
                &piece,
                &mut self.dictionaries,
                &self.options,
                &mut self.context,
            )?;
            messages.extend(dictionaries.into_iter().map(FlightData::from));
            messages.push(data.into());
        }
        Ok(messages)
    }
}

/// `batch` in row slices of at most about [`MAX_MESSAGE_BYTES`] of data.
/// Measured by the data the slices hold (what IPC writes), not by the
/// capacity of their buffers: a batch decoded from one IPC message has all
/// its columns in that message's allocation, and counting the allocation
/// per column made such batches look 16 times their size.
pub(crate) fn message_pieces(batch: &RecordBatch) -> Vec<RecordBatch> {
    let bytes = data_bytes(batch);
    let rows = batch.num_rows();
    if bytes <= MAX_MESSAGE_BYTES || rows <= 1 {
        return vec![batch.clone()];
    }
    let pieces = bytes.div_ceil(MAX_MESSAGE_BYTES).min(rows);
    let per_piece = rows.div_ceil(pieces);
    (0..rows)
        .step_by(per_piece)
        .map(|start| batch.slice(start, per_piece.min(rows - start)))
        .collect()
}

/// The bytes of data `batch` holds (not the capacity of its buffers).
pub(crate) fn data_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_flight::decode::FlightRecordBatchStream;
    use arrow_flight::error::FlightError;
    use datafusion::arrow::array::{ArrayRef, DictionaryArray, ListArray};
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::{DataType, Field, Int32Type, Int64Type};
    use datafusion::arrow::ipc::CompressionType;
    use futures::TryStreamExt;

    use super::*;

    async fn round_trip(batch: RecordBatch) -> Vec<RecordBatch> {
        let options = IpcWriteOptions::default()
            .try_with_compression(Some(CompressionType::LZ4_FRAME))
            .unwrap();
        let messages = encode_flight::<FlightError>(
            batch.schema(),
            futures::stream::iter([Ok(batch.clone())]),
            options,
        );
        FlightRecordBatchStream::new_from_flight_data(messages)
            .try_collect()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn large_lists_and_dictionaries_arrive_with_their_own_types() {
        let list = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(1), Some(2)]),
            Some(vec![Some(3)]),
            None,
            Some(vec![Some(4), Some(5), Some(6)]),
        ]);
        let large_type =
            DataType::LargeList(Arc::new(Field::new_list_field(DataType::Int64, true)));
        let large = cast(&list, &large_type).unwrap();
        let dictionary: DictionaryArray<Int32Type> = vec!["a", "b", "a", "c"].into_iter().collect();
        let batch = RecordBatch::try_from_iter([
            ("large", large.slice(1, 3)),
            ("dict", (Arc::new(dictionary) as ArrayRef).slice(1, 3)),
        ])
        .unwrap();
        let back = round_trip(batch.clone()).await;
        assert_eq!(back, vec![batch]);
    }

    #[test]
    fn a_batch_decoded_from_one_message_is_measured_by_its_data_not_per_column() {
        use datafusion::arrow::array::Int64Array;
        use datafusion::arrow::ipc::reader::FileReader;
        use datafusion::arrow::ipc::writer::FileWriter;
        // Sixteen columns of 48 KiB each: 768 KiB of data, one message.
        let columns: Vec<(String, ArrayRef)> = (0..16)
            .map(|c| {
                let values: ArrayRef = Arc::new(Int64Array::from_iter_values(0..6144));
                (format!("c{c}"), values)
            })
            .collect();
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let mut file = Vec::new();
        let mut writer = FileWriter::try_new(&mut file, &batch.schema()).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        drop(writer);
        let mut reader = FileReader::try_new(std::io::Cursor::new(file), None).unwrap();
        let read = reader.next().unwrap().unwrap();
        assert!(
            read.get_array_memory_size() > MAX_MESSAGE_BYTES,
            "shared per column"
        );
        assert_eq!(message_pieces(&read).len(), 1);
    }

    #[tokio::test]
    async fn a_large_batch_is_sent_in_slices_that_add_up_to_it() {
        let values: ArrayRef = Arc::new(datafusion::arrow::array::StringArray::from_iter_values(
            (0..200_000).map(|i| format!("a fairly long string value number {i}")),
        ));
        let batch = RecordBatch::try_from_iter([("s", values)]).unwrap();
        assert!(data_bytes(&batch) > MAX_MESSAGE_BYTES);
        let back = round_trip(batch.clone()).await;
        assert!(back.len() > 1);
        let rows: usize = back.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows, batch.num_rows());
        assert_eq!(
            datafusion::arrow::compute::concat_batches(&batch.schema(), &back).unwrap(),
            batch
        );
    }
}
