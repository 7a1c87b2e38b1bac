//! The GrpcRoute CRD, offline: the committed YAML is the generated one, the examples pass its schema and its
//! CEL rules, and every limit and rule rejects what it should. The CEL rules run in kube's evaluator; the
//! OpenAPI keywords the API server checks itself (maxItems, pattern, ...) run in `structural` below, which
//! refuses any keyword it does not implement so that no limit goes untested.

use std::path::Path;

use kube::core::cel::{analyze_rule, compile_schema, ErrorKind, ScopeContext, Validator, WarningKind};
use kube::CustomResourceExt;
use serde::Deserialize;
use serde_json::{json, Value};
use switchboard::crd::GrpcRoute;

const CRD_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/grpcroute.yaml");
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/routes");

fn schema() -> Value {
    let crd = GrpcRoute::crd();
    let version = &crd.spec.versions[0];
    serde_json::to_value(version.schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap()).unwrap()
}

/// Everything the API server would say about `obj`: structural errors, then failed CEL rules, each as
/// `path: message`.
fn errors(schema: &Value, obj: &Value) -> Vec<String> {
    let mut out = Vec::new();
    structural(schema, obj, "", &mut out);
    if let Err(errs) = Validator::new().validate(schema, obj, None) {
        for e in errs {
            assert_eq!(e.kind, ErrorKind::ValidationFailure, "a rule could not be evaluated: {e}");
            out.push(e.to_string());
        }
    }
    out
}

/// The OpenAPI v3 keywords of a structural schema that the API server enforces before CEL runs.
fn structural(schema: &Value, v: &Value, path: &str, out: &mut Vec<String>) {
    let s = schema.as_object().expect("schema node is an object");
    let mut fail = |msg: String| out.push(format!("{path}: {msg}"));
    for key in s.keys() {
        const KNOWN: &[&str] = &[
            "type",
            "properties",
            "required",
            "items",
            "maxItems",
            "minItems",
            "maxLength",
            "minLength",
            "pattern",
            "enum",
            "minimum",
            "maximum",
            "nullable",
            "x-kubernetes-list-type",
            "x-kubernetes-list-map-keys",
            // Not limits: documentation, defaulting (applied by the CEL validator) and the CEL rules.
            "description",
            "title",
            "format",
            "default",
            "x-kubernetes-validations",
        ];
        assert!(KNOWN.contains(&key.as_str()), "{path}: the structural check does not implement `{key}`");
    }
    if v.is_null() {
        if s.get("nullable") != Some(&json!(true)) {
            fail("must not be null".into());
        }
        return;
    }
    let ty = s.get("type").and_then(Value::as_str);
    let type_ok = match ty {
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("boolean") => v.is_boolean(),
        Some(other) => panic!("{path}: unexpected type {other}"),
        None => true,
    };
    if !type_ok {
        return fail(format!("type: must be {}", ty.unwrap()));
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array) {
        if !allowed.contains(v) {
            fail(format!("enum: {v} is not one of {allowed:?}"));
        }
    }
    if let Some(n) = v.as_f64() {
        if let Some(min) = s.get("minimum").and_then(Value::as_f64).filter(|min| n < *min) {
            fail(format!("minimum {min}"));
        }
        if let Some(max) = s.get("maximum").and_then(Value::as_f64).filter(|max| n > *max) {
            fail(format!("maximum {max}"));
        }
    }
    if let Some(text) = v.as_str() {
        let chars = text.chars().count() as u64;
        if let Some(min) = s.get("minLength").and_then(Value::as_u64).filter(|min| chars < *min) {
            fail(format!("minLength {min}"));
        }
        if let Some(max) = s.get("maxLength").and_then(Value::as_u64).filter(|max| chars > *max) {
            fail(format!("maxLength {max}"));
        }
        if let Some(p) = s.get("pattern").and_then(Value::as_str) {
            if !regex::Regex::new(p).unwrap().is_match(text) {
                fail(format!("pattern {p}"));
            }
        }
    }
    if let Some(obj) = v.as_object() {
        for name in s.get("required").and_then(Value::as_array).into_iter().flatten() {
            if !obj.contains_key(name.as_str().unwrap()) {
                fail(format!("required: {name} is missing"));
            }
        }
        // A schema without properties (metadata) leaves its content to the API server.
        if let Some(props) = s.get("properties").and_then(Value::as_object) {
            for (k, child) in obj {
                let child_path = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match props.get(k) {
                    Some(child_schema) => structural(child_schema, child, &child_path, out),
                    // The API server knows these of every object; the CRD's schema does not list them.
                    None if path.is_empty() && ["apiVersion", "kind", "metadata"].contains(&k.as_str()) => {}
                    None => out.push(format!("{child_path}: unknown field")),
                }
            }
        }
    }
    if let Some(items) = v.as_array() {
        let len = items.len() as u64;
        if let Some(min) = s.get("minItems").and_then(Value::as_u64).filter(|min| len < *min) {
            out.push(format!("{path}: minItems {min}"));
        }
        if let Some(max) = s.get("maxItems").and_then(Value::as_u64).filter(|max| len > *max) {
            out.push(format!("{path}: maxItems {max}"));
        }
        let key = |item: &Value| -> Value {
            match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
                Some("map") => {
                    let keys = s["x-kubernetes-list-map-keys"].as_array().unwrap();
                    Value::Array(keys.iter().map(|k| item[k.as_str().unwrap()].clone()).collect())
                }
                _ => item.clone(),
            }
        };
        if matches!(s.get("x-kubernetes-list-type").and_then(Value::as_str), Some("set" | "map")) {
            for (i, item) in items.iter().enumerate() {
                if items[..i].iter().any(|earlier| key(earlier) == key(item)) {
                    out.push(format!("{path}[{i}]: duplicate {}", key(item)));
                }
            }
        }
        for (i, item) in items.iter().enumerate() {
            structural(&s["items"], item, &format!("{path}[{i}]"), out);
        }
    }
}

