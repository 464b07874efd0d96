//! Bulk Data Access (IG 2.0): asynchronous `$export` at system, Patient and Group level, its
//! status (`$bulk-status`: 202 with `X-Progress` while running, the manifest when done,
//! DELETE cancels) and downloads (`$bulk-file`, NDJSON streamed from the store chunk by
//! chunk).
//!
//! A kick-off stores a `bulk_job` row with who asked (the principal the job runs as, so the
//! Guard confines the export exactly as it confines that token's searches) and enqueues a job
//! on the node-independent queue: any node runs it, a node that dies mid-export leaves it to
//! be restarted from scratch by another (its lease expires), and a job out of attempts is
//! marked failed, never left running. Status, download and cancel are answered by any node
//! for the same client and user only (anyone else gets 404), and each is audited as an
//! operation like every other interaction.

pub mod export;
pub mod files;
pub mod import;

use super::{Body, Context, FhirResponse, Status};
use crate::auth::{Principal, Role};
use crate::fhir::outcome::{ErrorKind, Issue, Outcome};
use crate::fhir::types::Instant;
use crate::store::{BulkJobRow, NewBulkJob};
use serde_json::{Value, json};

/// How a bulk operation was called (the operation layer's request, as this module needs it).
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    pub resource_type: Option<String>,
    pub id: Option<String>,
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
    /// The `Prefer` header.
    pub prefer: Option<String>,
    /// The `Accept` header.
    pub accept: Option<String>,
}

/// The HTTP method of a [`Call`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Delete,
}

/// The job kind of an export on the queue.
pub const EXPORT_JOB: &str = "bulk-export";
/// Attempts of an export job (a restart after a node died counts as one).
pub const EXPORT_ATTEMPTS: u32 = 3;
/// Jobs one client and user may have queued or running at once: each copies data and holds
/// a worker, so a token cannot fill the disk or the queue by asking again and again.
pub const MAX_ACTIVE_JOBS: u64 = 5;

/// Stores a kicked-off job and puts it on the queue as `job_kind`; a job that cannot be
/// queued is marked failed, never left accepted.
pub(super) async fn queue(ctx: &Context, job: NewBulkJob, job_kind: &str) -> Result<(), Outcome> {
    let bulk = ctx.store.bulk();
    bulk.create(&job).await?;
    let now = job.created;
    let queued = crate::store::NewJob {
        kind: job_kind.to_string(),
        key: None,
        payload: json!({"id": job.id}).to_string(),
        run_at: now,
        max_attempts: EXPORT_ATTEMPTS,
    };
    if let Err(e) = ctx.store.jobs().enqueue(&queued, now).await {
        let _ = bulk
            .transition(
                &job.id,
                &["accepted"],
                "failed",
                Some("could not be queued"),
                Some(now),
                Some(now),
            )
            .await;
        return Err(e.into());
    }
    ctx.store.job_signal().notify_waiters();
    Ok(())
}

/// 429 when the caller has [`MAX_ACTIVE_JOBS`] queued or running.
pub async fn check_active(ctx: &Context) -> Result<(), Outcome> {
    let owner = owner_of(ctx.guard.principal());
    if ctx.store.bulk().active(&owner).await? >= MAX_ACTIVE_JOBS {
        return Err(Outcome::new(
            ErrorKind::TooManyRequests,
            format!(
                "{MAX_ACTIVE_JOBS} bulk data jobs of this client are queued or running: wait \
                 for one to finish, or cancel one"
            ),
        ));
    }
    Ok(())
}

/// A node's bulk data settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// How long a finished job's manifest and files stay (ms).
    pub ttl_ms: i64,
    /// Bytes after which an output file is closed and the next one of its type begun.
    pub file_bytes: usize,
    /// `Retry-After` of a status answer while the job runs (seconds).
    pub retry_after_secs: u64,
    /// The directory `$import` may read files from (None: no files, only http(s) URLs).
    pub import_dir: Option<std::path::PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ttl_ms: 3_600_000,
            file_bytes: 64 << 20,
            retry_after_secs: 2,
            import_dir: None,
        }
    }
}

/// Who may poll, download and cancel a job: the client and the user (empty with
/// authorization off).
pub fn owner_of(principal: Option<&Principal>) -> String {
    principal
        .map(|p| format!("{}|{}", p.client_id, p.user.as_deref().unwrap_or("")))
        .unwrap_or_default()
}

