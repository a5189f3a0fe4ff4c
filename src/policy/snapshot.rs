//! `PolicySnapshot`: the validated, immutable result of reading a policy source — groups,
//! compiled profiles (each a .mobileconfig with a content hash and a stable identifier), and
//! device labels — stamped with a revision. Building one checks everything that can be checked
//! without devices: names, references, exactly one content source, profile plists, duplicate
//! PayloadIdentifiers. Compilation is deterministic: the same documents give byte-identical
//! profiles, so content hashes only change when content does.

use super::files::PolicyFiles;
use super::load::{Documents, Located, Problem, Severity};
use super::model::*;
use super::restrictions::RestrictionSettings;
use super::selector;
use crate::vocab::profiles::RemovalPolicy;
use plist::{Dictionary, Value};
use sha2::Digest as _;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Where a compiled profile was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProfileOrigin {
    Profile,
    Restrictions,
}

/// A profile ready to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledProfile {
    /// `Profile/name` or `Restrictions/name`.
    pub key: String,
    pub origin: ProfileOrigin,
    pub name: String,
    /// Top-level PayloadIdentifier: what devices list in ProfileList and RemoveProfile takes.
    pub identifier: String,
    /// Top-level PayloadUUID.
    pub uuid: String,
    pub mobileconfig: Arc<Vec<u8>>,
    /// Hex SHA-256 of `mobileconfig`.
    pub hash: String,
    pub groups: Vec<String>,
    pub removal_policy: RemovalPolicy,
    pub sign: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicySnapshot {
    /// Identifies the source content (a commit SHA for git, a content hash for a directory).
    pub revision: String,
    pub groups: BTreeMap<String, DeviceGroupSpec>,
    /// By `key`.
    pub profiles: BTreeMap<String, CompiledProfile>,
    pub labels_by_serial: BTreeMap<String, BTreeMap<String, String>>,
    pub labels_by_udid: BTreeMap<String, BTreeMap<String, String>>,
    /// Declared device actions, by `key` (`DeviceAction/name`).
    pub actions: BTreeMap<String, super::actions::DeclaredAction>,
    /// Warnings found while building (errors prevent a snapshot).
    pub warnings: Vec<Problem>,
}

impl PolicySnapshot {
    /// The compiled profiles a device should carry.
    pub fn desired_for(&self, device: &selector::DeviceAttributes) -> Vec<&CompiledProfile> {
        let member_of: BTreeSet<&str> = self
            .groups
            .iter()
            .filter(|(_, g)| selector::is_member(g, device))
            .map(|(n, _)| n.as_str())
            .collect();
        self.profiles
            .values()
            .filter(|p| p.groups.iter().any(|g| member_of.contains(g.as_str())))
            .collect()
    }

    /// Labels declared in policy for a device.
    pub fn declared_labels(&self, serial: Option<&str>, udid: &str) -> BTreeMap<String, String> {
        let mut labels = serial
            .and_then(|s| self.labels_by_serial.get(s))
            .cloned()
            .unwrap_or_default();
        if let Some(by_udid) = self.labels_by_udid.get(udid) {
            labels.extend(by_udid.clone());
        }
        labels
    }
}

