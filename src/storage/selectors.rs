//! Label selectors (`labelSelector=`) and field selectors (`fieldSelector=`) of list and watch
//! requests: parsing with upstream's grammar and errors, and matching against JSON objects.
//!
//! Both parsers follow `k8s.io/apimachinery/pkg/labels` and `.../fields`: the label grammar has
//! its own lexer (`=`, `==`, `!=`, `in`, `notin`, `!`, `>`, `<`, parentheses), field selectors are
//! plain `path op value` terms with backslash escapes. Field paths are resolved generically on
//! the JSON object, so the server needs no per-kind accessor code; [`FieldSelector::check_supported`]
//! reproduces upstream's per-kind whitelist so that typos answer 400 instead of matching nothing.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde_json::{Map, Value};

use super::ObjectError;
use crate::registry::ResourceInfo;
use crate::validation::{validate_label_key, validate_label_value};

// ------------------------------------------------------------------------------------------------
// Label selectors
// ------------------------------------------------------------------------------------------------

/// The operator of one label requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelOp {
    /// `k=v` or `k==v`.
    Equals,
    /// `k!=v`: also true when the key is absent.
    NotEquals,
    /// `k in (a,b)`.
    In,
    /// `k notin (a,b)`: also true when the key is absent.
    NotIn,
    /// `k`.
    Exists,
    /// `!k`.
    DoesNotExist,
    /// `k>5`: the label must exist and parse as an integer greater than the value.
    GreaterThan,
    /// `k<5`.
    LessThan,
}

/// One ANDed term of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRequirement {
    pub key: String,
    pub op: LabelOp,
    /// Sorted and deduplicated, as upstream keeps them in a set. Empty for `Exists`/`DoesNotExist`.
    pub values: Vec<String>,
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<LabelRequirement>,
}

/// Read access to a set of labels, so one matcher serves JSON maps and typed maps alike.
pub trait LabelSource {
    fn label(&self, key: &str) -> Option<&str>;
}

impl LabelSource for Map<String, Value> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }
}

impl LabelSource for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl LabelSource for HashMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

/// A JSON value used as a label map: a non-object has no labels.
impl LabelSource for Value {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Identifier(String),
    DoesNotExist, // !
    Equals,       // =
    DoubleEquals, // ==
    NotEquals,    // !=
    GreaterThan,  // >
    LessThan,     // <
    In,
    NotIn,
    OpenPar,
    ClosedPar,
    Comma,
    End,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Token::Identifier(s) => s.as_str(),
            Token::DoesNotExist => "!",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::NotEquals => "!=",
            Token::GreaterThan => ">",
            Token::LessThan => "<",
            Token::In => "in",
            Token::NotIn => "notin",
            Token::OpenPar => "(",
            Token::ClosedPar => ")",
            Token::Comma => ",",
            Token::End => "",
        };
        f.write_str(s)
    }
}

/// Characters that end an identifier (upstream's `isSpecialSymbol` plus whitespace).
fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn lex(input: &str) -> Vec<Token> {
    let chars: Vec<char> = input.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let next = chars.get(i + 1).copied();
        let (tok, len) = match (c, next) {
            ('!', Some('=')) => (Token::NotEquals, 2),
            ('!', _) => (Token::DoesNotExist, 1),
            ('=', Some('=')) => (Token::DoubleEquals, 2),
            ('=', _) => (Token::Equals, 1),
            ('>', _) => (Token::GreaterThan, 1),
            ('<', _) => (Token::LessThan, 1),
            ('(', _) => (Token::OpenPar, 1),
            (')', _) => (Token::ClosedPar, 1),
            (',', _) => (Token::Comma, 1),
            _ => {
                let start = i;
                let mut j = i;
                while j < chars.len() && !chars[j].is_whitespace() && !is_special(chars[j]) {
                    j += 1;
                }
                let word: String = chars[start..j].iter().collect();
                let tok = match word.as_str() {
                    "in" => Token::In,
                    "notin" => Token::NotIn,
                    _ => Token::Identifier(word),
                };
                (tok, j - start)
            }
        };
        out.push(tok);
        i += len;
    }
    out.push(Token::End);
    out
}