#[test]
fn committed_crd_is_the_generated_one() {
    let committed = std::fs::read_to_string(CRD_FILE).unwrap_or_default();
    assert!(
        committed == switchboard::app::crd_yaml(),
        "crds/grpcroute.yaml differs from `switchboard crd`: run `make crds` and commit the result"
    );
}

/// Every rule compiles and has a message (their cost is tests/crd_cost.rs's).
#[test]
fn every_rule_compiles_and_has_a_message() {
    fn walk(node: &Value, path: &str, rules: &mut usize) {
        if let Some(list) = node.get("x-kubernetes-validations").and_then(Value::as_array) {
            let compiled = compile_schema(node);
            assert!(!compiled.has_errors(), "{path}: {:?}", compiled.compilation_errors());
            for r in list {
                let rule = r["rule"].as_str().unwrap();
                // kube-cel's scope check takes a comprehension's variable inside `has()` for a free one
                // (`self.all(l1, !has(l1.name) ...)`); evaluating the rules below shows their scope is right.
                let warnings: Vec<_> = analyze_rule(rule, &compiled, ScopeContext::CrdValidation)
                    .into_iter()
                    .filter(|w| w.kind != WarningKind::WrongScope)
                    .collect();
                assert!(warnings.is_empty(), "{path}: {rule}: {warnings:?}");
                assert!(r["message"].is_string(), "{path}: {rule} has no message");
                *rules += 1;
            }
        }
        for (k, child) in node.get("properties").and_then(Value::as_object).into_iter().flatten() {
            walk(child, &format!("{path}.{k}"), rules);
        }
        if let Some(items) = node.get("items") {
            walk(items, &format!("{path}[]"), rules);
        }
    }
    let mut rules = 0;
    walk(&schema(), "", &mut rules);
    assert!(rules >= 15, "only {rules} CEL rules found");
}

/// Every document of every file in examples/routes.
fn examples() -> Vec<(String, Value)> {
    let mut files: Vec<_> = std::fs::read_dir(EXAMPLES).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut out = Vec::new();
    for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "yaml")) {
        let text = std::fs::read_to_string(file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = serde_yaml::Value::deserialize(doc).unwrap();
            out.push((file.display().to_string(), serde_json::to_value(v).unwrap()));
        }
    }
    assert!(out.len() >= 3, "examples/routes has {} routes", out.len());
    out
}

