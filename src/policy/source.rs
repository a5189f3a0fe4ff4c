//! Loading a policy tree: every `.yaml`/`.yml` file under a directory (recursively, in path
//! order), parsed and built into a `PolicySnapshot` whose revision is a hash of the files' paths
//! and contents (or the git commit). The directory and git sources both load through here;
//! re-reading is cheap enough to do on every change, and keeping the last good snapshot when a
//! change is invalid is the consumer's job (it has the old one).

use super::load::{parse_file, Documents, Problem, Severity};
use super::snapshot::{build, PolicySnapshot};
use sha2::Digest as _;
use std::path::{Path, PathBuf};

/// Reads and validates a policy directory.
pub fn load_dir(root: &Path) -> Result<PolicySnapshot, Vec<Problem>> {
    let label = root.file_name().unwrap_or_default().to_string_lossy();
    load_tree(root, &label, None)
}

/// The one loader behind every source: reads and validates the policy files under `root`.
/// Problems name files as `label/relative-path` (the directory's name, or the policy path inside
/// a git commit). The revision is `revision` when given (a git commit), else `dir:<content hash>`.
pub fn load_tree(
    root: &Path,
    label: &str,
    revision: Option<String>,
) -> Result<PolicySnapshot, Vec<Problem>> {
    let mut problems = Vec::new();
    let files: Vec<(String, PathBuf)> = match walk_dir(root) {
        Ok(walked) => {
            for link in &walked.links {
                problems.push(Problem {
                    severity: Severity::Error,
                    file: shown(label, link),
                    line: 1,
                    document: None,
                    message: "is a symbolic link to a directory or out of the policy source: \
                              put the file or directory itself here"
                        .into(),
                });
            }
            walked.files
        }
        .into_iter()
        .filter(|(_, path)| path.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .map(|(relative, path)| (shown(label, &relative), path))
        .collect(),
        Err((dir, e)) => {
            problems.push(Problem {
                severity: Severity::Error,
                file: dir.display().to_string(),
                line: 1,
                document: None,
                message: format!("cannot read the policy directory: {e}"),
            });
            Vec::new()
        }
    };
    let mut docs = Documents::default();
    let mut revision_hash = sha2::Sha256::new();
    for (display, path) in &files {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if size > super::confined::MAX_FILE_BYTES {
            problems.push(Problem {
                severity: Severity::Error,
                file: display.clone(),
                line: 1,
                document: None,
                message: format!(
                    "is {size} bytes, above the limit of {} for a policy file",
                    super::confined::MAX_FILE_BYTES
                ),
            });
            continue;
        }
        match std::fs::read_to_string(path) {
            Ok(text) => {
                // The path inside the policy, not as shown: the same files have the same
                // revision wherever they sit (`plan --server` writes them to a scratch directory).
                let inside = path.strip_prefix(root).unwrap_or(path);
                revision_hash.update(inside.to_string_lossy().as_bytes());
                revision_hash.update([0]);
                revision_hash.update(text.as_bytes());
                revision_hash.update([0]);
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
    let revision =
        revision.unwrap_or_else(|| format!("dir:{}", &hex::encode(revision_hash.finalize())[..12]));
    if problems.iter().any(|p| p.severity == Severity::Error) {
        return Err(problems);
    }
    build(&docs, &super::files::InTree(root), revision)
}

/// How problems name a file: the source's label (the directory's own name), then the
/// relative path.
fn shown(label: &str, relative: &str) -> String {
    Path::new(label).join(relative).display().to_string()
}

/// What a walk of a policy directory found: its files (links to files inside the directory
/// included), and the symbolic links it refused to follow: those leading out of the directory
/// (a link could point anywhere on the machine) and links to directories.
struct Walked {
    files: Vec<(String, PathBuf)>,
    links: Vec<String>,
}

/// Every non-hidden regular file under `root` (recursively), as (relative path, path), in
/// path order (links to files inside `root` count as files), and every other symbolic link met
/// on the way (not followed). Hidden files and
/// directories (`.git`, editor swap files) are skipped. `root` itself may be a link.
fn walk_dir(root: &Path) -> Result<Walked, (PathBuf, std::io::Error)> {
    fn walk(root: &Path, dir: &Path, out: &mut Walked) -> Result<(), (PathBuf, std::io::Error)> {
        let entries = std::fs::read_dir(dir).map_err(|e| (dir.to_path_buf(), e))?;
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            let hidden = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            let relative = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .to_string();
            // The entry's own type: a link is followed only to a file inside the directory
            // (how a Kubernetes ConfigMap volume presents its files), never out of it.
            let kind = entry.file_type().map_err(|e| (path.clone(), e))?;
            if kind.is_symlink() {
                let inside = super::confined::resolved_inside(root, &path)
                    .ok()
                    .flatten()
                    .is_some_and(|target| target.is_file());
                if inside {
                    out.files.push((relative, path));
                } else {
                    out.links.push(relative);
                }
            } else if kind.is_dir() {
                walk(root, &path, out)?;
            } else if kind.is_file() {
                out.files.push((relative, path));
            }
        }
        Ok(())
    }
    let mut out = Walked {
        files: Vec::new(),
        links: Vec::new(),
    };
    walk(root, root, &mut out)?;
    out.files.sort();
    out.links.sort();
    Ok(out)
}

/// Every regular file under a policy directory (relative path → UTF-8 text), for sending a
/// candidate policy to a server (`pomona plan --server`). At most 16 MiB in total.
pub fn read_files(root: &Path) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let walked = walk_dir(root).map_err(|(dir, e)| anyhow::anyhow!("{}: {e}", dir.display()))?;
    if let Some(link) = walked.links.first() {
        anyhow::bail!(
            "{}: is a symbolic link to a directory or out of the policy directory",
            root.join(link).display()
        );
    }
    let mut out = std::collections::BTreeMap::new();
    let mut total = 0;
    for (relative, path) in walked.files {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        total += text.len();
        anyhow::ensure!(
            total <= 16 << 20,
            "the policy directory is larger than 16 MiB"
        );
        out.insert(relative, text);
    }
    Ok(out)
}

/// Why files received from `read_files` were not written.
#[derive(Debug, thiserror::Error)]
pub enum WriteFilesError {
    /// The sender's mistake: a path that would leave the policy.
    #[error("file path {0:?} must be relative and stay inside the policy")]
    Escapes(String),
    /// Ours: the scratch directory could not be written.
    #[error("{relative}: {source}")]
    Io {
        relative: String,
        source: std::io::Error,
    },
}

/// Writes files received from `read_files` under `root` (a fresh directory), refusing paths
/// that would escape it.
pub fn write_files(
    root: &Path,
    files: &std::collections::BTreeMap<String, String>,
) -> Result<(), WriteFilesError> {
    for (relative, text) in files {
        let path = Path::new(relative);
        let escapes = path.is_absolute()
            || path
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)));
        if escapes {
            return Err(WriteFilesError::Escapes(relative.clone()));
        }
        let io = |source| WriteFilesError::Io {
            relative: relative.clone(),
            source,
        };
        let target = root.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&target, text).map_err(io)?;
    }
    Ok(())
}
