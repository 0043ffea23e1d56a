//! `gantry completions SHELL` and `gantry man --out DIR`: shell completion scripts and man
//! pages, generated from the clap definition so they never drift from the flags.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cli::Cli;

/// Why the man pages could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ManError {
    /// The directory or a page could not be written.
    #[error("cannot write the man pages to {}", dir.display())]
    Write {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut cmd, "gantry", out);
}

/// Writes a man page per visible command into `dir` (created when missing).
///
/// # Errors
///
/// [`ManError::Write`] when the directory or a page cannot be written.
pub fn write_pages(dir: &Path) -> Result<(), ManError> {
    let err = |source| ManError::Write {
        dir: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    clap_mangen::generate_to(<Cli as clap::CommandFactory>::command(), dir).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every visible command path, as man page file names (`gantry-audit-verify.1`).
    fn page_names(cmd: &clap::Command, prefix: &str, out: &mut Vec<String>) {
        let name = if prefix.is_empty() {
            cmd.get_name().to_owned()
        } else {
            format!("{prefix}-{}", cmd.get_name())
        };
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            if sub.get_name() != "help" {
                page_names(sub, &name, out);
            }
        }
        out.push(format!("{name}.1"));
    }

    #[test]
    fn every_subcommand_has_a_man_page() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("man1");
        write_pages(&out).unwrap();
        let mut want = Vec::new();
        page_names(&<Cli as clap::CommandFactory>::command(), "", &mut want);
        assert!(want.len() >= 20, "{want:?}");
        for page in &want {
            let text = std::fs::read_to_string(out.join(page))
                .unwrap_or_else(|e| panic!("no page {page}: {e}"));
            assert!(text.contains(".TH"), "{page}: {text}");
        }
        for page in [
            "gantry-deploy.1",
            "gantry-job-submit.1",
            "gantry-audit-verify.1",
            "gantry-history.1",
            "gantry-completions.1",
        ] {
            assert!(want.contains(&page.to_owned()), "{page} not in {want:?}");
        }
    }

    #[test]
    fn completions_name_every_subcommand() {
        let mut buf = Vec::new();
        completions(clap_complete::Shell::Bash, &mut buf);
        let text = String::from_utf8(buf).unwrap();
        for sub in <Cli as clap::CommandFactory>::command()
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
        {
            assert!(
                text.contains(sub.get_name()),
                "{} missing from the bash completions",
                sub.get_name()
            );
        }
    }
}
