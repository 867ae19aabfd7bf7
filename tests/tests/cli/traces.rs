//! Traces across processes: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, the
//! scheduler and executors export one trace per job to an OTLP receiver
//! (here a small one in the test), and each executor's task span is a
//! child of the scheduler's span of its stage.

use std::collections::{HashMap, HashSet};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::Value;
use tokio::sync::mpsc;
use volley_tests::processes::{ClusterSpec, credentials, start_cluster_with, volley_with_env};
use volley_tests::tpch_dir;

use super::write;

/// An OTLP receiver: hands every span it is sent, with the service that
/// sent it, to the test.
struct Receiver(mpsc::UnboundedSender<(String, Span)>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(AnyValue::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    let _ = self.0.send((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A span's string attribute.
fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| match &v.value {
            Some(AnyValue::StringValue(s)) => Some(s.clone()),
            Some(AnyValue::IntValue(i)) => Some(i.to_string()),
            _ => None,
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executors_task_span_is_a_child_of_the_schedulers_stage_span_in_the_jobs_trace() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (tx, mut spans) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Receiver(tx)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let cluster = start_cluster_with(&ClusterSpec {
        env: vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint),
            // Export promptly; the test waits for the spans, not a time.
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "50".into()),
        ],
        ..ClusterSpec::default()
    });
    let data = tempfile::tempdir().unwrap();
    let script = format!(
        "CREATE EXTERNAL TABLE lineitem STORED AS PARQUET LOCATION '{}/';\n\
         SELECT l_returnflag, count(*) FROM lineitem GROUP BY 1;\n",
        tpch_dir().join("lineitem").display()
    );
    let file = write(data.path(), "traced.sql", &script);
    let output = volley_with_env(
        &[
            "submit",
            &file,
            "--scheduler",
            &cluster.url,
            "--wait",
            "--json",
        ],
        data.path(),
        &credentials().env("admin"),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let status: Value = serde_json::from_slice(&output.stdout).unwrap();
    let job_id = status["job_id"].as_str().unwrap().to_string();
    let tasks = status["tasks"]["total"].as_u64().unwrap() as usize;
    assert!(tasks >= 2, "{status}");

    // Spans arrive as the processes export them; wait until the job's span
    // and a task span for each of its tasks are in.
    let mut by_id: HashMap<Vec<u8>, (String, Span)> = HashMap::new();
    let (job, task_spans) = loop {
        let (service, span) = spans.recv().await.expect("the receiver runs");
        by_id.insert(span.span_id.clone(), (service, span));
        let job = by_id
            .values()
            .find(|(_, s)| s.name == "job" && attribute(s, "job_id").as_deref() == Some(&job_id));
        let task_spans: Vec<&(String, Span)> = by_id
            .values()
            .filter(|(_, s)| s.name == "task" && attribute(s, "job_id").as_deref() == Some(&job_id))
            .collect();
        if let Some(job) = job
            && task_spans.len() >= tasks
        {
            break (
                job.1.clone(),
                task_spans.into_iter().cloned().collect::<Vec<_>>(),
            );
        }
    };
    assert_eq!(
        task_spans.len(),
        tasks,
        "one span per task attempt (no retries here)"
    );
    let stage_ids: HashSet<Vec<u8>> = task_spans
        .iter()
        .map(|(service, task)| {
            assert_eq!(service, "volley-executor");
            assert_eq!(task.trace_id, job.trace_id, "one trace per job");
            let (stage_service, stage) = by_id
                .get(&task.parent_span_id)
                .expect("the task's parent span was exported");
            assert_eq!(stage_service, "volley-scheduler");
            assert_eq!(stage.name, "stage");
            assert_eq!(
                stage.parent_span_id, job.span_id,
                "a stage is a child of its job"
            );
            stage.span_id.clone()
        })
        .collect();
    assert_eq!(
        stage_ids.len(),
        status["stages"]["total"].as_u64().unwrap() as usize,
        "every stage has a span with tasks under it"
    );
    assert_eq!(attribute(&job, "state").as_deref(), Some("succeeded"));
}
