//! The solr module (`midasfs serve --modules solr`): `midas.solr.search.advanced`, Midas's
//! Lucene search over items and their metadata, answered from the store itself.
//!
//! Midas's module keeps an Apache Solr index, updated when items and folders are saved
//! (`modules/solr/Notification.php`); here every query reads the store, so the "index" is always
//! current. Its documents, as the module makes them:
//!
//! - an item: `id` = `item_<ID>`, `key` = its id, `name`, `description`, and from its head
//!   revision one field per metadata value, named `<type>-<element>[.<qualifier>]` (`type` being
//!   `text`, `int`, `double`, `float`, `bool`, `long` or `string`; spaces as `__`), `metadata`
//!   (every value that is not a number, joined by spaces) and `md5` (the checksum of the head's
//!   last bitstream: the module overwrites it for each one);
//! - a folder: `id` = `folder_<ID>`, `key` = its id, `name`, `description`.
//!
//! `searchAdvanced` (`controllers/components/ApisearchComponent.php`) asks for `limit` × 5
//! documents, then loads the item whose id is each document's `key` (a folder's `key` too: a
//! folder named in a query brings the item with the same id, if there is one, as in Midas),
//! keeps those the caller may read, and stops at `limit` (default 25). Any failure of the search
//! is `-1 Syntax error in query`.
//!
//! The Lucene syntax understood (Solr's standard parser, default operator OR): terms, `field:value`,
//! `"quoted phrases"`, `field:(…)` and `(…)` groups, `AND`/`&&`, `OR`/`||`, `NOT`/`!`, `+`/`-`,
//! a `*` at the end of a term (prefix), `field:*` (the field has a value), `*:*` (everything),
//! `\` escaping one character. A term without a field searches `name`, `description` and
//! `metadata`. `id`, `key` and `md5` compare whole values, case-sensitively; every other field
//! is text: words (letters and digits) compared without case, a term of several words being a
//! phrase. Anything else (`?`, `~`, `^`, ranges, a `*` inside a term, an unbalanced quote or
//! parenthesis) is refused as a syntax error. Documents are returned in id order (items, then
//! folders), not by relevance.

use rusqlite::{Connection, OptionalExtension};
use serde_json::{json, Value};

use super::objects::{first_folder_id, item};
use super::{Call, Reply};
use crate::server::store::{can_item, READ};
use crate::server::wire::ApiError;

/// The module's name in `midas.modules.list`.
pub const MODULE: &str = "solr";

/// Fields that hold one whole value (Solr `string` fields), compared exactly.
const STRING_FIELDS: &[&str] = &["id", "key", "md5"];
/// The fields a term without a field searches.
const DEFAULT_FIELDS: &[&str] = &["name", "description", "metadata"];

fn syntax_error() -> ApiError {
    ApiError::new(-1, "Syntax error in query")
}

/// `midas.solr.search.advanced`: `query` (required), `limit` (optional, 25).
pub fn search_advanced(call: &Call<'_>, conn: &mut Connection) -> Result<Reply, ApiError> {
    let query = call.params.require("query")?;
    let caller = call.caller(conn)?;
    let limit = call.params.get("limit").map_or(25, php_int);
    let parsed = parse(query)?;
    if limit < 0 {
        // Solr refuses a negative number of rows; the module reports any failure this way.
        return Err(syntax_error());
    }
    let rows = usize::try_from(limit.saturating_mul(5)).unwrap_or(usize::MAX);
    let keys: Vec<i64> = documents(conn)?
        .iter()
        .filter(|doc| parsed.matches_top(doc))
        .take(rows)
        .map(|doc| doc.key)
        .collect();
    let mut items = Vec::new();
    for key in keys {
        if items.len() as i64 >= limit {
            break;
        }
        if item(conn, key)?.is_none() || !can_item(conn, caller, key, READ)? {
            continue;
        }
        items.push(item_info(conn, key)?);
    }
    Ok(Value::Array(items).into())
}

/// PHP's `(int)` of a string: leading blanks, a sign and digits; anything else is 0.
fn php_int(s: &str) -> i64 {
    let s = s.trim_start();
    let (sign, digits) = match s.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, s.strip_prefix('+').unwrap_or(s)),
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse::<i64>().map_or(0, |n| sign * n)
}

