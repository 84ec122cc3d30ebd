//! [`from_node`]: serde over the located YAML tree, so that the typed raw structs of
//! [`super::raw`] are read with `#[derive(Deserialize)]` and every error still points at the
//! user's input.
//!
//! How errors keep their place: the deserializer knows the node (and its key path) it is
//! reading; an error raised while reading a node gets that node's `file:line:col` and path the
//! moment it leaves the visitor, and is recorded then (the innermost node is the most precise
//! place). An unknown key is recorded at the key and skipped, so one stray key does not hide
//! the rest of the map. [`Checked`] marks the fields that may fail on their own: a failure
//! there is recorded and the field becomes [`Checked::Invalid`] while its siblings are read on.
//!
//! [`Located`] gives a value together with its place, and [`Node`] itself is deserializable (a
//! located subtree kept as is, for values that are interpolated per matrix cell). Both work only
//! with this deserializer.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::yaml::{Entry, Loc, Node, Value};

/// An error found while reading typed structs from a [`Node`], with its place.
#[derive(Debug, Clone, PartialEq)]
pub struct DeError {
    pub loc: Loc,
    /// Dotted key path of the offending value (`stages.train.resources`).
    pub path: String,
    pub kind: DeErrorKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DeErrorKind {
    /// A key the struct does not have; `expected` are the keys it does have, in order.
    UnknownKey {
        key: String,
        expected: &'static [&'static str],
    },
    /// The value has the wrong shape: `expected` is the visitor's description (see
    /// [`super::raw`] for the convention), `got` the YAML type of the value.
    WrongType {
        expected: String,
        got: &'static str,
    },
    Other(String),
}

/// The serde error type: either not located yet (raised by a visitor, on its way out), or
/// already recorded in the sink.
#[derive(Debug)]
pub struct Error(Option<DeErrorKind>);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("recorded"),
            Some(k) => write!(f, "{k:?}"),
        }
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(Some(DeErrorKind::Other(msg.to_string())))
    }
    fn invalid_type(_unexp: de::Unexpected, exp: &dyn de::Expected) -> Self {
        Error(Some(DeErrorKind::WrongType {
            expected: exp.to_string(),
            got: "",
        }))
    }
    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Error(Some(DeErrorKind::UnknownKey {
            key: field.to_string(),
            expected,
        }))
    }
}

/// Errors found so far (shared by every deserializer of one [`from_node`] call).
#[derive(Default)]
struct Sink(RefCell<Vec<DeError>>);

/// A key path as a linked list on the stack: built for free while descending, rendered only
/// when an error needs it.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root(&'a str),
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root(r) => f.write_str(r),
            Path::Key(Path::Root(""), k) => f.write_str(k),
            Path::Key(p, k) => write!(f, "{p}.{k}"),
            Path::Index(p, i) => write!(f, "{p}[{i}]"),
        }
    }
}

/// Read `T` from `node`, whose key path is `path` (`""` for a whole file). Every error is
/// appended to `errors`; `None` when `T` as a whole could not be built.
pub fn from_node<T: for<'de> Deserialize<'de>>(
    node: &Node,
    path: &str,
    errors: &mut Vec<DeError>,
) -> Option<T> {
    let sink = Sink::default();
    let root = Path::Root(path);
    let r = T::deserialize(De::new(node, None, &root, &sink));
    errors.extend(sink.0.into_inner());
    r.ok()
}

struct De<'a> {
    node: &'a Node,
    /// The key this value is written under, when it is a map value.
    key_loc: Option<Loc>,
    path: &'a Path<'a>,
    sink: &'a Sink,
    /// A key that is present with a null value reads as an empty map or list (`params:` alone
    /// is no params); elsewhere (a list item, a whole file) null is not a map.
    null_is_empty: bool,
}

impl<'a> De<'a> {
    fn new(node: &'a Node, key_loc: Option<Loc>, path: &'a Path<'a>, sink: &'a Sink) -> Self {
        De {
            node,
            key_loc,
            path,
            sink,
            null_is_empty: false,
        }
    }

