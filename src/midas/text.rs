//! Midas's text quirk, in both directions.
//!
//! Midas passes every string in an answer through PHP's `utf8_encode`, which reads the stored
//! UTF-8 bytes as Latin-1 and encodes them again: `é` (C3 A9) goes out as `Ã©`. Parameters sent to
//! the server are stored as given, so a client reads back something other than what it wrote.

/// What a real Midas server does to a stored string before it sends it.
pub fn double_encode(s: &str) -> String {
    s.bytes().map(char::from).collect()
}

/// Undo [`double_encode`]: if every code point fits in a byte and those bytes are valid UTF-8,
/// return the decoded text; otherwise the string was not double-encoded and is kept as it is.
pub fn repair(s: &str) -> String {
    if s.is_ascii() {
        return s.to_owned();
    }
    let bytes: Option<Vec<u8>> = s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect();
    match bytes.map(String::from_utf8) {
        Some(Ok(text)) => text,
        _ => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for s in ["café", "日本語/データ", "plain", "", "Ünïcödé ✓ 🚀"] {
            assert_eq!(repair(&double_encode(s)), s);
        }
        assert_eq!(double_encode("café"), "cafÃ©");
    }

    #[test]
    fn leaves_text_that_was_not_double_encoded() {
        // "é" alone is not valid UTF-8 once read back as a byte: keep it.
        assert_eq!(repair("é"), "é");
        assert_eq!(repair("日本"), "日本");
    }
}
