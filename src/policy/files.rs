//! The files a policy names (`mobileconfigFile`, a DeviceAction's `pin.file`), read through one
//! trait so that building a snapshot does not care where a source keeps them: a directory or a
//! git checkout reads them inside its tree (`InTree`, confined by `confined.rs`); Kubernetes
//! custom resources carry everything inline and have none (`NoFiles`).

use super::confined::{FileRefused, Refusal};
use std::path::Path;

/// Reads a file a policy names. `relative` is the path as written; `field` names the field for
/// messages. Errors name the field and the path, never what a file holds.
pub trait PolicyFiles: Sync {
    fn read(&self, relative: &str, field: &str) -> Result<Vec<u8>, FileRefused>;
}

/// Files inside a policy tree on disk (a directory, or a git commit checked out).
pub struct InTree<'a>(pub &'a Path);

impl PolicyFiles for InTree<'_> {
    fn read(&self, relative: &str, field: &str) -> Result<Vec<u8>, FileRefused> {
        super::confined::read_inside(self.0, relative, field)
    }
}

/// No files at all: for custom resources, whose content is inline.
pub struct NoFiles;

impl PolicyFiles for NoFiles {
    fn read(&self, relative: &str, field: &str) -> Result<Vec<u8>, FileRefused> {
        Err(Refusal::InlineOnly.of(field, relative))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_reads_inside_itself_and_custom_resources_read_nothing() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("wifi.mobileconfig"), "inside").unwrap();
        let tree = InTree(root.path());
        assert_eq!(tree.read("wifi.mobileconfig", "f").unwrap(), b"inside");
        assert_eq!(
            tree.read("../x", "f").unwrap_err().refusal,
            Refusal::NotInside
        );
        let err = NoFiles
            .read("wifi.mobileconfig", "spec.mobileconfigFile")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("spec.mobileconfigFile"), "{err}");
        assert!(err.contains("inline"), "{err}");
    }
}
