//! A stream that reports the bytes it moves: `on_read(n)` after every read that returned data,
//! `on_write(n)` after every write that took some. For counters (forwarded bytes) and activity
//! clocks (the API's idle timeout) alike.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `inner`, tapped.
pub struct Tap<S, R, W> {
    inner: S,
    on_read: R,
    on_write: W,
}

impl<S, R: Fn(usize), W: Fn(usize)> Tap<S, R, W> {
    /// Reports `inner`'s reads to `on_read` and its writes to `on_write`.
    pub fn new(inner: S, on_read: R, on_write: W) -> Self {
        Self {
            inner,
            on_read,
            on_write,
        }
    }
}

impl<S: AsyncRead + Unpin, R: Fn(usize) + Unpin, W: Unpin> AsyncRead for Tap<S, R, W> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        if read > 0 {
            (self.on_read)(read);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin, R: Unpin, W: Fn(usize) + Unpin> AsyncWrite for Tap<S, R, W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n @ 1..)) = polled {
            (self.on_write)(n);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