    /// "Expected what the visitor reads, got this node" (never a struct read from a list).
    fn wrong_type<'de, V: Visitor<'de>>(&self, visitor: &V) -> Error {
        self.locate(de::Error::invalid_type(de::Unexpected::Other(""), visitor))
    }

    /// Give an error raised at this node its place and record it; errors from below are
    /// already recorded and pass through.
    fn locate(&self, e: Error) -> Error {
        if let Some(mut kind) = e.0 {
            if let DeErrorKind::WrongType { got, .. } = &mut kind {
                *got = self.node.type_name();
            }
            self.sink.0.borrow_mut().push(DeError {
                loc: self.node.loc,
                path: self.path.to_string(),
                kind,
            });
        }
        Error(None)
    }

    fn map<'de, V: Visitor<'de>>(
        &self,
        entries: &[Entry],
        fields: Option<&'static [&'static str]>,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor
            .visit_map(Entries {
                entries,
                next: 0,
                fields,
                path: self.path,
                sink: self.sink,
            })
            .map_err(|e| self.locate(e))
    }
}

/// The name under which [`Located`] asks for its place (as `toml`'s `Spanned` does).
const LOCATED: &str = "$__orchestrator_located";
const LOC_FIELD: &str = "$__loc";
const VALUE_FIELD: &str = "$__value";

impl<'de> de::Deserializer<'de> for De<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::Float(x) => visitor.visit_f64(*x),
            Value::Str(s) => visitor.visit_str(s),
            Value::Seq(items) => visitor.visit_seq(Items {
                items,
                next: 0,
                path: self.path,
                sink: self.sink,
            }),
            Value::Map(entries) => return self.map(entries, None, visitor),
        };
        r.map_err(|e| self.locate(e))
    }

    /// A key that is present is `Some`, even with a null value: the passes decide what null
    /// means for each key (for maps and sections it is "empty").
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(De {
            null_is_empty: true,
            ..self
        })
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::Null if self.null_is_empty => self.map(&[], None, visitor),
            Value::Map(entries) => self.map(entries, None, visitor),
            _ => Err(self.wrong_type(&visitor)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        if name == LOCATED {
            return visitor.visit_map(LocatedAccess {
                loc: Some((self.node.loc, self.key_loc)),
                value: Some(self),
            });
        }
        match &self.node.value {
            Value::Null if self.null_is_empty => self.map(&[], Some(fields), visitor),
            Value::Map(entries) => self.map(entries, Some(fields), visitor),
            _ => Err(self.wrong_type(&visitor)),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let items: &[Node] = match &self.node.value {
            Value::Null if self.null_is_empty => &[],
            Value::Seq(items) => items,
            _ => return Err(self.wrong_type(&visitor)),
        };
        visitor
            .visit_seq(Items {
                items,
                next: 0,
                path: self.path,
                sink: self.sink,
            })
            .map_err(|e| self.locate(e))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct tuple
        tuple_struct enum identifier ignored_any
    }
}

struct Items<'a> {
    items: &'a [Node],
    next: usize,
    path: &'a Path<'a>,
    sink: &'a Sink,
}

impl<'de> SeqAccess<'de> for Items<'_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let Some(node) = self.items.get(self.next) else {
            return Ok(None);
        };
        let path = Path::Index(self.path, self.next);
        self.next += 1;
        seed.deserialize(De::new(node, None, &path, self.sink))
            .map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len() - self.next)
    }
}

struct Entries<'a> {
    entries: &'a [Entry],
    /// Index of the entry whose value comes next (after its key was read).
    next: usize,
    /// A struct's keys: any other key is recorded as unknown and skipped.
    fields: Option<&'static [&'static str]>,
    path: &'a Path<'a>,
    sink: &'a Sink,
}

