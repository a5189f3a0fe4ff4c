//! Replays the fuzzing inputs on stable, in the normal test run: every file under
//! `fuzz/regressions/<target>/` (inputs that once made a fuzz target panic or crash) and every
//! seed under `fuzz/seeds/<target>/`, through exactly the calls the fuzz target makes
//! (`fuzz/src/lib.rs`, included below). A returned error is fine; a panic fails the test,
//! naming the input. The fuzzing itself is `scripts/fuzz` (nightly, cargo-fuzz).

#[path = "../fuzz/src/lib.rs"]
mod fuzz_targets;

use fuzz_targets::{Target, TARGETS};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn fuzz_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(name)
}

/// The files of a directory, sorted, without hidden files; none if it does not exist.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("reading a fuzz directory").path())
        .filter(|p| p.is_file())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    files
}

/// Feeds each file to `target`; returns the files it panicked on.
fn replay(target: Target, files: &[PathBuf]) -> Vec<PathBuf> {
    files
        .iter()
        .filter(|file| {
            let data = std::fs::read(file).expect("reading a fuzz input");
            catch_unwind(AssertUnwindSafe(|| target(&data))).is_err()
        })
        .cloned()
        .collect()
}

/// Replays `<root>/<target>/*` for every target; every subdirectory must name a target.
fn replay_tree(root: &Path) -> (usize, Vec<PathBuf>) {
    let names: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    for entry in std::fs::read_dir(root).expect("reading a fuzz directory") {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                name == "licenses" || names.contains(&name.as_str()),
                "{} names no fuzz target (one of {names:?})",
                path.display()
            );
        }
    }
    let mut fed = 0;
    let mut panicked = Vec::new();
    for (name, target) in TARGETS {
        let files = files_in(&root.join(name));
        fed += files.len();
        panicked.extend(replay(*target, &files));
    }
    (fed, panicked)
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| format!("\n  {}", p.display()))
        .collect()
}

#[test]
fn no_regression_input_makes_its_target_panic() {
    let root = fuzz_dir("regressions");
    assert!(root.is_dir(), "{} is missing", root.display());
    let (fed, panicked) = replay_tree(&root);
    assert!(
        panicked.is_empty(),
        "{} of {fed} regression inputs still panic (see the panics above; the directory names \
         the fuzz target: `cargo +nightly fuzz run TARGET FILE` reproduces one):{}",
        panicked.len(),
        list(&panicked)
    );
}

#[test]
fn every_target_has_seeds_and_none_panics_on_them() {
    let root = fuzz_dir("seeds");
    for (name, _) in TARGETS {
        assert!(
            !files_in(&root.join(name)).is_empty(),
            "fuzz/seeds/{name} has no seed"
        );
        assert!(
            fuzz_dir("fuzz_targets")
                .join(format!("{name}.rs"))
                .is_file(),
            "fuzz/fuzz_targets/{name}.rs is missing"
        );
    }
    let (fed, panicked) = replay_tree(&root);
    assert!(fed >= TARGETS.len());
    assert!(
        panicked.is_empty(),
        "seeds that make their target panic:{}",
        list(&panicked)
    );
}

#[test]
fn a_panicking_target_is_reported_with_its_input() {
    fn panics_on_x(data: &[u8]) {
        assert!(!data.contains(&b'x'), "found an x");
    }
    let dir = tempfile::tempdir().unwrap();
    let (good, bad) = (dir.path().join("good"), dir.path().join("bad"));
    std::fs::write(&good, b"abc").unwrap();
    std::fs::write(&bad, b"axc").unwrap();
    assert_eq!(replay(panics_on_x, &[good, bad.clone()]), vec![bad]);
}