/// The principal a job runs as, as stored.
pub fn principal_json(p: &Principal) -> String {
    json!({
        "client": p.client_id,
        "user": p.user,
        "role": p.role.map(Role::as_str),
        "fhirUser": p.fhir_user,
        "patient": p.patient_context,
        "scope": p.scope,
    })
    .to_string()
}

/// The stored principal back.
pub fn principal_from(text: &str) -> Option<Principal> {
    let v: Value = serde_json::from_str(text).ok()?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let scope = s("scope").unwrap_or_default();
    Some(Principal {
        client_id: s("client")?,
        user: s("user"),
        role: s("role").and_then(|r| Role::parse(&r).ok()),
        fhir_user: s("fhirUser"),
        patient_context: s("patient"),
        grants: crate::auth::parse_scopes(&scope),
        scope,
        token_id: None,
    })
}

/// The status URL of a job.
pub fn status_url(base: &str, id: &str) -> String {
    format!("{base}/$bulk-status?_jobId={id}")
}

fn file_url(base: &str, id: &str, file_no: i64) -> String {
    format!("{base}/$bulk-file?_jobId={id}&file={file_no}")
}

fn unknown_job() -> Outcome {
    Outcome::not_found("No such bulk data job (it is unknown, expired or cancelled)").at("_jobId")
}

/// The job named by `_jobId`, if the caller owns it and it has not expired or been cancelled.
async fn owned_job(ctx: &Context, op: &Call) -> Result<BulkJobRow, Outcome> {
    let id = op
        .query
        .iter()
        .find(|(k, _)| k == "_jobId")
        .map(|(_, v)| v.clone())
        .ok_or_else(|| Outcome::bad_request("_jobId is required").at("_jobId"))?;
    if !crate::fhir::types::is_valid_id(&id) {
        return Err(unknown_job());
    }
    let job = ctx.store.bulk().job(&id).await?.ok_or_else(unknown_job)?;
    let now = Instant::now().millis();
    if job.owner != owner_of(ctx.guard.principal())
        || job.state == "cancelled"
        || job.expires.is_some_and(|e| e <= now)
    {
        return Err(unknown_job());
    }
    Ok(job)
}

/// `$bulk-status`: GET polls, DELETE cancels.
pub async fn status(ctx: &Context, _base: &str, op: &Call) -> Result<FhirResponse, Outcome> {
    let job = owned_job(ctx, op).await?;
    match op.method {
        Method::Delete => cancel(ctx, &job).await,
        Method::Post => Err(Outcome::new(
            ErrorKind::MethodNotAllowed,
            "Poll the status with GET; cancel with DELETE",
        )),
        Method::Get => poll(ctx, &job).await,
    }
}

async fn cancel(ctx: &Context, job: &BulkJobRow) -> Result<FhirResponse, Outcome> {
    let now = Instant::now().millis();
    let cancelled = ctx
        .store
        .bulk()
        .transition(
            &job.id,
            &["accepted", "running", "done", "failed"],
            "cancelled",
            None,
            Some(now),
            Some(now),
        )
        .await?;
    if !cancelled {
        return Err(unknown_job());
    }
    ctx.store.bulk().clear_files(&job.id).await?;
    let mut r = FhirResponse::new(Status::Accepted);
    r.body = Some(Body::Json(crate::fhir::outcome::operation_outcome(&[
        Issue::information(
            "informational",
            format!("Bulk data job {} cancelled; its files are removed", job.id),
        ),
    ])));
    Ok(r)
}

