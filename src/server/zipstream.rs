//! A ZIP writer for streaming (the `zip` crate needs a seekable output): stored entries,
//! CRC and sizes in data descriptors after each entry, ZIP64 records when sizes or offsets
//! need them. Names are flagged UTF-8.
//!
//! Entry names come from folder, item and bitstream names anyone with write access chose, so
//! [`safe_entry_name`] makes each a relative path that stays inside the archive and fits.

use std::io::{self, Read, Write};

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

fn crc32_update(crc: u32, data: &[u8]) -> u32 {
    let mut c = !crc;
    for b in data {
        c = CRC_TABLE[((c ^ u32::from(*b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// Longest name component: what most filesystems take.
const MAX_COMPONENT: usize = 255;
/// Longest entry name: the ZIP name-length field is 16 bits.
const MAX_NAME: usize = 0xFFFF;

/// `name` as a safe relative path: `/` and `\` separate components; empty and `.`
/// components are dropped (so no absolute path), `..` becomes `_..`, control characters
/// become `_`, a component over 255 bytes is shortened (keeping a short extension) with `~`
/// and a checksum of the whole added, and a path over 65,535 bytes keeps its first
/// directories, a checksum of the whole path and its last component. Never empty.
pub fn safe_entry_name(name: &str) -> String {
    let parts: Vec<String> = name
        .split(['/', '\\'])
        .filter(|c| !c.is_empty() && *c != ".")
        .map(|c| {
            let c: String = c
                .chars()
                .map(|ch| if ch.is_control() { '_' } else { ch })
                .collect();
            if c == ".." {
                "_..".to_owned()
            } else {
                fit_component(&c)
            }
        })
        .collect();
    let joined = parts.join("/");
    if joined.is_empty() {
        return "_".to_owned();
    }
    if joined.len() <= MAX_NAME {
        return joined;
    }
    // Over 255 levels deep: the directories that fit, a marker, the file's own name.
    let (last, dirs) = parts.split_last().expect("not empty");
    let marker = format!("~{:08x}", crc32_update(0, joined.as_bytes()));
    let budget = MAX_NAME - last.len() - marker.len() - 2;
    let mut out = String::new();
    for dir in dirs {
        if out.len() + dir.len() + 1 > budget {
            break;
        }
        out.push_str(dir);
        out.push('/');
    }
    out.push_str(&marker);
    out.push('/');
    out.push_str(last);
    out
}

/// A component of at most [`MAX_COMPONENT`] bytes, cut on a character boundary.
fn fit_component(c: &str) -> String {
    if c.len() <= MAX_COMPONENT {
        return c.to_owned();
    }
    let marker = format!("~{:08x}", crc32_update(0, c.as_bytes()));
    let ext = c
        .rfind('.')
        .map(|dot| &c[dot..])
        .filter(|ext| ext.len() <= 16)
        .unwrap_or("");
    let mut cut = MAX_COMPONENT - marker.len() - ext.len();
    while !c.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{marker}{ext}", &c[..cut])
}

/// Flags: bit 3 (sizes in a data descriptor) and bit 11 (UTF-8 names).
const FLAGS: u16 = 0x0808;
const U32_MAX: u64 = 0xFFFF_FFFF;

struct CentralEntry {
    name: Vec<u8>,
    crc: u32,
    size: u64,
    offset: u64,
    zip64: bool,
}

pub struct ZipStreamWriter<W: Write> {
    out: W,
    written: u64,
    entries: Vec<CentralEntry>,
    dos_time: u16,
    dos_date: u16,
}

impl<W: Write> ZipStreamWriter<W> {
    /// `unix_now` sets the modification time of every entry.
    pub fn new(out: W, unix_now: i64) -> ZipStreamWriter<W> {
        let (y, m, d) = super::store::civil_from_days(unix_now.div_euclid(86_400));
        let secs = unix_now.rem_euclid(86_400);
        let dos_date = (((y - 1980).clamp(0, 127) as u16) << 9) | ((m as u16) << 5) | d as u16;
        let dos_time = (((secs / 3600) as u16) << 11)
            | ((((secs / 60) % 60) as u16) << 5)
            | ((secs % 60) / 2) as u16;
        ZipStreamWriter {
            out,
            written: 0,
            entries: Vec::new(),
            dos_time,
            dos_date,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Add one file; `expected_size` decides whether ZIP64 fields are needed up front.
    pub fn add_file(
        &mut self,
        name: &str,
        mut content: impl Read,
        expected_size: u64,
    ) -> io::Result<()> {
        let offset = self.written;
        let zip64 = expected_size >= U32_MAX || offset >= U32_MAX;
        let name = safe_entry_name(name).into_bytes();
        let extra: Vec<u8> = if zip64 {
            let mut e = Vec::with_capacity(20);
            e.extend_from_slice(&1u16.to_le_bytes());
            e.extend_from_slice(&16u16.to_le_bytes());
            e.extend_from_slice(&[0u8; 16]);
            e
        } else {
            Vec::new()
        };
        let mut header = Vec::with_capacity(30 + name.len() + extra.len());
        header.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        header.extend_from_slice(&(if zip64 { 45u16 } else { 20u16 }).to_le_bytes());
        header.extend_from_slice(&FLAGS.to_le_bytes());
        header.extend_from_slice(&0u16.to_le_bytes()); // stored
        header.extend_from_slice(&self.dos_time.to_le_bytes());
        header.extend_from_slice(&self.dos_date.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes()); // crc: in the descriptor
        let size_field: u32 = if zip64 { u32::MAX } else { 0 };
        header.extend_from_slice(&size_field.to_le_bytes());
        header.extend_from_slice(&size_field.to_le_bytes());
        header.extend_from_slice(&(name.len() as u16).to_le_bytes());
        header.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        header.extend_from_slice(&name);
        header.extend_from_slice(&extra);
        self.put(&header)?;

        let mut crc = 0u32;
        let mut size = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = content.read(&mut buf)?;
            if n == 0 {
                break;
            }
            crc = crc32_update(crc, &buf[..n]);
            size += n as u64;
            self.put(&buf[..n])?;
        }
        if !zip64 && size >= U32_MAX {
            return Err(io::Error::other(
                "file grew past the ZIP32 limit while being zipped",
            ));
        }
        let mut descriptor = Vec::with_capacity(24);
        descriptor.extend_from_slice(&0x0807_4b50u32.to_le_bytes());
        descriptor.extend_from_slice(&crc.to_le_bytes());
        if zip64 {
            descriptor.extend_from_slice(&size.to_le_bytes());
            descriptor.extend_from_slice(&size.to_le_bytes());
        } else {
            descriptor.extend_from_slice(&(size as u32).to_le_bytes());
            descriptor.extend_from_slice(&(size as u32).to_le_bytes());
        }
        self.put(&descriptor)?;
        self.entries.push(CentralEntry {
            name,
            crc,
            size,
            offset,
            zip64,
        });
        Ok(())
    }

    /// Write the central directory and end records; returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        let cd_start = self.written;
        let entries = std::mem::take(&mut self.entries);
        for e in &entries {
            let mut extra = Vec::new();
            if e.zip64 {
                extra.extend_from_slice(&1u16.to_le_bytes());
                extra.extend_from_slice(&24u16.to_le_bytes());
                extra.extend_from_slice(&e.size.to_le_bytes());
                extra.extend_from_slice(&e.size.to_le_bytes());
                extra.extend_from_slice(&e.offset.to_le_bytes());
            }
            let (size32, offset32) = if e.zip64 {
                (u32::MAX, u32::MAX)
            } else {
                (e.size as u32, e.offset as u32)
            };
            let mut h = Vec::with_capacity(46 + e.name.len() + extra.len());
            h.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
            h.extend_from_slice(&(0x0300u16 | if e.zip64 { 45 } else { 20 }).to_le_bytes());
            h.extend_from_slice(&(if e.zip64 { 45u16 } else { 20u16 }).to_le_bytes());
            h.extend_from_slice(&FLAGS.to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes());
            h.extend_from_slice(&self.dos_time.to_le_bytes());
            h.extend_from_slice(&self.dos_date.to_le_bytes());
            h.extend_from_slice(&e.crc.to_le_bytes());
            h.extend_from_slice(&size32.to_le_bytes());
            h.extend_from_slice(&size32.to_le_bytes());
            h.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            h.extend_from_slice(&(extra.len() as u16).to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes()); // comment
            h.extend_from_slice(&0u16.to_le_bytes()); // disk
            h.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
            h.extend_from_slice(&(0o100644u32 << 16).to_le_bytes()); // regular file, rw-r--r--
            h.extend_from_slice(&offset32.to_le_bytes());
            h.extend_from_slice(&e.name);
            h.extend_from_slice(&extra);
            self.put(&h)?;
        }
        let cd_size = self.written - cd_start;
        let count = entries.len() as u64;
        if cd_start >= U32_MAX
            || cd_size >= U32_MAX
            || count >= 0xFFFF
            || entries.iter().any(|e| e.zip64)
        {
            let eocd64_at = self.written;
            let mut r = Vec::with_capacity(76);
            r.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
            r.extend_from_slice(&44u64.to_le_bytes());
            r.extend_from_slice(&0x032Du16.to_le_bytes());
            r.extend_from_slice(&45u16.to_le_bytes());
            r.extend_from_slice(&0u32.to_le_bytes());
            r.extend_from_slice(&0u32.to_le_bytes());
            r.extend_from_slice(&count.to_le_bytes());
            r.extend_from_slice(&count.to_le_bytes());
            r.extend_from_slice(&cd_size.to_le_bytes());
            r.extend_from_slice(&cd_start.to_le_bytes());
            r.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
            r.extend_from_slice(&0u32.to_le_bytes());
            r.extend_from_slice(&eocd64_at.to_le_bytes());
            r.extend_from_slice(&1u32.to_le_bytes());
            self.put(&r)?;
        }
        let mut end = Vec::with_capacity(22);
        end.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes());
        end.extend_from_slice(&(count.min(0xFFFF) as u16).to_le_bytes());
        end.extend_from_slice(&(count.min(0xFFFF) as u16).to_le_bytes());
        end.extend_from_slice(&(cd_size.min(U32_MAX) as u32).to_le_bytes());
        end.extend_from_slice(&(cd_start.min(U32_MAX) as u32).to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes());
        self.put(&end)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32_update(0, b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn archives_open_with_the_zip_crate() {
        let mut w = ZipStreamWriter::new(Vec::new(), 1_798_389_473);
        w.add_file("a/hello.txt", &b"hello"[..], 5).expect("add");
        w.add_file("caf\u{e9}.bin", &[0u8, 1, 2][..], 3)
            .expect("add");
        w.add_file("empty", &b""[..], 0).expect("add");
        let bytes = w.finish().expect("finish");
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("valid zip");
        assert_eq!(archive.len(), 3);
        let mut content = String::new();
        archive
            .by_name("a/hello.txt")
            .expect("entry")
            .read_to_string(&mut content)
            .expect("read");
        assert_eq!(content, "hello");
        let mut bin = Vec::new();
        archive
            .by_name("caf\u{e9}.bin")
            .expect("entry")
            .read_to_end(&mut bin)
            .expect("read");
        assert_eq!(bin, [0, 1, 2]);
    }

    #[test]
    fn entry_names_stay_inside_the_archive_and_fit() {
        assert_eq!(safe_entry_name("a/b.txt"), "a/b.txt");
        assert_eq!(safe_entry_name("/etc/passwd"), "etc/passwd");
        assert_eq!(safe_entry_name("f/../../x"), "f/_../_../x");
        assert_eq!(safe_entry_name("..\\..\\win.ini"), "_../_../win.ini");
        assert_eq!(safe_entry_name("./a//b\u{0}c"), "a/b_c");
        assert_eq!(safe_entry_name(""), "_");
        assert_eq!(safe_entry_name("/../"), "_..");
        let long = format!("{}.csv", "\u{e9}".repeat(200));
        let fitted = safe_entry_name(&format!("d/{long}"));
        let (dir, file) = fitted.split_once('/').expect("two components");
        assert_eq!(dir, "d");
        assert!(file.len() <= 255 && file.ends_with(".csv"), "{file}");
        assert_ne!(safe_entry_name(&long), safe_entry_name(&format!("x{long}")));
        let deep = format!("{}end.txt", "d123456789/".repeat(7_000));
        let fitted = safe_entry_name(&deep);
        assert!(fitted.len() <= 0xFFFF && fitted.ends_with("/end.txt"));
        assert!(fitted.starts_with("d123456789/d123456789/"));
    }

    #[test]
    fn a_hostile_name_makes_a_valid_archive() {
        let mut w = ZipStreamWriter::new(Vec::new(), 0);
        let huge = "x".repeat(70_000);
        w.add_file(&huge, &b"1"[..], 1).expect("add");
        w.add_file("../up.txt", &b"2"[..], 1).expect("add");
        let bytes = w.finish().expect("finish");
        let archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("valid zip");
        let names: Vec<&str> = archive.file_names().collect();
        assert_eq!(names.len(), 2);
        assert!(names.iter().all(|n| n.len() <= 255 && !n.starts_with("..")));
    }

    #[test]
    fn empty_archive_is_valid() {
        let bytes = ZipStreamWriter::new(Vec::new(), 0)
            .finish()
            .expect("finish");
        assert_eq!(bytes.len(), 22);
        assert_eq!(
            zip::ZipArchive::new(std::io::Cursor::new(bytes))
                .expect("valid")
                .len(),
            0
        );
    }
}
