//! JSON answers decoded while they arrive, so that a folder of any real size lists without its
//! whole answer in memory, and a hostile endless answer stops at a bound instead of filling it.
//!
//! The body's chunks go, as they come, to a parser on a blocking thread (an answer announced at
//! 256 KiB or less is read first and parsed in place). On the way they pass a
//! [`Filter`] that does what [`super::envelope::parse`] does to a whole body (skips PHP warnings
//! before the envelope, turns invalid UTF-8 and lone surrogate escapes into U+FFFD) and
//! enforces the bounds: an answer holds at most [`MAX_ENTRIES`] entries (objects in a list) of
//! at most [`MAX_ENTRY_BYTES`] each, at most [`MAX_OTHER_BYTES`] besides its entries, and at
//! most its call's byte limit in all. The decoder reads the envelope `{"code","data","message",
//! "stat"}` and decodes `data` straight into the call's type, one list element after the other.

use std::collections::VecDeque;
use std::io::{self, BufReader, Read};
use std::marker::PhantomData;
use std::time::Duration;

use bytes::Bytes;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess};
use serde::Deserializer as _;
use serde_json::Value;
use tokio::sync::mpsc;

use super::envelope;
use super::error::Error;
use super::text::repair;
use super::transfer;
use super::Result;

/// Entries (objects directly inside a list: folders, items, users…) one answer may hold: far
/// more than any real folder (Midas's own web pages give up long before), few enough that a
/// hostile endless list stops after a few hundred MB of memory.
pub const MAX_ENTRIES: usize = 1_000_000;
/// The longest entry: a real one is under 1 KiB, and Midas's longest text field (a 64 KiB
/// description, double-encoded and escaped) stays under this.
pub const MAX_ENTRY_BYTES: usize = 1 << 20;
/// Bytes of an answer outside its entries (the envelope, separators, a PHP warning before it).
pub const MAX_OTHER_BYTES: usize = 64 << 20;
/// The longest list answer read (a folder of 1,000,000 typical entries takes about 450 MB).
pub const MAX_LIST_BYTES: usize = 1 << 30;

/// Deepest nesting of lists and objects (Midas's answers go 5 deep).
const MAX_DEPTH: usize = 64;
/// Chunks in flight between the socket and the parser.
const CHUNKS_IN_FLIGHT: usize = 16;
/// The parser's read buffer.
const PARSE_BUFFER: usize = 64 << 10;
/// Answers announced at most this long are read first and decoded in place: most answers are
/// small, and a thread per call would only cost time and memory.
const SMALL_ANSWER: u64 = 256 << 10;
/// Longest piece of a non-JSON answer quoted in an error.
const QUOTE_LIMIT: usize = 120;
/// The start of every Midas envelope, searched for when the body does not start with `{`.
const ENVELOPE_START: &[u8] = br#"{"code""#;

/// Reads `response`'s body (each chunk within `stall`) and decodes it as a Midas envelope whose
/// data is a `T`, reading at most `limit` bytes in all.
pub(crate) async fn decode_response<T>(
    method: &str,
    shown: &str,
    mut response: reqwest::Response,
    stall: Duration,
    limit: usize,
) -> Result<T>
where
    T: DeserializeOwned + Send + 'static,
{
    if response.content_length().is_some_and(|n| n <= SMALL_ANSWER) {
        let mut chunks = VecDeque::new();
        while let Some(chunk) = transfer::body_chunk(&mut response, method, shown, stall).await? {
            chunks.push_back(chunk);
        }
        let reader = Reader::new(Source::Arrived(chunks), Filter::new(method, limit));
        return decode(method, shown, reader);
    }
    let (chunks, arriving) = mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    let parser = {
        let (method, shown) = (method.to_owned(), shown.to_owned());
        tokio::task::spawn_blocking(move || {
            let reader = Reader::new(Source::Arriving(arriving), Filter::new(&method, limit));
            decode(&method, &shown, reader)
        })
    };
    let pumped = loop {
        match transfer::body_chunk(&mut response, method, shown, stall).await {
            Ok(Some(chunk)) => {
                if chunks.send(chunk).await.is_err() {
                    // The parser is done (the envelope ended, or an error): nothing more to read.
                    break Ok(());
                }
            }
            Ok(None) => break Ok(()),
            Err(err) => break Err(err),
        }
    };
    drop(chunks);
    let parsed = parser.await.unwrap_or_else(|err| {
        Err(Error::Io(io::Error::other(format!(
            "{method}: the answer's parser failed: {err}"
        ))))
    });
    match (pumped, parsed) {
        (_, Ok(data)) => Ok(data),
        (Err(transport), Err(_)) => Err(transport),
        (Ok(()), Err(err)) => Err(err),
    }
}