#[test]
fn examples_pass_the_schema_and_every_rule() {
    let schema = schema();
    for (file, route) in examples() {
        assert_eq!(errors(&schema, &route), Vec::<String>::new(), "{file}");
        let typed: GrpcRoute = serde_json::from_value(route).unwrap();
        let reserialized = serde_json::to_value(&typed).unwrap();
        assert_eq!(errors(&schema, &reserialized), Vec::<String>::new(), "{file}, as serialized by the Rust type");
    }
}

#[test]
fn examples_are_accepted_by_the_route_table() {
    for entry in std::fs::read_dir(EXAMPLES).unwrap() {
        let path = entry.unwrap().path();
        let routes = switchboard::standalone::read_routes(&path).unwrap();
        let (_, reports) = switchboard::standalone::build_table(&routes);
        for r in reports {
            assert_eq!(r.accepted, Ok(()), "{}: {}", path.display(), r.id);
        }
    }
}

/// A route that uses every part of the spec once, and passes.
fn base() -> Value {
    json!({
        "apiVersion": "switchboard.dev/v1alpha1",
        "kind": "GrpcRoute",
        "metadata": {"name": "base", "namespace": "default"},
        "spec": {
            "hostnames": ["api.example.com", "*.example.org"],
            "rules": [{
                "name": "main",
                "matches": [{
                    "method": {"type": "Exact", "service": "foo.v1.Greeter", "method": "SayHello"},
                    "headers": [
                        {"name": "x-env", "value": "prod"},
                        {"type": "RegularExpression", "name": "x-b", "value": "1|2"}
                    ]
                }],
                "filters": [
                    {"type": "RequestHeaderModifier", "requestHeaderModifier": {
                        "set": [{"name": "x-set", "value": "1"}],
                        "add": [{"name": "x-add", "value": "2"}],
                        "remove": ["x-remove"]
                    }},
                    {"type": "ResponseHeaderModifier", "responseHeaderModifier": {
                        "add": [{"name": "x-served-by", "value": "sb"}]
                    }},
                    {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "shadow", "port": 80}}}
                ],
                "backendRefs": [{"name": "greeter", "namespace": "other", "port": 50051, "weight": 1}],
                "timeout": "1s",
                "retry": {"codes": ["UNAVAILABLE", "14"], "attempts": 3, "budgetPercent": 20, "minRetriesPerSecond": 10}
            }]
        }
    })
}

/// `base()` with the value at a JSON pointer replaced, added (object key or one past an array's end) or,
/// for `Value::Null`, removed.
fn edit(mut v: Value, pointer: &str, new: Value) -> Value {
    let (parent, last) = pointer.rsplit_once('/').unwrap();
    match v.pointer_mut(parent).unwrap_or_else(|| panic!("no {parent} in base()")) {
        Value::Object(o) if new.is_null() => drop(o.remove(last)),
        Value::Object(o) => drop(o.insert(last.into(), new)),
        Value::Array(a) => {
            let i: usize = last.parse().unwrap();
            if i == a.len() {
                a.push(new)
            } else {
                a[i] = new
            }
        }
        other => panic!("{parent} is {other}"),
    }
    v
}

fn n_of(n: usize, f: impl Fn(usize) -> Value) -> Value {
    Value::Array((0..n).map(f).collect())
}

fn mirror(i: usize) -> Value {
    json!({"type": "RequestMirror", "requestMirror": {"backendRef": {"name": format!("m{i}"), "port": 80}}})
}

fn header(i: usize) -> Value {
    json!({"name": format!("x-h{i}"), "value": "v"})
}

fn method_match(i: usize) -> Value {
    json!({"method": {"service": format!("s{i}.S")}})
}

fn rule_with_matches(n: usize) -> Value {
    json!({"matches": n_of(n, method_match), "backendRefs": [{"name": "b", "port": 1}]})
}

const R: &str = "/spec/rules/0";

