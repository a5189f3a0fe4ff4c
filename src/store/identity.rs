//! Device identity: the certificates the CA issued and their standing (read on every device
//! request, in batches), revocation, and one-time secrets (SCEP challenges, enrollment tokens)
//! used up atomically. The trait and its SQL for every `Backend`.

use super::backend::{Backend, Db, Finish as _, Row};
use super::sql::*;
use super::*;
use async_trait::async_trait;

/// Device identity: the certificates the CA issued, their standing, and one-time secrets (SCEP
/// challenges, enrollment tokens).
#[async_trait]
pub trait IdentityStore: Send + Sync {
    /// Records a certificate the CA has just issued. With `challenge_hash`, the one-time SCEP
    /// challenge is used up in the same transaction, and nothing is recorded unless it was
    /// valid (the returned use says why not).
    async fn record_certificate(
        &self,
        certificate: &CertificateRecord,
        challenge_hash: Option<&str>,
        now: i64,
    ) -> StoreResult<SecretUse>;
    /// The stored certificate with this fingerprint, with the binding and state of the
    /// enrollment it was bound to at Authenticate (one round trip: this runs on every device
    /// request, before its body is parsed). None if not ours.
    async fn certificate_standing(
        &self,
        fingerprint: &str,
    ) -> StoreResult<Option<CertificateStanding>>;
    /// Certificates bound to a device, newest first.
    async fn device_certificates(&self, device_id: &str) -> StoreResult<Vec<CertificateRecord>>;
    /// Revokes every certificate bound to a device; returns how many were newly revoked.
    async fn revoke_device_certificates(&self, device_id: &str, now: i64) -> StoreResult<u64>;
    /// Stores a one-time secret by its hash.
    async fn create_secret(
        &self,
        kind: SecretKind,
        hash: &str,
        expires_at: i64,
        now: i64,
    ) -> StoreResult<()>;
    /// Uses a one-time secret up, atomically: of concurrent attempts exactly one is Accepted.
    async fn consume_secret(
        &self,
        kind: SecretKind,
        hash: &str,
        now: i64,
    ) -> StoreResult<SecretUse>;
}

pub(crate) fn certificate_from_row(row: &Row) -> Result<CertificateRecord, sqlx::Error> {
    Ok(CertificateRecord {
        fingerprint: row.col("fingerprint")?,
        serial: row.col("serial")?,
        subject: row.col("subject")?,
        not_before: row.col("not_before")?,
        not_after: row.col("not_after")?,
        issued_at: row.col("issued_at")?,
        device_id: row.col("device_id")?,
        bound_at: row.col("bound_at")?,
        revoked_at: row.col("revoked_at")?,
    })
}

#[async_trait]
impl<B: Backend> IdentityStore for B {
    async fn record_certificate(
        &self,
        c: &CertificateRecord,
        challenge_hash: Option<&str>,
        now: i64,
    ) -> StoreResult<SecretUse> {
        // Through the write queue: enrollments arriving together share one commit.
        let write = EnrollmentWrite::Certificate(
            Box::new(c.clone()),
            challenge_hash.map(str::to_string),
            now,
        );
        match self.writes().submit(Write::Enrollment(write)).await? {
            Written::Enrollment(EnrollmentWritten::SecretUsed(true)) => Ok(SecretUse::Accepted),
            Written::Enrollment(EnrollmentWritten::SecretUsed(false)) => {
                let hash = challenge_hash.unwrap_or_default();
                secret_refusal(self, SecretKind::ScepChallenge, hash).await
            }
            other => Err(wrong_kind(other)),
        }
    }

    async fn certificate_standing(
        &self,
        fingerprint: &str,
    ) -> StoreResult<Option<CertificateStanding>> {
        if !Self::QUEUED_READS {
            let asked = [fingerprint.to_string()];
            let mut found = standings_of::<B::Db>(&mut *self.reader().await?, &asked).await?;
            return Ok(found.remove(fingerprint));
        }
        // Through the read queue: lookups arriving together share one statement.
        self.reads().standings.submit(fingerprint.to_string()).await
    }

    async fn device_certificates(&self, device_id: &str) -> StoreResult<Vec<CertificateRecord>> {
        let rows = Self::sql(&format!(
            "SELECT {CERTIFICATE_COLUMNS} FROM device_certificates WHERE device_id = $1 \
             ORDER BY issued_at DESC, fingerprint"
        ))
        .arg(device_id)
        .fetch_all_on(&mut *self.reader().await?)
        .await?;
        Ok(rows
            .iter()
            .map(certificate_from_row)
            .collect::<Result<_, _>>()?)
    }

    async fn revoke_device_certificates(&self, device_id: &str, now: i64) -> StoreResult<u64> {
        Ok(Self::sql(
            "UPDATE device_certificates SET revoked_at = $2 \
             WHERE device_id = $1 AND revoked_at IS NULL",
        )
        .arg(device_id)
        .arg(now)
        .write_alone(self)
        .await?)
    }

