//! The objects Midas returns, decoded from its all-strings JSON.
//!
//! Every value arrives as a string (`"34"`, `""` for null, `"1"` for true) and every text field is
//! double-encoded (see [`super::text`]); the deserializers here turn them into numbers, options and
//! repaired text, so nothing above this module sees the wire format.

use serde::{Deserialize, Deserializer};

use super::text::repair;

/// An id as Midas sends it: a decimal string (sometimes negative: user roots have parent -1).
pub type Id = i64;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Folder {
    #[serde(deserialize_with = "int")]
    pub folder_id: Id,
    #[serde(deserialize_with = "int", default)]
    pub parent_id: Id,
    #[serde(deserialize_with = "text")]
    pub name: String,
    #[serde(deserialize_with = "text", default)]
    pub description: String,
    #[serde(default)]
    pub date_update: String,
    #[serde(default)]
    pub date_creation: String,
    /// "0" public, "2" private
    #[serde(deserialize_with = "int", default)]
    pub privacy_status: i64,
    #[serde(default)]
    pub uuid: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Item {
    #[serde(deserialize_with = "int")]
    pub item_id: Id,
    #[serde(deserialize_with = "text")]
    pub name: String,
    #[serde(deserialize_with = "text", default)]
    pub description: String,
    /// Not reliable (see the reference §2.6); sizes come from bitstreams.
    #[serde(deserialize_with = "opt_int", default)]
    pub sizebytes: Option<i64>,
    #[serde(default)]
    pub date_creation: String,
    #[serde(default)]
    pub date_update: String,
    #[serde(deserialize_with = "int", default)]
    pub privacy_status: i64,
    #[serde(default)]
    pub uuid: String,
    /// Only in `item.get` and searches: the first folder the item is linked into.
    #[serde(deserialize_with = "opt_int", default)]
    pub folder_id: Option<Id>,
    /// Only in `item.get`.
    #[serde(default)]
    pub revisions: Vec<Revision>,
}

impl Item {
    /// The revision with the highest number (Midas does not promise an order).
    pub fn head(&self) -> Option<&Revision> {
        self.revisions.iter().max_by_key(|r| r.revision)
    }

    /// The head revision's bitstream, when the head holds exactly one.
    pub fn only_bitstream(&self) -> Option<&Bitstream> {
        match self.head()?.bitstreams.as_slice() {
            [only] => Some(only),
            _ => None,
        }
    }
}

/// An item as `midas.solr.search.advanced` describes it: other field names than `item.get`'s,
/// `public` instead of a privacy code, and revisions and bitstreams as ids only.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct SolrItem {
    #[serde(deserialize_with = "int")]
    pub id: Id,
    #[serde(deserialize_with = "text")]
    pub name: String,
    #[serde(deserialize_with = "text", default)]
    pub description: String,
    #[serde(deserialize_with = "opt_int", default)]
    pub size: Option<i64>,
    #[serde(default)]
    pub date_created: String,
    #[serde(default)]
    pub date_updated: String,
    #[serde(default)]
    pub uuid: String,
    #[serde(deserialize_with = "flag", default)]
    pub public: bool,
    #[serde(deserialize_with = "opt_int", default)]
    pub folder_id: Option<Id>,
}