#[test]
fn each_limit_and_rule_rejects_what_it_should() {
    let long = |n: usize| Value::String("a".repeat(n));
    let filter = |i: usize| base()["spec"]["rules"][0]["filters"][i].clone();
    // (where, new value, an error that must be reported)
    let cases: Vec<(String, Value, &str)> = vec![
        // Hostnames.
        ("/spec/hostnames".into(), n_of(17, |i| json!(format!("h{i}.example.com"))), "spec.hostnames: maxItems 16"),
        ("/spec/hostnames/0".into(), json!("API.example.com"), "spec.hostnames[0]: pattern"),
        ("/spec/hostnames/0".into(), json!("*.*.example.com"), "spec.hostnames[0]: pattern"),
        ("/spec/hostnames/0".into(), json!("example.com:8080"), "spec.hostnames[0]: pattern"),
        ("/spec/hostnames/0".into(), json!(""), "spec.hostnames[0]: minLength 1"),
        ("/spec/hostnames/0".into(), json!(format!("{}.com", "a".repeat(250))), "spec.hostnames[0]: maxLength 253"),
        // Rules.
        ("/spec/rules".into(), n_of(17, |_| rule_with_matches(1)), "spec.rules: maxItems 16"),
        (
            "/spec/rules".into(),
            n_of(3, |_| rule_with_matches(43)),
            "spec.rules: While 16 rules and 64 matches per rule are allowed",
        ),
        ("/spec/rules/1".into(), json!({"name": "main"}), "spec.rules: Rule name must be unique within the route"),
        (format!("{R}/name"), json!("Main"), "spec.rules[0].name: pattern"),
        (format!("{R}/name"), json!(""), "spec.rules[0].name: minLength 1"),
        (format!("{R}/name"), long(254), "spec.rules[0].name: maxLength 253"),
        (format!("{R}/unknown"), json!(1), "spec.rules[0].unknown: unknown field"),
        // Matches.
        (format!("{R}/matches"), n_of(65, method_match), "spec.rules[0].matches: maxItems 64"),
        (
            format!("{R}/matches/0/method"),
            json!({"type": "Exact"}),
            "spec.rules[0].matches[0].method: One or both of 'service' or 'method' must be specified",
        ),
        (
            format!("{R}/matches/0/method"),
            json!({}),
            "spec.rules[0].matches[0].method: One or both of 'service' or 'method' must be specified",
        ),
        (
            format!("{R}/matches/0/method"),
            json!({"type": "RegularExpression"}),
            "spec.rules[0].matches[0].method: One or both of 'service' or 'method' must be specified",
        ),
        (
            format!("{R}/matches/0/method/service"),
            json!("foo/v1.Greeter"),
            "spec.rules[0].matches[0].method: service must only contain valid characters",
        ),
        (
            format!("{R}/matches/0/method/service"),
            json!("foo.1v.Greeter"),
            "spec.rules[0].matches[0].method: service must only contain valid characters",
        ),
        (
            format!("{R}/matches/0/method/method"),
            json!("Say.Hello"),
            "spec.rules[0].matches[0].method: method must only contain valid characters",
        ),
        (format!("{R}/matches/0/method/type"), json!("Prefix"), "spec.rules[0].matches[0].method.type: enum"),
        (format!("{R}/matches/0/method/service"), long(1025), "matches[0].method.service: maxLength 1024"),
        (format!("{R}/matches/0/method/method"), long(1025), "matches[0].method.method: maxLength 1024"),
        (format!("{R}/matches/0/headers"), n_of(17, header), "spec.rules[0].matches[0].headers: maxItems 16"),
        (
            format!("{R}/matches/0/headers/2"),
            json!({"name": "x-env", "value": "dev"}),
            "spec.rules[0].matches[0].headers[2]: duplicate",
        ),
        (format!("{R}/matches/0/headers/0/name"), json!("x env"), "spec.rules[0].matches[0].headers[0].name: pattern"),
        (format!("{R}/matches/0/headers/0/name"), long(257), "spec.rules[0].matches[0].headers[0].name: maxLength 256"),
        (format!("{R}/matches/0/headers/0/value"), json!(""), "spec.rules[0].matches[0].headers[0].value: minLength 1"),
        (
            format!("{R}/matches/0/headers/0/value"),
            long(4097),
            "spec.rules[0].matches[0].headers[0].value: maxLength 4096",
        ),
        (format!("{R}/matches/0/headers/0/value"), Value::Null, "spec.rules[0].matches[0].headers[0]: required"),
        (format!("{R}/matches/0/headers/0/type"), json!("Present"), "spec.rules[0].matches[0].headers[0].type: enum"),
        // Filters.
        (format!("{R}/filters"), n_of(17, mirror), "spec.rules[0].filters: maxItems 16"),
        (format!("{R}/filters/3"), filter(0), "spec.rules[0].filters: RequestHeaderModifier filter cannot be repeated"),
        (
            format!("{R}/filters/3"),
            filter(1),
            "spec.rules[0].filters: ResponseHeaderModifier filter cannot be repeated",
        ),
        (format!("{R}/filters/0/type"), json!("ExtensionRef"), "spec.rules[0].filters[0].type: enum"),
        (
            format!("{R}/filters/0/type"),
            json!("ResponseHeaderModifier"),
            "filter.requestHeaderModifier must be nil if the filter.type is not RequestHeaderModifier",
        ),
        (
            format!("{R}/filters/0/requestHeaderModifier"),
            Value::Null,
            "filter.requestHeaderModifier must be specified for RequestHeaderModifier filter.type",
        ),
        (
            format!("{R}/filters/1/type"),
            json!("RequestMirror"),
            "filter.responseHeaderModifier must be nil if the filter.type is not ResponseHeaderModifier",
        ),
        (
            format!("{R}/filters/1/responseHeaderModifier"),
            Value::Null,
            "filter.responseHeaderModifier must be specified for ResponseHeaderModifier filter.type",
        ),
        (
            format!("{R}/filters/2/requestHeaderModifier"),
            json!({"remove": ["x-a"]}),
            "filter.requestHeaderModifier must be nil if the filter.type is not RequestHeaderModifier",
        ),
        (
            format!("{R}/filters/2/type"),
            json!("ResponseHeaderModifier"),
            "filter.requestMirror must be nil if the filter.type is not RequestMirror",
        ),
        (
            format!("{R}/filters/2/requestMirror"),
            Value::Null,
            "filter.requestMirror must be specified for RequestMirror filter.type",
        ),
        (format!("{R}/filters/2/requestMirror/backendRef"), Value::Null, "filters[2].requestMirror: required"),
        (
            format!("{R}/filters/2/requestMirror/backendRef/port"),
            Value::Null,
            "spec.rules[0].filters[2].requestMirror.backendRef: Must have port for Service reference",
        ),
        // Header modifiers.
        (
            format!("{R}/filters/0/requestHeaderModifier/set"),
            n_of(17, header),
            "spec.rules[0].filters[0].requestHeaderModifier.set: maxItems 16",
        ),
        (
            format!("{R}/filters/0/requestHeaderModifier/add"),
            n_of(17, header),
            "spec.rules[0].filters[0].requestHeaderModifier.add: maxItems 16",
        ),
        (
            format!("{R}/filters/0/requestHeaderModifier/remove"),
            n_of(17, |i| json!(format!("x-h{i}"))),
            "spec.rules[0].filters[0].requestHeaderModifier.remove: maxItems 16",
        ),
        (
            format!("{R}/filters/0/requestHeaderModifier/set/1"),
            json!({"name": "x-set", "value": "2"}),
            "spec.rules[0].filters[0].requestHeaderModifier.set[1]: duplicate",
        ),
        (
            format!("{R}/filters/0/requestHeaderModifier/remove/1"),
            json!("x-remove"),
            "spec.rules[0].filters[0].requestHeaderModifier.remove[1]: duplicate",
        ),
        (
            format!("{R}/filters/0/requestHeaderModifier/remove/0"),
            json!("x remove"),
            "spec.rules[0].filters[0].requestHeaderModifier.remove[0]: pattern",
        ),
        (
            format!("{R}/filters/0/requestHeaderModifier/set/0/name"),
            json!("x:set"),
            "spec.rules[0].filters[0].requestHeaderModifier.set[0].name: pattern",
        ),
        (
            format!("{R}/filters/0/requestHeaderModifier/set/0/value"),
            json!(""),
            "spec.rules[0].filters[0].requestHeaderModifier.set[0].value: minLength 1",
        ),
        (
            format!("{R}/filters/1/responseHeaderModifier/add/0/value"),
            long(4097),
            "spec.rules[0].filters[1].responseHeaderModifier.add[0].value: maxLength 4096",
        ),
        // Backends.
        (
            format!("{R}/backendRefs"),
            n_of(17, |i| json!({"name": format!("b{i}"), "port": 1})),
            "spec.rules[0].backendRefs: maxItems 16",
        ),
        (format!("{R}/backendRefs/0/port"), Value::Null, "backendRefs[0]: Must have port for Service reference"),
        (
            format!("{R}/backendRefs/0"),
            json!({"name": "svc", "group": "", "kind": "Service"}),
            "spec.rules[0].backendRefs[0]: Must have port for Service reference",
        ),
        (format!("{R}/backendRefs/0/port"), json!(0), "spec.rules[0].backendRefs[0].port: minimum 1"),
        (format!("{R}/backendRefs/0/port"), json!(65536), "spec.rules[0].backendRefs[0].port: maximum 65535"),
        (format!("{R}/backendRefs/0/weight"), json!(-1), "spec.rules[0].backendRefs[0].weight: minimum 0"),
        (format!("{R}/backendRefs/0/weight"), json!(1_000_001), "spec.rules[0].backendRefs[0].weight: maximum 1000000"),
        (format!("{R}/backendRefs/0/name"), json!(""), "spec.rules[0].backendRefs[0].name: minLength 1"),
        (format!("{R}/backendRefs/0/name"), long(254), "spec.rules[0].backendRefs[0].name: maxLength 253"),
        (format!("{R}/backendRefs/0/name"), Value::Null, "spec.rules[0].backendRefs[0]: required"),
        (format!("{R}/backendRefs/0/namespace"), json!("Team_A"), "spec.rules[0].backendRefs[0].namespace: pattern"),
        (format!("{R}/backendRefs/0/namespace"), long(64), "spec.rules[0].backendRefs[0].namespace: maxLength 63"),
        (format!("{R}/backendRefs/0/kind"), json!("9Service"), "spec.rules[0].backendRefs[0].kind: pattern"),
        (format!("{R}/backendRefs/0/kind"), long(64), "spec.rules[0].backendRefs[0].kind: maxLength 63"),
        (format!("{R}/backendRefs/0/group"), json!("Example.com"), "spec.rules[0].backendRefs[0].group: pattern"),
        (format!("{R}/backendRefs/0/group"), long(254), "spec.rules[0].backendRefs[0].group: maxLength 253"),
        // Timeout.
        (format!("{R}/timeout"), json!("1.5s"), "spec.rules[0].timeout: pattern"),
        (format!("{R}/timeout"), json!("100000s"), "spec.rules[0].timeout: pattern"),
        (format!("{R}/timeout"), json!("1h1m1s1ms1h"), "spec.rules[0].timeout: pattern"),
        (format!("{R}/timeout"), json!("5"), "spec.rules[0].timeout: pattern"),
        (format!("{R}/timeout"), json!("99999ms99999ms99999ms99999ms9"), "spec.rules[0].timeout: maxLength 28"),
        (format!("{R}/timeout"), json!("0s"), "spec.rules[0].timeout: timeout must be greater than zero"),
        (format!("{R}/timeout"), json!("0h00m"), "spec.rules[0].timeout: timeout must be greater than zero"),
        // Retry.
        (format!("{R}/retry/codes"), Value::Null, "spec.rules[0].retry: retry must name at least one code"),
        (format!("{R}/retry/codes"), json!([]), "spec.rules[0].retry.codes: minItems 1"),
        (format!("{R}/retry/codes"), n_of(17, |_| json!("UNAVAILABLE")), "spec.rules[0].retry.codes: maxItems 16"),
        (format!("{R}/retry/codes/0"), json!("OK"), "spec.rules[0].retry.codes[0]: pattern"),
        (format!("{R}/retry/codes/0"), json!("0"), "spec.rules[0].retry.codes[0]: pattern"),
        (format!("{R}/retry/codes/0"), json!("17"), "spec.rules[0].retry.codes[0]: pattern"),
        (format!("{R}/retry/codes/0"), json!("unavailable"), "spec.rules[0].retry.codes[0]: pattern"),
        (format!("{R}/retry/codes/0"), long(20), "spec.rules[0].retry.codes[0]: maxLength 19"),
        (format!("{R}/retry/attempts"), json!(0), "spec.rules[0].retry.attempts: minimum 1"),
        (format!("{R}/retry/attempts"), json!(11), "spec.rules[0].retry.attempts: maximum 10"),
        (format!("{R}/retry/budgetPercent"), json!(101), "spec.rules[0].retry.budgetPercent: maximum 100"),
        (format!("{R}/retry/budgetPercent"), json!(-1), "spec.rules[0].retry.budgetPercent: minimum 0"),
        (format!("{R}/retry/minRetriesPerSecond"), json!(1001), "retry.minRetriesPerSecond: maximum 1000"),
        (format!("{R}/retry/minRetriesPerSecond"), json!(-1), "retry.minRetriesPerSecond: minimum 0"),
    ];
    let schema = schema();
    assert_eq!(errors(&schema, &base()), Vec::<String>::new(), "base() must pass");
    let mut missed = Vec::new();
    for (pointer, value, want) in cases {
        let got = errors(&schema, &edit(base(), &pointer, value.clone()));
        if !got.iter().any(|e| e.contains(want)) {
            missed.push(format!("{pointer} = {value:.80}: wanted {want:?}, got {got:?}"));
        }
    }
    assert!(missed.is_empty(), "{} cases not rejected as expected:\n{}", missed.len(), missed.join("\n"));
}

