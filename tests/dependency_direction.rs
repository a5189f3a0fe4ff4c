//! The crate's modules import in one direction only: down the layer table below.
//!
//! Every `.rs` file under `src/` is read, comments and string literals are blanked out, and every
//! path that names another part of the crate — `crate::x…` (also `$crate::` in macros and
//! `crate::{x, y}` groups), and `super::…` chains that climb out of the file's top-level module
//! — becomes an edge from the file's top-level module to the module it names. An edge must point
//! to a strictly lower layer; a module that is not in the table fails the test too, so a new
//! module has to be placed before it can land. `src/lib.rs` (the crate root, which assembles
//! `serve` from everything) and `src/main.rs` (the binary, which sees the library from outside)
//! sit above every layer and are not checked.
//!
//! Plain text scanning, no parser crate: it reads what rustfmt'd code looks like, and its own
//! tests below pin what it must catch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layers, bottom to top. A module may import only modules on a strictly lower layer (two
/// modules on one layer must not know each other).
const LAYERS: &[&[&str]] = &[
    // The memory allocator's upkeep (the lanes' runtimes call it when idle).
    &["allocator"],
    // The shared vocabulary (clock, persisted states, small helpers) and leaf utilities.
    &["vocab", "cmdline", "lane", "histogram"],
    // Apple's wire protocol and the cryptography.
    &["protocol", "pki"],
    // Persistence, the declared model with its sources (which publish on a `PolicyFeed`), and
    // the admin API's request and answer types.
    &["store", "policy", "api"],
    // The planner and its driver; APNs push; the retention sweep of finished commands.
    &["reconcile", "push", "retention"],
    // Front doors: HTTPS, the Kubernetes controller, the command-line tools.
    &["server", "controller", "cli"],
    // Configuration, which assembles the layers below it.
    &["config"],
];

/// Modules standing apart from the layers, with the only modules each may import. No module of
/// the crate may import them (the simulator must not share code paths with the server beyond
/// `protocol` and `pki`, and production code must not depend on it).
const APART: &[(&str, &[&str])] = &[("sim", &["protocol", "pki", "cmdline"])];

