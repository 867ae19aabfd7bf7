//! The attack table: what someone who merely reaches a Volley cluster's
//! ports tries, against the real binaries with TLS, users and a cluster
//! secret on. Each row asserts the refusal and its words, and that the
//! cluster still serves the next legitimate query. At the end, no log the
//! processes wrote holds a secret.

use std::path::Path;
use std::time::{Duration, SystemTime};

use arrow_flight::Ticket;
use arrow_flight::flight_service_client::FlightServiceClient;
use futures::StreamExt;
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;
use volley_client::{Context, SchedulerClient};
use volley_proto::v1;
use volley_proto::v1::scheduler_service_client::SchedulerServiceClient;
use volley_security::tls::ClientTls;
use volley_security::{ClusterSecret, Link, Secret, TicketSigner};
use volley_tests::processes::{
    Cluster, binary, credentials, start, start_cluster, volley, volley_with_env,
};

type Scheduler = SchedulerServiceClient<
    tonic::service::interceptor::InterceptedService<
        Channel,
        volley_security::bearer::BearerInterceptor,
    >,
>;

fn tls() -> ClientTls {
    ClientTls::load(&credentials().ca()).expect("CA")
}

/// A raw gRPC client of the scheduler presenting `credential`.
async fn raw_scheduler(url: &str, credential: Option<&Secret>) -> Scheduler {
    let link = Link::new(credential, Some(tls())).expect("link");
    let channel = link
        .endpoint(url)
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    SchedulerServiceClient::with_interceptor(channel, link.interceptor())
}

/// The cluster answers a legitimate query after an attack.
async fn assert_serves(cluster: &Cluster, after: &str) {
    let ctx = Context::remote_with(&cluster.url, credentials().link("admin"))
        .await
        .unwrap_or_else(|e| panic!("after {after}: cannot connect: {e}"));
    let rows = ctx
        .sql("SELECT count(*) AS n FROM (VALUES (1), (2), (3)) AS t(x)")
        .await
        .expect("plan");
    let batches = rows
        .collect()
        .await
        .unwrap_or_else(|e| panic!("after {after}: {e}"));
    assert_eq!(
        batches.iter().map(|b| b.num_rows()).sum::<usize>(),
        1,
        "after {after}"
    );
    let executors = ctx.scheduler().executors().await.expect("executors");
    assert_eq!(
        executors.len(),
        2,
        "after {after}: both executors still registered"
    );
}

fn as_user(user: &str) -> Vec<(String, String)> {
    credentials().env(user)
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.display().to_string()
}

/// Submits `sql` as a detached script job of `user` and waits for it.
fn submit_and_wait(cluster: &Cluster, dir: &Path, user: &str, sql: &str) -> String {
    let script = write(dir, &format!("{user}.sql"), sql);
    let submitted = volley_with_env(
        &["submit", &script, "--scheduler", &cluster.url],
        dir,
        &as_user(user),
    );
    assert!(submitted.status.success(), "{}", stderr(&submitted));
    let job = String::from_utf8_lossy(&submitted.stdout)
        .trim()
        .to_string();
    let waited = volley_with_env(
        &["jobs", "wait", &job, "--scheduler", &cluster.url],
        dir,
        &as_user(user),
    );
    assert!(waited.status.success(), "{}", stderr(&waited));
    job
}

