//! Reads a request body with the configured size cap and read timeout, so a slow or oversized
//! upload is refused with a clear status instead of holding a worker; `read_json` also decodes
//! it, naming what was expected when it is not valid.

use super::AppState;
use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use http_body_util::BodyExt as _;

/// Reads the body within the size cap and read timeout. A `Content-Length` above the cap is
/// refused at once, before a byte of the body is read.
pub async fn read(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<u8>, (StatusCode, String)> {
    let limit = state.limits.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(declared) = declared.filter(|d| *d > limit as u64) {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {declared} bytes is larger than the {limit}-byte limit"),
        ));
    }
    let limited = http_body_util::Limited::new(body, limit);
    match tokio::time::timeout(state.limits.read_timeout, limited.collect()).await {
        Err(_) => Err((
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "request body not received within {} s",
                state.limits.read_timeout.as_secs()
            ),
        )),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err((
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body larger than the {limit}-byte limit"),
            ))
        }
        Ok(Err(e)) => Err((
            StatusCode::BAD_REQUEST,
            format!("request body could not be read: {e}"),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes().to_vec()),
    }
}

/// Reads the body and decodes it as JSON; a decoding error is a 400 whose message starts with
/// `expected` (what the endpoint takes) and ends with the decoder's reason.
pub async fn read_json<T: serde::de::DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    expected: &str,
) -> Result<T, (StatusCode, String)> {
    let raw = read(state, headers, body).await?;
    serde_json::from_slice(&raw).map_err(|e| (StatusCode::BAD_REQUEST, format!("{expected}: {e}")))
}