struct LabelParser<'a> {
    input: &'a str,
    tokens: Vec<Token>,
    pos: usize,
}

impl LabelParser<'_> {
    fn peek(&self) -> &Token {
        self.tokens.get(self.pos).unwrap_or(&Token::End)
    }

    fn next(&mut self) -> Token {
        let t = self.peek().clone();
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        t
    }

    /// In value position the keywords `in`/`notin` are ordinary identifiers (upstream's
    /// `Values` parser context).
    fn next_value(&mut self) -> Token {
        match self.next() {
            Token::In => Token::Identifier("in".into()),
            Token::NotIn => Token::Identifier("notin".into()),
            t => t,
        }
    }

    fn err(&self, found: &Token, expected: &str) -> ObjectError {
        ObjectError::BadRequest(format!(
            "unable to parse requirement: found '{found}', expected: {expected} (in label selector \"{}\")",
            self.input
        ))
    }

    fn parse(&mut self) -> Result<Vec<LabelRequirement>, ObjectError> {
        let mut reqs = Vec::new();
        if *self.peek() == Token::End {
            return Ok(reqs);
        }
        loop {
            reqs.push(self.requirement()?);
            match self.next() {
                Token::End => return Ok(reqs),
                Token::Comma => {
                    if matches!(self.peek(), Token::End) {
                        return Err(self.err(&Token::End, "identifier after ','"));
                    }
                }
                t => return Err(self.err(&t, "',' or 'end of string'")),
            }
        }
    }

    fn requirement(&mut self) -> Result<LabelRequirement, ObjectError> {
        let negated = if *self.peek() == Token::DoesNotExist {
            self.next();
            true
        } else {
            false
        };
        let key = match self.next() {
            Token::Identifier(k) => k,
            t => return Err(self.err(&t, "identifier")),
        };
        validate_label_key(&key).map_err(|e| {
            ObjectError::BadRequest(format!(
                "unable to parse requirement: invalid label key: {e}"
            ))
        })?;
        if negated {
            return Ok(LabelRequirement {
                key,
                op: LabelOp::DoesNotExist,
                values: Vec::new(),
            });
        }
        if matches!(self.peek(), Token::End | Token::Comma) {
            return Ok(LabelRequirement {
                key,
                op: LabelOp::Exists,
                values: Vec::new(),
            });
        }
        let op = match self.next() {
            Token::Equals | Token::DoubleEquals => LabelOp::Equals,
            Token::NotEquals => LabelOp::NotEquals,
            Token::In => LabelOp::In,
            Token::NotIn => LabelOp::NotIn,
            Token::GreaterThan => LabelOp::GreaterThan,
            Token::LessThan => LabelOp::LessThan,
            t => return Err(self.err(&t, "in, notin, =, ==, !=, gt, lt")),
        };
        let mut values = match op {
            LabelOp::In | LabelOp::NotIn => self.value_set()?,
            _ => vec![self.exact_value()?],
        };
        values.sort();
        values.dedup();
        match op {
            LabelOp::GreaterThan | LabelOp::LessThan => {
                if values[0].parse::<i64>().is_err() {
                    return Err(ObjectError::BadRequest(format!(
                        "unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer, got \"{}\"",
                        values[0]
                    )));
                }
            }
            _ => {
                for v in &values {
                    validate_label_value(v).map_err(|e| {
                        ObjectError::BadRequest(format!(
                            "unable to parse requirement: invalid label value: {e}"
                        ))
                    })?;
                }
            }
        }
        Ok(LabelRequirement { key, op, values })
    }

    fn exact_value(&mut self) -> Result<String, ObjectError> {
        if matches!(self.peek(), Token::End | Token::Comma) {
            // `k=` selects the empty value.
            return Ok(String::new());
        }
        match self.next_value() {
            Token::Identifier(v) => Ok(v),
            t => Err(self.err(&t, "identifier")),
        }
    }

    fn value_set(&mut self) -> Result<Vec<String>, ObjectError> {
        match self.next() {
            Token::OpenPar => {}
            t => return Err(self.err(&t, "'('")),
        }
        let mut values = Vec::new();
        if *self.peek() == Token::ClosedPar {
            self.next();
            return Err(ObjectError::BadRequest(
                "unable to parse requirement: for 'in', 'notin' operators, values set can't be empty"
                    .into(),
            ));
        }
        loop {
            // An element may be empty: `k in (a,)` and `k in (,a)` include "".
            match self.peek().clone() {
                Token::Comma | Token::ClosedPar => values.push(String::new()),
                _ => match self.next_value() {
                    Token::Identifier(v) => values.push(v),
                    t => return Err(self.err(&t, "identifier")),
                },
            }
            match self.next() {
                Token::Comma => continue,
                Token::ClosedPar => return Ok(values),
                t => return Err(self.err(&t, "',' or ')'")),
            }
        }
    }
}

