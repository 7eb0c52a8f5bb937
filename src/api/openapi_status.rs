//! The answers every route can give besides its own, added to the OpenAPI document so it
//! states the status codes the server really uses (schemathesis checks them).

use utoipa::openapi::path::Operation;
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, Response};

/// Adds the guards' and limits' answers to every operation of the document.
#[derive(Debug)]
pub(crate) struct CommonResponses;

impl utoipa::Modify for CommonResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let public = matches!(path.as_str(), "/healthz" | "/readyz" | "/login" | "/logout");
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                add_common(op, path, public);
            }
        }
    }
}

fn add_common(op: &mut Operation, path: &str, public: bool) {
    if public {
        // No token needed: an empty list overrides the document's bearer requirement.
        op.security = Some(Vec::new());
    }
    let mut common = vec![(
        "429",
        "rate limited, or too many open streams from this client",
    )];
    if path != "/healthz" {
        common.push((
            "403",
            "another site's Origin, or the token lacks this route's scope",
        ));
        common.push(("421", "the Host header names a server this is not"));
    }
    if !public {
        common.push((
            "401",
            "missing or invalid bearer token (when tokens are configured)",
        ));
    }
    if op.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
        common.push(("400", "a malformed parameter; `field` names it"));
    }
    if op.request_body.is_some() {
        common.push(("400", "malformed body; `field` names what to fix"));
        common.push(("413", "body larger than max_body_bytes"));
        common.push(("415", "the body is not `application/json`"));
    }
    for (code, description) in common {
        op.responses
            .responses
            .entry(code.to_string())
            .or_insert_with(|| RefOr::T(error_response(description)));
    }
}

fn error_response(description: &str) -> Response {
    let mut response = Response::new(description);
    response.content.insert(
        "application/json".into(),
        Content::new(Some(RefOr::Ref(Ref::from_schema_name("ErrorBody")))),
    );
    response
}
