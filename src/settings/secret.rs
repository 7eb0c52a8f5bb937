//! Secrets read from files, so that they need not be passed as flags.

use crate::error::Error;

/// Longest secret [`read_secret_file`] reads.
pub const MAX_SECRET_BYTES: u64 = 4096;

/// Reads a secret (a cookie, a token) from the file at `path`, without its trailing
/// newline, so that it need not be passed as a flag (flags show in `ps`). An unreadable,
/// empty or larger than [`MAX_SECRET_BYTES`] file is an error naming `field`.
pub fn read_secret_file(field: &'static str, path: &std::path::Path) -> Result<String, Error> {
    let bad = |why: String| Error::invalid(field, format!("{}: {why}", path.display()));
    let len = std::fs::metadata(path)
        .map_err(|e| bad(e.to_string()))?
        .len();
    if len > MAX_SECRET_BYTES {
        return Err(bad(format!(
            "{len} bytes; a secret file holds at most {MAX_SECRET_BYTES}"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(bad("the file is empty".into()));
    }
    Ok(secret.to_string())
}