/// What the CRD leaves to the table builder (a case-insensitive check in CEL would cost more than the API
/// server allows): the API server accepts these, the table refuses the route.
#[test]
fn header_names_repeated_in_another_case_are_the_table_builders_to_refuse() {
    let cases: Vec<(String, Value, &str)> = vec![
        (
            format!("{R}/matches/0/headers/2"),
            json!({"name": "X-Env", "value": "dev"}),
            r#"rule "main": match #0: headers "x-env" and "X-Env" name the same header"#,
        ),
        (
            format!("{R}/filters/0/requestHeaderModifier/set/1"),
            json!({"name": "X-Set", "value": "2"}),
            r#"rule "main": RequestHeaderModifier: set names header "x-set" twice (as "X-Set""#,
        ),
        (
            format!("{R}/filters/0/requestHeaderModifier/add/1"),
            json!({"name": "X-ADD", "value": "3"}),
            r#"RequestHeaderModifier: add names header "x-add" twice (as "X-ADD""#,
        ),
        (
            format!("{R}/filters/0/requestHeaderModifier/remove/1"),
            json!("X-Remove"),
            r#"RequestHeaderModifier: remove names header "x-remove" twice (as "X-Remove""#,
        ),
        (
            format!("{R}/filters/0/requestHeaderModifier/add/1"),
            json!({"name": "X-Set", "value": "3"}),
            r#"RequestHeaderModifier: header "X-Set" is in both set and add: a header name may appear in only one"#,
        ),
        (
            format!("{R}/filters/0/requestHeaderModifier/remove/1"),
            json!("x-set"),
            r#"RequestHeaderModifier: header "x-set" is in both set and remove"#,
        ),
        (
            format!("{R}/filters/0/requestHeaderModifier/remove/1"),
            json!("x-add"),
            r#"RequestHeaderModifier: header "x-add" is in both add and remove"#,
        ),
        (
            format!("{R}/filters/1/responseHeaderModifier/remove"),
            json!(["X-Served-By"]),
            r#"ResponseHeaderModifier: header "X-Served-By" is in both add and remove"#,
        ),
    ];
    let schema = schema();
    for (pointer, value, want) in cases {
        let route = edit(base(), &pointer, value.clone());
        assert_eq!(errors(&schema, &route), Vec::<String>::new(), "{pointer} = {value}: the API server accepts it");
        let typed: GrpcRoute = serde_json::from_value(route).unwrap();
        let (_, reports) = switchboard::standalone::build_table(&[typed]);
        let refused = reports[0].accepted.clone().unwrap_err();
        assert!(refused.contains(want), "{pointer} = {value}: wanted {want:?}, got {refused:?}");
    }
}

