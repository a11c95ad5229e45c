//! Mimetypes sniffed from a file's first bytes, as Midas's libmagic answers them.

/// A mimetype from the first bytes of a file (libmagic's answers for the common cases).
pub fn sniff_mimetype(head: &[u8], total: u64) -> &'static str {
    const MAGIC: &[(&[u8], &str)] = &[
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"%PDF-", "application/pdf"),
        (b"PK\x03\x04", "application/zip"),
        (b"\x1f\x8b", "application/x-gzip"),
        (b"\x7fELF", "application/x-executable"),
    ];
    if total == 0 {
        return "application/x-empty";
    }
    if let Some((_, mime)) = MAGIC.iter().find(|(magic, _)| head.starts_with(magic)) {
        return mime;
    }
    let text = match std::str::from_utf8(head) {
        Ok(_) => true,
        // A multi-byte character cut by the sniffing window is still text.
        Err(e) => e.error_len().is_none() && head.len() - e.valid_up_to() < 4,
    };
    if text
        && !head
            .iter()
            .any(|b| *b == 0 || (*b < 0x20 && !b"\t\n\r\x0c\x1b\x08".contains(b)))
    {
        "text/plain"
    } else {
        "application/octet-stream"
    }
}