/// Decodes an envelope from `reader` (see [`decode_response`]); `shown` is the redacted URL.
fn decode<T: DeserializeOwned>(method: &str, shown: &str, reader: Reader) -> Result<T> {
    let mut reader = BufReader::with_capacity(PARSE_BUFFER, reader);
    let mut deserializer = serde_json::Deserializer::from_reader(&mut reader);
    let parsed = deserializer.deserialize_map(EnvelopeVisitor::<T>(PhantomData));
    let filter = &reader.get_ref().filter;
    if filter.repaired {
        log::warn!(
            "{method}: the answer holds text that is not Unicode (a lone surrogate or invalid \
             UTF-8); those characters are shown as U+FFFD"
        );
    }
    let envelope = match parsed {
        Ok(envelope) => envelope,
        Err(err) => return Err(decode_error(method, shown, err, filter)),
    };
    match envelope.stat.as_deref() {
        Some("ok") => match envelope.data {
            Some(Data::Typed(data)) => Ok(data),
            Some(Data::Scalar(value)) => envelope::decode(method, value),
            None => envelope::decode(method, Value::Null),
        },
        Some("fail") => Err(Error::Api {
            method: method.to_owned(),
            code: envelope.code.as_ref().map_or(0, envelope::code),
            message: envelope.message.as_deref().map(repair).unwrap_or_default(),
        }),
        _ => Err(envelope::not_envelope(shown)),
    }
}

/// The error a failed parse stands for: a bound the filter enforced, a body that is not JSON,
/// or data of the wrong shape.
fn decode_error(method: &str, shown: &str, err: serde_json::Error, filter: &Filter) -> Error {
    if let Some(bound) = &filter.tripped {
        return bound.error(method);
    }
    match err.classify() {
        serde_json::error::Category::Data => Error::Decode {
            method: method.to_owned(),
            detail: err.to_string(),
        },
        _ if filter.started => Error::NotMidas {
            url: shown.to_owned(),
            detail: format!("the answer is not JSON ({err})"),
        },
        _ => Error::NotMidas {
            url: shown.to_owned(),
            detail: format!(
                "the answer is not JSON: {}",
                envelope::quote(&filter.opening)
            ),
        },
    }
}

/// What the envelope held.
struct Envelope<T> {
    stat: Option<String>,
    code: Option<Value>,
    message: Option<String>,
    data: Option<Data<T>>,
}

/// `data`: decoded into the call's type when it is an object or a list, kept as it is when it
/// is a scalar (`""` is how Midas says "nothing", and a failure's data).
enum Data<T> {
    Typed(T),
    Scalar(Value),
}

struct EnvelopeVisitor<T>(PhantomData<T>);

impl<'de, T: DeserializeOwned> de::Visitor<'de> for EnvelopeVisitor<T> {
    type Value = Envelope<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a Midas envelope")
    }

    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Envelope<T>, A::Error> {
        let mut envelope = Envelope {
            stat: None,
            code: None,
            message: None,
            data: None,
        };
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "data" => envelope.data = Some(map.next_value_seed(DataSeed(PhantomData))?),
                "code" => envelope.code = Some(map.next_value()?),
                "stat" => envelope.stat = map.next_value::<Value>()?.as_str().map(str::to_owned),
                "message" => {
                    envelope.message = map.next_value::<Value>()?.as_str().map(str::to_owned)
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(envelope)
    }
}

