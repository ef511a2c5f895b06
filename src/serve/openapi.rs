//! The OpenAPI 3 document of `/api/v1/`, written by hand (openapi.json
//! beside this file) and served as it is: tests run schemathesis against a
//! live server to keep it true.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The document, built into the binary.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// `GET /api/v1/openapi.json`.
pub async fn document() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_is_json_and_versioned_as_eco() {
        let doc: serde_json::Value = serde_json::from_str(super::DOCUMENT).expect("valid JSON");
        assert_eq!(doc["openapi"], "3.0.3");
        assert!(doc["paths"]["/api/v1/apps/{app}/scale"]["post"].is_object());
    }
}
