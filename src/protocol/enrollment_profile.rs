//! The enrollment profile (.mobileconfig, PROTOCOL.md §7): the server's TLS root when it is not
//! publicly trusted, a `com.apple.security.scep` payload that makes the device obtain its
//! identity from our `/scep`, and the `com.apple.mdm` payload pointing at that identity. Also
//! the reading side, which the simulator uses to enroll the way a device does.

use plist::{Dictionary, Value};

/// Every access right (PROTOCOL.md §7.2): 1 | 2 | 4 | … | 4096.
pub const ALL_ACCESS_RIGHTS: u64 = 8191;
/// The top-level identifier: stable, so installing a newer profile replaces the older one.
pub const PROFILE_IDENTIFIER: &str = "dev.pomona.enrollment";
/// Placeholder topic used when no push certificate is configured (devices cannot be woken).
pub const PLACEHOLDER_TOPIC: &str = "com.apple.mgmt.External.pomona-no-push-certificate";

/// What goes into one enrollment profile.
#[derive(Clone)]
pub struct EnrollmentProfileSpec {
    pub server_url: String,
    pub checkin_url: String,
    pub scep_url: String,
    /// SCEP challenge (secret: the profile itself is the only place it appears).
    pub challenge: String,
    pub topic: String,
    /// DER of the HTTPS root to install, when it is not publicly trusted.
    pub tls_root_der: Option<Vec<u8>>,
    pub sign_message: bool,
    pub organization: String,
    pub access_rights: u64,
}

/// Builds the XML .mobileconfig.
pub fn build(spec: &EnrollmentProfileSpec) -> Vec<u8> {
    let scep_uuid = new_uuid();
    let mut payloads = Vec::new();
    if let Some(root) = &spec.tls_root_der {
        let mut root_payload = payload(
            "com.apple.security.root",
            &format!("{PROFILE_IDENTIFIER}.tls-root"),
            &new_uuid(),
            "Server TLS root certificate",
        );
        root_payload.insert(
            "PayloadCertificateFileName".into(),
            Value::String("pomona-tls-root.cer".into()),
        );
        root_payload.insert("PayloadContent".into(), Value::Data(root.clone()));
        payloads.push(Value::Dictionary(root_payload));
    }

    let mut scep = Dictionary::new();
    scep.insert("URL".into(), Value::String(spec.scep_url.clone()));
    scep.insert("Name".into(), Value::String("Pomona".into()));
    scep.insert(
        "Subject".into(),
        Value::Array(vec![
            rdn("O", &spec.organization),
            rdn("CN", "Pomona device identity"),
        ]),
    );
    scep.insert("Challenge".into(), Value::String(spec.challenge.clone()));
    scep.insert("Keysize".into(), Value::Integer(2048.into()));
    scep.insert("Key Type".into(), Value::String("RSA".into()));
    // 1 = signing, 4 = encryption: the identity signs (TLS, Mdm-Signature) and decrypts.
    scep.insert("Key Usage".into(), Value::Integer(5.into()));
    let mut scep_payload = payload(
        "com.apple.security.scep",
        &format!("{PROFILE_IDENTIFIER}.scep"),
        &scep_uuid,
        "Device identity (SCEP)",
    );
    scep_payload.insert("PayloadContent".into(), Value::Dictionary(scep));
    payloads.push(Value::Dictionary(scep_payload));

    let mut mdm = payload(
        "com.apple.mdm",
        &format!("{PROFILE_IDENTIFIER}.mdm"),
        &new_uuid(),
        "Device management",
    );
    mdm.insert(
        "IdentityCertificateUUID".into(),
        Value::String(scep_uuid.clone()),
    );
    mdm.insert("Topic".into(), Value::String(spec.topic.clone()));
    mdm.insert("ServerURL".into(), Value::String(spec.server_url.clone()));
    mdm.insert("CheckInURL".into(), Value::String(spec.checkin_url.clone()));
    mdm.insert("SignMessage".into(), Value::Boolean(spec.sign_message));
    mdm.insert(
        "AccessRights".into(),
        Value::Integer(spec.access_rights.into()),
    );
    mdm.insert("CheckOutWhenRemoved".into(), Value::Boolean(true));
    mdm.insert(
        "ServerCapabilities".into(),
        Value::Array(vec![Value::String(
            "com.apple.mdm.per-user-connections".into(),
        )]),
    );
    payloads.push(Value::Dictionary(mdm));

    let mut top = Dictionary::new();
    top.insert("PayloadType".into(), Value::String("Configuration".into()));
    top.insert("PayloadVersion".into(), Value::Integer(1.into()));
    top.insert(
        "PayloadIdentifier".into(),
        Value::String(PROFILE_IDENTIFIER.into()),
    );
    top.insert("PayloadUUID".into(), Value::String(new_uuid()));
    top.insert(
        "PayloadDisplayName".into(),
        Value::String(format!("{} device management", spec.organization)),
    );
    top.insert(
        "PayloadOrganization".into(),
        Value::String(spec.organization.clone()),
    );
    top.insert(
        "PayloadDescription".into(),
        Value::String("Enrolls this device in Pomona device management.".into()),
    );
    top.insert("PayloadContent".into(), Value::Array(payloads));
    super::to_xml(&Value::Dictionary(top))
}

fn payload(kind: &str, identifier: &str, uuid: &str, name: &str) -> Dictionary {
    let mut d = Dictionary::new();
    d.insert("PayloadType".into(), Value::String(kind.into()));
    d.insert("PayloadVersion".into(), Value::Integer(1.into()));
    d.insert("PayloadIdentifier".into(), Value::String(identifier.into()));
    d.insert("PayloadUUID".into(), Value::String(uuid.into()));
    d.insert("PayloadDisplayName".into(), Value::String(name.into()));
    d
}

