//! Criterion micro-benchmark of the scheduler alone: placing the tasks of a
//! 100,000-task job on 100 simulated executors.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn placement(c: &mut Criterion) {
    let mut group = c.benchmark_group("scheduler");
    group.throughput(Throughput::Elements(100_000));
    group.sample_size(10);
    group.bench_function("place 100k tasks on 100 executors", |b| {
        b.iter(|| volley_scheduler::simulate_placement(100_000, 100, 1000).expect("placement"))
    });
    group.finish();
}

criterion_group!(benches, placement);
criterion_main!(benches);
