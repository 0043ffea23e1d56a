//! JUnit XML: counts `<testcase>` elements and their `<failure>`, `<error>` and `<skipped>`
//! children, whatever the root (`<testsuites>`, `<testsuite>`) and whatever the suites'
//! summary attributes say: the cases are the evidence, totals are only a tool's claim.

use quick_xml::events::Event;
use quick_xml::reader::Reader;

use super::{EvidenceError, Report};

const FORMAT: &str = "JUnit XML";

/// Test counts from a JUnit report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TestCounts {
    /// Test cases.
    pub total: u64,
    /// Cases with a `<failure>` or an `<error>`.
    pub failed: u64,
    /// Cases with `<skipped>` (and no failure).
    pub skipped: u64,
}

impl TestCounts {
    /// Cases that ran.
    pub fn executed(&self) -> u64 {
        self.total - self.skipped
    }

    /// Percent of the executed cases that passed; 0 when none ran.
    pub fn pass_rate_percent(&self) -> f64 {
        match self.executed() {
            0 => 0.0,
            n => (n - self.failed) as f64 * 100.0 / n as f64,
        }
    }
}

/// Parses a JUnit XML report.
///
/// # Errors
///
/// [`EvidenceError::Parse`] when the XML is malformed or holds no `<testcase>`.
pub fn parse(report: &Report) -> Result<TestCounts, EvidenceError> {
    let mut reader = Reader::from_str(&report.text);
    let mut counts = TestCounts::default();
    // The outcome of the test case being read: (failed, skipped).
    let mut case: Option<(bool, bool)> = None;
    loop {
        let event = reader.read_event().map_err(|e| {
            report.invalid(FORMAT, format!("at byte {}: {e}", reader.buffer_position()))
        })?;
        match event {
            Event::Start(e) => match e.local_name().as_ref() {
                b"testcase" => case = Some((false, false)),
                name => mark(&mut case, name),
            },
            Event::Empty(e) => match e.local_name().as_ref() {
                b"testcase" => tally(&mut counts, (false, false)),
                name => mark(&mut case, name),
            },
            Event::End(e) if e.local_name().as_ref() == b"testcase" => {
                if let Some(outcome) = case.take() {
                    tally(&mut counts, outcome);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if counts.total == 0 {
        return Err(report.invalid(FORMAT, "no <testcase> element"));
    }
    Ok(counts)
}

fn mark(case: &mut Option<(bool, bool)>, child: &[u8]) {
    if let Some((failed, skipped)) = case {
        match child {
            b"failure" | b"error" => *failed = true,
            b"skipped" => *skipped = true,
            _ => {}
        }
    }
}

fn tally(counts: &mut TestCounts, (failed, skipped): (bool, bool)) {
    counts.total += 1;
    if failed {
        counts.failed += 1;
    } else if skipped {
        counts.skipped += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(text: &str) -> Report {
        Report {
            path: "junit.xml".into(),
            text: text.to_owned(),
        }
    }

    #[test]
    fn counts_cases_failures_errors_and_skips() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="99">
  <testsuite name="a" tests="3">
    <testcase classname="a" name="ok" time="0.1"/>
    <testcase classname="a" name="bad"><failure message="boom">trace</failure></testcase>
    <testcase classname="a" name="skip"><skipped/></testcase>
  </testsuite>
  <testsuite name="b"><testcase name="err"><error type="panic"/></testcase>
    <testcase name="ok2"><system-out>hi</system-out></testcase></testsuite>
</testsuites>"#;
        let c = parse(&report(xml)).unwrap();
        assert_eq!(
            c,
            TestCounts {
                total: 5,
                failed: 2,
                skipped: 1
            }
        );
        assert_eq!(c.pass_rate_percent(), 50.0);
    }

    #[test]
    fn a_report_without_cases_or_not_xml_is_refused() {
        let e = parse(&report("<testsuites/>")).unwrap_err();
        assert!(e.to_string().contains("no <testcase> element"), "{e}");
        let e = parse(&report("<testsuite><testcase></testsuite>")).unwrap_err();
        assert!(
            e.to_string().contains("is not a valid JUnit XML report"),
            "{e}"
        );
    }
}
