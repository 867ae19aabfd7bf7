//! The scheduler's HTTP port (`--http-bind`): the web UI (jobs, a job's
//! stage graph and task timeline, executors), its JSON API, and
//! `/metrics`. Every route but the login form requires the same credential
//! as gRPC, as `Authorization: Bearer` or the session cookie the login form
//! sets; pages are plain HTML with a little script that fetches the JSON
//! API and redraws a running job without a reload (`web_pages.rs`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tracing::{info, warn};
use volley_dataflow::JobId;
use volley_proto::{error_kind_name_of, executor_state_name, job_state_name, v1};
use volley_security::{Caller, HttpServer, http_caller, may_read_metrics, session_cookie};

use crate::explain::{StageShape, exchanges, output_of};
use crate::job::Job;
use crate::service::Shared;
use crate::web_pages;

#[derive(Clone)]
struct Web {
    shared: Arc<Shared>,
}

/// Serves the UI and `/metrics` on `bind`; returns the address bound and
/// the server's task.
pub(crate) fn start(
    shared: Arc<Shared>,
    bind: SocketAddr,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let server = HttpServer::bind(bind)?;
    let addr = server.addr();
    let tls = shared.config.security.tls.clone();
    let router = Router::new()
        .route("/", get(jobs_page))
        .route("/jobs/{id}", get(job_page))
        .route("/executors", get(executors_page))
        .route("/login", get(login_page).post(login))
        .route("/metrics", get(metrics))
        .route("/api/jobs", get(api_jobs))
        .route("/api/jobs/{id}", get(api_job))
        .route("/api/executors", get(api_executors))
        .with_state(Web { shared });
    let task = tokio::spawn(async move {
        if let Err(e) = server.serve(router, tls.as_ref()).await {
            warn!(error = %e, "the HTTP server stopped");
        }
    });
    info!(%addr, "web UI and /metrics listening");
    Ok((addr, task))
}

/// Why a request is refused, as a page or as an API answer.
enum Refused {
    /// No or a bad credential: pages go to the login form.
    Login,
    /// A credential, but not for this.
    Status(StatusCode, String),
}

impl Web {
    fn caller(&self, headers: &HeaderMap) -> Result<Caller, Refused> {
        http_caller(&self.shared.config.security.authenticator, headers).map_err(|_| Refused::Login)
    }

    fn tls(&self) -> bool {
        self.shared.config.security.tls.is_some()
    }
}

fn page_refusal(refused: Refused) -> Response {
    match refused {
        Refused::Login => Redirect::to("/login").into_response(),
        Refused::Status(code, message) => (code, message).into_response(),
    }
}

fn api_refusal(refused: Refused) -> Response {
    match refused {
        Refused::Login => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "not authenticated: present a user's token as `Authorization: Bearer`",
        )
            .into_response(),
        Refused::Status(code, message) => (code, message).into_response(),
    }
}

/// A page shell: it holds no data (the script fetches it), yet only a
/// known caller gets it.
fn page(web: &Web, headers: &HeaderMap, html: String) -> Response {
    match web.caller(headers) {
        Ok(_) => Html(html).into_response(),
        Err(refused) => page_refusal(refused),
    }
}

async fn jobs_page(State(web): State<Web>, headers: HeaderMap) -> Response {
    page(&web, &headers, web_pages::jobs())
}

async fn job_page(State(web): State<Web>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if JobId::parse(&id).is_err() {
        return (StatusCode::NOT_FOUND, "not a job id").into_response();
    }
    page(&web, &headers, web_pages::job(&id))
}

async fn executors_page(State(web): State<Web>, headers: HeaderMap) -> Response {
    page(&web, &headers, web_pages::executors())
}

