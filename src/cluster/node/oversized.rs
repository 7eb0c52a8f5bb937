//! Results and failure messages too big for a cluster frame, made to fit before they leave
//! the node.

use crate::cluster::wire;
use crate::handler::TaskError;
use crate::worker::{AttemptOutcome, AttemptReport};

/// A result too big for one frame would end the session each time it is sent (and the
/// task would run again and again): it fails the attempt instead, for good, saying why. A
/// failure's message longer than [`wire::MAX_ERROR_BYTES`] is cut to that, saying so; the
/// failure stays retryable or not as it was.
pub(super) fn refuse_oversized(report: &mut AttemptReport) {
    if let AttemptOutcome::Failed(e) = &report.outcome {
        if e.message().len() > wire::MAX_ERROR_BYTES {
            let message = e.message();
            let mut end = wire::MAX_ERROR_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            let cut = format!(
                "{}... (cut: the message had {} bytes)",
                &message[..end],
                message.len()
            );
            tracing::warn!(task_id = %report.task_id, bytes = message.len(), "failure message cut to fit a cluster frame");
            report.outcome = AttemptOutcome::Failed(if e.is_retryable() {
                TaskError::retryable(cut)
            } else {
                TaskError::permanent(cut)
            });
        }
        return;
    }
    if let AttemptOutcome::Completed(p) = &report.outcome {
        if p.len() > wire::MAX_RESULT_BYTES {
            let why = format!(
                "result of {} bytes is larger than a cluster frame allows ({} bytes)",
                p.len(),
                wire::MAX_RESULT_BYTES
            );
            tracing::warn!(task_id = %report.task_id, "{why}");
            report.outcome = AttemptOutcome::Failed(TaskError::permanent(why));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{Payload, TaskId};
    use crate::worker::AttemptOutcome;

    fn report(bytes: usize) -> AttemptReport {
        let text = "x".repeat(bytes.saturating_sub(2));
        AttemptReport {
            task_id: TaskId::new(),
            token: crate::task::LeaseToken {
                epoch: 1,
                attempt: 1,
                nonce: 7,
            },
            outcome: AttemptOutcome::Completed(Payload::encode(&text).unwrap()),
        }
    }

    #[test]
    fn a_failure_message_too_big_is_cut_and_keeps_its_kind() {
        let failed = |e: TaskError| AttemptReport {
            task_id: TaskId::new(),
            token: crate::task::LeaseToken {
                epoch: 1,
                attempt: 1,
                nonce: 7,
            },
            outcome: AttemptOutcome::Failed(e),
        };
        // 20 MiB of a two-byte character: more than a frame, and no cut may split one.
        let huge = "é".repeat(10 * 1024 * 1024);
        for retryable in [true, false] {
            let e = if retryable {
                TaskError::retryable(huge.clone())
            } else {
                TaskError::permanent(huge.clone())
            };
            let mut r = failed(e);
            refuse_oversized(&mut r);
            let AttemptOutcome::Failed(e) = &r.outcome else {
                panic!("{:?}", r.outcome);
            };
            assert!(
                e.message().len() <= wire::MAX_ERROR_BYTES + 64,
                "{}",
                e.message().len()
            );
            assert!(e.message().starts_with("éé"));
            assert!(e
                .message()
                .ends_with("(cut: the message had 20971520 bytes)"));
            assert_eq!(e.is_retryable(), retryable);
        }
        let mut small = failed(TaskError::permanent("no"));
        refuse_oversized(&mut small);
        let AttemptOutcome::Failed(e) = &small.outcome else {
            panic!("{:?}", small.outcome);
        };
        assert_eq!(e.message(), "no");
    }

    #[test]
    fn a_result_too_big_for_a_frame_fails_its_attempt_for_good() {
        let mut fits = report(1024);
        refuse_oversized(&mut fits);
        assert!(matches!(fits.outcome, AttemptOutcome::Completed(_)));

        let mut huge = report(wire::MAX_RESULT_BYTES + 10);
        refuse_oversized(&mut huge);
        let AttemptOutcome::Failed(e) = &huge.outcome else {
            panic!("{:?}", huge.outcome);
        };
        assert!(!e.is_retryable());
        assert!(
            e.message().contains("larger than a cluster frame"),
            "{}",
            e.message()
        );
    }
}