async fn poll(ctx: &Context, job: &BulkJobRow) -> Result<FhirResponse, Outcome> {
    match job.state.as_str() {
        "accepted" | "running" => {
            let mut r = FhirResponse::new(Status::Accepted);
            let progress = job.progress.clone().unwrap_or_else(|| {
                if job.state == "accepted" {
                    "queued".to_string()
                } else {
                    "running".to_string()
                }
            });
            r.headers.push(("x-progress", clip(&progress, 100)));
            r.headers
                .push(("retry-after", ctx.bulk.retry_after_secs.max(1).to_string()));
            Ok(r)
        }
        "failed" => Err(Outcome::with_issues(
            ErrorKind::Internal,
            vec![Issue::error(
                "exception",
                format!(
                    "The bulk data job failed: {}",
                    job.error.as_deref().unwrap_or("unknown error")
                ),
            )],
        )),
        _ => {
            let files = ctx.store.bulk().files(&job.id).await?;
            let entry = |f: &crate::store::BulkFileRow| {
                json!({
                    "type": f.resource_type,
                    "url": file_url(&job.base, &job.id, f.file_no),
                    "count": f.count,
                })
            };
            let output: Vec<Value> = files
                .iter()
                .filter(|f| f.kind == "output")
                .map(entry)
                .collect();
            let error: Vec<Value> = files
                .iter()
                .filter(|f| f.kind == "error")
                .map(entry)
                .collect();
            let mut manifest = json!({
                "transactionTime": Instant::from_millis(job.transaction_time).to_fhir(),
                "request": job.request,
                "requiresAccessToken": ctx.security == crate::auth::discovery::Security::Smart,
                "output": output,
                "error": error,
            });
            if job.kind == "import"
                && let Some(obj) = manifest.as_object_mut()
            {
                obj.remove("requiresAccessToken");
            }
            let mut r = FhirResponse::new(Status::Ok);
            if let Some(expires) = job.expires {
                r.headers
                    .push(("expires", Instant::from_millis(expires).to_http_date()));
            }
            r.body = Some(Body::Json(manifest));
            Ok(r)
        }
    }
}

/// `$bulk-file`: one output or error file of a finished job, as NDJSON streamed from the
/// store.
pub async fn file(ctx: &Context, _base: &str, op: &Call) -> Result<FhirResponse, Outcome> {
    if op.method != Method::Get {
        return Err(Outcome::new(
            ErrorKind::MethodNotAllowed,
            "Bulk data files are downloaded with GET",
        ));
    }
    let job = owned_job(ctx, op).await?;
    let file_no: i64 = op
        .query
        .iter()
        .find(|(k, _)| k == "file")
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| Outcome::bad_request("file must be a file number").at("file"))?;
    if job.state != "done" {
        return Err(Outcome::not_found("The job has not finished").at("_jobId"));
    }
    let files = ctx.store.bulk().files(&job.id).await?;
    if !files.iter().any(|f| f.file_no == file_no) {
        return Err(Outcome::not_found("No such file in this job").at("file"));
    }
    let mut r = FhirResponse::new(Status::Ok);
    r.body = Some(Body::Ndjson(files::ChunkSource::new(
        ctx.store.clone(),
        &job.id,
        file_no,
    )));
    Ok(r)
}

fn clip(s: &str, n: usize) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(n)
        .collect::<String>()
}

/// Runs one attempt of a job (the queue's handler): `last` when no attempt follows, so a
/// failure is final and shown as the job's failure.
/// `Err`: try again later (the queue retries).
pub async fn run_job(ctx: &Context, id: &str, last: bool) -> Result<(), String> {
    let bulk = ctx.store.bulk();
    let job = bulk
        .job(id)
        .await
        .map_err(|e| format!("cannot read the bulk job: {e}"))?;
    let Some(job) = job else {
        return Ok(());
    };
    if matches!(job.state.as_str(), "done" | "failed" | "cancelled") {
        return Ok(());
    }
    let result = match job.kind.as_str() {
        "export" => export::run(ctx, &job).await,
        "import" => import::run(ctx, &job).await,
        other => Err(Outcome::internal(format!("unknown bulk job kind {other}"))),
    };
    let now = Instant::now().millis();
    match result {
        Ok(()) => Ok(()),
        Err(o) if last || o.kind != ErrorKind::Unavailable && o.kind != ErrorKind::Contention => {
            let why = o
                .issues
                .first()
                .map(|i| i.diagnostics.clone())
                .unwrap_or_else(|| "failed".into());
            let _ = bulk.clear_files(id).await;
            let _ = bulk
                .transition(
                    id,
                    &["accepted", "running"],
                    "failed",
                    Some(&why),
                    Some(now),
                    Some(now + ctx.bulk.ttl_ms),
                )
                .await;
            Ok(())
        }
        Err(o) => Err(format!("bulk job attempt failed: {o}")),
    }
}
