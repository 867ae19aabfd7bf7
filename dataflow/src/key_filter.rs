//! Runtime filters across stages: what a join's build side holds, as a
//! summary of one integer key column (its smallest and largest value and a
//! Bloom filter of its values), made by the build stage's shuffle writers
//! while they write ([`KeySummarizer`]), merged by the scheduler over the
//! stage's tasks ([`KeySummary::merge`]), and turned into a predicate on
//! the probe side's scan ([`KeySummary::predicate`]): `key >= min AND key
//! <= max AND volley_bloom_contains(key, bits)`. The scan prunes row groups
//! by the bounds and drops rows by the whole predicate, so rows that cannot
//! find a partner in the join are never read into the plan, nor shuffled.
//!
//! A Bloom filter has no false negatives: every key the build side holds
//! passes, so the filter never changes an answer (the scheduler applies it
//! only where a probe row without a partner cannot reach the output).

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int64Array};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::compute::{cast, max, min};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{ScalarValue, exec_err, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, Operator, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Literal};
use volley_proto::v1;

/// The name of the Bloom filter test.
pub const BLOOM_CONTAINS: &str = "volley_bloom_contains";

/// Bits set per key.
const HASHES: u64 = 3;
/// The smallest and largest filters, in bits (8 KiB and 1 MiB).
const MIN_BITS_LOG2: u32 = 16;
const MAX_BITS_LOG2: u32 = 23;

/// Whether a key column of this type can be summarized.
pub fn summarizable(data_type: &DataType) -> bool {
    data_type.is_integer()
}

/// The size of the Bloom filter for a build side of about `rows` rows:
/// eight bits per row within bounds (about 2% false positives at one key
/// per row), as log2 of the bits.
pub fn bloom_bits_log2(rows: Option<usize>) -> u32 {
    let wanted = rows.map_or(1 << 20, |r| r.saturating_mul(8)).max(1);
    (usize::BITS - (wanted - 1).leading_zeros()).clamp(MIN_BITS_LOG2, MAX_BITS_LOG2)
}

/// The bit positions of `key` in a filter of `2^bits_log2` bits.
fn positions(key: i64, bits_log2: u32) -> impl Iterator<Item = usize> {
    // splitmix64: a fixed mix, the same on every node.
    let mut z = (key as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let (h1, h2) = (z & 0xffff_ffff, (z >> 32) | 1);
    let mask = (1u64 << bits_log2) - 1;
    (0..HASHES).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) & mask) as usize)
}

/// `bits` (a filter of `2^from` bits) folded to `2^to` bits: bit `p`
/// becomes bit `p mod 2^to`, where every key's positions land anyway
/// ([`positions`] masks its hashes), so no key is lost.
fn fold(mut bits: Vec<u8>, from: u32, to: u32) -> Vec<u8> {
    let mut size = from;
    while size > to && bits.len() > 1 {
        let half = bits.len() / 2;
        let (low, high) = bits.split_at_mut(half);
        for (l, h) in low.iter_mut().zip(high.iter()) {
            *l |= *h;
        }
        bits.truncate(half);
        size -= 1;
    }
    bits
}

/// Builds the summary of one key column from the batches a writer writes.
///
/// The filter's size is chosen when the task's rows are known (eight bits
/// per row, taking the stage's other tasks to write as many rows as this
/// one): until then up to [`PENDING_KEYS`] keys are only kept, and set in a
/// filter of that size at the end. A small build side's filter is then
/// built small enough to stay in the CPU's cache: built at the largest
/// size (1 MiB) and folded, setting TPC-H SF 1 q22's 21k customer keys a
/// task took 0.8% of the query's CPU samples (about 1.3 ms of task time
/// a query); built at the final size, 0.1% (`perf record` over 20 runs;
/// the query's time did not move beyond the noise). Past
/// [`PENDING_KEYS`] keys they go into a filter of the largest size, folded
/// at the end ([`fold`] keeps every key), as before.
#[derive(Debug)]
pub struct KeySummarizer {
    column: usize,
    tasks: usize,
    bits_log2: u32,
    /// Keys not yet in a filter (while `bits` is empty).
    pending: Vec<i64>,
    /// The filter of `2^bits_log2` bits, once `pending` overflowed.
    bits: Vec<u8>,
    min: Option<i64>,
    max: Option<i64>,
    rows: u64,
}

