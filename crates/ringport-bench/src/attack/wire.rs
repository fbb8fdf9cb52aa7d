//! One attacker connection: a blocking std socket bound to a chosen loopback source address,
//! the frames the attacks send, and what the server answered (a CLOSE and its reason, the
//! end of the stream, a reset, or nothing within a deadline).

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ringport_proto::{Decoder, Frame, Hello, Resume, ResumePoint, StreamName};

/// How long a connect may take before it counts as failed (an overrun backlog answers a
/// SYN only after its 1 s retransmit).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What the server did with a connection in the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A CLOSE frame with this reason name (or code).
    Close(String),
    /// The stream ended without a CLOSE.
    Eof,
    /// The connection was reset.
    Reset,
    /// Nothing conclusive before the deadline.
    Timeout,
    /// Bytes that are not the native protocol (an HTTP answer from the admin port).
    NotProtocol,
}

impl Outcome {
    /// The key under which the report counts it.
    pub fn key(&self) -> String {
        match self {
            Outcome::Close(r) => format!("close:{r}"),
            Outcome::Eof => "eof".into(),
            Outcome::Reset => "reset".into(),
            Outcome::Timeout => "no_answer".into(),
            Outcome::NotProtocol => "non_protocol_answer".into(),
        }
    }
}

/// A connection from `from` to `to`, blocking, with TCP_NODELAY.
pub fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let domain = socket2::Domain::for_address(to);
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    s.bind(&SocketAddr::new(from, 0).into())?;
    s.connect_timeout(&to.into(), CONNECT_TIMEOUT)?;
    s.set_tcp_nodelay(true)?;
    Ok(s.into())
}

/// Drops the connection with an RST instead of a FIN.
pub fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

pub fn encode(frame: &Frame) -> Bytes {
    frame
        .to_bytes()
        .expect("attack frames are built within the codec's limits")
}

pub fn hello(token: Vec<u8>, resume: Option<Resume>) -> Frame {
    Frame::Hello(Hello {
        token: Bytes::from(token),
        client_info: "ringport-bench attack".into(),
        resume,
    })
}

/// A HELLO resuming `session_id` with one entry per room `<prefix><i>`, `0..entries`.
pub fn resume_hello(token: Vec<u8>, session_id: u64, prefix: &str, entries: usize) -> Frame {
    let streams = (0..entries)
        .map(|i| ResumePoint {
            stream: StreamName::Room(format!("{prefix}{i}")),
            epoch: 1,
            last_offset: 0,
        })
        .collect();
    hello(
        token,
        Some(Resume {
            session_id,
            streams,
        }),
    )
}

/// Reads frames from a blocking connection.
pub struct Reader {
    buf: BytesMut,
    decoder: Decoder,
}

impl Default for Reader {
    fn default() -> Self {
        Reader {
            buf: BytesMut::with_capacity(4096),
            decoder: Decoder::new(16 << 20),
        }
    }
}

/// What one [`Reader::next`] found.
pub enum Read1 {
    Frame(Frame),
    End(Outcome),
}

impl Reader {
    /// The next frame, or how the connection ended, within `deadline`.
    pub fn next(&mut self, s: &mut TcpStream, deadline: Instant) -> Read1 {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(f)) => return Read1::Frame(f),
                Ok(None) => {}
                Err(_) => return Read1::End(Outcome::NotProtocol),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Read1::End(Outcome::Timeout);
            }
            let _ = s.set_read_timeout(Some(left.max(Duration::from_millis(1))));
            match s.read(&mut chunk) {
                Ok(0) => return Read1::End(Outcome::Eof),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Read1::End(io_outcome(&e)),
            }
        }
    }

    /// Reads until the server's CLOSE (or the end, or `deadline`), ignoring other frames.
    pub fn until_end(&mut self, s: &mut TcpStream, deadline: Instant) -> Outcome {
        loop {
            match self.next(s, deadline) {
                Read1::Frame(Frame::Close { reason, .. }) => return close_outcome(reason),
                Read1::Frame(_) => {}
                Read1::End(o) => return o,
            }
        }
    }

    /// Drains what is readable now without blocking: `Some(outcome)` once the connection
    /// ended (a CLOSE, EOF or reset), `None` while it stays open.
    pub fn poll_end(&mut self, s: &mut TcpStream) -> Option<Outcome> {
        let _ = s.set_nonblocking(true);
        let mut chunk = [0u8; 16 * 1024];
        let end = loop {
            match s.read(&mut chunk) {
                Ok(0) => break Some(Outcome::Eof),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break None,
                Err(e) => break Some(io_outcome(&e)),
            }
        };
        let _ = s.set_nonblocking(false);
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(Frame::Close { reason, .. })) => return Some(close_outcome(reason)),
                Ok(Some(_)) => {}
                Ok(None) => return end,
                Err(_) => return Some(Outcome::NotProtocol),
            }
        }
    }
}

pub fn close_outcome(reason: ringport_proto::CloseReason) -> Outcome {
    Outcome::Close(
        reason
            .name()
            .map_or_else(|| reason.0.to_string(), str::to_string),
    )
}

fn io_outcome(e: &std::io::Error) -> Outcome {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Outcome::Timeout,
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            Outcome::Reset
        }
        _ => Outcome::Reset,
    }
}

/// Writes `bytes`; a peer that closed first is not an error for an attacker.
pub fn send(s: &mut TcpStream, bytes: &[u8]) -> bool {
    s.write_all(bytes).is_ok()
}

/// HELLO and its WELCOME (its session id), or how the connection ended instead.
pub fn handshake(
    s: &mut TcpStream,
    r: &mut Reader,
    token: Vec<u8>,
    deadline: Instant,
) -> Result<u64, Outcome> {
    if !send(s, &encode(&hello(token, None))) {
        return Err(Outcome::Reset);
    }
    loop {
        match r.next(s, deadline) {
            Read1::Frame(Frame::Welcome(w)) => return Ok(w.session_id),
            Read1::Frame(Frame::Close { reason, .. }) => return Err(close_outcome(reason)),
            Read1::Frame(_) => {}
            Read1::End(o) => return Err(o),
        }
    }
}
