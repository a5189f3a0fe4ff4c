//! The OpenAPI 3.1 document of the admin API, generated from the types in `api` (their JSON
//! Schemas, by schemars) and the table of operations below. Served at
//! `GET /api/v1/openapi.json`, printed by `pomona openapi`, and committed as
//! `docs/openapi.json`; a test fails when the committed copy drifts from the types.

use super::*;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{json, Map, Value};

/// Where a parameter goes.
#[derive(Clone, Copy)]
enum In {
    Path,
    Query,
}

/// One operation: method, path (under `/api/v1`), what it does, its parameters, its request
/// body and its success answer.
struct Operation {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    parameters: &'static [(&'static str, In, &'static str)],
    request: Option<Value>,
    success: (u16, Value),
}

const DEVICE: (&str, In, &str) = (
    "id",
    In::Path,
    "UDID, EnrollmentID or serial number of the device",
);
const PAGE: [(&str, In, &str); 2] = [
    ("after", In::Query, "the `next_after` of the previous page"),
    (
        "limit",
        In::Query,
        "at most this many (1–1000, default 100)",
    ),
];

/// `GET /devices`: what narrows the list, then the page.
const DEVICE_SEARCH: [(&str, In, &str); 6] = [
    (
        "q",
        In::Query,
        "a prefix (ASCII case ignored) of the UDID, serial number, device name or an API \
         label's value; `key=prefix` matches that label only",
    ),
    (
        "state",
        In::Query,
        "`authenticated`, `enrolled` or `checked_out`",
    ),
    (
        "platform",
        In::Query,
        "`iOS`, `iPadOS`, `macOS`, `tvOS`, `visionOS` or `watchOS` (from ProductName, else Model)",
    ),
    (
        "group",
        In::Query,
        "the members of this declared device group",
    ),
    PAGE[0],
    PAGE[1],
];

/// The JSON Schema of `T`: a reference into the document's components.
fn of<T: JsonSchema>(g: &mut SchemaGenerator) -> Value {
    g.subschema_for::<T>().to_value()
}

fn op(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    parameters: &'static [(&'static str, In, &'static str)],
    request: Option<Value>,
    success: (u16, Value),
) -> Operation {
    Operation {
        method,
        path,
        summary,
        parameters,
        request,
        success,
    }
}

const ACTION: (&str, In, &str) = (
    "id",
    In::Path,
    "the action id, or the declaring DeviceAction (namespace/name)",
);

fn operations(g: &mut SchemaGenerator) -> Vec<Operation> {
    vec![
        op("get", "/devices",
            "Search devices (by text, state, platform, group), a page at a time by device id",
            &DEVICE_SEARCH, None, (200, of::<DevicePage>(g))),
        op("get", "/devices/{id}",
            "A device with its certificates, push state, inventory and managed profiles",
            &[DEVICE], None, (200, of::<DeviceDetail>(g))),
        op("post", "/devices/{id}/revoke",
            "Revoke every certificate of a device (it can no longer authenticate)",
            &[DEVICE], None, (200, of::<Revoked>(g))),
        op("put", "/devices/{id}/labels", "Replace a device's labels and re-plan it",
            &[DEVICE], Some(of::<LabelsRequest>(g)), (200, of::<Labels>(g))),
        op("post", "/devices/{id}/commands", "Queue an MDM command for a device and wake it",
            &[DEVICE], Some(of::<crate::protocol::CommandRequest>(g)),
            (201, of::<QueuedCommand>(g))),
        op("get", "/devices/{id}/commands", "A device's commands with their results, newest first",
            &[DEVICE, PAGE[1]], None, (200, of::<Commands>(g))),
        op("post", "/devices/{id}/push",
            "Push a device now and answer with what APNs said (502, same body, when APNs refused)",
            &[DEVICE], None, (200, of::<Pushed>(g))),
        op("post", "/devices/{id}/actions",
            "Start a device action (lock, erase, Lost Mode…) on one device now",
            &[DEVICE], Some(of::<ActionRequest>(g)), (201, of::<StartedAction>(g))),
        op("get", "/devices/{id}/actions", "Every action on one device",
            &[DEVICE], None, (200, of::<DeviceActions>(g))),
        op("get", "/actions", "The latest device actions, counted by phase, newest first",
            &[], None, (200, of::<ActionList>(g))),
        op("get", "/actions/{id}", "One action and its devices",
            &[ACTION], None, (200, of::<ActionDetail>(g))),
        op("post", "/enrollment-tokens", "A one-time enrollment link",
            &[], None, (201, of::<EnrollmentToken>(g))),
        op("get", "/status",
            "The policy in force and where the fleet stands on each profile and action",
            &[], None, (200, of::<Status>(g))),
        op("post", "/plan",
            "What a candidate policy would change on the live fleet (422 with its problems when invalid)",
            &[], Some(of::<PlanRequest>(g)), (200, of::<PlanPreview>(g))),
        op("get", "/openapi.json", "This document (no token needed)", &[], None,
            (200, json!({"type": "object"}))),
    ]
}

