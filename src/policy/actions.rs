//! Device actions, declared (`DeviceAction` documents) or asked for through the admin API:
//! validation of which fields each action takes, secrets (PINs) read from a file or a
//! Kubernetes Secret and kept out of every `Debug`, and the MDM command each action becomes.
//! A declared action is identified by its name and a fingerprint of its spec — never of the
//! PIN's value — so re-applying it unchanged is recognisably the same action.

use super::files::PolicyFiles;
use super::load::{Located, Problem, Severity};
use super::model::{ActionKind, ActionTargetSpec, DeviceActionSpec};
use plist::{Dictionary, Value};
use sha2::Digest as _;
use std::collections::BTreeMap;

/// A secret value (a PIN). Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Values of Kubernetes Secrets that DeviceActions refer to, as the Kubernetes source read
/// them, keyed by [`secret_key`]: the Secret's name is qualified with its namespace, so a
/// DeviceAction can only ever use Secrets of its own namespace.
pub type SecretValues = BTreeMap<(String, String), Secret>;

/// The `SecretValues` key of `key` in Secret `name` of `namespace` (`namespace/name`: object
/// names cannot contain `/`, so this is unambiguous); documents without a namespace use the
/// bare name.
pub fn secret_key(namespace: Option<&str>, name: &str, key: &str) -> (String, String) {
    let name = match namespace {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    };
    (name, key.to_string())
}

/// Which devices an action is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionTarget {
    SerialNumber(String),
    Udid(String),
    Group(String),
}

impl std::fmt::Display for ActionTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ActionTarget::SerialNumber(s) => write!(f, "serial number {s}"),
            ActionTarget::Udid(u) => write!(f, "UDID {u}"),
            ActionTarget::Group(g) => write!(f, "group {g}"),
        }
    }
}

/// An action's parameters, secrets resolved: what both declared and API actions carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionParams {
    pub message: Option<String>,
    pub phone_number: Option<String>,
    pub footnote: Option<String>,
    pub pin: Option<Secret>,
    pub preserve_data_plan: Option<bool>,
    pub disallow_proximity_setup: Option<bool>,
    pub return_to_service: Option<bool>,
    pub notify_user: Option<bool>,
}

impl ActionParams {
    /// The names (as documents and the API spell them) of the parameters that are set.
    pub fn given_fields(&self) -> Vec<&'static str> {
        [
            ("message", self.message.is_some()),
            ("phoneNumber", self.phone_number.is_some()),
            ("footnote", self.footnote.is_some()),
            ("pin", self.pin.is_some()),
            ("preserveDataPlan", self.preserve_data_plan.is_some()),
            (
                "disallowProximitySetup",
                self.disallow_proximity_setup.is_some(),
            ),
            ("returnToService", self.return_to_service.is_some()),
            ("notifyUser", self.notify_user.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

/// A validated action ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionSpec {
    pub kind: ActionKind,
    pub params: ActionParams,
}

/// A declared DeviceAction in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredAction {
    /// `DeviceAction/<name>`.
    pub key: String,
    pub name: String,
    pub target: ActionTarget,
    pub spec: ActionSpec,
    /// Hex SHA-256 over the spec (the PIN's source, never its value).
    pub fingerprint: String,
}

impl DeclaredAction {
    /// What the store records this version of the action under.
    pub fn action_id(&self) -> String {
        format!("{}@{}", self.key, &self.fingerprint[..12])
    }
}

/// Which fields each action takes (`confirm` and `pin` are checked on their own).
const FIELDS: &[(&str, &[ActionKind])] = &[
    ("message", &[ActionKind::Lock, ActionKind::EnableLostMode]),
    (
        "phoneNumber",
        &[ActionKind::Lock, ActionKind::EnableLostMode],
    ),
    ("footnote", &[ActionKind::EnableLostMode]),
    ("pin", &[ActionKind::Lock, ActionKind::Erase]),
    ("preserveDataPlan", &[ActionKind::Erase]),
    ("disallowProximitySetup", &[ActionKind::Erase]),
    ("returnToService", &[ActionKind::Erase]),
    ("notifyUser", &[ActionKind::Restart]),
    ("confirm", &[ActionKind::Erase]),
];

/// Checks the fields given against the action; errors name the field and the fix.
pub fn check_fields(kind: ActionKind, given: &[&str]) -> Vec<String> {
    let mut errors = Vec::new();
    for field in given {
        let Some((_, allowed)) = FIELDS.iter().find(|(f, _)| f == field) else {
            continue;
        };
        if !allowed.contains(&kind) {
            let takers: Vec<&str> = allowed.iter().map(|k| k.as_str()).collect();
            errors.push(format!(
                "{field} does not apply to {} (only to {}): remove it",
                kind.as_str(),
                takers.join(", ")
            ));
        }
    }
    if kind == ActionKind::EnableLostMode
        && !given.contains(&"message")
        && !given.contains(&"phoneNumber")
    {
        errors.push(
            "EnableLostMode needs a message or a phoneNumber (shown on the lock screen)".into(),
        );
    }
    errors
}

/// A PIN that is not six digits. The message never shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the PIN must be exactly six digits (the value is not shown)")]
pub struct BadPin;

/// A PIN must be six digits; the message never shows it.
pub fn check_pin(pin: &Secret) -> Result<(), BadPin> {
    let p = pin.expose();
    if p.len() == 6 && p.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(BadPin)
    }
}

