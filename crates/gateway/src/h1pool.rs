//! HTTP/1.1 keep-alive connections to a plain-`http` upstream, each driven by the task that
//! uses it.
//!
//! hyper's pooled client gives every connection a task of its own: a proxied request is
//! handed to that task, which writes it, reads the answer and hands the head and then the
//! body back — two to three cross-task wake-ups per request, each one a possible hop to the
//! other core. Here the request's task (the one serving the client's connection) polls the
//! upstream connection itself, while it waits for the head and then inside the response
//! body it streams to the client, and puts the connection back when the body has ended.
//! An idle connection is not polled: a close by the upstream is found when the connection
//! is next taken (it is polled once first), and a request that a reused connection could
//! not send goes out once more on a new one, as hyper's pooled client does.
//!
//! TLS and HTTP/2 upstreams keep hyper's pooled client (`proxy.rs`): h2 multiplexes many
//! requests over one connection, which needs a task of its own.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, Request, Response, header};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type Conn = Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// One open connection: the half that sends and the half that does the I/O.
struct Open {
    tx: SendRequest<Full<Bytes>>,
    conn: Conn,
}

impl Open {
    /// Polls the connection once; `false` when it has finished (closed or failed).
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        Pin::new(&mut self.conn).poll(cx).is_pending()
    }
}

struct Idle {
    open: Open,
    since: Instant,
}

/// Why a request got no response head.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be opened (refused, unreachable, connect timeout).
    Connect(String),
    /// The connection failed while the request was sent or the answer read.
    Exchange(hyper::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(e) => write!(f, "connect: {e}"),
            Self::Exchange(e) => write!(f, "{e}"),
        }
    }
}

/// The keep-alive connections to one upstream (`host:port`).
pub struct H1Pool {
    authority: String,
    /// `authority` as the `Host` of every request (made once, not per request).
    host: Option<HeaderValue>,
    /// `authority` with the port made explicit, to connect to.
    address: String,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    /// Most recently used last (taken first: its socket is the warmest).
    idle: Mutex<Vec<Idle>>,
}

impl std::fmt::Debug for H1Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Pool").field("authority", &self.authority).finish_non_exhaustive()
    }
}

impl H1Pool {
    #[must_use]
    pub fn new(authority: String, connect_timeout: Duration, idle_timeout: Duration, max_idle: usize) -> Arc<Self> {
        let address = match authority.parse::<axum::http::uri::Authority>() {
            Ok(a) if a.port_u16().is_none() => format!("{authority}:80"),
            _ => authority.clone(),
        };
        let host = HeaderValue::from_str(&authority).ok();
        Arc::new(Self {
            authority,
            host,
            address,
            connect_timeout,
            idle_timeout,
            max_idle,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends `request` (origin-form URI; its `Host` becomes the upstream's) and waits for
    /// the response head; the body streams from the same connection, driven by whoever
    /// polls it.
    ///
    /// # Errors
    /// [`SendError::Connect`] when no connection could be opened, [`SendError::Exchange`]
    /// when the exchange failed.
    pub async fn send(self: &Arc<Self>, mut request: Request<Full<Bytes>>) -> Result<Response<PooledBody>, SendError> {
        if let Some(host) = &self.host {
            request.headers_mut().insert(header::HOST, host.clone());
        }
        loop {
            let (Open { mut tx, conn }, reused) = match self.checkout() {
                Some(open) => (open, true),
                None => (self.connect().await?, false),
            };
            let mut conn = Some(conn);
            let mut answer = pin!(tx.try_send_request(request));
            let sent = poll_fn(|cx| {
                // The connection first: it writes the request and reads what has arrived.
                // Once it has finished it is dropped at once: that cancels a request it never
                // took (closed before writing it), which hands the request back for a retry.
                if let Some(c) = &mut conn
                    && Pin::new(c).poll(cx).is_ready()
                {
                    conn = None;
                }
                // Only a turn of the connection fills the answer; a waker for it would wake
                // this very task.
                match conn {
                    Some(_) => answer.as_mut().poll(&mut quiet()),
                    None => answer.as_mut().poll(cx),
                }
            })
            .await;
            match sent {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    let open = conn.map(|conn| Open { tx, conn });
                    return Ok(Response::from_parts(parts, PooledBody { body, open, pool: Arc::clone(self) }));
                }
                // A reused connection closed before the request went out: once more, on a
                // new connection (never a request that may have been sent).
                Err(mut e) if reused => match e.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(SendError::Exchange(e.into_error())),
                },
                Err(e) => return Err(SendError::Exchange(e.into_error())),
            }
        }
    }

    /// An idle connection that is still open, if there is one.
    fn checkout(&self) -> Option<Open> {
        loop {
            let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop()?;
            if idle.since.elapsed() > self.idle_timeout {
                // The rest are older still.
                self.idle.lock().unwrap_or_else(PoisonError::into_inner).clear();
                return None;
            }
            let mut open = idle.open;
            // One turn of the connection: it reads a close (or stray bytes) the upstream sent
            // while it sat idle, and finishes. Without a waker: the request's turn right
            // after registers one (with one here, sending the request would wake this task).
            if open.drive(&mut quiet()) && open.tx.is_ready() {
                return Some(open);
            }
        }
    }

    async fn connect(&self) -> Result<Open, SendError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(self.address.as_str()))
            .await
            .map_err(|_| SendError::Connect("timed out".into()))?
            .map_err(|e| SendError::Connect(e.to_string()))?;
        stream.set_nodelay(true).map_err(|e| SendError::Connect(e.to_string()))?;
        let (tx, conn) = http1::handshake(TokioIo::new(stream)).await.map_err(SendError::Exchange)?;
        Ok(Open { tx, conn })
    }

