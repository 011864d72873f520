//! A node's JSON client of the Kubernetes API, authenticated with the node's identity. Both the
//! node agent (crate::agent) and the node runtime (crate::runtime) use it; it lives below both so
//! neither depends on the other (docs/architecture.md §3).

use std::time::Duration;

use http_body_util::BodyExt;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::https::{ClientError, ClientIdentity, HttpsClient, Response, ServerTrust, TlsError};

/// Longest watch event a [`LineSplitter`] holds (docs/limits.md): objects are at most 3 MiB of
/// JSON when written, an event wraps one, with room for what the server adds.
pub(crate) const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// A line of a newline-delimited stream grew past the splitter's limit without a newline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("watch event longer than {limit} bytes (no newline within the limit)")]
pub(crate) struct LineTooLong {
    pub(crate) limit: usize,
}

/// Splits a newline-delimited stream (a watch response: one JSON event per line) into lines as
/// its chunks arrive. Each byte is scanned for the newline once, however the lines are cut
/// into chunks, and a partial line is moved down once per chunk, not once per line; a line
/// longer than the limit is an error, not an unbounded buffer. Blank lines are skipped.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    buf: Vec<u8>,
    /// Where the next line starts in `buf`.
    start: usize,
    /// `buf[start..scanned]` holds no newline.
    scanned: usize,
    limit: usize,
}

impl Default for LineSplitter {
    fn default() -> Self {
        LineSplitter::new(MAX_EVENT_BYTES)
    }
}

impl LineSplitter {
    /// A splitter for lines of at most `limit` bytes (the newline not counted).
    pub(crate) fn new(limit: usize) -> LineSplitter {
        LineSplitter {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            limit,
        }
    }

    /// Adds the next chunk of the stream.
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        if self.start > 0 {
            // The lines handed out already go; what is left is at most one partial line.
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete line (without its newline), `None` until more arrives, or an error
    /// once a line is longer than the limit (the stream is then unusable: drop it).
    pub(crate) fn next_line(&mut self) -> Option<Result<&[u8], LineTooLong>> {
        loop {
            let Some(at) = self.buf[self.scanned..].iter().position(|b| *b == b'\n') else {
                self.scanned = self.buf.len();
                if self.scanned - self.start > self.limit {
                    return Some(Err(self.too_long()));
                }
                return None;
            };
            let (start, end) = (self.start, self.scanned + at);
            self.start = end + 1;
            self.scanned = self.start;
            if end - start > self.limit {
                return Some(Err(self.too_long()));
            }
            if !self.buf[start..end].iter().all(u8::is_ascii_whitespace) {
                return Some(Ok(&self.buf[start..end]));
            }
        }
    }

    /// The error, with the buffer dropped (a caller that goes on reads from a fresh start).
    fn too_long(&mut self) -> LineTooLong {
        self.buf = Vec::new();
        self.start = 0;
        self.scanned = 0;
        LineTooLong { limit: self.limit }
    }
}

/// API access with the node's identity.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) client: HttpsClient,
    pub(crate) base: String,
}

impl Api {
    /// A client of the API at `api_url` that trusts `ca_pem` and presents the node's
    /// certificate, verifying the server as `server_name` when given.
    pub(crate) fn new(
        api_url: &str,
        ca_pem: &str,
        identity: ClientIdentity,
        server_name: Option<&str>,
        timeout: Duration,
    ) -> Result<Api, TlsError> {
        let mut client = HttpsClient::new(
            &ServerTrust::Ca(ca_pem.to_string()),
            Some(&identity),
            timeout,
        )?;
        if let Some(n) = server_name {
            client = client.with_server_name(n);
        }
        Ok(Api {
            client,
            base: api_url.trim_end_matches('/').to_string(),
        })
    }

    /// The same client, keeping connections open for the next request (for callers that talk
    /// to the API all the time).
    pub(crate) fn with_keep_alive(mut self) -> Api {
        self.client = self.client.with_keep_alive();
        self
    }

