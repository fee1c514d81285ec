//! A small blocking HTTP/1.1 client over [`std::net::TcpStream`] for the
//! serving benchmark: JSON requests, and streamed responses whose
//! server-sent events are stamped with the time each one arrived.
//!
//! One request per connection (`Connection: close`); bodies framed by
//! `Content-Length`, `Transfer-Encoding: chunked` or the end of the
//! connection. No TLS, no redirects, no keep-alive: a benchmark against a
//! local server needs none of them, and nothing here adds latency that the
//! two servers would not both pay.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("response is not JSON: {}", self.text()))
    }
}

/// One server-sent event's `data:` payload and when its line arrived.
#[derive(Debug, Clone)]
pub struct Event {
    pub at: Instant,
    pub data: String,
}

/// A streamed response: the status, and either the events (status 200) or
/// the error body.
#[derive(Debug, Clone)]
pub struct Stream {
    /// Just before the request's first byte was written.
    pub sent: Instant,
    pub status: u16,
    pub events: Vec<Event>,
    /// The body when the status is not 200.
    pub error: Option<String>,
}

/// Reads the body of a `Transfer-Encoding: chunked` response.
struct Chunked<R> {
    inner: R,
    /// Bytes left in the current chunk.
    left: usize,
    done: bool,
}

impl<R: BufRead> Chunked<R> {
    fn new(inner: R) -> Self {
        Chunked {
            inner,
            left: 0,
            done: false,
        }
    }

    fn next_chunk(&mut self) -> io::Result<()> {
        let mut line = String::new();
        if self.inner.read_line(&mut line)? == 0 {
            self.done = true;
            return Ok(());
        }
        let size = line.trim().split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad chunk size line {line:?}"),
            )
        })?;
        if size == 0 {
            self.done = true;
        }
        self.left = size;
        Ok(())
    }
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.left == 0 && !self.done {
            self.next_chunk()?;
        }
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let n = buf.len().min(self.left);
        let got = self.inner.read(&mut buf[..n])?;
        if got == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= got;
        if self.left == 0 {
            // The CRLF after the chunk's data.
            let mut crlf = String::new();
            self.inner.read_line(&mut crlf)?;
        }
        Ok(got)
    }
}

/// Sends the request; returns the status and a reader over the body.
fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<(Instant, u16, Box<dyn Read + Send>)> {
    let conn = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    conn.set_nodelay(true)?;
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: */*\r\n");
    if let Some(b) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    let sent = Instant::now();
    (&conn)
        .write_all(&bytes)
        .with_context(|| format!("sending {method} {path}"))?;
    let mut reader = BufReader::new(conn);
    let mut status_line = String::new();
    reader
        .read_line(&mut status_line)
        .with_context(|| format!("reading the status of {method} {path}"))?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut chunked = false;
    let mut length = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("connection closed inside the headers of {method} {path}");
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("transfer-encoding")
                && value.to_ascii_lowercase().contains("chunked")
            {
                chunked = true;
            } else if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<u64>().ok();
            }
        }
    }
    let body: Box<dyn Read + Send> = if chunked {
        Box::new(Chunked::new(reader))
    } else if let Some(n) = length {
        Box::new(reader.take(n))
    } else {
        Box::new(reader)
    };
    Ok((sent, status, body))
}

/// A plain request; `body` is sent as JSON.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<Response> {
    let bytes = body.map(|b| b.to_string().into_bytes());
    let (_, status, mut reader) = send(addr, method, path, bytes.as_deref(), timeout)?;
    let mut body = Vec::new();
    reader
        .read_to_end(&mut body)
        .with_context(|| format!("reading the body of {method} {path}"))?;
    Ok(Response { status, body })
}

/// POSTs `body` and reads the response as server-sent events until
/// `data: [DONE]` or the end of the body, stamping each `data:` line.
pub fn stream(addr: SocketAddr, path: &str, body: &Value, timeout: Duration) -> Result<Stream> {
    let bytes = body.to_string().into_bytes();
    let (sent, status, reader) = send(addr, "POST", path, Some(&bytes), timeout)?;
    let mut reader = BufReader::new(reader);
    if status != 200 {
        let mut text = String::new();
        let _ = reader.read_to_string(&mut text);
        return Ok(Stream {
            sent,
            status,
            events: Vec::new(),
            error: Some(text),
        });
    }
    let mut events = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .with_context(|| format!("reading the event stream of {path}"))?;
        let at = Instant::now();
        if n == 0 {
            break;
        }
        let Some(data) = line.trim_end().strip_prefix("data:") else {
            continue;
        };
        let data = data.trim_start();
        if data == "[DONE]" {
            break;
        }
        events.push(Event {
            at,
            data: data.to_owned(),
        });
    }
    Ok(Stream {
        sent,
        status,
        events,
        error: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_decode() {
        let raw = b"5\r\nhello\r\n1;ext=1\r\n \r\n6\r\nworld!\r\n0\r\n\r\n";
        let mut out = String::new();
        Chunked::new(&raw[..]).read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello world!");
    }

    #[test]
    fn events_from_a_local_server() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).unwrap();
            let body = "data: {\"a\":1}\n\n: comment\n\ndata: {\"a\":2}\n\ndata: [DONE]\n\n";
            let mut resp = String::from(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
            );
            for part in body.as_bytes().chunks(7) {
                resp.push_str(&format!("{:x}\r\n", part.len()));
                resp.push_str(std::str::from_utf8(part).unwrap());
                resp.push_str("\r\n");
            }
            resp.push_str("0\r\n\r\n");
            s.write_all(resp.as_bytes()).unwrap();
        });
        let got = stream(addr, "/x", &serde_json::json!({}), Duration::from_secs(5)).unwrap();
        server.join().unwrap();
        assert_eq!(got.status, 200);
        let data: Vec<&str> = got.events.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(data, ["{\"a\":1}", "{\"a\":2}"]);
    }
}
