//! What the conformance cases share: device facts, tokens and commands to store, an enrolled
//! device, a managed profile, and `ok` for calls that must succeed.

use pomona::protocol::ReportStatus;
use pomona::store::*;

/// What a case returns: the first expectation that failed, with its file and line.
pub(crate) type CaseResult = Result<(), String>;

/// A store call that must succeed; its error names the call and where it was made.
#[track_caller]
pub(crate) fn ok<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> Result<T, String> {
    let at = std::panic::Location::caller();
    r.map_err(|e| format!("{}:{}: {what}: {e}", at.file(), at.line()))
}

pub(crate) fn facts(id: &str) -> DeviceFacts {
    DeviceFacts {
        device_id: id.to_string(),
        topic: "com.apple.mgmt.External.test".into(),
        serial_number: Some(format!("SER-{id}")),
        model: Some("iPhone15,2".into()),
        os_version: Some("17.4".into()),
        ..DeviceFacts::default()
    }
}

pub(crate) fn token(id: &str, unlock: Option<&[u8]>) -> TokenUpdateRecord {
    TokenUpdateRecord {
        device_id: id.to_string(),
        enrollment_type: EnrollmentType::Device,
        topic: "com.apple.mgmt.External.test".into(),
        token: vec![1, 2, 3, 4],
        push_magic: format!("magic-{id}"),
        unlock_token: unlock.map(<[u8]>::to_vec),
        awaiting_configuration: false,
    }
}

/// The managed-profile row of `Profile/wifi` (com.example.wifi, content h1, installed once).
pub(crate) fn managed_wifi(
    uuid: &str,
    state: pomona::vocab::profiles::ProfileState,
    removal_policy: pomona::vocab::profiles::RemovalPolicy,
) -> pomona::vocab::profiles::ManagedProfile {
    pomona::vocab::profiles::ManagedProfile {
        identifier: "com.example.wifi".into(),
        profile_key: "Profile/wifi".into(),
        hash: "h1".into(),
        uuid: uuid.into(),
        state,
        attempts: 0,
        installs: 1,
        last_attempt_at: None,
        acknowledged_at: None,
        last_error: None,
        removal_policy,
    }
}

pub(crate) fn command(uuid: &str) -> NewCommand {
    NewCommand {
        uuid: uuid.to_string(),
        request_type: "ProfileList".into(),
        command: b"<plist><dict/></plist>".to_vec(),
        shared: None,
    }
}

pub(crate) async fn enrolled(store: &dyn Store, id: &str) -> CaseResult {
    ok(store.authenticate(&facts(id), 1000).await, "authenticate")?;
    ok(
        store.token_update(&token(id, None), 1001).await,
        "token_update",
    )?;
    Ok(())
}

pub(crate) fn report<'a>(uuid: &'a str, status: ReportStatus, raw: &'a [u8]) -> ReportRecord<'a> {
    ReportRecord {
        command_uuid: uuid,
        status,
        raw,
    }
}

pub(crate) fn certificate(fingerprint: &str) -> CertificateRecord {
    CertificateRecord {
        fingerprint: fingerprint.to_string(),
        serial: format!("serial-{fingerprint}"),
        subject: "CN=device".into(),
        not_before: 0,
        not_after: 9_999_999_999,
        issued_at: 500,
        device_id: None,
        bound_at: None,
        revoked_at: None,
    }
}

pub(crate) fn accepted(
    device: &str,
    at: i64,
    claimed_until: i64,
    attempts: i64,
    next: i64,
) -> PushOutcome {
    PushOutcome {
        device_id: device.into(),
        at,
        accepted: true,
        result: Some("accepted".into()),
        token_invalid: false,
        schedule: Some(PushSchedule {
            claimed_until,
            next_push_at: Some(next),
            attempts,
            failures: 0,
            push_if_queued: false,
        }),
    }
}

pub(crate) async fn push_status_of(s: &dyn Store, id: &str) -> Result<PushStatus, String> {
    ok(s.push_status(id).await, "push_status")?.ok_or_else(|| format!("no push state for {id}"))
}