/// The record `searchAdvanced` makes of an item.
fn item_info(conn: &Connection, id: i64) -> Result<Value, ApiError> {
    let row = item(conn, id)?.ok_or_else(syntax_error)?;
    let mut info = json!({
        "id": row["item_id"],
        "name": row["name"],
        "description": row["description"],
        "size": row["sizebytes"],
        "date_created": row["date_creation"],
        "date_updated": row["date_update"],
        "uuid": row["uuid"],
        "views": row["view"],
        "downloads": row["download"],
        "public": row["privacy_status"] == 0,
    });
    if let Some(folder) = first_folder_id(conn, id)? {
        info["folder_id"] = Value::from(folder);
    }
    let revisions = ids(
        conn,
        "SELECT itemrevision_id FROM itemrevision WHERE item_id = ?1 ORDER BY itemrevision_id",
        id,
    )?;
    let head: Option<i64> = conn
        .query_row(
            "SELECT itemrevision_id FROM itemrevision WHERE item_id = ?1 ORDER BY revision DESC LIMIT 1",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    let bitstreams = match head {
        Some(head) => ids(
            conn,
            "SELECT bitstream_id FROM bitstream WHERE itemrevision_id = ?1 ORDER BY bitstream_id",
            head,
        )?,
        None => Vec::new(),
    };
    info["revisions"] = Value::from(revisions);
    info["bitstreams"] = Value::from(bitstreams);
    Ok(info)
}

fn ids(conn: &Connection, sql: &str, id: i64) -> rusqlite::Result<Vec<i64>> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map([id], |r| r.get(0))?;
    rows.collect()
}

// ---- the documents ----

/// One document of the index: its `key` and its fields.
struct Doc {
    key: i64,
    fields: Vec<(String, String)>,
}

impl Doc {
    fn values<'a>(&'a self, field: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(name, _)| name == field)
            .map(|(_, value)| value.as_str())
    }
}

/// Midas's names of metadata types (`MetadataModelBase::mapTypeToName`).
fn type_name(metadatatype: i64) -> &'static str {
    match metadatatype {
        1 => "int",
        2 => "double",
        3 => "float",
        4 => "bool",
        5 => "long",
        6 => "string",
        _ => "text",
    }
}

/// PHP 8's `is_numeric` of a string, closely enough: a decimal number, blanks around allowed.
fn is_numeric(value: &str) -> bool {
    let v = value.trim();
    !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | 'e' | 'E'))
        && v.parse::<f64>().is_ok()
}

/// Every document, as the module indexes them: items (by id), then folders (by id).
fn documents(conn: &Connection) -> rusqlite::Result<Vec<Doc>> {
    let mut docs = Vec::new();
    {
        let mut stmt = conn.prepare(
            "SELECT i.item_id, i.name, i.description, \
             (SELECT r.itemrevision_id FROM itemrevision r WHERE r.item_id = i.item_id ORDER BY r.revision DESC LIMIT 1) \
             FROM item i ORDER BY i.item_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<i64>>(3)?,
            ))
        })?;
        for row in rows {
            let (id, name, description, head) = row?;
            let mut fields = vec![
                ("id".to_owned(), format!("item_{id}")),
                ("key".to_owned(), id.to_string()),
                ("name".to_owned(), name),
                ("description".to_owned(), description),
            ];
            if let Some(head) = head {
                head_fields(conn, head, &mut fields)?;
            }
            docs.push(Doc { key: id, fields });
        }
    }
    let mut stmt =
        conn.prepare("SELECT folder_id, name, description FROM folder ORDER BY folder_id")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (id, name, description) = row?;
        docs.push(Doc {
            key: id,
            fields: vec![
                ("id".to_owned(), format!("folder_{id}")),
                ("key".to_owned(), id.to_string()),
                ("name".to_owned(), name),
                ("description".to_owned(), description),
            ],
        });
    }
    Ok(docs)
}

