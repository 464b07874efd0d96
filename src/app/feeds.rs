//! The operator's feed commands: `healporium feeds dead-letter list|show|replay` and
//! `healporium import hl7v2 FILE|DIR…` (files through the same inbox, maps and ACKs as a
//! live feed, with a progress bar on a terminal and a summary by ACK code).

use super::{AppOptions, admin_store, feed_pipeline, node_context};
use crate::config::{DeadLetterCommand, FeedsCommand, ImportHl7v2Args};
use crate::feeds::runtime::{Channel, Class, Pipeline, decode};
use crate::hl7v2::ack::AckCode;
use crate::store::Store;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(messages.len() as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} messages {per_sec} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
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