async fn login_page(State(web): State<Web>) -> Response {
    if !web.shared.config.security.authenticator.is_secure() {
        return Redirect::to("/").into_response();
    }
    Html(web_pages::login(None)).into_response()
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(web): State<Web>, Form(form): Form<LoginForm>) -> Response {
    let token = form.token.trim();
    let mut headers = HeaderMap::new();
    let valid = HeaderValue::from_str(&format!("Bearer {token}"))
        .ok()
        .map(|value| {
            headers.insert(header::AUTHORIZATION, value);
            web.caller(&headers)
        });
    match valid {
        Some(Ok(Caller::User(_) | Caller::Anonymous)) => {
            match HeaderValue::from_str(&session_cookie(token, web.tls())) {
                Ok(cookie) => (
                    StatusCode::SEE_OTHER,
                    [
                        (header::SET_COOKIE, cookie),
                        (header::LOCATION, HeaderValue::from_static("/")),
                    ],
                )
                    .into_response(),
                Err(_) => (
                    StatusCode::BAD_REQUEST,
                    Html(web_pages::login(Some("That token cannot be a cookie."))),
                )
                    .into_response(),
            }
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            Html(web_pages::login(Some(
                "That token is not valid for this cluster.",
            ))),
        )
            .into_response(),
    }
}

