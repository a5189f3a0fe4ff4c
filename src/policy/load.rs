//! Reading policy documents from YAML text: splitting files into documents (`---`), recognising
//! `apiVersion`/`kind`, and deserialising each into its typed form with problems located as
//! `file:line`. Semantic checks (references, content) live in `validate.rs`.

use super::model::*;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::fmt;

/// How bad a problem is: errors make a snapshot invalid, warnings are reported and served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem, located in the policy source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    pub file: String,
    pub line: usize,
    /// `Kind/name` of the document, when known.
    pub document: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}:{}: {level}: ", self.file, self.line)?;
        if let Some(doc) = &self.document {
            write!(f, "{doc}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// A document with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Located<S> {
    pub file: String,
    pub line: usize,
    pub doc: Document<S>,
    /// Where the document's fields are in the file (none for custom resources).
    pub fields: super::field_lines::FieldLines,
}

impl<S> Located<S> {
    pub fn name(&self) -> &str {
        &self.doc.metadata.name
    }

    /// `Kind/name`, as problems name documents.
    pub fn title(&self) -> String {
        format!("{}/{}", self.doc.kind, self.doc.metadata.name)
    }

    pub fn problem(&self, severity: Severity, message: impl Into<String>) -> Problem {
        let message = message.into();
        Problem {
            severity,
            file: self.file.clone(),
            // At the field the message is about, when the document's text shows where it is.
            line: self.fields.line_of_message(&message).unwrap_or(self.line),
            document: Some(self.title()),
            message,
        }
    }
}

/// Every document of a policy source, by kind, in source order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Documents {
    pub groups: Vec<Located<DeviceGroupSpec>>,
    pub profiles: Vec<Located<ProfileSpec>>,
    pub restrictions: Vec<Located<RestrictionsSpec>>,
    pub labels: Vec<Located<DeviceLabelsSpec>>,
    pub actions: Vec<Located<DeviceActionSpec>>,
    /// Values of the Kubernetes Secrets DeviceActions refer to (the Kubernetes source only).
    pub secrets: super::actions::SecretValues,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    kind: Option<String>,
}

/// Parses every document of one YAML file into `into`; problems are appended to `problems`.
pub fn parse_file(file: &str, text: &str, into: &mut Documents, problems: &mut Vec<Problem>) {
    for (first_line, body) in split_documents(text) {
        let located = |line: usize, message: String| Problem {
            severity: Severity::Error,
            file: file.to_string(),
            line,
            document: None,
            message,
        };
        let envelope: Envelope = match serde_saphyr::from_str(&body) {
            Ok(e) => e,
            Err(e) => {
                let (line, message) = describe(&e);
                problems.push(located(first_line + line - 1, message));
                continue;
            }
        };
        let Some(kind) = envelope.kind else {
            problems.push(located(
                first_line,
                format!("document has no `kind` (one of {})", KINDS.join(", ")),
            ));
            continue;
        };
        match envelope.api_version.as_deref() {
            Some(API_VERSION) => {}
            Some(other) => {
                problems.push(located(
                    first_line,
                    format!("apiVersion {other:?} is not supported: use {API_VERSION}"),
                ));
                continue;
            }
            None => {
                problems.push(located(
                    first_line,
                    format!("document has no apiVersion: add `apiVersion: {API_VERSION}`"),
                ));
                continue;
            }
        }
        let result = match kind.as_str() {
            "DeviceGroup" => typed(file, first_line, &body).map(|d| into.groups.push(d)),
            "Profile" => typed(file, first_line, &body).map(|d| into.profiles.push(d)),
            "Restrictions" => typed(file, first_line, &body).map(|d| into.restrictions.push(d)),
            "DeviceLabels" => typed(file, first_line, &body).map(|d| into.labels.push(d)),
            "DeviceAction" => typed(file, first_line, &body).map(|d| into.actions.push(d)),
            other => Err(vec![located(
                first_line,
                format!(
                    "unknown kind {other:?}: expected one of {}",
                    KINDS.join(", ")
                ),
            )]),
        };
        if let Err(found) = result {
            for mut problem in found {
                problem.document = Some(kind.clone());
                problems.push(problem);
            }
        }
    }
}

