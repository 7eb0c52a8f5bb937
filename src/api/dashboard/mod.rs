//! The dashboard: one page and its assets, embedded in the binary at compile time. It uses
//! only the public API and the event stream.

use axum::extract::{OriginalUri, Path};
use axum::http::{header, Uri};
use axum::response::{Html, IntoResponse, Response};

use super::error::ApiError;

const INDEX: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const WORKFLOWS_JS: &str = include_str!("workflows.js");
const STYLE_CSS: &str = include_str!("style.css");

/// The dashboard page. Its links are relative, under a `<base>` naming the folder the
/// router is mounted at, so an application that nests wrangle's router under a prefix
/// (`/wrangle`) gets a working dashboard there.
pub(crate) async fn index(OriginalUri(original): OriginalUri, uri: Uri) -> Html<String> {
    // Nested, the router sees the path with its prefix cut off; the original keeps it.
    // (`/wrangle` reaches the nested router as `/`.)
    let prefix = original
        .path()
        .strip_suffix(uri.path())
        .or_else(|| {
            original
                .path()
                .strip_suffix(uri.path().trim_end_matches('/'))
        })
        .unwrap_or("")
        .trim_end_matches('/');
    let mut href = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        match c {
            '"' => href.push_str("%22"),
            '<' => href.push_str("%3C"),
            '>' => href.push_str("%3E"),
            '&' => href.push_str("%26"),
            c => href.push(c),
        }
    }
    href.push('/');
    Html(INDEX.replacen("<head>", &format!("<head>\n<base href=\"{href}\">"), 1))
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
