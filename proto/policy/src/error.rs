//! How an error and its causes are written: one [`Chain`] adapter, shared by the agent
//! (job reasons, log lines, audit details, the binary's last words), config problems and the
//! controller's explanations.

use std::error::Error;
use std::fmt;

/// Displays an error with its `source()` chain.
///
/// `{}` gives one line, `a: b: c`, leaving out a cause whose text already ends the line (an
/// error that prints its cause itself). `{:#}` gives one cause per line, each under
/// `  caused by: `, as the binary prints it before exiting.
#[derive(Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            write!(f, "{}", self.0)?;
            let mut source = self.0.source();
            while let Some(cause) = source {
                write!(f, "\n  caused by: {cause}")?;
                source = cause.source();
            }
            return Ok(());
        }
        let mut line = self.0.to_string();
        let mut source = self.0.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !line.ends_with(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            source = cause.source();
        }
        f.write_str(&line)
    }
}

impl fmt::Debug for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("cannot write state")]
        Write(#[source] std::io::Error),
        #[error("cannot read: {0}")]
        Read(#[source] std::io::Error),
    }

    #[test]
    fn one_line_joins_the_causes() {
        let e = Outer::Write(std::io::Error::other("disk full"));
        assert_eq!(Chain(&e).to_string(), "cannot write state: disk full");
    }

    #[test]
    fn a_cause_the_message_already_ends_with_is_not_repeated() {
        let e = Outer::Read(std::io::Error::other("no such file"));
        assert_eq!(crate::error_chain(&e), "cannot read: no such file");
    }

    #[test]
    fn alternate_puts_each_cause_on_its_own_line() {
        let e = Outer::Write(std::io::Error::other("disk full"));
        assert_eq!(
            format!("{:#}", Chain(&e)),
            "cannot write state\n  caused by: disk full"
        );
    }
}
