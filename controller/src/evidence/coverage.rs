//! Line coverage from LCOV (`LF`/`LH` per record, else its `DA` lines) or Cobertura XML (the
//! root `<coverage>`'s `lines-covered`/`lines-valid`, else its `line-rate`).

use quick_xml::events::Event;
use quick_xml::reader::Reader;

use super::{EvidenceError, Report};

/// Lines covered out of lines instrumented.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LineCoverage {
    /// Lines executed at least once.
    pub covered: f64,
    /// Lines instrumented.
    pub valid: f64,
}

impl LineCoverage {
    /// Percent of lines covered; 0 when nothing is instrumented.
    pub fn percent(&self) -> f64 {
        if self.valid <= 0.0 {
            0.0
        } else {
            self.covered * 100.0 / self.valid
        }
    }
}

/// Parses an LCOV tracefile.
///
/// # Errors
///
/// [`EvidenceError::Parse`] for a malformed count or a file with no record.
pub fn parse_lcov(report: &Report) -> Result<LineCoverage, EvidenceError> {
    const FORMAT: &str = "LCOV";
    let (mut covered, mut valid) = (0u64, 0u64);
    // Per record: the summary lines if present, else the DA lines counted.
    let (mut lf, mut lh, mut da_total, mut da_hit) = (None, None, 0u64, 0u64);
    let mut records = 0;
    for (n, line) in report.text.lines().enumerate() {
        let line = line.trim();
        let bad = |what: &str| report.invalid(FORMAT, format!("line {}: {what}: {line:?}", n + 1));
        let number = |s: &str| s.trim().parse::<u64>().map_err(|_| bad("not a count"));
        if let Some(v) = line.strip_prefix("LF:") {
            lf = Some(number(v)?);
        } else if let Some(v) = line.strip_prefix("LH:") {
            lh = Some(number(v)?);
        } else if let Some(v) = line.strip_prefix("DA:") {
            let mut parts = v.split(',');
            let (Some(_line_no), Some(hits)) = (parts.next(), parts.next()) else {
                return Err(bad("DA needs LINE,COUNT"));
            };
            da_total += 1;
            if number(hits)? > 0 {
                da_hit += 1;
            }
        } else if line == "end_of_record" {
            records += 1;
            valid += lf.unwrap_or(da_total);
            covered += lh.unwrap_or(da_hit);
            (lf, lh, da_total, da_hit) = (None, None, 0, 0);
        }
    }
    if records == 0 {
        return Err(report.invalid(FORMAT, "no end_of_record: not a tracefile"));
    }
    if covered > valid {
        return Err(report.invalid(FORMAT, format!("{covered} lines hit of {valid} found")));
    }
    Ok(LineCoverage {
        covered: covered as f64,
        valid: valid as f64,
    })
}

/// Parses a Cobertura XML report.
///
/// # Errors
///
/// [`EvidenceError::Parse`] when the XML is malformed or its root is not a `<coverage>` with
/// line counts or a line rate.
pub fn parse_cobertura(report: &Report) -> Result<LineCoverage, EvidenceError> {
    const FORMAT: &str = "Cobertura XML";
    let mut reader = Reader::from_str(&report.text);
    loop {
        let event = reader
            .read_event()
            .map_err(|e| report.invalid(FORMAT, e.to_string()))?;
        match event {
            Event::Start(e) | Event::Empty(e) => {
                if e.local_name().as_ref() != b"coverage" {
                    return Err(report.invalid(FORMAT, "the root element is not <coverage>"));
                }
                let attr = |name: &str| -> Result<Option<f64>, EvidenceError> {
                    let Some(a) = e
                        .try_get_attribute(name)
                        .map_err(|err| report.invalid(FORMAT, err.to_string()))?
                    else {
                        return Ok(None);
                    };
                    let v = a
                        .unescape_value()
                        .map_err(|err| report.invalid(FORMAT, err.to_string()))?;
                    v.trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|x| x.is_finite() && *x >= 0.0)
                        .map(Some)
                        .ok_or_else(|| {
                            report.invalid(FORMAT, format!("{name}={v:?} is not a number"))
                        })
                };
                return match (
                    attr("lines-covered")?,
                    attr("lines-valid")?,
                    attr("line-rate")?,
                ) {
                    (Some(covered), Some(valid), _) if covered <= valid => {
                        Ok(LineCoverage { covered, valid })
                    }
                    (_, _, Some(rate)) if rate <= 1.0 => Ok(LineCoverage {
                        covered: rate,
                        valid: 1.0,
                    }),
                    _ => Err(report.invalid(
                        FORMAT,
                        "<coverage> has neither lines-covered/lines-valid nor a line-rate in 0..1",
                    )),
                };
            }
            Event::Eof => return Err(report.invalid(FORMAT, "no <coverage> element")),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(text: &str) -> Report {
        Report {
            path: "cov".into(),
            text: text.to_owned(),
        }
    }

    #[test]
    fn lcov_sums_records_from_summaries_or_da_lines() {
        let lcov = "TN:\nSF:a.py\nDA:1,1\nDA:2,0\nLF:2\nLH:1\nend_of_record\n\
                    SF:b.py\nDA:1,3\nDA:2,1\nDA:3,0\nend_of_record\n";
        let c = parse_lcov(&report(lcov)).unwrap();
        assert_eq!((c.covered, c.valid), (3.0, 5.0));
        assert_eq!(c.percent(), 60.0);
    }

    #[test]
    fn lcov_without_records_or_with_bad_counts_is_refused() {
        assert!(parse_lcov(&report("hello\n")).is_err());
        let e = parse_lcov(&report("SF:a\nLF:x\nend_of_record\n")).unwrap_err();
        assert!(e.to_string().contains("line 2: not a count"), "{e}");
    }

    #[test]
    fn cobertura_reads_the_root_counts_or_rate() {
        let xml = r#"<?xml version="1.0" ?>
<!DOCTYPE coverage SYSTEM "http://cobertura.sourceforge.net/xml/coverage-04.dtd">
<coverage version="7.4" timestamp="1" lines-valid="40" lines-covered="30" line-rate="0.75">
<packages/></coverage>"#;
        assert_eq!(parse_cobertura(&report(xml)).unwrap().percent(), 75.0);
        let rate_only = r#"<coverage line-rate="0.5"></coverage>"#;
        assert_eq!(parse_cobertura(&report(rate_only)).unwrap().percent(), 50.0);
        let e = parse_cobertura(&report("<report/>")).unwrap_err();
        assert!(e.to_string().contains("not <coverage>"), "{e}");
    }
}
