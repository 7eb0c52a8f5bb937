//! Text made storable: the one gate every text value passes on its way into a TEXT column.
//!
//! PostgreSQL refuses a NUL character in text (`invalid byte sequence for encoding "UTF8":
//! 0x00`) and, before this gate, one handler error holding `\u{0}` stopped every later
//! commit. SQLite takes NUL but C-string tools cut at it. So NUL becomes U+FFFD (the
//! replacement character) on both backends, and free-form text is cut to a documented
//! byte bound, on a character boundary, with a marker saying how much was cut.
//!
//! Payloads and results are stored as bytes (`BYTEA`, `BLOB`), not as `jsonb`, so a JSON
//! `"\u0000"` escape in them is stored and read back unchanged and needs no gate.

use std::borrow::Cow;

/// The longest error message or attempt outcome stored, in bytes (16 KiB). A longer one is
/// cut on a character boundary and ends with `… [N bytes cut]`.
pub(crate) const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// The longest name stored (worker and node ids, their address, labels and task types as
/// JSON), in bytes (1 KiB). A longer one is cut like a message.
pub(crate) const MAX_NAME_BYTES: usize = 1024;

/// What replaces a NUL character.
const NUL_STAND_IN: char = '\u{FFFD}';

/// `text` as it can be stored in a TEXT column of either backend: every NUL replaced by
/// U+FFFD, and at most `max_bytes` long (cut on a character boundary, with a marker saying
/// how many bytes were cut; the marker counts toward the bound, unless the bound is
/// smaller than the marker itself). Borrows when nothing
/// changes, which is almost always.
pub(crate) fn storable(text: &str, max_bytes: usize) -> Cow<'_, str> {
    let text: Cow<'_, str> = if text.contains('\0') {
        Cow::Owned(text.replace('\0', NUL_STAND_IN.encode_utf8(&mut [0; 4])))
    } else {
        Cow::Borrowed(text)
    };
    if text.len() <= max_bytes {
        return text;
    }
    // The marker's length depends on the number it holds; the number is at most the whole
    // length, so reserve room for that many digits.
    let marker_room = "… [ bytes cut]".len() + text.len().to_string().len();
    let mut keep = max_bytes.saturating_sub(marker_room);
    while !text.is_char_boundary(keep) {
        keep -= 1;
    }
    let cut = text.len() - keep;
    let mut out = String::with_capacity(max_bytes);
    out.push_str(&text[..keep]);
    out.push_str(&format!("… [{cut} bytes cut]"));
    Cow::Owned(out)
}

/// [`storable`] with only NUL replaced, for values that must not be cut because they
/// identify something (a task type, an idempotency key, options as JSON). Their length is
/// bounded where they are accepted.
pub(crate) fn without_nul(text: &str) -> Cow<'_, str> {
    storable(text, usize::MAX)
}

/// An optional message made storable.
pub(crate) fn message(text: Option<&str>) -> Option<Cow<'_, str>> {
    text.map(|t| storable(t, MAX_MESSAGE_BYTES))
}

/// A name made storable.
pub(crate) fn name(text: &str) -> Cow<'_, str> {
    storable(text, MAX_NAME_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        assert!(matches!(storable("fine", 10), Cow::Borrowed("fine")));
    }

    #[test]
    fn nul_becomes_the_replacement_character() {
        assert_eq!(storable("bad\0byte\0", 100), "bad\u{FFFD}byte\u{FFFD}");
        assert!(!storable("\0", 100).contains('\0'));
    }

    #[test]
    fn long_text_is_cut_on_a_char_boundary_with_a_marker() {
        let long = "é".repeat(1000); // 2,000 bytes
        let cut = storable(&long, 100);
        assert!(cut.len() <= 100, "{} bytes", cut.len());
        assert!(cut.ends_with(" bytes cut]"), "{cut}");
        let kept = cut.split('…').next().unwrap();
        assert!(kept.chars().all(|c| c == 'é'));
        let n: usize = cut
            .rsplit('[')
            .next()
            .unwrap()
            .trim_end_matches(" bytes cut]")
            .parse()
            .unwrap();
        assert_eq!(
            kept.len() + n,
            long.len(),
            "the marker says how much was cut"
        );
    }

    #[test]
    fn a_bound_smaller_than_the_marker_keeps_only_the_marker() {
        let long = "x".repeat(50);
        let cut = storable(&long, 3);
        assert_eq!(cut, "… [50 bytes cut]");
    }

    #[test]
    fn messages_are_bounded() {
        let huge = "y".repeat(10 * MAX_MESSAGE_BYTES);
        assert!(message(Some(&huge)).unwrap().len() <= MAX_MESSAGE_BYTES);
        assert!(name(&huge).len() <= MAX_NAME_BYTES);
        assert_eq!(without_nul(&huge).len(), huge.len());
    }
}
