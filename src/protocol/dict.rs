//! Typed access to a plist dictionary received from a device, with errors that name the key,
//! and the enrollment identifiers (device and user channel) that most messages carry.

use super::ProtocolError;
use plist::{Dictionary, Value};

/// A decoded top-level dictionary plus the raw bytes it came from.
pub struct DeviceDict<'a> {
    pub dict: Dictionary,
    raw: &'a [u8],
}

impl<'a> DeviceDict<'a> {
    /// Parses XML or binary plist bytes whose top level must be a dictionary.
    pub fn parse(raw: &'a [u8]) -> Result<Self, ProtocolError> {
        if raw.is_empty() {
            return Err(ProtocolError::new(
                "empty body: expected a plist dictionary",
                raw,
            ));
        }
        let value = super::bounded::decode(raw).map_err(|e| match e {
            super::bounded::PlistDecodeError::Invalid(why) => {
                ProtocolError::new(format!("body is not a valid plist: {why}"), raw)
            }
            limit => ProtocolError::new(format!("body refused: {limit}"), raw),
        })?;
        match value {
            Value::Dictionary(dict) => Ok(Self { dict, raw }),
            other => Err(ProtocolError::new(
                format!("plist top level is {}, expected a dictionary", kind(&other)),
                raw,
            )),
        }
    }

    pub fn error(&self, reason: impl Into<String>) -> ProtocolError {
        ProtocolError::new(reason, self.raw)
    }

    pub fn opt_string(&self, key: &str) -> Result<Option<String>, ProtocolError> {
        match self.dict.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.wrong_type(key, "string", other)),
        }
    }

    pub fn string(&self, key: &str) -> Result<String, ProtocolError> {
        self.opt_string(key)?
            .ok_or_else(|| self.error(format!("required key {key} is missing")))
    }

    pub fn opt_data(&self, key: &str) -> Result<Option<Vec<u8>>, ProtocolError> {
        match self.dict.get(key) {
            None => Ok(None),
            Some(Value::Data(d)) => Ok(Some(d.clone())),
            Some(other) => Err(self.wrong_type(key, "data", other)),
        }
    }

    pub fn data(&self, key: &str) -> Result<Vec<u8>, ProtocolError> {
        self.opt_data(key)?
            .ok_or_else(|| self.error(format!("required key {key} is missing")))
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, ProtocolError> {
        match self.dict.get(key) {
            None => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(*b)),
            Some(other) => Err(self.wrong_type(key, "boolean", other)),
        }
    }

    fn wrong_type(&self, key: &str, expected: &str, found: &Value) -> ProtocolError {
        self.error(format!(
            "key {key} must be {expected}, found {}",
            kind(found)
        ))
    }

    /// The enrollment identifiers: UDID or EnrollmentID for the device channel, plus the
    /// user-channel identifiers when present.
    pub fn enrollment_ids(&self) -> Result<EnrollmentIds, ProtocolError> {
        let ids = EnrollmentIds {
            udid: self.opt_string("UDID")?.filter(|s| !s.is_empty()),
            enrollment_id: self.opt_string("EnrollmentID")?.filter(|s| !s.is_empty()),
            user_id: self.opt_string("UserID")?.filter(|s| !s.is_empty()),
            user_short_name: self.opt_string("UserShortName")?.filter(|s| !s.is_empty()),
            enrollment_user_id: self
                .opt_string("EnrollmentUserID")?
                .filter(|s| !s.is_empty()),
        };
        if ids.udid.is_none() && ids.enrollment_id.is_none() {
            return Err(self.error("neither UDID nor EnrollmentID is present"));
        }
        Ok(ids)
    }
}

/// Human name of a plist value's type, for error messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Array(_) => "an array",
        Value::Dictionary(_) => "a dictionary",
        Value::Boolean(_) => "a boolean",
        Value::Data(_) => "data",
        Value::Date(_) => "a date",
        Value::Real(_) => "a real",
        Value::Integer(_) => "an integer",
        Value::String(_) => "a string",
        Value::Uid(_) => "a UID",
        _ => "an unknown type",
    }
}

/// Who sent a message: the device channel (UDID, or EnrollmentID for User Enrollment) and,
/// for user-channel messages, the user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnrollmentIds {
    pub udid: Option<String>,
    pub enrollment_id: Option<String>,
    pub user_id: Option<String>,
    pub user_short_name: Option<String>,
    pub enrollment_user_id: Option<String>,
}

impl EnrollmentIds {
    /// The device-channel identifier: UDID, or EnrollmentID on User Enrollment.
    pub fn device_id(&self) -> &str {
        self.udid
            .as_deref()
            .or(self.enrollment_id.as_deref())
            .expect("parsed identifiers always carry UDID or EnrollmentID")
    }

    /// True when the message came from User Enrollment (no UDID, no serial number).
    pub fn is_user_enrollment(&self) -> bool {
        self.udid.is_none()
    }

    /// True when the message belongs to a user channel rather than the device channel.
    pub fn is_user_channel(&self) -> bool {
        self.user_id.is_some() || self.enrollment_user_id.is_some()
    }

    /// Identifiers for the device channel only.
    pub fn device(id: &str) -> Self {
        Self {
            udid: Some(id.to_string()),
            ..Self::default()
        }
    }
}
