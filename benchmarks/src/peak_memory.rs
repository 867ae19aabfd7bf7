//! Peak heap memory of one side of a comparison. The `volley-bench` binary
//! installs `peakmem-alloc`'s instrumented system allocator as its global
//! allocator and hands it to [`install`]; each run is then measured as the
//! highest number of heap bytes live at once above what was live when it
//! started. DataFusion and the embedded Volley cluster (client, scheduler
//! and executors) run in the same process and are measured the same way;
//! Volley's figure includes its scheduler and client, not only its
//! executors.
//!
//! Counting costs an atomic update per allocation on both sides alike, so
//! binaries that do not measure memory (the criterion benchmark of the
//! scheduler) leave the system allocator alone.

use std::sync::OnceLock;

use peakmem_alloc::PeakMemAllocTrait;

static ALLOCATOR: OnceLock<&'static (dyn PeakMemAllocTrait + Sync)> = OnceLock::new();

/// Measures with `allocator`, which must be the process's global allocator.
pub fn install(allocator: &'static (dyn PeakMemAllocTrait + Sync)) {
    let _ = ALLOCATOR.set(allocator);
}

/// A measurement in progress. Measurements must not overlap: the peak is
/// process-wide.
#[derive(Debug)]
pub struct PeakMeter(());

impl PeakMeter {
    /// Starts measuring from the bytes live now.
    pub fn start() -> Self {
        if let Some(allocator) = ALLOCATOR.get() {
            allocator.reset_peak_memory();
        }
        Self(())
    }

    /// The peak of live heap bytes above the start (0 when no counting
    /// allocator was installed).
    pub fn finish(self) -> usize {
        ALLOCATOR.get().map_or(0, |a| a.get_peak_memory())
    }
}
