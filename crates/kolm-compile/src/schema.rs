//! A JSON Schema subset: the schema the verifier infers from JSON outputs,
//! and the one a test's `json-schema` assertion may give.
//!
//! Supported keywords: `type` (one or a list), `properties`, `required`,
//! `additionalProperties` (boolean), `items` (one schema), `enum`, `format`
//! (`date`, `date-time`, `uuid`, `email`), `pattern`, `minLength`,
//! `maxLength`, `minimum`, `maximum`, `minItems`, `maxItems`; `$schema`,
//! `title` and `description` are accepted and ignored. Any other keyword is
//! refused when parsed, so a schema never silently checks less than it says.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::canonical_json;

/// A JSON type name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JsonType {
    /// `null`
    Null,
    /// `true` / `false`
    Boolean,
    /// A number with no fractional part.
    Integer,
    /// Any number.
    Number,
    /// A string.
    String,
    /// An array.
    Array,
    /// An object.
    Object,
}

impl JsonType {
    /// The type of `v` (`Integer` for integral numbers).
    pub fn of(v: &Value) -> JsonType {
        match v {
            Value::Null => JsonType::Null,
            Value::Bool(_) => JsonType::Boolean,
            Value::Number(n) if n.is_i64() || n.is_u64() => JsonType::Integer,
            Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => JsonType::Integer,
            Value::Number(_) => JsonType::Number,
            Value::String(_) => JsonType::String,
            Value::Array(_) => JsonType::Array,
            Value::Object(_) => JsonType::Object,
        }
    }

    fn accepts(self, actual: JsonType) -> bool {
        self == actual || (self == JsonType::Number && actual == JsonType::Integer)
    }
}

impl fmt::Display for JsonType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = serde_json::to_value(self).ok();
        f.write_str(s.as_ref().and_then(Value::as_str).unwrap_or("?"))
    }
}

/// `type`: one type or a list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TypeSet {
    /// `"type": "string"`
    One(JsonType),
    /// `"type": ["string", "null"]`
    Many(Vec<JsonType>),
}

impl TypeSet {
    fn list(&self) -> Vec<JsonType> {
        match self {
            TypeSet::One(t) => vec![*t],
            TypeSet::Many(v) => v.clone(),
        }
    }
}

/// A string format the verifier knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// `YYYY-MM-DD`
    Date,
    /// RFC 3339 date and time, `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
    DateTime,
    /// A UUID in 8-4-4-4-12 hex form.
    Uuid,
    /// `local@domain.tld`
    Email,
}

impl Format {
    /// Every format, in detection order (most specific first).
    pub const ALL: [Format; 4] = [Format::Date, Format::DateTime, Format::Uuid, Format::Email];

    /// Whether `s` has this format.
    pub fn matches(self, s: &str) -> bool {
        let b = s.as_bytes();
        let digits =
            |r: std::ops::Range<usize>| b.get(r).is_some_and(|x| x.iter().all(u8::is_ascii_digit));
        let date_ok = |b: &[u8]| {
            b.len() >= 10
                && digits(0..4)
                && b[4] == b'-'
                && digits(5..7)
                && b[7] == b'-'
                && digits(8..10)
                && {
                    let m = (b[5] - b'0') * 10 + (b[6] - b'0');
                    let d = (b[8] - b'0') * 10 + (b[9] - b'0');
                    (1..=12).contains(&m) && (1..=31).contains(&d)
                }
        };
        match self {
            Format::Date => b.len() == 10 && date_ok(b),
            Format::DateTime => {
                if !(b.len() >= 20 && date_ok(b) && matches!(b[10], b'T' | b't' | b' ')) {
                    return false;
                }
                if !(digits(11..13)
                    && b[13] == b':'
                    && digits(14..16)
                    && b[16] == b':'
                    && digits(17..19))
                {
                    return false;
                }
                let mut i = 19;
                if b.get(i) == Some(&b'.') {
                    i += 1;
                    let start = i;
                    while b.get(i).is_some_and(u8::is_ascii_digit) {
                        i += 1;
                    }
                    if i == start {
                        return false;
                    }
                }
                match &b[i..] {
                    [b'Z' | b'z'] => true,
                    [b'+' | b'-', h1, h2, b':', m1, m2] => {
                        [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit())
                    }
                    _ => false,
                }
            }
            Format::Uuid => {
                b.len() == 36
                    && b.iter().enumerate().all(|(i, c)| match i {
                        8 | 13 | 18 | 23 => *c == b'-',
                        _ => c.is_ascii_hexdigit(),
                    })
            }
            Format::Email => match s.split_once('@') {
                Some((local, domain)) => {
                    !local.is_empty()
                        && !local.contains(char::is_whitespace)
                        && !domain.contains('@')
                        && !domain.contains(char::is_whitespace)
                        && domain.split('.').count() >= 2
                        && domain.split('.').all(|p| !p.is_empty())
                }
                None => false,
            },
        }
    }