impl ActionSpec {
    /// The `Command` dictionary for a device on `platform` (the schema's OS name): keys the
    /// platform does not take (a PIN on iOS) are left out. `unlock_token` is for ClearPasscode.
    pub fn command(&self, platform: Option<&str>, unlock_token: Option<&[u8]>) -> Dictionary {
        let p = &self.params;
        let mut d = Dictionary::new();
        let string = |d: &mut Dictionary, key: &str, value: &Option<String>| {
            if let Some(v) = value {
                d.insert(key.into(), Value::String(v.clone()));
            }
        };
        match self.kind {
            ActionKind::Lock => {
                string(&mut d, "Message", &p.message);
                string(&mut d, "PhoneNumber", &p.phone_number);
                string(
                    &mut d,
                    "PIN",
                    &p.pin.as_ref().map(|s| s.expose().to_string()),
                );
            }
            ActionKind::Erase => {
                string(
                    &mut d,
                    "PIN",
                    &p.pin.as_ref().map(|s| s.expose().to_string()),
                );
                if let Some(v) = p.preserve_data_plan {
                    d.insert("PreserveDataPlan".into(), Value::Boolean(v));
                }
                if let Some(v) = p.disallow_proximity_setup {
                    d.insert("DisallowProximitySetup".into(), Value::Boolean(v));
                }
                if let Some(enabled) = p.return_to_service {
                    let mut rts = Dictionary::new();
                    rts.insert("Enabled".into(), Value::Boolean(enabled));
                    d.insert("ReturnToService".into(), Value::Dictionary(rts));
                }
            }
            ActionKind::EnableLostMode => {
                string(&mut d, "Message", &p.message);
                string(&mut d, "PhoneNumber", &p.phone_number);
                string(&mut d, "Footnote", &p.footnote);
            }
            ActionKind::Restart => {
                if let Some(v) = p.notify_user {
                    d.insert("NotifyUser".into(), Value::Boolean(v));
                }
            }
            ActionKind::ClearPasscode => {
                if let Some(token) = unlock_token {
                    d.insert("UnlockToken".into(), Value::Data(token.to_vec()));
                }
            }
            ActionKind::Locate | ActionKind::DisableLostMode | ActionKind::Shutdown => {}
        }
        if let Some(platform) = platform {
            let request_type = self.kind.request_type();
            let keys: Vec<String> = d.keys().cloned().collect();
            for key in crate::protocol::command_support::unavailable_keys(
                request_type,
                platform,
                keys.iter().map(String::as_str),
            ) {
                d.remove(&key);
            }
        }
        d.insert(
            "RequestType".into(),
            Value::String(self.kind.request_type().into()),
        );
        d
    }