/// One relative distinguished name in SCEP's array-of-arrays form: `[["CN", "value"]]`.
fn rdn(key: &str, value: &str) -> Value {
    Value::Array(vec![Value::Array(vec![
        Value::String(key.into()),
        Value::String(value.into()),
    ])])
}

fn new_uuid() -> String {
    uuid::Uuid::new_v4().to_string().to_uppercase()
}

/// What a device takes from an enrollment profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentInstructions {
    pub server_url: String,
    pub checkin_url: Option<String>,
    pub topic: String,
    pub sign_message: bool,
    pub scep_url: String,
    pub challenge: Option<String>,
    pub key_size: u32,
    /// DER certificates from `com.apple.security.root` / `.pem` payloads.
    pub trusted_roots: Vec<Vec<u8>>,
}

/// Why a device could not enroll with a profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrollmentProfileError {
    #[error("profile is not a plist dictionary: {0}")]
    NotADictionary(String),
    /// Something the profile must carry: `{0}` names where and what.
    #[error("{0}")]
    Missing(&'static str),
    #[error("IdentityCertificateUUID does not name the SCEP payload")]
    IdentityNotTheScepPayload,
}

/// Reads an (unsigned) enrollment profile the way a device does.
pub fn read(bytes: &[u8]) -> Result<EnrollmentInstructions, EnrollmentProfileError> {
    use EnrollmentProfileError::Missing;
    let top: Dictionary = super::bounded::decode_into(bytes)
        .map_err(|e| EnrollmentProfileError::NotADictionary(e.to_string()))?;
    let content = top
        .get("PayloadContent")
        .and_then(Value::as_array)
        .ok_or(Missing("profile has no PayloadContent array"))?;
    let mut roots = Vec::new();
    let mut scep: Option<&Dictionary> = None;
    let mut mdm: Option<&Dictionary> = None;
    for p in content.iter().filter_map(Value::as_dictionary) {
        match p.get("PayloadType").and_then(Value::as_string) {
            Some("com.apple.security.root") | Some("com.apple.security.pem") => {
                if let Some(der) = p.get("PayloadContent").and_then(Value::as_data) {
                    roots.push(der.to_vec());
                }
            }
            Some("com.apple.security.scep") => scep = Some(p),
            Some("com.apple.mdm") => mdm = Some(p),
            _ => {}
        }
    }
    let mdm = mdm.ok_or(Missing("profile has no com.apple.mdm payload"))?;
    let scep_payload = scep.ok_or(Missing("profile has no com.apple.security.scep payload"))?;
    let identity = mdm
        .get("IdentityCertificateUUID")
        .and_then(Value::as_string)
        .ok_or(Missing("com.apple.mdm has no IdentityCertificateUUID"))?;
    if scep_payload.get("PayloadUUID").and_then(Value::as_string) != Some(identity) {
        return Err(EnrollmentProfileError::IdentityNotTheScepPayload);
    }
    let scep = scep_payload
        .get("PayloadContent")
        .and_then(Value::as_dictionary)
        .ok_or(Missing("SCEP payload has no PayloadContent dictionary"))?;
    let text = |d: &Dictionary, key: &str| d.get(key).and_then(Value::as_string).map(String::from);
    Ok(EnrollmentInstructions {
        server_url: text(mdm, "ServerURL").ok_or(Missing("com.apple.mdm has no ServerURL"))?,
        checkin_url: text(mdm, "CheckInURL"),
        topic: text(mdm, "Topic").ok_or(Missing("com.apple.mdm has no Topic"))?,
        sign_message: mdm
            .get("SignMessage")
            .and_then(Value::as_boolean)
            .unwrap_or(false),
        scep_url: text(scep, "URL").ok_or(Missing("SCEP payload has no URL"))?,
        challenge: text(scep, "Challenge"),
        key_size: scep
            .get("Keysize")
            .and_then(Value::as_unsigned_integer)
            .unwrap_or(1024) as u32,
        trusted_roots: roots,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> EnrollmentProfileSpec {
        EnrollmentProfileSpec {
            server_url: "https://mdm.example/mdm/connect".into(),
            checkin_url: "https://mdm.example/mdm/checkin".into(),
            scep_url: "https://mdm.example/scep".into(),
            challenge: "secret-challenge".into(),
            topic: "com.apple.mgmt.External.abc".into(),
            tls_root_der: Some(vec![1, 2, 3]),
            sign_message: true,
            organization: "Example".into(),
            access_rights: ALL_ACCESS_RIGHTS,
        }
    }

    #[test]
    fn built_profile_reads_back() {
        let bytes = build(&spec());
        let read = read(&bytes).unwrap();
        assert_eq!(read.server_url, "https://mdm.example/mdm/connect");
        assert_eq!(
            read.checkin_url.as_deref(),
            Some("https://mdm.example/mdm/checkin")
        );
        assert_eq!(read.scep_url, "https://mdm.example/scep");
        assert_eq!(read.challenge.as_deref(), Some("secret-challenge"));
        assert_eq!(read.key_size, 2048);
        assert!(read.sign_message);
        assert_eq!(read.trusted_roots, vec![vec![1, 2, 3]]);
    }

    #[test]
    fn payload_order_installs_certificates_before_mdm() {
        let top: Dictionary = plist::from_bytes(&build(&spec())).unwrap();
        let types: Vec<_> = top["PayloadContent"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                p.as_dictionary().unwrap()["PayloadType"]
                    .as_string()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            types,
            [
                "com.apple.security.root",
                "com.apple.security.scep",
                "com.apple.mdm"
            ]
        );
    }
}