impl LabelSelector {
    /// Parses a `labelSelector` query value (already percent-decoded). Bad syntax, invalid keys
    /// and invalid values are 400 BadRequest.
    pub fn parse(input: &str) -> Result<LabelSelector, ObjectError> {
        let mut p = LabelParser {
            input,
            tokens: lex(input),
            pos: 0,
        };
        let mut requirements = p.parse()?;
        // Upstream sorts requirements by key; matching is order-independent, but a stable order
        // makes Display and equality deterministic.
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    /// Whether this selector matches every object.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn requirements(&self) -> &[LabelRequirement] {
        &self.requirements
    }

    /// Whether a set of labels satisfies every requirement.
    pub fn matches<L: LabelSource + ?Sized>(&self, labels: &L) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Matches against `metadata.labels` of a JSON object (no labels = empty set).
    pub fn matches_object(&self, obj: &Value) -> bool {
        let empty = Map::new();
        let labels = obj
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        self.matches(labels)
    }
}

impl LabelRequirement {
    pub fn matches<L: LabelSource + ?Sized>(&self, labels: &L) -> bool {
        let got = labels.label(&self.key);
        match self.op {
            LabelOp::Equals | LabelOp::In => {
                got.is_some_and(|v| self.values.iter().any(|x| x == v))
            }
            LabelOp::NotEquals | LabelOp::NotIn => {
                got.is_none_or(|v| !self.values.iter().any(|x| x == v))
            }
            LabelOp::Exists => got.is_some(),
            LabelOp::DoesNotExist => got.is_none(),
            LabelOp::GreaterThan | LabelOp::LessThan => {
                let (Some(have), Some(want)) = (
                    got.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|v| v.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.op == LabelOp::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

/// A value set as the parser reads it back: a set holding only the empty string is written
/// `(,)`, since `()` would be an (invalid) empty set.
fn value_set(values: &[String]) -> String {
    if values.len() == 1 && values[0].is_empty() {
        ",".to_string()
    } else {
        values.join(",")
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match r.op {
                LabelOp::Equals => format!("{}={}", r.key, r.values.join("")),
                LabelOp::NotEquals => format!("{}!={}", r.key, r.values.join("")),
                LabelOp::In => format!("{} in ({})", r.key, value_set(&r.values)),
                LabelOp::NotIn => format!("{} notin ({})", r.key, value_set(&r.values)),
                LabelOp::Exists => r.key.clone(),
                LabelOp::DoesNotExist => format!("!{}", r.key),
                LabelOp::GreaterThan => format!("{}>{}", r.key, r.values.join("")),
                LabelOp::LessThan => format!("{}<{}", r.key, r.values.join("")),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

// ------------------------------------------------------------------------------------------------
// Field selectors
// ------------------------------------------------------------------------------------------------

/// The operator of one field term.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldOp {
    /// `=` or `==`.
    Equals,
    /// `!=`.
    NotEquals,
}

/// One ANDed `path op value` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldTerm {
    /// Dotted path into the JSON object, e.g. `spec.nodeName`.
    pub field: String,
    pub op: FieldOp,
    /// Unescaped value.
    pub value: String,
}

/// A parsed field selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

/// Splits on commas not preceded by a backslash escape (upstream `splitTerms`).
fn split_terms(input: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in input.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            out.push(&input[start..i]);
            start = i + 1;
        }
    }
    out.push(&input[start..]);
    out
}

/// Finds the first unescaped operator, trying `!=`, `==`, `=` at each position (upstream
/// `splitTerm`).
fn split_term(term: &str) -> Option<(&str, FieldOp, &str)> {
    let mut escaped = false;
    for (i, c) in term.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        if c == '\\' {
            escaped = true;
            continue;
        }
        let rest = &term[i..];
        for (op, kind) in [
            ("!=", FieldOp::NotEquals),
            ("==", FieldOp::Equals),
            ("=", FieldOp::Equals),
        ] {
            if rest.starts_with(op) {
                return Some((&term[..i], kind, &term[i + op.len()..]));
            }
        }
    }
    None
}

/// Undoes `\\`, `\,` and `\=` escapes; any other escape is an error, as upstream.
fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(e @ ('\\' | ',' | '=')) => out.push(e),
            Some(e) => {
                return Err(format!(
                    "invalid field selector: invalid escape sequence: \\{e}"
                ));
            }
            None => return Err("invalid field selector: unterminated escape sequence".into()),
        }
    }
    Ok(out)
}

