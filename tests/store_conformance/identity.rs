//! Identity cases: certificates bound at Authenticate and revoked, SCEP challenges used up with
//! the certificate they issue, one-time secrets used once even when raced.

use crate::support::*;
use pomona::store::*;
use std::sync::Arc;

pub(crate) async fn certificates_are_bound_at_authenticate_and_revoked(
    s: Arc<dyn Store>,
) -> CaseResult {
    let used = ok(
        s.record_certificate(&certificate("fp1"), None, 500).await,
        "record",
    )?;
    check!(
        used == SecretUse::Accepted,
        "recording without a challenge: {used:?}"
    );
    let before = ok(s.certificate_standing("fp1").await, "standing")?
        .ok_or("recorded certificate not found")?;
    check!(
        before.certificate.device_id.is_none() && before.enrollment_state.is_none(),
        "fresh certificate standing {before:?}"
    );
    check!(
        ok(s.certificate_standing("nope").await, "standing")?.is_none(),
        "an unknown fingerprint has a standing"
    );
    let mut f = facts("D1");
    f.certificate_fingerprint = Some("fp1".into());
    ok(s.authenticate(&f, 1000).await, "authenticate")?;
    let bound = ok(s.certificate_standing("fp1").await, "standing")?.unwrap();
    check!(
        bound.certificate.device_id.as_deref() == Some("D1")
            && bound.enrollment_fingerprint.as_deref() == Some("fp1")
            && bound.enrollment_state == Some(EnrollmentState::Authenticated),
        "after Authenticate: {bound:?}"
    );
    // A certificate recorded but never bound has no enrollment, though D1 is enrolled.
    ok(
        s.record_certificate(&certificate("fp-unbound"), None, 1100)
            .await,
        "record",
    )?;
    let unbound = ok(s.certificate_standing("fp-unbound").await, "standing")?.unwrap();
    check!(
        unbound.certificate.device_id.is_none() && unbound.enrollment_state.is_none(),
        "another device's enrollment leaked into the standing: {unbound:?}"
    );
    let e = ok(s.enrollment("D1").await, "enrollment")?.unwrap();
    check!(
        e.certificate_fingerprint.as_deref() == Some("fp1"),
        "enrollment fingerprint {:?}",
        e.certificate_fingerprint
    );
    // Re-enrollment with a new certificate moves the binding.
    ok(
        s.record_certificate(&certificate("fp2"), None, 600).await,
        "record",
    )?;
    f.certificate_fingerprint = Some("fp2".into());
    ok(s.authenticate(&f, 2000).await, "authenticate")?;
    let moved = ok(s.certificate_standing("fp1").await, "standing")?.unwrap();
    check!(
        moved.enrollment_fingerprint.as_deref() == Some("fp2"),
        "binding did not move: {moved:?}"
    );
    let listed = ok(s.device_certificates("D1").await, "list")?;
    check!(listed.len() == 2, "device certificates {listed:?}");
    let revoked = ok(s.revoke_device_certificates("D1", 3000).await, "revoke")?;
    check!(revoked == 2, "revoked {revoked}");
    let again = ok(s.revoke_device_certificates("D1", 3001).await, "revoke")?;
    check!(again == 0, "revoking twice counted {again}");
    let after = ok(s.certificate_standing("fp2").await, "standing")?.unwrap();
    check!(
        after.certificate.revoked_at == Some(3000),
        "revoked_at {:?}",
        after.certificate.revoked_at
    );
    Ok(())
}

pub(crate) async fn scep_challenge_is_used_up_with_the_certificate_it_issues(
    s: Arc<dyn Store>,
) -> CaseResult {
    ok(
        s.create_secret(SecretKind::ScepChallenge, "h1", 10_000, 1000)
            .await,
        "create",
    )?;
    let first = ok(
        s.record_certificate(&certificate("fpA"), Some("h1"), 2000)
            .await,
        "record",
    )?;
    check!(first == SecretUse::Accepted, "first use {first:?}");
    let second = ok(
        s.record_certificate(&certificate("fpB"), Some("h1"), 2001)
            .await,
        "record",
    )?;
    check!(second == SecretUse::AlreadyUsed, "second use {second:?}");
    check!(
        ok(s.certificate_standing("fpB").await, "standing")?.is_none(),
        "a certificate was recorded for a used challenge"
    );
    let unknown = ok(
        s.record_certificate(&certificate("fpC"), Some("nope"), 2002)
            .await,
        "record",
    )?;
    check!(
        unknown == SecretUse::Unknown,
        "unknown challenge {unknown:?}"
    );
    ok(
        s.create_secret(SecretKind::ScepChallenge, "h2", 3000, 1000)
            .await,
        "create",
    )?;
    let late = ok(
        s.record_certificate(&certificate("fpD"), Some("h2"), 3000)
            .await,
        "record",
    )?;
    check!(late == SecretUse::Expired, "expired challenge {late:?}");
    // An enrollment token is not a SCEP challenge.
    ok(
        s.create_secret(SecretKind::EnrollmentToken, "t1", 10_000, 1000)
            .await,
        "create",
    )?;
    let wrong_kind = ok(
        s.record_certificate(&certificate("fpE"), Some("t1"), 2000)
            .await,
        "record",
    )?;
    check!(
        wrong_kind == SecretUse::Unknown,
        "token used as challenge: {wrong_kind:?}"
    );
    Ok(())
}

pub(crate) async fn one_time_secrets_are_single_use_even_when_raced(
    s: Arc<dyn Store>,
) -> CaseResult {
    ok(
        s.create_secret(SecretKind::EnrollmentToken, "tok", 10_000, 1000)
            .await,
        "create",
    )?;
    let attempts: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.consume_secret(SecretKind::EnrollmentToken, "tok", 2000 + i)
                    .await
            })
        })
        .collect();
    let mut accepted = 0;
    for attempt in attempts {
        let outcome = ok(attempt.await.map_err(|e| e.to_string()), "join")?;
        match outcome {
            Ok(SecretUse::Accepted) => accepted += 1,
            Ok(SecretUse::AlreadyUsed) => {}
            Ok(other) => return Err(format!("unexpected outcome {other:?}")),
            // SQLite may report a busy writer; that attempt simply failed.
            Err(StoreError::Unavailable(_)) => {}
            Err(e) => return Err(format!("consume: {e}")),
        }
    }
    check!(accepted == 1, "{accepted} concurrent uses were accepted");
    let expired = {
        ok(
            s.create_secret(SecretKind::EnrollmentToken, "old", 1500, 1000)
                .await,
            "create",
        )?;
        ok(
            s.consume_secret(SecretKind::EnrollmentToken, "old", 1500)
                .await,
            "consume",
        )?
    };
    check!(expired == SecretUse::Expired, "expired token {expired:?}");
    Ok(())
}
