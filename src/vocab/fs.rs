//! Small file helpers shared by the layers that write secrets to disk (keys, tokens, the
//! SQLite file).

use std::path::Path;

/// Creates a file readable only by its owner and writes `contents` (used for keys and tokens).
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}
