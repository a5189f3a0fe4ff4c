//! Command bodies stored once, however many queued commands carry them. An InstallProfile's
//! profile is most of its envelope (kilobytes), and a rollout queues the same profile to every
//! targeted device: stored inline, 100,000 devices × 10 profiles wrote about 3 GB per change
//! and grew the database past what its page cache holds. A command that names a shared span
//! (`NewCommand::shared`) is stored without it, with the span's SHA-256 and offset; the span is
//! kept once in `command_parts` and put back when the command is handed to a device, so the
//! device receives, byte for byte, the envelope that was queued.
//!
//! Parts are immutable (named by their digest). Once no command refers to one (the retention
//! sweep deleted them), `prune_parts_in` deletes it. A plan that reuses a stored part marks it
//! used in the same statement, which on PostgreSQL locks its row until the plan commits: a
//! concurrent prune waits for that, then sees the part used lately and keeps it, so a command
//! is never queued referring to a part deleted under it. This module owns their table and the
//! two columns of `commands` that refer to them.

use super::backend::{Db, Row};
use super::sql::{chunk_rows, kept_prepared, Marks};
use super::{NewCommand, QueuedCommand, StoreError, StoreResult};
use std::borrow::Cow;
use std::collections::HashMap;

/// Migration 10, SQLite.
pub(crate) const SCHEMA_SQLITE: &str =
    "CREATE TABLE command_parts (digest TEXT PRIMARY KEY, body BLOB NOT NULL); \
     ALTER TABLE commands ADD COLUMN part_digest TEXT; \
     ALTER TABLE commands ADD COLUMN part_at BIGINT";

/// Migration 10, PostgreSQL.
pub(crate) const SCHEMA_POSTGRES: &str =
    "CREATE TABLE command_parts (digest TEXT PRIMARY KEY, body BYTEA NOT NULL); \
     ALTER TABLE commands ADD COLUMN part_digest TEXT; \
     ALTER TABLE commands ADD COLUMN part_at BIGINT";

/// Migration 12 (both backends): when each part was last queued, and the commands referring
/// to a part found without a scan, for `prune_parts_in`.
pub(crate) const SCHEMA_PRUNE: &str =
    "ALTER TABLE command_parts ADD COLUMN used_at BIGINT NOT NULL DEFAULT 0; \
     CREATE INDEX commands_by_part ON commands (part_digest) WHERE part_digest IS NOT NULL";

/// The columns a read of a queued command adds so that `resolve_in` can complete it.
pub(crate) const PART_COLUMNS: &str = "part_digest, part_at";

/// A command as its row stores it.
pub(crate) struct Stored<'a> {
    /// The envelope, without the shared span when there is one.
    pub command: Cow<'a, [u8]>,
    pub part: Option<Part<'a>>,
}

impl Stored<'_> {
    /// The `part_digest` and `part_at` columns of the command's row.
    pub fn part_columns(&self) -> (Option<&str>, Option<i64>) {
        match &self.part {
            Some(part) => (Some(part.digest.as_str()), Some(part.at)),
            None => (None, None),
        }
    }
}

/// A shared span of an envelope: its digest, its bytes and where it was cut out.
pub(crate) struct Part<'a> {
    pub digest: String,
    pub body: &'a [u8],
    pub at: i64,
}

/// How `command` is stored. A span that does not lie within the envelope is not shared: the
/// command is then stored whole, as any other.
pub(crate) fn stored(command: &NewCommand) -> Stored<'_> {
    let whole = Stored {
        command: Cow::Borrowed(&command.command),
        part: None,
    };
    let Some(span) = command.shared.clone() else {
        return whole;
    };
    let Some(body) = command.command.get(span.clone()) else {
        return whole;
    };
    if body.is_empty() {
        return whole;
    }
    let mut rest = Vec::with_capacity(command.command.len() - body.len());
    rest.extend_from_slice(&command.command[..span.start]);
    rest.extend_from_slice(&command.command[span.end..]);
    Stored {
        command: Cow::Owned(rest),
        part: Some(Part {
            digest: digest(body),
            body,
            at: span.start as i64,
        }),
    }
}

fn digest(body: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(body))
}

/// Stores the parts the commands about to be inserted refer to, each once, and marks those
/// already stored as used at `now` (see the module's note on pruning).
pub(crate) async fn insert_parts_in<'a, D: Db>(
    tx: &mut D::Tx,
    parts: impl IntoIterator<Item = &'a Part<'a>>,
    now: i64,
) -> Result<(), sqlx::Error> {
    let mut distinct: Vec<&Part> = Vec::new();
    for part in parts {
        if !distinct.iter().any(|p| p.digest == part.digest) {
            distinct.push(part);
        }
    }
    let marks = Marks::of::<D>();
    for chunk in chunk_rows(&distinct, 3) {
        let sql = format!(
            "INSERT INTO command_parts (digest, body, used_at) VALUES {} \
             ON CONFLICT (digest) DO UPDATE SET used_at = excluded.used_at",
            marks.rows(1, chunk.len(), 3)
        );
        let mut query = D::sql(&sql).persistent(kept_prepared(chunk.len()));
        for part in chunk {
            query = query.arg(part.digest.as_str()).arg(part.body).arg(now);
        }
        query.execute_on(&mut **tx).await?;
    }
    Ok(())
}

