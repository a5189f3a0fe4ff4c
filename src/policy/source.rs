//! The policy directory source: every `.yaml`/`.yml` file under the directory (recursively,
//! in path order), parsed and built into a `PolicySnapshot` whose revision is a hash of the
//! files' paths and contents. Re-reading is cheap enough to do on every change; keeping the last
//! good snapshot when a change is invalid is the caller's job (it has the old one).

use super::load::{parse_file, Documents, Problem, Severity};
use super::snapshot::{build, PolicySnapshot};
use sha2::Digest as _;
use std::path::{Path, PathBuf};

/// Reads and validates a policy directory.
pub fn load_dir(root: &Path) -> Result<PolicySnapshot, Vec<Problem>> {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    collect(root, root, &mut files, &mut problems);
    files.sort();
    let mut docs = Documents::default();
    let mut revision = sha2::Sha256::new();
    for (display, path) in &files {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                revision.update(display.as_bytes());
                revision.update([0]);
                revision.update(text.as_bytes());
                revision.update([0]);
                parse_file(display, &text, &mut docs, &mut problems);
            }
            Err(e) => problems.push(Problem {
                severity: Severity::Error,
                file: display.clone(),
                line: 1,
                document: None,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    let revision = format!("dir:{}", &hex::encode(revision.finalize())[..12]);
    if problems.iter().any(|p| p.severity == Severity::Error) {
        return Err(problems);
    }
    build(&docs, root, revision)
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>, problems: &mut Vec<Problem>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            problems.push(Problem {
                severity: Severity::Error,
                file: dir.display().to_string(),
                line: 1,
                document: None,
                message: format!("cannot read the policy directory: {e}"),
            });
            return;
        }
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, out, problems);
        } else if path.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            let shown = Path::new(root.file_name().unwrap_or_default())
                .join(path.strip_prefix(root).unwrap_or(&path))
                .display()
                .to_string();
            out.push((shown, path));
        }
    }
}
