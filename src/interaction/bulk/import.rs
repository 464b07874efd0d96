//! `$import` (the Bulk Data Import draft, ping and pull): a manifest names NDJSON sources —
//! http(s) URLs, or files under the import directory the operator configured
//! (`--import-dir`; nothing outside it) — and the job reads them line by line, writes the
//! resources in transactions of [`BATCH`] (their ids kept, so references between the files
//! hold), each resource validated and indexed as any write, and checks referential integrity
//! once at the end. A failing line never takes its neighbours down: a failed transaction is
//! retried as a batch, and each line that fails is reported with its input and line number.
//!
//! The same [`Importer`] serves `healporium import ndjson` on the command line.

use super::files::Files;
use super::{Call, Method};
use super::{owner_of, principal_from, principal_json, status_url};
use crate::auth::{Perm, Principal};
use crate::fhir::outcome::{ErrorKind, Issue, Outcome};
use crate::fhir::types::{Id, Instant};
use crate::interaction::{
    Body, Context, FhirRequest, FhirResponse, Interaction, Preconditions, PreferReturn, Status,
};
use crate::store::{BulkJobRow, NewBulkJob};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

/// The job kind of an import on the queue.
pub const IMPORT_JOB: &str = "bulk-import";
/// Resources per transaction.
pub const BATCH: usize = 100;
/// The longest line read (a larger resource is reported, not read).
const MAX_LINE: usize = 16 << 20;
/// Inputs of one manifest, at most.
const MAX_INPUTS: usize = 1000;

/// One source of a manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Input {
    /// The resource type its lines must be (None: any).
    pub resource_type: Option<String>,
    pub url: String,
}

/// An import's parameters as stored with its job.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Params {
    pub inputs: Vec<Input>,
}

fn bad(msg: impl Into<String>, at: &str) -> Outcome {
    Outcome::bad_request(msg).at(at)
}

fn text_of(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

/// The value of a Parameters part (`valueX`).
fn part_value(p: &Value) -> Option<&Value> {
    p.as_object()?
        .iter()
        .find(|(k, _)| k.starts_with("value"))
        .map(|(_, v)| v)
}

/// The manifest: a Parameters resource (`inputFormat`, `input` with `type` and `url` parts)
/// or the draft's JSON manifest (`inputFormat`, `input: [{type, url}]`).
fn manifest(body: &Value) -> Result<(Option<String>, Vec<Input>), Outcome> {
    let mut format = None;
    let mut inputs = Vec::new();
    if body.get("resourceType").and_then(Value::as_str) == Some("Parameters") {
        for p in body
            .get("parameter")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            match p.get("name").and_then(Value::as_str) {
                Some("inputFormat") => format = part_value(p).and_then(text_of),
                Some("input") => {
                    let parts = p.get("part").and_then(Value::as_array);
                    let get = |name: &str| {
                        parts
                            .into_iter()
                            .flatten()
                            .find(|q| q.get("name").and_then(Value::as_str) == Some(name))
                            .and_then(part_value)
                            .and_then(text_of)
                    };
                    let url = get("url").ok_or_else(|| {
                        bad("Each input needs a url part", "Parameters.parameter")
                    })?;
                    inputs.push(Input {
                        resource_type: get("type"),
                        url,
                    });
                }
                _ => {}
            }
        }
    } else if body.get("resourceType").is_none() {
        format = body.get("inputFormat").and_then(text_of);
        for i in body
            .get("input")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let url = i
                .get("url")
                .and_then(text_of)
                .ok_or_else(|| bad("Each input needs a url", "input"))?;
            inputs.push(Input {
                resource_type: i.get("type").and_then(text_of),
                url,
            });
        }
    } else {
        return Err(bad(
            "$import takes a Parameters resource or an import manifest",
            "resourceType",
        ));
    }
    Ok((format, inputs))
}

