//! The dashboard: one page and its assets, embedded in the binary at compile time. It uses
//! only the public API and the event stream.

use axum::extract::Path;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

use super::error::ApiError;

const INDEX: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const WORKFLOWS_JS: &str = include_str!("workflows.js");
const STYLE_CSS: &str = include_str!("style.css");

/// The dashboard page.
pub(crate) async fn index() -> Html<&'static str> {
    Html(INDEX)
}

/// The dashboard's scripts (`app.js`, then `workflows.js`, the workflows view, which uses
/// `app.js`'s helpers) and style sheet.
pub(crate) async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    let (body, kind) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "workflows.js" => (WORKFLOWS_JS, "text/javascript; charset=utf-8"),
        "style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        _ => return Err(ApiError::NotFound(format!("no asset `{file}`"))),
    };
    Ok(([(header::CONTENT_TYPE, kind)], body).into_response())
}

#[cfg(test)]
mod tests;
