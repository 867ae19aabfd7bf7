//! How spilled shuffle files are compressed, and the count of data an
//! executor holds in them that the choice depends on. Used by
//! `shuffle_store` (which opens the files) and chosen by `config`
//! (`--shuffle-compression`).

use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::arrow::ipc::CompressionType;

/// How shuffle output spilled to files is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SpillCompression {
    /// Never.
    Never,
    /// Always, with this codec.
    Always(CompressionType),
    /// Uncompressed while the executor holds less than this many bytes of
    /// data in spill files, LZ4 from then on. Decided per file: a map
    /// output's partition writing uncompressed closes that file once the
    /// executor passes the mark and goes on in an LZ4 one, so an output
    /// that started spilling early cannot fill the disk uncompressed.
    ///
    /// Spills that the page cache still holds when read cost LZ4's CPU for
    /// nothing: at TPC-H SF 10, q7, q9 and q18 (0.25 to 2.1 GB spilled)
    /// took 10 to 30% longer with LZ4 files. Past memory they reach the
    /// disk: at SF 100, uncompressed spills filled it, and LZ4 made q3 2.6
    /// times faster (`benchmarks/README.md`).
    Lz4Past(u64),
}

impl SpillCompression {
    /// The codec of a spill file opened while the executor holds `held`
    /// bytes of data in spill files.
    pub(crate) fn codec(self, held: u64) -> Option<CompressionType> {
        match self {
            Self::Never => None,
            Self::Always(codec) => Some(codec),
            Self::Lz4Past(mark) => (held >= mark).then_some(CompressionType::LZ4_FRAME),
        }
    }

    /// Whether an open file written with `current` should be closed and the
    /// rest written to a new one, now that the executor holds `held` bytes
    /// of data in spill files. Only an uncompressed file is ever replaced,
    /// so a partition has at most two files.
    pub(crate) fn rotates(self, current: Option<CompressionType>, held: u64) -> bool {
        current.is_none() && self.codec(held).is_some()
    }
}

/// Bytes of data (as batches hold it, before compression) in the spill
/// files of one executor: written by running writers or kept by stored
/// outputs, and given back when those are dropped.
#[derive(Debug, Default)]
pub(crate) struct SpillLedger {
    held: AtomicU64,
}

impl SpillLedger {
    /// Bytes held now.
    pub(crate) fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }

    /// Counts `bytes` more.
    pub(crate) fn add(&self, bytes: u64) {
        self.held.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Gives `bytes` back (never below zero).
    pub(crate) fn give_back(&self, bytes: u64) {
        let _ = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                Some(held.saturating_sub(bytes))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_mark_uncompressed_files_rotate_to_lz4_and_nothing_else_rotates() {
        let auto = SpillCompression::Lz4Past(100);
        let lz4 = Some(CompressionType::LZ4_FRAME);
        assert_eq!(auto.codec(99), None);
        assert_eq!(auto.codec(100), lz4);
        assert!(!auto.rotates(None, 99));
        assert!(auto.rotates(None, 100));
        assert!(!auto.rotates(lz4, 0), "an LZ4 file is never replaced");
        assert!(!SpillCompression::Never.rotates(None, u64::MAX));
        let zstd = SpillCompression::Always(CompressionType::ZSTD);
        assert!(!zstd.rotates(Some(CompressionType::ZSTD), 0));
    }

    #[test]
    fn the_ledger_never_goes_below_zero() {
        let ledger = SpillLedger::default();
        ledger.add(10);
        ledger.give_back(4);
        assert_eq!(ledger.held(), 6);
        ledger.give_back(100);
        assert_eq!(ledger.held(), 0);
    }
}
