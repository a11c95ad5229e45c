//! How Midas names become file names, and back.
//!
//! Midas accepts any name: `/`, NUL, `.` and `..` included, and duplicates can exist (renames and
//! shares are never checked). A directory entry can hold none of these, so:
//! - `/` is shown as `∕` (U+2215 DIVISION SLASH) and NUL as `␀` (U+2400); `.` and `..` as `․` and `‥`
//!   (U+2024, U+2025). The mapping is reversed for names written through the mount.
//! - When two entries of a directory would get the same name, the one that sorts first (folders
//!   before items, then the lower Midas id) keeps it and the others get ` (item 42)` or
//!   ` (folder 7)` before their extension. Ids never change, so the names are stable across mounts.

use std::collections::{HashMap, HashSet};

const SLASH: char = '\u{2215}';
const NUL: char = '\u{2400}';
const DOT: &str = "\u{2024}";
const DOT_DOT: &str = "\u{2025}";

/// The longest file name (in bytes) Linux programs can use: longer names are shortened when
/// shown, and refused (ENAMETOOLONG) when given.
pub const NAME_MAX: usize = 255;

/// Extensions longer than this are not kept when a long name is shortened.
const LONGEST_EXTENSION: usize = 32;

/// The file name shown for a Midas name.
pub fn to_display(name: &str) -> String {
    match name {
        "." => DOT.to_owned(),
        ".." => DOT_DOT.to_owned(),
        _ => name
            .replace('/', &SLASH.to_string())
            .replace('\0', &NUL.to_string()),
    }
}

/// The Midas name for a file name written through the mount.
pub fn to_midas(display: &str) -> String {
    match display {
        DOT => ".".to_owned(),
        DOT_DOT => "..".to_owned(),
        _ => display.replace(SLASH, "/").replace(NUL, "\0"),
    }
}

/// What an entry is, for the tie-break and the suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    Folder(i64),
    Item(i64),
    Bitstream(i64),
}

impl Origin {
    fn suffix(self) -> String {
        match self {
            Origin::Folder(id) => format!(" (folder {id})"),
            Origin::Item(id) => format!(" (item {id})"),
            Origin::Bitstream(id) => format!(" (bitstream {id})"),
        }
    }

    fn is_file_like(self) -> bool {
        !matches!(self, Origin::Folder(_))
    }
}

/// Gives every entry a distinct display name of at most [`NAME_MAX`] bytes; `entries` holds
/// display names, rewritten in place.
pub fn disambiguate(entries: &mut [(String, Origin)]) {
    let original: Vec<String> = entries.iter().map(|(name, _)| name.clone()).collect();
    let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, (name, _)) in entries.iter().enumerate() {
        by_name.entry(name.clone()).or_default().push(i);
    }
    let mut taken: HashSet<String> = entries.iter().map(|(n, _)| n.clone()).collect();
    for indexes in by_name.values_mut().filter(|v| v.len() > 1) {
        indexes.sort_by_key(|&i| entries[i].1);
        for &i in &indexes[1..] {
            let (name, origin) = &entries[i];
            let mut renamed = with_suffix(name, &origin.suffix(), origin.is_file_like());
            while taken.contains(&renamed) {
                renamed = with_suffix(&renamed, &origin.suffix(), origin.is_file_like());
            }
            taken.insert(renamed.clone());
            entries[i].0 = renamed;
        }
    }
    for (i, (name, origin)) in entries.iter_mut().enumerate() {
        if name.len() <= NAME_MAX {
            continue;
        }
        let mut suffix = origin.suffix();
        let mut fitted = fit(&original[i], &suffix, origin.is_file_like());
        // Only a real name that happens to look like this could clash: repeat the suffix.
        while taken.contains(&fitted) {
            suffix.push_str(&origin.suffix());
            fitted = fit(&original[i], &suffix, origin.is_file_like());
        }
        log::debug!(
            "{:?} is too long for a file name: shown as {fitted:?}",
            original[i]
        );
        taken.insert(fitted.clone());
        *name = fitted;
    }
}

