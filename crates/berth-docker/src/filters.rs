//! Docker's `filters` query parameter: a JSON object of key → values,
//! `{"label":["a=b"],"dangling":["true"]}`, or the older
//! `{"label":{"a=b":true}}`. Unknown keys are a 400, as Docker's.

use std::collections::{BTreeMap, HashMap};

use crate::error::ApiError;

#[derive(Debug, Default)]
pub struct Filters(BTreeMap<String, Vec<String>>);

/// `1`, `true` (any case): Docker's boolean query values.
pub fn truthy(v: Option<&str>) -> bool {
    matches!(
        v.map(str::to_ascii_lowercase).as_deref(),
        Some("1" | "true")
    )
}

impl Filters {
    pub fn parse(raw: Option<&str>, known: &[&str]) -> Result<Filters, ApiError> {
        let raw = match raw {
            None => return Ok(Filters::default()),
            Some(r) if r.trim().is_empty() => return Ok(Filters::default()),
            Some(r) => r,
        };
        let bad = |e: String| ApiError::bad_request(format!("invalid filters {raw:?}: {e}"));
        let v: serde_json::Value = serde_json::from_str(raw).map_err(|e| bad(e.to_string()))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("not a JSON object".into()))?;
        let mut out = BTreeMap::new();
        for (k, v) in obj {
            if !known.contains(&k.as_str()) {
                return Err(ApiError::bad_request(format!("invalid filter '{k}'")));
            }
            let values: Vec<String> = match v {
                serde_json::Value::Array(a) => a
                    .iter()
                    .map(|x| x.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| bad(format!("{k}: values must be strings")))?,
                serde_json::Value::Object(m) => m
                    .iter()
                    .filter(|(_, on)| on.as_bool() == Some(true))
                    .map(|(x, _)| x.clone())
                    .collect(),
                _ => return Err(bad(format!("{k}: a list of values expected"))),
            };
            out.insert(k.clone(), values);
        }
        Ok(Filters(out))
    }

    pub fn get(&self, key: &str) -> &[String] {
        self.0.get(key).map_or(&[], Vec::as_slice)
    }

    /// No value for `key`, or one that `f` accepts.
    pub fn any(&self, key: &str, f: impl Fn(&str) -> bool) -> bool {
        let v = self.get(key);
        v.is_empty() || v.iter().any(|x| f(x))
    }

    /// A boolean filter (`dangling`, `all`); a value other than
    /// true/false/1/0 is a 400.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.get(key).last().map(|s| s.to_ascii_lowercase()) {
            None => Ok(None),
            Some(v) if v == "true" || v == "1" => Ok(Some(true)),
            Some(v) if v == "false" || v == "0" => Ok(Some(false)),
            Some(v) => Err(ApiError::bad_request(format!(
                "invalid filter '{key}={v}': use true or false"
            ))),
        }
    }

    /// Every `label=KEY` / `label=KEY=VALUE` holds.
    pub fn labels_match(&self, labels: &HashMap<String, String>) -> bool {
        self.get("label").iter().all(|l| match l.split_once('=') {
            Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
            None => labels.contains_key(l.as_str()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_shapes_and_unknown_keys() {
        let f = Filters::parse(
            Some(r#"{"label":["a=b","c"],"dangling":["true"]}"#),
            &["label", "dangling"],
        )
        .unwrap();
        assert_eq!(f.bool("dangling").unwrap(), Some(true));
        let mut l = HashMap::new();
        l.insert("a".to_string(), "b".to_string());
        assert!(!f.labels_match(&l));
        l.insert("c".to_string(), String::new());
        assert!(f.labels_match(&l));
        let f = Filters::parse(Some(r#"{"dangling":{"false":true}}"#), &["dangling"]).unwrap();
        assert_eq!(f.bool("dangling").unwrap(), Some(false));
        assert!(Filters::parse(Some(r#"{"nope":["x"]}"#), &["label"]).is_err());
        assert!(Filters::parse(Some("not json"), &["label"]).is_err());
        assert!(Filters::parse(None, &[]).unwrap().get("x").is_empty());
    }
}
