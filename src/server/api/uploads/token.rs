//! Upload tokens `<userId>/<itemId>/<64 alphanumerics>` and the temporary file each names.

use std::path::PathBuf;

use crate::server::store::{random_alnum, Store};

/// A parsed, validated upload token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadToken {
    pub user_id: i64,
    pub item_id: i64,
    secret: String,
}

impl UploadToken {
    pub(super) fn new(user_id: i64, item_id: i64) -> UploadToken {
        UploadToken {
            user_id,
            item_id,
            secret: random_alnum(64),
        }
    }

    /// Accept only `<digits>/<digits>/<64 alphanumerics>`: nothing else ever becomes a path.
    pub fn parse(token: &str) -> Option<UploadToken> {
        let mut parts = token.split('/');
        let (user, item, secret) = (parts.next()?, parts.next()?, parts.next()?);
        let number = |s: &str| -> Option<i64> {
            if s.is_empty() || s.len() > 18 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        if parts.next().is_some()
            || secret.len() != 64
            || !secret.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return None;
        }
        Some(UploadToken {
            user_id: number(user)?,
            item_id: number(item)?,
            secret: secret.to_owned(),
        })
    }

    pub fn temp_path(&self, store: &Store) -> PathBuf {
        store
            .uploads_dir()
            .join(format!("{}_{}_{}", self.user_id, self.item_id, self.secret))
    }
}

impl std::fmt::Display for UploadToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.user_id, self.item_id, self.secret)
    }
}