struct DataSeed<T>(PhantomData<T>);

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for DataSeed<T> {
    type Value = Data<T>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> std::result::Result<Data<T>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, T: DeserializeOwned> de::Visitor<'de> for DataSeed<T> {
    type Value = Data<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("the data of a Midas answer")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> std::result::Result<Data<T>, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(Data::Typed)
    }

    /// A list, or `[]` where PHP meant an empty map (a struct whose fields have defaults
    /// accepts an empty list).
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> std::result::Result<Data<T>, A::Error> {
        T::deserialize(SeqAccessDeserializer::new(seq)).map(Data::Typed)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Data<T>, E> {
        Ok(Data::Scalar(Value::String(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<Data<T>, E> {
        Ok(Data::Scalar(Value::String(v)))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<Data<T>, E> {
        Ok(Data::Scalar(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Data<T>, E> {
        Ok(Data::Scalar(Value::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Data<T>, E> {
        Ok(Data::Scalar(Value::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Data<T>, E> {
        Ok(Data::Scalar(Value::from(v)))
    }

    fn visit_unit<E: de::Error>(self) -> std::result::Result<Data<T>, E> {
        Ok(Data::Scalar(Value::Null))
    }
}

/// Where the chunks of a body come from.
enum Source {
    /// From the socket, while they arrive.
    Arriving(mpsc::Receiver<Bytes>),
    /// All read already (a small answer).
    Arrived(VecDeque<Bytes>),
}

impl Source {
    fn next(&mut self) -> Option<Bytes> {
        match self {
            Source::Arriving(arriving) => arriving.blocking_recv(),
            Source::Arrived(chunks) => chunks.pop_front(),
        }
    }
}

/// The chunks of a body, filtered, as a `Read` for the parser.
struct Reader {
    arriving: Source,
    filter: Filter,
    out: Vec<u8>,
    at: usize,
    ended: bool,
}

impl Reader {
    fn new(arriving: Source, filter: Filter) -> Reader {
        Reader {
            arriving,
            filter,
            out: Vec::new(),
            at: 0,
            ended: false,
        }
    }
}

impl Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.out.len() {
            if self.ended {
                return Ok(0);
            }
            self.out.clear();
            self.at = 0;
            match self.arriving.next() {
                Some(chunk) => self.filter.feed(&chunk, &mut self.out),
                None => {
                    self.ended = true;
                    self.filter.finish(&mut self.out);
                }
            }
            if self.filter.tripped.is_some() {
                // Nothing more is read: the caller reports the bound.
                return Err(io::Error::other("a bound of the answer was reached"));
            }
        }
        let n = buf.len().min(self.out.len() - self.at);
        buf[..n].copy_from_slice(&self.out[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// A bound an answer went past.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bound {
    Entries,
    EntryBytes,
    OtherBytes,
    Total(usize),
    Depth,
}

impl Bound {
    fn error(&self, method: &str) -> Error {
        match self {
            Bound::Entries => Error::Decode {
                method: method.to_owned(),
                detail: format!("the answer lists more than {MAX_ENTRIES} entries"),
            },
            Bound::EntryBytes => Error::TooLarge {
                method: method.to_owned(),
                limit: MAX_ENTRY_BYTES,
            },
            Bound::OtherBytes => Error::TooLarge {
                method: method.to_owned(),
                limit: MAX_OTHER_BYTES,
            },
            Bound::Total(limit) => Error::TooLarge {
                method: method.to_owned(),
                limit: *limit,
            },
            Bound::Depth => Error::Decode {
                method: method.to_owned(),
                detail: format!("the answer nests deeper than {MAX_DEPTH} levels"),
            },
        }
    }

    fn describe(&self) -> String {
        match self {
            Bound::Entries => format!("lists more than {MAX_ENTRIES} entries"),
            Bound::EntryBytes => format!("holds an entry longer than {MAX_ENTRY_BYTES} bytes"),
            Bound::OtherBytes => {
                format!("holds more than {MAX_OTHER_BYTES} bytes outside its entries")
            }
            Bound::Total(limit) => format!("is longer than {limit} bytes"),
            Bound::Depth => format!("nests deeper than {MAX_DEPTH} levels"),
        }
    }
}

/// Where the filter is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing but whitespace so far.
    Start,
    /// Not JSON at the start: looking for [`ENVELOPE_START`] (PHP warnings come first).
    Seeking,
    /// Passing the envelope on.
    Body,
}

/// The bytes of a body on their way to the parser: see the module's documentation.
struct Filter {
    method: String,
    limit: usize,
    phase: Phase,
    /// Bytes of an unfinished UTF-8 sequence at the end of the last chunk.
    utf8_carry: Vec<u8>,
    /// The start of a body that did not begin with `{`, for [`Phase::Seeking`].
    seek_carry: Vec<u8>,
    /// An escape in a string being read (`\`, `\uD83D`, …), up to 12 bytes.
    escape: Vec<u8>,
    in_string: bool,
    /// Open lists (`[`) and objects (`{`).
    containers: Vec<u8>,
    /// The depth at which the entry being read opened.
    entry_depth: Option<usize>,
    entry_bytes: usize,
    entries: usize,
    other_bytes: usize,
    total: usize,
    /// The first bytes of the body as received, to quote when it is not JSON.
    opening: Vec<u8>,
    started: bool,
    repaired: bool,
    tripped: Option<Bound>,
}

impl Filter {
    fn new(method: &str, limit: usize) -> Filter {
        Filter {
            method: method.to_owned(),
            limit,
            phase: Phase::Start,
            utf8_carry: Vec::new(),
            seek_carry: Vec::new(),
            escape: Vec::new(),
            in_string: false,
            containers: Vec::new(),
            entry_depth: None,
            entry_bytes: 0,
            entries: 0,
            other_bytes: 0,
            total: 0,
            opening: Vec::new(),
            started: false,
            repaired: false,
            tripped: None,
        }
    }

    /// Passes `chunk` on to `out`, repaired; stops at a bound (see `tripped`).
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if self.opening.len() < QUOTE_LIMIT {
            let take = (QUOTE_LIMIT - self.opening.len()).min(chunk.len());
            self.opening.extend_from_slice(&chunk[..take]);
        }
        self.total += chunk.len();
        if self.total > self.limit {
            self.trip(Bound::Total(self.limit));
            return;
        }
        let mut input = std::mem::take(&mut self.utf8_carry);
        input.extend_from_slice(chunk);
        let mut rest = input.as_slice();
        while !rest.is_empty() && self.tripped.is_none() {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    self.text(valid.as_bytes(), out);
                    rest = &[];
                }
                Err(err) => {
                    let (valid, after) = rest.split_at(err.valid_up_to());
                    self.text(valid, out);
                    match err.error_len() {
                        Some(bad) => {
                            self.repaired = true;
                            self.text("\u{fffd}".as_bytes(), out);
                            rest = &after[bad..];
                        }
                        None => {
                            // An unfinished sequence: the next chunk completes it.
                            self.utf8_carry = after.to_vec();
                            rest = &[];
                        }
                    }
                }
            }
        }
    }

    /// The body ended: what was held back goes on as it is.
    fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.utf8_carry.is_empty() {
            self.utf8_carry.clear();
            self.repaired = true;
            self.text("\u{fffd}".as_bytes(), out);
        }
        let escape = std::mem::take(&mut self.escape);
        for byte in escape {
            self.emit(byte, out);
        }
    }

    /// Valid UTF-8, split anywhere.
    fn text(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        for &byte in bytes {
            if self.tripped.is_some() {
                return;
            }
            match self.phase {
                Phase::Body => self.body_byte(byte, out),
                Phase::Start if byte.is_ascii_whitespace() => {}
                Phase::Start if byte == b'{' => {
                    self.phase = Phase::Body;
                    self.started = true;
                    self.body_byte(byte, out);
                }
                Phase::Start | Phase::Seeking => self.seek(byte, out),
            }
        }
    }

    fn seek(&mut self, byte: u8, out: &mut Vec<u8>) {
        self.phase = Phase::Seeking;
        self.count_other(1);
        self.seek_carry.push(byte);
        if self.seek_carry.len() > ENVELOPE_START.len() {
            self.seek_carry.remove(0);
        }
        if self.seek_carry == ENVELOPE_START {
            self.phase = Phase::Body;
            self.started = true;
            for byte in std::mem::take(&mut self.seek_carry) {
                self.body_byte(byte, out);
            }
        }
    }

    /// One byte of the envelope: escapes are checked for lone surrogates, the structure is
    /// followed to count entries.
    fn body_byte(&mut self, byte: u8, out: &mut Vec<u8>) {
        if !self.escape.is_empty() {
            self.escape.push(byte);
            self.escape_step(out);
            return;
        }
        if self.in_string {
            match byte {
                b'\\' => self.escape.push(byte),
                b'"' => {
                    self.in_string = false;
                    self.emit(byte, out);
                }
                _ => self.emit(byte, out),
            }
            return;
        }
        match byte {
            b'"' => self.in_string = true,
            b'{' | b'[' => {
                if byte == b'{'
                    && self.entry_depth.is_none()
                    && self.containers.last() == Some(&b'[')
                {
                    self.entry_depth = Some(self.containers.len());
                    self.entries += 1;
                    if self.entries > MAX_ENTRIES {
                        self.trip(Bound::Entries);
                        return;
                    }
                }
                self.containers.push(byte);
                if self.containers.len() > MAX_DEPTH {
                    self.trip(Bound::Depth);
                    return;
                }
            }
            b'}' | b']' => {
                self.containers.pop();
                if self.entry_depth == Some(self.containers.len()) {
                    // The entry's last byte still counts as its own.
                    self.emit(byte, out);
                    self.entry_depth = None;
                    self.entry_bytes = 0;
                    return;
                }
            }
            _ => {}
        }
        self.emit(byte, out);
    }

    /// The escape read so far (it starts with `\`): passed on once it is complete, with a lone
    /// surrogate (`\uD800` not followed by a low one, or a low one alone) turned into U+FFFD.
    fn escape_step(&mut self, out: &mut Vec<u8>) {
        let unit = |bytes: &[u8]| {
            let hex = std::str::from_utf8(bytes.get(2..6)?).ok()?;
            u16::from_str_radix(hex, 16).ok()
        };
        let escape = &self.escape;
        let done = match escape.len() {
            2 if escape[1] != b'u' => Some(None),
            2..=5 => None,
            6 => match unit(escape) {
                Some(0xD800..=0xDBFF) => None,
                Some(0xDC00..=0xDFFF) => Some(Some(6)),
                _ => Some(None),
            },
            7 if escape[6] != b'\\' => Some(Some(6)),
            8 if escape[7] != b'u' => Some(Some(6)),
            7..=11 => None,
            _ => match unit(&escape[6..]) {
                Some(0xDC00..=0xDFFF) => Some(None),
                _ => Some(Some(6)),
            },
        };
        let Some(lone) = done else {
            return;
        };
        let escape = std::mem::take(&mut self.escape);
        match lone {
            None => {
                for byte in escape {
                    self.emit(byte, out);
                }
            }
            Some(len) => {
                self.repaired = true;
                for &byte in b"\\ufffd" {
                    self.emit(byte, out);
                }
                // What followed the lone surrogate is read again on its own.
                for byte in escape[len..].iter().copied() {
                    self.body_byte(byte, out);
                }
            }
        }
    }

    fn emit(&mut self, byte: u8, out: &mut Vec<u8>) {
        if self.entry_depth.is_some() {
            self.entry_bytes += 1;
            if self.entry_bytes > MAX_ENTRY_BYTES {
                self.trip(Bound::EntryBytes);
                return;
            }
        } else {
            self.count_other(1);
        }
        out.push(byte);
    }

    fn count_other(&mut self, n: usize) {
        self.other_bytes += n;
        if self.other_bytes > MAX_OTHER_BYTES {
            self.trip(Bound::OtherBytes);
        }
    }

    fn trip(&mut self, bound: Bound) {
        if self.tripped.is_none() {
            log::warn!(
                "{}: the answer {}; not read further (after {} bytes and {} entries)",
                self.method,
                bound.describe(),
                self.total,
                self.entries
            );
            self.tripped = Some(bound);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `body`, fed in chunks of `size` bytes, as the parser receives it.
    fn filtered(body: &[u8], size: usize) -> (Vec<u8>, Filter) {
        let mut filter = Filter::new("m", usize::MAX);
        let mut out = Vec::new();
        for chunk in body.chunks(size) {
            filter.feed(chunk, &mut out);
        }
        filter.finish(&mut out);
        (out, filter)
    }

    #[test]
    fn the_filter_repairs_the_same_text_in_chunks_of_any_size() {
        let mut body =
            br#"<b>Warning</b> x{"code":"0","data":{"items":[{"name":"a\ud800b"},{"name":"\udc00"},{"name":"\\ud800"},{"name":"\ud83d\ude00"},{"name":"x\u00e9\ud800\u00e9"}]},"message":"","stat":"ok"}"#
                .to_vec();
        let message = body.len() - 15;
        assert_eq!(&body[message..message + 2], b"\"\"");
        body.insert(message + 1, 0xff);
        let (whole, filter) = filtered(&body, body.len());
        assert!(filter.repaired);
        let text = String::from_utf8(whole.clone()).expect("UTF-8");
        assert!(text.starts_with(r#"{"code""#), "{text}");
        assert!(text.contains(r#""a\ufffdb""#), "{text}");
        assert!(text.contains(r#""\ufffd""#), "{text}");
        assert!(text.contains(r#""\\ud800""#), "{text}");
        assert!(text.contains(r#""\ud83d\ude00""#), "{text}");
        assert!(text.contains(r#""x\u00e9\ufffd\u00e9""#), "{text}");
        assert!(text.contains('\u{fffd}'), "{text}");
        for size in [1, 2, 3, 5, 7, 13] {
            assert_eq!(filtered(&body, size).0, whole, "chunks of {size}");
        }
        assert_eq!(filter.entries, 5);
    }

    #[test]
    fn bounds_stop_the_filter() {
        let entry = br#"{"name":"x"},"#;
        let mut body = br#"{"code":"0","data":["#.to_vec();
        for _ in 0..MAX_ENTRIES + 1 {
            body.extend_from_slice(entry);
        }
        assert_eq!(filtered(&body, 1 << 16).1.tripped, Some(Bound::Entries));

        let mut body = br#"{"code":"0","data":[{"name":""#.to_vec();
        body.resize(body.len() + MAX_ENTRY_BYTES, b'n');
        assert_eq!(filtered(&body, 1 << 16).1.tripped, Some(Bound::EntryBytes));

        let mut body = br#"{"code":"0","data":"#.to_vec();
        body.resize(body.len() + MAX_DEPTH, b'[');
        assert_eq!(filtered(&body, 7).1.tripped, Some(Bound::Depth));

        let mut body = br#"{"code":"0","data":["#.to_vec();
        body.resize(body.len() + MAX_OTHER_BYTES, b' ');
        assert_eq!(filtered(&body, 1 << 16).1.tripped, Some(Bound::OtherBytes));

        let mut filter = Filter::new("m", 100);
        filter.feed(&[b' '; 101], &mut Vec::new());
        assert_eq!(filter.tripped, Some(Bound::Total(100)));
    }
}
