//! `gantry release notes`: release notes drafted from the Conventional Commits in a git range,
//! in the CD model's sections. Reads history with the `git` binary; commits not in the
//! Conventional Commits form are left out (and counted on stderr), so a draft never holds
//! noise a person did not write for users.
//!
//! What goes where: `feat` → New Features; `perf`, `improve`, `enhance` → Enhancements; `fix` →
//! Bug Fixes; `!` after the type or a `BREAKING CHANGE:` footer → Breaking Changes; type or
//! scope `security`, or a `Security:` footer → Security; `deprecate` or a `Deprecated:` footer
//! → Deprecations; a `Known-Issue:` footer → Known Issues. Other types (`docs`, `chore`,
//! `test`, `ci`, `refactor`, ...) are not user-facing and are left out.
//!
//! [`show`] is `gantry release show`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cli::ReleaseNotesArgs;
use crate::exit::Exit;

/// Why notes could not be drafted.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// `git` could not be run.
    #[error("cannot run git")]
    Spawn(#[source] std::io::Error),
    /// `git` failed (a bad ref, not a repository).
    #[error("git log {range} failed: {stderr}")]
    Git {
        /// The range.
        range: String,
        /// What git said.
        stderr: String,
    },
    /// The notes could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl ReleaseError {
    /// The exit code: every one is an input error.
    pub fn exit(&self) -> Exit {
        match self {
            ReleaseError::Spawn(_) | ReleaseError::Git { .. } | ReleaseError::Write { .. } => {
                Exit::Usage
            }
        }
    }
}

/// The CD model's sections, in the order the notes print them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    /// New features.
    Features,
    /// Enhancements.
    Enhancements,
    /// Bug fixes.
    Fixes,
    /// Breaking changes.
    Breaking,
    /// Security fixes.
    Security,
    /// Deprecations.
    Deprecations,
    /// Known issues.
    KnownIssues,
}

impl Section {
    const ALL: [Section; 7] = [
        Section::Features,
        Section::Enhancements,
        Section::Fixes,
        Section::Breaking,
        Section::Security,
        Section::Deprecations,
        Section::KnownIssues,
    ];

    /// The heading.
    pub fn title(self) -> &'static str {
        match self {
            Section::Features => "New Features",
            Section::Enhancements => "Enhancements",
            Section::Fixes => "Bug Fixes",
            Section::Breaking => "Breaking Changes",
            Section::Security => "Security",
            Section::Deprecations => "Deprecations",
            Section::KnownIssues => "Known Issues",
        }
    }
}

/// One commit as git gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Abbreviated hash.
    pub hash: String,
    /// The first line.
    pub subject: String,
    /// The rest.
    pub body: String,
}

/// One line of the notes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Where it goes.
    pub section: Section,
    /// The text (`**scope:** description`).
    pub text: String,
    /// The commit.
    pub hash: String,
}

