//! What a real API server checks on a custom resource it stores, from the CRD's structural schema: unknown
//! fields (strict field validation, as `kubectl` asks for), types, required fields, string and list bounds,
//! patterns, enums, and the uniqueness of `x-kubernetes-list-type: map`/`set` lists. CEL rules are not
//! evaluated here (tests/crd.rs runs them offline).

use std::collections::HashSet;

use serde_json::Value;

/// A schema violation: the field path and what is wrong, as the API server words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// `strict decoding error: unknown field "spec.x"` (400 BadRequest).
    Unknown(String),
    /// Anything else (422 Invalid).
    Invalid(String),
}

/// Checks `obj` (a whole object: apiVersion, kind, metadata, spec, status) against `schema`, the CRD
/// version's `openAPIV3Schema`. `metadata` is the API server's own business and is not checked here.
pub fn validate(schema: &Value, obj: &Value) -> Result<(), Violation> {
    let Some(o) = obj.as_object() else { return Err(Violation::Invalid("the object is not a JSON object".into())) };
    for (k, v) in o {
        match k.as_str() {
            "apiVersion" | "kind" | "metadata" => {}
            _ => match schema.pointer(&format!("/properties/{k}")) {
                Some(s) => check(s, v, k)?,
                None => return Err(Violation::Unknown(k.clone())),
            },
        }
    }
    Ok(())
}

fn invalid(path: &str, what: String) -> Result<(), Violation> {
    Err(Violation::Invalid(format!("{path}: {what}")))
}

fn check(schema: &Value, v: &Value, path: &str) -> Result<(), Violation> {
    if v.is_null() {
        return if schema.get("nullable").and_then(Value::as_bool) == Some(true) {
            Ok(())
        } else {
            invalid(path, "Invalid value: \"null\": must not be null".into())
        };
    }
    if schema.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
        return if v.is_i64() || v.is_u64() || v.is_string() {
            Ok(())
        } else {
            invalid(path, "must be int or string".into())
        };
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(v) {
            return invalid(path, format!("Unsupported value: {v}"));
        }
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => object(schema, v, path),
        Some("array") => array(schema, v, path),
        Some("string") => string(schema, v, path),
        Some("integer") => number(schema, v, path, v.is_i64() || v.is_u64()),
        Some("number") => number(schema, v, path, v.is_number()),
        Some("boolean") => {
            if v.is_boolean() {
                Ok(())
            } else {
                invalid(path, format!("Invalid value: {v}: must be boolean"))
            }
        }
        _ => Ok(()),
    }
}

fn object(schema: &Value, v: &Value, path: &str) -> Result<(), Violation> {
    let Some(o) = v.as_object() else { return invalid(path, format!("Invalid value: {v}: must be object")) };
    for r in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        if !o.contains_key(r) {
            return invalid(&format!("{path}.{r}"), "Required value".into());
        }
    }
    let free = schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true);
    let props = schema.get("properties").and_then(Value::as_object);
    let extra = schema.get("additionalProperties");
    for (k, field) in o {
        let at = format!("{path}.{k}");
        match (props.and_then(|p| p.get(k)), extra) {
            (Some(s), _) => check(s, field, &at)?,
            (None, Some(s)) if s.is_object() => check(s, field, &at)?,
            (None, Some(Value::Bool(true))) => {}
            (None, _) if free || props.is_none() => {}
            (None, _) => return Err(Violation::Unknown(at)),
        }
    }
    bound(schema, "maxProperties", "minProperties", o.len(), path)
}

fn array(schema: &Value, v: &Value, path: &str) -> Result<(), Violation> {
    let Some(items) = v.as_array() else { return invalid(path, format!("Invalid value: {v}: must be array")) };
    bound(schema, "maxItems", "minItems", items.len(), path)?;
    for (i, item) in items.iter().enumerate() {
        if let Some(s) = schema.get("items") {
            check(s, item, &format!("{path}[{i}]"))?;
        }
    }
    let keys: Vec<&str> = schema
        .get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
        .map(|k| k.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("map") => {
            let mut seen = HashSet::new();
            for (i, item) in items.iter().enumerate() {
                let key: Vec<String> =
                    keys.iter().map(|k| item.get(*k).map(Value::to_string).unwrap_or_default()).collect();
                if !seen.insert(key.clone()) {
                    return invalid(&format!("{path}[{i}]"), format!("Duplicate value: {}", key.join(",")));
                }
            }
        }
        Some("set") => {
            let mut seen = HashSet::new();
            for (i, item) in items.iter().enumerate() {
                if !seen.insert(item.to_string()) {
                    return invalid(&format!("{path}[{i}]"), format!("Duplicate value: {item}"));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn string(schema: &Value, v: &Value, path: &str) -> Result<(), Violation> {
    let Some(s) = v.as_str() else { return invalid(path, format!("Invalid value: {v}: must be string")) };
    bound(schema, "maxLength", "minLength", s.chars().count(), path)?;
    if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
        let re = regex::Regex::new(p).unwrap_or_else(|e| panic!("CRD pattern {p:?} at {path} does not compile: {e}"));
        if !re.is_match(s) {
            return invalid(path, format!("Invalid value: {s:?}: should match '{p}'"));
        }
    }
    Ok(())
}

fn number(schema: &Value, v: &Value, path: &str, right_type: bool) -> Result<(), Violation> {
    if !right_type {
        return invalid(path, format!("Invalid value: {v}: must be {}", schema["type"].as_str().unwrap_or("number")));
    }
    let n = v.as_f64().unwrap_or_default();
    if schema.get("minimum").and_then(Value::as_f64).is_some_and(|m| n < m) {
        return invalid(path, format!("Invalid value: {v}: should be greater than or equal to {}", schema["minimum"]));
    }
    if schema.get("maximum").and_then(Value::as_f64).is_some_and(|m| n > m) {
        return invalid(path, format!("Invalid value: {v}: should be less than or equal to {}", schema["maximum"]));
    }
    Ok(())
}

fn bound(schema: &Value, max: &str, min: &str, n: usize, path: &str) -> Result<(), Violation> {
    if let Some(m) = schema.get(max).and_then(Value::as_u64).filter(|m| n as u64 > *m) {
        return invalid(path, format!("Too many: {n}: must have at most {m}"));
    }
    if let Some(m) = schema.get(min).and_then(Value::as_u64).filter(|m| (n as u64) < *m) {
        return invalid(path, format!("Invalid value: must have at least {m}"));
    }
    Ok(())
}

/// Built-in kinds: the typed Kubernetes struct is the schema. A field that does not survive a round trip
/// through it is unknown to the API server.
pub fn unknown_builtin_field<K: serde::de::DeserializeOwned + serde::Serialize>(obj: &Value) -> Option<String> {
    let typed: K = match serde_json::from_value(obj.clone()) {
        Ok(t) => t,
        Err(e) => return Some(format!("(does not decode: {e})")),
    };
    let back = serde_json::to_value(typed).ok()?;
    first_missing(obj, &back, "")
}

fn first_missing(given: &Value, kept: &Value, path: &str) -> Option<String> {
    match (given, kept) {
        (Value::Object(g), Value::Object(k)) => g.iter().find_map(|(key, v)| {
            let at = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
            match k.get(key) {
                None if !v.is_null() => Some(at),
                None => None,
                Some(kv) => first_missing(v, kv, &at),
            }
        }),
        (Value::Array(g), Value::Array(k)) => {
            g.iter().zip(k).enumerate().find_map(|(i, (g, k))| first_missing(g, k, &format!("{path}[{i}]")))
        }
        _ => None,
    }
}
