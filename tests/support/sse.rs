//! A Server-Sent Events client for the tests of `GET /api/v1/events`: a
//! thread reads the stream (HTTP/1.0, so the body ends when the server
//! closes it) and keeps every event; [`tiny_socket`] makes a connection
//! whose receive buffer is as small as Linux allows, to play a client that
//! never reads.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// One event as received.
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// `id:` (None for the `gap` notice).
    pub id: Option<u64>,
    /// `event:`.
    pub kind: String,
    /// `data:` parsed as JSON.
    pub data: serde_json::Value,
}

/// A stream being read.
pub struct SseReader {
    events: Arc<Mutex<Vec<SseEvent>>>,
    ended: Arc<AtomicBool>,
    status: Arc<Mutex<Option<u16>>>,
    stream: TcpStream,
}

impl SseReader {
    /// Opens `GET /api/v1/events` at `addr` with `token`, resuming after
    /// `last_id` when given.
    pub fn connect(addr: &str, token: &str, last_id: Option<u64>) -> SseReader {
        let s = TcpStream::connect(addr).expect("connect to the API");
        Self::start(s, token, last_id, true)
    }

    /// Sends the request on `stream`; with `read` false nothing is read
    /// until [`SseReader::read_now`].
    pub fn start(stream: TcpStream, token: &str, last_id: Option<u64>, read: bool) -> SseReader {
        let mut w = stream.try_clone().expect("clone");
        let resume = last_id
            .map(|i| format!("Last-Event-ID: {i}\r\n"))
            .unwrap_or_default();
        write!(
            w,
            "GET /api/v1/events HTTP/1.0\r\nHost: shoal\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n{resume}\r\n"
        )
        .expect("send the request");
        let r = SseReader {
            events: Arc::default(),
            ended: Arc::default(),
            status: Arc::default(),
            stream,
        };
        if read {
            r.read_now();
        }
        r
    }

    /// Starts reading (in a thread) until the server ends the stream or
    /// the reader is closed.
    pub fn read_now(&self) {
        let rd = self.stream.try_clone().expect("clone");
        let (events, ended, status) =
            (self.events.clone(), self.ended.clone(), self.status.clone());
        std::thread::spawn(move || {
            let mut rd = BufReader::new(rd);
            let mut line = String::new();
            // Status line and headers.
            let mut first = true;
            loop {
                line.clear();
                if rd.read_line(&mut line).unwrap_or(0) == 0 {
                    ended.store(true, Ordering::SeqCst);
                    return;
                }
                if first {
                    *status.lock().unwrap() =
                        line.split_whitespace().nth(1).and_then(|c| c.parse().ok());
                    first = false;
                }
                if line == "\r\n" || line == "\n" {
                    break;
                }
            }
            let (mut id, mut kind, mut data) = (None, String::new(), String::new());
            loop {
                line.clear();
                if rd.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let l = line.trim_end_matches(['\r', '\n']);
                if l.is_empty() {
                    if !data.is_empty() {
                        events.lock().unwrap().push(SseEvent {
                            id,
                            kind: std::mem::take(&mut kind),
                            data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
                        });
                    }
                    (id, data) = (None, String::new());
                } else if let Some(v) = l.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = l.strip_prefix("event:") {
                    kind = v.trim().to_string();
                } else if let Some(v) = l.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            ended.store(true, Ordering::SeqCst);
        });
    }

    /// The events so far.
    pub fn events(&self) -> Vec<SseEvent> {
        self.events.lock().unwrap().clone()
    }

    /// The response's status code, once read.
    pub fn status(&self) -> Option<u16> {
        *self.status.lock().unwrap()
    }

    /// Whether the server ended the stream.
    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// Closes the connection (the client goes away).
    pub fn close(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

impl Drop for SseReader {
    fn drop(&mut self) {
        self.close();
    }
}

/// A TCP connection to `addr` (IPv4) whose receive buffer was made as
/// small as the kernel allows before connecting: a client that does not
/// read stops the server's writes after a few kilobytes.
pub fn tiny_socket(addr: &str) -> TcpStream {
    let a: SocketAddr = addr.parse().expect("IP:PORT");
    let SocketAddr::V4(a) = a else {
        panic!("IPv4 only")
    };
    // SAFETY: plain socket calls on a descriptor this function owns; the
    // structures are fully initialised; the descriptor goes to exactly one
    // TcpStream.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket");
        let size: libc::c_int = 1;
        let r = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(r, 0, "SO_RCVBUF");
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let r = libc::connect(
            fd,
            &sa as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(r, 0, "connect");
        TcpStream::from_raw_fd(fd)
    }
}
