//! A reader of ZIP central directories for checking the archives of `midasfs serve`.
//!
//! Hand-made rather than the zip crate's `ZipArchive`, which keeps one entry per name: a Midas ZIP
//! can hold two bitstreams with the same name, and a test must see both.

/// One entry, as the central directory describes it.
#[derive(Debug, PartialEq)]
pub struct ZipEntry {
    pub name: String,
    /// 0 for stored, 8 for deflated.
    pub method: u16,
    pub crc32: u32,
    /// Uncompressed size.
    pub size: u64,
    /// The entry's bytes as they are in the archive (compressed unless `method` is 0).
    pub data: Vec<u8>,
}

impl ZipEntry {
    /// The content of a stored entry, checked against its CRC-32.
    pub fn stored_content(&self) -> Result<&[u8], String> {
        if self.method != 0 {
            return Err(format!("{}: compression method {}", self.name, self.method));
        }
        if crc32(&self.data) != self.crc32 {
            return Err(format!("{}: content does not match its CRC-32", self.name));
        }
        Ok(&self.data)
    }
}

/// The entries of a ZIP in central-directory order (no ZIP64: test archives are small).
pub fn entries(zip: &[u8]) -> Result<Vec<ZipEntry>, String> {
    let bytes = |at: usize, len: usize| {
        zip.get(at..at + len)
            .ok_or_else(|| format!("the ZIP ends before byte {}", at + len))
    };
    let u16_at = |at: usize| bytes(at, 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |at: usize| bytes(at, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let as_usize = |n: u32| usize::try_from(n).map_err(|e| e.to_string());
    let end = zip
        .windows(4)
        .rposition(|window| window == b"PK\x05\x06")
        .ok_or("no end-of-central-directory record")?;
    let count = u16_at(end + 10)?;
    let mut at = as_usize(u32_at(end + 16)?)?;
    let mut entries = Vec::new();
    for _ in 0..count {
        if bytes(at, 4)? != b"PK\x01\x02" {
            return Err(format!("no central directory entry at byte {at}"));
        }
        let compressed = as_usize(u32_at(at + 20)?)?;
        let name_len = usize::from(u16_at(at + 28)?);
        let header = as_usize(u32_at(at + 42)?)?;
        if bytes(header, 4)? != b"PK\x03\x04" {
            return Err(format!("no local header at byte {header}"));
        }
        let data_at =
            header + 30 + usize::from(u16_at(header + 26)?) + usize::from(u16_at(header + 28)?);
        entries.push(ZipEntry {
            name: String::from_utf8_lossy(bytes(at + 46, name_len)?).into_owned(),
            method: u16_at(at + 10)?,
            crc32: u32_at(at + 16)?,
            size: u64::from(u32_at(at + 24)?),
            data: bytes(data_at, compressed)?.to_vec(),
        });
        at += 46 + name_len + usize::from(u16_at(at + 30)?) + usize::from(u16_at(at + 32)?);
    }
    Ok(entries)
}

/// CRC-32 (IEEE), bit by bit: slow, but test archives are small.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
