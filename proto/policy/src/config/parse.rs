//! TOML text to [`RawConfig`], reporting every syntax and shape error it can find at once.
//!
//! The TOML parser stops at its first error. So that an operator fixes a file in one pass, each
//! error's line is blanked out (spaces, so later line and column numbers stay right) and the
//! text parsed again, until it parses or an error cannot be stepped over without inventing
//! others: one on a table header (its keys would land in the table above), one spanning
//! several lines, or one with no position (a missing field). The rest of the checks need a
//! parsed file and run once there are no parse errors.

use super::raw::RawConfig;

/// Most parse errors reported for one file.
const MAX_ERRORS: usize = 32;

/// One parse error: where (`line L, column C`, or `(syntax)`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParseProblem {
    /// Line and column, for ordering.
    at: (usize, usize),
    /// `line L, column C`, or `(syntax)` when the parser gave no position.
    pub(crate) entry: String,
    /// What is wrong, naming the key where the parser did not.
    pub(crate) message: String,
}

/// Parses `text`; on failure, every error found (never empty).
pub(crate) fn parse(text: &str) -> Result<RawConfig, Vec<ParseProblem>> {
    let mut problems = Vec::new();
    let mut text = text.to_owned();
    loop {
        let e = match toml::from_str::<RawConfig>(&text) {
            Ok(raw) if problems.is_empty() => return Ok(raw),
            Ok(_) => return Err(in_order(problems)),
            Err(e) => e,
        };
        // A missing field has no line of its own to blame (and to step over).
        let span = e
            .span()
            .filter(|s| !s.is_empty() && !e.message().starts_with("missing field"));
        let Some(span) = span else {
            problems.push(ParseProblem {
                at: (usize::MAX, 0),
                entry: "(syntax)".to_owned(),
                message: e.message().trim().to_owned(),
            });
            return Err(in_order(problems));
        };
        let (line, col) = line_col(&text, span.start);
        problems.push(ParseProblem {
            at: (line, col),
            entry: format!("line {line}, column {col}"),
            message: message(&e, &text, span.clone()),
        });
        let (start, end) = line_bounds(&text, span.start, span.end);
        let lines = text.get(start..end).unwrap_or_default();
        if problems.len() >= MAX_ERRORS
            || lines.contains('\n')
            || lines.trim_start().starts_with('[')
        {
            return Err(in_order(problems));
        }
        let blank: String = lines.chars().map(|_| ' ').collect();
        text.replace_range(start..end, &blank);
    }
}

/// Problems by line; each line was blanked once reported, so no two share one.
fn in_order(mut problems: Vec<ParseProblem>) -> Vec<ParseProblem> {
    problems.sort_by_key(|p| p.at);
    problems
}

/// The parser's message; a duplicate key or table gets its name, which the parser leaves out.
fn message(e: &toml::de::Error, text: &str, span: std::ops::Range<usize>) -> String {
    let message = e.message().trim();
    let key = text.get(span.clone()).unwrap_or_default().trim();
    if message != "duplicate key" || key.is_empty() {
        return message.to_owned();
    }
    let (start, end) = line_bounds(text, span.start, span.end);
    let line = text.get(start..end).unwrap_or_default().trim();
    if line.starts_with('[') {
        format!("duplicate table `{line}`: it is defined earlier in the file")
    } else {
        format!("duplicate key `{key}`: it is set earlier in the same table")
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The byte range of the whole lines holding `start..end`, without the final newline.
fn line_bounds(text: &str, start: usize, end: usize) -> (usize, usize) {
    let start = start.min(text.len());
    let end = end.max(start).min(text.len());
    let from = text
        .get(..start)
        .and_then(|t| t.rfind('\n'))
        .map_or(0, |i| i + 1);
    // A span ending just after a newline belongs to the line before it.
    let last = if end > from && text.as_bytes().get(end - 1) == Some(&b'\n') {
        end - 1
    } else {
        end
    };
    let to = text
        .get(last..)
        .and_then(|t| t.find('\n'))
        .map_or(text.len(), |i| last + i);
    (from, to.max(from))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "agent_id = \"a\"\nlisten = \"127.0.0.1:0\"\ndata_dir = \"d\"\n";
    const TLS: &str = "[tls]\nca = \"c\"\ncert = \"c\"\nkey = \"k\"\n";

    fn problems(text: &str) -> Vec<(String, String)> {
        parse(text)
            .unwrap_err()
            .into_iter()
            .map(|p| (p.entry, p.message))
            .collect()
    }

    #[test]
    fn every_line_error_is_reported_at_once() {
        let text = format!("{HEAD}agent_id = \"b\"\nlisten = = \"x\"\nbogus = 1\n{TLS}");
        let got = problems(&text);
        assert_eq!(got.len(), 3, "{got:#?}");
        assert_eq!(got[0].0, "line 4, column 1");
        assert_eq!(
            got[0].1,
            "duplicate key `agent_id`: it is set earlier in the same table"
        );
        assert_eq!(got[1].0, "line 5, column 10");
        assert!(got[1].1.contains("extra `=`"), "{got:#?}");
        assert_eq!(got[2].0, "line 6, column 1");
        assert!(got[2].1.contains("unknown field `bogus`"), "{got:#?}");
    }

    #[test]
    fn a_valid_file_parses_and_a_header_error_stops_there() {
        assert!(parse(&format!("{HEAD}{TLS}")).is_ok());
        // Blanking `[tls]` would move its keys into the table above: stop there.
        let got = problems(&format!("{HEAD}{TLS}[tls]\nca = \"x\"\nbogus = 1\n"));
        assert_eq!(
            got,
            [(
                "line 8, column 2".to_owned(),
                "duplicate table `[tls]`: it is defined earlier in the file".to_owned()
            )]
        );
        // A missing field names no line: it is reported once, with the others found before.
        let got = problems("agent_id = \"a\"\nbogus = 1\n");
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(got[0].1.contains("unknown field `bogus`"), "{got:#?}");
        assert_eq!(got[1].0, "(syntax)");
        assert!(got[1].1.starts_with("missing field"), "{got:#?}");
    }

    #[test]
    fn line_bounds_cover_whole_lines() {
        let text = "a = 1\nbb = 2\nc = 3";
        assert_eq!(line_bounds(text, 7, 8), (6, 12));
        assert_eq!(line_bounds(text, 6, 13), (6, 12));
        assert_eq!(line_bounds(text, 6, 14), (6, 18));
        assert_eq!(line_bounds(text, 0, 0), (0, 5));
        assert_eq!(line_bounds(text, 99, 99), (13, 18));
    }
}
