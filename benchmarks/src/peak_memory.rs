//! Peak heap memory of one side of a comparison. This crate installs
//! `peakmem-alloc`'s instrumented system allocator as the global allocator,
//! and each run is measured as the highest number of heap bytes live at
//! once above what was live when it started. DataFusion and the embedded
//! Volley cluster (client, scheduler and executors) run in the same process
//! and are measured the same way; Volley's figure includes its scheduler and
//! client, not only its executors.

use std::alloc::System;

use peakmem_alloc::{INSTRUMENTED_SYSTEM, PeakMemAlloc, PeakMemAllocTrait};

#[global_allocator]
static ALLOCATOR: &PeakMemAlloc<System> = &INSTRUMENTED_SYSTEM;

/// A measurement in progress. Measurements must not overlap: the peak is
/// process-wide.
#[derive(Debug)]
pub struct PeakMeter(());

impl PeakMeter {
    /// Starts measuring from the bytes live now.
    pub fn start() -> Self {
        ALLOCATOR.reset_peak_memory();
        Self(())
    }

    /// The peak of live heap bytes above the start.
    pub fn finish(self) -> usize {
        ALLOCATOR.get_peak_memory()
    }
}