    /// The format's name in words.
    pub fn describe(self) -> &'static str {
        match self {
            Format::Date => "a date (YYYY-MM-DD)",
            Format::DateTime => "an RFC 3339 date-time",
            Format::Uuid => "a UUID",
            Format::Email => "an email address",
        }
    }
}

/// A schema (see the module documentation for the supported subset).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Schema {
    /// Accepted and ignored.
    #[serde(rename = "$schema", default, skip_serializing)]
    pub schema_uri: Option<String>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Allowed types.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub types: Option<TypeSet>,
    /// Object properties.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, Schema>,
    /// Keys an object must have.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required: Vec<String>,
    /// `false`: keys outside `properties` are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_properties: Option<bool>,
    /// Schema of every array item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Box<Schema>>,
    /// The allowed values.
    #[serde(rename = "enum", default, skip_serializing_if = "Option::is_none")]
    pub enumeration: Option<Vec<Value>>,
    /// A string format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// A regular expression strings must match (unanchored, as in JSON
    /// Schema).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Minimum string length in characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<u64>,
    /// Maximum string length in characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u64>,
    /// Minimum number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<f64>,
    /// Maximum number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<f64>,
    /// Minimum array length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_items: Option<u64>,
    /// Maximum array length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<u64>,
}

/// At most this many violations are reported per check.
const MAX_ERRORS: usize = 8;

impl Schema {
    /// Checks that every `pattern` compiles. Called when a schema is parsed
    /// from a test so a bad pattern is an input error, not a failed check.
    pub fn check_patterns(&self) -> Result<(), String> {
        if let Some(p) = &self.pattern {
            regex::Regex::new(p).map_err(|e| format!("bad pattern {p:?}: {e}"))?;
        }
        for s in self.properties.values().chain(self.items.as_deref()) {
            s.check_patterns()?;
        }
        Ok(())
    }

    /// The violations of `value` against this schema (empty when it
    /// conforms), each prefixed with a JSON path such as `$.items[0].qty`.
    pub fn validate(&self, value: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.validate_at(value, "$", &mut errors);
        errors
    }