/// Keys a summarizer keeps before it sets them in a filter: 1 MiB of keys,
/// the size of the largest filter, so it holds no more memory than that.
const PENDING_KEYS: usize = 1 << 17;

/// Sets `key`'s bits in `bits`, a filter of `2^bits_log2` bits.
fn set_key(bits: &mut [u8], key: i64, bits_log2: u32) {
    for bit in positions(key, bits_log2) {
        bits[bit / 8] |= 1 << (bit % 8);
    }
}

impl KeySummarizer {
    /// Summarizes column `column` for a stage of `tasks` tasks, in a
    /// filter of at most `2^bits_log2` bits.
    pub fn new(column: usize, tasks: usize, bits_log2: u32) -> Self {
        let bits_log2 = bits_log2.clamp(MIN_BITS_LOG2, MAX_BITS_LOG2);
        Self {
            column,
            tasks: tasks.max(1),
            bits_log2,
            pending: Vec::new(),
            bits: Vec::new(),
            min: None,
            max: None,
            rows: 0,
        }
    }

    /// Adds the key column of `columns` (a batch's columns).
    pub fn add(&mut self, columns: &[ArrayRef]) -> Result<()> {
        let Some(keys) = columns.get(self.column) else {
            return exec_err!(
                "a key summary names column {}, which is not there",
                self.column
            );
        };
        let keys = cast(keys, &DataType::Int64)?;
        let Some(keys) = keys.as_any().downcast_ref::<Int64Array>() else {
            return exec_err!("a key column did not cast to Int64");
        };
        if let Some(low) = min(keys) {
            self.min = Some(self.min.map_or(low, |m| m.min(low)));
        }
        if let Some(high) = max(keys) {
            self.max = Some(self.max.map_or(high, |m| m.max(high)));
        }
        let present = keys.len() - keys.null_count();
        if self.bits.is_empty() && self.pending.len() + present <= PENDING_KEYS {
            self.pending.extend(keys.iter().flatten());
        } else {
            if self.bits.is_empty() {
                self.bits = vec![0; 1 << (self.bits_log2 - 3)];
                for key in std::mem::take(&mut self.pending) {
                    set_key(&mut self.bits, key, self.bits_log2);
                }
            }
            for key in keys.iter().flatten() {
                set_key(&mut self.bits, key, self.bits_log2);
            }
        }
        self.rows += keys.len() as u64;
        Ok(())
    }

    /// The summary, for the task's status.
    pub fn finish(self) -> v1::KeySummary {
        let whole_side = (self.rows as usize).saturating_mul(self.tasks);
        let bits_log2 = bloom_bits_log2(Some(whole_side)).min(self.bits_log2);
        let bloom = if self.bits.is_empty() {
            let mut bits = vec![0; 1 << (bits_log2 - 3)];
            for &key in &self.pending {
                set_key(&mut bits, key, bits_log2);
            }
            bits
        } else {
            fold(self.bits, self.bits_log2, bits_log2)
        };
        v1::KeySummary {
            column: self.column as u32,
            empty: self.min.is_none(),
            min: self.min.unwrap_or_default(),
            max: self.max.unwrap_or_default(),
            bits_log2,
            bloom,
            rows: self.rows,
        }
    }
}

/// A build side's keys, merged over its tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySummary(v1::KeySummary);

