//! MLLP, the Minimal Lower Layer Protocol HL7 v2 travels over TCP in: each message is framed
//! as `0x0B message 0x1C 0x0D`, and the receiver answers each with its ACK, framed the same
//! way, on the same connection. [`Framer`] is the pure framing (several messages in one
//! read, a message split over reads, bytes outside a frame, an oversized frame); [`serve`]
//! is the listener, one task per connection, messages of a connection handled in order.

use super::runtime::{Channel, Pipeline};
use crate::hl7v2::ack::{AckCode, AckError, ack};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const START: u8 = 0x0B;
const END: u8 = 0x1C;
const CR: u8 = 0x0D;

/// A frame read from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Message(Vec<u8>),
    /// A frame over the size limit (its bytes are dropped up to its end).
    Oversized,
}

/// Splits a byte stream into MLLP frames.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    max: usize,
    /// Inside an oversized frame: dropping bytes until its end block.
    skipping: bool,
    /// A frame has started and not ended (for the slow-sender timeout).
    open: bool,
}

impl Framer {
    pub fn new(max: usize) -> Framer {
        Framer {
            buf: Vec::new(),
            max,
            skipping: false,
            open: false,
        }
    }

    /// Whether a frame has begun and not yet ended.
    pub fn in_frame(&self) -> bool {
        self.open || self.skipping
    }

    /// Takes in bytes read from the stream and returns the frames they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Frame> {
        let mut out = Vec::new();
        for &b in bytes {
            if self.skipping {
                if b == END {
                    self.skipping = false;
                    self.open = false;
                    out.push(Frame::Oversized);
                }
                continue;
            }
            if !self.open {
                // bytes between frames (a stray CR after the end block, noise) are ignored
                if b == START {
                    self.open = true;
                    self.buf.clear();
                }
                continue;
            }
            match b {
                END => {
                    self.open = false;
                    out.push(Frame::Message(std::mem::take(&mut self.buf)));
                }
                START => self.buf.clear(), // a frame restarted: the partial one is dropped
                _ => {
                    if self.buf.len() >= self.max {
                        self.buf = Vec::new();
                        self.skipping = true;
                    } else {
                        self.buf.push(b);
                    }
                }
            }
        }
        out
    }
}

/// Frames an ACK for the wire.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 3);
    out.push(START);
    out.extend_from_slice(message);
    out.push(END);
    out.push(CR);
    out
}

/// The limits of a listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest frame taken (larger ones get an AR).
    pub max_frame: usize,
    /// A connection with nothing to say for this long is closed.
    pub idle: Duration,
    /// A frame must be complete this long after it began.
    pub frame: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: crate::hl7v2::er7::MAX_MESSAGE_BYTES,
            idle: Duration::from_secs(300),
            frame: Duration::from_secs(30),
        }
    }
}

/// Accepts connections on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    pipeline: Arc<Pipeline>,
    channel: Arc<Channel>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "MLLP accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let pipeline = pipeline.clone();
                let channel = channel.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, peer.ip().to_string(), pipeline, channel, limits, shutdown).await {
                        tracing::debug!(error = %e, "MLLP connection ended");
                    }
                });
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return Ok(());
                }
            }
        }
    }
}

async fn connection(
    mut stream: TcpStream,
    peer: String,
    pipeline: Arc<Pipeline>,
    channel: Arc<Channel>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut framer = Framer::new(limits.max_frame);
    let mut buf = vec![0u8; 64 * 1024];
    let mut frame_started: Option<tokio::time::Instant> = None;
    loop {
        let wait = match frame_started {
            Some(t) => limits.frame.saturating_sub(t.elapsed()),
            None => limits.idle,
        };
        let n = tokio::select! {
            read = tokio::time::timeout(wait, stream.read(&mut buf)) => match read {
                Ok(r) => r?,
                Err(_) => {
                    tracing::info!(channel = %channel.name, "MLLP connection timed out");
                    return Ok(());
                }
            },
            _ = shutdown.changed() => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        let frames = framer.push(buf.get(..n).unwrap_or_default());
        for f in frames {
            let reply = match f {
                Frame::Message(bytes) => {
                    let r = pipeline
                        .receive(&channel, None, Some(peer.clone()), &bytes)
                        .await;
                    r.send.then_some(r.ack)
                }
                Frame::Oversized => Some(oversized(limits.max_frame)),
            };
            if let Some(reply) = reply {
                stream.write_all(&frame(reply.as_bytes())).await?;
            }
        }
        frame_started = match (framer.in_frame(), frame_started) {
            (true, Some(t)) => Some(t),
            (true, None) => Some(tokio::time::Instant::now()),
            (false, _) => None,
        };
    }
}

fn oversized(max: usize) -> String {
    ack(
        None,
        AckCode::Reject,
        &[AckError {
            location: None,
            code: "207",
            text: format!("the frame is over the limit of {max} bytes"),
        }],
        &super::runtime::ack_timestamp(),
    )
    .to_er7()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_and_joined_over_reads() {
        let mut f = Framer::new(100);
        assert_eq!(f.push(b"\x0bMSH|a"), vec![]);
        assert!(f.in_frame());
        assert_eq!(
            f.push(b"bc\x1c\x0d\x0bMSH|2\x1c\x0d\x0bMSH"),
            vec![
                Frame::Message(b"MSH|abc".to_vec()),
                Frame::Message(b"MSH|2".to_vec())
            ]
        );
        assert_eq!(f.push(b"|3\x1c"), vec![Frame::Message(b"MSH|3".to_vec())]);
        assert!(!f.in_frame());
    }

    #[test]
    fn noise_between_frames_is_ignored_and_oversized_frames_are_dropped() {
        let mut f = Framer::new(4);
        assert_eq!(
            f.push(b"junk\r\n\x0b123456789\x1c\x0d\x0bok\x1c\x0d"),
            vec![Frame::Oversized, Frame::Message(b"ok".to_vec())]
        );
    }

    #[test]
    fn frame_wraps_a_message() {
        assert_eq!(frame(b"MSH"), b"\x0bMSH\x1c\x0d".to_vec());
    }
}