    fn checkin(&self, open: Open) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        // The oldest first: once it has outlived the timeout, drop every one that has.
        if idle.first().is_some_and(|i| i.since.elapsed() > self.idle_timeout) {
            idle.retain(|i| i.since.elapsed() <= self.idle_timeout);
        }
        if idle.len() < self.max_idle {
            idle.push(Idle { open, since: Instant::now() });
        }
    }
}

/// A context whose waker does nothing, for polling what only this task's own turns of the
/// connection can make ready: hyper's channels between the connection and the request's
/// and body's halves would otherwise wake the task that is polling them, for one needless
/// extra poll and, when the other worker is parked, a wake-up of it.
fn quiet() -> Context<'static> {
    Context::from_waker(Waker::noop())
}

/// A response body from an [`H1Pool`] connection: polling it drives the connection, and
/// the connection goes back to the pool once the body has ended (dropped before that, the
/// connection is closed).
pub struct PooledBody {
    body: Incoming,
    /// `None` once the connection has finished or gone back to the pool.
    open: Option<Open>,
    pool: Arc<H1Pool>,
}

impl std::fmt::Debug for PooledBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledBody").field("pool", &self.pool).finish_non_exhaustive()
    }
}

impl PooledBody {
    /// The body has ended: one more turn of the connection (it reads the end of the message
    /// and turns idle), then back to the pool if it is ready for another request.
    fn release(&mut self) {
        if let Some(mut open) = self.open.take()
            && open.drive(&mut quiet())
            && open.tx.is_ready()
        {
            self.pool.checkin(open);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(open) = &mut this.open
            && !open.drive(cx)
        {
            this.open = None;
        }
        // While the connection runs, only its turns feed the body (see `send`).
        let frame = match this.open {
            Some(_) => Pin::new(&mut this.body).poll_frame(&mut quiet()),
            None => Pin::new(&mut this.body).poll_frame(cx),
        };
        match &frame {
            Poll::Ready(None) => this.release(),
            // The server stops polling once `is_end_stream` says so.
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.release(),
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // An empty body is never polled.
        if self.body.is_end_stream() {
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// How the test upstream answers each request on a connection.
    #[derive(Clone, Copy)]
    enum Answer {
        /// `hello` with a Content-Length, keep-alive.
        Sized,
        /// 204, no body.
        Empty,
        /// `hello` in two chunks.
        Chunked,
        /// `hello`, then the connection is closed 20 ms later without notice.
        ThenClose,
        /// 100 KB with a Content-Length (more than one read).
        Large,
        /// `hello`, then the connection is closed at once without notice.
        ThenCloseNow,
    }

    /// An upstream on 127.0.0.1:0 that answers every request (no bodies) and counts the
    /// connections it accepted.
    async fn upstream(answer: Answer) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        let Ok(n) = stream.read(&mut buf).await else { return };
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let reply: Vec<u8> = match answer {
                                Answer::Sized | Answer::ThenClose | Answer::ThenCloseNow => {
                                    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello".to_vec()
                                }
                                Answer::Empty => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
                                Answer::Chunked => {
                                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n"
                                        .to_vec()
                                }
                                Answer::Large => {
                                    let mut r = b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n".to_vec();
                                    r.extend(std::iter::repeat_n(b'x', 100_000));
                                    r
                                }
                            };
                            if stream.write_all(&reply).await.is_err() {
                                return;
                            }
                            match answer {
                                Answer::ThenClose => {
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                    return;
                                }
                                Answer::ThenCloseNow => return,
                                _ => {}
                            }
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn pool(addr: &str) -> Arc<H1Pool> {
        H1Pool::new(addr.to_owned(), Duration::from_secs(2), Duration::from_secs(90), 8)
    }

    fn get(addr: &str) -> Request<Full<Bytes>> {
        Request::builder().uri("/x").header("host", addr).body(Full::new(Bytes::new())).unwrap()
    }

    async fn body_of(pool: &Arc<H1Pool>, addr: &str) -> (u16, Bytes) {
        let response = pool.send(get(addr)).await.unwrap();
        let status = response.status().as_u16();
        (status, response.into_body().collect().await.unwrap().to_bytes())
    }

    #[tokio::test]
    async fn one_connection_serves_every_request_in_turn() {
        for (answer, status, body) in
            [(Answer::Sized, 200, &b"hello"[..]), (Answer::Empty, 204, &b""[..]), (Answer::Chunked, 200, &b"hello"[..])]
        {
            let (addr, accepted) = upstream(answer).await;
            let pool = pool(&addr);
            for _ in 0..20 {
                assert_eq!(body_of(&pool, &addr).await, (status, Bytes::from_static(body)));
            }
            assert_eq!(accepted.load(Ordering::SeqCst), 1);
        }
    }

    #[tokio::test]
    async fn an_empty_body_never_polled_still_returns_the_connection() {
        let (addr, accepted) = upstream(Answer::Empty).await;
        let pool = pool(&addr);
        for _ in 0..5 {
            let response = pool.send(get(&addr)).await.unwrap();
            assert!(response.body().is_end_stream());
            drop(response);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_large_body_streams_whole() {
        let (addr, accepted) = upstream(Answer::Large).await;
        let pool = pool(&addr);
        for _ in 0..3 {
            let (status, body) = body_of(&pool, &addr).await;
            assert_eq!((status, body.len()), (200, 100_000));
            assert!(body.iter().all(|b| *b == b'x'));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_half_read_closes_its_connection() {
        let (addr, accepted) = upstream(Answer::Large).await;
        let pool = pool(&addr);
        let mut body = pool.send(get(&addr)).await.unwrap().into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert!(first.len() < 100_000);
        drop(body);
        assert_eq!(body_of(&pool, &addr).await.1.len(), 100_000);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_while_idle_is_replaced() {
        let (addr, accepted) = upstream(Answer::ThenClose).await;
        let pool = pool(&addr);
        for _ in 0..3 {
            assert_eq!(body_of(&pool, &addr).await, (200, Bytes::from_static(b"hello")));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    /// Connections that close as soon as they have answered race every reuse: whichever
    /// way each race goes (the close seen before the request, while sending it, or after),
    /// a request ends at once — an answer or an error, never a wait for a timeout.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_closed_right_after_answering_never_hang_a_request() {
        let (addr, accepted) = upstream(Answer::ThenCloseNow).await;
        let pool = pool(&addr);
        let mut answered = 0;
        for _ in 0..300 {
            let sent = tokio::time::timeout(Duration::from_secs(5), pool.send(get(&addr))).await;
            let Ok(sent) = sent else { panic!("a request waited 5 s") };
            if let Ok(response) = sent {
                let body = tokio::time::timeout(Duration::from_secs(5), response.into_body().collect()).await;
                if body.is_ok_and(|b| b.is_ok_and(|b| b.to_bytes() == "hello")) {
                    answered += 1;
                }
            }
        }
        assert!(answered > 0 && accepted.load(Ordering::SeqCst) >= answered, "{answered}");
    }

    #[tokio::test]
    async fn no_upstream_is_a_connect_error() {
        // A port bound but never listening: refused, and no other test can take it.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap().to_string();
        let err = pool(&addr).send(get(&addr)).await.unwrap_err();
        assert!(matches!(err, SendError::Connect(_)), "{err}");
    }

    #[test]
    fn the_default_port_is_made_explicit() {
        assert_eq!(pool("upstream.internal").address, "upstream.internal:80");
        assert_eq!(pool("[::1]").address, "[::1]:80");
        assert_eq!(pool("127.0.0.1:8081").address, "127.0.0.1:8081");
    }
}