fn typed<S: DeserializeOwned>(
    file: &str,
    first_line: usize,
    body: &str,
) -> Result<Located<S>, Vec<Problem>> {
    let fields = super::field_lines::FieldLines::scan(body, first_line);
    let error = match serde_saphyr::from_str::<Document<S>>(body) {
        Ok(doc) => {
            return Ok(Located {
                file: file.to_string(),
                line: first_line,
                doc,
                fields,
            })
        }
        Err(e) => e,
    };
    let problem = |line: usize, message: String| Problem {
        severity: Severity::Error,
        file: file.to_string(),
        line,
        document: None,
        message,
    };
    let (line, message) = describe(&error);
    let mut found = vec![problem(first_line + line - 1, message.clone())];
    // A misspelt field stops the parser at the first one; name the others too, each at its line,
    // until an error of another kind (a required field missing once a typo is taken out) ends
    // the search.
    let Ok(mut value) = serde_saphyr::from_str::<serde_json::Value>(body) else {
        return Err(found);
    };
    let mut unknown = unknown_field(&message).map(str::to_string);
    for _ in 0..MORE_UNKNOWN_FIELDS {
        let Some(path) = unknown
            .as_deref()
            .and_then(|name| remove_key(&mut value, name, ""))
        else {
            break;
        };
        match serde_json::from_value::<Document<S>>(value.clone()) {
            Ok(_) => break,
            Err(e) => {
                let message = e.to_string();
                unknown = unknown_field(&message).map(str::to_string);
                let Some(name) = unknown.as_deref() else {
                    break; // another kind of error: the first one said enough
                };
                let line = fields
                    .line_of_message(&guess_path(&value, name, &path))
                    .unwrap_or(first_line);
                found.push(problem(line, first_sentence(&message)));
            }
        }
    }
    // The re-read value visits keys in name order: show the others in file order.
    found[1..].sort_by_key(|p| p.line);
    Err(found)
}

/// How many further misspelt fields of one document are named after the first.
const MORE_UNKNOWN_FIELDS: usize = 20;