#[test]
fn what_the_gateway_api_allows_passes() {
    let cases: Vec<(String, Value)> = vec![
        ("/spec/hostnames".into(), n_of(16, |i| json!(format!("h{i}.example.com")))),
        ("/spec/hostnames/0".into(), json!("*.example.com")),
        ("/spec/hostnames/0".into(), json!("localhost")),
        ("/spec/rules".into(), json!([rule_with_matches(64), rule_with_matches(64)])),
        ("/spec/rules/1".into(), json!({"backendRefs": [{"name": "b", "port": 1}]})),
        ("/spec/rules/1".into(), json!({"name": "other"})),
        (format!("{R}/name"), Value::Null),
        (format!("{R}/matches/0/method"), json!({"method": "SayHello"})),
        (format!("{R}/matches/0/method"), json!({"service": "foo.v1.Greeter"})),
        (format!("{R}/matches/0/method"), json!({"service": ".Foo_1.bar"})),
        (format!("{R}/matches/0/method"), json!({"type": "RegularExpression", "service": "foo\\.v[0-9]+\\..*"})),
        (format!("{R}/matches/0/method"), json!({"type": "RegularExpression", "method": "(Get|List).*"})),
        (format!("{R}/matches/0/headers"), n_of(16, header)),
        (format!("{R}/filters"), n_of(16, mirror)),
        (format!("{R}/filters/0/requestHeaderModifier"), json!({})),
        (format!("{R}/filters/0/requestHeaderModifier/set"), n_of(16, header)),
        (format!("{R}/backendRefs/0"), json!({"name": "pod", "kind": "Pod"})),
        (format!("{R}/backendRefs/0"), json!({"name": "svc", "group": "example.com", "kind": "Service"})),
        (format!("{R}/backendRefs/0/weight"), json!(0)),
        (format!("{R}/backendRefs/0/weight"), json!(1_000_000)),
        (format!("{R}/backendRefs/0/port"), json!(65535)),
        (format!("{R}/backendRefs"), json!([])),
        (format!("{R}/timeout"), json!("1h30m15s500ms")),
        (format!("{R}/timeout"), json!("99999ms")),
        (format!("{R}/timeout"), json!("99999ms99999ms99999ms99999ms")),
        (
            format!("{R}/retry"),
            json!({"codes": ["1", "16", "DEADLINE_EXCEEDED", "UNAUTHENTICATED", "FAILED_PRECONDITION"]}),
        ),
        (
            format!("{R}/retry"),
            json!({"codes": ["UNAVAILABLE"], "attempts": 10, "budgetPercent": 0, "minRetriesPerSecond": 0}),
        ),
        ("/spec/rules".into(), json!([])),
    ];
    let schema = schema();
    for (pointer, value) in cases {
        let got = errors(&schema, &edit(base(), &pointer, value.clone()));
        assert_eq!(got, Vec::<String>::new(), "{pointer} = {value:.80}");
    }
}

#[test]
fn the_crd_reads_as_kubectl_shows_it() {
    let crd = GrpcRoute::crd();
    let version = &crd.spec.versions[0];
    assert!(version.subresources.as_ref().unwrap().status.is_some(), "status subresource");
    let columns: Vec<_> = version.additional_printer_columns.iter().flatten().map(|c| c.name.as_str()).collect();
    assert_eq!(columns, ["Hostnames", "Accepted", "ResolvedRefs", "Rules", "Age"]);
    let status = &schema()["properties"]["status"]["properties"];
    assert!(status["conditions"].is_object() && status["observedGeneration"].is_object());
    assert!(status["ruleCount"].is_object(), "the Rules column reads status.ruleCount");
    assert!(Path::new(CRD_FILE).is_file());
}