/// Builds a snapshot from parsed documents. `files` reads what a document names
/// (`mobileconfigFile`, `pin.file`). Returns every problem; any error means no snapshot.
pub fn build(
    docs: &Documents,
    files: &dyn PolicyFiles,
    revision: String,
) -> Result<PolicySnapshot, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut snapshot = PolicySnapshot {
        revision,
        ..PolicySnapshot::default()
    };
    check_names(docs, &mut problems);

    for group in &docs.groups {
        check_group(group, &mut problems);
        snapshot
            .groups
            .insert(group.name().to_string(), group.doc.spec.clone());
    }
    let group_names: BTreeSet<&str> = docs.groups.iter().map(|g| g.name()).collect();
    let check_refs = |title: &Located<()>, groups: &[String], problems: &mut Vec<Problem>| {
        if groups.is_empty() {
            problems.push(title.problem(
                Severity::Error,
                "spec.groups is empty: name at least one DeviceGroup",
            ));
        }
        for g in groups {
            if !group_names.contains(g.as_str()) {
                problems.push(title.problem(
                    Severity::Error,
                    format!(
                        "spec.groups: DeviceGroup {g:?} is not declared (declared: {})",
                        if group_names.is_empty() {
                            "none".to_string()
                        } else {
                            group_names.iter().copied().collect::<Vec<_>>().join(", ")
                        }
                    ),
                ));
            }
        }
    };

    for profile in &docs.profiles {
        check_refs(&header(profile), &profile.doc.spec.groups, &mut problems);
        match compile_profile(profile, files) {
            Ok(compiled) => {
                let platforms = targeted_platforms(docs, &profile.doc.spec.groups);
                let structured = profile.doc.spec.payloads.is_some();
                for (index, payload_type, content) in payloads_of(&compiled.mobileconfig) {
                    let place = if structured {
                        format!("spec.payloads[{index}]")
                    } else {
                        format!("PayloadContent[{index}]")
                    };
                    for warning in
                        super::payload_schema::check_payload(&payload_type, &content, &platforms)
                    {
                        problems.push(
                            profile.problem(Severity::Warning, format!("{place}: {warning}")),
                        );
                    }
                }
                snapshot.profiles.insert(compiled.key.clone(), compiled);
            }
            Err(problem) => problems.push(problem),
        }
    }
    for restrictions in &docs.restrictions {
        check_refs(
            &header(restrictions),
            &restrictions.doc.spec.groups,
            &mut problems,
        );
        let compiled = compile_restrictions(restrictions);
        if let Err(errors) = restrictions.doc.spec.settings.validate() {
            for error in errors {
                problems
                    .push(restrictions.problem(Severity::Error, format!("spec.settings: {error}")));
            }
        }
        // Warn only about platforms the targeted groups can contain.
        let platforms = targeted_platforms(docs, &restrictions.doc.spec.groups);
        for platform in platforms {
            for warning in restrictions.doc.spec.settings.warnings_for(platform) {
                problems.push(restrictions.problem(Severity::Warning, warning));
            }
        }
        match compiled {
            Ok(compiled) => {
                snapshot.profiles.insert(compiled.key.clone(), compiled);
            }
            Err(problem) => problems.push(problem),
        }
    }
    check_identifiers(&snapshot, docs, &mut problems);

    for labels in &docs.labels {
        for (index, device) in labels.doc.spec.devices.iter().enumerate() {
            match (&device.serial_number, &device.udid) {
                (Some(serial), _) => {
                    snapshot
                        .labels_by_serial
                        .entry(serial.clone())
                        .or_default()
                        .extend(device.labels.clone());
                }
                (None, Some(udid)) => {
                    snapshot
                        .labels_by_udid
                        .entry(udid.clone())
                        .or_default()
                        .extend(device.labels.clone());
                }
                (None, None) => problems.push(labels.problem(
                    Severity::Error,
                    format!("spec.devices[{index}]: give serialNumber or udid"),
                )),
            }
            for key in device.labels.keys() {
                if selector::INVENTORY_LABELS.contains(&key.as_str()) {
                    problems.push(labels.problem(
                        Severity::Error,
                        format!("spec.devices[{index}].labels: {key} is an inventory attribute and cannot be set"),
                    ));
                }
            }
        }
    }

    for action in &docs.actions {
        match super::actions::compile(action, files, &docs.secrets, &group_names) {
            Ok(compiled) => {
                snapshot.actions.insert(compiled.key.clone(), compiled);
            }
            Err(found) => problems.extend(found),
        }
    }

    let (errors, warnings): (Vec<_>, Vec<_>) = problems
        .into_iter()
        .partition(|p| p.severity == Severity::Error);
    if !errors.is_empty() {
        let mut all = errors;
        all.extend(warnings);
        return Err(all);
    }
    snapshot.warnings = warnings;
    Ok(snapshot)
}

