//! MQTT over WebSockets: a byte-stream view of a WebSocket's binary messages.
//!
//! The HTTP adapter upgrades `GET /$iothub/websocket` (echoing
//! `Sec-WebSocket-Protocol: mqtt`, spec §2.1) and hands the socket's two halves
//! here, mapped to `Bytes`; this crate does not depend on any WebSocket library.
//! With axum, for example:
//!
//! ```ignore
//! let (sink, stream) = socket.split();
//! let stream = Box::pin(stream.filter_map(|m| async move {
//!     match m {
//!         Ok(Message::Binary(bytes)) => Some(Ok(bytes)),
//!         Ok(_) => None, // text is not MQTT; ping/pong/close are the library's business
//!         Err(e) => Some(Err(e)),
//!     }
//! }));
//! let sink = Box::pin(sink.with(|b: Bytes| async move { Ok::<_, axum::Error>(Message::Binary(b)) }));
//! mqtt.serve_connection(WsByteStream::new(stream, sink)).await;
//! ```
//!
//! MQTT packets may span messages and messages may hold several packets; the
//! decoder sees only the concatenated bytes. Each flush of the connection's write
//! buffer becomes one binary message.

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use std::error::Error as StdError;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An `AsyncRead + AsyncWrite` over a stream of incoming binary messages and a
/// sink of outgoing ones. The end of the incoming stream is the end of the byte
/// stream.
pub struct WsByteStream<St, Si> {
    incoming: St,
    outgoing: Si,
    /// The unread rest of the current incoming message.
    current: Bytes,
}

impl<St, Si> WsByteStream<St, Si> {
    /// Wraps the two halves of a WebSocket.
    pub fn new(incoming: St, outgoing: Si) -> Self {
        Self {
            incoming,
            outgoing,
            current: Bytes::new(),
        }
    }
}

fn io_error(e: impl Into<Box<dyn StdError + Send + Sync>>) -> io::Error {
    io::Error::other(e)
}

impl<St, Si, E> AsyncRead for WsByteStream<St, Si>
where
    St: Stream<Item = Result<Bytes, E>> + Unpin,
    Si: Unpin,
    E: Into<Box<dyn StdError + Send + Sync>>,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.current.is_empty() {
            match ready!(Pin::new(&mut self.incoming).poll_next(cx)) {
                Some(Ok(message)) => self.current = message,
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = buf.remaining().min(self.current.len());
        buf.put_slice(&self.current[..n]);
        self.current.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<St, Si> AsyncWrite for WsByteStream<St, Si>
where
    St: Unpin,
    Si: Sink<Bytes> + Unpin,
    Si::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut sink = Pin::new(&mut self.outgoing);
        ready!(sink.as_mut().poll_ready(cx)).map_err(io_error)?;
        sink.start_send(Bytes::copy_from_slice(buf))
            .map_err(io_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.outgoing)
            .poll_flush(cx)
            .map_err(io_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.outgoing)
            .poll_close(cx)
            .map_err(io_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn messages_become_a_byte_stream_and_writes_become_messages() {
        let incoming = futures_util::stream::iter(vec![
            Ok::<_, Infallible>(Bytes::from_static(b"\xc0")),
            Ok(Bytes::new()),
            Ok(Bytes::from_static(b"\x00\xe0\x00")),
        ]);
        let mut ws = WsByteStream::new(incoming, Vec::<Bytes>::new());
        let mut all = Vec::new();
        ws.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"\xc0\x00\xe0\x00");

        ws.write_all(b"\xd0\x00").await.unwrap();
        ws.flush().await.unwrap();
        assert_eq!(ws.outgoing, vec![Bytes::from_static(b"\xd0\x00")]);
    }

    #[tokio::test]
    async fn stream_errors_are_io_errors() {
        let incoming = futures_util::stream::iter(vec![Err::<Bytes, _>(io::Error::other("boom"))]);
        let mut ws = WsByteStream::new(incoming, Vec::<Bytes>::new());
        let mut buf = [0u8; 4];
        assert!(ws.read(&mut buf).await.is_err());
    }
}
