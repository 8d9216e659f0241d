//! TCP quick ACKs for the first packets of a connection. The OpenSSH client leaves Nagle's
//! algorithm on for non-interactive sessions, so during the handshake it waits for our ACK
//! before sending its next small packet; Linux delays that ACK (up to 40 ms) unless asked not
//! to. `TCP_QUICKACK` is not sticky, so it is set again after each of the first reads.

use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Reads after which the handshake and login are over and delayed ACKs are fine again.
const QUICK_READS: u32 = 16;

/// A TCP stream that acknowledges its first [`QUICK_READS`] reads at once.
pub struct QuickAck {
    inner: TcpStream,
    reads: u32,
}

impl QuickAck {
    /// Wraps `inner`.
    pub fn new(inner: TcpStream) -> Self {
        Self { inner, reads: 0 }
    }

    fn after_read(&mut self) {
        if self.reads >= QUICK_READS {
            return;
        }
        self.reads += 1;
        let on: nix::libc::c_int = 1;
        // SAFETY: setsockopt on a socket this stream owns, reading a live c_int of the size
        // given. A failure only means a delayed ACK.
        unsafe {
            nix::libc::setsockopt(
                self.inner.as_raw_fd(),
                nix::libc::IPPROTO_TCP,
                nix::libc::TCP_QUICKACK,
                std::ptr::from_ref(&on).cast(),
                nix::libc::socklen_t::try_from(std::mem::size_of::<nix::libc::c_int>())
                    .unwrap_or(4),
            );
        }
    }
}

impl AsyncRead for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        if read.is_ready() {
            self.after_read();
        }
        read
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
