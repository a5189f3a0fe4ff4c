//! The web console: the pages under `/ui` (one HTML page, one script, one style sheet and an
//! icon, built into the binary so the console works offline and always matches the server). It
//! owns only serving those files with their types, a Content-Security-Policy that allows nothing
//! but them and the admin API on the same origin (no inline script, no other origin), and
//! revalidation by ETag. Everything the console shows or does goes through the admin API
//! (`/api/v1/…`) with the admin token the administrator types in; this module holds no data.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// One embedded file: its bytes, type and ETag (a digest of the bytes, computed once).
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    etag: OnceLock<String>,
}

impl Asset {
    const fn new(body: &'static [u8], content_type: &'static str) -> Self {
        Self {
            body,
            content_type,
            etag: OnceLock::new(),
        }
    }

    fn etag(&self) -> &str {
        self.etag.get_or_init(|| {
            let digest = Sha256::digest(self.body);
            let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
            format!("\"{hex}\"")
        })
    }
}

static INDEX: Asset = Asset::new(
    include_bytes!("console/index.html"),
    "text/html; charset=utf-8",
);
static SCRIPT: Asset = Asset::new(
    include_bytes!("console/console.js"),
    "text/javascript; charset=utf-8",
);
static STYLE: Asset = Asset::new(
    include_bytes!("console/console.css"),
    "text/css; charset=utf-8",
);
static ICON: Asset = Asset::new(include_bytes!("console/favicon.png"), "image/png");

/// Only this origin's script, style and API; no framing, no plugins, no inline code.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// `GET /ui` and `GET /ui/`: the page.
pub async fn page(headers: HeaderMap) -> Response {
    serve(&INDEX, &headers)
}

/// `GET /ui/{file}`: the script and the style sheet; anything else is not found.
pub async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match name.as_str() {
        "console.js" => serve(&SCRIPT, &headers),
        "console.css" => serve(&STYLE, &headers),
        "favicon.png" => serve(&ICON, &headers),
        "" | "index.html" => serve(&INDEX, &headers),
        _ => with_security_headers(
            (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("no console file {name:?}\n"),
            )
                .into_response(),
        ),
    }
}

fn serve(asset: &'static Asset, headers: &HeaderMap) -> Response {
    let etag = asset.etag();
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag));
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let h = response.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_str(etag).expect("hex ETag"));
    // Kept, but checked each time: a new server version serves its own console at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    with_security_headers(response)
}

fn with_security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_script_and_style_and_has_no_inline_code() {
        let html = std::str::from_utf8(INDEX.body).unwrap();
        assert!(html.contains(r#"<script src="/ui/console.js" defer></script>"#));
        assert!(html.contains(r#"<link rel="stylesheet" href="/ui/console.css">"#));
        assert_eq!(
            html.matches("<script").count(),
            1,
            "one script, no inline one"
        );
        for inline in [
            " style=",
            " onclick=",
            " onload=",
            " onsubmit=",
            "javascript:",
        ] {
            assert!(!html.contains(inline), "inline code or style: {inline}");
        }
        assert!(html.contains(r#"<link rel="icon" href="/ui/favicon.png">"#));
        for asset in [&INDEX, &SCRIPT, &STYLE] {
            let text = std::str::from_utf8(asset.body).unwrap();
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "no other origin"
            );
        }
    }

    #[test]
    fn a_file_the_browser_has_is_not_sent_again_and_every_answer_carries_the_policy() {
        let fresh = serve(&SCRIPT, &HeaderMap::new());
        assert_eq!(fresh.status(), StatusCode::OK);
        assert_eq!(
            fresh.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(fresh.headers()[header::CACHE_CONTROL], "no-cache");
        let mut asking = HeaderMap::new();
        asking.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&format!("\"other\", {}", SCRIPT.etag())).unwrap(),
        );
        let again = serve(&SCRIPT, &asking);
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(again.headers()[header::ETAG], SCRIPT.etag());
        for response in [fresh, again] {
            assert_eq!(
                response.headers()[header::CONTENT_SECURITY_POLICY],
                CONTENT_SECURITY_POLICY
            );
        }
    }

    #[tokio::test]
    async fn an_unknown_console_file_is_not_found_under_the_same_policy() {
        let response = file(Path("secrets.txt".into()), HeaderMap::new()).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            response.headers()[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY
        );
    }

    #[test]
    fn etags_differ_per_file_and_are_quoted() {
        assert_ne!(INDEX.etag(), SCRIPT.etag());
        assert!(STYLE.etag().starts_with('"') && STYLE.etag().ends_with('"'));
    }
}