    /// Whether the command carries a secret (and its stored copy is redacted once answered).
    pub fn carries_secret(&self) -> bool {
        self.params.pin.is_some() || self.kind == ActionKind::ClearPasscode
    }
}

/// Compiles one DeviceAction document: target, fields, PIN, confirmation.
pub fn compile(
    doc: &Located<DeviceActionSpec>,
    files: &dyn PolicyFiles,
    secrets: &SecretValues,
    groups: &std::collections::BTreeSet<&str>,
) -> Result<DeclaredAction, Vec<Problem>> {
    let spec = &doc.doc.spec;
    let error = |m: String| doc.problem(Severity::Error, m);
    let mut problems = Vec::new();
    let target = match target_of(&spec.target) {
        Ok(t) => Some(t),
        Err(refused) => {
            problems.push(error(refused.to_string()));
            None
        }
    };
    if let Some(ActionTarget::Group(g)) = &target {
        if !groups.contains(g.as_str()) {
            problems.push(error(format!(
                "spec.target.group: DeviceGroup {g:?} is not declared"
            )));
        }
    }
    let mut params = ActionParams {
        message: spec.message.clone(),
        phone_number: spec.phone_number.clone(),
        footnote: spec.footnote.clone(),
        pin: None, // resolved below, once the fields are known to apply
        preserve_data_plan: spec.preserve_data_plan,
        disallow_proximity_setup: spec.disallow_proximity_setup,
        return_to_service: spec.return_to_service,
        notify_user: spec.notify_user,
    };
    let mut given = params.given_fields();
    given.extend(spec.pin.as_ref().map(|_| "pin"));
    given.extend(spec.confirm.as_ref().map(|_| "confirm"));
    for message in check_fields(spec.action, &given) {
        problems.push(error(format!("spec: {message}")));
    }
    if spec.action == ActionKind::Erase {
        let expected = target.as_ref().map(|t| match t {
            ActionTarget::SerialNumber(s) | ActionTarget::Udid(s) | ActionTarget::Group(s) => {
                s.clone()
            }
        });
        match (&spec.confirm, expected) {
            (Some(c), Some(e)) if *c == e => {}
            (_, Some(e)) => problems.push(error(format!(
                "spec.confirm: Erase wipes every targeted device; set confirm: {e:?} (the target repeated) to confirm"
            ))),
            (_, None) => {}
        }
    }
    params.pin = match &spec.pin {
        None => None,
        Some(source) => {
            match read_secret(
                source,
                files,
                doc.doc.metadata.namespace.as_deref(),
                secrets,
            ) {
                Ok(pin) => match check_pin(&pin) {
                    Ok(()) => Some(pin),
                    Err(m) => {
                        problems.push(error(format!("spec.pin: {m}")));
                        None
                    }
                },
                Err(m) => {
                    problems.push(error(format!("spec.pin: {m}")));
                    None
                }
            }
        }
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let fingerprint = {
        // The PIN's source (file path or Secret reference) is part of the spec; its value is not.
        let text = serde_json::to_string(spec).unwrap_or_default();
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    };
    Ok(DeclaredAction {
        key: format!("DeviceAction/{}", doc.name()),
        name: doc.name().to_string(),
        target: target.expect("no problems means a target"),
        spec: ActionSpec {
            kind: spec.action,
            params,
        },
        fingerprint,
    })
}

/// A DeviceAction's target names not exactly one device or group.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec.target: give exactly one of serialNumber, udid or group")]
pub struct AmbiguousTarget;

fn target_of(t: &ActionTargetSpec) -> Result<ActionTarget, AmbiguousTarget> {
    let blank = |s: &String| s.trim().is_empty();
    match (&t.serial_number, &t.udid, &t.group) {
        (Some(s), None, None) if !blank(s) => Ok(ActionTarget::SerialNumber(s.clone())),
        (None, Some(u), None) if !blank(u) => Ok(ActionTarget::Udid(u.clone())),
        (None, None, Some(g)) if !blank(g) => Ok(ActionTarget::Group(g.clone())),
        _ => Err(AmbiguousTarget),
    }
}

/// Why a secret a DeviceAction names (its PIN) could not be read. Never holds the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretUnavailable {
    #[error(transparent)]
    File(#[from] super::confined::FileRefused),
    #[error("file {0:?} is not UTF-8 text")]
    NotText(String),
    #[error(
        "secretKeyRef: key {key:?} of Secret {name:?} is not available (Secrets are read only by \
         the Kubernetes source, from the object's namespace; in a policy directory use pin.file)"
    )]
    NotInSecret { name: String, key: String },
    #[error("give exactly one of file or secretKeyRef")]
    Ambiguous,
}