impl<'de> MapAccess<'de> for Entries<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        while let Some(e) = self.entries.get(self.next) {
            match self.fields {
                Some(fields) if !fields.contains(&e.key.as_str()) => {
                    self.sink.0.borrow_mut().push(DeError {
                        loc: e.key_loc,
                        path: Path::Key(self.path, &e.key).to_string(),
                        kind: DeErrorKind::UnknownKey {
                            key: e.key.clone(),
                            expected: fields,
                        },
                    });
                    self.next += 1;
                }
                _ => {
                    return seed
                        .deserialize(KeyDe {
                            key: &e.key,
                            loc: e.key_loc,
                        })
                        .map(Some);
                }
            }
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let e = &self.entries[self.next];
        self.next += 1;
        let path = Path::Key(self.path, &e.key);
        seed.deserialize(De::new(&e.value, Some(e.key_loc), &path, self.sink))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len() - self.next)
    }
}

/// A map key: a string, or a [`Located`] string.
struct KeyDe<'a> {
    key: &'a str,
    loc: Loc,
}

impl<'de> de::Deserializer<'de> for KeyDe<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_str(self.key)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        if name == LOCATED {
            let loc = self.loc;
            return visitor.visit_map(LocatedAccess {
                loc: Some((loc, None)),
                value: Some(self),
            });
        }
        self.deserialize_any(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// Feeds [`Located`] its place (and its key's), then its value.
struct LocatedAccess<D> {
    loc: Option<(Loc, Option<Loc>)>,
    value: Option<D>,
}

impl<'de, D: de::Deserializer<'de, Error = Error>> MapAccess<'de> for LocatedAccess<D> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let key = if self.loc.is_some() {
            LOC_FIELD
        } else if self.value.is_some() {
            VALUE_FIELD
        } else {
            return Ok(None);
        };
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        if let Some((l, k)) = self.loc.take() {
            let k = k.unwrap_or(Loc {
                file: u32::MAX,
                ..Loc::default()
            });
            let packed = [l.file, l.line, l.col, l.len, k.file, k.line, k.col, k.len];
            return seed.deserialize(de::value::SeqDeserializer::new(packed.into_iter()));
        }
        match self.value.take() {
            Some(d) => seed.deserialize(d),
            None => Err(de::Error::custom("no value")),
        }
    }
}

/// A value and where it is in the source (and, for a map value, where its key is).
#[derive(Debug, Clone, PartialEq)]
pub struct Located<T> {
    pub loc: Loc,
    pub key_loc: Option<Loc>,
    pub value: T,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Located<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a located value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Located<T>, A::Error> {
                let mut loc = None;
                let mut key_loc = None;
                let mut value = None;
                while let Some(k) = m.next_key::<String>()? {
                    if k == LOC_FIELD {
                        let p: [u32; 8] = m.next_value()?;
                        let at = |i: usize| Loc {
                            file: p[i],
                            line: p[i + 1],
                            col: p[i + 2],
                            len: p[i + 3],
                        };
                        loc = Some(at(0));
                        key_loc = (p[4] != u32::MAX).then(|| at(4));
                    } else {
                        value = Some(m.next_value()?);
                    }
                }
                match (loc, value) {
                    (Some(loc), Some(value)) => Ok(Located {
                        loc,
                        key_loc,
                        value,
                    }),
                    _ => Err(de::Error::custom(
                        "a located value is read only from a pipeline file",
                    )),
                }
            }
        }
        d.deserialize_struct(
            LOCATED,
            &[LOC_FIELD, VALUE_FIELD],
            V(std::marker::PhantomData),
        )
    }
}

impl<T: schemars::JsonSchema> schemars::JsonSchema for Located<T> {
    fn schema_name() -> String {
        T::schema_name()
    }
    fn is_referenceable() -> bool {
        false
    }
    fn json_schema(gen: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
        gen.subschema_for::<T>()
    }
}

/// A field that is read on its own: when it is wrong, its error is recorded and it becomes
/// `Invalid`, and the struct around it is still read.
#[derive(Debug, Clone, PartialEq)]
pub enum Checked<T> {
    Valid(T),
    Invalid,
}

