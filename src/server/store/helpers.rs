//! Small pure helpers of the store: asset paths, Midas dates, random keys and uuids, MD5,
//! password hashing and PHP's string quirks.

use std::time::{SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};
use rand::distr::{Alphanumeric, SampleString};

/// `d4/1d/d41d8cd98f00b204e9800998ecf8427e`, the `path` field of a bitstream.
pub fn asset_relative_path(checksum: &str) -> String {
    let (a, b) = (&checksum[0..2], &checksum[2..4]);
    format!("{a}/{b}/{checksum}")
}

pub fn is_md5_hex(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, the Midas date format.
pub fn format_date(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

pub fn now_date() -> String {
    format_date(unix_now())
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

pub fn random_alnum(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

/// 32 lower-case hex digits, like Midas's UuidComponent.
pub fn new_uuid() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn md5_hex(data: &[u8]) -> String {
    format!("{:x}", Md5::digest(data))
}

/// Salted, iterated MD5 (the only digest among our dependencies); slows guessing down.
pub fn hash_password(salt: &str, password: &str) -> String {
    let mut digest = Md5::digest(format!("{salt}{password}").as_bytes());
    for _ in 0..20_000 {
        let mut hasher = Md5::new();
        hasher.update(digest);
        hasher.update(salt.as_bytes());
        digest = hasher.finalize();
    }
    format!("{digest:x}")
}

/// PHP's `ucfirst`: upper-cases the first character if it is ASCII.
pub fn ucfirst(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}