fn read_secret(
    source: &super::model::SecretSource,
    files: &dyn PolicyFiles,
    namespace: Option<&str>,
    secrets: &SecretValues,
) -> Result<Secret, SecretUnavailable> {
    match (&source.file, &source.secret_key_ref) {
        (Some(relative), None) => {
            let bytes = files.read(relative, "file")?;
            let text = String::from_utf8(bytes)
                .map_err(|_| SecretUnavailable::NotText(relative.clone()))?;
            Ok(Secret::new(text.trim()))
        }
        (None, Some(r)) => secrets
            .get(&secret_key(namespace, &r.name, &r.key))
            .cloned()
            .ok_or_else(|| SecretUnavailable::NotInSecret {
                name: r.name.clone(),
                key: r.key.clone(),
            }),
        _ => Err(SecretUnavailable::Ambiguous),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_that_do_not_apply_to_the_action_are_named() {
        let errors = check_fields(ActionKind::Restart, &["message", "notifyUser"]);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].contains("message does not apply to Restart"),
            "{errors:?}"
        );
        assert!(check_fields(ActionKind::Lock, &["message", "pin"]).is_empty());
        let lost = check_fields(ActionKind::EnableLostMode, &["footnote"]);
        assert!(
            lost[0].contains("needs a message or a phoneNumber"),
            "{lost:?}"
        );
    }

    #[test]
    fn pins_are_six_digits_and_never_printed() {
        assert!(check_pin(&Secret::new("123456")).is_ok());
        let err = check_pin(&Secret::new("12345a")).unwrap_err().to_string();
        assert!(!err.contains("12345a"));
        assert!(!format!("{:?}", Secret::new("123456")).contains("123456"));
        let spec = ActionSpec {
            kind: ActionKind::Lock,
            params: ActionParams {
                pin: Some(Secret::new("123456")),
                ..ActionParams::default()
            },
        };
        assert!(!format!("{spec:?}").contains("123456"));
    }

    #[test]
    fn a_lock_sends_its_pin_to_macs_only() {
        let spec = ActionSpec {
            kind: ActionKind::Lock,
            params: ActionParams {
                message: Some("Return to IT".into()),
                pin: Some(Secret::new("123456")),
                ..ActionParams::default()
            },
        };
        let mac = spec.command(Some("macOS"), None);
        assert_eq!(mac.get("PIN").and_then(Value::as_string), Some("123456"));
        let phone = spec.command(Some("iOS"), None);
        assert!(phone.get("PIN").is_none(), "iOS does not take a PIN");
        assert_eq!(
            phone.get("RequestType").and_then(Value::as_string),
            Some("DeviceLock")
        );
    }

    #[test]
    fn clear_passcode_carries_the_unlock_token_as_data() {
        let spec = ActionSpec {
            kind: ActionKind::ClearPasscode,
            params: ActionParams::default(),
        };
        let d = spec.command(Some("iOS"), Some(b"token"));
        assert_eq!(
            d.get("UnlockToken").and_then(Value::as_data),
            Some(&b"token"[..])
        );
        assert!(spec.carries_secret());
    }
}