/// Fields upstream accepts for every kind.
const COMMON_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

/// Boolean fields that Go renders as `"false"` when absent (no `omitempty` zero in JSON).
const FALSE_WHEN_ABSENT: &[&str] = &["spec.unschedulable", "spec.hostNetwork"];

impl FieldSelector {
    /// Parses a `fieldSelector` query value (already percent-decoded). A term without `=`,
    /// `==` or `!=` (e.g. `a in (b)`, `a>1`) is 400 BadRequest.
    pub fn parse(input: &str) -> Result<FieldSelector, ObjectError> {
        let mut terms = Vec::new();
        for raw in split_terms(input) {
            if raw.is_empty() {
                continue;
            }
            let Some((lhs, op, rhs)) = split_term(raw) else {
                return Err(ObjectError::BadRequest(format!(
                    "invalid field selector: invalid selector: '{input}'; can't understand '{raw}'"
                )));
            };
            let field = unescape(lhs).map_err(ObjectError::BadRequest)?;
            let value = unescape(rhs).map_err(ObjectError::BadRequest)?;
            if field.is_empty() {
                return Err(ObjectError::BadRequest(format!(
                    "invalid field selector: invalid selector: '{input}'; can't understand '{raw}'"
                )));
            }
            terms.push(FieldTerm { field, op, value });
        }
        Ok(FieldSelector { terms })
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    pub fn terms(&self) -> &[FieldTerm] {
        &self.terms
    }

    /// Rejects fields upstream does not index for this kind, with upstream's 400
    /// `field label not supported: <field>`.
    pub fn check_supported(&self, info: &ResourceInfo) -> Result<(), ObjectError> {
        for t in &self.terms {
            let f = t.field.as_str();
            if !COMMON_FIELDS.contains(&f) && !info.field_selectors.contains(&f) {
                return Err(ObjectError::BadRequest(format!(
                    "field label not supported: {f}"
                )));
            }
        }
        Ok(())
    }

    /// The object name when the selector pins `metadata.name` with `=`/`==`, so the server can
    /// read one key instead of a range (kubectl's `get node n1 -w` and `delete --wait`).
    pub fn single_name(&self) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == "metadata.name" && t.op == FieldOp::Equals)
            .map(|t| t.value.as_str())
    }

    /// Whether the object satisfies every term; a missing field compares as `""`.
    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|t| {
            let got = field_value(obj, &t.field);
            match t.op {
                FieldOp::Equals => got == t.value,
                FieldOp::NotEquals => got != t.value,
            }
        })
    }
}