/// The platforms the members of some groups can have.
fn targeted_platforms(docs: &Documents, groups: &[String]) -> BTreeSet<Platform> {
    groups
        .iter()
        .filter_map(|g| docs.groups.iter().find(|d| d.name() == g))
        .flat_map(|g| possible_platforms(&g.doc.spec))
        .collect()
}

/// The payloads of a profile: (index, PayloadType, the payload's keys).
fn payloads_of(profile: &[u8]) -> Vec<(usize, String, Dictionary)> {
    let Ok(top) = crate::protocol::bounded::decode_into::<Dictionary>(profile) else {
        return Vec::new();
    };
    top.get("PayloadContent")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(index, payload)| {
            let dict = payload.as_dictionary()?;
            let kind = dict.get("PayloadType")?.as_string()?.to_string();
            Some((index, kind, dict.clone()))
        })
        .collect()
}

/// The platforms a group's members can have: narrowed by a platform selector, otherwise all
/// (explicit serial/UDID lists can name any device).
pub fn possible_platforms(group: &DeviceGroupSpec) -> BTreeSet<Platform> {
    let all: BTreeSet<Platform> = Platform::ALL.into_iter().collect();
    if !group.serial_numbers.is_empty() || !group.udids.is_empty() {
        return all;
    }
    let Some(selector) = &group.selector else {
        return all;
    };
    let mut possible = all;
    if let Some(p) = selector.match_labels.get(selector::LABEL_PLATFORM) {
        possible.retain(|x| x.as_str() == p);
    }
    for req in &selector.match_expressions {
        if req.key != selector::LABEL_PLATFORM {
            continue;
        }
        match req.operator {
            SelectorOperator::In => possible.retain(|x| req.values.iter().any(|v| v == x.as_str())),
            SelectorOperator::NotIn => {
                possible.retain(|x| !req.values.iter().any(|v| v == x.as_str()))
            }
            _ => {}
        }
    }
    possible
}

fn header<S>(doc: &Located<S>) -> Located<()> {
    Located {
        file: doc.file.clone(),
        line: doc.line,
        fields: doc.fields.clone(),
        doc: Document {
            api_version: doc.doc.api_version.clone(),
            kind: doc.doc.kind.clone(),
            metadata: doc.doc.metadata.clone(),
            spec: (),
        },
    }
}

/// Lowercase alphanumerics, '-' and '.', starting and ending alphanumeric, at most 253
/// characters: Kubernetes object names, so the same documents work as custom resources.
pub fn is_valid_name(name: &str) -> bool {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    !name.is_empty()
        && name.len() <= 253
        && ok_chars
        && ends_ok(name.chars().next())
        && ends_ok(name.chars().last())
}

fn check_names(docs: &Documents, problems: &mut Vec<Problem>) {
    let mut seen: BTreeMap<String, (String, usize)> = BTreeMap::new();
    let all = docs
        .groups
        .iter()
        .map(header)
        .chain(docs.profiles.iter().map(header))
        .chain(docs.restrictions.iter().map(header))
        .chain(docs.labels.iter().map(header))
        .chain(docs.actions.iter().map(header));
    for doc in all {
        if !is_valid_name(doc.name()) {
            problems.push(doc.problem(
                Severity::Error,
                format!(
                    "metadata.name {:?} must be lowercase letters, digits, '-' or '.', starting and ending with a letter or digit",
                    doc.name()
                ),
            ));
        }
        let key = doc.title();
        if let Some((file, line)) = seen.get(&key) {
            problems.push(doc.problem(
                Severity::Error,
                format!("declared twice: also at {file}:{line}"),
            ));
        } else {
            seen.insert(key, (doc.file.clone(), doc.line));
        }
    }
}

