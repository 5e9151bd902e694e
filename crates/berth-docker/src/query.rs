//! Docker's query parameters: booleans as `1`/`true`/`0`/`false`, numbers,
//! and the JSON `filters` argument in both encodings clients use.

use std::collections::{BTreeMap, HashMap};

use crate::error::ApiError;

/// The query of one request, by name (the last value wins).
#[derive(Debug, Default, Clone)]
pub struct Query(pub HashMap<String, String>);

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        let mut m = HashMap::new();
        for (k, v) in form_pairs(q.unwrap_or("")) {
            m.insert(k, v);
        }
        Query(m)
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    /// A boolean as Docker reads it: absent or empty is `default`; `0`,
    /// `false`, `no` (any case) are false; anything else is true.
    pub fn flag(&self, k: &str, default: bool) -> bool {
        match self.get(k) {
            None | Some("") => default,
            Some(v) => !matches!(v.to_ascii_lowercase().as_str(), "0" | "false" | "no"),
        }
    }

    /// A whole number, or a 400 naming the parameter.
    pub fn int(&self, k: &str) -> Result<Option<i64>, ApiError> {
        match self.get(k) {
            None | Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid value for {k}: {v:?} is not a whole number"
                ))
            }),
        }
    }

    /// `filters`: `{"key":["v",...]}` (docker-py) or `{"key":{"v":true}}`
    /// (the Go client), as key → values.
    pub fn filters(&self) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
        let Some(text) = self.get("filters").filter(|t| !t.is_empty()) else {
            return Ok(BTreeMap::new());
        };
        let bad = || {
            ApiError::bad_request(format!(
                "invalid filters {text:?}: use JSON like {{\"label\":[\"k=v\"]}}"
            ))
        };
        let v: serde_json::Value = serde_json::from_str(text).map_err(|_| bad())?;
        let obj = v.as_object().ok_or_else(bad)?;
        let mut out = BTreeMap::new();
        for (k, v) in obj {
            let vals: Vec<String> = match v {
                serde_json::Value::Array(a) => a
                    .iter()
                    .map(|x| x.as_str().map(String::from).ok_or_else(bad))
                    .collect::<Result<_, _>>()?,
                serde_json::Value::Object(m) => m
                    .iter()
                    .filter(|(_, on)| on.as_bool().unwrap_or(false))
                    .map(|(k, _)| k.clone())
                    .collect(),
                serde_json::Value::String(s) => vec![s.clone()],
                _ => return Err(bad()),
            };
            out.insert(k.clone(), vals);
        }
        Ok(out)
    }
}

/// `application/x-www-form-urlencoded` pairs, percent- and plus-decoded.
fn form_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_numbers() {
        let q = Query::parse(Some("all=1&size=false&t=10&name=a%2Fb+c&x="));
        assert!(q.flag("all", false));
        assert!(!q.flag("size", true));
        assert!(q.flag("x", true));
        assert!(!q.flag("missing", false));
        assert_eq!(q.int("t").ok().flatten(), Some(10));
        assert!(q.int("name").is_err());
        assert_eq!(q.get("name"), Some("a/b c"));
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%4"), "%4");
    }

    #[test]
    fn both_filter_encodings() {
        let q = Query::parse(Some(
            "filters=%7B%22label%22%3A%5B%22a%3Db%22%5D%2C%22status%22%3A%7B%22running%22%3Atrue%7D%7D",
        ));
        let f = q.filters().expect("filters");
        assert_eq!(f["label"], vec!["a=b".to_string()]);
        assert_eq!(f["status"], vec!["running".to_string()]);
        assert!(Query::parse(Some("filters=nope")).filters().is_err());
    }
}
