//! Small readings of raw header bytes, without building `http` types.

/// A header name in lower case, and the same with every `_` read as `-`
/// (the form the filters of [`crate::headers`] compare).
#[derive(Clone, Copy)]
pub(super) struct Lower<'a> {
    pub(super) lower: &'a [u8],
    pub(super) folded: &'a [u8],
}

/// `name` in lower case, written into `room`; `None` when it is longer
/// than `room`'s half (no name the mediator acts on is).
pub(super) fn lowercase<'a>(name: &str, room: &'a mut [u8; 256]) -> Option<Lower<'a>> {
    let len = name.len();
    if len > 128 {
        return None;
    }
    let (lower, folded) = room.split_at_mut(128);
    for (i, b) in name.bytes().enumerate() {
        let l = b.to_ascii_lowercase();
        lower[i] = l;
        folded[i] = if l == b'_' { b'-' } else { l };
    }
    Some(Lower {
        lower: &lower[..len],
        folded: &folded[..len],
    })
}

/// A header value as text, when every byte is visible ASCII, a space or a
/// tab (what `HeaderValue::to_str` accepts).
pub(super) fn visible(value: &[u8]) -> Option<&str> {
    if value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        // Checked above: ASCII only.
        std::str::from_utf8(value).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowered_and_folded() {
        let mut room = [0u8; 256];
        let names = lowercase("X_Mediator-From", &mut room).expect("short");
        assert_eq!(names.lower, b"x_mediator-from");
        assert_eq!(names.folded, b"x-mediator-from");
        let mut room = [0u8; 256];
        assert!(lowercase(&"a".repeat(129), &mut room).is_none());
        assert_eq!(visible(b"abc def"), Some("abc def"));
        assert_eq!(visible(b"caf\xc3\xa9"), None);
        assert_eq!(visible(b"a\x01"), None);
    }
}
