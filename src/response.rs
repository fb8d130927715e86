//! Responses anteroom writes itself, on the public and the admin listener.
//!
//! They are never cached (`Cache-Control: no-store`: a queue position or a
//! 503 must not be replayed by a CDN) unless made [`Reply::public`] (the
//! JWKS, the client script), and always carry `Content-Length` (without it
//! an HTTP/1 keep-alive client waits for more body forever), except a
//! stream, which is chunked ([`start_stream`]).

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use serde::Serialize;

/// A complete response held in memory.
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    content_type: &'static str,
    body: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The one `Cache-Control` it carries.
    cache: &'static str,
}

impl Reply {
    /// A JSON body.
    pub fn json(status: u16, value: &impl Serialize) -> Reply {
        // Serializing our own plain structs cannot fail.
        let body = serde_json::to_vec(value).unwrap_or_default();
        Reply::new(status, "application/json", body)
    }

    /// A plain-text body.
    pub fn text(status: u16, body: impl Into<Bytes>) -> Reply {
        Reply::new(status, "text/plain; charset=utf-8", body)
    }

    /// Any body.
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
        Reply {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
            cache: "no-store",
        }
    }

    /// The same response, cacheable by anyone for as long as `cache_control`
    /// says (e.g. `"public, max-age=300"`), instead of `no-store`.
    pub fn public(mut self, cache_control: &'static str) -> Reply {
        self.cache = cache_control;
        self
    }

    /// `304 Not Modified` when the request's `If-None-Match` names `etag`,
    /// else this response; either way with the `ETag`.
    pub fn unless_unchanged(self, etag: &str, if_none_match: Option<&HeaderValue>) -> Reply {
        let unchanged = if_none_match
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| matches!(t.trim(), "*") || t.trim().trim_start_matches("W/") == etag)
            });
        let reply = if unchanged {
            Reply {
                status: 304,
                body: Bytes::new(),
                ..self
            }
        } else {
            self
        };
        reply.header(http::header::ETAG, etag)
    }

    /// The error body every anteroom error shares: `{"code": ..., "message": ...}`.
    pub fn error(status: u16, code: &'static str, message: impl Into<String>) -> Reply {
        #[derive(Serialize)]
        struct Body {
            code: &'static str,
            message: String,
        }
        Reply::json(
            status,
            &Body {
                code,
                message: message.into(),
            },
        )
    }

    /// Adds a header; values that are not valid header text are dropped.
    pub fn header(mut self, name: HeaderName, value: impl AsRef<str>) -> Reply {
        if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
            self.headers.push((name, v));
        }
        self
    }

    /// Adds a header whose value is already checked.
    pub fn header_value(mut self, name: HeaderName, value: HeaderValue) -> Reply {
        self.headers.push((name, value));
        self
    }

    /// Adds a header once per value (`Set-Cookie`s, say).
    pub fn headers<V: AsRef<str>>(
        self,
        name: HeaderName,
        values: impl IntoIterator<Item = V>,
    ) -> Reply {
        values
            .into_iter()
            .fold(self, |reply, value| reply.header(name.clone(), value))
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The same response with another status (e.g. a redirect).
    pub fn with_status(mut self, status: u16) -> Reply {
        self.status = status;
        self
    }

    fn response_header(&self) -> pingora::Result<ResponseHeader> {
        let mut h = ResponseHeader::build(self.status, Some(4 + self.headers.len()))?;
        h.insert_header(CONTENT_TYPE, self.content_type)?;
        if self.status != 304 {
            h.insert_header(CONTENT_LENGTH, self.body.len().to_string())?;
        }
        h.insert_header(CACHE_CONTROL, self.cache)?;
        for (name, value) in &self.headers {
            h.append_header(name.clone(), value.clone())?;
        }
        Ok(h)
    }

    /// Writes the response to a proxy session (from `request_filter`).
    pub async fn send(self, session: &mut Session) -> pingora::Result<()> {
        let header = self.response_header()?;
        let head_only = session.req_header().method == http::Method::HEAD || self.body.is_empty();
        session
            .write_response_header(Box::new(header), head_only)
            .await?;
        if !head_only {
            session.write_response_body(Some(self.body), true).await?;
        }
        Ok(())
    }

    /// The same response as an `http::Response`, for the admin listener.
    pub fn into_response(self) -> http::Response<Vec<u8>> {
        let mut builder = http::Response::builder()
            .status(self.status)
            .header(CONTENT_TYPE, self.content_type)
            .header(CONTENT_LENGTH, self.body.len())
            .header(CACHE_CONTROL, self.cache);
        for (name, value) in self.headers {
            builder = builder.header(name, value);
        }
        builder
            .body(self.body.to_vec())
            .unwrap_or_else(|_| http::Response::new(Vec::new()))
    }
}

/// Starts a response whose body is written as it comes (an event stream):
/// no `Content-Length`; chunked on HTTP/1.1, frames on HTTP/2; no proxy
/// buffering (`X-Accel-Buffering: no`, honoured by nginx in front).
pub async fn start_stream(
    session: &mut Session,
    content_type: &'static str,
) -> pingora::Result<()> {
    let mut h = ResponseHeader::build(200, Some(4))?;
    h.insert_header(CONTENT_TYPE, content_type)?;
    h.insert_header(CACHE_CONTROL, "no-store")?;
    h.insert_header("x-accel-buffering", "no")?;
    if session.req_header().version == http::Version::HTTP_11 {
        h.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    }
    session.write_response_header(Box::new(h), false).await
}

/// A strong entity tag for `bytes`: the first 16 bytes of their SHA-256.
pub fn etag(bytes: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("\"{hex}\"")
}