async fn metrics(State(web): State<Web>, headers: HeaderMap) -> Response {
    if !may_read_metrics(&web.shared.config.security.authenticator, &headers) {
        return api_refusal(Refused::Login);
    }
    // Encoded outside the state lock, which placement needs.
    let metrics = web.shared.state().metrics_now();
    let text = metrics.encode();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct JobsQuery {
    state: Option<String>,
    /// Also the finished jobs only the event log holds.
    #[serde(default)]
    all: bool,
}

/// A job's row in the jobs list.
fn job_summary(job: &Job, status: &v1::JobStatus) -> Value {
    status_summary(
        status,
        job.access.owner().map(|o| o.as_str()),
        job.run_time().as_millis() as u64,
    )
}

/// A job's row from its status: who owns it, and how long it has run if
/// it has not ended.
fn status_summary(status: &v1::JobStatus, user: Option<&str>, running_ms: u64) -> Value {
    json!({
        "job_id": status.job_id,
        "name": status.name,
        "user": user,
        "state": job_state_name(status.state),
        "elapsed_ms": if status.ended_at_ms > 0 {
            status.ended_at_ms.saturating_sub(status.started_at_ms)
        } else {
            running_ms
        },
        "started_at_ms": status.started_at_ms,
        "stages": {"done": status.stages_done, "total": status.stages_total},
        "tasks": {"done": status.tasks_done, "total": status.tasks_total, "running": status.tasks_running},
        "rows_out": status.rows_out,
        "bytes_shuffled": status.bytes_shuffled,
        "error": status.error.as_ref().map(|e| json!({
            "kind": error_kind_name_of(e.kind),
            "message": e.message,
        })),
        "recovery": status.recovery.map(|r| json!({
            "tasks_retried": r.tasks_retried,
            "map_tasks_rerun": r.map_tasks_rerun,
            "stages_rerun": r.stages_rerun,
            "executors_lost": r.executors_lost,
            "scheduler_restarts": r.scheduler_restarts,
            "outputs_recovered": r.outputs_recovered,
        })),
    })
}

async fn api_jobs(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(query): Query<JobsQuery>,
) -> Response {
    let caller = match web.caller(&headers) {
        Ok(caller) => caller,
        Err(refused) => return api_refusal(refused),
    };
    let log = if query.all {
        web.shared.state().event_log().cloned()
    } else {
        None
    };
    let logged = match log {
        Some(log) => tokio::task::spawn_blocking(move || log.finished_jobs())
            .await
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let state = web.shared.state();
    let mut jobs: Vec<Value> = state
        .jobs_visible_to(&caller)
        .into_iter()
        .map(|job| job_summary(job, &job.status()))
        .collect();
    // Jobs only the event log holds, after the held ones (which are the
    // newest: the history keeps the latest).
    for job in logged {
        let id = JobId::from(job.status.job_id.as_str());
        if state.has_job(&id) {
            continue;
        }
        let access = crate::service::logged_access(job.user.as_deref(), &web.shared.config);
        if access.visible_to(&caller) {
            jobs.push(status_summary(&job.status, job.user.as_deref(), 0));
        }
    }
    drop(state);
    jobs.retain(|job| match &query.state {
        Some(wanted) if !wanted.is_empty() => job["state"] == wanted.as_str(),
        _ => true,
    });
    axum::Json(Value::Array(jobs)).into_response()
}

async fn api_job(State(web): State<Web>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let caller = match web.caller(&headers) {
        Ok(caller) => caller,
        Err(refused) => return api_refusal(refused),
    };
    let Ok(id) = JobId::parse(&id) else {
        return api_refusal(Refused::Status(
            StatusCode::BAD_REQUEST,
            "not a job id".into(),
        ));
    };
    let not_found = || {
        // Another user's job is as unknown as a missing one.
        api_refusal(Refused::Status(
            StatusCode::NOT_FOUND,
            format!("no job {id} this user may see"),
        ))
    };
    let log = {
        let state = web.shared.state();
        match state.job(&id) {
            Some(job) if !job.access.visible_to(&caller) => return not_found(),
            // Read back after a restart: only its final status is left.
            Some(job) if job.stages().is_empty() && job.phase().is_terminal() => {
                let owner = job.access.is_owner(&caller);
                let user = job.access.owner().map(|o| o.as_str().to_string());
                return axum::Json(status_detail(&job.status(), user.as_deref(), owner))
                    .into_response();
            }
            Some(job) => {
                return axum::Json(job_detail(job, job.access.is_owner(&caller))).into_response();
            }
            None => state.event_log().cloned(),
        }
    };
    // Only the event log holds it, if anything does.
    let Some(log) = log else {
        return not_found();
    };
    let wanted = id.clone();
    let Ok(Some(logged)) = tokio::task::spawn_blocking(move || log.finished_job(&wanted)).await
    else {
        return not_found();
    };
    let access = crate::service::logged_access(logged.user.as_deref(), &web.shared.config);
    if !access.visible_to(&caller) {
        return not_found();
    }
    let owner = access.is_owner(&caller);
    axum::Json(status_detail(&logged.status, logged.user.as_deref(), owner)).into_response()
}

/// A finished job's page from its final status alone (read back from the
/// state store or the event log): its stages and their plans with
/// metrics, but no task timeline, which is not kept.
fn status_detail(status: &v1::JobStatus, user: Option<&str>, owner: bool) -> Value {
    let mut detail = status_summary(status, user, 0);
    let last = status.stages.last().map(|s| s.stage_id);
    let millis = |us: u64| (us > 0).then_some(us as f64 / 1000.0);
    let stages: Vec<Value> = status
        .stages
        .iter()
        .map(|stage| {
            json!({
                "id": stage.stage_id,
                "final": Some(stage.stage_id) == last,
                "partitions": stage.partitions,
                "attempt": 0,
                "tasks_done": stage.tasks_done,
                "tasks_running": 0,
                "inputs": stage.input_stages.iter().map(|i| json!({"stage": i, "exchange": "read"})).collect::<Vec<_>>(),
                "output": if Some(stage.stage_id) == last { "the job's result" } else { "shuffled" },
                "rows_out": stage.rows_out,
                "bytes_out": stage.bytes_out,
                "started_ms": millis(stage.started_after_us),
                "finished_ms": millis(stage.finished_after_us),
                "longest_task_ms": stage.longest_task_us as f64 / 1000.0,
                "median_task_ms": stage.median_task_us as f64 / 1000.0,
                "plan": if owner && !stage.plan.is_empty() {
                    Some(volley_proto::annotated_plan(&stage.plan, &stage.operators).join("\n"))
                } else {
                    None
                },
            })
        })
        .collect();
    if let Some(object) = detail.as_object_mut() {
        object.insert(
            "now_ms".into(),
            json!(status.ended_at_ms.saturating_sub(status.started_at_ms)),
        );
        object.insert("stage_list".into(), Value::Array(stages));
        object.insert("task_runs".into(), Value::Array(Vec::new()));
        object.insert("from_history".into(), json!(true));
    }
    detail
}

/// A job's page: its status, stage graph with each stage's shape and
/// plan (for its owner), and every task attempt.
fn job_detail(job: &Job, owner: bool) -> Value {
    let status = job.status();
    let mut detail = job_summary(job, &status);
    let shapes: Vec<StageShape<'_>> = job
        .stages()
        .iter()
        .map(|s| StageShape {
            id: s.id(),
            plan: s.plan(),
            tasks: s.partitions(),
        })
        .collect();
    let edges = exchanges(&shapes);
    let last = job.stages().last().map(|s| s.id());
    if owner && !job.source().is_empty() {
        detail["source"] = json!(job.source());
        detail["source_kind"] = json!(if job.script.is_some() {
            "SQL"
        } else {
            "Logical plan"
        });
    }
    let stages: Vec<Value> = job
        .stages()
        .iter()
        .map(|stage| {
            let (rows, bytes) = stage.rows_and_bytes();
            let (first, last_finish, _, longest) = stage.timings();
            let inputs: Vec<Value> = edges
                .iter()
                .filter(|(consumer, _, _)| *consumer == stage.id())
                .map(|(_, input, exchange)| json!({"stage": input.0, "exchange": exchange.name()}))
                .collect();
            json!({
                "id": stage.id().0,
                "final": Some(stage.id()) == last,
                "partitions": stage.partitions(),
                "attempt": stage.attempt(),
                "tasks_done": stage.tasks_done(),
                "tasks_running": stage.running_count(),
                // Its outputs were dropped once every reader had finished.
                "released": stage.is_released(),
                "inputs": inputs,
                "output": if Some(stage.id()) == last && !stage.plan().is::<volley_dataflow::FileOutputExec>() {
                    "returned to the client".to_string()
                } else {
                    output_of(stage.plan())
                },
                "rows_out": rows,
                "bytes_out": bytes,
                "started_ms": first.map(|t| job.millis_at(t)),
                "finished_ms": if stage.is_finished() { last_finish.map(|t| job.millis_at(t)) } else { None },
                "longest_task_ms": longest.as_secs_f64() * 1000.0,
                "median_task_ms": stage.median_task().as_secs_f64() * 1000.0,
                // Each operator with its metrics summed over the tasks.
                "plan": if owner {
                    Some(volley_proto::annotated_plan(stage.display(), &stage.operators()).join("\n"))
                } else {
                    None
                },
            })
        })
        .collect();
    let tasks: Vec<Value> = job
        .stages()
        .iter()
        .flat_map(|stage| {
            stage.runs().iter().map(move |run| {
                json!({
                    "stage": stage.id().0,
                    "partition": run.partition,
                    "attempt": run.attempt,
                    "executor": run.executor.as_str(),
                    "start_ms": job.millis_at(run.launched),
                    "end_ms": run.ended.map(|t| job.millis_at(t)),
                    "outcome": run.outcome.name(),
                })
            })
        })
        .collect();
    if let Some(object) = detail.as_object_mut() {
        object.insert(
            "now_ms".into(),
            json!(job.run_time().as_secs_f64() * 1000.0),
        );
        object.insert("stage_list".into(), Value::Array(stages));
        object.insert("task_runs".into(), Value::Array(tasks));
    }
    detail
}

async fn api_executors(State(web): State<Web>, headers: HeaderMap) -> Response {
    if let Err(refused) = web.caller(&headers) {
        return api_refusal(refused);
    }
    let executors: Vec<Value> = web
        .shared
        .state()
        .executors_info()
        .iter()
        .map(|e| {
            json!({
                "executor_id": e.executor_id,
                "endpoint": e.endpoint,
                "state": executor_state_name(e.state),
                "slots": e.slots,
                "free_slots": e.free_slots,
                "running_tasks": e.running_tasks,
                "memory_reserved": e.memory_reserved,
                "memory_limit": e.memory_limit,
                "stored_outputs": e.stored_outputs,
                "shuffle_memory_bytes": e.shuffle_memory_bytes,
                "shuffle_disk_bytes": e.shuffle_disk_bytes,
                "shuffle_spilled_bytes": e.shuffle_spilled_bytes,
            })
        })
        .collect();
    axum::Json(Value::Array(executors)).into_response()
}