/// The string form of a dotted path as upstream's field sets render it.
pub fn field_value(obj: &Value, path: &str) -> String {
    // Events' `source` selects `source.component`; `status.podIPs` compares the first IP.
    let resolved = match path {
        "source" => "source.component",
        _ => path,
    };
    let mut cur = obj;
    for part in resolved.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => {
                return if FALSE_WHEN_ABSENT.contains(&path) {
                    "false".into()
                } else {
                    String::new()
                };
            }
        }
    }
    if path == "status.podIPs" {
        return cur
            .as_array()
            .and_then(|a| a.first())
            .and_then(|ip| ip.get("ip"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null if FALSE_WHEN_ABSENT.contains(&path) => "false".into(),
        Value::Null | Value::Array(_) | Value::Object(_) => String::new(),
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let esc = |s: &str| {
            s.replace('\\', "\\\\")
                .replace(',', "\\,")
                .replace('=', "\\=")
        };
        let parts: Vec<String> = self
            .terms
            .iter()
            .map(|t| {
                let op = match t.op {
                    FieldOp::Equals => "=",
                    FieldOp::NotEquals => "!=",
                };
                format!("{}{op}{}", esc(&t.field), esc(&t.value))
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::lookup;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selector_matching_table() {
        let l = labels(&[("env", "prod"), ("tier", "web"), ("n", "7"), ("empty", "")]);
        let cases: &[(&str, bool)] = &[
            ("", true),
            ("env=prod", true),
            ("env==prod", true),
            ("env=dev", false),
            ("env!=dev", true),
            ("env!=prod", false),
            ("missing!=x", true),
            ("env in (dev,prod)", true),
            ("env in (dev)", false),
            ("env notin (dev)", true),
            ("env notin (prod,dev)", false),
            ("missing notin (a)", true),
            ("env", true),
            ("missing", false),
            ("!missing", true),
            ("!env", false),
            ("env=prod,tier=web", true),
            ("env=prod,tier=db", false),
            ("  env = prod ,  tier in ( web , db ) ", true),
            ("n>5", true),
            ("n<5", false),
            ("missing>1", false),
            ("empty=", true),
            ("empty", true),
            ("env=", false),
            ("x in (a,)", false),
            ("empty in (a,)", true),
            ("example.com/role notin (master)", true),
            ("env in (in,notin)", false),
        ];
        for (sel, want) in cases {
            let s = LabelSelector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.matches(&l), *want, "selector {sel:?}");
        }
    }

    #[test]
    fn label_selector_errors_are_400() {
        for bad in [
            "env=prod,",
            ",env",
            "env in prod",
            "env in ()",
            "env in (a b)",
            "env notin (a",
            "env=a=b",
            "env=a b",
            "=prod",
            "!env=prod",
            "n>abc",
            "-bad=1",
            "env=not ok!",
            "env=(a)",
            "env in (a,b",
            "env)",
        ] {
            let e = LabelSelector::parse(bad).expect_err(bad);
            assert!(matches!(e, ObjectError::BadRequest(_)), "{bad}: {e}");
            assert!(
                e.to_string().contains("unable to parse requirement"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn label_selector_works_on_json_and_objects() {
        let s = LabelSelector::parse("node-role.kubernetes.io/control-plane,!x").unwrap();
        let obj = json!({"metadata":{"labels":{"node-role.kubernetes.io/control-plane":"true"}}});
        assert!(s.matches_object(&obj));
        assert!(!s.matches_object(&json!({"metadata":{}})));
        assert!(s.matches(obj["metadata"]["labels"].as_object().unwrap()));
        let s = LabelSelector::parse("!x").unwrap();
        assert!(s.matches_object(&json!({})));
        assert_eq!(
            LabelSelector::parse("b in (y,x,x),a").unwrap().to_string(),
            "a,b in (x,y)"
        );
    }

    #[test]
    fn field_selector_matching_table() {
        let pod = json!({
            "kind": "Pod",
            "metadata": {"name": "p1", "namespace": "default"},
            "spec": {"nodeName": "n1"},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.1"}]}
        });
        let event = json!({
            "metadata": {"name": "n1.1", "namespace": "default"},
            "involvedObject": {"kind": "Node", "name": "n1", "uid": "u-1"},
            "source": {"component": "kubelet"},
            "type": "Normal"
        });
        let node = json!({"metadata": {"name": "n1"}, "spec": {}});
        let cases: &[(&Value, &str, bool)] = &[
            (&pod, "", true),
            (&pod, "metadata.name=p1", true),
            (&pod, "metadata.name==p1", true),
            (&pod, "metadata.name!=p1", false),
            (
                &pod,
                "spec.nodeName=n1,status.phase!=Succeeded,status.phase!=Failed",
                true,
            ),
            (
                &pod,
                "status.phase!=Failed,spec.nodeName=n1,status.phase!=Succeeded",
                true,
            ),
            (&pod, "spec.nodeName=n2,status.phase!=Succeeded", false),
            (&pod, "spec.nodeName=n1,status.phase!=Running", false),
            (&pod, "status.podIPs=10.0.0.1", true),
            (&pod, "spec.hostNetwork=false", true),
            (
                &event,
                "involvedObject.name=n1,involvedObject.namespace=,involvedObject.kind=Node,involvedObject.uid=u-1",
                true,
            ),
            (
                &event,
                "involvedObject.name=n1,involvedObject.namespace=,involvedObject.kind=Node,involvedObject.uid=n1",
                false,
            ),
            (&event, "source=kubelet,type=Normal", true),
            (&node, "spec.unschedulable=false", true),
            (&node, "spec.unschedulable=true", false),
            (
                &json!({"spec":{"unschedulable":true}}),
                "spec.unschedulable=true",
                true,
            ),
            (&node, "metadata.namespace=", true),
            (&node, "a\\,b=", true),
            (
                &json!({"metadata":{"name":"a,b=c"}}),
                "metadata.name=a\\,b\\=c",
                true,
            ),
        ];
        for (obj, sel, want) in cases {
            let s = FieldSelector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.matches(obj), *want, "selector {sel:?}");
        }
    }

    #[test]
    fn field_selector_errors_and_helpers() {
        for bad in [
            "a",
            "a in (b)",
            "a>1",
            "=x",
            "metadata.name=a\\b",
            "metadata.name=a\\",
        ] {
            let e = FieldSelector::parse(bad).expect_err(bad);
            assert!(matches!(e, ObjectError::BadRequest(_)), "{bad}");
        }
        let s = FieldSelector::parse("metadata.name=n1").unwrap();
        assert_eq!(s.single_name(), Some("n1"));
        assert_eq!(
            FieldSelector::parse("metadata.name!=n1")
                .unwrap()
                .single_name(),
            None
        );
        assert_eq!(
            FieldSelector::parse("metadata.namespace=kube-system,metadata.name==x")
                .unwrap()
                .single_name(),
            Some("x")
        );
        assert!(FieldSelector::parse(",,").unwrap().is_empty());

        let nodes = lookup("", "v1", "nodes").unwrap();
        let pods = lookup("", "v1", "pods").unwrap();
        let events = lookup("", "v1", "events").unwrap();
        let s = FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed").unwrap();
        assert!(s.check_supported(pods).is_ok());
        let e = s.check_supported(nodes).unwrap_err();
        assert_eq!(e.to_string(), "field label not supported: spec.nodeName");
        let s = FieldSelector::parse("involvedObject.uid=u,involvedObject.namespace=").unwrap();
        assert!(s.check_supported(events).is_ok());
        assert_eq!(
            FieldSelector::parse("b!=x\\,y,a=1").unwrap().to_string(),
            "b!=x\\,y,a=1"
        );
    }
}