/// A file input's path: under `dir` (after resolving links), or refused.
pub fn local_path(dir: Option<&Path>, url: &str) -> Result<PathBuf, Outcome> {
    let Some(dir) = dir else {
        return Err(bad(
            "This server reads no files: it has no import directory (--import-dir)",
            "input.url",
        ));
    };
    let rel = url.strip_prefix("file://").unwrap_or(url);
    let path = if Path::new(rel).is_absolute() {
        PathBuf::from(rel)
    } else {
        dir.join(rel)
    };
    let root = std::fs::canonicalize(dir)
        .map_err(|_| Outcome::new(ErrorKind::Unavailable, "The import directory is missing"))?;
    let canon = std::fs::canonicalize(&path)
        .map_err(|_| bad("No such file in the import directory", "input.url"))?;
    if !canon.starts_with(&root) || !canon.is_file() {
        return Err(bad(
            "Only files inside the import directory can be imported",
            "input.url",
        ));
    }
    Ok(canon)
}

fn is_http(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://")
}

/// `POST [base]/$import`.
pub async fn kick_off(ctx: &Context, base: &str, op: &Call) -> Result<FhirResponse, Outcome> {
    if op.resource_type.is_some() || op.method != Method::Post {
        return Err(Outcome::bad_request(
            "$import is a POST of a manifest to the server's base",
        ));
    }
    let prefer = op.prefer.clone().unwrap_or_default().to_ascii_lowercase();
    if !prefer
        .split([',', ';'])
        .any(|t| t.trim() == "respond-async")
    {
        return Err(Outcome::bad_request(
            "$import runs asynchronously: send Prefer: respond-async",
        ));
    }
    // it fetches URLs and reads the server's files: server administration
    ctx.guard.require_system(Perm::Create)?;
    ctx.guard.require_system(Perm::Update)?;
    let body = op
        .body
        .as_ref()
        .ok_or_else(|| Outcome::bad_request("$import needs a manifest in its body"))?;
    let (format, inputs) = manifest(body)?;
    if let Some(f) = format
        && !["application/fhir+ndjson", "application/ndjson", "ndjson"].contains(&f.as_str())
    {
        return Err(bad(
            "inputFormat must be application/fhir+ndjson",
            "inputFormat",
        ));
    }
    if inputs.is_empty() || inputs.len() > MAX_INPUTS {
        return Err(bad(
            format!("A manifest names 1 to {MAX_INPUTS} inputs"),
            "input",
        ));
    }
    for i in &inputs {
        if let Some(t) = &i.resource_type
            && ctx.defs.resource_type(t).is_none()
        {
            return Err(bad(
                "An input's type is not a FHIR R4 resource type",
                "input.type",
            ));
        }
        if !is_http(&i.url) {
            local_path(ctx.bulk.import_dir.as_deref(), &i.url)?;
        }
    }
    super::check_active(ctx).await?;
    let id = Id::generate().to_string();
    let now = Instant::now().millis();
    super::queue(
        ctx,
        NewBulkJob {
            id: id.clone(),
            kind: "import".to_string(),
            owner: owner_of(ctx.guard.principal()),
            principal: ctx.guard.principal().map(principal_json),
            request: format!("{base}/$import"),
            base: base.to_string(),
            params: serde_json::to_string(&Params { inputs })
                .map_err(|_| Outcome::internal("Cannot store the import's manifest"))?,
            transaction_time: now,
            created: now,
        },
        IMPORT_JOB,
    )
    .await?;
    let mut r = FhirResponse::new(Status::Accepted);
    r.content_location = Some(status_url(base, &id));
    r.body = Some(Body::Json(crate::fhir::outcome::operation_outcome(&[
        Issue::information(
            "informational",
            format!("Import {id} accepted; poll the URL in Content-Location"),
        ),
    ])));
    Ok(r)
}

/// Lines of an input, read as they arrive.
pub enum Lines {
    Http {
        response: reqwest::Response,
        buf: Vec<u8>,
        done: bool,
    },
    File(tokio::io::Lines<tokio::io::BufReader<tokio::fs::File>>),
}

