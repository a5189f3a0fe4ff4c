//! Store records as the admin API shows them (`crate::api` types): times as RFC 3339, states
//! by name, results as JSON. The one place where a stored field becomes an API field.

use crate::api;
use crate::protocol::json::plist_bytes_to_json;
use crate::store::actions::{ActionCounts, ActionRecord};
use crate::store::{CertificateRecord, CommandRecord, Enrollment, PushStatus};

/// Unix milliseconds as RFC 3339 (UTC); None for a time out of range.
pub fn time(millis: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp_nanos(millis as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
}

pub fn optional_time(millis: Option<i64>) -> Option<String> {
    millis.and_then(time)
}

pub fn device(e: &Enrollment) -> api::Device {
    api::Device {
        device_id: e.device_id.clone(),
        enrollment_type: e.enrollment_type.as_str().to_string(),
        state: e.state.as_str().to_string(),
        serial_number: e.serial_number.clone(),
        model: e.model.clone(),
        model_name: e.model_name.clone(),
        product_name: e.product_name.clone(),
        os_version: e.os_version.clone(),
        build_version: e.build_version.clone(),
        device_name: e.device_name.clone(),
        imei: e.imei.clone(),
        meid: e.meid.clone(),
        topic: e.topic.clone(),
        has_push_token: e.has_push_token,
        has_unlock_token: e.has_unlock_token,
        awaiting_configuration: e.awaiting_configuration,
        enrolled_at: time(e.created_at),
        authenticated_at: time(e.authenticated_at),
        token_updated_at: optional_time(e.token_updated_at),
        checked_out_at: optional_time(e.checked_out_at),
        last_seen_at: optional_time(e.last_seen_at),
        wiped_at: optional_time(e.wiped_at),
    }
}

pub fn certificate(c: &CertificateRecord, bound_fingerprint: Option<&str>) -> api::Certificate {
    api::Certificate {
        serial: c.serial.clone(),
        fingerprint_sha256: c.fingerprint.clone(),
        subject: c.subject.clone(),
        not_before: time(c.not_before * 1000),
        not_after: time(c.not_after * 1000),
        issued_at: time(c.issued_at),
        bound: bound_fingerprint == Some(c.fingerprint.as_str()),
        revoked_at: optional_time(c.revoked_at),
    }
}

pub fn push(p: &PushStatus) -> api::PushState {
    api::PushState {
        last_push_at: optional_time(p.last_push_at),
        last_result: p.last_result.clone(),
        last_result_at: optional_time(p.last_result_at),
        next_push_at: optional_time(p.next_push_at),
        attempts_since_seen: p.attempts,
        consecutive_failures: p.failures,
        token_invalid: p.token_invalid_at.is_some(),
        token_invalid_at: optional_time(p.token_invalid_at),
    }
}

pub fn command(c: &CommandRecord) -> api::Command {
    api::Command {
        command_uuid: c.uuid.clone(),
        device_id: c.device_id.clone(),
        request_type: c.request_type.clone(),
        status: c.status.as_str().to_string(),
        created_at: time(c.created_at),
        updated_at: time(c.updated_at),
        attempts: c.sent_count,
        last_sent_at: optional_time(c.last_sent_at),
        not_now_count: c.not_now_count,
        last_not_now_at: optional_time(c.last_not_now_at),
        completed_at: optional_time(c.completed_at),
        result: c.result.as_deref().map(plist_bytes_to_json),
    }
}

pub fn action_counts(c: &ActionCounts) -> api::ActionCounts {
    api::ActionCounts {
        action_id: c.action_id.clone(),
        action: c.action.clone(),
        source: c.source.clone(),
        targeted: c.targeted(),
        pending: c.pending,
        sent: c.sent,
        acknowledged: c.acknowledged,
        failed: c.failed,
        not_applicable: c.not_applicable,
        updated_at: (c.updated_at > 0).then(|| time(c.updated_at)).flatten(),
    }
}

pub fn action_record(r: &ActionRecord) -> api::ActionRecord {
    api::ActionRecord {
        action_id: r.action_id.clone(),
        device_id: r.device_id.clone(),
        action: r.action.clone(),
        source: r.source.clone(),
        state: r.phase().as_str().to_string(),
        detail: r.detail.clone(),
        result: r
            .result
            .as_deref()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok()),
        command_uuid: r.command_uuid.clone(),
        created_at: time(r.created_at),
        updated_at: time(r.updated_at),
    }
}
