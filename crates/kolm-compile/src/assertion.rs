//! Explicit assertions a test may carry:
//! `{"type": "contains", "value": "x"}`, and `not-` of each type.
//!
//! | type | value | passes when the output … |
//! |---|---|---|
//! | `equals` | string | is exactly the value |
//! | `contains` | string | contains the value |
//! | `icontains` | string | contains the value, ignoring case |
//! | `starts-with` | string | starts with the value |
//! | `regex` | string | matches the pattern somewhere (unanchored) |
//! | `is-json` | none | parses as JSON |
//! | `json-schema` | object | parses as JSON and conforms to the schema |
//! | `min-length` | integer | has at least that many characters |
//! | `max-length` | integer | has at most that many characters |
//!
//! `not-TYPE` passes exactly when `TYPE` fails. Lengths count Unicode
//! scalar values.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::schema::Schema;

/// A compiled regular expression that compares by its pattern.
#[derive(Clone, Debug)]
pub struct Pattern(regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Pattern {
    /// Compiles `p` (size-limited, linear-time matching).
    pub fn new(p: &str) -> Result<Self, String> {
        regex::RegexBuilder::new(p)
            .size_limit(1 << 20)
            .build()
            .map(Pattern)
            .map_err(|e| format!("bad regex {p:?}: {e}"))
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// What an assertion checks.
#[derive(Clone, Debug, PartialEq)]
pub enum Check {
    /// The output is exactly the value.
    Equals(String),
    /// The output contains the value.
    Contains(String),
    /// The output contains the value, case-insensitively.
    IContains(String),
    /// The output starts with the value.
    StartsWith(String),
    /// The output matches the pattern.
    Regex(Pattern),
    /// The output parses as JSON.
    IsJson,
    /// The output parses as JSON and conforms to the schema.
    JsonSchema(Box<Schema>),
    /// At least this many characters.
    MinLength(u64),
    /// At most this many characters.
    MaxLength(u64),
}

/// One explicit assertion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawAssertion", into = "RawAssertion")]
pub struct Assertion {
    /// What is checked.
    pub check: Check,
    /// `not-`: passes when the check fails.
    pub negate: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAssertion {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<Value>,
}

const TYPES: &str = "equals, contains, icontains, starts-with, regex, is-json, json-schema, min-length, max-length (or not- of each)";

impl TryFrom<RawAssertion> for Assertion {
    type Error = String;

    fn try_from(raw: RawAssertion) -> Result<Self, String> {
        let (negate, base) = match raw.kind.strip_prefix("not-") {
            Some(b) => (true, b),
            None => (false, raw.kind.as_str()),
        };
        let kind = &raw.kind;
        let text = |v: Option<Value>| match v {
            Some(Value::String(s)) => Ok(s),
            _ => Err(format!("assertion {kind:?} needs a string \"value\"")),
        };
        let count = |v: Option<Value>| match v.as_ref().and_then(Value::as_u64) {
            Some(n) => Ok(n),
            None => Err(format!(
                "assertion {kind:?} needs a non-negative integer \"value\""
            )),
        };
        let check = match base {
            "equals" => Check::Equals(text(raw.value)?),
            "contains" => Check::Contains(text(raw.value)?),
            "icontains" => Check::IContains(text(raw.value)?),
            "starts-with" => Check::StartsWith(text(raw.value)?),
            "regex" => Check::Regex(Pattern::new(&text(raw.value)?)?),
            "is-json" => {
                if raw.value.is_some() {
                    return Err(format!("assertion {kind:?} takes no \"value\""));
                }
                Check::IsJson
            }
            "json-schema" => {
                let v = raw.value.filter(Value::is_object).ok_or_else(|| {
                    format!("assertion {kind:?} needs a schema object as \"value\"")
                })?;
                let schema: Schema =
                    serde_json::from_value(v).map_err(|e| format!("assertion {kind:?}: {e}"))?;
                schema
                    .check_patterns()
                    .map_err(|e| format!("assertion {kind:?}: {e}"))?;
                Check::JsonSchema(Box::new(schema))
            }
            "min-length" => Check::MinLength(count(raw.value)?),
            "max-length" => Check::MaxLength(count(raw.value)?),
            _ => return Err(format!("unknown assertion type {kind:?}; known: {TYPES}")),
        };
        Ok(Assertion { check, negate })
    }
}

impl From<Assertion> for RawAssertion {
    fn from(a: Assertion) -> Self {
        let (kind, value) = match a.check {
            Check::Equals(s) => ("equals", Some(Value::String(s))),
            Check::Contains(s) => ("contains", Some(Value::String(s))),
            Check::IContains(s) => ("icontains", Some(Value::String(s))),
            Check::StartsWith(s) => ("starts-with", Some(Value::String(s))),
            Check::Regex(p) => ("regex", Some(Value::String(p.as_str().to_owned()))),
            Check::IsJson => ("is-json", None),
            Check::JsonSchema(s) => ("json-schema", serde_json::to_value(*s).ok()),
            Check::MinLength(n) => ("min-length", Some(Value::from(n))),
            Check::MaxLength(n) => ("max-length", Some(Value::from(n))),
        };
        RawAssertion {
            kind: if a.negate {
                format!("not-{kind}")
            } else {
                kind.to_owned()
            },
            value,
        }
    }
}

impl Assertion {
    /// A positive assertion.
    pub fn new(check: Check) -> Self {
        Self {
            check,
            negate: false,
        }
    }

    /// The `not-` of this assertion.
    pub fn negated(self) -> Self {
        Self {
            negate: !self.negate,
            ..self
        }
    }

    /// The assertion's `type` as written (`contains`, `not-regex`).
    pub fn type_name(&self) -> String {
        RawAssertion::from(self.clone()).kind
    }

    /// `Ok(())` when `output` passes, else why not (in words).
    pub fn check(&self, output: &str) -> Result<(), String> {
        let (held, detail) = self.raw(output);
        if held != self.negate {
            Ok(())
        } else if self.negate {
            Err(format!("should not {}", self.describe_positive()))
        } else {
            Err(match detail {
                Some(d) => format!("should {} ({d})", self.describe_positive()),
                None => format!("should {}", self.describe_positive()),
            })
        }
    }

    fn raw(&self, output: &str) -> (bool, Option<String>) {
        let len = || output.chars().count() as u64;
        match &self.check {
            Check::Equals(v) => (output == v, None),
            Check::Contains(v) => (output.contains(v.as_str()), None),
            Check::IContains(v) => (output.to_lowercase().contains(&v.to_lowercase()), None),
            Check::StartsWith(v) => (output.starts_with(v.as_str()), None),
            Check::Regex(p) => (p.0.is_match(output), None),
            Check::IsJson => match serde_json::from_str::<Value>(output) {
                Ok(_) => (true, None),
                Err(e) => (false, Some(e.to_string())),
            },
            Check::JsonSchema(s) => match serde_json::from_str::<Value>(output) {
                Ok(v) => {
                    let errs = s.validate(&v);
                    (errs.is_empty(), (!errs.is_empty()).then(|| errs.join("; ")))
                }
                Err(e) => (false, Some(format!("not JSON: {e}"))),
            },
            Check::MinLength(n) => (len() >= *n, Some(format!("{} characters", len()))),
            Check::MaxLength(n) => (len() <= *n, Some(format!("{} characters", len()))),
        }
    }

    fn describe_positive(&self) -> String {
        match &self.check {
            Check::Equals(v) => format!("equal {v:?}"),
            Check::Contains(v) => format!("contain {v:?}"),
            Check::IContains(v) => format!("contain {v:?} (ignoring case)"),
            Check::StartsWith(v) => format!("start with {v:?}"),
            Check::Regex(p) => format!("match /{}/", p.as_str()),
            Check::IsJson => "be valid JSON".into(),
            Check::JsonSchema(_) => "be JSON conforming to the test's schema".into(),
            Check::MinLength(n) => format!("be at least {n} characters long"),
            Check::MaxLength(n) => format!("be at most {n} characters long"),
        }
    }
}

impl fmt::Display for Assertion {
    /// The rule in words: "the output must contain \"x\"".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let must = if self.negate { "must not" } else { "must" };
        write!(f, "the output {must} {}", self.describe_positive())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn a(v: Value) -> Assertion {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn every_type_and_its_negation() {
        let cases = [
            (json!({"type":"equals","value":"ab"}), "ab", "abc"),
            (json!({"type":"contains","value":"b"}), "abc", "ac"),
            (json!({"type":"icontains","value":"B"}), "abc", "ac"),
            (json!({"type":"starts-with","value":"a"}), "abc", "cab"),
            (json!({"type":"regex","value":"^\\d{3}$"}), "123", "1234"),
            (json!({"type":"is-json"}), "{\"a\":1}", "{a:1}"),
            (
                json!({"type":"json-schema","value":{"type":"object","required":["a"]}}),
                "{\"a\":1}",
                "{\"b\":1}",
            ),
            (json!({"type":"min-length","value":3}), "héé", "hé"),
            (json!({"type":"max-length","value":2}), "hé", "héé"),
        ];
        for (spec, pass, fail) in cases {
            let pos = a(spec.clone());
            assert!(pos.check(pass).is_ok(), "{spec} on {pass}");
            assert!(pos.check(fail).is_err(), "{spec} on {fail}");
            let neg = pos.clone().negated();
            assert!(neg.check(pass).is_err());
            assert!(neg.check(fail).is_ok());
            // Round trip through JSON, negated form included.
            let back: Assertion =
                serde_json::from_value(serde_json::to_value(&neg).unwrap()).unwrap();
            assert_eq!(back, neg);
            assert!(serde_json::to_value(&neg).unwrap()["type"]
                .as_str()
                .unwrap()
                .starts_with("not-"));
        }
    }

    #[test]
    fn bad_assertions_are_refused_with_reasons() {
        for (v, want) in [
            (json!({"type":"contains"}), "needs a string"),
            (
                json!({"type":"min-length","value":-1}),
                "non-negative integer",
            ),
            (json!({"type":"regex","value":"("}), "bad regex"),
            (json!({"type":"is-json","value":1}), "takes no"),
            (json!({"type":"json-schema","value":"x"}), "schema object"),
            (json!({"type":"nope","value":"x"}), "unknown assertion type"),
            (
                json!({"type":"contains","value":"x","extra":1}),
                "unknown field",
            ),
        ] {
            let e = serde_json::from_value::<Assertion>(v.clone())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{v}: {e}");
        }
    }

    #[test]
    fn messages_say_what_failed() {
        let s = a(json!({"type":"json-schema","value":{"type":"object","required":["a"]}}));
        let e = s.check("{}").unwrap_err();
        assert!(e.contains("missing required key \"a\""), "{e}");
        assert_eq!(
            a(json!({"type":"not-contains","value":"x"})).to_string(),
            "the output must not contain \"x\""
        );
    }
}
