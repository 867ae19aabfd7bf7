//! Traces over OTLP. When `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, every Volley process
//! exports its `tracing` spans of Volley's own crates through
//! OpenTelemetry's SDK (batched, on a thread of its own) and its tonic OTLP
//! exporter. One job is one trace: the scheduler's `job` span, a `stage`
//! span per stage attempt under it, and on the executors a `task` span per
//! task whose parent is its stage's span, carried in the task launch as a
//! W3C `traceparent` ([`trace_context`], [`set_remote_parent`]).
//!
//! Without the variable nothing is exported and no span is made for jobs,
//! stages or tasks ([`traces_exported`]), so tracing costs nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

static EXPORTED: AtomicBool = AtomicBool::new(false);

/// Whether this process exports traces: jobs, stages and tasks get spans.
pub fn traces_exported() -> bool {
    EXPORTED.load(Ordering::Relaxed)
}

/// Flushes the spans not yet exported when dropped (at the process's end);
/// keep it alive in `main`.
#[derive(Debug, Default)]
#[must_use = "spans are flushed when the guard is dropped"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// The OTLP layer for `service`, if the environment asks for export. Must
/// be called inside a tokio runtime (the exporter's gRPC channel lives
/// there).
pub(crate) fn otlp_layer<S>(
    service: &str,
) -> (Option<Box<dyn Layer<S> + Send + Sync>>, TelemetryGuard)
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let wanted = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
    if !wanted {
        return (None, TelemetryGuard::default());
    }
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
    {
        Ok(exporter) => exporter,
        Err(e) => {
            eprintln!("{service}: traces are not exported: {e}");
            return (None, TelemetryGuard::default());
        }
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_string())
                .build(),
        )
        .build();
    let tracer = provider.tracer("volley");
    // Only Volley's own spans and events: DataFusion's and the network
    // stack's would drown a trace.
    let targets = Targets::new()
        .with_target("volley_scheduler", tracing::Level::INFO)
        .with_target("volley_executor", tracing::Level::INFO)
        .with_target("volley_client", tracing::Level::INFO)
        .with_target("volley_dataflow", tracing::Level::INFO);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(targets)
        .boxed();
    EXPORTED.store(true, Ordering::Relaxed);
    (
        Some(layer),
        TelemetryGuard {
            provider: Some(provider),
        },
    )
}

/// `span`'s trace context as W3C headers (`traceparent`), to send to
/// another process; empty when traces are not exported.
pub fn trace_context(span: &Span) -> HashMap<String, String> {
    let mut carrier = HashMap::new();
    if traces_exported() {
        TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    }
    carrier
}

/// Makes `span` (just created, not yet entered) a child of the span whose
/// context another process sent in `carrier`.
pub fn set_remote_parent(span: &Span, carrier: &HashMap<String, String>) {
    if carrier.is_empty() || !traces_exported() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(carrier);
    let _ = span.set_parent(parent);
}
