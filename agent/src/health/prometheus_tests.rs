use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::job::Cmp;

fn vector(values: &[&str]) -> Vec<u8> {
    let series: Vec<Value> = values
        .iter()
        .map(|v| json!({"metric": {}, "value": [1700000000.5, v]}))
        .collect();
    json!({"status": "success", "data": {"resultType": "vector", "result": series}})
        .to_string()
        .into_bytes()
}

#[test]
fn a_scalar_or_a_single_series_is_the_value() {
    assert_eq!(read_answer(200, &vector(&["0.25"])), Ok(0.25));
    let scalar =
        json!({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "3"]}});
    assert_eq!(read_answer(200, scalar.to_string().as_bytes()), Ok(3.0));
    assert_eq!(read_answer(200, &vector(&["+Inf"])), Ok(f64::INFINITY));
    assert_eq!(read_answer(200, &vector(&["-Inf"])), Ok(f64::NEG_INFINITY));
}

#[test]
fn anything_but_one_number_is_no_data_with_its_reason() {
    assert_eq!(read_answer(200, &vector(&[])), Err(NoValue::Empty));
    assert_eq!(
        read_answer(200, &vector(&["1", "2"])),
        Err(NoValue::Series(2))
    );
    assert_eq!(read_answer(200, &vector(&["NaN"])), Err(NoValue::NaN));
    let bad = |body: &str| match read_answer(200, body.as_bytes()) {
        Err(NoValue::Unreadable(why)) => why,
        other => panic!("{body}: {other:?}"),
    };
    assert!(bad("not json").contains("expected"));
    assert!(bad(r#"{"status":"error"}"#).contains("status \"error\""));
    assert!(
        bad(r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#)
            .contains("result type matrix")
    );
    assert!(
        bad(r#"{"status":"success","data":{"resultType":"vector"}}"#)
            .contains("without a result list")
    );
    assert!(
        bad(r#"{"status":"success","data":{"resultType":"scalar","result":[1,2]}}"#)
            .contains("has no value")
    );
    assert!(
        bad(r#"{"status":"success","data":{"resultType":"scalar","result":[1,"x"]}}"#)
            .contains("\"x\" is not a number")
    );
    let err = read_answer(
        400,
        br#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#,
    )
    .unwrap_err();
    assert_eq!(
        err,
        NoValue::Status {
            status: 400,
            detail: "bad_data: parse error at char 3".to_owned()
        }
    );
    let err = read_answer(502, b"Bad Gateway").unwrap_err();
    assert_eq!(err.to_string(), "Prometheus answered HTTP 502: Bad Gateway");
}

fn check(cmp: Cmp, value: f64) -> PromCheck {
    PromCheck {
        name: "errors".to_owned(),
        query: "q".to_owned(),
        condition: Condition { cmp, value },
    }
}

#[test]
fn the_verdict_passes_only_on_a_value_that_meets_the_condition() {
    let c = check(Cmp::Lt, 0.01);
    let pass = PromVerdict::of(&c, "q1".to_owned(), Ok(0.001));
    assert_eq!((pass.outcome, pass.value), (Outcome::Pass, Some(0.001)));
    let fail = PromVerdict::of(&c, "q1".to_owned(), Ok(0.5));
    assert_eq!(fail.outcome, Outcome::Fail);
    assert_eq!(
        fail.to_string(),
        "prometheus check errors: q1 = 0.5 does not meet < 0.01"
    );
    let j = fail.to_json();
    assert_eq!(j["metric"], "prometheus");
    assert_eq!(j["query"], "q1");
    assert_eq!(j["condition"], "< 0.01");
    assert_eq!(j["value"], 0.5);
    assert_eq!(j["outcome"], "fail");
    let none = PromVerdict::of(&c, "q1".to_owned(), Err(NoValue::Empty));
    assert_eq!((none.outcome, none.value), (Outcome::NoData, None));
    assert_eq!(none.to_json()["reason"], "the query returned no series");
    assert!(
        none.to_string()
            .contains("has no value for < 0.01 (the query returned no series)")
    );
}

#[test]
fn a_query_is_percent_encoded() {
    assert_eq!(encode("a-b_c.d~9"), "a-b_c.d~9");
    assert_eq!(
        encode(r#"x{a="b"}[5s] / 2"#),
        "x%7Ba%3D%22b%22%7D%5B5s%5D%20%2F%202"
    );
}

/// A server that answers every connection with `reply` and returns the first request's head.
async fn serve(reply: Vec<u8>) -> (PromUrl, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        s.write_all(&reply).await.unwrap();
        s.shutdown().await.ok();
        String::from_utf8_lossy(&head).into_owned()
    });
    let url = PromUrl {
        host: "127.0.0.1".to_owned(),
        port,
        prefix: "/prom".to_owned(),
    };
    (url, task)
}

fn http(status: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[tokio::test]
async fn the_query_is_sent_under_the_prefix_and_its_value_read() {
    let (url, server) = serve(http("200 OK", &vector(&["0.004"]))).await;
    let value = instant_query(&url, "sum(x{a=\"b\"})").await;
    let head = server.await.unwrap();
    assert_eq!(value, Ok(0.004));
    assert!(
        head.starts_with("GET /prom/api/v1/query?query=sum%28x%7Ba%3D%22b%22%7D%29 HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.to_lowercase()
            .contains(&format!("host: 127.0.0.1:{}", url.port)),
        "{head}"
    );
}

#[tokio::test]
async fn a_large_answer_or_a_closed_port_is_no_data() {
    let big = vec![b' '; MAX_RESPONSE_BYTES + 1];
    let (url, server) = serve(http("200 OK", &big)).await;
    assert_eq!(instant_query(&url, "up").await, Err(NoValue::TooLarge));
    server.await.unwrap();

    let (url, server) = serve(http("200 OK", &vector(&[]))).await;
    assert_eq!(instant_query(&url, "up").await, Err(NoValue::Empty));
    server.await.unwrap();

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = PromUrl {
        host: "127.0.0.1".to_owned(),
        port: closed,
        prefix: String::new(),
    };
    let gate = PromGate {
        url,
        checks: vec![check(Cmp::Lt, 1.0)],
    };
    let verdicts = judge(&gate, "web", "canary", Duration::from_secs(3)).await;
    assert_eq!(verdicts.len(), 1);
    assert_eq!(verdicts[0].outcome, Outcome::NoData);
    assert!(
        matches!(&verdicts[0].no_value, Some(NoValue::Unreachable { url, .. }) if url.ends_with(&format!(":{closed}"))),
        "{:?}",
        verdicts[0]
    );
}