    /// Streams the watch at `path` (its query asking `watch=true`) and wakes `wake` at every
    /// event; the watch is opened again a second after it ends or fails, until `cancel`.
    pub(crate) async fn wake_on_watch(
        &self,
        path: &str,
        wake: &Notify,
        cancel: &CancellationToken,
    ) {
        let url = format!("{}{path}", self.base);
        let headers = [("accept", "application/json".to_string())];
        loop {
            if let Ok((200, mut body)) = self.client.stream(http::Method::GET, &url, &headers).await
            {
                loop {
                    let frame = tokio::select! {
                        _ = cancel.cancelled() => return,
                        f = body.frame() => f,
                    };
                    match frame {
                        Some(Ok(_)) => wake.notify_one(),
                        _ => break,
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Streams the watch at `path` (its query asking `watch=true` from a resourceVersion) and
    /// passes each event's type and object to `on_event` as it arrives, until the watch ends or
    /// fails, `on_event` answers `false` (say, an ERROR event such as 410 Gone), or `cancel`.
    /// The caller lists again afterwards: events may have been missed.
    pub(crate) async fn stream_events(
        &self,
        path: &str,
        cancel: &CancellationToken,
        mut on_event: impl FnMut(&str, Value) -> bool,
    ) {
        let url = format!("{}{path}", self.base);
        let headers = [("accept", "application/json".to_string())];
        let Ok((200, mut body)) = self.client.stream(http::Method::GET, &url, &headers).await
        else {
            return;
        };
        let mut lines = LineSplitter::default();
        loop {
            let frame = tokio::select! {
                _ = cancel.cancelled() => return,
                f = body.frame() => f,
            };
            let Some(Ok(frame)) = frame else { return };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            lines.push(&data);
            while let Some(line) = lines.next_line() {
                let line = match line {
                    Ok(line) => line,
                    Err(e) => {
                        tracing::warn!(path, "{e}");
                        return;
                    }
                };
                let Ok(mut event) = serde_json::from_slice::<Value>(line) else {
                    return;
                };
                let kind = event["type"].as_str().unwrap_or("").to_string();
                if !on_event(&kind, event["object"].take()) {
                    return;
                }
            }
        }
    }

    /// One request to `base` + `path`, JSON accepted, `body` serialised as JSON when given.
    pub(crate) async fn call(
        &self,
        method: http::Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<Value>,
    ) -> Result<Response, ClientError> {
        let mut headers = vec![("accept", "application/json".to_string())];
        if let Some(ct) = content_type {
            headers.push(("content-type", ct.to_string()));
        }
        let body = body.map(|b| serde_json::to_vec(&b).expect("serialises"));
        self.client
            .request(method, &format!("{}{path}", self.base), &headers, body)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line `chunks` yields, in order, or the first error.
    fn split(splitter: &mut LineSplitter, chunks: &[&[u8]]) -> Result<Vec<String>, LineTooLong> {
        let mut out = Vec::new();
        for c in chunks {
            splitter.push(c);
            while let Some(line) = splitter.next_line() {
                out.push(String::from_utf8(line?.to_vec()).unwrap());
            }
        }
        Ok(out)
    }

    #[test]
    fn a_line_cut_across_chunks_comes_out_whole() {
        let mut s = LineSplitter::default();
        let lines = split(
            &mut s,
            &[
                b"{\"type\":",
                b"\"ADDED\"",
                b"}",
                b"\n{\"type\"",
                b":\"DELETED\"}\n",
            ],
        )
        .unwrap();
        assert_eq!(lines, [r#"{"type":"ADDED"}"#, r#"{"type":"DELETED"}"#]);
        // Byte by byte too.
        let text = b"{\"a\":1}\n\n{\"b\":2}\n";
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        let lines = split(&mut LineSplitter::default(), &bytes).unwrap();
        assert_eq!(lines, [r#"{"a":1}"#, r#"{"b":2}"#]);
    }

    #[test]
    fn several_events_in_one_chunk_come_out_one_by_one() {
        let mut s = LineSplitter::default();
        let lines = split(&mut s, &[b"a\nb\n \r\n\nc\nd"]).unwrap();
        assert_eq!(lines, ["a", "b", "c"]);
        // The partial "d" waits for its newline.
        assert_eq!(split(&mut s, &[b"e\n"]).unwrap(), ["de"]);
        assert!(s.next_line().is_none());
    }

    #[test]
    fn an_over_long_line_is_an_error() {
        // Without a newline: refused once the buffer passes the limit.
        let mut s = LineSplitter::new(8);
        assert_eq!(split(&mut s, &[b"12345678"]).unwrap(), Vec::<String>::new());
        assert_eq!(split(&mut s, &[b"9"]), Err(LineTooLong { limit: 8 }));
        // With its newline in the same chunk as well.
        let mut s = LineSplitter::new(8);
        assert_eq!(
            split(&mut s, &[b"ok\n123456789\nnext\n"]),
            Err(LineTooLong { limit: 8 })
        );
        // A line of exactly the limit is fine.
        let mut s = LineSplitter::new(8);
        assert_eq!(split(&mut s, &[b"1234", b"5678\n"]).unwrap(), ["12345678"]);
        assert!(
            LineTooLong { limit: 8 }
                .to_string()
                .contains("longer than 8 bytes")
        );
    }
}