impl KeySummary {
    /// One task's summary, if well formed.
    pub fn from_task(summary: v1::KeySummary) -> Option<Self> {
        let well_formed = (MIN_BITS_LOG2..=MAX_BITS_LOG2).contains(&summary.bits_log2)
            && summary.bloom.len() == 1 << (summary.bits_log2 - 3);
        well_formed.then_some(Self(summary))
    }

    /// The column of the writer's input it summarizes.
    pub fn column(&self) -> usize {
        self.0.column as usize
    }

    /// Adds another task's summary of the same column (idempotent: merging
    /// a task's summary twice changes nothing); filters of different sizes
    /// merge at the smaller size. False for another column: nothing
    /// changes.
    pub fn merge(&mut self, other: &KeySummary) -> bool {
        let (a, b) = (&mut self.0, &other.0);
        if a.column != b.column {
            return false;
        }
        let size = a.bits_log2.min(b.bits_log2);
        if a.bits_log2 > size {
            a.bloom = fold(std::mem::take(&mut a.bloom), a.bits_log2, size);
            a.bits_log2 = size;
        }
        let theirs = fold(b.bloom.clone(), b.bits_log2, size);
        for (x, y) in a.bloom.iter_mut().zip(&theirs) {
            *x |= *y;
        }
        if !b.empty {
            if a.empty {
                (a.min, a.max, a.empty) = (b.min, b.max, false);
            } else {
                a.min = a.min.min(b.min);
                a.max = a.max.max(b.max);
            }
        }
        a.rows = a.rows.max(b.rows);
        true
    }

    /// The share of the filter's bits set: near one it lets everything
    /// through and is not worth evaluating.
    pub fn fill(&self) -> f64 {
        let set: u32 = self.0.bloom.iter().map(|b| b.count_ones()).sum();
        f64::from(set) / (self.0.bloom.len() as f64 * 8.0)
    }

    /// About how many distinct keys the filter holds, from the share of
    /// its bits set.
    pub fn distinct_estimate(&self) -> f64 {
        let bits = self.0.bloom.len() as f64 * 8.0;
        let fill = self.fill().min(1.0 - 1e-9);
        -(bits / HASHES as f64) * (1.0 - fill).ln()
    }

    /// The predicate on `key` (of type `data_type`) that keeps every row
    /// whose key the build side holds: `false` when it holds none.
    pub fn predicate(
        &self,
        key: Arc<dyn PhysicalExpr>,
        data_type: &DataType,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        if self.0.empty {
            return Ok(Arc::new(Literal::new(ScalarValue::Boolean(Some(false)))));
        }
        let bound = |v: i64| -> Result<Arc<dyn PhysicalExpr>> {
            Ok(Arc::new(Literal::new(
                ScalarValue::Int64(Some(v)).cast_to(data_type)?,
            )))
        };
        let at_least = Arc::new(BinaryExpr::new(
            Arc::clone(&key),
            Operator::GtEq,
            bound(self.0.min)?,
        ));
        let at_most = Arc::new(BinaryExpr::new(
            Arc::clone(&key),
            Operator::LtEq,
            bound(self.0.max)?,
        ));
        let bits: Arc<dyn PhysicalExpr> = Arc::new(Literal::new(ScalarValue::Binary(Some(
            self.0.bloom.clone(),
        ))));
        let contains = Arc::new(ScalarFunctionExpr::new(
            BLOOM_CONTAINS,
            bloom_contains(),
            vec![key, bits],
            Arc::new(datafusion::arrow::datatypes::Field::new(
                BLOOM_CONTAINS,
                DataType::Boolean,
                true,
            )),
            Arc::new(datafusion::config::ConfigOptions::default()),
        ));
        let bounds = Arc::new(BinaryExpr::new(at_least, Operator::And, at_most));
        Ok(Arc::new(BinaryExpr::new(bounds, Operator::And, contains)))
    }
}