impl Lines {
    /// Opens an input: an http(s) URL, or a file under `dir`.
    pub async fn open(url: &str, dir: Option<&Path>, token: Option<&str>) -> Result<Lines, String> {
        if is_http(url) {
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::limited(3))
                .build()
                .map_err(|e| format!("no HTTP client: {e}"))?;
            let mut req = client.get(url).header("accept", "application/fhir+ndjson");
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let response = req.send().await.map_err(|e| format!("cannot fetch: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("the source answered {}", response.status()));
            }
            return Ok(Lines::Http {
                response,
                buf: Vec::new(),
                done: false,
            });
        }
        let path = local_path(dir, url).map_err(|o| o.to_string())?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| format!("cannot open: {e}"))?;
        use tokio::io::AsyncBufReadExt;
        Ok(Lines::File(tokio::io::BufReader::new(file).lines()))
    }

    /// The next line (without its newline), None at the end.
    pub async fn next_line(&mut self) -> Result<Option<String>, String> {
        match self {
            Lines::File(lines) => lines.next_line().await.map_err(|e| format!("{e}")),
            Lines::Http {
                response,
                buf,
                done,
            } => loop {
                if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let rest = buf.split_off(pos + 1);
                    let mut line = std::mem::replace(buf, rest);
                    line.pop();
                    return String::from_utf8(line)
                        .map(Some)
                        .map_err(|_| "a line is not UTF-8".to_string());
                }
                if *done {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let line = std::mem::take(buf);
                    return String::from_utf8(line)
                        .map(Some)
                        .map_err(|_| "a line is not UTF-8".to_string());
                }
                if buf.len() > MAX_LINE {
                    return Err(format!("a line is longer than {MAX_LINE} bytes"));
                }
                match response.chunk().await {
                    Ok(Some(bytes)) => buf.extend_from_slice(&bytes),
                    Ok(None) => *done = true,
                    Err(e) => return Err(format!("the download broke off: {e}")),
                }
            },
        }
    }
}

/// Where a line came from.
#[derive(Debug, Clone)]
struct Origin {
    input: String,
    line: u64,
    resource_type: String,
}

/// An expression into a Bundle entry's resource, as an expression into that resource.
fn in_resource(expression: &str, resource_type: &str) -> String {
    match expression
        .strip_prefix("Bundle.entry[")
        .and_then(|r| r.split_once("].resource"))
    {
        Some((_, rest)) => format!("{resource_type}{rest}"),
        None => expression.to_string(),
    }
}

/// Writes resources in transactions, reports failures per line, and checks the references
/// of everything it wrote at the end.
pub struct Importer<'a> {
    ctx: Context,
    base: String,
    principal: Option<Principal>,
    batch: Vec<(Origin, Value)>,
    /// What was written (for the integrity check).
    written: Vec<(String, String)>,
    errors: Option<&'a mut Files>,
    /// Failures (when no error file is kept: the command line).
    pub failures: Vec<String>,
    pub imported: u64,
    pub failed: u64,
}

