//! The service dashboard's HTTP answers. Read-only: anything but `GET` is 405, any other path
//! 404, and every answer carries the security headers of [`gantry_proto::dashboard_http`],
//! which makes those answers for both dashboards.
//!
//! | path | answer |
//! |---|---|
//! | `/dashboard` | the page |
//! | `/dashboard/app.js`, `/dashboard/app.css` | its script and style |
//! | `/dashboard/api/rollouts` | the newest rollouts with rings, hosts and bake time left |
//! | `/dashboard/api/agents` | the inventory |
//! | `/dashboard/api/flags` | the flag sets the service distributes, each agent's delivery |
//! | `/dashboard/api/audit[?after=SEQ][&limit=N]` | the service audit tail's public fields |

use gantry_proto::dashboard_http::{self as page, Answer, Assets, Route, json, number, text};
use hyper::{Method, StatusCode};

use super::{Dashboard, view};
use crate::store::Store;

const ASSETS: Assets = Assets {
    page: include_str!("assets/index.html"),
    script: include_str!("assets/app.js"),
    style: include_str!("assets/app.css"),
};

/// The data paths (the assets are [`page::route`]'s).
const DATA: [&str; 4] = [
    "/dashboard/api/rollouts",
    "/dashboard/api/agents",
    "/dashboard/api/flags",
    "/dashboard/api/audit",
];

/// Most audit entries one answer carries.
const MAX_AUDIT_LIMIT: u64 = 500;
/// Audit entries an answer carries when the request does not say.
const DEFAULT_AUDIT_LIMIT: u64 = 100;

/// The answer to `method path?query`.
pub async fn answer<S: Store>(
    dashboard: &Dashboard<S>,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Answer {
    let path = match page::route(&ASSETS, &DATA, method, path) {
        Route::Done(answer) => return answer,
        Route::Data(path) => path,
    };
    let unavailable = |e: &dyn std::fmt::Display| {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot read the service's state: {e}\n"),
        )
    };
    match path {
        "/dashboard/api/rollouts" => {
            match view::rollouts(dashboard.store.as_ref(), dashboard.dialer.as_ref()).await {
                Ok(v) => json(&v),
                Err(e) => unavailable(&e),
            }
        }
        "/dashboard/api/agents" => match view::agents(dashboard.store.as_ref()).await {
            Ok(v) => json(&v),
            Err(e) => unavailable(&e),
        },
        "/dashboard/api/flags" => match view::flags(dashboard.store.as_ref()).await {
            Ok(v) => json(&v),
            Err(e) => unavailable(&e),
        },
        _ => {
            let (Some(after), Some(limit)) = (
                number(query, "after", 0),
                number(query, "limit", DEFAULT_AUDIT_LIMIT),
            ) else {
                return text(StatusCode::BAD_REQUEST, "after and limit are numbers\n");
            };
            let limit = usize::try_from(limit.min(MAX_AUDIT_LIMIT)).unwrap_or(0);
            let dir = dashboard.audit_dir.clone();
            match tokio::task::spawn_blocking(move || crate::audit::read_lines(&dir)).await {
                Ok(Ok(lines)) => json(&view::audit(&lines, after, limit)),
                Ok(Err(e)) => unavailable(&e),
                Err(e) => unavailable(&e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::EmbeddedStore;
    use http_body_util::{BodyExt, Full};
    use hyper::Response;
    use hyper::body::Bytes;
    use std::sync::Arc;

    async fn body(resp: Response<Full<Bytes>>) -> String {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[track_caller]
    fn assert_headers(resp: &Response<Full<Bytes>>) {
        let h = resp.headers();
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["content-security-policy"], "default-src 'self'");
        assert_eq!(h["x-content-type-options"], "nosniff");
    }

    #[tokio::test]
    async fn pages_json_404_and_405_all_carry_the_security_headers() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let audit_dir = dir.path().join("audit");
        std::fs::create_dir_all(&audit_dir).unwrap();
        std::fs::write(
            audit_dir.join(crate::audit::FILE_NAME),
            "{\"seq\":1,\"ts\":\"t\",\"prev\":\"0\",\"event\":\"service.started\",\"replica\":\"ctl-1\"}\n",
        )
        .unwrap();
        store
            .put_agent(crate::store::AgentRecord {
                id: "web-1".into(),
                addr: "127.0.0.1:1".into(),
                version: String::new(),
                environment: String::new(),
                labels: Default::default(),
                reachable: true,
                last_seen_ms: 1,
                error: String::new(),
            })
            .await
            .unwrap();
        let doc = gantry_proto::v1::FlagSet {
            app: "web".into(),
            version: 2,
            agent_ids: vec!["web-1".into()],
            ..Default::default()
        };
        let signed = gantry_proto::v1::SignedFlags {
            flags: prost::Message::encode_to_vec(&doc),
            signatures: vec![],
        };
        store
            .publish_flags(crate::store::FlagSetRecord {
                app: "web".into(),
                version: 2,
                signed_hex: hex::encode(prost::Message::encode_to_vec(&signed)),
                digest: "ab".into(),
                published_ms: 5,
                published_by: "ops-1".into(),
            })
            .await
            .unwrap();
        store
            .put_delivery(crate::store::FlagDeliveryRecord {
                app: "web".into(),
                agent_id: "web-1".into(),
                version: 2,
                state: crate::store::DeliveryState::Refused,
                detail: "no key signed it".into(),
                at_ms: 6,
                attempts: 1,
            })
            .await
            .unwrap();
        let d = Dashboard {
            store: Arc::new(store),
            audit_dir,
            dialer: None,
        };
        for (path, ty, needle) in [
            ("/dashboard", "text/html", "app.js"),
            (
                "/dashboard/app.js",
                "text/javascript",
                "/dashboard/api/rollouts",
            ),
            ("/dashboard/app.css", "text/css", "font"),
            (
                "/dashboard/api/rollouts",
                "application/json",
                "\"rollouts\":[]",
            ),
            ("/dashboard/api/agents", "application/json", "\"web-1\""),
            (
                "/dashboard/api/flags",
                "application/json",
                r#""deliveries":[{"agent_id":"web-1","at_ms":6,"attempts":1,"detail":"no key signed it","state":"refused","version":2}]"#,
            ),
            (
                "/dashboard/api/audit",
                "application/json",
                "service.started",
            ),
        ] {
            let resp = answer(&d, &Method::GET, path, None).await;
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
            assert_headers(&resp);
            assert!(
                resp.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with(ty),
                "{path}"
            );
            let text = body(resp).await;
            assert!(text.contains(needle), "{path}: {text}");
        }
        for path in ["/", "/dashboard/api", "/dashboard/x.js", "/metrics"] {
            let resp = answer(&d, &Method::GET, path, None).await;
            assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
            assert_headers(&resp);
        }
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::HEAD] {
            let resp = answer(&d, &method, "/dashboard/api/rollouts", None).await;
            assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
            assert_eq!(resp.headers()["allow"], "GET");
            assert_headers(&resp);
        }
        let bad = answer(&d, &Method::GET, "/dashboard/api/audit", Some("after=x")).await;
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        let later = answer(&d, &Method::GET, "/dashboard/api/audit", Some("after=1")).await;
        assert_eq!(body(later).await, r#"{"entries":[]}"#);
    }
}
