//! Criterion micro-benchmarks of the scheduler alone: placing the tasks of
//! a 100,000-task job on 100 simulated executors, in memory and with a
//! state store; and running a
//! 10,000-task job to its end (placement plus every task's status), in
//! memory and with a state store (`--state-dir`), whose writes are batched
//! on their own thread.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn placement(c: &mut Criterion) {
    let mut group = c.benchmark_group("scheduler");
    group.throughput(Throughput::Elements(100_000));
    group.sample_size(10);
    group.bench_function("place 100k tasks on 100 executors", |b| {
        b.iter(|| {
            volley_scheduler::simulate_placement(100_000, 100, 1000, None).expect("placement")
        })
    });
    let dir = tempfile::tempdir().expect("state dir");
    group.bench_function(
        "place 100k tasks on 100 executors with a state store",
        |b| {
            b.iter(|| {
                volley_scheduler::simulate_placement(100_000, 100, 1000, Some(dir.path()))
                    .expect("placement")
            })
        },
    );
    group.finish();
}

fn run_to_end(c: &mut Criterion) {
    let mut group = c.benchmark_group("scheduler");
    group.throughput(Throughput::Elements(10_000));
    group.sample_size(10);
    group.bench_function("run 10k tasks on 100 executors in memory", |b| {
        b.iter(|| volley_scheduler::simulate_tasks(10_000, 100, 100, None).expect("run"))
    });
    let dir = tempfile::tempdir().expect("state dir");
    group.bench_function("run 10k tasks on 100 executors with a state store", |b| {
        b.iter(|| {
            volley_scheduler::simulate_tasks(10_000, 100, 100, Some(dir.path())).expect("run")
        })
    });
    group.finish();
}

criterion_group!(benches, placement, run_to_end);
criterion_main!(benches);
