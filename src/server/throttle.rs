//! Login throttling for `midas.login` and `midas.user.apikey.default`: Midas 3.4.2 has none,
//! and a server facing a network must not let anyone guess passwords at full speed.
//!
//! Failures are counted per account *from one address* and per address (any account). From
//! the 5th failure for an account at one address (the 20th from one address), further
//! attempts from there are refused — without checking the credentials — for 30 s, doubling
//! with each further failure up to 15 minutes. Counts are forgotten an hour after the last
//! failure; a success clears the account's count at that address only. So a right password
//! still works from any other address: guessing at one account cannot lock its owner out.
//! Addresses are whole IPv6 /64 networks (one host usually has all of one).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::wire::ApiError;

/// Failures of one account from one address before attempts are refused.
const ACCOUNT_FAILURES: u32 = 5;
/// Failures from one address, any account, before its attempts are refused.
const ADDRESS_FAILURES: u32 = 20;
/// The first refusal period; it doubles with every further failure.
const FIRST_LOCK: Duration = Duration::from_secs(30);
const LONGEST_LOCK: Duration = Duration::from_secs(15 * 60);
/// Failures this old are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);
/// Entries kept at most; beyond it, forgotten and then unlocked ones are dropped first.
const MAX_ENTRIES: usize = 100_000;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum Key {
    Account(String, Option<IpAddr>),
    Address(IpAddr),
}

struct Entry {
    failures: u32,
    last: Instant,
}

impl Entry {
    /// Until when attempts are refused, if `threshold` failures are reached.
    fn locked_until(&self, threshold: u32) -> Option<Instant> {
        let over = self.failures.checked_sub(threshold)?;
        let lock = FIRST_LOCK
            .checked_mul(1u32.checked_shl(over).unwrap_or(u32::MAX))
            .unwrap_or(LONGEST_LOCK)
            .min(LONGEST_LOCK);
        Some(self.last + lock)
    }
}

#[derive(Default)]
pub struct LoginThrottle {
    entries: Mutex<HashMap<Key, Entry>>,
}

/// The address as counted: IPv4 (also when mapped into IPv6) or the IPv6 /64.
fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

impl LoginThrottle {
    fn keys(email: &str, client: Option<IpAddr>) -> [(Key, u32); 2] {
        let client = client.map(network);
        let account = (
            Key::Account(email.trim().to_lowercase(), client),
            ACCOUNT_FAILURES,
        );
        // Without an address, the account key (address none) is also the address key.
        let address = match client {
            Some(ip) => (Key::Address(ip), ADDRESS_FAILURES),
            None => account.clone(),
        };
        [account, address]
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses (−150, with the wait) while this account at this address, or this address,
    /// is throttled.
    pub fn check(&self, email: &str, client: Option<IpAddr>) -> Result<(), ApiError> {
        let now = Instant::now();
        let entries = self.lock();
        let wait = Self::keys(email, client)
            .iter()
            .filter_map(|(key, threshold)| entries.get(key)?.locked_until(*threshold))
            .filter(|until| *until > now)
            .max()
            .map(|until| until - now);
        match wait {
            Some(wait) => Err(ApiError::invalid(format!(
                "Too many failed logins; try again in {} s",
                wait.as_secs() + 1
            ))),
            None => Ok(()),
        }
    }

    /// Counts a wrong email, API key or password.
    pub fn failed(&self, email: &str, client: Option<IpAddr>) {
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, e| now.duration_since(e.last) < FORGET_AFTER);
        }
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|key, e| {
                let threshold = match key {
                    Key::Account(..) => ACCOUNT_FAILURES,
                    Key::Address(_) => ADDRESS_FAILURES,
                };
                e.locked_until(threshold).is_some_and(|until| until > now)
            });
        }
        for (key, _) in Self::keys(email, client) {
            let entry = entries.entry(key).or_insert(Entry {
                failures: 0,
                last: now,
            });
            if now.duration_since(entry.last) >= FORGET_AFTER {
                entry.failures = 0;
            }
            entry.failures = entry.failures.saturating_add(1);
            entry.last = now;
        }
    }

    /// A login that succeeded clears its account's count at its address (not the address's:
    /// an attacker's own account must not reset the count of its guesses at others).
    pub fn succeeded(&self, email: &str, client: Option<IpAddr>) {
        let [(account, _), _] = Self::keys(email, client);
        self.lock().remove(&account);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("an address"))
    }

    #[test]
    fn five_failures_lock_the_account_at_that_address_only() {
        let t = LoginThrottle::default();
        for _ in 0..ACCOUNT_FAILURES {
            t.check("a@x", ip("10.0.0.1")).expect("not yet locked");
            t.failed("A@x", ip("10.0.0.1"));
        }
        let refused = t.check("a@x", ip("10.0.0.1")).expect_err("locked");
        assert_eq!(refused.code, crate::midas::codes::INVALID_PARAMETER);
        assert!(refused.message.contains("try again in 30 s"), "{refused:?}");
        t.check("a@x", ip("10.0.0.2")).expect("another address");
        t.check("b@x", ip("10.0.0.1")).expect("another account");
        t.succeeded("a@x", ip("10.0.0.2"));
        t.check("a@x", ip("10.0.0.1"))
            .expect_err("still locked there");
    }

    #[test]
    fn many_accounts_from_one_address_lock_the_address() {
        let t = LoginThrottle::default();
        for i in 0..ADDRESS_FAILURES {
            t.check(&format!("u{i}@x"), ip("2001:db8::1"))
                .expect("open");
            t.failed(&format!("u{i}@x"), ip("2001:db8::1"));
        }
        t.check("new@x", ip("2001:db8::2")).expect_err("same /64");
        t.check("new@x", ip("2001:db8:0:1::1"))
            .expect("another /64");
    }

    #[test]
    fn the_lock_doubles_up_to_a_bound() {
        let entry = |failures| Entry {
            failures,
            last: Instant::now(),
        };
        let lock = |failures| {
            let e = entry(failures);
            e.locked_until(5).map(|until| until - e.last)
        };
        assert_eq!(lock(4), None);
        assert_eq!(lock(5), Some(FIRST_LOCK));
        assert_eq!(lock(6), Some(FIRST_LOCK * 2));
        assert_eq!(lock(200), Some(LONGEST_LOCK));
    }
}
