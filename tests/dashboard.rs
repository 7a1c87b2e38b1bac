//! The Grafana dashboard shipped with the chart: importable (a uid, a title, a `datasource` variable that every
//! panel and query uses) and naming only metrics that `switchboard::metrics::Metrics` exports, so a renamed or
//! removed metric fails here instead of leaving an empty panel.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use regex::Regex;
use serde_json::{json, Value};
use switchboard::metrics::Metrics;

const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/switchboard/dashboards/switchboard.json");
const DASHBOARDS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/switchboard/dashboards");

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn dashboard() -> Value {
    load(Path::new(DASHBOARD))
}

/// Every panel, including rows and the panels inside collapsed rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            if let Some(inner) = p.get("panels") {
                walk(inner, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

fn title(panel: &Value) -> String {
    panel["title"].as_str().unwrap_or("<untitled>").to_string()
}

/// Every PromQL expression with where it comes from: panel targets and the query variables.
fn exprs(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(dashboard) {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push((format!("panel {:?}", title(p)), e.to_string()));
            }
        }
    }
    for v in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = v["query"]["query"].as_str().or_else(|| v["query"].as_str()).unwrap_or_default();
            out.push((format!("variable ${}", v["name"].as_str().unwrap_or_default()), q.to_string()));
        }
    }
    out
}

/// The metric names an expression uses.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let re = Regex::new(r"\b(?:grpc_server|switchboard)_[a-z_]+").unwrap();
    re.find_iter(expr).map(|m| m.as_str().to_string()).collect()
}

/// The series names a query can select: each family's, and for histograms and summaries the names of the
/// series they are exposed as.
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            // A histogram has no series under its own name: only name_bucket, name_sum and name_count.
            let suffixes: &[&str] = match kind {
                "histogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') && !line.is_empty() {
            names.insert(line.split(['{', ' ']).next().unwrap().to_string());
        }
    }
    names
}

/// The exposition of a registry in which every labelled family has a series, as it has once traffic flowed.
fn exposition() -> String {
    let m = Metrics::new();
    m.method("svc", "m");
    m.backend("ns/r", "b").response(0);
    m.local_response("no_route");
    m.connect_failures.with_label_values(&["backend"]).inc();
    m.watch_events.with_label_values(&["grpcroutes"]).inc();
    m.watch_errors.with_label_values(&["grpcroutes"]).inc();
    m.status_writes.with_label_values(&["ok"]).inc();
    m.routes.with_label_values(&["accepted"]).set(1);
    m.retried(switchboard::metrics::Retried::Unsent);
    m.upstream_goaways.with_label_values(&["NO_ERROR"]).inc();
    m.downstream_closed.with_label_values(&["idle"]).inc();
    m.downstream_tls_handshakes.with_label_values(&["ok"]).inc();
    m.render()
}

/// Metric names the dashboard uses that `exported` lacks, with where each is used.
fn missing(dashboard: &Value, exported: &BTreeSet<String>) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (place, expr) in exprs(dashboard) {
        for name in metric_names(&expr) {
            if !exported.contains(&name) {
                out.entry(name).or_default().push(place.clone());
            }
        }
    }
    out
}

#[test]
fn every_metric_in_the_dashboard_is_exported() {
    let d = dashboard();
    let text = exposition();
    let exported = exported(&text);
    let used: BTreeSet<String> = exprs(&d).iter().flat_map(|(_, e)| metric_names(e)).collect();
    assert!(used.len() > 20, "the dashboard should use switchboard's metrics; found only {used:?}");
    let missing = missing(&d, &exported);
    assert!(
        missing.is_empty(),
        "the dashboard uses metrics that switchboard does not export: {missing:#?}\nexported:\n{text}"
    );
}

#[test]
fn every_exported_metric_has_a_panel() {
    let d = dashboard();
    let used: BTreeSet<String> = exprs(&d).iter().flat_map(|(_, e)| metric_names(e)).collect();
    let text = exposition();
    let families: Vec<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split_whitespace().next()).collect();
    let uncovered: Vec<&&str> = families
        .iter()
        .filter(|f| !used.iter().any(|u| u == *f || u.strip_prefix(**f).is_some_and(|s| s.starts_with('_'))))
        .collect();
    assert!(uncovered.is_empty(), "metrics without a panel in {DASHBOARD}: {uncovered:?}");
}

