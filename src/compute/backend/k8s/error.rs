//! A kube failure as a [`ComputeError`] that says whether a retry can help.
//!
//! - The API server could not be reached (refused, reset, TLS, a cut stream): `Unavailable`,
//!   retryable and a fault of the node.
//! - `429 Too Many Requests`: `Busy`, retryable no earlier than the server asked.
//!   kube does not hand over response headers, so the wait comes from the `Status` body's
//!   `details.retryAfterSeconds`, which the API server sends with its `Retry-After` header.
//! - `5xx` (`503` too, with its wait as above): `Remote`, retryable, a fault of the node
//!   that counts towards its circuit breaker.
//! - `401`, `403`, `404`, `409`, `422` and any other `4xx`: `Rejected`, permanent, with the
//!   API's own message (a missing deployment, a forbidden namespace, an invalid Job).
//! - A body that is not what the API promises: `Protocol`, retryable.
//! - Credentials kube could not make (a token file, an exec plugin): `Unavailable`.

use std::time::Duration;

use kube::Error as KubeError;

use crate::compute::request::{ComputeError, ComputeErrorKind};

/// `e`, met while doing `what` (`"create job ns/x"`), as a compute error.
pub(super) fn api_error(what: &str, e: KubeError) -> ComputeError {
    use ComputeErrorKind as K;
    match e {
        KubeError::Api(status) => {
            let kind = match status.code {
                429 => K::Busy,
                c if c >= 500 => K::Remote,
                _ => K::Rejected,
            };
            let retry_after = status
                .details
                .as_ref()
                .map(|d| d.retry_after_seconds)
                .filter(|s| *s > 0 && matches!(status.code, 429 | 503))
                .map(|s| Duration::from_secs(u64::from(s)));
            let message = if status.message.is_empty() {
                status.reason.clone()
            } else {
                status.message.clone()
            };
            ComputeError {
                retry_after,
                ..ComputeError::new(
                    kind,
                    format!("kubernetes: {what}: HTTP {}: {message}", status.code),
                )
            }
        }
        KubeError::SerdeError(e) => {
            ComputeError::protocol(format!("kubernetes: {what}: unexpected answer: {e}"))
        }
        KubeError::FromUtf8(e) => {
            ComputeError::protocol(format!("kubernetes: {what}: unexpected answer: {e}"))
        }
        KubeError::LinesCodecMaxLineLengthExceeded | KubeError::ReadEvents(_) => {
            ComputeError::protocol(format!("kubernetes: {what}: {e}"))
        }
        // Reading a token file or running the kubeconfig's exec plugin failed: the node
        // cannot log in now, which may pass (a plugin's refresh); the API's own refusal
        // of a login is a 401 above.
        KubeError::Auth(e) => ComputeError::unavailable(format!(
            "kubernetes: {what}: no credentials to log in with: {e}"
        )),
        other => {
            let detail = std::error::Error::source(&other)
                .map(|s| format!("{other}: {s}"))
                .unwrap_or_else(|| other.to_string());
            ComputeError::unavailable(format!(
                "kubernetes: {what}: the API server cannot be reached: {detail}"
            ))
        }
    }
}

/// Whether `e` is the API's `404 Not Found`.
pub(super) fn is_not_found(e: &KubeError) -> bool {
    matches!(e, KubeError::Api(s) if s.code == 404)
}

#[cfg(test)]
mod tests {
    use kube::core::response::StatusDetails;
    use kube::core::Status;

    use super::*;

    fn status(code: u16, message: &str, retry_after_seconds: u32) -> KubeError {
        let mut status = Status::failure(message, "Reason").with_code(code);
        if retry_after_seconds > 0 {
            status.details = Some(StatusDetails {
                name: String::new(),
                group: String::new(),
                kind: String::new(),
                uid: String::new(),
                causes: Vec::new(),
                retry_after_seconds,
            });
        }
        KubeError::Api(status.boxed())
    }

    #[test]
    fn api_statuses_map_to_what_a_retry_can_fix() {
        let e = api_error("create job", status(429, "slow down", 7));
        assert_eq!(e.kind, ComputeErrorKind::Busy);
        assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
        assert!(e.is_retryable());
        let e = api_error("get deployment", status(500, "etcd is sad", 0));
        assert_eq!((e.kind, e.retry_after), (ComputeErrorKind::Remote, None));
        let e = api_error("create job", status(503, "shutting down", 5));
        assert_eq!(
            (e.kind, e.retry_after),
            (ComputeErrorKind::Remote, Some(Duration::from_secs(5)))
        );
        for code in [403, 404, 422] {
            let e = api_error("create job", status(code, "the API's own words", 0));
            assert_eq!(e.kind, ComputeErrorKind::Rejected, "{code}");
            assert!(!e.is_retryable());
            assert!(
                e.message.contains("the API's own words") && e.message.contains("create job"),
                "{e}"
            );
        }
        assert!(is_not_found(&status(404, "gone", 0)));
        assert!(!is_not_found(&status(403, "no", 0)));
    }
}
