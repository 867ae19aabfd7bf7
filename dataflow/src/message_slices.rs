//! Decoded batches that hold only the memory they use.
//!
//! Arrow decodes a buffer that the writer's codec left uncompressed (it
//! would not have shrunk) as a slice of the whole IPC message it arrived
//! in. A batch read from an LZ4 file or Flight stream then keeps its
//! compressed message alive beside its decompressed buffers, and
//! DataFusion's accounting (`get_record_batch_memory_size`, which charges
//! each allocation whole) counts both: a sort-preserving merge of LZ4
//! shuffle inputs under a 16 MiB budget ran out of memory at 1.45 times
//! the bytes its batches used. [`without_message_slices`] copies such
//! slices into buffers of their own, so the message is freed.
//!
//! An uncompressed message is not copied: all of a batch's buffers are
//! slices of it and fill it, so it is counted once, at about its use.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayData, ArrayRef, make_array};
use datafusion::arrow::buffer::{BooleanBuffer, Buffer, NullBuffer};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

/// An allocation is copied out of only when more than this much of it is
/// unused, so that alignment padding of small batches costs no copy.
const MIN_UNUSED_BYTES: usize = 64 * 1024;

/// `batch` with every buffer that is a small part of a larger allocation
/// (less than half of it, and more than [`MIN_UNUSED_BYTES`] unused)
/// copied into a buffer of its own. A batch with no such buffer is
/// returned as it is, at the cost of one walk over its buffers.
pub fn without_message_slices(batch: RecordBatch) -> Result<RecordBatch, ArrowError> {
    let mut allocations: HashMap<usize, Allocation> = HashMap::new();
    for column in batch.columns() {
        visit_buffers(&column.to_data(), &mut |buffer| {
            let entry = allocations
                .entry(buffer.data_ptr().addr().get())
                .or_insert(Allocation {
                    capacity: buffer.capacity(),
                    used: 0,
                });
            entry.used += buffer.len();
        });
    }
    let wasteful: Vec<usize> = allocations
        .into_iter()
        .filter(|(_, a)| {
            let unused = a.capacity.saturating_sub(a.used);
            unused > a.used && unused > MIN_UNUSED_BYTES
        })
        .map(|(address, _)| address)
        .collect();
    if wasteful.is_empty() {
        return Ok(batch);
    }
    let is_wasteful = |buffer: &Buffer| wasteful.contains(&buffer.data_ptr().addr().get());
    let columns = batch
        .columns()
        .iter()
        .map(|column| {
            let data = column.to_data();
            let mut touched = false;
            visit_buffers(&data, &mut |buffer| touched |= is_wasteful(buffer));
            if touched {
                Ok(make_array(copy_wasteful(data, &is_wasteful)?))
            } else {
                Ok(Arc::clone(column))
            }
        })
        .collect::<Result<Vec<ArrayRef>, ArrowError>>()?;
    RecordBatch::try_new_with_options(
        batch.schema(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
}

struct Allocation {
    capacity: usize,
    used: usize,
}

/// Calls `f` on every buffer of `data`, its validity and its children's.
fn visit_buffers(data: &ArrayData, f: &mut impl FnMut(&Buffer)) {
    for buffer in data.buffers() {
        f(buffer);
    }
    if let Some(nulls) = data.nulls() {
        f(nulls.inner().inner());
    }
    for child in data.child_data() {
        visit_buffers(child, f);
    }
}

/// `data` with the buffers `is_wasteful` picks copied; validated again, as
/// the safe constructors require.
fn copy_wasteful(
    data: ArrayData,
    is_wasteful: &impl Fn(&Buffer) -> bool,
) -> Result<ArrayData, ArrowError> {
    let own = |buffer: &Buffer| {
        if is_wasteful(buffer) {
            Buffer::from_slice_ref(buffer.as_slice())
        } else {
            buffer.clone()
        }
    };
    let buffers: Vec<Buffer> = data.buffers().iter().map(own).collect();
    let nulls = data.nulls().map(|nulls| {
        let bits = nulls.inner();
        NullBuffer::new(BooleanBuffer::new(
            own(bits.inner()),
            bits.offset(),
            bits.len(),
        ))
    });
    let children = data
        .child_data()
        .iter()
        .map(|child| copy_wasteful(child.clone(), is_wasteful))
        .collect::<Result<Vec<_>, _>>()?;
    data.into_builder()
        .buffers(buffers)
        .nulls(nulls)
        .child_data(children)
        .build()
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use datafusion::arrow::array::{BooleanArray, Int64Array, StringArray};
    use datafusion::arrow::ipc::CompressionType;
    use datafusion::arrow::ipc::reader::FileReader;
    use datafusion::arrow::ipc::writer::{FileWriter, IpcWriteOptions};
    use datafusion::common::utils::memory::get_record_batch_memory_size;

    use super::*;

    /// Text LZ4 shrinks by about half (words drawn from a small
    /// vocabulary) beside a column it cannot shrink (pseudo-random bits),
    /// which the writer leaves uncompressed: a small slice of the message.
    fn mixed_batch(rows: usize) -> RecordBatch {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let words = [
            "carefully",
            "ironic",
            "deposits",
            "final",
            "requests",
            "sleep",
            "quickly",
            "bold",
            "pending",
            "accounts",
            "haggle",
            "furiously",
            "express",
            "packages",
            "blithely",
            "regular",
        ];
        let mut bits = Vec::with_capacity(rows);
        let mut text = Vec::with_capacity(rows);
        for _ in 0..rows {
            let r = next();
            bits.push(Some(r & 1 == 1));
            text.push(Some(format!(
                "{} {} {}",
                words[(r >> 8) as usize % words.len()],
                words[(r >> 16) as usize % words.len()],
                words[(r >> 24) as usize % words.len()]
            )));
        }
        RecordBatch::try_from_iter([
            ("bits", Arc::new(BooleanArray::from(bits)) as ArrayRef),
            ("text", Arc::new(StringArray::from(text)) as ArrayRef),
        ])
        .unwrap()
    }

    fn round_trip(batch: &RecordBatch, compression: Option<CompressionType>) -> RecordBatch {
        let options = IpcWriteOptions::default()
            .try_with_compression(compression)
            .unwrap();
        let mut file = Vec::new();
        let mut writer =
            FileWriter::try_new_with_options(&mut file, &batch.schema(), options).unwrap();
        writer.write(batch).unwrap();
        writer.finish().unwrap();
        drop(writer);
        let mut reader = FileReader::try_new(Cursor::new(file), None).unwrap();
        reader.next().unwrap().unwrap()
    }

    fn used_bytes(batch: &RecordBatch) -> usize {
        let mut used = 0;
        for column in batch.columns() {
            visit_buffers(&column.to_data(), &mut |b| used += b.len());
        }
        used
    }

    #[test]
    fn a_batch_read_from_an_lz4_file_is_charged_about_what_it_uses() {
        let batch = mixed_batch(200_000);
        let read = round_trip(&batch, Some(CompressionType::LZ4_FRAME));
        let owned = without_message_slices(read).unwrap();
        assert_eq!(owned, batch);
        let charged = get_record_batch_memory_size(&owned);
        let used = used_bytes(&owned);
        assert!(
            charged <= used + used / 10,
            "charged {charged} bytes for {used} used"
        );
    }

    #[test]
    fn an_uncompressed_message_is_kept_whole_and_not_copied() {
        let batch = mixed_batch(200_000);
        let read = round_trip(&batch, None);
        let pointers = |b: &RecordBatch| {
            let mut all = Vec::new();
            for column in b.columns() {
                visit_buffers(&column.to_data(), &mut |buffer| all.push(buffer.as_ptr()));
            }
            all
        };
        let before = pointers(&read);
        let after = without_message_slices(read).unwrap();
        assert_eq!(pointers(&after), before, "a buffer was copied");
        assert_eq!(after, batch);
    }

    #[test]
    fn a_small_slice_of_a_large_buffer_is_copied_out() {
        let big: ArrayRef = Arc::new(Int64Array::from_iter_values(0..1_000_000));
        let batch = RecordBatch::try_from_iter([("v", big.slice(10, 100))]).unwrap();
        let owned = without_message_slices(batch.clone()).unwrap();
        assert_eq!(owned, batch);
        assert!(get_record_batch_memory_size(&owned) < 4096);
    }
}
