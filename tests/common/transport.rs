//! The three ways a request reaches anteroom, for suites that must hold on
//! each: HTTP/1.1 written byte for byte, HTTP/2 negotiated by ALPN over
//! TLS, and h2c (prior knowledge) on a plain listener. The HTTP/2 client is
//! the `h2` crate itself, so `:authority`, `:path` and `Host` are sent
//! exactly as the test writes them, as curl and browsers send them
//! (`:authority` only, no `Host`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::rustls;

/// A self-signed certificate for `localhost`, written where a config can
/// name it, and clients that trust it (and only it).
pub struct Tls {
    pub dir: tempfile::TempDir,
    pub cert: rcgen::Certificate,
}

impl Tls {
    pub fn new() -> Tls {
        let dir = tempfile::tempdir().unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(dir.path().join("cert.pem"), made.cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), made.signing_key.serialize_pem()).unwrap();
        Tls {
            dir,
            cert: made.cert,
        }
    }

    /// `[[server.tls]]` on `port`, with `extra` keys.
    pub fn listener(&self, port: u16, extra: &str) -> String {
        format!(
            "[[server.tls]]\nlisten = \"127.0.0.1:{port}\"\ncert = \"{}\"\nkey = \"{}\"\n{extra}\n",
            self.dir.path().join("cert.pem").display(),
            self.dir.path().join("key.pem").display()
        )
    }

    /// Waits until the TLS listener on `port` accepts (the plain one may be
    /// up a moment before).
    pub async fn accepting(port: u16) {
        super::eventually(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
    }

    /// A reqwest client that trusts this certificate only.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only([reqwest::Certificate::from_der(self.cert.der()).unwrap()])
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }
}

/// How a request travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Http1,
    H2Tls,
    H2c,
}

impl Transport {
    pub const ALL: [Transport; 3] = [Transport::Http1, Transport::H2Tls, Transport::H2c];
}

/// One request as a client writes it. `host` is `Host` over HTTP/1.1 and
/// `:authority` over HTTP/2; `headers` go as they are (a `Host` here beside
/// `:authority` too).
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub host: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
}

/// Where a proxy listens: plain (HTTP/1.1 and h2c) and TLS (ALPN h2).
pub struct Listeners<'a> {
    pub plain: SocketAddr,
    pub tls: SocketAddr,
    pub cert: &'a rcgen::Certificate,
}

/// What came back: the status and the body, or why nothing did (the
/// request could not be written in that protocol, or the stream was reset).
pub type Answer = Result<(u16, String), String>;

impl Listeners<'_> {
    /// Sends `req` over `transport` on a new connection.
    pub async fn send(&self, transport: Transport, req: &Request<'_>) -> Answer {
        let answer = async {
            match transport {
                Transport::Http1 => http1(self.plain, req).await,
                Transport::H2c => {
                    let tcp = tokio::net::TcpStream::connect(self.plain).await.unwrap();
                    h2(tcp, "http", req).await
                }
                Transport::H2Tls => {
                    let tcp = tokio::net::TcpStream::connect(self.tls).await.unwrap();
                    let tls = connector(self.cert)
                        .connect(
                            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                            tcp,
                        )
                        .await
                        .map_err(|e| format!("TLS: {e}"))?;
                    assert_eq!(
                        tls.get_ref().1.alpn_protocol(),
                        Some(&b"h2"[..]),
                        "h2 not negotiated"
                    );
                    h2(tls, "https", req).await
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(15), answer)
            .await
            .unwrap_or_else(|_| panic!("{transport:?} {req:?}: no answer"))
    }
}

pub fn connector(cert: &rcgen::Certificate) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// HTTP/1.1, the request line and headers exactly as given.
async fn http1(addr: SocketAddr, req: &Request<'_>) -> Answer {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut text = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\n",
        req.method, req.path, req.host
    );
    for (k, v) in req.headers {
        text += &format!("{k}: {v}\r\n");
    }
    text += "Connection: close\r\n\r\n";
    tcp.write_all(text.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

/// HTTP/2 on `io`: `:authority` is `req.host`, `:path` is `req.path`.
async fn h2<T>(io: T, scheme: &str, req: &Request<'_>) -> Answer
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let uri = http::Uri::builder()
        .scheme(scheme)
        .authority(req.host)
        .path_and_query(req.path)
        .build()
        .map_err(|e| format!("not an HTTP/2 request: {e}"))?;
    let mut builder = http::Request::builder().method(req.method).uri(uri);
    for (k, v) in req.headers {
        builder = builder.header(*k, *v);
    }
    let request = builder
        .body(())
        .map_err(|e| format!("not a request: {e}"))?;
    let (client, connection) = ::h2::client::handshake(io)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.map_err(|e| e.to_string())?;
    let (response, _) = client
        .send_request(request, true)
        .map_err(|e| format!("refused by the client library: {e}"))?;
    let response = response.await.map_err(|e| format!("reset: {e}"))?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk: Bytes = chunk.map_err(|e| e.to_string())?;
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}
