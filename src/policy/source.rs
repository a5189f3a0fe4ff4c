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

/// Every regular file under a policy directory (relative path → UTF-8 text), for sending a
/// candidate policy to a server (`pomona plan --server`). At most 16 MiB in total.
pub fn read_files(root: &Path) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    fn walk(
        root: &Path,
        dir: &Path,
        out: &mut std::collections::BTreeMap<String, String>,
        total: &mut usize,
    ) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let hidden = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            if path.is_dir() {
                walk(root, &path, out, total)?;
            } else {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                *total += text.len();
                anyhow::ensure!(
                    *total <= 16 << 20,
                    "the policy directory is larger than 16 MiB"
                );
                let relative = path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .to_string();
                out.insert(relative, text);
            }
        }
        Ok(())
    }
    let mut out = std::collections::BTreeMap::new();
    let mut total = 0;
    walk(root, root, &mut out, &mut total)?;
    Ok(out)
}

/// Writes files received from `read_files` under `root` (a fresh directory), refusing paths
/// that would escape it.
pub fn write_files(
    root: &Path,
    files: &std::collections::BTreeMap<String, String>,
) -> Result<(), String> {
    for (relative, text) in files {
        let path = Path::new(relative);
        let escapes = path.is_absolute()
            || path
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)));
        if escapes {
            return Err(format!(
                "file path {relative:?} must be relative and stay inside the policy"
            ));
        }
        let target = root.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{relative}: {e}"))?;
        }
        std::fs::write(&target, text).map_err(|e| format!("{relative}: {e}"))?;
    }
    Ok(())
}