impl<'a> Importer<'a> {
    /// Writes on `ctx` as `principal` (referential integrity is checked at the end, not per
    /// write); failures go to `errors` as OperationOutcome lines, or to `failures`.
    pub fn new(
        ctx: &Context,
        base: &str,
        principal: Option<Principal>,
        errors: Option<&'a mut Files>,
    ) -> Importer<'a> {
        Importer {
            ctx: Context {
                integrity: false,
                ..ctx.clone()
            },
            base: base.to_string(),
            principal,
            batch: Vec::new(),
            written: Vec::new(),
            errors,
            failures: Vec::new(),
            imported: 0,
            failed: 0,
        }
    }

    async fn fail(&mut self, input: &str, line: u64, o: &Outcome) -> Result<(), Outcome> {
        self.failed += 1;
        self.report(input, line, o).await
    }

    /// Writes an outcome for `input` (and `line`, when it is one) to the errors.
    async fn report(&mut self, input: &str, line: u64, o: &Outcome) -> Result<(), Outcome> {
        let first = o.issues.first();
        let why = first.map(|i| i.diagnostics.clone()).unwrap_or_default();
        let place = if line > 0 {
            format!("{input} line {line}")
        } else {
            input.to_string()
        };
        match self.errors.as_deref_mut() {
            Some(files) => {
                let mut issue = json!({
                    "severity": "error",
                    "code": first.map_or("processing", |i| i.code),
                    "diagnostics": format!("{place}: {why}"),
                    "location": [place],
                });
                if let Some(e) = first.filter(|i| !i.expression.is_empty())
                    && let Some(obj) = issue.as_object_mut()
                {
                    obj.insert("expression".into(), json!(e.expression));
                }
                let outcome = json!({"resourceType": "OperationOutcome", "issue": [issue]});
                files
                    .line("error", "OperationOutcome", &outcome.to_string())
                    .await
            }
            None => {
                if self.failures.len() < 1000 {
                    self.failures.push(format!("{place}: {why}"));
                }
                Ok(())
            }
        }
    }

    /// Reports that an input could not be read at all.
    pub async fn unreadable(&mut self, input: &str, why: &str) -> Result<(), Outcome> {
        self.fail(input, 0, &Outcome::new(ErrorKind::Unavailable, why))
            .await
    }

    /// Takes one line of `input` (of `resource_type` when given).
    pub async fn line(
        &mut self,
        input: &str,
        resource_type: Option<&str>,
        line: u64,
        text: &str,
    ) -> Result<(), Outcome> {
        if text.trim().is_empty() {
            return Ok(());
        }
        let v = match crate::fhir::resource::parse_json_object(text.as_bytes()) {
            Ok(v) => v,
            Err(o) => return self.fail(input, line, &o).await,
        };
        let Some(rt) = v.get("resourceType").and_then(Value::as_str) else {
            let o = Outcome::new(ErrorKind::Structure, "The line has no resourceType")
                .at("resourceType");
            return self.fail(input, line, &o).await;
        };
        if let Some(t) = resource_type
            && t != rt
        {
            let o = Outcome::new(ErrorKind::Invalid, format!("A {rt} in an input of {t}")).at(rt);
            return self.fail(input, line, &o).await;
        }
        let request = match v.get("id").and_then(Value::as_str) {
            Some(id) => json!({"method": "PUT", "url": format!("{rt}/{id}")}),
            None => json!({"method": "POST", "url": rt}),
        };
        self.batch.push((
            Origin {
                input: input.to_string(),
                line,
                resource_type: rt.to_string(),
            },
            json!({"resource": v, "request": request}),
        ));
        if self.batch.len() >= BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    async fn bundle(&self, kind: &str, entries: Vec<Value>) -> Result<Value, Outcome> {
        let request = FhirRequest {
            base: self.base.clone(),
            interaction: Interaction::Bundle {
                bundle: json!({"resourceType": "Bundle", "type": kind, "entry": entries}),
            },
            preconditions: Preconditions::default(),
            cascade: false,
            provenance: None,
            prefer: PreferReturn::Minimal,
            principal: self.principal.clone(),
            source: None,
        };
        let r = crate::interaction::handle(&self.ctx, request).await?;
        r.body_value()
    }

    /// The written resource of a response entry.
    fn written_key(entry: &Value) -> Option<(String, String)> {
        let location = entry.get("response")?.get("location")?.as_str()?;
        let mut parts = location.rsplit("/_history/").last()?.rsplit('/');
        let id = parts.next()?;
        let t = parts.next()?;
        Some((t.to_string(), id.to_string()))
    }

    /// Writes what is waiting: one transaction, or entry by entry when one of them fails.
    pub async fn flush(&mut self) -> Result<(), Outcome> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let entries: Vec<Value> = batch.iter().map(|(_, e)| e.clone()).collect();
        match self.bundle("transaction", entries.clone()).await {
            Ok(response) => {
                let results = response.get("entry").and_then(Value::as_array);
                for e in results.into_iter().flatten() {
                    if let Some(k) = Self::written_key(e) {
                        self.written.push(k);
                    }
                }
                self.imported += batch.len() as u64;
                return Ok(());
            }
            Err(o) => tracing::debug!(
                error = %o.issues.first().map(|i| i.diagnostics.as_str()).unwrap_or(""),
                "an import transaction failed; its lines are written one by one"
            ),
        }
        // some entry failed: each on its own, to know which
        let response = match self.bundle("batch", entries).await {
            Ok(r) => r,
            Err(o) => {
                for (origin, _) in &batch {
                    self.fail(&origin.input, origin.line, &o).await?;
                }
                return Ok(());
            }
        };
        let results: Vec<Value> = response
            .get("entry")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (i, (origin, _)) in batch.iter().enumerate() {
            let result = results.get(i);
            let ok = result
                .and_then(|e| e.get("response"))
                .and_then(|r| r.get("status"))
                .and_then(Value::as_str)
                .is_some_and(|s| s.starts_with('2'));
            if ok {
                self.imported += 1;
                if let Some(k) = result.and_then(Self::written_key) {
                    self.written.push(k);
                }
                continue;
            }
            let outcome = result
                .and_then(|e| e.get("response"))
                .and_then(|r| r.get("outcome"))
                .and_then(|o| o.get("issue"))
                .and_then(Value::as_array)
                .and_then(|is| is.first())
                .map(|i| {
                    let mut o = Outcome::new(
                        ErrorKind::Invalid,
                        i.get("diagnostics")
                            .and_then(Value::as_str)
                            .unwrap_or("rejected"),
                    );
                    for e in i
                        .get("expression")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                    {
                        o = o.at(in_resource(e, &origin.resource_type));
                    }
                    o
                })
                .unwrap_or_else(|| Outcome::new(ErrorKind::Invalid, "rejected"));
            self.fail(&origin.input, origin.line, &outcome).await?;
        }
        Ok(())
    }

    /// Referential integrity of everything written, once: each reference to a local
    /// resource that does not exist is reported (the resources stay). Returns how many.
    pub async fn check_references(&mut self) -> Result<u64, Outcome> {
        self.flush().await?;
        let written: HashSet<(String, String)> = self.written.iter().cloned().collect();
        let mut dangling = 0u64;
        let keys = std::mem::take(&mut self.written);
        for chunk in keys.chunks(500) {
            let targets: BTreeSet<(String, String)> = self
                .ctx
                .store
                .links_from(chunk)
                .await?
                .into_iter()
                .collect();
            let targets: Vec<(String, String)> = targets.into_iter().collect();
            let found: HashSet<(String, String)> = self
                .ctx
                .store
                .read_many(&targets)
                .await?
                .into_iter()
                .map(|v| (v.resource_type, v.id))
                .collect();
            for (t, id) in targets.iter().filter(|k| !found.contains(*k)) {
                // each source once, with every parameter it refers through
                let mut sources: std::collections::BTreeMap<(String, String), Vec<String>> =
                    std::collections::BTreeMap::new();
                for (rt, rid, param, _) in self.ctx.store.referencing(t, Some(id)).await? {
                    let source = (rt, rid);
                    if written.contains(&source) && chunk.contains(&source) {
                        sources.entry(source).or_default().push(param);
                    }
                }
                for ((rt, rid), params) in sources {
                    dangling += 1;
                    let o = Outcome::new(
                        ErrorKind::Invalid,
                        format!(
                            "{rt}/{rid} refers to {t}/{id} ({}), which does not exist",
                            params.join(", ")
                        ),
                    );
                    // reported, though the resource is stored
                    self.report(&format!("{rt}/{rid}"), 0, &o).await?;
                }
            }
        }
        self.written = keys;
        Ok(dangling)
    }
}