/// Deletes the parts no command refers to that were last queued before `used_before`; how
/// many. The grace keeps a part a plan is about to queue again, whatever the database.
pub(crate) async fn prune_parts_in<D: Db>(
    tx: &mut D::Tx,
    used_before: i64,
) -> Result<u64, sqlx::Error> {
    D::sql(
        "DELETE FROM command_parts WHERE used_at < $1 \
         AND NOT EXISTS (SELECT 1 FROM commands c WHERE c.part_digest = command_parts.digest)",
    )
    .arg(used_before)
    .execute_on(&mut **tx)
    .await
}

/// A queued command as read from its row: complete unless it refers to a part.
pub(crate) struct Unresolved {
    pub command: QueuedCommand,
    part: Option<UnresolvedPart>,
}

/// The part a command refers to: its digest, where it goes, and its bytes when the statement
/// that read the command read them too (`PART_BODY`).
struct UnresolvedPart {
    digest: String,
    at: i64,
    body: Option<Vec<u8>>,
}

/// A column a read of queued commands may add, `part_body`, so that `resolve_in` need not read
/// the part again: `LEFT JOIN command_parts p ON p.digest = <the command>.part_digest`.
pub(crate) const PART_BODY: &str = "p.body AS part_body";

impl Unresolved {
    /// Reads `uuid, request_type, command` and `PART_COLUMNS`.
    pub fn from_row(row: &Row) -> Result<Self, sqlx::Error> {
        Self::read(row, false)
    }

    /// Reads what `from_row` reads, and `part_body` (`PART_BODY`).
    pub fn with_body_from_row(row: &Row) -> Result<Self, sqlx::Error> {
        Self::read(row, true)
    }

    fn read(row: &Row, with_body: bool) -> Result<Self, sqlx::Error> {
        let digest: Option<String> = row.col("part_digest")?;
        let at: Option<i64> = row.col("part_at")?;
        let body: Option<Vec<u8>> = if with_body {
            row.col("part_body")?
        } else {
            None
        };
        Ok(Self {
            command: QueuedCommand {
                uuid: row.col("uuid")?,
                request_type: row.col("request_type")?,
                command: row.col("command")?,
            },
            part: digest
                .zip(at)
                .map(|(digest, at)| UnresolvedPart { digest, at, body }),
        })
    }
}

/// Completes the commands read: each part they refer to that was not read with them is read
/// once, and every part is put back where it was cut out. A part that is missing, or an offset
/// outside the stored envelope, is an error naming the command; the command is not handed out
/// incomplete. Parts never change, and one a command refers to is not pruned, so this may run
/// after the statement that read the commands has committed.
pub(crate) async fn resolve_in<D: Db>(
    conn: &mut D::Conn,
    read: Vec<Unresolved>,
) -> StoreResult<Vec<QueuedCommand>> {
    let mut wanted: Vec<&str> = Vec::new();
    for part in read.iter().filter_map(|r| r.part.as_ref()) {
        if part.body.is_none() && !wanted.contains(&part.digest.as_str()) {
            wanted.push(&part.digest);
        }
    }
    let mut bodies: HashMap<String, Vec<u8>> = HashMap::new();
    let marks = Marks::of::<D>();
    for chunk in chunk_rows(&wanted, 1) {
        let sql = format!(
            "SELECT digest, body FROM command_parts WHERE digest IN ({})",
            marks.list(1, chunk.len())
        );
        let mut query = D::sql(&sql).persistent(kept_prepared(chunk.len()));
        for digest in chunk {
            query = query.arg(*digest);
        }
        for row in query.fetch_all_on(&mut *conn).await? {
            bodies.insert(row.col("digest")?, row.col("body")?);
        }
    }
    read.into_iter()
        .map(|r| {
            let mut command = r.command;
            let Some(part) = r.part else {
                return Ok(command);
            };
            let body = part.body.as_ref().or_else(|| bodies.get(&part.digest));
            let at = usize::try_from(part.at)
                .ok()
                .filter(|at| *at <= command.command.len());
            let (Some(body), Some(at)) = (body, at) else {
                return Err(StoreError::Database(format!(
                    "command {} refers to a stored part ({}) that is missing or does not fit; it was not sent",
                    command.uuid, part.digest
                )));
            };
            command.command.splice(at..at, body.iter().copied());
            Ok(command)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(command: &[u8], shared: Option<std::ops::Range<usize>>) -> NewCommand {
        NewCommand {
            uuid: "u".into(),
            request_type: "InstallProfile".into(),
            command: command.to_vec(),
            shared,
        }
    }

    #[test]
    fn a_shared_span_is_cut_out_and_named_by_its_digest() {
        let c = new(b"head<data>PROFILE</data>tail", Some(10..17));
        let s = stored(&c);
        assert_eq!(&*s.command, b"head<data></data>tail");
        let part = s.part.unwrap();
        assert_eq!(part.body, b"PROFILE");
        assert_eq!(part.at, 10);
        assert_eq!(part.digest, digest(b"PROFILE"));
        assert_eq!(part.digest.len(), 64);
    }

    #[test]
    fn no_span_an_empty_span_or_one_outside_the_envelope_stores_it_whole() {
        for shared in [None, Some(3..3), Some(5..99), Some(20..30)] {
            let c = new(b"head<data>PROFILE</data>tail", shared.clone());
            let s = stored(&c);
            assert_eq!(&*s.command, &c.command[..], "{shared:?}");
            assert!(s.part.is_none(), "{shared:?}");
        }
    }
}