    fn validate_at(&self, v: &Value, path: &str, errors: &mut Vec<String>) {
        if errors.len() >= MAX_ERRORS {
            return;
        }
        let actual = JsonType::of(v);
        if let Some(ts) = &self.types {
            let list = ts.list();
            if !list.iter().any(|t| t.accepts(actual)) {
                let names: Vec<String> = list.iter().map(ToString::to_string).collect();
                errors.push(format!(
                    "{path}: expected {}, found {actual}",
                    names.join(" or ")
                ));
                return;
            }
        }
        if let Some(allowed) = &self.enumeration {
            let c = canonical_json(v);
            if !allowed.iter().any(|a| canonical_json(a) == c) {
                errors.push(format!(
                    "{path}: {} is not one of the allowed values",
                    short(v)
                ));
            }
        }
        match v {
            Value::String(s) => {
                let n = s.chars().count() as u64;
                if let Some(min) = self.min_length.filter(|m| n < *m) {
                    errors.push(format!("{path}: {n} characters, fewer than {min}"));
                }
                if let Some(max) = self.max_length.filter(|m| n > *m) {
                    errors.push(format!("{path}: {n} characters, more than {max}"));
                }
                if let Some(f) = self.format.filter(|f| !f.matches(s)) {
                    errors.push(format!("{path}: {} is not {}", short(v), f.describe()));
                }
                if let Some(p) = &self.pattern {
                    match regex::Regex::new(p) {
                        Ok(re) if re.is_match(s) => {}
                        Ok(_) => errors.push(format!("{path}: {} does not match /{p}/", short(v))),
                        Err(e) => errors.push(format!("{path}: bad pattern {p:?}: {e}")),
                    }
                }
            }
            Value::Number(n) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                if let Some(min) = self.minimum.filter(|m| x < *m) {
                    errors.push(format!("{path}: {x} is below the minimum {min}"));
                }
                if let Some(max) = self.maximum.filter(|m| x > *m) {
                    errors.push(format!("{path}: {x} is above the maximum {max}"));
                }
            }
            Value::Array(items) => {
                let n = items.len() as u64;
                if let Some(min) = self.min_items.filter(|m| n < *m) {
                    errors.push(format!("{path}: {n} items, fewer than {min}"));
                }
                if let Some(max) = self.max_items.filter(|m| n > *m) {
                    errors.push(format!("{path}: {n} items, more than {max}"));
                }
                if let Some(item) = &self.items {
                    for (i, x) in items.iter().enumerate() {
                        item.validate_at(x, &format!("{path}[{i}]"), errors);
                    }
                }
            }
            Value::Object(map) => {
                for key in &self.required {
                    if !map.contains_key(key) {
                        errors.push(format!("{path}: missing required key {key:?}"));
                    }
                }
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                for key in keys {
                    match self.properties.get(key) {
                        Some(s) => s.validate_at(&map[key], &format!("{path}.{key}"), errors),
                        None if self.additional_properties == Some(false) => {
                            errors.push(format!("{path}: unexpected key {key:?}"));
                        }
                        None => {}
                    }
                }
            }
            _ => {}
        }
    }

    /// Describes the schema in words, one rule per line, indented by
    /// `indent` and naming the path.
    pub fn explain(&self, path: &str, indent: usize, out: &mut Vec<String>) {
        let pad = "  ".repeat(indent);
        let mut rule = Vec::new();
        if let Some(ts) = &self.types {
            let names: Vec<String> = ts.list().iter().map(ToString::to_string).collect();
            rule.push(format!("is {}", names.join(" or ")));
        }
        if let Some(e) = &self.enumeration {
            let vals: Vec<String> = e.iter().map(canonical_json).collect();
            rule.push(format!("is one of {}", vals.join(", ")));
        }
        if let Some(f) = self.format {
            rule.push(format!("is {}", f.describe()));
        }
        if let Some(p) = &self.pattern {
            rule.push(format!("matches /{p}/"));
        }
        for (name, v) in [
            ("at least {} characters", self.min_length),
            ("at most {} characters", self.max_length),
            ("at least {} items", self.min_items),
            ("at most {} items", self.max_items),
        ] {
            if let Some(v) = v {
                rule.push(name.replace("{}", &v.to_string()));
            }
        }
        if let Some(m) = self.minimum {
            rule.push(format!("≥ {m}"));
        }
        if let Some(m) = self.maximum {
            rule.push(format!("≤ {m}"));
        }
        if !self.required.is_empty() {
            rule.push(format!("has keys {}", self.required.join(", ")));
        }
        if self.additional_properties == Some(false) {
            rule.push("has no other keys".into());
        }
        out.push(format!(
            "{pad}{path}: {}",
            if rule.is_empty() {
                "anything".to_string()
            } else {
                rule.join("; ")
            }
        ));
        for (k, s) in &self.properties {
            s.explain(&format!("{path}.{k}"), indent + 1, out);
        }
        if let Some(item) = &self.items {
            item.explain(&format!("{path}[]"), indent + 1, out);
        }
    }
}