/// The fields an item's head revision `head` adds: its metadata, `metadata` and `md5`.
fn head_fields(
    conn: &Connection,
    head: i64,
    fields: &mut Vec<(String, String)>,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(
        "SELECT m.metadatatype, m.element, m.qualifier, v.value FROM metadatavalue v \
         JOIN metadata m ON m.metadata_id = v.metadata_id WHERE v.itemrevision_id = ?1 ORDER BY m.metadata_id",
    )?;
    let rows = stmt.query_map([head], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    let mut all = String::new();
    for row in rows {
        let (kind, element, qualifier, value) = row?;
        let mut name = format!("{}-{element}", type_name(kind));
        if !qualifier.is_empty() {
            name.push('.');
            name.push_str(&qualifier);
        }
        if !is_numeric(&value) {
            all.push(' ');
            all.push_str(&value);
        }
        fields.push((name.replace(' ', "__"), value));
    }
    fields.push(("metadata".to_owned(), all));
    let md5: Option<String> = conn
        .query_row(
            "SELECT checksum FROM bitstream WHERE itemrevision_id = ?1 ORDER BY bitstream_id DESC LIMIT 1",
            [head],
            |r| r.get(0),
        )
        .optional()?;
    fields.push(("md5".to_owned(), md5.unwrap_or_default()));
    Ok(())
}

// ---- the query ----

/// How a clause counts in a boolean query (Lucene's `Occur`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Occur {
    Must,
    Should,
    MustNot,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Query {
    /// A word or phrase (a term of several words is a phrase) in `field` or the default ones.
    Text {
        field: Option<String>,
        text: String,
    },
    /// A term ending in `*`.
    Prefix {
        field: Option<String>,
        prefix: String,
    },
    /// `field:*`.
    Exists(String),
    /// `*:*`.
    All,
    Bool(Vec<(Occur, Query)>),
}

/// The words of a text: runs of letters and digits, lower-cased.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn fields_of(field: &Option<String>) -> Vec<&str> {
    match field {
        Some(f) => vec![f.as_str()],
        None => DEFAULT_FIELDS.to_vec(),
    }
}

impl Query {
    /// A whole query: one made only of `NOT` clauses matches everything else (as in Solr).
    fn matches_top(&self, doc: &Doc) -> bool {
        match self {
            Query::Bool(clauses) if clauses.iter().all(|(o, _)| *o == Occur::MustNot) => {
                !clauses.iter().any(|(_, q)| q.matches(doc))
            }
            _ => self.matches(doc),
        }
    }

