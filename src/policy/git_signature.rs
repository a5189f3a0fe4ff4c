//! Commit signature verification for the git source: with `--git-allowed-signers FILE`, a
//! commit is applied only when it carries an SSH signature (`gpg.format ssh`, namespace `git`)
//! made by one of the listed keys (Ed25519 or ECDSA P-256); unsigned commits, other keys and
//! OpenPGP signatures are refused with the reason. The file uses git's `allowedSignersFile`
//! format (`principal[,…] [options] keytype base64 [comment]`) or plain `keytype base64
//! [comment]` lines. Verification is pure Rust (no `ssh-keygen` at run time).

use git2::{Oid, Repository};

/// One allowed key and whom it belongs to.
#[derive(Debug, Clone)]
pub struct AllowedSigner {
    pub principal: String,
    pub key: ssh_key::PublicKey,
}

fn is_key_type(word: &str) -> bool {
    word.starts_with("ssh-") || word.starts_with("ecdsa-sha2-") || word.starts_with("sk-")
}

/// Parses an allowed-signers file; every bad line is reported (`line N: why`).
pub fn parse_allowed_signers(text: &str) -> Result<Vec<AllowedSigner>, Vec<String>> {
    let mut signers = Vec::new();
    let mut problems = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(at) = words.iter().position(|w| is_key_type(w)) else {
            problems.push(format!("line {}: no SSH public key found", index + 1));
            continue;
        };
        let Some(blob) = words.get(at + 1) else {
            problems.push(format!("line {}: the key has no data", index + 1));
            continue;
        };
        match ssh_key::PublicKey::from_openssh(&format!("{} {blob}", words[at])) {
            Ok(key) => signers.push(AllowedSigner {
                principal: if at > 0 {
                    words[0].to_string()
                } else if words.len() > 2 {
                    words[2..].join(" ")
                } else {
                    key.fingerprint(ssh_key::HashAlg::Sha256).to_string()
                },
                key,
            }),
            Err(e) => problems.push(format!("line {}: unreadable key: {e}", index + 1)),
        }
    }
    if signers.is_empty() && problems.is_empty() {
        problems.push("lists no keys".into());
    }
    if problems.is_empty() {
        Ok(signers)
    } else {
        Err(problems)
    }
}

/// Why a commit's signature is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitNotVerified {
    #[error("commit {0} is not signed; only commits signed by an allowed key are applied")]
    Unsigned(Oid),
    #[error(
        "commit {0} carries an OpenPGP signature, which Pomona does not verify: sign with an SSH \
         key (git config gpg.format ssh)"
    )]
    OpenPgp(Oid),
    #[error("commit {commit} has an unreadable SSH signature: {reason}")]
    Unreadable { commit: Oid, reason: String },
    #[error(
        "commit {commit} is signed by {by}, which is not an allowed signer (or the signature does \
         not match the commit)"
    )]
    NotAllowed { commit: Oid, by: String },
}

/// The signer's principal when `commit` is SSH-signed by one of `signers`; otherwise why not.
pub fn verify_commit(
    repo: &Repository,
    commit: Oid,
    signers: &[AllowedSigner],
) -> Result<String, CommitNotVerified> {
    let (signature, signed) = repo
        .extract_signature(&commit, None)
        .map_err(|_| CommitNotVerified::Unsigned(commit))?;
    let signature = std::str::from_utf8(&signature).unwrap_or("");
    if signature.contains("BEGIN PGP SIGNATURE") {
        return Err(CommitNotVerified::OpenPgp(commit));
    }
    let signature =
        ssh_key::SshSig::from_pem(signature.trim()).map_err(|e| CommitNotVerified::Unreadable {
            commit,
            reason: e.to_string(),
        })?;
    for signer in signers {
        if signer.key.verify("git", &signed, &signature).is_ok() {
            return Ok(signer.principal.clone());
        }
    }
    let by = ssh_key::PublicKey::from(signature.public_key().clone())
        .fingerprint(ssh_key::HashAlg::Sha256);
    Err(CommitNotVerified::NotAllowed {
        commit,
        by: by.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_signers_files_are_parsed_with_every_problem() {
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA3K6QFE7OyEMc1+sZqU1ZZFQG30kdMKor4Cgz+QqpEU";
        let text = format!(
            "# team keys\nalice@example.com {key}\nbob@example.com namespaces=\"git\" {key} bob\n{key} carol\n"
        );
        let signers = parse_allowed_signers(&text).unwrap();
        let names: Vec<&str> = signers.iter().map(|s| s.principal.as_str()).collect();
        assert_eq!(names, ["alice@example.com", "bob@example.com", "carol"]);

        let err = parse_allowed_signers("alice nothing here\nbob ssh-ed25519 !!!\n").unwrap_err();
        assert_eq!(err.len(), 2, "{err:?}");
        assert!(err[0].starts_with("line 1:"), "{err:?}");
        assert!(parse_allowed_signers("# empty\n").is_err());
    }
}
