//! One plain HTTP/1.1 request to a node, for the tools: `switchboard
//! group` (the API) and `switchboard bench` (`/metrics`, the API,
//! nats-server's monitoring). hyper's client connection over a new TCP
//! connection; `http://` only (a node's own address, on loopback or
//! through a tunnel).

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

/// How long one request may take, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `method url` (with `Authorization: Bearer <bearer>` when given, and
/// `body` as JSON when given); returns the status and the body. Errors
/// name the address and what went wrong.
pub async fn request(
    method: Method,
    url: &str,
    bearer: Option<&str>,
    body: Option<String>,
) -> Result<(StatusCode, Bytes), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: give a plain http:// address"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("{authority}: {e}"))?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", authority);
        if let Some(bearer) = bearer {
            request = request.header("authorization", format!("Bearer {bearer}"));
        }
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("{authority}: {e}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{authority}: {e}"))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{authority}: no answer within {TIMEOUT:?}"))?
}