/// The field named by an "unknown field `x`, expected …" message.
fn unknown_field(message: &str) -> Option<&str> {
    message
        .split_once("unknown field `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(name, _)| name)
}

/// The message up to serde's position suffix (" at line 1 column 2"), which refers to no file.
fn first_sentence(message: &str) -> String {
    message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .to_string()
}

/// Removes the first key `name` found depth-first in `value`; returns its dotted path.
fn remove_key(value: &mut serde_json::Value, name: &str, here: &str) -> Option<String> {
    let join = |key: &str| {
        if here.is_empty() {
            key.to_string()
        } else {
            format!("{here}.{key}")
        }
    };
    match value {
        serde_json::Value::Object(map) => {
            if map.remove(name).is_some() {
                return Some(join(name));
            }
            map.iter_mut()
                .find_map(|(key, child)| remove_key(child, name, &join(key)))
        }
        serde_json::Value::Array(items) => items
            .iter_mut()
            .enumerate()
            .find_map(|(i, child)| remove_key(child, name, &format!("{here}[{i}]"))),
        _ => None,
    }
}

/// The dotted path of the next unknown field `name` (still in `value`), for its line; `removed`
/// (the previous one's path) when it cannot be found.
fn guess_path(value: &serde_json::Value, name: &str, removed: &str) -> String {
    let mut copy = value.clone();
    remove_key(&mut copy, name, "").unwrap_or_else(|| removed.to_string())
}

/// (line within the document, one-line message) of a YAML error.
fn describe(e: &serde_saphyr::Error) -> (usize, String) {
    let line = e
        .location()
        .map(|l| l.line() as usize)
        .filter(|l| *l > 0)
        .unwrap_or(1);
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    // "error: line 4 column 3: unknown field …" → "unknown field …"
    let message = first
        .strip_prefix("error: ")
        .unwrap_or(first)
        .split_once(": ")
        .filter(|(prefix, _)| prefix.starts_with("line "))
        .map(|(_, rest)| rest)
        .unwrap_or(first)
        .to_string();
    (line, message)
}

/// Splits a YAML stream at `---` lines into (first line number, text) of non-empty documents.
/// Line numbers stay those of the file (the text keeps no leading lines, so the parser's
/// line 1 is `first line`).
pub fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let is_marker = line == "---" || line.starts_with("--- ") || line == "...";
        if is_marker {
            push_document(&mut out, start, &mut current);
            start = number + 1;
            continue;
        }
        if current.is_empty() && line.trim().is_empty() {
            start = number + 1;
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    push_document(&mut out, start, &mut current);
    out
}

fn push_document(out: &mut Vec<(usize, String)>, start: usize, current: &mut String) {
    let has_content = current
        .lines()
        .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    if has_content {
        out.push((start, std::mem::take(current)));
    } else {
        current.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Documents, Vec<Problem>) {
        let mut docs = Documents::default();
        let mut problems = Vec::new();
        parse_file("policies/a.yaml", text, &mut docs, &mut problems);
        (docs, problems)
    }

    #[test]
    fn documents_are_split_with_their_file_line_numbers() {
        let text = "# comment\n\n---\napiVersion: mdm.pomona.dev/v1alpha1\nkind: DeviceGroup\nmetadata:\n  name: a\nspec:\n  serialNumbers: [X]\n---\n---\napiVersion: mdm.pomona.dev/v1alpha1\nkind: DeviceGroup\nmetadata:\n  name: b\nspec:\n  udids: [U]\n";
        let (docs, problems) = parse(text);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(docs.groups.len(), 2);
        assert_eq!(docs.groups[0].line, 4);
        assert_eq!(docs.groups[1].line, 12);
    }

    #[test]
    fn every_misspelt_field_of_a_document_is_named_at_its_line() {
        let text = "apiVersion: mdm.pomona.dev/v1alpha1\nkind: Profile\nmetadata:\n  name: wifi\nspec:\n  grups: [all]\n  removalPolcy: Keep\n  payloads:\n  - payloadType: com.apple.wifi.managed\n    content: {}\n    identifer: x\n";
        let (_, problems) = parse(text);
        let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(
            lines[0].starts_with("policies/a.yaml:6: error: Profile: unknown field `grups`"),
            "{lines:#?}"
        );
        assert!(
            lines[1].starts_with("policies/a.yaml:7: error: Profile: unknown field `removalPolcy`"),
            "{lines:#?}"
        );
        assert!(
            lines[2].starts_with("policies/a.yaml:11: error: Profile: unknown field `identifer`"),
            "{lines:#?}"
        );
        // serde's position inside the re-read value refers to no file: it is not shown.
        assert!(lines.iter().all(|l| !l.contains(" at line ")), "{lines:#?}");
    }

    #[test]
    fn problems_name_file_line_document_and_fix() {
        let text = "apiVersion: mdm.pomona.dev/v1alpha1\nkind: Profile\nmetadata:\n  name: wifi\nspec:\n  groups: [all]\n  removalPolcy: Keep\n---\nkind: DeviceGroup\nmetadata: {name: x}\nspec: {}\n---\napiVersion: v1\nkind: DeviceGroup\n---\napiVersion: mdm.pomona.dev/v1alpha1\nkind: Gadget\n";
        let (_, problems) = parse(text);
        let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(
            lines[0].starts_with("policies/a.yaml:7: error: Profile: unknown field `removalPolcy`"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with("policies/a.yaml:9: error:")
                && lines[1].contains("add `apiVersion: mdm.pomona.dev/v1alpha1`"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].contains(":13:") && lines[2].contains("\"v1\" is not supported"),
            "{}",
            lines[2]
        );
        assert!(
            lines[3].contains(":16:") && lines[3].contains("unknown kind \"Gadget\""),
            "{}",
            lines[3]
        );
    }

    #[test]
    fn yaml_syntax_errors_are_located() {
        let (_, problems) = parse("apiVersion: mdm.pomona.dev/v1alpha1\nkind: DeviceGroup\nmetadata:\n  name: [unclosed\n");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, 4, "{}", problems[0]);
    }
}
