//! A job's output files: written line by line into chunks of about a megabyte (a new file once
//! one reaches the size limit), and read back chunk by chunk for a download — neither side
//! ever holds more than a chunk.

use crate::fhir::outcome::Outcome;
use crate::store::{BulkFileRow, Store};
use std::sync::Arc;

/// Bytes of NDJSON text per stored chunk, at least.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Writes a job's files; file numbers run on across types.
pub struct Files {
    store: Arc<dyn Store>,
    job: String,
    /// Bytes after which a file is closed and the next one begun.
    file_limit: usize,
    next_file: i64,
    open: Option<Open>,
}

struct Open {
    file_no: i64,
    kind: &'static str,
    resource_type: String,
    chunk_no: i64,
    buf: String,
    count: i64,
    bytes: i64,
}

impl Files {
    pub fn new(store: Arc<dyn Store>, job: &str, file_limit: usize) -> Files {
        Files {
            store,
            job: job.to_string(),
            file_limit: file_limit.max(1),
            next_file: 1,
            open: None,
        }
    }

    /// The number the next file will get.
    pub fn next_file(&self) -> i64 {
        self.next_file + i64::from(self.open.is_some())
    }

    /// Numbers the files from `n` on (after those another writer of the job made).
    pub fn skip_to(&mut self, n: i64) {
        self.next_file = self.next_file.max(n);
    }

    /// Appends one line (a resource's JSON without newlines) to the current file of
    /// `resource_type` (`kind`: output or error), beginning a new file when needed.
    pub async fn line(
        &mut self,
        kind: &'static str,
        resource_type: &str,
        text: &str,
    ) -> Result<(), Outcome> {
        let reuse = self
            .open
            .as_ref()
            .is_some_and(|o| o.kind == kind && o.resource_type == resource_type);
        if !reuse {
            self.close().await?;
            self.open = Some(Open {
                file_no: self.next_file,
                kind,
                resource_type: resource_type.to_string(),
                chunk_no: 0,
                buf: String::new(),
                count: 0,
                bytes: 0,
            });
            self.next_file += 1;
        }
        let Some(open) = self.open.as_mut() else {
            return Ok(());
        };
        open.buf.push_str(text);
        open.buf.push('\n');
        open.count += 1;
        open.bytes += text.len() as i64 + 1;
        if open.buf.len() >= CHUNK_BYTES {
            self.flush().await?;
        }
        let full = self
            .open
            .as_ref()
            .is_some_and(|o| o.bytes as usize >= self.file_limit);
        if full {
            self.close().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Outcome> {
        let Some(open) = self.open.as_mut() else {
            return Ok(());
        };
        if open.buf.is_empty() {
            return Ok(());
        }
        self.store
            .bulk()
            .add_chunk(&self.job, open.file_no, open.chunk_no, &open.buf)
            .await?;
        open.chunk_no += 1;
        open.buf.clear();
        Ok(())
    }

    /// Finishes the current file (its last chunk and its row).
    pub async fn close(&mut self) -> Result<(), Outcome> {
        self.flush().await?;
        if let Some(open) = self.open.take()
            && open.count > 0
        {
            self.store
                .bulk()
                .add_file(
                    &self.job,
                    &BulkFileRow {
                        file_no: open.file_no,
                        kind: open.kind.to_string(),
                        resource_type: open.resource_type,
                        count: open.count,
                        bytes: open.bytes,
                    },
                )
                .await?;
        }
        Ok(())
    }
}

/// A file being downloaded: its chunks in order, read one at a time.
#[derive(Clone)]
pub struct ChunkSource {
    store: Arc<dyn Store>,
    job: String,
    file_no: i64,
    next: i64,
}

impl std::fmt::Debug for ChunkSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkSource({}/{})", self.job, self.file_no)
    }
}

impl ChunkSource {
    pub fn new(store: Arc<dyn Store>, job: &str, file_no: i64) -> ChunkSource {
        ChunkSource {
            store,
            job: job.to_string(),
            file_no,
            next: 0,
        }
    }

    /// The next chunk's text, None after the last.
    pub async fn next_chunk(&mut self) -> Result<Option<String>, Outcome> {
        let chunk = self
            .store
            .bulk()
            .chunk(&self.job, self.file_no, self.next)
            .await?;
        self.next += 1;
        Ok(chunk)
    }
}