/// The whole document.
pub fn document() -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "#/components/schemas/".into())
        .into_generator();
    let error = generator.subschema_for::<ErrorBody>().to_value();
    let mut paths: Map<String, Value> = Map::new();
    for op in operations(&mut generator) {
        let parameters: Vec<Value> = op
            .parameters
            .iter()
            .map(|(name, place, description)| {
                json!({
                    "name": name,
                    "in": match place { In::Path => "path", In::Query => "query" },
                    "required": matches!(place, In::Path),
                    "description": description,
                    "schema": {"type": if *name == "limit" { "integer" } else { "string" }},
                })
            })
            .collect();
        let mut operation = json!({
            "summary": op.summary,
            "responses": {
                op.success.0.to_string(): {
                    "description": "success",
                    "content": {"application/json": {"schema": op.success.1}},
                },
                "default": {
                    "description": "an error, saying what was wrong",
                    "content": {"application/json": {"schema": error}},
                },
            },
        });
        if !parameters.is_empty() {
            operation["parameters"] = Value::Array(parameters);
        }
        if let Some(request) = op.request {
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": request}},
            });
        }
        let entry = paths
            .entry(op.path.to_string())
            .or_insert_with(|| json!({}));
        entry[op.method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Pomona admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Devices, commands, device actions, policy status and plans. Every \
                request but this document's needs `Authorization: Bearer <token>` (the token is in \
                <data-dir>/admin-token).",
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": generator.take_definitions(true),
        },
    })
}

/// The document as committed and served: pretty JSON with a final newline.
pub fn document_text() -> String {
    let mut text = serde_json::to_string_pretty(&document()).expect("a JSON value serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_document_is_the_one_the_types_generate() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == document_text(),
            "docs/openapi.json differs from what the api types generate: run \
             `cargo run -- openapi > docs/openapi.json` and commit it"
        );
    }

    /// Every `$ref` in `value`, in order.
    fn references(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r.clone()),
                        _ => references(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| references(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_names_a_schema_of_the_document() {
        let document = document();
        let schemas = document["components"]["schemas"]
            .as_object()
            .expect("components.schemas");
        let mut found = Vec::new();
        references(&document, &mut found);
        assert!(found.len() > 30, "the operations refer to their schemas");
        for reference in found {
            let name = reference
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{reference} points outside components.schemas"));
            assert!(schemas.contains_key(name), "{reference} names no schema");
        }
    }

    #[test]
    fn every_operation_answers_with_its_type_or_an_error() {
        let document = document();
        for (path, item) in document["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("path item") {
                let responses = operation["responses"].as_object().expect("responses");
                assert!(
                    responses.contains_key("default"),
                    "{method} {path} describes its errors"
                );
                assert_eq!(
                    responses.len(),
                    2,
                    "{method} {path}: one success, one error"
                );
            }
        }
    }
}