/// `volley_bloom_contains(key, bits)`: whether an integer key may be in the
/// Bloom filter `bits` (a key summary's); null for a null key.
pub fn bloom_contains() -> Arc<ScalarUDF> {
    static UDF: LazyLock<Arc<ScalarUDF>> =
        LazyLock::new(|| Arc::new(ScalarUDF::new_from_impl(BloomContains::new())));
    Arc::clone(&UDF)
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct BloomContains {
    signature: Signature,
}

impl BloomContains {
    fn new() -> Self {
        Self {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for BloomContains {
    fn name(&self) -> &str {
        BLOOM_CONTAINS
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [key, DataType::Binary] if summarizable(key) => Ok(DataType::Boolean),
            _ => plan_err!("{BLOOM_CONTAINS} takes an integer key and a filter"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [keys, bits] = args.args.as_slice() else {
            return exec_err!("{BLOOM_CONTAINS} takes an integer key and a filter");
        };
        let ColumnarValue::Scalar(ScalarValue::Binary(Some(bits))) = bits else {
            return exec_err!("{BLOOM_CONTAINS} takes its filter as a literal");
        };
        let bits_log2 = (bits.len() * 8).trailing_zeros();
        if bits.is_empty() || !bits.len().is_power_of_two() {
            return exec_err!("{BLOOM_CONTAINS}: a filter of {} bytes", bits.len());
        }
        let test =
            |key: i64| positions(key, bits_log2).all(|bit| bits[bit / 8] & (1 << (bit % 8)) != 0);
        match keys {
            ColumnarValue::Scalar(key) => {
                let key = key.cast_to(&DataType::Int64)?;
                let ScalarValue::Int64(key) = key else {
                    return exec_err!("{BLOOM_CONTAINS}: a key that is not an integer");
                };
                Ok(ColumnarValue::Scalar(ScalarValue::Boolean(key.map(test))))
            }
            ColumnarValue::Array(keys) => {
                let keys = cast(keys, &DataType::Int64)?;
                let Some(keys) = keys.as_any().downcast_ref::<Int64Array>() else {
                    return exec_err!("{BLOOM_CONTAINS}: a key that is not an integer");
                };
                let found: BooleanBuffer = keys.values().iter().map(|k| test(*k)).collect();
                let found = BooleanArray::new(found, keys.nulls().cloned());
                Ok(ColumnarValue::Array(Arc::new(found) as ArrayRef))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int32Array;
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::physical_expr::expressions::col;

    use super::*;

    fn summary(keys: &[i32], bits_log2: u32) -> Result<KeySummary> {
        let mut summarizer = KeySummarizer::new(0, 1, bits_log2);
        summarizer.add(&[Arc::new(Int32Array::from(keys.to_vec())) as ArrayRef])?;
        KeySummary::from_task(summarizer.finish())
            .ok_or_else(|| datafusion::error::DataFusionError::Internal("malformed".into()))
    }

    #[test]
    fn every_build_key_passes_the_merged_filter_and_most_others_do_not() -> Result<()> {
        let mut merged = summary(&[5, 17, 1000], 16)?;
        assert!(merged.merge(&summary(&[40_000, 17], 16)?));
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int32, true)]));
        let probe: Vec<i32> = (0..50_000).collect();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int32Array::from(probe.clone()))],
        )?;
        let predicate = merged.predicate(col("k", &schema)?, &DataType::Int32)?;
        let kept = predicate.evaluate(&batch)?.into_array(batch.num_rows())?;
        let kept = kept
            .as_any()
            .downcast_ref::<BooleanArray>()
            .expect("a boolean predicate");
        let passed: Vec<i32> = probe
            .iter()
            .zip(kept.iter())
            .filter(|(_, k)| *k == Some(true))
            .map(|(p, _)| *p)
            .collect();
        for key in [5, 17, 1000, 40_000] {
            assert!(passed.contains(&key), "{key} is a build key");
        }
        assert!(
            passed.len() < 50,
            "a few false positives at most: {}",
            passed.len()
        );
        assert!(
            passed.iter().all(|p| (5..=40_000).contains(p)),
            "the bounds hold"
        );
        Ok(())
    }

    #[test]
    fn an_empty_build_side_keeps_no_probe_row() -> Result<()> {
        let empty = summary(&[], 16)?;
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int32, true)]));
        let predicate = empty.predicate(col("k", &schema)?, &DataType::Int32)?;
        assert_eq!(predicate.to_string(), "false");
        Ok(())
    }

    #[test]
    fn a_filter_folded_or_merged_at_another_size_keeps_every_key() -> Result<()> {
        let keys: Vec<i32> = (0..3000).map(|k| k * 7919).collect();
        // A task of few rows folds its filter small; a larger one's merges
        // into it at that size.
        let mut small = summary(&keys[..10], 23)?;
        assert_eq!(small.0.bits_log2, MIN_BITS_LOG2);
        assert!(small.merge(&summary(&keys[10..], 23)?));
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int32, true)]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(Int32Array::from(keys.clone()))],
        )?;
        let predicate = small.predicate(col("k", &schema)?, &DataType::Int32)?;
        let kept = predicate.evaluate(&batch)?.into_array(batch.num_rows())?;
        let kept = kept
            .as_any()
            .downcast_ref::<BooleanArray>()
            .expect("a boolean predicate");
        assert_eq!(kept.true_count(), keys.len(), "no key is lost");
        Ok(())
    }

    /// The filter of `keys` as built before the size was chosen at the
    /// end: at the largest size, then folded to `bits_log2`.
    fn built_large_and_folded(keys: &[i32], bits_log2: u32) -> Vec<u8> {
        let mut bits = vec![0u8; 1 << (MAX_BITS_LOG2 - 3)];
        for &key in keys {
            set_key(&mut bits, i64::from(key), MAX_BITS_LOG2);
        }
        fold(bits, MAX_BITS_LOG2, bits_log2)
    }

    #[test]
    fn a_filter_built_at_its_final_size_equals_one_built_large_and_folded() -> Result<()> {
        let keys: Vec<i32> = (0..(PENDING_KEYS as i32 + 5)).map(|k| k * 31).collect();
        // Few keys: kept, no filter of the largest size allocated, and
        // set at the final size.
        let mut kept = KeySummarizer::new(0, 1, MAX_BITS_LOG2);
        kept.add(&[Arc::new(Int32Array::from(keys[..1000].to_vec())) as ArrayRef])?;
        assert!(kept.bits.is_empty(), "no filter before the size is known");
        assert_eq!(kept.pending.len(), 1000);
        let few = KeySummary::from_task(kept.finish()).expect("well formed");
        assert!(few.0.bits_log2 < MAX_BITS_LOG2);
        assert_eq!(
            few.0.bloom,
            built_large_and_folded(&keys[..1000], few.0.bits_log2)
        );
        // More than a summarizer keeps, in batches: set at the largest
        // size from the batch that overflows on, then folded.
        let mut many = KeySummarizer::new(0, 1, MAX_BITS_LOG2);
        for chunk in keys.chunks(PENDING_KEYS / 2) {
            many.add(&[Arc::new(Int32Array::from(chunk.to_vec())) as ArrayRef])?;
        }
        assert!(!many.bits.is_empty(), "the keys overflowed into a filter");
        let many = KeySummary::from_task(many.finish()).expect("well formed");
        assert_eq!(
            many.0.bloom,
            built_large_and_folded(&keys, many.0.bits_log2)
        );
        Ok(())
    }

    #[test]
    fn the_filter_grows_with_the_build_side_within_bounds() {
        assert_eq!(bloom_bits_log2(Some(10)), MIN_BITS_LOG2);
        assert_eq!(bloom_bits_log2(Some(100_000)), 20);
        assert_eq!(bloom_bits_log2(Some(1 << 30)), MAX_BITS_LOG2);
        assert_eq!(bloom_bits_log2(None), 20);
    }
}
