//! Reading files that a policy names (`mobileconfigFile`, `pin.file`) without leaving the
//! policy source: the path must be relative and may not climb with `..`, and once every
//! symbolic link on the way is resolved it must still lie inside the source, so a pull request
//! cannot make the server read (and then quote in an error) a file elsewhere on the machine.
//! Links that stay inside are followed: a Kubernetes ConfigMap or Secret volume is made of
//! them. Files are also bounded in size. Errors name the field and the path, never what the
//! file holds.

use std::path::{Component, Path, PathBuf};

/// The largest file a policy may name: far above any real profile (certificates included).
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Where `path` leads once every link is resolved, if that is inside `root` (itself resolved:
/// the source may be a link, as a mounted volume is). None when it leads outside.
pub fn resolved_inside(root: &Path, path: &Path) -> std::io::Result<Option<PathBuf>> {
    let root = std::fs::canonicalize(root)?;
    let target = std::fs::canonicalize(path)?;
    Ok(target.starts_with(&root).then_some(target))
}

/// A file a policy names that was not read, and why. The message names the field and the path,
/// never what the file holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {relative:?} {refusal}")]
pub struct FileRefused {
    pub field: String,
    pub relative: String,
    pub refusal: Refusal,
}

/// Why a named file was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("must be a relative path inside the policy source")]
    NotInside,
    #[error(
        "is a symbolic link (or passes through one) that leads out of the policy source: files \
         named by a policy must be inside it"
    )]
    LinkLeadsOut,
    #[error("cannot be read: {0}")]
    Unreadable(String),
    #[error("is not a regular file")]
    NotAFile,
    #[error("is {0} bytes, above the limit of {MAX_FILE_BYTES}")]
    TooLarge(u64),
    #[error("is a file, but custom resources cannot name files: give the content inline")]
    InlineOnly,
}

impl Refusal {
    /// This refusal, for the file `relative` of the field `field`.
    pub fn of(self, field: &str, relative: &str) -> FileRefused {
        FileRefused {
            field: field.to_string(),
            relative: relative.to_string(),
            refusal: self,
        }
    }
}

/// Reads `relative` under `root` for the field `field` (used in messages).
pub fn read_inside(root: &Path, relative: &str, field: &str) -> Result<Vec<u8>, FileRefused> {
    read_confined(root, relative).map_err(|refusal| refusal.of(field, relative))
}

fn read_confined(root: &Path, relative: &str) -> Result<Vec<u8>, Refusal> {
    let path = Path::new(relative);
    let climbs = path
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if relative.is_empty() || path.is_absolute() || climbs {
        return Err(Refusal::NotInside);
    }
    let cannot = |e: std::io::Error| Refusal::Unreadable(io_reason(&e));
    let at = resolved_inside(root, &root.join(path))
        .map_err(cannot)?
        .ok_or(Refusal::LinkLeadsOut)?;
    let meta = std::fs::metadata(&at).map_err(cannot)?;
    if !meta.is_file() {
        return Err(Refusal::NotAFile);
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(Refusal::TooLarge(meta.len()));
    }
    std::fs::read(&at).map_err(cannot)
}

/// The kind of an I/O failure, without the OS's path (which repeats what we already name).
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_inside_are_read_and_every_way_out_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret");
        std::fs::write(&secret, "hunter2-admin-token").unwrap();
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir(r.join("profiles")).unwrap();
        std::fs::write(r.join("profiles/wifi.mobileconfig"), "inside").unwrap();
        std::os::unix::fs::symlink(&secret, r.join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path(), r.join("linked-dir")).unwrap();
        std::os::unix::fs::symlink(r.join("profiles"), r.join("inner-link")).unwrap();

        assert_eq!(
            read_inside(r, "profiles/wifi.mobileconfig", "f").unwrap(),
            b"inside"
        );
        assert_eq!(
            read_inside(r, "./profiles/wifi.mobileconfig", "f").unwrap(),
            b"inside"
        );
        // A link that stays inside is followed (a ConfigMap volume is made of such links).
        assert_eq!(
            read_inside(r, "inner-link/wifi.mobileconfig", "f").unwrap(),
            b"inside"
        );
        for (relative, needle) in [
            ("link", "leads out of the policy source"),
            ("linked-dir/secret", "leads out of the policy source"),
            ("../secret", "relative path inside"),
            (secret.to_str().unwrap(), "relative path inside"),
            ("", "relative path inside"),
            ("profiles", "not a regular file"),
            ("missing", "no such file"),
        ] {
            let err = read_inside(r, relative, "spec.mobileconfigFile")
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{relative}: {err}");
            assert!(err.starts_with("spec.mobileconfigFile"), "{err}");
            assert!(!err.contains("hunter2"), "{relative}: {err}");
        }
    }
}