#[test]
fn imports_only_point_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(!files.is_empty(), "no .rs files under {}", src.display());

    let mut problems = Vec::new();
    let mut seen_modules = std::collections::BTreeSet::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let Some(path) = module_path(relative) else {
            continue; // lib.rs, main.rs
        };
        let from = path[0].clone();
        seen_modules.insert(from.clone());
        let shown = format!("src/{}", relative.display());
        if place(&from).is_none() {
            problems.push(format!(
                "{shown}: the module `{from}` is not in the layer table of \
                 tests/dependency_direction.rs: add it to LAYERS (or APART)"
            ));
            continue;
        }
        let text = std::fs::read_to_string(file).expect("readable source file");
        for edge in edges(&text, path.len()) {
            if edge.to == from {
                continue;
            }
            if let Some(why) = refusal(&from, &edge.to) {
                problems.push(format!(
                    "{shown}:{}: `{from}` -> `{}` ({}): {why}",
                    edge.line, edge.to, edge.path
                ));
            }
        }
    }
    for module in LAYERS
        .iter()
        .flat_map(|layer| layer.iter())
        .chain(APART.iter().map(|(m, _)| m))
    {
        if !seen_modules.contains(*module) {
            problems.push(format!(
                "the layer table names `{module}`, which is not a module under src/: \
                 remove it from the table"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "imports that break the dependency direction (bottom to top: {}; apart: {}):\n  {}\n\
         Move the shared item down (into `vocab` if two layers need it), or invert the call \
         (a trait or channel owned by the lower module).",
        LAYERS
            .iter()
            .map(|layer| layer.join(", "))
            .collect::<Vec<_>>()
            .join(" → "),
        APART
            .iter()
            .map(|(m, may)| format!("{m} sees only {}", may.join(", ")))
            .collect::<Vec<_>>()
            .join("; "),
        problems.join("\n  ")
    );
}

/// Where a module stands.
enum Place {
    Layer(usize),
    Apart(&'static [&'static str]),
}

fn place(module: &str) -> Option<Place> {
    if let Some(layer) = LAYERS.iter().position(|l| l.contains(&module)) {
        return Some(Place::Layer(layer));
    }
    APART
        .iter()
        .find(|(m, _)| *m == module)
        .map(|(_, may)| Place::Apart(may))
}

/// Why the edge `from -> to` is not allowed, or None when it is.
fn refusal(from: &str, to: &str) -> Option<String> {
    let target = match place(to) {
        Some(target) => target,
        None if to == ROOT => {
            return Some("the crate root (src/lib.rs) is above every layer".into());
        }
        None => return Some(format!("`{to}` is not in the layer table")),
    };
    match (place(from)?, target) {
        (_, Place::Apart(_)) => Some(format!("no module may import `{to}`")),
        (Place::Apart(may), _) if may.contains(&to) => None,
        (Place::Apart(may), _) => Some(format!("`{from}` may import only {}", may.join(", "))),
        (Place::Layer(a), Place::Layer(b)) if b < a => None,
        (Place::Layer(a), Place::Layer(b)) => Some(format!(
            "`{from}` is on layer {a} and `{to}` on layer {b}: an import may only point to a \
             lower layer"
        )),
    }
}

/// The target of a `super` chain that climbs to the crate root and names no module.
const ROOT: &str = "<crate root>";

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under src/ (`store/sqlite.rs` → [store, sqlite], `store/mod.rs` →
/// [store]); None for the crate root and the binary.
fn module_path(relative: &Path) -> Option<Vec<String>> {
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop()?;
    let stem = last.strip_suffix(".rs")?.to_string();
    if parts.is_empty() && (stem == "lib" || stem == "main") {
        return None;
    }
    if stem != "mod" {
        parts.push(stem);
    }
    Some(parts)
}

/// One reference from a file to a top-level module of the crate.
#[derive(Debug, PartialEq)]
struct Edge {
    line: usize,
    /// The top-level module named, or `ROOT`.
    to: String,
    /// The path as written, for the message (`crate::config::write_private_file`).
    path: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Other(char),
}

/// Every reference to a top-level module in `text`, a file whose module path is `depth` deep.
fn edges(text: &str, depth: usize) -> Vec<Edge> {
    let tokens = tokenize(&code_only(text));
    let mut out = Vec::new();
    // Inline `mod name { … }` blocks make `super` climb one more level; each entry is the brace
    // depth at which the block opened.
    let mut inline_mods: Vec<usize> = Vec::new();
    let mut braces = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let (line, token) = &tokens[i];
        match token {
            Token::Open => braces += 1,
            Token::Close => {
                braces = braces.saturating_sub(1);
                if inline_mods.last() == Some(&(braces + 1)) {
                    inline_mods.pop();
                }
            }
            Token::Ident(word) if word == "mod" => {
                if let (Some((_, Token::Ident(_))), Some((_, Token::Open))) =
                    (tokens.get(i + 1), tokens.get(i + 2))
                {
                    inline_mods.push(braces + 1);
                }
            }
            Token::Ident(word)
                if (word == "crate" || word == "$crate")
                    && tokens.get(i + 1).map(|t| &t.1) == Some(&Token::PathSep)
                    && !follows_path_sep(&tokens, i) =>
            {
                for (to, path) in named_after(&tokens, i + 2) {
                    out.push(Edge {
                        line: *line,
                        to,
                        path: format!("crate::{path}"),
                    });
                }
            }
            Token::Ident(word) if word == "super" && !follows_path_sep(&tokens, i) => {
                // Count the chain `super::super::…`.
                let mut supers = 0;
                let mut j = i;
                while tokens.get(j).map(|t| &t.1) == Some(&Token::Ident("super".into()))
                    && tokens.get(j + 1).map(|t| &t.1) == Some(&Token::PathSep)
                {
                    supers += 1;
                    j += 2;
                }
                let here = depth + inline_mods.len();
                if supers > 0 && supers >= here {
                    let written = "super::".repeat(supers);
                    let named = named_after(&tokens, j);
                    if named.is_empty() {
                        out.push(Edge {
                            line: *line,
                            to: ROOT.into(),
                            path: format!("{written}…"),
                        });
                    }
                    for (to, path) in named {
                        out.push(Edge {
                            line: *line,
                            to,
                            path: format!("{written}{path}"),
                        });
                    }
                }
                i = j.max(i + 1);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// True when the token at `i` continues a longer path (`a::crate` is not the crate).
fn follows_path_sep(tokens: &[(usize, Token)], i: usize) -> bool {
    i > 0 && tokens[i - 1].1 == Token::PathSep
}

/// The top-level modules named right after `crate::` (at `start`): one name, or the first name
/// of every item of a `{…}` group. Each comes with the path as written (abridged for groups).
fn named_after(tokens: &[(usize, Token)], start: usize) -> Vec<(String, String)> {
    match tokens.get(start).map(|t| &t.1) {
        Some(Token::Ident(name)) => {
            let mut path = name.clone();
            let mut j = start + 1;
            while let (Some((_, Token::PathSep)), Some((_, Token::Ident(next)))) =
                (tokens.get(j), tokens.get(j + 1))
            {
                path.push_str("::");
                path.push_str(next);
                j += 2;
            }
            vec![(name.clone(), path)]
        }
        Some(Token::Open) => {
            let mut out = Vec::new();
            let mut depth = 0;
            let mut expect_name = true;
            for (_, token) in &tokens[start..] {
                match token {
                    Token::Open => {
                        depth += 1;
                        expect_name = depth == 1;
                    }
                    Token::Close => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    Token::Comma if depth == 1 => expect_name = true,
                    Token::Ident(name) if expect_name && depth == 1 => {
                        if name != "self" {
                            out.push((name.clone(), format!("{{{name}::…}}")));
                        }
                        expect_name = false;
                    }
                    _ => expect_name = false,
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

fn tokenize(code: &str) -> Vec<(usize, Token)> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push((line, Token::PathSep));
            i += 2;
        } else if c.is_alphanumeric()
            || c == '_'
            || (c == '$' && chars.get(i + 1).is_some_and(|n| n.is_alphabetic()))
        {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            // A raw identifier `r#name` is the identifier.
            out.push((line, Token::Ident(word)));
        } else {
            out.push((
                line,
                match c {
                    '{' => Token::Open,
                    '}' => Token::Close,
                    ',' => Token::Comma,
                    other => Token::Other(other),
                },
            ));
            i += 1;
        }
    }
    out
}

/// `text` with comments and the insides of string and character literals replaced by spaces
/// (newlines kept, so lines still count), so that neither a doc comment's `crate::x` nor a `'{'`
/// is read as code.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let prev = if i > 0 { Some(chars[i - 1]) } else { None };
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut nesting = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    nesting += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    nesting -= 1;
                    out.push_str("  ");
                    i += 2;
                    if nesting == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r'
            && !prev.is_some_and(|p| is_ident(p) && p != 'b')
            && matches!(next, Some('"') | Some('#'))
            && raw_string_hashes(&chars, i + 1).is_some()
        {
            // r"…", r#"…"# (and br… : the b was already copied as an identifier character).
            let hashes = raw_string_hashes(&chars, i + 1).expect("checked");
            let closing: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            out.push('r');
            i += 1;
            for _ in 0..hashes + 1 {
                out.push(chars[i]);
                i += 1;
            }
            while i < chars.len() && !starts_with(&chars, i, &closing) {
                out.push(blank(chars[i]));
                i += 1;
            }
            for _ in 0..closing.chars().count() {
                if i < chars.len() {
                    out.push(chars[i]);
                    i += 1;
                }
            }
        } else if c == '"' {
            out.push('"');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push('"');
            i += 1;
        } else if c == '\'' && next == Some('\\') {
            // An escaped character literal: '\n', '\'', '\u{7f}' (the escaped character is
            // consumed first: it may be a quote).
            out.push_str("' ");
            i += 3;
            out.push(' ');
            while i < chars.len() && chars[i] != '\'' {
                out.push(' ');
                i += 1;
            }
            out.push('\'');
            i += 1;
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            // A character literal such as '{' (a lifetime `'a` has no closing quote).
            out.push_str("' '");
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// At `i` (just after an `r`): the number of `#` before an opening `"`, if this opens a raw
/// string.
fn raw_string_hashes(chars: &[char], mut i: usize) -> Option<usize> {
    let mut hashes = 0;
    while chars.get(i) == Some(&'#') {
        hashes += 1;
        i += 1;
    }
    (chars.get(i) == Some(&'"')).then_some(hashes)
}

fn starts_with(chars: &[char], i: usize, needle: &str) -> bool {
    needle
        .chars()
        .enumerate()
        .all(|(k, c)| chars.get(i + k) == Some(&c))
}

/// What the scanner reports for a snippet, as (line, module, path as written).
fn scan(text: &str, depth: usize) -> Vec<(usize, String, String)> {
    edges(text, depth)
        .into_iter()
        .map(|e| (e.line, e.to, e.path))
        .collect()
}

#[test]
fn the_scanner_reads_imports_and_paths_in_code() {
    let text = "use crate::store::Store;\n\
                use crate::{policy::model, vocab};\n\
                fn f() { let _ = crate::vocab::clock::now_millis(); }\n\
                macro_rules! m { () => { $crate::lane::Lane::start() } }\n";
    assert_eq!(
        scan(text, 1),
        vec![
            (1, "store".into(), "crate::store::Store".into()),
            (2, "policy".into(), "crate::{policy::…}".into()),
            (2, "vocab".into(), "crate::{vocab::…}".into()),
            (3, "vocab".into(), "crate::vocab::clock::now_millis".into()),
            (4, "lane".into(), "crate::lane::Lane::start".into()),
        ]
    );
}

#[test]
fn the_scanner_ignores_comments_strings_and_visibility() {
    let text = "//! See `crate::config`.\n\
                /* crate::server::x /* nested crate::cli */ */\n\
                pub(crate) fn f() -> &'static str { \"crate::sim::client\" }\n\
                const R: &str = r#\"use crate::push;\"#;\n\
                const C: char = '{';\n\
                fn g<'a>(x: &'a str) -> &'a str { x }\n\
                use crate::store;\n";
    assert_eq!(
        scan(text, 1),
        vec![(7, "store".into(), "crate::store".into())]
    );
}

#[test]
fn super_chains_that_leave_the_module_are_edges() {
    // In src/store/sqlite.rs (depth 2), `super::` is `store`; `super::super::` is the root.
    assert_eq!(scan("use super::model::Enrollment;\n", 2), vec![]);
    assert_eq!(
        scan("use super::super::config::Limits;\n", 2),
        vec![(1, "config".into(), "super::super::config::Limits".into())]
    );
    // Inside an inline `mod tests`, one more `super` stays inside.
    let text = "mod tests {\n    use super::super::hardware;\n}\nuse super::x;\n";
    assert_eq!(scan(text, 2), vec![]);
    // From a top-level file (src/cli.rs, depth 1), `super::` is the crate root.
    assert_eq!(
        scan("use super::reconcile::plan;\n", 1),
        vec![(1, "reconcile".into(), "super::reconcile::plan".into())]
    );
}

#[test]
fn the_layer_table_refuses_upward_sideways_and_simulator_edges() {
    assert!(refusal("store", "vocab").is_none());
    assert!(refusal("config", "server").is_none());
    assert!(refusal("store", "config").is_some());
    assert!(refusal("store", "policy").is_some(), "same layer");
    assert!(refusal("server", "sim").is_some());
    assert!(refusal("sim", "pki").is_none());
    assert!(refusal("sim", "store").is_some());
    assert!(refusal("store", ROOT).is_some());
    let mut counted: BTreeMap<&str, usize> = BTreeMap::new();
    for module in LAYERS
        .iter()
        .flat_map(|l| l.iter())
        .chain(APART.iter().map(|(m, _)| m))
    {
        *counted.entry(module).or_default() += 1;
    }
    let twice: Vec<_> = counted.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "listed more than once: {twice:?}");
}