/// Fetches with `ticket` from the executor at `endpoint`, presenting
/// `credential`; the number of rows, or the refusal.
async fn fetch(
    endpoint: &str,
    ticket: Vec<u8>,
    credential: Option<&Secret>,
) -> Result<usize, tonic::Status> {
    let link = Link::new(credential, Some(tls())).expect("link");
    let channel = link
        .endpoint(endpoint)
        .expect("endpoint")
        .connect()
        .await
        .expect("connect to the executor");
    let mut client = FlightServiceClient::new(channel);
    let mut request = tonic::Request::new(Ticket {
        ticket: ticket.into(),
    });
    link.attach(&mut request);
    let mut stream = client.do_get(request).await?.into_inner();
    let mut messages = 0;
    while let Some(message) = stream.next().await {
        message?;
        messages += 1;
    }
    Ok(messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attack_on_a_secure_cluster_is_refused_and_the_cluster_serves_on() {
    let cluster = start_cluster();
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path();

    // 1. No token, and a wrong one: Unauthenticated, exit 6.
    let no_token = volley_with_env(
        &["jobs", "list", "--scheduler", &cluster.url],
        data,
        &[("VOLLEY_TOKEN".into(), String::new())],
    );
    assert_eq!(no_token.status.code(), Some(6), "{}", stderr(&no_token));
    assert!(
        stderr(&no_token).contains("not authenticated: no credentials"),
        "{}",
        stderr(&no_token)
    );
    let wrong = volley_with_env(
        &["jobs", "list", "--scheduler", &cluster.url],
        data,
        &[("VOLLEY_TOKEN".into(), "guessed-token".into())],
    );
    assert_eq!(wrong.status.code(), Some(6));
    assert!(stderr(&wrong).contains("not valid"), "{}", stderr(&wrong));
    let mut anonymous = raw_scheduler(&cluster.url, None).await;
    let refused = anonymous
        .submit_job(v1::SubmitJobRequest {
            script: "SELECT 1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    // EXPLAIN lists files like a job does: no credential, no plan.
    let explain = anonymous
        .explain_job(v1::ExplainJobRequest {
            logical_plan: vec![1, 2, 3],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(explain.code(), Code::Unauthenticated);
    assert_serves(&cluster, "no token, wrong token").await;

    // 2. A `read` user submitting.
    let script = write(data, "read.sql", "SELECT 1");
    let read = volley_with_env(
        &["submit", &script, "--scheduler", &cluster.url],
        data,
        &as_user("reader"),
    );
    assert_eq!(read.status.code(), Some(6));
    assert!(
        stderr(&read).contains("may not submit"),
        "{}",
        stderr(&read)
    );
    assert_serves(&cluster, "a read user submitting").await;

    // 3. User bob against alice's job: list, wait, cancel, fetch.
    let job = submit_and_wait(
        &cluster,
        data,
        "alice",
        "SELECT n_name, n_regionkey FROM (VALUES ('a', 1), ('b', 2)) AS t(n_name, n_regionkey)",
    );
    let bob_list = volley_with_env(
        &["jobs", "list", "--json", "--scheduler", &cluster.url],
        data,
        &as_user("bob"),
    );
    assert!(bob_list.status.success(), "{}", stderr(&bob_list));
    assert!(!String::from_utf8_lossy(&bob_list.stdout).contains(&job));
    let admin_list = volley(
        &["jobs", "list", "--json", "--scheduler", &cluster.url],
        data,
    );
    let admin_text = String::from_utf8_lossy(&admin_list.stdout).to_string();
    assert!(admin_text.contains(&job), "an admin sees every job");
    for action in ["wait", "status", "cancel"] {
        let denied = volley_with_env(
            &["jobs", action, &job, "--scheduler", &cluster.url],
            data,
            &as_user("bob"),
        );
        assert_eq!(
            denied.status.code(),
            Some(6),
            "{action}: {}",
            stderr(&denied)
        );
        assert!(
            stderr(&denied).contains("belongs to another user"),
            "{action}: {}",
            stderr(&denied)
        );
    }
    let alice = SchedulerClient::connect_with(&cluster.url, credentials().link("alice"))
        .await
        .expect("alice connects");
    let status = alice
        .status(&volley_client::JobId::from(job.as_str()))
        .await
        .expect("alice sees her job");
    let piece = status.result.first().expect("a result piece").clone();
    let endpoint = piece.endpoint.clone();
    let alice_token = Secret::new(credentials().token("alice"));
    let bob_token = Secret::new(credentials().token("bob"));
    assert!(
        fetch(&endpoint, piece.grant.clone(), Some(&alice_token))
            .await
            .is_ok(),
        "the owner fetches her result"
    );
    let stolen = fetch(&endpoint, piece.grant.clone(), Some(&bob_token))
        .await
        .unwrap_err();
    assert_eq!(stolen.code(), Code::PermissionDenied);
    assert!(
        stolen.message().contains("issued to another reader"),
        "{}",
        stolen.message()
    );
    assert_serves(&cluster, "bob against alice's job").await;

    // 4. Tickets against an executor's Flight port.
    let no_credentials = fetch(&endpoint, piece.grant.clone(), None)
        .await
        .unwrap_err();
    assert_eq!(no_credentials.code(), Code::Unauthenticated);
    let mut forged = v1::SignedTicket::decode(piece.grant.as_slice()).expect("signed");
    let mut claims = v1::TicketClaims::decode(forged.claims.as_slice()).expect("claims");
    let mut other_job = claims.clone();
    if let Some(p) = other_job.piece.as_mut() {
        p.job_id = "another-job".into();
    }
    forged.claims = other_job.encode_to_vec();
    let cross_job = fetch(&endpoint, forged.encode_to_vec(), Some(&alice_token))
        .await
        .unwrap_err();
    assert_eq!(cross_job.code(), Code::PermissionDenied);
    assert!(
        cross_job.message().contains("signature"),
        "{}",
        cross_job.message()
    );
    let unsigned = claims.piece.clone().expect("piece").encode_to_vec();
    let refused = fetch(&endpoint, unsigned, Some(&alice_token))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let secret = credentials().cluster_secret();
    let expired = TicketSigner::new(&secret, Duration::ZERO).sign(
        claims.piece.as_ref().expect("piece"),
        &alice_token.hash(),
        SystemTime::now() - Duration::from_secs(1),
    );
    let refused = fetch(&endpoint, expired, Some(&alice_token))
        .await
        .unwrap_err();
    assert!(
        refused.message().contains("expired"),
        "{}",
        refused.message()
    );
    let foreign = TicketSigner::new(
        &ClusterSecret::random().expect("secret"),
        Duration::from_secs(60),
    )
    .sign(
        claims.piece.as_ref().expect("piece"),
        &alice_token.hash(),
        SystemTime::now(),
    );
    let refused = fetch(&endpoint, foreign, Some(&alice_token))
        .await
        .unwrap_err();
    assert!(
        refused.message().contains("signature"),
        "{}",
        refused.message()
    );
    // A job id that is a path, even in a validly signed ticket.
    if let Some(p) = claims.piece.as_mut() {
        p.job_id = "/tmp".into();
    }
    let path_ticket = TicketSigner::new(&secret, Duration::from_secs(60)).sign(
        claims.piece.as_ref().expect("piece"),
        &alice_token.hash(),
        SystemTime::now(),
    );
    let refused = fetch(&endpoint, path_ticket, Some(&alice_token))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("not a valid job id"),
        "{}",
        refused.message()
    );
    // Replayed after the owner released the job: the data is gone.
    alice
        .release(&volley_client::JobId::from(job.as_str()))
        .await
        .expect("release");
    // The release reaches the executor over its control stream: until it
    // has, the data is still served; no time limit is put on that.
    let replayed = loop {
        match fetch(&endpoint, piece.grant.clone(), Some(&alice_token)).await {
            Err(refused) => break refused,
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    assert_eq!(replayed.code(), Code::NotFound, "{}", replayed.message());
    assert_serves(&cluster, "ticket attacks").await;

    // 5. A rogue executor: without the secret (a user token), with 2^31
    // slots, and taking over a live executor's id.
    let mut as_user_alice = raw_scheduler(&cluster.url, Some(&alice_token)).await;
    let register = |id: &str, slots: u32| v1::ExecutorMessage {
        kind: Some(v1::executor_message::Kind::Register(v1::RegisterExecutor {
            executor_id: id.into(),
            endpoint: "https://127.0.0.1:1".into(),
            slots,
            protocol_version: volley_proto::PROTOCOL_VERSION,
            nonce: vec![1; 32],
            ..Default::default()
        })),
    };
    let refused = as_user_alice
        .executor_control(futures::stream::iter(vec![register("exec-rogue", 2)]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let mut as_cluster = raw_scheduler(&cluster.url, Some(&secret.credential())).await;
    let refused = as_cluster
        .executor_control(futures::stream::iter(vec![register(
            "exec-greedy",
            1 << 31,
        )]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("1 to 1024 slots"),
        "{}",
        refused.message()
    );
    let live = as_cluster
        .cluster_info(v1::ClusterInfoRequest {})
        .await
        .expect("cluster info")
        .into_inner()
        .executors[0]
        .executor_id
        .clone();
    let refused = as_cluster
        .executor_control(futures::stream::iter(vec![register(&live, 2)]))
        .await
        .unwrap_err();
    assert!(
        matches!(refused.code(), Code::AlreadyExists | Code::InvalidArgument),
        "{refused:?}"
    );
    let wrong_secret = dir.path().join("wrong-secret");
    ClusterSecret::create_file(&wrong_secret).expect("secret");
    let rogue = std::process::Command::new(binary("volley-executor"))
        .args([
            "--scheduler",
            &cluster.url,
            "--bind",
            "127.0.0.1:0",
            "--work-dir",
        ])
        .arg(dir.path().join("rogue"))
        .arg("--cluster-secret-file")
        .arg(&wrong_secret)
        .arg("--tls-ca")
        .arg(credentials().ca())
        .output()
        .expect("run a rogue executor");
    assert_eq!(rogue.status.code(), Some(1), "{}", stderr(&rogue));
    assert!(stderr(&rogue).contains("not valid"), "{}", stderr(&rogue));
    assert_serves(&cluster, "rogue executors").await;

    // 6. An oversized plan.
    let mut admin = raw_scheduler(
        &cluster.url,
        Some(&Secret::new(credentials().token("admin"))),
    )
    .await;
    let huge = vec![0u8; volley_proto::limits::MAX_PLAN_MESSAGE_BYTES + (1 << 20)];
    let refused = admin
        .submit_job(v1::SubmitJobRequest {
            logical_plan: huge,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused.code(),
            Code::ResourceExhausted | Code::OutOfRange | Code::Internal
        ),
        "{refused:?}"
    );
    assert_serves(&cluster, "an oversized plan").await;

    // 7. Local tables outside the allowed roots, however the path is spelled.
    let outside = "/etc/passwd";
    std::os::unix::fs::symlink(outside, dir.path().join("link.csv")).expect("symlink");
    for location in [
        outside.to_string(),
        format!("{}/../../etc/passwd", dir.path().display()),
        dir.path().join("link.csv").display().to_string(),
        format!("file://{outside}"),
    ] {
        let sql = format!(
            "CREATE EXTERNAL TABLE stolen (line VARCHAR) STORED AS CSV LOCATION '{location}' \
             OPTIONS ('format.has_header' 'false', 'format.delimiter' '~'); \
             SELECT * FROM stolen"
        );
        let read = volley(&["sql", "--scheduler", &cluster.url, "-c", &sql], data);
        assert_eq!(read.status.code(), Some(1), "{location}: {}", stderr(&read));
        assert!(
            stderr(&read).contains("--allow-path"),
            "{location}: {}",
            stderr(&read)
        );
        assert!(!String::from_utf8_lossy(&read.stdout).contains("root:"));
    }
    assert_serves(&cluster, "paths outside the roots").await;

    // 8. COPY onto existing output, whatever its name and format.
    let existing = dir.path().join("keep.csv");
    std::fs::write(&existing, "precious\n").expect("write");
    let full = dir.path().join("full");
    let dotted = dir.path().join("full.d");
    for d in [&full, &dotted] {
        std::fs::create_dir(d).expect("dir");
        std::fs::write(d.join("kept.txt"), "precious").expect("write");
    }
    for (target, clause) in [
        (existing.display().to_string(), "STORED AS CSV"),
        (existing.display().to_string(), "STORED AS PARQUET"),
        (format!("{}/", full.display()), "STORED AS CSV"),
        (dotted.display().to_string(), "STORED AS PARQUET"),
        (
            full.display().to_string(),
            "STORED AS CSV PARTITIONED BY (b)",
        ),
    ] {
        let sql = format!("COPY (SELECT 1 AS a, 2 AS b) TO '{target}' {clause}");
        let copy = volley(&["sql", "--scheduler", &cluster.url, "-c", &sql], data);
        assert_eq!(copy.status.code(), Some(1), "{sql}: {}", stderr(&copy));
        assert!(
            stderr(&copy).contains("never replaces"),
            "{sql}: {}",
            stderr(&copy)
        );
    }
    assert_eq!(
        std::fs::read_to_string(&existing).expect("read"),
        "precious\n"
    );
    for d in [&full, &dotted] {
        let entries: Vec<_> = std::fs::read_dir(d).expect("dir").collect();
        assert_eq!(entries.len(), 1, "{} untouched", d.display());
    }
    assert_serves(&cluster, "COPY onto existing output").await;

    // 9. --param injection: the value stays one literal.
    let script = write(data, "param.sql", "SELECT ${v} AS v");
    let injected = volley(
        &[
            "submit",
            &script,
            "--scheduler",
            &cluster.url,
            "--param",
            "v=x'; DROP TABLE t; SELECT '1",
            "--wait",
            "--json",
        ],
        data,
    );
    assert!(injected.status.success(), "{}", stderr(&injected));
    let status: serde_json::Value = serde_json::from_slice(&injected.stdout).expect("json");
    assert_eq!(status["statements"]["total"], 1, "{status}");
    assert_eq!(status["state"], "succeeded", "{status}");

    // 10. Plain HTTP against the TLS scheduler, and TLS against a plain one.
    let plain_client = volley_with_env(
        &[
            "jobs",
            "list",
            "--scheduler",
            &cluster.url.replace("https://", "http://"),
        ],
        data,
        &[("VOLLEY_TLS_CA".into(), String::new())],
    );
    assert_eq!(
        plain_client.status.code(),
        Some(3),
        "{}",
        stderr(&plain_client)
    );
    assert!(
        stderr(&plain_client).contains("https://"),
        "{}",
        stderr(&plain_client)
    );
    let mut plain = std::process::Command::new(binary("volley-scheduler"));
    plain.args(["--bind", "127.0.0.1:0", "--insecure"]);
    let (_plain_scheduler, line) = start(plain);
    let plain_url = line
        .rsplit(' ')
        .next()
        .expect("URL")
        .replace("http://", "https://");
    let tls_client = volley(&["jobs", "list", "--scheduler", &plain_url], data);
    assert_eq!(tls_client.status.code(), Some(3), "{}", stderr(&tls_client));
    assert!(
        stderr(&tls_client).contains("TLS"),
        "{}",
        stderr(&tls_client)
    );
    let no_ca = volley_with_env(
        &["jobs", "list", "--scheduler", &cluster.url],
        data,
        &[("VOLLEY_TLS_CA".into(), String::new())],
    );
    assert_eq!(no_ca.status.code(), Some(2), "{}", stderr(&no_ca));
    assert!(stderr(&no_ca).contains("--tls-ca"), "{}", stderr(&no_ca));
    assert_serves(&cluster, "scheme mismatches").await;

    // 11. The scheduler will not start open by accident.
    let open = std::process::Command::new(binary("volley-scheduler"))
        .args(["--bind", "127.0.0.1:0"])
        .output()
        .expect("run");
    assert_eq!(open.status.code(), Some(2));
    assert!(stderr(&open).contains("--insecure"), "{}", stderr(&open));

    // Finally: no secret in any log the cluster wrote.
    let logs = cluster.logs();
    assert!(
        logs.contains("executor registered"),
        "the logs were written"
    );
    for secret in credentials().secrets() {
        assert!(!logs.contains(&secret), "a secret appears in the logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_refuses_a_scheduler_that_cannot_prove_the_cluster_secret() {
    // A fake scheduler: accepts the registration but answers with a proof
    // made without the cluster's secret.
    let fake = FakeScheduler;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(v1::scheduler_service_server::SchedulerServiceServer::new(
                fake,
            ))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let work = tempfile::tempdir().expect("dir");
    let output = tokio::process::Command::new(binary("volley-executor"))
        .args(["--scheduler", &url, "--bind", "127.0.0.1:0", "--work-dir"])
        .arg(work.path())
        .arg("--cluster-secret-file")
        .arg(credentials().file("secret"))
        .output()
        .await
        .expect("run the executor");
    server.abort();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("did not prove it holds the cluster secret"),
        "{stderr}"
    );
}

struct FakeScheduler;

type BoxStream<T> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl v1::scheduler_service_server::SchedulerService for FakeScheduler {
    async fn submit_job(
        &self,
        _: tonic::Request<v1::SubmitJobRequest>,
    ) -> Result<tonic::Response<v1::SubmitJobResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("fake"))
    }

    type WatchJobStream = BoxStream<v1::JobStatus>;

    async fn watch_job(
        &self,
        _: tonic::Request<v1::WatchJobRequest>,
    ) -> Result<tonic::Response<Self::WatchJobStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("fake"))
    }

    async fn cancel_job(
        &self,
        _: tonic::Request<v1::CancelJobRequest>,
    ) -> Result<tonic::Response<v1::CancelJobResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("fake"))
    }

    async fn release_job(
        &self,
        _: tonic::Request<v1::ReleaseJobRequest>,
    ) -> Result<tonic::Response<v1::ReleaseJobResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("fake"))
    }

    async fn explain_job(
        &self,
        _: tonic::Request<v1::ExplainJobRequest>,
    ) -> Result<tonic::Response<v1::ExplainJobResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("fake"))
    }

    async fn cluster_info(
        &self,
        _: tonic::Request<v1::ClusterInfoRequest>,
    ) -> Result<tonic::Response<v1::ClusterInfoResponse>, tonic::Status> {
        Ok(tonic::Response::new(v1::ClusterInfoResponse::default()))
    }

    async fn list_jobs(
        &self,
        _: tonic::Request<v1::ListJobsRequest>,
    ) -> Result<tonic::Response<v1::ListJobsResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("fake"))
    }

    async fn drain_executor(
        &self,
        _: tonic::Request<v1::DrainExecutorRequest>,
    ) -> Result<tonic::Response<v1::DrainExecutorResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("fake"))
    }

    type ExecutorControlStream = BoxStream<v1::SchedulerMessage>;

    async fn executor_control(
        &self,
        _: tonic::Request<tonic::Streaming<v1::ExecutorMessage>>,
    ) -> Result<tonic::Response<Self::ExecutorControlStream>, tonic::Status> {
        let registered = v1::SchedulerMessage {
            kind: Some(v1::scheduler_message::Kind::Registered(v1::Registered {
                protocol_version: volley_proto::PROTOCOL_VERSION,
                proof: vec![0; 32],
                epoch: 0,
            })),
        };
        let remove = v1::SchedulerMessage {
            kind: Some(v1::scheduler_message::Kind::RemoveJobData(
                v1::RemoveJobData {
                    job_id: "/".into(),
                    stage_ids: Vec::new(),
                },
            )),
        };
        Ok(tonic::Response::new(Box::pin(futures::stream::iter(vec![
            Ok(registered),
            Ok(remove),
        ]))))
    }
}