impl From<SolrItem> for Item {
    fn from(found: SolrItem) -> Item {
        Item {
            item_id: found.id,
            name: found.name,
            description: found.description,
            sizebytes: found.size,
            date_creation: found.date_created,
            date_update: found.date_updated,
            privacy_status: if found.public { PRIVACY_PUBLIC } else { 2 },
            uuid: found.uuid,
            folder_id: found.folder_id,
            revisions: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Revision {
    #[serde(deserialize_with = "int")]
    pub itemrevision_id: Id,
    #[serde(deserialize_with = "int", default)]
    pub item_id: Id,
    #[serde(deserialize_with = "int")]
    pub revision: i64,
    #[serde(default)]
    pub date: String,
    #[serde(deserialize_with = "text", default)]
    pub changes: String,
    #[serde(deserialize_with = "int", default)]
    pub user_id: Id,
    #[serde(default)]
    pub uuid: String,
    #[serde(default)]
    pub bitstreams: Vec<Bitstream>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Bitstream {
    #[serde(deserialize_with = "int")]
    pub bitstream_id: Id,
    #[serde(deserialize_with = "int", default)]
    pub itemrevision_id: Id,
    #[serde(deserialize_with = "text")]
    pub name: String,
    #[serde(deserialize_with = "text", default)]
    pub mimetype: String,
    #[serde(deserialize_with = "int", default)]
    pub sizebytes: i64,
    #[serde(default)]
    pub checksum: String,
    #[serde(default)]
    pub date: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct User {
    #[serde(deserialize_with = "int")]
    pub user_id: Id,
    #[serde(deserialize_with = "text")]
    pub firstname: String,
    #[serde(deserialize_with = "text")]
    pub lastname: String,
    #[serde(deserialize_with = "text", default)]
    pub email: String,
    #[serde(deserialize_with = "int")]
    pub folder_id: Id,
    #[serde(deserialize_with = "flag", default)]
    pub admin: bool,
    #[serde(default)]
    pub uuid: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Community {
    #[serde(deserialize_with = "int")]
    pub community_id: Id,
    #[serde(deserialize_with = "text")]
    pub name: String,
    #[serde(deserialize_with = "text", default)]
    pub description: String,
    #[serde(deserialize_with = "int")]
    pub folder_id: Id,
    /// 0 public, 1 private
    #[serde(deserialize_with = "int", default)]
    pub privacy: i64,
    #[serde(default)]
    pub creation: String,
    #[serde(default)]
    pub uuid: String,
}

/// The group every caller, anonymous or not, belongs to: a policy of this group on an object
/// makes the object public (`privacy_status` 0).
pub const ANONYMOUS_GROUP: Id = 0;

/// `privacy_status` of a folder or item anyone may read.
pub const PRIVACY_PUBLIC: i64 = 0;

/// What `midas.folder.set.privacy.recursive` returns: how many objects got the new policies
/// and how many the caller could not change.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub struct Changed {
    #[serde(deserialize_with = "int", default)]
    pub success: i64,
    #[serde(deserialize_with = "int", default)]
    pub failure: i64,
}

/// What `midas.folder.children` returns.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Children {
    #[serde(default)]
    pub folders: Vec<Folder>,
    #[serde(default)]
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct MetadataValue {
    #[serde(deserialize_with = "int", default)]
    pub metadatatype: i64,
    #[serde(deserialize_with = "text")]
    pub element: String,
    #[serde(deserialize_with = "text", default)]
    pub qualifier: String,
    #[serde(deserialize_with = "text", default)]
    pub value: String,
}

/// A JSON scalar as Midas may send it: normally a string, but be lenient with numbers and null.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Str(String),
    Int(i64),
    Bool(bool),
    Null,
}

impl Scalar {
    fn into_string(self) -> String {
        match self {
            Scalar::Str(s) => s,
            Scalar::Int(n) => n.to_string(),
            Scalar::Bool(true) => "1".into(),
            Scalar::Bool(false) | Scalar::Null => String::new(),
        }
    }
}

fn opt_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let s = Scalar::deserialize(d)?.into_string();
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("expected a number, got {s:?}")))
}

fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(opt_int(d)?.unwrap_or(0))
}

fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let s = Scalar::deserialize(d)?.into_string();
    Ok(!(s.is_empty() || s == "0"))
}

fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(repair(&Scalar::deserialize(d)?.into_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_strings_into_numbers_and_repairs_names() {
        let item: Item = serde_json::from_str(
            r#"{"item_id":"4","name":"caf\u00c3\u00a9","sizebytes":"","privacy_status":"2",
                "folder_id":"5","revisions":[{"itemrevision_id":"3","item_id":"4","revision":"1",
                "bitstreams":[{"bitstream_id":"3","name":"a","sizebytes":"10244","checksum":"x"}]}],
                "extraFields":[]}"#,
        )
        .unwrap();
        assert_eq!(item.item_id, 4);
        assert_eq!(item.name, "café");
        assert_eq!(item.sizebytes, None);
        assert_eq!(item.folder_id, Some(5));
        assert_eq!(item.head().unwrap().bitstreams[0].sizebytes, 10244);
    }

    #[test]
    fn rejects_garbage_numbers() {
        assert!(serde_json::from_str::<Folder>(r#"{"folder_id":"x","name":"a"}"#).is_err());
    }
}