fn check_group(group: &Located<DeviceGroupSpec>, problems: &mut Vec<Problem>) {
    let spec = &group.doc.spec;
    if spec.selector.is_none() && spec.serial_numbers.is_empty() && spec.udids.is_empty() {
        problems.push(group.problem(
            Severity::Error,
            "spec needs a selector, serialNumbers or udids (use `selector: {}` for every device)",
        ));
    }
    let Some(selector) = &spec.selector else {
        return;
    };
    for (i, req) in selector.match_expressions.iter().enumerate() {
        let at = format!("spec.selector.matchExpressions[{i}]");
        let message = match req.operator {
            SelectorOperator::In | SelectorOperator::NotIn if req.values.is_empty() => {
                Some(format!("{at}: {:?} needs at least one value", req.operator))
            }
            SelectorOperator::Exists | SelectorOperator::DoesNotExist if !req.values.is_empty() => {
                Some(format!("{at}: {:?} takes no values", req.operator))
            }
            SelectorOperator::VersionAtLeast | SelectorOperator::VersionBelow => {
                match req.values.as_slice() {
                    [v] if selector::is_version(v) => None,
                    _ => Some(format!(
                        "{at}: {:?} takes exactly one dotted version such as \"17.4\"",
                        req.operator
                    )),
                }
            }
            _ => None,
        };
        if let Some(message) = message {
            problems.push(group.problem(Severity::Error, message));
        }
        if req.key == selector::LABEL_PLATFORM {
            for v in &req.values {
                if Platform::parse(v).is_none() {
                    problems.push(group.problem(
                        Severity::Error,
                        format!(
                            "{at}: unknown platform {v:?} (one of iOS, iPadOS, macOS, tvOS, visionOS, watchOS)"
                        ),
                    ));
                }
            }
        }
    }
}

fn check_identifiers(snapshot: &PolicySnapshot, docs: &Documents, problems: &mut Vec<Problem>) {
    let mut by_identifier: BTreeMap<&str, &str> = BTreeMap::new();
    for profile in snapshot.profiles.values() {
        if let Some(other) = by_identifier.insert(&profile.identifier, &profile.key) {
            let (file, line) = locate(docs, &profile.key);
            problems.push(Problem {
                severity: Severity::Error,
                file,
                line,
                document: Some(profile.key.clone()),
                message: format!(
                    "PayloadIdentifier {:?} is also used by {other}: devices would replace one with the other",
                    profile.identifier
                ),
            });
        }
    }
}