/// The items one commit contributes; `None` when it is not a Conventional Commit.
pub fn classify(c: &Commit) -> Option<Vec<Item>> {
    let (head, description) = c.subject.split_once(": ")?;
    let description = description.trim();
    let (head, bang) = match head.strip_suffix('!') {
        Some(h) => (h, true),
        None => (head, false),
    };
    let (kind, scope) = match head.split_once('(') {
        Some((k, rest)) => (k, Some(rest.strip_suffix(')')?)),
        None => (head, None),
    };
    if kind.is_empty()
        || description.is_empty()
        || !kind
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
    {
        return None;
    }
    let kind = kind.to_ascii_lowercase();
    let text = match scope {
        Some(s) if !s.is_empty() => format!("**{s}:** {description}"),
        _ => description.to_owned(),
    };
    let item = |section, text: String| Item {
        section,
        text,
        hash: c.hash.clone(),
    };
    let mut items = Vec::new();
    let footer = |names: &[&str]| -> Vec<String> {
        c.body
            .lines()
            .filter_map(|l| {
                names
                    .iter()
                    .find_map(|n| l.strip_prefix(n).and_then(|r| r.strip_prefix(':')))
                    .map(|r| r.trim().to_owned())
            })
            .filter(|r| !r.is_empty())
            .collect()
    };
    let breaking = footer(&["BREAKING CHANGE", "BREAKING-CHANGE"]);
    let security = kind == "security" || scope == Some("security");
    let main = match kind.as_str() {
        _ if security => Some(Section::Security),
        "feat" | "feature" => Some(Section::Features),
        "perf" | "improve" | "enhance" | "enhancement" => Some(Section::Enhancements),
        "fix" => Some(Section::Fixes),
        "deprecate" | "deprecation" => Some(Section::Deprecations),
        _ => None,
    };
    // A breaking change is listed once, under Breaking Changes, where a user must look.
    if bang || !breaking.is_empty() {
        if breaking.is_empty() {
            items.push(item(Section::Breaking, text));
        }
        for b in breaking {
            items.push(item(Section::Breaking, b));
        }
    } else if let Some(section) = main {
        items.push(item(section, text));
    }
    for s in footer(&["Security"]) {
        items.push(item(Section::Security, s));
    }
    for d in footer(&["Deprecated"]) {
        items.push(item(Section::Deprecations, d));
    }
    for k in footer(&["Known-Issue", "Known-issue"]) {
        items.push(item(Section::KnownIssues, k));
    }
    Some(items)
}

/// The notes in Markdown: `# Release vVERSION`, then each non-empty section in order.
pub fn render(version: &str, items: &[Item]) -> String {
    let mut out = format!("# Release v{}\n", version.trim_start_matches('v'));
    for section in Section::ALL {
        let lines: Vec<&Item> = items.iter().filter(|i| i.section == section).collect();
        if lines.is_empty() {
            continue;
        }
        out.push_str(&format!("\n## {}\n", section.title()));
        for i in lines {
            out.push_str(&format!("- {} ({})\n", i.text, i.hash));
        }
    }
    out
}

/// The commits of `from..to` in `repo`, oldest first, merges left out.
///
/// # Errors
///
/// [`ReleaseError::Spawn`], [`ReleaseError::Git`].
pub fn commits(repo: &Path, from: &str, to: &str) -> Result<Vec<Commit>, ReleaseError> {
    let range = format!("{from}..{to}");
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "log",
            "--no-merges",
            "--reverse",
            "--format=%h%x1f%s%x1f%b%x1e",
        ])
        .arg(&range)
        .arg("--")
        .output()
        .map_err(ReleaseError::Spawn)?;
    if !out.status.success() {
        return Err(ReleaseError::Git {
            range,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split('\x1e')
        .filter_map(|rec| {
            let mut f = rec.trim_start_matches('\n').splitn(3, '\x1f');
            let hash = f.next()?.trim();
            let subject = f.next()?.trim();
            let body = f.next().unwrap_or("").trim();
            (!hash.is_empty()).then(|| Commit {
                hash: hash.to_owned(),
                subject: subject.to_owned(),
                body: body.to_owned(),
            })
        })
        .collect())
}

/// `gantry release notes`.
///
/// # Errors
///
/// [`ReleaseError`].
pub fn notes(args: &ReleaseNotesArgs) -> Result<(), ReleaseError> {
    let commits = commits(&args.repo, &args.from, &args.to)?;
    let mut items = Vec::new();
    let mut skipped = 0;
    for c in &commits {
        match classify(c) {
            Some(i) => items.extend(i),
            None => skipped += 1,
        }
    }
    let version = args.version.as_deref().unwrap_or(&args.to);
    let text = render(version, &items);
    match &args.out {
        Some(path) => std::fs::write(path, &text).map_err(|source| ReleaseError::Write {
            path: path.clone(),
            source,
        })?,
        None => print!("{text}"),
    }
    if skipped > 0 {
        eprintln!(
            "{skipped} of {} commit(s) are not Conventional Commits (type(scope): description) \
             and were left out",
            commits.len()
        );
    }
    Ok(())
}

pub mod show;

#[cfg(test)]
mod tests;