/// `name` cut so that with `suffix` (before a kept extension) it has at most [`NAME_MAX`] bytes.
fn fit(name: &str, suffix: &str, keep_extension: bool) -> String {
    let extension = match name.rfind('.') {
        Some(dot) if keep_extension && dot > 0 && name.len() - dot <= LONGEST_EXTENSION => {
            &name[dot..]
        }
        _ => "",
    };
    let stem = &name[..name.len() - extension.len()];
    let mut budget = NAME_MAX
        .saturating_sub(suffix.len() + extension.len())
        .min(stem.len());
    while !stem.is_char_boundary(budget) {
        budget -= 1;
    }
    format!("{}{suffix}{extension}", &stem[..budget])
}

/// Whether a name given through the mount is too long to be a file name.
pub fn too_long(name: &str) -> bool {
    name.len() > NAME_MAX
}

/// `report.txt` + ` (item 4)` → `report (item 4).txt`; the extension is kept so programs still
/// recognise the file. Names without an extension, or hidden files, get the suffix at the end.
fn with_suffix(name: &str, suffix: &str, keep_extension: bool) -> String {
    match name.rfind('.') {
        Some(dot) if keep_extension && dot > 0 => {
            format!("{}{suffix}{}", &name[..dot], &name[dot..])
        }
        _ => format!("{name}{suffix}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_unrepresentable_names_reversibly() {
        for name in ["a/b", "x\0y", ".", "..", "plain", "café/日本"] {
            let shown = to_display(name);
            assert!(!shown.contains('/') && !shown.contains('\0') && shown != "." && shown != "..");
            assert_eq!(to_midas(&shown), name);
        }
    }

    #[test]
    fn disambiguates_deterministically() {
        let mut entries = vec![
            ("data.csv".to_owned(), Origin::Item(9)),
            ("data.csv".to_owned(), Origin::Folder(3)),
            ("data.csv".to_owned(), Origin::Item(4)),
            ("other".to_owned(), Origin::Item(1)),
        ];
        disambiguate(&mut entries);
        let names: Vec<_> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "data (item 9).csv",
                "data.csv",
                "data (item 4).csv",
                "other"
            ]
        );
        // The same set in another order gives the same names.
        let mut again = vec![
            ("data.csv".to_owned(), Origin::Item(4)),
            ("other".to_owned(), Origin::Item(1)),
            ("data.csv".to_owned(), Origin::Item(9)),
            ("data.csv".to_owned(), Origin::Folder(3)),
        ];
        disambiguate(&mut again);
        assert_eq!(again[0].0, "data (item 4).csv");
        assert_eq!(again[3].0, "data.csv");
    }

    #[test]
    fn long_names_are_shortened_uniquely_and_stably() {
        let long = format!("{}.csv", "é".repeat(200));
        let mut entries = vec![
            (long.clone(), Origin::Item(7)),
            (long.clone(), Origin::Item(8)),
            ("x".repeat(300), Origin::Folder(9)),
            ("short.txt".to_owned(), Origin::Item(1)),
        ];
        disambiguate(&mut entries);
        for (name, _) in &entries {
            assert!(name.len() <= NAME_MAX, "{} bytes", name.len());
        }
        assert!(entries[0].0.ends_with(" (item 7).csv"), "{}", entries[0].0);
        assert!(entries[0].0.starts_with("éé"));
        assert!(entries[1].0.ends_with(" (item 8).csv"), "{}", entries[1].0);
        assert!(entries[2].0.ends_with(" (folder 9)"));
        assert_eq!(entries[3].0, "short.txt");
        let mut again = vec![(long, Origin::Item(8))];
        disambiguate(&mut again);
        assert_eq!(again[0].0, entries[1].0);
    }

    #[test]
    fn suffix_never_collides_with_a_real_name() {
        let mut entries = vec![
            ("a".to_owned(), Origin::Item(1)),
            ("a".to_owned(), Origin::Item(2)),
            ("a (item 2)".to_owned(), Origin::Item(3)),
        ];
        disambiguate(&mut entries);
        let names: HashSet<_> = entries.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(names.len(), 3);
    }
}
