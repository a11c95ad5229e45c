//! Inodes that stand for a file under another number: a new file's inode once its upload made
//! it an item, the renamed file's inode after a save by rename (see `replace`). The kernel
//! keeps using them (a descriptor opened before, `/proc/PID/fd/N`) while a lookup of the name
//! gives the item's own inode, so a save through either shows in both (see `save::show_saved`).
//! Kept until the kernel forgets the inode: bounded by the inodes the kernel holds.

use std::collections::HashMap;

#[derive(Default)]
pub(in crate::fs) struct Aliases {
    /// Each alias, and the inode it stood for when recorded.
    of: HashMap<u64, u64>,
    /// Each inode stood for, and its aliases.
    by: HashMap<u64, Vec<u64>>,
}

impl Aliases {
    /// `alias` now stands for `canonical` (or for itself again when they are equal).
    pub(in crate::fs) fn set(&mut self, alias: u64, canonical: u64) {
        self.forget(alias);
        if alias != canonical {
            self.of.insert(alias, canonical);
            self.by.entry(canonical).or_default().push(alias);
        }
    }

    /// The kernel forgot `alias`.
    pub(in crate::fs) fn forget(&mut self, alias: u64) {
        let Some(canonical) = self.of.remove(&alias) else {
            return;
        };
        if let Some(aliases) = self.by.get_mut(&canonical) {
            aliases.retain(|a| *a != alias);
            if aliases.is_empty() {
                self.by.remove(&canonical);
            }
        }
    }

    /// The aliases recorded for `canonical`.
    pub(in crate::fs) fn of(&self, canonical: u64) -> &[u64] {
        self.by.get(&canonical).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alias_is_found_by_what_it_stands_for_until_forgotten_or_moved() {
        let mut aliases = Aliases::default();
        aliases.set(10, 1);
        aliases.set(11, 1);
        assert_eq!(aliases.of(1), [10, 11]);
        aliases.set(10, 2);
        assert_eq!((aliases.of(1), aliases.of(2)), (&[11][..], &[10][..]));
        aliases.forget(11);
        aliases.set(10, 10);
        assert!(aliases.of(1).is_empty() && aliases.of(2).is_empty());
        assert!(aliases.of.is_empty());
        assert!(aliases.by.is_empty(), "nothing left behind");
    }
}
