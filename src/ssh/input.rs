//! Client input on its way to a session's program, with SSH flow control end to end.
//!
//! The channel task hands each `Data` message here and goes back to draining its channel
//! (signals, window changes and EOF must never wait behind input). A writer task feeds the
//! program and reports every byte it wrote to russh's [`WindowCredit`], which is what
//! re-opens the client's window (the russh patch in `vendor/russh`): a program that reads
//! slowly slows the client down through SSH's own flow control, nothing is dropped, and what
//! waits here is at most one window (the client may send no more). Small packets are merged,
//! so that bound holds however the client cuts its data.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use russh::WindowCredit;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

/// Packets smaller than this are copied together rather than queued one by one.
const MERGE_BELOW: usize = 4096;

#[derive(Default)]
struct Pending {
    chunks: VecDeque<Bytes>,
    /// Small packets, merged; they come after every chunk.
    small: BytesMut,
    /// No more input: close the program's stdin once the rest is written.
    eof: bool,
    /// The program's stdin is gone: input is discarded (and its window granted back), as
    /// sshd does once a program closed its input.
    gone: bool,
}

impl Pending {
    fn take(&mut self) -> Option<Bytes> {
        self.chunks
            .pop_front()
            .or_else(|| (!self.small.is_empty()).then(|| self.small.split().freeze()))
    }

    fn queued(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum::<usize>() + self.small.len()
    }
}

struct Shared {
    pending: Mutex<Pending>,
    ready: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The channel task's end: hands input on, never waits. Dropped when the session ends,
/// it stops the writer too, even one blocked on a pipe that a leftover background process
/// holds open without reading.
pub struct InputQueue {
    shared: Arc<Shared>,
    credit: WindowCredit,
    writer: tokio::task::JoinHandle<()>,
}

impl InputQueue {
    /// Starts the writer task that feeds `to` (the program's stdin or the pty).
    pub fn spawn<W>(mut to: W, credit: WindowCredit) -> Self
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let shared = Arc::new(Shared {
            pending: Mutex::default(),
            ready: Notify::new(),
        });
        let writer = shared.clone();
        let granted = credit.clone();
        let writer = tokio::spawn(async move {
            loop {
                let next = {
                    let mut pending = writer.lock();
                    match pending.take() {
                        Some(data) => Some(data),
                        None if pending.eof => break,
                        None => None,
                    }
                };
                let Some(data) = next else {
                    writer.ready.notified().await;
                    continue;
                };
                let written = to.write_all(&data).await.is_ok();
                granted.consumed(data.len());
                if !written {
                    let mut pending = writer.lock();
                    granted.consumed(pending.queued());
                    *pending = Pending {
                        gone: true,
                        ..Pending::default()
                    };
                    break;
                }
            }
            // Dropping `to` closes the program's stdin: the client's EOF, passed on.
        });
        Self {
            shared,
            credit,
            writer,
        }
    }

    /// Queues client data for the program.
    pub fn data(&self, data: Bytes) {
        {
            let mut pending = self.shared.lock();
            if pending.gone || pending.eof {
                drop(pending);
                self.credit.consumed(data.len());
                return;
            }
            if data.len() < MERGE_BELOW {
                pending.small.extend_from_slice(&data);
            } else {
                if !pending.small.is_empty() {
                    let small = pending.small.split().freeze();
                    pending.chunks.push_back(small);
                }
                pending.chunks.push_back(data);
            }
        }
        self.shared.ready.notify_one();
    }

    /// Input no program will read: its window is granted back at once.
    pub fn discard(&self, n: usize) {
        self.credit.consumed(n);
    }

    /// No more input: the program's stdin is closed once what is queued is written.
    pub fn close(&self) {
        self.shared.lock().eof = true;
        self.shared.ready.notify_one();
    }
}

impl Drop for InputQueue {
    fn drop(&mut self) {
        self.writer.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_packets_are_merged_after_the_chunks_before_them() {
        let mut p = Pending::default();
        p.chunks.push_back(Bytes::from(vec![1u8; 5000]));
        p.small.extend_from_slice(b"ab");
        p.small.extend_from_slice(b"cd");
        assert_eq!(p.queued(), 5004);
        assert_eq!(p.take().map(|b| b.len()), Some(5000));
        assert_eq!(p.take().as_deref(), Some(&b"abcd"[..]));
        assert!(p.take().is_none());
    }
}
