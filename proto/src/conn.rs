//! One connection wrapper for tonic, on both sides of a dial-out link: the IO it wraps plus a
//! guard that can hold reads back, notices when hyper drops the connection, and may name the
//! peer (tonic's `Connected`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

/// What a [`Guarded`] connection consults before each read.
pub trait ReadGuard: Unpin {
    /// Ready when the next read may go ahead; pending (with `cx` woken later) to hold reads
    /// back. The default never holds them.
    fn poll_read_ready(&mut self, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Ready(())
    }
}

/// A sender held only to be dropped: whoever holds the receiver learns that the connection
/// is gone.
impl ReadGuard for oneshot::Sender<()> {}

/// An IO with a guard: reads wait for [`ReadGuard::poll_read_ready`], writes go straight
/// through, and the guard is dropped with the connection.
#[derive(Debug)]
pub struct Guarded<S, G> {
    inner: S,
    guard: G,
}

/// An IO that tells whoever holds the other end of its channel when it is dropped: hyper
/// drops the connection when the peer closes it or a keep-alive ping goes unanswered.
pub type Linked<S> = Guarded<S, oneshot::Sender<()>>;

impl<S, G> Guarded<S, G> {
    /// Wraps `inner`.
    pub fn new(inner: S, guard: G) -> Self {
        Self { inner, guard }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The guard.
    pub fn guard(&self) -> &G {
        &self.guard
    }
}

impl<S: AsyncRead + Unpin, G: ReadGuard> AsyncRead for Guarded<S, G> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.guard.poll_read_ready(cx));
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin, G: Unpin> AsyncWrite for Guarded<S, G> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The guard names the peer: every request on the connection carries its connect info.
impl<S, G: tonic::transport::server::Connected> tonic::transport::server::Connected
    for Guarded<S, G>
{
    type ConnectInfo = G::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.guard.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_linked_connection_passes_bytes_and_signals_its_drop() {
        let (near, mut far) = tokio::io::duplex(64);
        let (tx, rx) = oneshot::channel();
        let mut linked: Linked<_> = Guarded::new(near, tx);
        linked.write_all(b"ping").await.expect("write");
        let mut got = [0; 4];
        far.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"ping");
        far.write_all(b"pong").await.expect("write");
        linked.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"pong");
        drop(linked);
        assert!(rx.await.is_err(), "the receiver learns of the drop");
    }
}
