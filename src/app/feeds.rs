//! The operator's feed commands: `healporium feeds dead-letter list|show|replay` and
//! `healporium import hl7v2 FILE|DIR…` (files through the same inbox, maps and ACKs as a
//! live feed, with a progress bar on a terminal and a summary by ACK code).

use super::{AppOptions, admin_store, feed_pipeline, node_context};
use crate::config::{DeadLetterCommand, FeedsCommand, ImportCsvArgs, ImportHl7v2Args};
use crate::feeds::mapping_set::MappingSet;
use crate::feeds::runtime::{Channel, Class, Pipeline, decode};
use crate::hl7v2::ack::AckCode;
use crate::store::Store;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A progress bar on stderr (drawn only on a terminal), counting `unit`.
fn progress(len: usize, unit: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(len as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    let template = format!("{{bar:40}} {{pos}}/{{len}} {unit} {{per_sec}} {{msg}}");
    bar.set_style(
        indicatif::ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

fn fmt_time(ms: i64) -> String {
    crate::fhir::types::Instant::from_millis(ms).to_fhir()
}

/// A pipeline for an admin command: audited, with the server's own rights.
fn admin_pipeline(store: Arc<dyn Store>) -> anyhow::Result<Arc<Pipeline>> {
    let options = AppOptions {
        audit: true,
        ..AppOptions::default()
    };
    let ctx = node_context(store, &options, false);
    feed_pipeline(&ctx, "http://localhost/fhir", None)
        .ok_or_else(|| anyhow::anyhow!("the mapping set did not load"))
}

fn channel(pipeline: &Pipeline, zone: Option<&str>) -> anyhow::Result<Channel> {
    let zone = match zone {
        None => None,
        Some(z) => Some(crate::config::feed_zone(z).map_err(|e| anyhow::anyhow!(e))?),
    };
    Ok(super::feed_channel(
        pipeline,
        "default",
        None,
        zone.as_deref(),
    ))
}

/// Runs `healporium feeds …`.
pub async fn feeds_command(command: FeedsCommand) -> anyhow::Result<String> {
    let FeedsCommand::DeadLetter(command) = command;
    match command {
        DeadLetterCommand::List(args) => {
            if let Some(c) = &args.class {
                anyhow::ensure!(
                    Class::parse(c).is_some(),
                    "--class: one of parse, unsupported, conflict, mapping, validation, transient-exhausted"
                );
            }
            let store = admin_store(&args.database.database_url).await?;
            let rows = store
                .feeds()
                .dead_letters(args.class.as_deref(), args.all, args.limit)
                .await
                .map_err(|e| anyhow::anyhow!("cannot list dead letters: {e}"))?;
            let mut out = format!(
                "{:<36}  {:<19}  {:<24}  {:>7}  {:<30}  error",
                "message", "class", "failed at", "replays", "sender|control id"
            );
            for r in &rows {
                let error: String = r.error.chars().take(120).collect();
                out.push_str(&format!(
                    "\n{:<36}  {:<19}  {:<24}  {:>7}  {:<30}  {}{}",
                    r.message_id,
                    r.class,
                    fmt_time(r.created),
                    r.replays,
                    r.dup_key.chars().take(30).collect::<String>(),
                    if r.resolved.is_some() {
                        "(resolved) "
                    } else {
                        ""
                    },
                    error
                ));
            }
            out.push_str(&format!("\n{} dead letter(s)", rows.len()));
            Ok(out)
        }
        DeadLetterCommand::Show(args) => {
            let store = admin_store(&args.database.database_url).await?;
            let feeds = store.feeds();
            let m = feeds
                .message(&args.id)
                .await
                .map_err(|e| anyhow::anyhow!("cannot read the message: {e}"))?
                .ok_or_else(|| anyhow::anyhow!("no message {}", args.id))?;
            let dead = feeds
                .dead_letters(None, true, u32::MAX)
                .await
                .map_err(|e| anyhow::anyhow!("cannot read dead letters: {e}"))?
                .into_iter()
                .find(|d| d.message_id == m.id);
            let mut out = format!(
                "message   {}\nchannel   {}\nkey       {}\nsha256    {}\nreceived  {}\nstate     {}",
                m.id,
                m.channel,
                m.dup_key,
                m.sha256,
                fmt_time(m.received),
                m.state
            );
            if let Some(d) = dead {
                out.push_str(&format!(
                    "\nclass     {}\nerror     {}\nreplays   {}{}",
                    d.class,
                    d.error,
                    d.replays,
                    d.resolved
                        .map(|t| format!("\nresolved  {}", fmt_time(t)))
                        .unwrap_or_default()
                ));
            }
            let ack = m.ack.unwrap_or_default().replace('\r', "\n          ");
            out.push_str(&format!("\nack       {}", ack.trim_end()));
            out.push_str("\n\n");
            out.push_str(&decode(&m.raw).replace('\r', "\n"));
            Ok(out)
        }
        DeadLetterCommand::Replay(args) => {
            let store = admin_store(&args.database.database_url).await?;
            let pipeline = admin_pipeline(store)?;
            let channel = channel(&pipeline, args.zone.as_deref())?;
            let receipt = pipeline
                .replay(&args.id, &channel, None)
                .await
                .map_err(|e| anyhow::anyhow!("cannot replay: {e}"))?
                .ok_or_else(|| anyhow::anyhow!("no message {}", args.id))?;
            let text = format!(
                "replayed {}: {}\n{}",
                args.id,
                receipt.code.as_str(),
                receipt.ack.replace('\r', "\n").trim_end()
            );
            if receipt.code == AckCode::Accept {
                Ok(text)
            } else {
                Err(anyhow::anyhow!("{text}"))
            }
        }
    }
}

/// The messages of a file: MLLP frames if it has them, else one message per `MSH` line.
pub fn split_messages(bytes: &[u8]) -> Vec<Vec<u8>> {
    if bytes.contains(&0x0B) {
        let mut f = crate::feeds::mllp::Framer::new(usize::MAX);
        return f
            .push(bytes)
            .into_iter()
            .filter_map(|fr| match fr {
                crate::feeds::mllp::Frame::Message(m) => Some(m),
                crate::feeds::mllp::Frame::Oversized => None,
            })
            .collect();
    }
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut start_of_line = true;
    let mut current: Vec<u8> = Vec::new();
    for (i, &b) in bytes.iter().enumerate() {
        if start_of_line && bytes.get(i..i + 4).is_some_and(|w| w.starts_with(b"MSH")) {
            let is_header = bytes.get(i + 3).is_some_and(|c| c.is_ascii_punctuation());
            if is_header && current.iter().any(|c| !c.is_ascii_whitespace()) {
                out.push(std::mem::take(&mut current));
            }
        }
        current.push(b);
        start_of_line = b == b'\r' || b == b'\n';
    }
    if current.iter().any(|c| !c.is_ascii_whitespace()) {
        out.push(current);
    }
    out
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        entries.sort();
        for e in entries {
            collect_files(&e, out)?;
        }
    } else {
        out.push(path.to_path_buf());
    }
    Ok(())
}

/// Runs `healporium import hl7v2`.
pub async fn import_hl7v2(args: ImportHl7v2Args) -> anyhow::Result<String> {
    let mut files = Vec::new();
    for p in &args.paths {
        collect_files(p, &mut files).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    }
    let mut messages: Vec<(String, Vec<u8>)> = Vec::new();
    for f in &files {
        let bytes = std::fs::read(f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        for (i, m) in split_messages(&bytes).into_iter().enumerate() {
            messages.push((format!("{} #{}", f.display(), i + 1), m));
        }
    }
    let store = admin_store(&args.database.database_url).await?;
    let pipeline = admin_pipeline(store)?;
    let channel = channel(&pipeline, args.zone.as_deref())?;
    let bar = progress(messages.len(), "messages");
    let started = std::time::Instant::now();
    let mut by_code: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut duplicates = 0u64;
    let mut failures: Vec<String> = Vec::new();
    for (label, m) in &messages {
        let r = pipeline.receive(&channel, None, None, m).await;
        *by_code.entry(r.code.as_str()).or_default() += 1;
        if r.duplicate {
            duplicates += 1;
        }
        if r.code != AckCode::Accept && failures.len() < 20 {
            let err = crate::hl7v2::er7::parse(&r.ack)
                .ok()
                .and_then(|a| a.segment("ERR").map(|e| e.get(8, 1, 1).to_string()))
                .unwrap_or_default();
            failures.push(format!(
                "{label}: {} {}{}",
                r.code.as_str(),
                err,
                r.message_id
                    .map(|id| format!(" (message {id})"))
                    .unwrap_or_default()
            ));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64().max(0.001);
    let counts = ["AA", "AE", "AR"]
        .iter()
        .map(|c| format!("{c} {}", by_code.get(c).copied().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(", ");
    let mut out = format!(
        "{} message(s) from {} file(s) in {:.1} s ({:.0}/s): {counts}; {duplicates} already received",
        messages.len(),
        files.len(),
        secs,
        messages.len() as f64 / secs
    );
    for f in &failures {
        out.push_str(&format!("\n  {f}"));
    }
    let failed = by_code.get("AE").copied().unwrap_or(0) + by_code.get("AR").copied().unwrap_or(0);
    if failed > 0 {
        Err(anyhow::anyhow!(
            "{out}\n{failed} message(s) not accepted: see `healporium feeds dead-letter list`"
        ))
    } else {
        Ok(out)
    }
}

/// Rows written per batch Bundle.
const CSV_BATCH: usize = 100;

/// The CSV map `--map` names: a file of kind CsvMap, or a map of the compiled-in set.
fn csv_set(map: &str) -> anyhow::Result<(Arc<MappingSet>, String)> {
    let path = Path::new(map);
    if path.is_file() {
        let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("--map {map}: {e}"))?;
        let doc: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("--map {map}: not JSON: {e}"))?;
        let name = doc
            .get("name")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_string();
        let rel = format!("csv/{name}.json");
        let mut files: Vec<(String, Vec<u8>)> = MappingSet::embedded_files()
            .into_iter()
            .filter(|(p, _)| *p != rel)
            .collect();
        files.push((rel, bytes));
        let set = MappingSet::from_files(files).map_err(|e| anyhow::anyhow!("--map {map}: {e}"))?;
        return Ok((Arc::new(set), name));
    }
    let set = MappingSet::shared().map_err(|e| anyhow::anyhow!("{e}"))?;
    if set.csv_map(map).is_none() {
        anyhow::bail!(
            "--map: no CSV map or file '{map}' (shipped: {})",
            set.csv_maps().collect::<Vec<_>>().join(", ")
        );
    }
    Ok((set, map.to_string()))
}

/// What a batch entry's response says: None when it succeeded, else the problem.
fn entry_failure(entry: &serde_json::Value) -> Option<String> {
    let status = entry
        .pointer("/response/status")
        .and_then(serde_json::Value::as_str)?;
    let code: u16 = status.split(' ').next()?.parse().ok()?;
    if code < 400 {
        return None;
    }
    let issues: Vec<String> = entry
        .pointer("/response/outcome/issue")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .map(|i| {
            let d = i
                .get("diagnostics")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("refused");
            match i
                .pointer("/expression/0")
                .and_then(serde_json::Value::as_str)
            {
                Some(e) => format!("{d} ({e})"),
                None => d.to_string(),
            }
        })
        .collect();
    Some(format!("{code}: {}", issues.join("; ")))
}

/// Runs `healporium import csv`.
pub async fn import_csv(args: ImportCsvArgs) -> anyhow::Result<String> {
    let (set, name) = csv_set(&args.map)?;
    let map = set
        .csv_map(&name)
        .ok_or_else(|| anyhow::anyhow!("--map: no CSV map {name}"))?
        .clone();
    let mut rows = Vec::new();
    for f in &args.files {
        let bytes = std::fs::read(f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        let mapped = set
            .map_csv(&map, &bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        rows.extend(mapped.into_iter().map(|r| (f.display().to_string(), r)));
    }
    let store = admin_store(&args.database.database_url).await?;
    let options = AppOptions {
        audit: true,
        ..AppOptions::default()
    };
    let ctx = node_context(store, &options, false);
    let bar = progress(rows.len(), "rows");
    let started = std::time::Instant::now();
    let mut failures: Vec<String> = Vec::new();
    let mut failed = 0u64;
    let mut written = 0u64;
    for (file, r) in rows.iter().filter(|(_, r)| r.entry.is_none()) {
        failed += 1;
        for (col, msg) in &r.errors {
            failures.push(format!("{file} row {}, column {col}: {msg}", r.row));
        }
    }
    let ready: Vec<&(String, crate::feeds::csv::CsvRow)> =
        rows.iter().filter(|(_, r)| r.entry.is_some()).collect();
    bar.inc(failed);
    for chunk in ready.chunks(CSV_BATCH) {
        let entries: Vec<serde_json::Value> =
            chunk.iter().filter_map(|(_, r)| r.entry.clone()).collect();
        let bundle =
            serde_json::json!({"resourceType": "Bundle", "type": "batch", "entry": entries});
        let request = crate::interaction::FhirRequest {
            base: "http://localhost/fhir".into(),
            interaction: crate::interaction::Interaction::Bundle { bundle },
            preconditions: crate::interaction::Preconditions::default(),
            cascade: false,
            provenance: None,
            prefer: crate::interaction::PreferReturn::OperationOutcome,
            principal: None,
            source: None,
        };
        let response = crate::interaction::handle(&ctx, request)
            .await
            .map_err(|o| anyhow::anyhow!("the batch was refused: {}", o.to_resource()))?;
        let body = response
            .body
            .map(|b| b.to_value())
            .transpose()
            .map_err(|o| anyhow::anyhow!("{}", o.to_resource()))?
            .unwrap_or_default();
        let results = body
            .get("entry")
            .and_then(serde_json::Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (i, (file, r)) in chunk.iter().enumerate() {
            match results.get(i).and_then(entry_failure) {
                None if results.get(i).is_some() => written += 1,
                None => {
                    failed += 1;
                    failures.push(format!("{file} row {}: no response", r.row));
                }
                Some(why) => {
                    failed += 1;
                    failures.push(format!("{file} row {} (key {}): {why}", r.row, r.key));
                }
            }
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64().max(0.001);
    let mut out = format!(
        "{} row(s) from {} file(s) with map {name} in {secs:.1} s: {written} written or unchanged, {failed} failed",
        rows.len(),
        args.files.len()
    );
    for f in failures.iter().take(20) {
        out.push_str(&format!("\n  {f}"));
    }
    if failures.len() > 20 {
        out.push_str(&format!("\n  … and {} more", failures.len() - 20));
    }
    if failed > 0 {
        Err(anyhow::anyhow!("{out}"))
    } else {
        Ok(out)
    }
}

/// The NDJSON files of `paths` (a directory: its `*.ndjson` files, sorted).
fn ndjson_files(paths: &[std::path::PathBuf]) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<std::path::PathBuf> = std::fs::read_dir(p)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|f| f.extension().is_some_and(|x| x == "ndjson"))
                .collect();
            found.sort();
            out.extend(found);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            anyhow::bail!("{}: no such file or directory", p.display());
        }
    }
    Ok(out)
}

/// Runs `healporium import ndjson`: what `$import` does, from files, with a progress bar
/// over the bytes read.
pub async fn import_ndjson(args: crate::config::ImportNdjsonArgs) -> anyhow::Result<String> {
    use crate::interaction::bulk::import::{Importer, Lines};
    let files = ndjson_files(&args.paths)?;
    let bytes: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let store = admin_store(&args.database.database_url).await?;
    let options = AppOptions {
        audit: true,
        ..AppOptions::default()
    };
    let ctx = node_context(store, &options, false);
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(bytes),
        indicatif::ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let mut importer = Importer::new(&ctx, "http://localhost/fhir", None, None);
    for f in &files {
        let name = f.display().to_string();
        bar.set_message(name.clone());
        let dir = f.parent().map(std::path::Path::to_path_buf);
        let mut lines = match Lines::open(&name, dir.as_deref(), None).await {
            Ok(l) => l,
            Err(why) => {
                importer
                    .unreadable(&name, &why)
                    .await
                    .map_err(|o| anyhow::anyhow!("{}", o.to_resource()))?;
                continue;
            }
        };
        let mut line = 0u64;
        loop {
            let text = match lines.next_line().await {
                Ok(Some(t)) => t,
                Ok(None) => break,
                Err(why) => {
                    importer
                        .unreadable(&name, &why)
                        .await
                        .map_err(|o| anyhow::anyhow!("{}", o.to_resource()))?;
                    break;
                }
            };
            line += 1;
            bar.inc(text.len() as u64 + 1);
            importer
                .line(&name, None, line, &text)
                .await
                .map_err(|o| anyhow::anyhow!("{}", o.to_resource()))?;
        }
    }
    let dangling = importer
        .check_references()
        .await
        .map_err(|o| anyhow::anyhow!("{}", o.to_resource()))?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let mut report = format!(
        "{} resources imported, {} lines failed, {dangling} dangling references, in {secs:.1} s ({:.0} resources/s)\n",
        importer.imported,
        importer.failed,
        importer.imported as f64 / secs.max(0.001)
    );
    for f in &importer.failures {
        report.push_str(f);
        report.push('\n');
    }
    if importer.failed > 0 || dangling > 0 {
        anyhow::bail!("{report}");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::split_messages;

    #[test]
    fn files_split_into_messages_at_each_header() {
        let two = b"MSH|^~\\&|A\rPID|1\r\nMSH|^~\\&|B\rPID|2\r\n\n";
        let m = split_messages(two);
        assert_eq!(m.len(), 2);
        assert!(m[1].starts_with(b"MSH|^~\\&|B"));
        let framed = b"\x0bMSH|^~\\&|A\r\x1c\x0d\x0bMSH|^~\\&|B\r\x1c\x0d";
        assert_eq!(split_messages(framed).len(), 2);
        assert!(split_messages(b"\n\n").is_empty());
    }
}
