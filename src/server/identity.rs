//! The one place where the server decides which enrollment a device request speaks for.
//!
//! Today the identity is the UDID/EnrollmentID inside the message. The identity issue adds the
//! TLS client certificate, `Mdm-Signature` and trusted-proxy `Client-Cert` checks here, so that
//! handlers keep calling `authenticate_device` unchanged.

use crate::protocol::EnrollmentIds;
use axum::http::HeaderMap;

/// The device (channel) a request was authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    pub device_id: String,
    pub user_channel: bool,
}

/// Why a request was not accepted as the device it claims to be. Answered with 403, never 401:
/// 401 makes a device remove its enrollment.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct IdentityRejected(pub String);

pub fn authenticate_device(
    _headers: &HeaderMap,
    claimed: &EnrollmentIds,
) -> Result<DeviceIdentity, IdentityRejected> {
    Ok(DeviceIdentity {
        device_id: claimed.device_id().to_string(),
        user_channel: claimed.is_user_channel(),
    })
}