fn locate(docs: &Documents, key: &str) -> (String, usize) {
    docs.profiles
        .iter()
        .map(header)
        .chain(docs.restrictions.iter().map(header))
        .find(|d| d.title() == key)
        .map(|d| (d.file, d.line))
        .unwrap_or_default()
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A UUID derived from content, so recompiling gives the same profile bytes.
pub fn stable_uuid(seed: &[u8]) -> String {
    let digest = sha2::Sha256::digest(seed);
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
        .to_uppercase()
}

/// The top-level PayloadIdentifier of a Profile assembled from `spec.payloads`.
fn assembled_identifier(name: &str, spec: &ProfileSpec) -> String {
    spec.identifier
        .clone()
        .unwrap_or_else(|| format!("dev.pomona.{name}"))
}

/// The top-level PayloadIdentifier of the Restrictions document `name`.
pub fn restrictions_identifier(name: &str) -> String {
    format!("dev.pomona.restrictions.{name}")
}

/// The PayloadIdentifier a Profile document compiles to, told without compiling it (so that
/// a source can settle who owns an identifier before building): `spec.identifier` or
/// `dev.pomona.<name>` for payloads, the profile's own for an inline mobileconfig. None when
/// it cannot be told here (a file, or content the build will refuse).
pub fn profile_identifier(name: &str, spec: &ProfileSpec) -> Option<String> {
    if let Some(inline) = &spec.mobileconfig {
        return profile_identity(inline.as_bytes()).ok().map(|(id, _)| id);
    }
    spec.payloads
        .is_some()
        .then(|| assembled_identifier(name, spec))
}

fn compile_profile(
    profile: &Located<ProfileSpec>,
    files: &dyn PolicyFiles,
) -> Result<CompiledProfile, Problem> {
    let spec = &profile.doc.spec;
    let sources = [
        spec.mobileconfig.is_some(),
        spec.mobileconfig_file.is_some(),
        spec.payloads.is_some(),
    ]
    .iter()
    .filter(|s| **s)
    .count();
    if sources != 1 {
        return Err(profile.problem(
            Severity::Error,
            "give exactly one of spec.mobileconfig, spec.mobileconfigFile or spec.payloads",
        ));
    }
    let bytes = if let Some(inline) = &spec.mobileconfig {
        inline.as_bytes().to_vec()
    } else if let Some(relative) = &spec.mobileconfig_file {
        files
            .read(relative, "spec.mobileconfigFile")
            .map_err(|refused| profile.problem(Severity::Error, refused.to_string()))?
    } else {
        let payloads = spec.payloads.as_deref().unwrap_or_default();
        let identifier = assembled_identifier(profile.name(), spec);
        let display = spec
            .display_name
            .clone()
            .unwrap_or_else(|| profile.name().to_string());
        let mut contents = Vec::new();
        for (index, payload) in payloads.iter().enumerate() {
            let mut dict = Dictionary::new();
            for (key, value) in &payload.content {
                if key.starts_with("Payload") {
                    return Err(profile.problem(
                        Severity::Error,
                        format!("spec.payloads[{index}].content.{key}: Payload* keys are set by Pomona (use payloadType / identifier)"),
                    ));
                }
                let value = json_to_plist(value).map_err(|m| {
                    profile.problem(
                        Severity::Error,
                        format!("spec.payloads[{index}].content.{key}: {m}"),
                    )
                })?;
                dict.insert(key.clone(), value);
            }
            let payload_id = payload
                .identifier
                .clone()
                .unwrap_or_else(|| format!("{identifier}.{index}"));
            contents.push((payload.payload_type.clone(), payload_id, dict));
        }
        if contents.is_empty() {
            return Err(profile.problem(Severity::Error, "spec.payloads is empty"));
        }
        assemble(&identifier, &display, contents)
    };
    compiled(
        profile,
        ProfileOrigin::Profile,
        bytes,
        &spec.groups,
        spec.removal_policy,
        spec.sign,
    )
}

/// The compiled form of a document's profile bytes (checked to be a profile).
fn compiled<S>(
    doc: &Located<S>,
    origin: ProfileOrigin,
    bytes: Vec<u8>,
    groups: &[String],
    removal_policy: RemovalPolicy,
    sign: bool,
) -> Result<CompiledProfile, Problem> {
    let (identifier, uuid) = profile_identity(&bytes)
        .map_err(|m| doc.problem(Severity::Error, format!("the profile is not usable: {m}")))?;
    Ok(CompiledProfile {
        key: doc.title(),
        origin,
        name: doc.name().to_string(),
        identifier,
        uuid,
        hash: hex_sha256(&bytes),
        mobileconfig: Arc::new(bytes),
        groups: groups.to_vec(),
        removal_policy,
        sign,
    })
}

fn compile_restrictions(doc: &Located<RestrictionsSpec>) -> Result<CompiledProfile, Problem> {
    let spec = &doc.doc.spec;
    let content = RestrictionSettings::to_payload_content(&spec.settings);
    if content.is_empty() {
        return Err(doc.problem(Severity::Error, "spec.settings sets nothing"));
    }
    let identifier = restrictions_identifier(doc.name());
    let bytes = assemble(
        &identifier,
        &format!("Restrictions: {}", doc.name()),
        vec![(
            "com.apple.applicationaccess".to_string(),
            format!("{identifier}.applicationaccess"),
            content,
        )],
    );
    compiled(
        doc,
        ProfileOrigin::Restrictions,
        bytes,
        &spec.groups,
        spec.removal_policy,
        false,
    )
}

/// Builds a .mobileconfig whose UUIDs derive from its content.
fn assemble(
    identifier: &str,
    display: &str,
    payloads: Vec<(String, String, Dictionary)>,
) -> Vec<u8> {
    let mut items = Vec::new();
    for (payload_type, payload_id, mut dict) in payloads {
        let seed = crate::protocol::to_xml(&Value::Dictionary(dict.clone()));
        dict.insert("PayloadType".into(), Value::String(payload_type));
        dict.insert("PayloadVersion".into(), Value::Integer(1.into()));
        dict.insert(
            "PayloadUUID".into(),
            Value::String(stable_uuid(&[payload_id.as_bytes(), &seed].concat())),
        );
        dict.insert("PayloadIdentifier".into(), Value::String(payload_id));
        items.push(Value::Dictionary(dict));
    }
    let body = crate::protocol::to_xml(&Value::Array(items.clone()));
    let mut top = Dictionary::new();
    top.insert("PayloadType".into(), Value::String("Configuration".into()));
    top.insert("PayloadVersion".into(), Value::Integer(1.into()));
    top.insert("PayloadIdentifier".into(), Value::String(identifier.into()));
    top.insert(
        "PayloadUUID".into(),
        Value::String(stable_uuid(
            &[identifier.as_bytes(), display.as_bytes(), &body].concat(),
        )),
    );
    top.insert("PayloadDisplayName".into(), Value::String(display.into()));
    top.insert("PayloadOrganization".into(), Value::String("Pomona".into()));
    top.insert("PayloadContent".into(), Value::Array(items));
    crate::protocol::to_xml(&Value::Dictionary(top))
}

/// Why bytes are not a configuration profile Pomona can manage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAProfile {
    #[error("not a plist dictionary ({0})")]
    NotADictionary(String),
    #[error("PayloadType must be \"Configuration\"")]
    NotAConfiguration,
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("PayloadContent must be an array of payloads")]
    ContentNotAnArray,
}