#[test]
fn a_panel_naming_a_metric_that_does_not_exist_is_caught() {
    let mut d = dashboard();
    let exported = exported(&exposition());
    assert!(missing(&d, &exported).is_empty(), "see every_metric_in_the_dashboard_is_exported");
    d["panels"].as_array_mut().unwrap().push(json!({
        "type": "timeseries",
        "title": "bogus",
        "targets": [
            {"refId": "A", "expr": "sum(rate(grpc_server_handled_totl{job=~\"$job\"}[$__rate_interval]))"},
            {"refId": "B", "expr": "histogram_quantile(0.99, sum by (le) (rate(switchboard_backend_response_seconds[5m])))"},
        ],
    }));
    let found = missing(&d, &exported);
    let names: Vec<&str> = found.keys().map(String::as_str).collect();
    assert_eq!(names, ["grpc_server_handled_totl", "switchboard_backend_response_seconds"]);
    assert_eq!(found["grpc_server_handled_totl"], ["panel \"bogus\""]);
    // Inside a collapsed row too.
    let mut d = dashboard();
    d["panels"].as_array_mut().unwrap().push(json!({
        "type": "row",
        "title": "collapsed",
        "collapsed": true,
        "panels": [{"type": "stat", "title": "hidden", "targets": [{"refId": "A", "expr": "switchboard_nope"}]}],
    }));
    assert_eq!(missing(&d, &exported).keys().collect::<Vec<_>>(), ["switchboard_nope"]);
}

fn is_datasource_variable(ds: &Value) -> bool {
    let uid = ds.get("uid").and_then(Value::as_str);
    ds.get("type").and_then(Value::as_str) == Some("prometheus") && matches!(uid, Some("${datasource}" | "$datasource"))
}

#[test]
fn dashboard_is_importable() {
    let d = dashboard();

    let uid = d["uid"].as_str().expect("a uid");
    assert!(
        !uid.is_empty() && uid.len() <= 40 && uid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "Grafana uids are 1-40 characters of [A-Za-z0-9_-]: {uid:?}"
    );
    for entry in std::fs::read_dir(DASHBOARDS_DIR).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") && path != Path::new(DASHBOARD) {
            assert_ne!(load(&path)["uid"].as_str(), Some(uid), "{} has the same uid", path.display());
        }
    }
    assert!(d["title"].as_str().is_some_and(|t| !t.trim().is_empty()), "a title");
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 36), "schemaVersion {}", d["schemaVersion"]);
    assert!(d.get("id").is_none_or(Value::is_null), "no instance-specific id, so it imports anywhere");

    let vars = d["templating"]["list"].as_array().expect("template variables");
    let var = |name: &str| vars.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no ${name} variable"));
    let ds = var("datasource");
    assert_eq!((ds["type"].as_str(), ds["query"].as_str()), (Some("datasource"), Some("prometheus")));
    let instance = var("instance");
    assert!(
        instance["query"]["query"].as_str().is_some_and(|q| q.starts_with("label_values(switchboard_build_info")),
        "instances come from switchboard_build_info: {instance}"
    );
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert!(is_datasource_variable(&v["datasource"]), "variable {} must query ${{datasource}}", v["name"]);
    }

    let all = panels(&d);
    assert!(all.len() > 20, "{} panels", all.len());
    let mut ids = BTreeSet::new();
    for p in &all {
        let name = title(p);
        assert!(
            is_datasource_variable(&p["datasource"]),
            "panel {name:?} must use ${{datasource}}: {}",
            p["datasource"]
        );
        let id = p["id"].as_u64().unwrap_or_else(|| panic!("panel {name:?} has no id"));
        assert!(ids.insert(id), "panel id {id} is used twice");
        let g = &p["gridPos"];
        let (x, w, h) = (g["x"].as_u64(), g["w"].as_u64(), g["h"].as_u64());
        assert!(
            matches!((x, w, h, g["y"].as_u64()), (Some(x), Some(w), Some(h), Some(_)) if w > 0 && h > 0 && x + w <= 24),
            "panel {name:?} gridPos {g}"
        );
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("panel {name:?} has no queries"));
        assert!(!targets.is_empty(), "panel {name:?} has no queries");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(is_datasource_variable(&t["datasource"]), "a query of {name:?} must use ${{datasource}}");
            let expr = t["expr"].as_str().unwrap_or_default();
            // grpc_server_* is also what other gRPC servers export: every query keeps to switchboard's instances.
            assert!(expr.contains("instance=~\"$instance\""), "query of {name:?} ignores $instance: {expr}");
            assert!(refs.insert(t["refId"].as_str().expect("a refId")), "refIds repeat in {name:?}");
        }
    }
}
