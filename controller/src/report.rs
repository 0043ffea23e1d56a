//! How an error reads to people: its message, then each cause that adds something.

/// The texts of `e` and its causes, outermost first. A cause whose text repeats the one before
/// it is left out (some wrappers, tonic's transport errors among them, repeat their cause).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut texts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if texts.last() != Some(&text) {
            texts.push(text);
        }
        source = cause.source();
    }
    texts
}

/// The block `gantry` prints on stderr when it ends with an error: `error: …` and one
/// `  caused by: …` line per cause.
pub fn error_block(e: &(dyn std::error::Error + 'static)) -> String {
    let mut texts = chain(e).into_iter();
    let mut out = format!("error: {}", texts.next().unwrap_or_default());
    for cause in texts {
        out.push_str("\n  caused by: ");
        out.push_str(&cause);
    }
    out
}

/// The one JSON object `gantry --json` prints on stdout when it ends with an error, so that
/// CI reads the error and the exit code from the same stream as the events:
/// `{"type":"error","error":"…","causes":["…"],"exit_code":N}`.
pub fn error_json(e: &(dyn std::error::Error + 'static), exit_code: u8) -> serde_json::Value {
    let mut texts = chain(e).into_iter();
    let error = texts.next().unwrap_or_default();
    serde_json::json!({
        "type": "error",
        "error": error,
        "causes": texts.collect::<Vec<_>>(),
        "exit_code": exit_code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        #[source]
        source: Option<Box<Layer>>,
    }

    fn layers(texts: &[&'static str]) -> Layer {
        let mut it = texts.iter().rev();
        let mut e = Layer {
            text: it.next().copied().unwrap_or_default(),
            source: None,
        };
        for t in it {
            e = Layer {
                text: t,
                source: Some(Box::new(e)),
            };
        }
        e
    }

    #[test]
    fn causes_follow_the_message_and_repeats_are_dropped() {
        let e = layers(&[
            "cannot reach agent",
            "transport error",
            "transport error",
            "reset",
        ]);
        assert_eq!(
            chain(&e),
            vec!["cannot reach agent", "transport error", "reset"]
        );
        assert_eq!(
            error_block(&e),
            "error: cannot reach agent\n  caused by: transport error\n  caused by: reset"
        );
        assert_eq!(error_block(&layers(&["alone"])), "error: alone");
    }

    /// Issue 10 item 10: with `--json`, an error is one JSON object with the exit code.
    #[test]
    fn an_error_as_json_carries_message_causes_and_exit_code() {
        let e = layers(&["agent a1 refused Submit: expired", "because"]);
        assert_eq!(
            error_json(&e, 3),
            serde_json::json!({
                "type": "error",
                "error": "agent a1 refused Submit: expired",
                "causes": ["because"],
                "exit_code": 3,
            })
        );
    }
}