/// Runs an import job.
pub async fn run(ctx: &Context, job: &BulkJobRow) -> Result<(), Outcome> {
    let bulk = ctx.store.bulk();
    if !bulk
        .transition(
            &job.id,
            &["accepted", "running"],
            "running",
            None,
            None,
            None,
        )
        .await?
    {
        return Ok(());
    }
    bulk.clear_files(&job.id).await?;
    let params: Params = serde_json::from_str(&job.params)
        .map_err(|_| Outcome::internal("The import's stored manifest cannot be read"))?;
    let principal = match &job.principal {
        Some(text) => Some(
            principal_from(text)
                .ok_or_else(|| Outcome::internal("The import's principal cannot be read"))?,
        ),
        None => None,
    };
    let mut errors = Files::new(ctx.store.clone(), &job.id, ctx.bulk.file_bytes);
    let mut summaries = Vec::new();
    let total = params.inputs.len();
    let dangling;
    {
        let mut importer = Importer::new(ctx, &job.base, principal, Some(&mut errors));
        for (n, input) in params.inputs.iter().enumerate() {
            bulk.progress(
                &job.id,
                &format!(
                    "{} resources imported; input {} of {total}",
                    importer.imported,
                    n + 1
                ),
            )
            .await?;
            let (before_ok, before_failed) = (importer.imported, importer.failed);
            match Lines::open(&input.url, ctx.bulk.import_dir.as_deref(), None).await {
                Err(why) => importer.unreadable(&input.url, &why).await?,
                Ok(mut lines) => {
                    let mut line = 0u64;
                    loop {
                        let text = match lines.next_line().await {
                            Ok(Some(t)) => t,
                            Ok(None) => break,
                            Err(why) => {
                                importer.unreadable(&input.url, &why).await?;
                                break;
                            }
                        };
                        line += 1;
                        importer
                            .line(&input.url, input.resource_type.as_deref(), line, &text)
                            .await?;
                        if line.is_multiple_of(BATCH as u64)
                            && bulk
                                .job(&job.id)
                                .await?
                                .is_none_or(|j| j.state != "running")
                        {
                            return Ok(());
                        }
                    }
                    importer.flush().await?;
                }
            }
            summaries.push(json!({
                "resourceType": "OperationOutcome",
                "issue": [{
                    "severity": "information",
                    "code": "informational",
                    "diagnostics": format!(
                        "{}: {} resources imported, {} lines failed",
                        input.url,
                        importer.imported - before_ok,
                        importer.failed - before_failed
                    ),
                    "location": [input.url],
                }],
            }));
        }
        dangling = importer.check_references().await?;
    }
    errors.close().await?;
    let mut outputs = Files::new(ctx.store.clone(), &job.id, ctx.bulk.file_bytes);
    outputs.skip_to(errors.next_file());
    for s in &summaries {
        outputs
            .line("output", "OperationOutcome", &s.to_string())
            .await?;
    }
    outputs.close().await?;
    let now = Instant::now().millis();
    bulk.progress(
        &job.id,
        &format!("imported; {dangling} dangling references"),
    )
    .await?;
    if !bulk
        .transition(
            &job.id,
            &["running"],
            "done",
            None,
            Some(now),
            Some(now + ctx.bulk.ttl_ms),
        )
        .await?
    {
        bulk.clear_files(&job.id).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions_name_the_line_s_resource() {
        assert_eq!(
            in_resource("Bundle.entry[2].resource.gender", "Patient"),
            "Patient.gender"
        );
        assert_eq!(
            in_resource("Bundle.entry[0].resource", "Patient"),
            "Patient"
        );
        assert_eq!(in_resource("Patient.name", "Patient"), "Patient.name");
    }

    #[test]
    fn manifests_come_as_parameters_or_as_the_drafts_json() {
        let p = json!({"resourceType": "Parameters", "parameter": [
            {"name": "inputFormat", "valueCode": "application/fhir+ndjson"},
            {"name": "input", "part": [
                {"name": "type", "valueCode": "Patient"},
                {"name": "url", "valueUri": "https://x/p.ndjson"}]}]});
        let (f, inputs) = manifest(&p).unwrap();
        assert_eq!(f.as_deref(), Some("application/fhir+ndjson"));
        assert_eq!(
            inputs,
            vec![Input {
                resource_type: Some("Patient".into()),
                url: "https://x/p.ndjson".into()
            }]
        );
        let j = json!({"inputFormat": "application/fhir+ndjson",
                       "input": [{"type": "Observation", "url": "obs.ndjson"}]});
        assert_eq!(manifest(&j).unwrap().1[0].url, "obs.ndjson");
        assert!(manifest(&json!({"resourceType": "Patient"})).is_err());
    }

    #[test]
    fn files_outside_the_import_directory_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        std::fs::create_dir_all(dir.join("in")).unwrap();
        std::fs::write(dir.join("in/a.ndjson"), "{}\n").unwrap();
        std::fs::write(dir.join("secret.ndjson"), "{}\n").unwrap();
        let root = dir.join("in");
        assert!(local_path(Some(&root), "a.ndjson").is_ok());
        assert!(local_path(Some(&root), "../secret.ndjson").is_err());
        let abs = dir.join("secret.ndjson").display().to_string();
        assert!(local_path(Some(&root), &abs).is_err());
        assert!(local_path(Some(&root), &format!("file://{abs}")).is_err());
        assert!(local_path(None, "a.ndjson").is_err());
    }
}
