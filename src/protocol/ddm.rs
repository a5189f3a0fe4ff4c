//! Declarative Device Management answers for the `DeclarativeManagement` check-in.
//!
//! Pomona does not declare anything through DDM yet, so it serves the empty declaration set the
//! protocol allows: a stable tokens response, a manifest with the four (empty) arrays, 404 for
//! any declaration (the device then removes it) and an empty 200 for status reports.

use serde_json::json;
use sha2::{Digest, Sha256};

/// What to answer to one DDM endpoint.
#[derive(Debug, PartialEq, Eq)]
pub enum DdmAnswer {
    /// 200 with this JSON body.
    Json(Vec<u8>),
    /// 200 with an empty body (status reports).
    Empty,
    /// 404: the declaration does not exist.
    NotFound,
    /// 400: an endpoint the protocol does not define.
    BadEndpoint(String),
}

/// The DeclarationsToken for an empty set: deterministic across replicas and restarts.
fn empty_set_token() -> String {
    hex::encode(Sha256::digest(b"pomona:declarations:v1:"))
}

pub fn answer(endpoint: &str) -> DdmAnswer {
    let token = empty_set_token();
    match endpoint {
        "tokens" => DdmAnswer::Json(
            json!({"SyncTokens": {"DeclarationsToken": token, "Timestamp": "1970-01-01T00:00:00Z"}})
                .to_string()
                .into_bytes(),
        ),
        "declaration-items" => DdmAnswer::Json(
            json!({
                "Declarations": {"Activations": [], "Configurations": [], "Assets": [], "Management": []},
                "DeclarationsToken": token
            })
            .to_string()
            .into_bytes(),
        ),
        "status" => DdmAnswer::Empty,
        other if other.starts_with("declaration/") => DdmAnswer::NotFound,
        other => DdmAnswer::BadEndpoint(format!("unknown DeclarativeManagement Endpoint {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_items_carry_the_same_token() {
        let DdmAnswer::Json(tokens) = answer("tokens") else {
            panic!()
        };
        let DdmAnswer::Json(items) = answer("declaration-items") else {
            panic!()
        };
        let t: serde_json::Value = serde_json::from_slice(&tokens).unwrap();
        let i: serde_json::Value = serde_json::from_slice(&items).unwrap();
        assert_eq!(t["SyncTokens"]["DeclarationsToken"], i["DeclarationsToken"]);
        assert_eq!(i["Declarations"]["Management"], serde_json::json!([]));
    }

    #[test]
    fn unknown_declarations_are_not_found_and_status_is_empty() {
        assert_eq!(answer("declaration/configuration/abc"), DdmAnswer::NotFound);
        assert_eq!(answer("status"), DdmAnswer::Empty);
        assert!(matches!(answer("bogus"), DdmAnswer::BadEndpoint(_)));
    }
}
