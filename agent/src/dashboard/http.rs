//! The dashboard's HTTP answers: the page, its script and style (built into the binary), and
//! its JSON. Read-only: anything but `GET` is 405, any other path 404, and every answer
//! carries the security headers of [`gantry_proto::dashboard_http`], which makes those
//! answers for both dashboards.
//!
//! | path | answer |
//! |---|---|
//! | `/dashboard` | the page |
//! | `/dashboard/app.js`, `/dashboard/app.css` | its script and style |
//! | `/dashboard/api/apps` | the apps, their releases, job, rollout, cohorts and instances |
//! | `/dashboard/api/series?app=A[&since=MS]` | `A`'s samples per cohort |
//! | `/dashboard/api/events?app=A` | `A`'s deploy events |
//! | `/dashboard/api/audit[?after=SEQ][&limit=N]` | the audit tail's public fields |

use gantry_proto::dashboard_http::{
    self as page, Answer, Assets, Route, json, number, param, text,
};
use hyper::{Method, StatusCode};
use serde_json::json;

use super::{Dashboard, lock};

const ASSETS: Assets = Assets {
    page: include_str!("assets/index.html"),
    script: include_str!("assets/app.js"),
    style: include_str!("assets/app.css"),
};

/// The data paths (the assets are [`page::route`]'s).
const DATA: [&str; 4] = [
    "/dashboard/api/apps",
    "/dashboard/api/series",
    "/dashboard/api/events",
    "/dashboard/api/audit",
];

/// Most audit entries one answer carries.
const MAX_AUDIT_LIMIT: usize = 500;
/// Audit entries an answer carries when the request does not say.
const DEFAULT_AUDIT_LIMIT: usize = 100;

/// Whether `path` is the dashboard's (the metrics listener hands those here).
pub fn is_dashboard_path(path: &str) -> bool {
    path == "/dashboard" || path.starts_with("/dashboard/")
}

