//! Reading files that a policy names (`mobileconfigFile`, `pin.file`) without leaving the
//! policy source: the path must be relative, may not climb with `..`, and no component of it
//! may be a symbolic link, so a pull request cannot make the server read (and then quote in
//! an error) a file elsewhere on the machine. Files are also bounded in size. Errors name the
//! field and the path, never what the file holds.

use std::path::{Component, Path};

/// The largest file a policy may name: far above any real profile (certificates included).
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// Reads `relative` under `root` for the field `field` (used in messages).
pub fn read_inside(root: &Path, relative: &str, field: &str) -> Result<Vec<u8>, String> {
    let path = Path::new(relative);
    let climbs = path
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if relative.is_empty() || path.is_absolute() || climbs {
        return Err(format!(
            "{field} {relative:?} must be a relative path inside the policy source"
        ));
    }
    let mut at = root.to_path_buf();
    for component in path.components() {
        let Component::Normal(name) = component else {
            continue;
        };
        at.push(name);
        let meta = std::fs::symlink_metadata(&at)
            .map_err(|e| format!("{field} {relative:?}: cannot read: {}", io_reason(&e)))?;
        if meta.file_type().is_symlink() {
            return Err(format!(
                "{field} {relative:?} is or passes through a symbolic link: files named by a \
                 policy must be inside the policy source itself"
            ));
        }
    }
    let meta = std::fs::metadata(&at)
        .map_err(|e| format!("{field} {relative:?}: cannot read: {}", io_reason(&e)))?;
    if !meta.is_file() {
        return Err(format!("{field} {relative:?} is not a regular file"));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{field} {relative:?} is {} bytes, above the limit of {MAX_FILE_BYTES}",
            meta.len()
        ));
    }
    std::fs::read(&at).map_err(|e| format!("{field} {relative:?}: cannot read: {}", io_reason(&e)))
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
        for (relative, needle) in [
            ("link", "symbolic link"),
            ("linked-dir/secret", "symbolic link"),
            ("inner-link/wifi.mobileconfig", "symbolic link"),
            ("../secret", "relative path inside"),
            (secret.to_str().unwrap(), "relative path inside"),
            ("", "relative path inside"),
            ("profiles", "not a regular file"),
            ("missing", "no such file"),
        ] {
            let err = read_inside(r, relative, "spec.mobileconfigFile").unwrap_err();
            assert!(err.contains(needle), "{relative}: {err}");
            assert!(err.starts_with("spec.mobileconfigFile"), "{err}");
            assert!(!err.contains("hunter2"), "{relative}: {err}");
        }
    }
}
