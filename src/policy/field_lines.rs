//! Where each field of a YAML policy document is, so that a problem found after parsing
//! ("spec.target.group: DeviceGroup \"x\" is not declared") points at the line of that field
//! rather than at the document's first line. A scan of block-style YAML keys and list items, not
//! a parser: a field it cannot place (inside a flow mapping such as `{a: b}`) gets the line of
//! the nearest enclosing field it can. Custom resources have no text and no lines.

use std::collections::HashMap;
use std::sync::Arc;

/// Dotted field paths (`spec.payloads[0].content`) and the file lines they start on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldLines(Arc<HashMap<String, usize>>);

impl FieldLines {
    /// The fields of a document whose text starts at `first_line` of its file.
    pub fn scan(body: &str, first_line: usize) -> Self {
        // (indent, segment): a key, or `[n]` for the n-th item of a list.
        let mut stack: Vec<(usize, String)> = Vec::new();
        let mut items: HashMap<String, usize> = HashMap::new();
        let mut lines = HashMap::new();
        for (offset, raw) in body.lines().enumerate() {
            let trimmed = raw.trim_start_matches(' ');
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("---") {
                continue;
            }
            let mut indent = raw.len() - trimmed.len();
            let mut rest = trimmed;
            while let Some(after) = rest
                .strip_prefix("- ")
                .or(rest.strip_prefix('-').filter(|a| a.is_empty()))
            {
                // A list item belongs to the key above it, even at that key's own indent.
                while stack.last().is_some_and(|(i, segment)| {
                    *i > indent || (*i == indent && segment.starts_with('['))
                }) {
                    stack.pop();
                }
                let list = path(&stack);
                let n = items.entry(list).or_insert(0);
                stack.push((indent, format!("[{n}]")));
                *n += 1;
                lines.entry(path(&stack)).or_insert(first_line + offset);
                indent += 2;
                rest = after.trim_start_matches(' ');
            }
            if let Some(key) = key_of(rest) {
                while stack.last().is_some_and(|(i, _)| *i >= indent) {
                    stack.pop();
                }
                stack.push((indent, key.to_string()));
                lines.entry(path(&stack)).or_insert(first_line + offset);
            }
        }
        Self(Arc::new(lines))
    }

    /// The line of the field a message starts with (`spec.target.group: …`, or
    /// `spec.mobileconfigFile "x" …`), or of the nearest enclosing field the scan placed.
    pub fn line_of_message(&self, message: &str) -> Option<usize> {
        let field = message
            .split(|c: char| c == ':' || c.is_whitespace())
            .next()
            .filter(|f| f.starts_with("spec") || f.starts_with("metadata"))?;
        let mut candidate = field;
        loop {
            if let Some(line) = self.0.get(candidate) {
                return Some(*line);
            }
            let cut = candidate.rfind(['.', '['])?;
            candidate = &candidate[..cut];
        }
    }
}

fn path(stack: &[(usize, String)]) -> String {
    let mut out = String::new();
    for (_, segment) in stack {
        if !out.is_empty() && !segment.starts_with('[') {
            out.push('.');
        }
        out.push_str(segment);
    }
    out
}

/// The key of a `key: value` or `key:` line (plain or quoted), if the line is one.
fn key_of(rest: &str) -> Option<&str> {
    let (key, after) = rest.split_once(':')?;
    if !(after.is_empty() || after.starts_with(' ')) {
        return None;
    }
    let key = key.trim_matches(|c| c == '"' || c == '\'');
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'));
    plain.then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
apiVersion: mdm.pomona.dev/v1alpha1
kind: Profile
metadata:
  name: wifi
spec:
  groups:
  - staff
  payloads:
    - payloadType: com.apple.wifi.managed
      content:
        SSID_STR: Office
    - payloadType: com.apple.applicationaccess
      content: {allowCamera: false}
  target: {group: g}
";

    #[test]
    fn fields_are_found_at_their_lines_with_list_items_counted() {
        let fields = FieldLines::scan(DOC, 10);
        let line = |m: &str| fields.line_of_message(m);
        assert_eq!(line("metadata.name: too long"), Some(13));
        assert_eq!(line("spec.groups: empty"), Some(15));
        assert_eq!(line("spec.payloads[0].content.SSID_STR: null"), Some(20));
        assert_eq!(line("spec.payloads[1].content.allowCamera: x"), Some(22));
        assert_eq!(line("spec.payloads[1].payloadType: unknown"), Some(21));
        assert_eq!(line("spec.payloads[1]: not a payload"), Some(21));
        assert_eq!(line("spec.groups[0]: not declared"), Some(16));
        // Inside a flow mapping: the enclosing field.
        assert_eq!(
            line("spec.target.group: DeviceGroup \"g\" is not declared"),
            Some(23)
        );
        assert_eq!(
            line("spec.mobileconfigFile \"x\" is not a regular file"),
            Some(14)
        );
        // Not about a field.
        assert_eq!(line("the profile is not usable"), None);
        assert_eq!(
            FieldLines::default().line_of_message("spec.groups: x"),
            None
        );
    }
}
