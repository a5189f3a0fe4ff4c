//! The simulated devices' RSA keys, made before any clock starts: key generation is the device's
//! cost, not the server's. Made on every core, and — with `--key-pool DIR` — kept as PEM files
//! and reused by later runs, so that a benchmark of a thousand devices does not first spend a
//! minute or two making keys. The pool holds test keys only.

use openssl::pkey::{PKey, Private};
use std::path::Path;
use std::time::Instant;

/// The RSA key size devices use (Apple's profiles ask for 2048).
const BITS: u32 = 2048;

/// `count` device keys: from `pool` as far as it has them, the rest made now (and added to the
/// pool). A pool that cannot be read or written is reported and the keys are made anyway.
pub fn device_keys(count: usize, pool: Option<&Path>) -> Vec<PKey<Private>> {
    let started = Instant::now();
    let mut keys = match pool {
        Some(dir) => load(dir, count),
        None => Vec::new(),
    };
    let reused = keys.len();
    let made = generate(count - reused);
    if let Some(dir) = pool {
        if let Err(e) = save(dir, reused, &made) {
            eprintln!("sim: cannot add keys to the pool {}: {e}", dir.display());
        }
    }
    keys.extend(made);
    if count >= 50 {
        eprintln!(
            "sim: {} device keys ready in {:.1}s ({reused} from the pool; not part of the timings)",
            keys.len(),
            started.elapsed().as_secs_f64()
        );
    }
    keys
}

fn key_file(dir: &Path, index: usize) -> std::path::PathBuf {
    dir.join(format!("device-key-{index:06}.pem"))
}

/// Up to `count` keys from the pool, in order, stopping at the first missing or unreadable one.
fn load(dir: &Path, count: usize) -> Vec<PKey<Private>> {
    (0..count)
        .map_while(|index| {
            let pem = std::fs::read(key_file(dir, index)).ok()?;
            PKey::private_key_from_pem(&pem).ok()
        })
        .collect()
}

/// Writes `keys` to the pool as numbers `first`, `first + 1`, …
fn save(dir: &Path, first: usize, keys: &[PKey<Private>]) -> std::io::Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    for (offset, key) in keys.iter().enumerate() {
        let pem = key
            .private_key_to_pem_pkcs8()
            .map_err(std::io::Error::other)?;
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        // Readable by this user only, as any private key.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(key_file(dir, first + offset))?
            .write_all(&pem)?;
    }
    Ok(())
}

/// `count` fresh keys, made on every core.
fn generate(count: usize) -> Vec<PKey<Private>> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per_thread = count.div_ceil(threads.max(1));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let n = per_thread.min(count.saturating_sub(t * per_thread));
                scope.spawn(move || {
                    (0..n)
                        .filter_map(|_| super::identity::generate_key(BITS).ok())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_is_filled_once_and_reused_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let pool = dir.path().join("keys");
        let first = device_keys(3, Some(&pool));
        assert_eq!(first.len(), 3);
        // A larger fleet reuses the three and adds one.
        let second = device_keys(4, Some(&pool));
        assert_eq!(second.len(), 4);
        for (a, b) in first.iter().zip(&second) {
            assert!(a.public_eq(b), "the pool's keys come back in order");
        }
        assert!(key_file(&pool, 3).exists());
        assert!(!key_file(&pool, 4).exists());
        // Without a pool, keys are fresh every time.
        let fresh = device_keys(1, None);
        assert!(!fresh[0].public_eq(&first[0]));
    }
}
