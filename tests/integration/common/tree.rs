//! Local test trees: generated content and a `diff -r` assertion.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Deterministic bytes that do not compress or repeat (xorshift).
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// A seed no other call in this run of the tests gets: tests that run at once on one server
/// must not write the same large content (see [`make_tree`]).
pub fn fresh_seed() -> u64 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32) ^ CALLS.fetch_add(1, Ordering::Relaxed)
}

/// `root/tree` with the awkward cases: an empty file, unicode names, nesting, binary content, and
/// a file of several MiB (larger than the block cache of a `--cache-size 1` mount).
///
/// The large file's content is new on every call. Midas links content it holds already (by
/// MD5) and removes the stored file when the last bitstream of that content goes, without a
/// lock: tests writing the same content while others delete theirs would hit that race of the
/// server's (the mount's part in it is tested on its own, in mount_write).
pub fn make_tree(root: &Path) {
    let write = |rel: &str, data: &[u8]| {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    };
    write("tree/hello.txt", b"Hello from midasfs!\n");
    write("tree/empty.txt", b"");
    write("tree/caf\u{e9}.txt", "d\u{e9}j\u{e0} vu\n".as_bytes());
    write(
        "tree/\u{65e5}\u{672c}\u{8a9e}/\u{30c7}\u{30fc}\u{30bf}.csv",
        b"a,b\n1,2\n",
    );
    write("tree/nested/a/b/deep.bin", &pseudo_random(100_000, 7));
    write(
        "tree/big.bin",
        &pseudo_random(3 * 1024 * 1024 + 123, fresh_seed()),
    );
}

/// Asserts that two trees hold the same names and bytes.
pub fn diff_r(expected: &Path, actual: &Path) {
    let out = Command::new("diff")
        .arg("-r")
        .arg(expected)
        .arg(actual)
        .output()
        .expect("run diff");
    assert!(
        out.status.success(),
        "trees differ:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