    fn matches(&self, doc: &Doc) -> bool {
        match self {
            Query::All => true,
            Query::Exists(field) => doc.values(field).any(|v| {
                if STRING_FIELDS.contains(&field.as_str()) {
                    !v.is_empty()
                } else {
                    !words(v).is_empty()
                }
            }),
            Query::Text { field, text } => fields_of(field).into_iter().any(|f| {
                if STRING_FIELDS.contains(&f) {
                    return doc.values(f).any(|v| v == text);
                }
                let wanted = words(text);
                !wanted.is_empty()
                    && doc.values(f).any(|v| {
                        let have = words(v);
                        have.windows(wanted.len()).any(|w| w == wanted.as_slice())
                    })
            }),
            Query::Prefix { field, prefix } => fields_of(field).into_iter().any(|f| {
                if STRING_FIELDS.contains(&f) {
                    return doc.values(f).any(|v| v.starts_with(prefix.as_str()));
                }
                let prefix = prefix.to_lowercase();
                doc.values(f)
                    .any(|v| words(v).iter().any(|w| w.starts_with(&prefix)))
            }),
            Query::Bool(clauses) => {
                let mut any_must = false;
                let mut any_should = false;
                let mut should_matched = false;
                for (occur, query) in clauses {
                    match occur {
                        Occur::Must => {
                            any_must = true;
                            if !query.matches(doc) {
                                return false;
                            }
                        }
                        Occur::MustNot => {
                            if query.matches(doc) {
                                return false;
                            }
                        }
                        Occur::Should => {
                            any_should = true;
                            should_matched = should_matched || query.matches(doc);
                        }
                    }
                }
                any_must || (any_should && should_matched)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Open,
    Close,
    Colon,
    Plus,
    Minus,
    Not,
    And,
    Or,
    Phrase(String),
    /// A word, and whether it ends with an unescaped `*` (the `*` is not in the text).
    Word(String, bool),
}

/// Characters of Lucene's syntax this subset does not take.
const REFUSED: &[char] = &['^', '~', '[', ']', '{', '}', '?', '/'];

fn tokens(query: &str) -> Result<Vec<Token>, ApiError> {
    let mut out = Vec::new();
    let mut chars = query.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | ':' | '+' | '-' | '!' => {
                chars.next();
                out.push(match c {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    ':' => Token::Colon,
                    '+' => Token::Plus,
                    '-' => Token::Minus,
                    _ => Token::Not,
                });
            }
            '"' => {
                chars.next();
                let mut text = String::new();
                loop {
                    match chars.next() {
                        None => return Err(syntax_error()),
                        Some('"') => break,
                        Some('\\') => text.push(chars.next().ok_or_else(syntax_error)?),
                        Some(c) => text.push(c),
                    }
                }
                out.push(Token::Phrase(text));
            }
            c if REFUSED.contains(&c) => return Err(syntax_error()),
            _ => {
                let mut text = String::new();
                let mut star = false;
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, '(' | ')' | ':' | '"') {
                        break;
                    }
                    if REFUSED.contains(&c) || star {
                        // `*` only at the end of a term
                        return Err(syntax_error());
                    }
                    chars.next();
                    match c {
                        '\\' => text.push(chars.next().ok_or_else(syntax_error)?),
                        '*' => star = true,
                        c => text.push(c),
                    }
                }
                out.push(match (text.as_str(), star) {
                    ("AND" | "&&", false) => Token::And,
                    ("OR" | "||", false) => Token::Or,
                    ("NOT", false) => Token::Not,
                    _ => Token::Word(text, star),
                });
            }
        }
    }
    Ok(out)
}