/// (PayloadIdentifier, PayloadUUID) of a profile, checking it is one.
pub fn profile_identity(bytes: &[u8]) -> Result<(String, String), NotAProfile> {
    let top: Dictionary = crate::protocol::bounded::decode_into(bytes)
        .map_err(|e| NotAProfile::NotADictionary(e.to_string()))?;
    let text = |key: &'static str| {
        top.get(key)
            .and_then(Value::as_string)
            .map(str::to_string)
            .ok_or(NotAProfile::Missing(key))
    };
    if text("PayloadType").ok().as_deref() != Some("Configuration") {
        return Err(NotAProfile::NotAConfiguration);
    }
    let identifier = text("PayloadIdentifier")?;
    let uuid = text("PayloadUUID")?;
    if !matches!(top.get("PayloadContent"), Some(Value::Array(_))) {
        return Err(NotAProfile::ContentNotAnArray);
    }
    Ok((identifier, uuid))
}

/// Why a payload value declared in YAML has no plist form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotPlist {
    #[error("null is not a plist value")]
    Null,
    #[error("base64 must be a string")]
    Base64NotText,
    #[error("base64 value is not valid base64")]
    BadBase64,
    /// Inside a dictionary, under `key`.
    #[error("{key}: {inner}")]
    Under { key: String, inner: Box<NotPlist> },
}

/// JSON (from YAML) to plist: strings, booleans, integers, reals, arrays, dictionaries, and
/// `{ base64: … }` for data.
fn json_to_plist(value: &serde_json::Value) -> Result<Value, NotPlist> {
    use serde_json::Value as J;
    Ok(match value {
        J::Null => return Err(NotPlist::Null),
        J::Bool(b) => Value::Boolean(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i.into()),
            None => Value::Real(n.as_f64().unwrap_or_default()),
        },
        J::String(s) => Value::String(s.clone()),
        J::Array(items) => Value::Array(items.iter().map(json_to_plist).collect::<Result<_, _>>()?),
        J::Object(map) if map.len() == 1 && map.contains_key("base64") => {
            use base64::Engine as _;
            let text = map["base64"].as_str().ok_or(NotPlist::Base64NotText)?;
            let compact: String = text.split_ascii_whitespace().collect();
            Value::Data(
                base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .map_err(|_| NotPlist::BadBase64)?,
            )
        }
        J::Object(map) => {
            let mut dict = Dictionary::new();
            for (k, v) in map {
                let value = json_to_plist(v).map_err(|inner| NotPlist::Under {
                    key: k.clone(),
                    inner: Box::new(inner),
                })?;
                dict.insert(k.clone(), value);
            }
            Value::Dictionary(dict)
        }
    })
}