/// The answer to `method path?query`.
pub fn answer(dashboard: &Dashboard, method: &Method, path: &str, query: Option<&str>) -> Answer {
    let path = match page::route(&ASSETS, &DATA, method, path) {
        Route::Done(answer) => return answer,
        Route::Data(path) => path,
    };
    let inner = &dashboard.inner;
    match path {
        "/dashboard/api/apps" => {
            let apps = lock(&inner.apps).clone();
            json(&json!({ "apps": apps }))
        }
        "/dashboard/api/series" | "/dashboard/api/events" => {
            let Some(app) = param(query, "app") else {
                return text(StatusCode::BAD_REQUEST, "name the app: ?app=NAME\n");
            };
            if !lock(&inner.apps).iter().any(|a| a.name == app) {
                return text(StatusCode::NOT_FOUND, "no such app\n");
            }
            if path == "/dashboard/api/events" {
                let events = lock(&inner.audit).events_of(app);
                return json(&json!({ "app": app, "events": events }));
            }
            let Some(since) = number(query, "since", 0) else {
                return text(StatusCode::BAD_REQUEST, "since is Unix milliseconds\n");
            };
            let cohorts = lock(&inner.history).of_app(app, since);
            json(&json!({ "app": app, "cohorts": cohorts }))
        }
        _ => {
            let (Some(after), Some(limit)) = (
                number(query, "after", 0),
                number(query, "limit", DEFAULT_AUDIT_LIMIT as u64),
            ) else {
                return text(StatusCode::BAD_REQUEST, "after and limit are numbers\n");
            };
            let limit = usize::try_from(limit)
                .unwrap_or(MAX_AUDIT_LIMIT)
                .min(MAX_AUDIT_LIMIT);
            let entries = lock(&inner.audit).after(after, limit);
            json(&json!({ "entries": entries }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::AppSummary;
    use crate::dashboard::history::Sample;
    use http_body_util::{BodyExt, Full};
    use hyper::Response;
    use hyper::body::Bytes;

    fn dashboard() -> Dashboard {
        let d = Dashboard::default();
        let app = AppSummary {
            name: "web".to_owned(),
            current: Some("1.0.0".to_owned()),
            previous: None,
            active_job: Some("j1".to_owned()),
            strategy: Some("canary".to_owned()),
            rollout: "canary 50%".to_owned(),
            notes: String::new(),
            cohorts: vec!["canary".to_owned(), "stable".to_owned()],
            instances: Vec::new(),
        };
        let sample = |t| Sample {
            t_ms: t,
            span_ms: 1000,
            responses: 100,
            errors: 2,
            p95_ms: Some(25),
            cpu: Some(0.1),
            memory: Some(1 << 20),
        };
        d.record(
            vec![app],
            vec![
                ("web".to_owned(), "canary".to_owned(), sample(1000)),
                ("web".to_owned(), "canary".to_owned(), sample(2000)),
                ("web".to_owned(), "stable".to_owned(), sample(2000)),
            ],
        );
        d.record_audit([(
            7,
            r#"{"seq":7,"ts":"2026-12-02T01:00:00Z","prev":"0","event":"job.accepted","job_id":"j1","app":"web","action":"deploy","env":{"K":"v"}}"#
                .to_owned(),
        )]);
        d
    }

    async fn body(resp: Response<Full<Bytes>>) -> String {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn get(d: &Dashboard, path: &str, query: Option<&str>) -> Response<Full<Bytes>> {
        answer(d, &Method::GET, path, query)
    }

    #[track_caller]
    fn assert_headers(resp: &Response<Full<Bytes>>) {
        let h = resp.headers();
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["content-security-policy"], "default-src 'self'");
        assert_eq!(h["x-content-type-options"], "nosniff");
    }

    #[tokio::test]
    async fn the_page_and_its_assets_are_served_with_the_security_headers() {
        let d = dashboard();
        for (path, ty, needle) in [
            ("/dashboard", "text/html", "app.js"),
            ("/dashboard/", "text/html", "app.css"),
            (
                "/dashboard/app.js",
                "text/javascript",
                "/dashboard/api/apps",
            ),
            ("/dashboard/app.css", "text/css", "font"),
        ] {
            let resp = get(&d, path, None);
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            assert_headers(&resp);
            assert!(
                resp.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with(ty),
                "{path}"
            );
            assert!(body(resp).await.contains(needle), "{path}");
        }
    }

    #[tokio::test]
    async fn unknown_paths_are_404_and_other_methods_405() {
        let d = dashboard();
        for path in [
            "/dashboard/x",
            "/dashboard/api",
            "/dashboard/api/apps/web",
            "/dashboardx",
        ] {
            let resp = get(&d, path, None);
            assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
            assert_headers(&resp);
        }
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::HEAD] {
            let resp = answer(&d, &method, "/dashboard/api/apps", None);
            assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
            assert_eq!(resp.headers()["allow"], "GET");
            assert_headers(&resp);
        }
        assert!(is_dashboard_path("/dashboard"));
        assert!(is_dashboard_path("/dashboard/api/apps"));
        assert!(!is_dashboard_path("/dashboards"));
        assert!(!is_dashboard_path("/metrics"));
    }

    #[tokio::test]
    async fn the_json_answers_apps_series_events_and_the_audit_tail() {
        let d = dashboard();
        let apps: serde_json::Value =
            serde_json::from_str(&body(get(&d, "/dashboard/api/apps", None)).await).unwrap();
        assert_eq!(apps["apps"][0]["name"], "web");
        assert_eq!(apps["apps"][0]["active_job"], "j1");

        let resp = get(&d, "/dashboard/api/series", Some("app=web"));
        assert_eq!(resp.headers()["content-type"], "application/json");
        let series: serde_json::Value = serde_json::from_str(&body(resp).await).unwrap();
        assert_eq!(series["cohorts"]["canary"].as_array().unwrap().len(), 2);
        assert_eq!(series["cohorts"]["canary"][0]["errors"], 2);
        assert_eq!(series["cohorts"]["stable"][0]["p95_ms"], 25);
        let recent: serde_json::Value = serde_json::from_str(
            &body(get(&d, "/dashboard/api/series", Some("app=web&since=1000"))).await,
        )
        .unwrap();
        assert_eq!(recent["cohorts"]["canary"].as_array().unwrap().len(), 1);

        let events: serde_json::Value =
            serde_json::from_str(&body(get(&d, "/dashboard/api/events", Some("app=web"))).await)
                .unwrap();
        assert_eq!(events["events"][0]["kind"], "accepted");
        assert_eq!(events["events"][0]["job_id"], "j1");

        let audit = body(get(&d, "/dashboard/api/audit", Some("after=0"))).await;
        assert!(audit.contains("\"job_id\":\"j1\""), "{audit}");
        assert!(!audit.contains("env"), "{audit}");
        let later = body(get(&d, "/dashboard/api/audit", Some("after=7"))).await;
        assert_eq!(later, r#"{"entries":[]}"#);

        for (path, query, code) in [
            (
                "/dashboard/api/series",
                Some("app=api"),
                StatusCode::NOT_FOUND,
            ),
            ("/dashboard/api/events", None, StatusCode::BAD_REQUEST),
            (
                "/dashboard/api/series",
                Some("app=web&since=x"),
                StatusCode::BAD_REQUEST,
            ),
            (
                "/dashboard/api/audit",
                Some("after=-1"),
                StatusCode::BAD_REQUEST,
            ),
            (
                "/dashboard/api/audit",
                Some("limit=ten"),
                StatusCode::BAD_REQUEST,
            ),
        ] {
            let resp = get(&d, path, query);
            assert_eq!(resp.status(), code, "{path}?{query:?}");
            assert_headers(&resp);
        }
    }
}
