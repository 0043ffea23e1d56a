//! What the agent's and the service's read-only dashboards answer alike: the security
//! headers on every answer, 404 for a path the dashboard does not know, 405 (`Allow: GET`)
//! for anything but `GET`, the page with its script and style, and query parameters.
//!
//! Every answer carries `Cache-Control: no-store`, `Content-Security-Policy: default-src
//! 'self'` (the pages run no inline script or style and load nothing from elsewhere) and
//! `X-Content-Type-Options: nosniff`.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Response, StatusCode};

/// One HTTP answer.
pub type Answer = Response<Full<Bytes>>;

/// A dashboard's page, script and style, served at `/dashboard` (and `/dashboard/`),
/// `/dashboard/app.js` and `/dashboard/app.css`.
#[derive(Debug, Clone, Copy)]
pub struct Assets {
    /// The HTML page.
    pub page: &'static str,
    /// Its script.
    pub script: &'static str,
    /// Its style sheet.
    pub style: &'static str,
}

/// Where a request goes: a data path the dashboard itself answers, or an answer already made
/// (an asset, a 404 or a 405).
#[derive(Debug)]
pub enum Route<'a> {
    /// One of the data paths, asked with `GET`.
    Data(&'a str),
    /// The whole answer.
    Done(Answer),
}

/// Routes `method path`: the assets are answered here, as are unknown paths (404) and other
/// methods than `GET` (405); a `GET` of one of `data` is left to the caller.
pub fn route<'a>(assets: &Assets, data: &[&str], method: &Method, path: &'a str) -> Route<'a> {
    let asset = match path {
        "/dashboard" | "/dashboard/" => Some(("text/html; charset=utf-8", assets.page)),
        "/dashboard/app.js" => Some(("text/javascript; charset=utf-8", assets.script)),
        "/dashboard/app.css" => Some(("text/css; charset=utf-8", assets.style)),
        _ => None,
    };
    if asset.is_none() && !data.contains(&path) {
        return Route::Done(text(StatusCode::NOT_FOUND, "not found: try /dashboard\n"));
    }
    if method != Method::GET {
        let mut resp = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "the dashboard is read-only: GET\n",
        );
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return Route::Done(resp);
    }
    match asset {
        Some((content_type, body)) => Route::Done(respond(
            StatusCode::OK,
            content_type,
            Bytes::from_static(body.as_bytes()),
        )),
        None => Route::Data(path),
    }
}

/// An answer with the security headers.
pub fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Answer {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'self'"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// A plain-text answer.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Answer {
    respond(status, "text/plain; charset=utf-8", body.into())
}

/// A `200 OK` JSON answer.
pub fn json(value: &serde_json::Value) -> Answer {
    respond(
        StatusCode::OK,
        "application/json",
        Bytes::from(value.to_string()),
    )
}

/// `key`'s value in a query string (`a=1&b=2`); values are taken as they are (app names and
/// numbers need no decoding).
pub fn param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find_map(|(k, v)| (k == key).then_some(v))
}

/// A numeric parameter: `default` when absent, `None` when not a number.
pub fn number(query: Option<&str>, key: &str, default: u64) -> Option<u64> {
    match param(query, key) {
        None => Some(default),
        Some(v) => v.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ASSETS: Assets = Assets {
        page: "<html>",
        script: "js",
        style: "css",
    };

    fn done(route: Route<'_>) -> Answer {
        match route {
            Route::Done(a) => a,
            Route::Data(p) => panic!("{p} left to the caller"),
        }
    }

    #[test]
    fn assets_unknown_paths_and_other_methods_are_answered_here() {
        let data = ["/dashboard/api/x"];
        let page = done(route(&ASSETS, &data, &Method::GET, "/dashboard/"));
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
        assert_eq!(page.headers()["cache-control"], "no-store");
        let missing = done(route(&ASSETS, &data, &Method::GET, "/dashboard/y"));
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        let post = done(route(&ASSETS, &data, &Method::POST, "/dashboard/api/x"));
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()["allow"], "GET");
        assert!(matches!(
            route(&ASSETS, &data, &Method::GET, "/dashboard/api/x"),
            Route::Data("/dashboard/api/x")
        ));
    }

    #[test]
    fn numbers_default_when_absent_and_fail_when_not_numbers() {
        assert_eq!(number(None, "after", 3), Some(3));
        assert_eq!(number(Some("a=1&after=9"), "after", 3), Some(9));
        assert_eq!(number(Some("after=x"), "after", 3), None);
        assert_eq!(param(Some("app=web"), "app"), Some("web"));
    }
}