/// Parses the subset of Lucene's syntax described in the module's documentation.
fn parse(query: &str) -> Result<Query, ApiError> {
    let tokens = tokens(query)?;
    let mut parser = Parser { tokens, at: 0 };
    let clauses = parser.clauses(None, 0)?;
    if parser.at != parser.tokens.len() {
        return Err(syntax_error());
    }
    Ok(Query::Bool(clauses))
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

/// Groups nest at most this deep.
const MAX_DEPTH: usize = 32;

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn bump(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    /// Clauses up to the end or a `)`, combined as Lucene's classic parser does.
    fn clauses(
        &mut self,
        field: Option<&str>,
        depth: usize,
    ) -> Result<Vec<(Occur, Query)>, ApiError> {
        if depth > MAX_DEPTH {
            return Err(syntax_error());
        }
        let mut clauses: Vec<(Occur, Query)> = Vec::new();
        while let Some(token) = self.peek() {
            if *token == Token::Close {
                break;
            }
            let conjunction = match token {
                Token::And | Token::Or if clauses.is_empty() => return Err(syntax_error()),
                Token::And | Token::Or => self.bump(),
                _ => None,
            };
            let occur = match self.peek() {
                Some(Token::Plus) => {
                    self.bump();
                    Some(Occur::Must)
                }
                Some(Token::Minus | Token::Not) => {
                    self.bump();
                    Some(Occur::MustNot)
                }
                _ => None,
            };
            let query = self.clause(field, depth)?;
            if conjunction == Some(Token::And) {
                if let Some(last) = clauses.last_mut() {
                    if last.0 == Occur::Should {
                        last.0 = Occur::Must;
                    }
                }
            }
            let occur = occur.unwrap_or(if conjunction == Some(Token::And) {
                Occur::Must
            } else {
                Occur::Should
            });
            clauses.push((occur, query));
        }
        if clauses.is_empty() {
            return Err(syntax_error());
        }
        Ok(clauses)
    }

    /// One term, phrase or group, with its field if it names one.
    fn clause(&mut self, field: Option<&str>, depth: usize) -> Result<Query, ApiError> {
        match self.bump() {
            Some(Token::Word(word, star)) if self.peek() == Some(&Token::Colon) => {
                self.bump();
                let named = if star && word.is_empty() {
                    "*".to_owned()
                } else if star {
                    return Err(syntax_error());
                } else {
                    word
                };
                match self.bump() {
                    Some(Token::Word(value, true)) if value.is_empty() => Ok(if named == "*" {
                        Query::All
                    } else {
                        Query::Exists(named)
                    }),
                    _ if named == "*" => Err(syntax_error()),
                    Some(Token::Word(value, star)) => Ok(term(Some(named), value, star)),
                    Some(Token::Phrase(text)) => Ok(Query::Text {
                        field: Some(named),
                        text,
                    }),
                    Some(Token::Open) => self.group(Some(&named), depth),
                    _ => Err(syntax_error()),
                }
            }
            Some(Token::Word(word, star)) if !word.is_empty() => {
                Ok(term(field.map(str::to_owned), word, star))
            }
            Some(Token::Phrase(text)) => Ok(Query::Text {
                field: field.map(str::to_owned),
                text,
            }),
            Some(Token::Open) => self.group(field, depth),
            _ => Err(syntax_error()),
        }
    }

    fn group(&mut self, field: Option<&str>, depth: usize) -> Result<Query, ApiError> {
        let clauses = self.clauses(field, depth + 1)?;
        match self.bump() {
            Some(Token::Close) => Ok(Query::Bool(clauses)),
            _ => Err(syntax_error()),
        }
    }
}

fn term(field: Option<String>, text: String, star: bool) -> Query {
    if star {
        Query::Prefix {
            field,
            prefix: text,
        }
    } else {
        Query::Text { field, text }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(fields: &[(&str, &str)]) -> Doc {
        Doc {
            key: 1,
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn hits(query: &str, doc: &Doc) -> bool {
        parse(query).expect(query).matches_top(doc)
    }

    #[test]
    fn the_subset_of_lucene_matches_as_solr_would() {
        let scan = doc(&[
            ("id", "item_7"),
            ("key", "7"),
            ("name", "brain scan.nii"),
            ("description", ""),
            ("text-modality", "CT"),
            ("text-contributor.author", "Jane Doe"),
            ("int-slices", "42"),
            ("metadata", " CT Jane Doe"),
            ("md5", "abc123"),
        ]);
        for yes in [
            "text-modality:CT",
            "text-modality:ct",
            "text-modality:C*",
            "text-contributor.author:\"jane doe\"",
            "text-contributor.author:(jane AND doe)",
            "jane",
            "name:scan.nii",
            "brain AND NOT text-modality:MR",
            "+name:brain -name:liver",
            "text-modality:MR OR int-slices:42",
            "-name:liver",
            "id:item_*",
            "md5:abc123",
            "int-slices:*",
            "*:*",
            "text-modality:CT && (name:brain || name:liver)",
            "name:br\\ain",
        ] {
            assert!(hits(yes, &scan), "{yes}");
        }
        for no in [
            "text-modality:MR",
            "text-modality:CT AND name:liver",
            "name:\"scan brain\"",
            "id:folder_*",
            "md5:ABC123",
            "text-other:*",
            "NOT text-modality:CT",
            "text-modality:CT -name:brain",
            "metadata:42",
        ] {
            assert!(!hits(no, &scan), "{no}");
        }
    }

    #[test]
    fn what_the_subset_cannot_parse_is_a_syntax_error() {
        for bad in [
            "",
            "   ",
            "name:",
            "(name:a",
            "name:a)",
            "\"open",
            "AND name:a",
            "name:a AND",
            "name:a~2",
            "name:a^3",
            "name:[a TO b]",
            "na*me:a",
            "name:a*b",
            "name:?a",
            "*",
            "name:/re/",
            "()",
        ] {
            let err = parse(bad).expect_err(bad);
            assert_eq!(
                (err.code, err.message.as_str()),
                (-1, "Syntax error in query")
            );
        }
    }

    #[test]
    fn limits_are_read_as_php_casts_them() {
        assert_eq!(php_int("10"), 10);
        assert_eq!(php_int(" 7abc"), 7);
        assert_eq!(php_int("abc"), 0);
        assert_eq!(php_int("-3"), -3);
        assert!(is_numeric(" 4.5 ") && !is_numeric("inf") && !is_numeric("CT"));
    }
}