fn short(v: &Value) -> String {
    let s = canonical_json(v);
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

/// String values seen at one place: at most this many distinct values make
/// an enum.
pub const ENUM_MAX_VALUES: usize = 8;

/// Accumulates observed values at one place of the output and turns them
/// into a [`Schema`].
///
/// Rules: `type` is the set of types seen (integer and number seen together
/// become number); an object's `properties` are every key seen, `required`
/// the keys present in every object, and other keys are refused; an array's
/// `items` merges every item seen; strings get an `enum` when only strings
/// were seen, there are at most [`ENUM_MAX_VALUES`] distinct values and each
/// value was seen twice on average (so free text is not frozen), and a
/// `format` when every value has it.
#[derive(Debug, Default)]
pub struct ShapeInference {
    types: BTreeSet<JsonType>,
    strings: Vec<String>,
    objects: usize,
    keys: BTreeMap<String, (usize, ShapeInference)>,
    items: Option<Box<ShapeInference>>,
}

impl ShapeInference {
    /// Records one observed value.
    pub fn observe(&mut self, v: &Value) {
        self.types.insert(JsonType::of(v));
        match v {
            Value::String(s) => self.strings.push(s.clone()),
            Value::Object(map) => {
                self.objects += 1;
                for (k, x) in map {
                    let e = self.keys.entry(k.clone()).or_default();
                    e.0 += 1;
                    e.1.observe(x);
                }
            }
            Value::Array(items) => {
                let shape = self.items.get_or_insert_with(Default::default);
                for x in items {
                    shape.observe(x);
                }
            }
            _ => {}
        }
    }

    /// The inferred schema.
    pub fn schema(&self) -> Schema {
        let mut types: Vec<JsonType> = self.types.iter().copied().collect();
        if types.contains(&JsonType::Integer) && types.contains(&JsonType::Number) {
            types.retain(|t| *t != JsonType::Integer);
        }
        let mut s = Schema {
            types: match types.len() {
                0 => None,
                1 => Some(TypeSet::One(types[0])),
                _ => Some(TypeSet::Many(types.clone())),
            },
            ..Schema::default()
        };
        if !self.strings.is_empty() {
            let distinct: BTreeSet<&String> = self.strings.iter().collect();
            if types == [JsonType::String]
                && distinct.len() <= ENUM_MAX_VALUES
                && self.strings.len() >= 2 * distinct.len()
            {
                s.enumeration = Some(
                    distinct
                        .iter()
                        .map(|x| Value::String((*x).clone()))
                        .collect(),
                );
            } else {
                s.format = Format::ALL
                    .into_iter()
                    .find(|f| self.strings.iter().all(|x| f.matches(x)));
            }
        }
        if self.objects > 0 {
            s.additional_properties = Some(false);
            for (k, (count, shape)) in &self.keys {
                s.properties.insert(k.clone(), shape.schema());
                if *count == self.objects {
                    s.required.push(k.clone());
                }
            }
        }
        if let Some(items) = &self.items {
            if !items.types.is_empty() {
                s.items = Some(Box::new(items.schema()));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn infer(values: &[Value]) -> Schema {
        let mut s = ShapeInference::default();
        for v in values {
            s.observe(v);
        }
        s.schema()
    }

    #[test]
    fn infers_required_types_enums_formats_and_items() {
        let outs = [
            json!({"item":"apple","qty":2,"status":"open","date":"2024-01-02","lines":[{"sku":"A1","n":1}]}),
            json!({"item":"pear","qty":1,"status":"open","date":"2024-02-03","lines":[]}),
            json!({"item":"fig","qty":5,"status":"closed","date":"2024-03-04","lines":[{"sku":"B2","n":2.5}],"note":null}),
            json!({"item":"kiwi","qty":3,"status":"closed","date":"2024-12-31","lines":[]}),
        ];
        let s = infer(&outs);
        assert_eq!(s.required, ["date", "item", "lines", "qty", "status"]);
        assert_eq!(s.additional_properties, Some(false));
        assert_eq!(
            s.properties["qty"].types,
            Some(TypeSet::One(JsonType::Integer))
        );
        assert_eq!(
            s.properties["status"].enumeration,
            Some(vec![json!("closed"), json!("open")])
        );
        assert_eq!(
            s.properties["item"].enumeration, None,
            "4 distinct of 4: free text"
        );
        assert_eq!(s.properties["date"].format, Some(Format::Date));
        let line = s.properties["lines"].items.as_deref().unwrap();
        assert_eq!(
            line.properties["n"].types,
            Some(TypeSet::One(JsonType::Number))
        );
        for o in &outs {
            assert!(s.validate(o).is_empty(), "{:?}", s.validate(o));
        }
        let bad = json!({"item":"x","qty":"2","status":"lost","date":"2024-13-01","lines":[{"sku":3}],"extra":1});
        let errs = s.validate(&bad);
        let text = errs.join("\n");
        assert!(
            text.contains("$.qty: expected integer, found string"),
            "{text}"
        );
        assert!(text.contains("$.status: \"lost\" is not one of"), "{text}");
        assert!(
            text.contains("$.date: \"2024-13-01\" is not a date"),
            "{text}"
        );
        assert!(
            text.contains("$.lines[0].sku: expected string, found integer"),
            "{text}"
        );
        assert!(text.contains("unexpected key \"extra\""), "{text}");
        assert!(text.contains("missing required key \"n\""), "{text}");
    }

    #[test]
    fn formats() {
        assert!(Format::Date.matches("2024-02-29"));
        assert!(!Format::Date.matches("2024-2-29"));
        assert!(Format::DateTime.matches("2024-02-29T10:11:12Z"));
        assert!(Format::DateTime.matches("2024-02-29T10:11:12.5+02:00"));
        assert!(!Format::DateTime.matches("2024-02-29T10:11Z"));
        assert!(Format::Uuid.matches("123e4567-e89b-12d3-a456-426614174000"));
        assert!(!Format::Uuid.matches("123e4567e89b12d3a456426614174000"));
        assert!(Format::Email.matches("a.b@example.org"));
        assert!(!Format::Email.matches("a@b"));
    }

    #[test]
    fn parses_user_schemas_and_refuses_unknown_keywords() {
        let s: Schema = serde_json::from_value(json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object", "required": ["a"],
            "properties": {"a": {"type": ["string", "null"], "maxLength": 3, "pattern": "^x"}}
        }))
        .unwrap();
        assert!(s.validate(&json!({"a": "xy"})).is_empty());
        assert!(s.validate(&json!({"a": null})).is_empty());
        assert_eq!(s.validate(&json!({"a": "xyzw"})).len(), 1);
        assert_eq!(s.validate(&json!({"a": "ab"})).len(), 1);
        let e =
            serde_json::from_value::<Schema>(json!({"type": "object", "oneOf": []})).unwrap_err();
        assert!(e.to_string().contains("oneOf"), "{e}");
    }
}