impl<T> Checked<T> {
    pub fn valid(&self) -> Option<&T> {
        match self {
            Checked::Valid(v) => Some(v),
            Checked::Invalid => None,
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Checked<T> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The located deserializer has recorded the error already.
        Ok(T::deserialize(d).map_or(Checked::Invalid, Checked::Valid))
    }
}

impl<T: schemars::JsonSchema> schemars::JsonSchema for Checked<T> {
    fn schema_name() -> String {
        T::schema_name()
    }
    fn is_referenceable() -> bool {
        false
    }
    fn json_schema(gen: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
        gen.subschema_for::<T>()
    }
}

/// A located subtree, kept as it was written (values interpolated per matrix cell).
impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let l = Located::<NodeValue>::deserialize(d)?;
        Ok(Node {
            value: l.value.0,
            loc: l.loc,
        })
    }
}

struct NodeValue(Value);

impl<'de> Deserialize<'de> for NodeValue {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NodeValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_unit<E>(self) -> Result<NodeValue, E> {
                Ok(NodeValue(Value::Null))
            }
            fn visit_bool<E>(self, b: bool) -> Result<NodeValue, E> {
                Ok(NodeValue(Value::Bool(b)))
            }
            fn visit_i64<E>(self, i: i64) -> Result<NodeValue, E> {
                Ok(NodeValue(Value::Int(i)))
            }
            fn visit_f64<E>(self, x: f64) -> Result<NodeValue, E> {
                Ok(NodeValue(Value::Float(x)))
            }
            fn visit_str<E>(self, s: &str) -> Result<NodeValue, E> {
                Ok(NodeValue(Value::Str(s.to_string())))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<NodeValue, A::Error> {
                let mut items = Vec::with_capacity(a.size_hint().unwrap_or(0));
                while let Some(n) = a.next_element::<Node>()? {
                    items.push(n);
                }
                Ok(NodeValue(Value::Seq(items)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<NodeValue, A::Error> {
                let mut entries = Vec::with_capacity(m.size_hint().unwrap_or(0));
                while let Some(k) = m.next_key::<Located<String>>()? {
                    entries.push(Entry {
                        key: k.value,
                        key_loc: k.loc,
                        value: m.next_value()?,
                    });
                }
                Ok(NodeValue(Value::Map(entries)))
            }
        }
        d.deserialize_any(V)
    }
}

impl schemars::JsonSchema for Node {
    fn schema_name() -> String {
        "value".into()
    }
    fn is_referenceable() -> bool {
        false
    }
    fn json_schema(_: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
        schemars::schema::Schema::Bool(true)
    }
}

/// An ordered map of located keys (the file's order), for sections whose keys are names the
/// user chooses (params, stages, inputs, ...). `W` says what the map is, for messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Map<T, W> {
    pub entries: Vec<MapEntry<T>>,
    what: std::marker::PhantomData<W>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MapEntry<T> {
    pub key: String,
    pub key_loc: Loc,
    pub value: T,
}

/// What a [`Map`] holds: the text of "`x` must be WHAT, got a list" messages and the schema's
/// description of the map.
pub trait MapKind {
    /// See [`super::raw`] for the convention (`{name}`, ` | hint: `).
    const EXPECTING: &'static str;
    const DESCRIPTION: &'static str;
    /// Schema of the keys (`propertyNames`), if constrained.
    const KEY_PATTERN: Option<&'static str> = None;
    /// JSON type of the values, when the map's values are checked by a pass rather than typed
    /// (they are kept as located nodes).
    const VALUE_TYPE: Option<&'static str> = None;
}

impl<T, W> Map<T, W> {
    pub fn iter(&self) -> impl Iterator<Item = &MapEntry<T>> {
        self.entries.iter()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

impl<T, W> Default for Map<T, W> {
    fn default() -> Self {
        Map {
            entries: Vec::new(),
            what: std::marker::PhantomData,
        }
    }
}

impl<'de, T: Deserialize<'de>, W: MapKind> Deserialize<'de> for Map<T, W> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T, W>(std::marker::PhantomData<(T, W)>);
        impl<'de, T: Deserialize<'de>, W: MapKind> Visitor<'de> for V<T, W> {
            type Value = Map<T, W>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(W::EXPECTING)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Map<T, W>, A::Error> {
                let mut entries = Vec::with_capacity(m.size_hint().unwrap_or(0));
                while let Some(k) = m.next_key::<Located<String>>()? {
                    entries.push(MapEntry {
                        key: k.value,
                        key_loc: k.loc,
                        value: m.next_value()?,
                    });
                }
                Ok(Map {
                    entries,
                    what: std::marker::PhantomData,
                })
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

impl<T: schemars::JsonSchema, W: MapKind> schemars::JsonSchema for Map<T, W> {
    fn schema_name() -> String {
        format!("map-of-{}", T::schema_name())
    }
    fn is_referenceable() -> bool {
        false
    }
    fn json_schema(gen: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
        let values = match W::VALUE_TYPE {
            Some(t) => serde_json::json!({ "type": t }),
            None => serde_json::to_value(gen.subschema_for::<T>()).unwrap_or_default(),
        };
        let mut v = serde_json::json!({
            "type": "object",
            "description": W::DESCRIPTION,
            "additionalProperties": values,
        });
        if let Some(p) = W::KEY_PATTERN {
            v["propertyNames"] = serde_json::json!({ "pattern": p });
        }
        serde_json::from_value(v).unwrap_or(schemars::schema::Schema::Bool(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::yaml::{parse, SourceFile, Sources};

    fn node(text: &str) -> Node {
        let sources = Sources {
            files: vec![SourceFile::new(
                "t.yaml".into(),
                "/t.yaml".into(),
                text.into(),
            )],
        };
        parse(0, &sources).unwrap()
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, expecting = "a map of a and b")]
    struct T {
        a: Option<Located<i64>>,
        b: Option<Checked<Inner>>,
        c: Option<Node>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, expecting = "an inner map")]
    struct Inner {
        x: Option<Checked<Vec<u32>>>,
    }

    #[test]
    fn values_keep_their_place_and_errors_point_at_it() {
        let n = node("a: 3\nzz: 1\nb: { x: [1, -2], y: 0 }\nc: { k: [v] }\n");
        let mut errs = Vec::new();
        let t: T = from_node(&n, "", &mut errs).unwrap();
        assert_eq!(t.a.as_ref().unwrap().value, 3);
        assert_eq!((t.a.unwrap().loc.line, 3u32), (1, 3));
        let c = t.c.unwrap();
        assert_eq!(c.get("k").unwrap().key_loc.line, 4);
        assert!(matches!(
            t.b,
            Some(Checked::Valid(Inner {
                x: Some(Checked::Invalid)
            }))
        ));
        let got: Vec<(String, u32, u32)> = errs
            .iter()
            .map(|e| (e.path.clone(), e.loc.line, e.loc.col))
            .collect();
        assert_eq!(
            got,
            [
                ("zz".to_string(), 2, 1),
                ("b.x[1]".to_string(), 3, 13),
                ("b.y".to_string(), 3, 18)
            ]
        );
        assert!(
            matches!(&errs[0].kind, DeErrorKind::UnknownKey { key, expected } if key == "zz" && expected == &["a", "b", "c"])
        );
    }

    #[test]
    fn a_wrong_shape_names_what_was_expected() {
        let n = node("b: [1]\n");
        let mut errs = Vec::new();
        let t: T = from_node(&n, "", &mut errs).unwrap();
        assert!(matches!(t.b, Some(Checked::Invalid)));
        assert_eq!(
            errs[0].kind,
            DeErrorKind::WrongType {
                expected: "an inner map".into(),
                got: "a list"
            }
        );
        assert_eq!(errs[0].path, "b");
    }
}
