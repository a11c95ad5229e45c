//! Local test trees: generated content and a `diff -r` assertion.

use std::path::Path;
use std::process::Command;

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

/// `root/tree` with the awkward cases: an empty file, unicode names, nesting, binary content, and
/// a file of several MiB (larger than the block cache of a `--cache-size 1` mount).
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
    write("tree/big.bin", &pseudo_random(3 * 1024 * 1024 + 123, 11));
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