    async fn create_secret(
        &self,
        kind: SecretKind,
        hash: &str,
        expires_at: i64,
        now: i64,
    ) -> StoreResult<()> {
        // One transaction, one commit (an fsync on SQLite) for both statements.
        let mut tx = self.begin_write().await?;
        Self::sql(
            "INSERT INTO enrollment_secrets (hash, kind, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .arg(hash)
        .arg(kind.as_str())
        .arg(now)
        .arg(expires_at)
        .execute_on(&mut *tx)
        .await?;
        // Expired secrets are dead weight; dropping a few per creation keeps the table small
        // without a background job (indexed by expiry).
        Self::sql(
            "DELETE FROM enrollment_secrets WHERE hash IN \
             (SELECT hash FROM enrollment_secrets WHERE expires_at < $1 LIMIT 100)",
        )
        .arg(now - 86_400_000)
        .execute_on(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn consume_secret(
        &self,
        kind: SecretKind,
        hash: &str,
        now: i64,
    ) -> StoreResult<SecretUse> {
        let write = EnrollmentWrite::ConsumeSecret(kind, hash.to_string(), now);
        match self.writes().submit(Write::Enrollment(write)).await? {
            Written::Enrollment(EnrollmentWritten::SecretUsed(true)) => Ok(SecretUse::Accepted),
            Written::Enrollment(EnrollmentWritten::SecretUsed(false)) => {
                secret_refusal(self, kind, hash).await
            }
            other => Err(wrong_kind(other)),
        }
    }
}

/// Uses a one-time secret up inside a write transaction: one conditional UPDATE, so that of
/// concurrent attempts (or of two in one batch) exactly one changes the row. False when the
/// secret was unknown, used or expired.
pub(crate) async fn consume_secret_in<D: Db>(
    tx: &mut D::Tx,
    kind: SecretKind,
    hash: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let used = D::sql(
        "UPDATE enrollment_secrets SET used_at = $3 \
         WHERE hash = $1 AND kind = $2 AND used_at IS NULL AND expires_at > $3",
    )
    .arg(hash)
    .arg(kind.as_str())
    .arg(now)
    .execute_on(&mut **tx)
    .await?;
    Ok(used == 1)
}

/// Records an issued certificate inside a write transaction, using its SCEP challenge up first
/// when there is one. False, with nothing recorded, when the challenge was not valid (the
/// UPDATE changed nothing, so there is nothing to undo).
pub(crate) async fn record_certificate_in<D: Db>(
    tx: &mut D::Tx,
    c: &CertificateRecord,
    challenge_hash: Option<&str>,
    now: i64,
) -> Result<bool, sqlx::Error> {
    if let Some(hash) = challenge_hash {
        if !consume_secret_in::<D>(tx, SecretKind::ScepChallenge, hash, now).await? {
            return Ok(false);
        }
    }
    D::sql(&format!(
        "INSERT INTO device_certificates ({CERTIFICATE_COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    ))
    .arg(&c.fingerprint)
    .arg(&c.serial)
    .arg(&c.subject)
    .arg(c.not_before)
    .arg(c.not_after)
    .arg(c.issued_at)
    .arg(&c.device_id)
    .arg(c.bound_at)
    .arg(c.revoked_at)
    .execute_on(&mut **tx)
    .await?;
    Ok(true)
}

/// Why a one-time secret was not accepted: never seen, already used, or expired.
pub(crate) async fn secret_refusal<B: Backend>(
    store: &B,
    kind: SecretKind,
    hash: &str,
) -> StoreResult<SecretUse> {
    let row = B::sql("SELECT used_at FROM enrollment_secrets WHERE hash = $1 AND kind = $2")
        .arg(hash)
        .arg(kind.as_str())
        .fetch_optional_on(&mut *store.reader().await?)
        .await?;
    Ok(match row {
        None => SecretUse::Unknown,
        Some(row) if row.col::<Option<i64>>("used_at")?.is_some() => SecretUse::AlreadyUsed,
        Some(_) => SecretUse::Expired,
    })
}

/// Answers a batch of the standing read queue (`Store::certificate_standing` for
/// each fingerprint asked) with one statement per chunk.
pub(crate) fn standing_flush<B: Backend>(
    source: B::ReadSource,
) -> crate::store::group_commit::Flush<String, Option<CertificateStanding>> {
    std::sync::Arc::new(move |asked: Vec<String>| {
        let source = source.clone();
        Box::pin(async move {
            let found = async {
                let mut conn = B::read_on(&source).await?;
                standings_of::<B::Db>(&mut conn, &asked).await
            }
            .await;
            answer_each(&asked, found.map_err(Into::into), |found, key| {
                found.get(key).cloned()
            })
        })
    })
}

pub(crate) async fn standings_of<D: Db>(
    conn: &mut D::Conn,
    asked: &[String],
) -> Result<std::collections::HashMap<String, CertificateStanding>, sqlx::Error> {
    let marks = Marks::of::<D>();
    let mut found = std::collections::HashMap::new();
    for chunk in chunk_rows(asked, 1) {
        // The enrollment joined is the certificate's own (the device it was bound
        // to at Authenticate), so the standing is known before the body is read.
        let sql = format!(
            "SELECT c.fingerprint, c.serial, c.subject, c.not_before, c.not_after, c.issued_at, \
               c.device_id, c.bound_at, c.revoked_at, \
               e.cert_fingerprint AS enrollment_fingerprint, e.state AS enrollment_state \
             FROM device_certificates c \
             LEFT JOIN enrollments e ON e.id = c.device_id \
             WHERE c.fingerprint IN ({})",
            marks.list(1, chunk.len())
        );
        let mut query = D::sql(&sql).persistent(kept_prepared(chunk.len()));
        for fingerprint in chunk {
            query = query.arg(fingerprint);
        }
        for row in query.fetch_all_on(&mut *conn).await? {
            let state: Option<String> = row.col("enrollment_state")?;
            let certificate = certificate_from_row(&row)?;
            found.insert(
                certificate.fingerprint.clone(),
                CertificateStanding {
                    certificate,
                    enrollment_fingerprint: row.col("enrollment_fingerprint")?,
                    enrollment_state: state
                        .as_deref()
                        .map(EnrollmentState::parse)
                        .transpose()
                        .map_err(known_error)?,
                },
            );
        }
    }
    Ok(found)
}
