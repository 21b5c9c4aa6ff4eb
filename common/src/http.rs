//! Outgoing HTTP (hostd → controller, controller → hostd, hostd → hostd):
//! hyper 1 with the hyper-util legacy client, `http://` and `https://`
//! (rustls, trusting only a configured CA), a timeout on every call, and
//! exponential backoff with jitter for retries.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
pub use hyper::Method;
use hyper::{Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Largest answer body read (unless [`HttpClient::with_max_body`]).
pub const MAX_BODY: usize = 4 << 20;

/// Outgoing HTTP failures.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HttpError {
    /// The URL cannot be used.
    #[error("bad URL {0}")]
    BadUrl(String),
    /// Connection or protocol failure.
    #[error("HTTP {0}")]
    Transport(String),
    /// No complete answer in time.
    #[error("HTTP call timed out after {0:?}")]
    Timeout(Duration),
    /// The answer body is too large.
    #[error("HTTP answer larger than the client's limit")]
    TooLarge,
}

/// A small HTTP/1 client (cheap to clone).
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    max_body: usize,
}

impl HttpClient {
    /// A client whose every call (connect + request + whole answer) is
    /// bounded by `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self::with_tls(timeout, None)
    }

    /// Like [`HttpClient::new`]; `https://` URLs are verified against the
    /// CA of `tls` ([`crate::tls::client_config`]); without it they fail.
    pub fn with_tls(timeout: Duration, tls: Option<rustls::ClientConfig>) -> Self {
        let mut conn = HttpConnector::new();
        conn.set_connect_timeout(Some(timeout));
        conn.set_nodelay(true);
        conn.enforce_http(false);
        // Without a CA nothing is trusted: https:// URLs fail to verify.
        // (`builder()` uses ring, the only provider compiled in.)
        let tls = tls.unwrap_or_else(|| {
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        });
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(conn);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(2)
            .build(https);
        HttpClient {
            client,
            timeout,
            max_body: MAX_BODY,
        }
    }

    /// The same client reading answer bodies of up to `bytes` (default
    /// [`MAX_BODY`]); a larger one fails with [`HttpError::TooLarge`].
    pub fn with_max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Sends `method url` with an optional bearer token and JSON body;
    /// returns the status code and the body, whatever the status.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        token: Option<&str>,
        json_body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes), HttpError> {
        let mut req = request(method, url, token)?;
        let body = match json_body {
            Some(b) => {
                req = req.header(hyper::header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(b))
            }
            None => Full::new(Bytes::new()),
        };
        let req = req
            .body(body)
            .map_err(|e| HttpError::BadUrl(format!("{url}: {e}")))?;
        let call = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| HttpError::Transport(format!("{e:?}")))?;
            let status = resp.status().as_u16();
            let limited = http_body_util::Limited::new(resp.into_body(), self.max_body);
            let body = limited
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        HttpError::TooLarge
                    } else {
                        HttpError::Transport(e.to_string())
                    }
                })?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| HttpError::Timeout(self.timeout))?
    }
}

impl HttpClient {
    /// Sends `GET url` with an optional bearer token and extra `headers`,
    /// and returns the status and the answer's body as it arrives (an
    /// event stream): the client's timeout bounds the connection and the
    /// headers, not the body, which the caller reads at its own pace.
    pub async fn open_stream(
        &self,
        url: &str,
        token: Option<&str>,
        headers: &[(&str, String)],
    ) -> Result<(u16, hyper::body::Incoming), HttpError> {
        let mut req = request(Method::GET, url, token)?;
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| HttpError::BadUrl(format!("{url}: {e}")))?;
        let resp = tokio::time::timeout(self.timeout, self.client.request(req))
            .await
            .map_err(|_| HttpError::Timeout(self.timeout))?
            .map_err(|e| HttpError::Transport(format!("{e:?}")))?;
        Ok((resp.status().as_u16(), resp.into_body()))
    }
}

/// A request to `url` (checked: `http://` or `https://` with a host) with
/// an optional bearer token.
fn request(
    method: Method,
    url: &str,
    token: Option<&str>,
) -> Result<hyper::http::request::Builder, HttpError> {
    let uri: Uri = url
        .parse()
        .map_err(|e| HttpError::BadUrl(format!("{url}: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(HttpError::BadUrl(format!(
            "{url}: need http://HOST or https://HOST"
        )));
    }
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    Ok(req)
}

/// A random `u64` from the standard library's per-process random keys
/// (jitter only; not for anything secret).
pub fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// Exponential backoff with ±25 % jitter: `base, 2·base, 4·base, … ≤ max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A fresh backoff.
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next delay to wait, jittered.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.attempt.min(20);
        self.attempt = self.attempt.saturating_add(1);
        let raw = self
            .base
            .checked_mul(1u32 << exp)
            .unwrap_or(self.max)
            .min(self.max);
        // Jitter factor in [0.75, 1.25).
        let f = 0.75 + (random_u64() % 10_000) as f64 / 20_000.0;
        raw.mul_f64(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_bounded_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let d: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        for (i, x) in d.iter().enumerate() {
            let nominal = (100u64 << i.min(20)).min(2000) as f64;
            let ms = x.as_secs_f64() * 1000.0;
            assert!(
                ms >= nominal * 0.75 - 1e-6 && ms < nominal * 1.25 + 1e-6,
                "{i}: {ms}"
            );
        }
        b.reset();
        assert!(b.next_delay() < Duration::from_millis(126));
    }

    #[tokio::test]
    async fn bad_urls_and_dead_peer_are_errors() {
        let c = HttpClient::new(Duration::from_millis(500));
        assert!(matches!(
            c.send(Method::GET, "not a url", None, None).await,
            Err(HttpError::BadUrl(_))
        ));
        assert!(matches!(
            c.send(Method::GET, "ftp://x/", None, None).await,
            Err(HttpError::BadUrl(_))
        ));
        // https:// without a trusted CA: the certificate cannot verify (a
        // transport error, never a silent success).
        let tls = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tls.local_addr().unwrap().port();
        std::thread::spawn(move || {
            use std::io::Write;
            // A TLS-speaking server is not needed: whatever answers is not
            // a certificate this client trusts.
            if let Ok((mut s, _)) = tls.accept() {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
            }
        });
        assert!(matches!(
            c.send(
                Method::GET,
                &format!("https://127.0.0.1:{port}/"),
                None,
                None
            )
            .await,
            Err(HttpError::Transport(_))
        ));
        // A port nobody listens on: a transport error, quickly.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let r = c
            .send(
                Method::GET,
                &format!("http://127.0.0.1:{port}/"),
                None,
                None,
            )
            .await;
        assert!(matches!(r, Err(HttpError::Transport(_))), "{r:?}");
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let h = tokio::spawn(async move {
            let (_s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
        });
        let c = HttpClient::new(Duration::from_millis(300));
        let r = c
            .send(Method::GET, &format!("http://{addr}/"), None, None)
            .await;
        assert!(matches!(r, Err(HttpError::Timeout(_))), "{r:?}");
        h.abort();
    }
}
