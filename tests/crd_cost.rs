//! The GrpcRoute CRD within the API server's CEL cost limits: every rule's estimated cost, computed the way
//! the API server does when the CRD is created (see `support/cel_cost.rs` for the method and its sources),
//! stays under 10,000,000 and their sum under 100,000,000; and every string and list the rules can see is
//! bounded, so that no estimate falls back to the 3 MiB request size.

#[path = "support/cel_cost.rs"]
mod cel_cost;

use kube::CustomResourceExt;
use serde_json::Value;
use switchboard::crd::GrpcRoute;

use cel_cost::{crd_rule_costs, RuleCost, CRD_LIMIT, RULE_LIMIT};

fn schema() -> Value {
    let crd = GrpcRoute::crd();
    let version = &crd.spec.versions[0];
    serde_json::to_value(version.schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap()).unwrap()
}

fn table(costs: &[RuleCost]) -> String {
    let mut out = format!("{:<55} {:>11} {:>9} {:>12}  rule\n", "path", "cardinality", "per call", "cost");
    for c in costs {
        let rule: String = c.rule.chars().take(70).collect();
        out += &format!("{:<55} {:>11} {:>9} {:>12}  {rule}\n", c.path, c.cardinality, c.per_call, c.cost);
    }
    let total = costs.iter().fold(0u64, |sum, c| sum.saturating_add(c.cost));
    out += &format!("{:<55} {:>11} {:>9} {:>12}\n", "total", "", "", total);
    out
}

/// Every rule in the schema, wherever it sits.
fn rules_anywhere(v: &Value) -> usize {
    match v {
        Value::Object(o) => {
            let here = o.get("x-kubernetes-validations").and_then(Value::as_array).map_or(0, Vec::len);
            here + o.values().map(rules_anywhere).sum::<usize>()
        }
        Value::Array(a) => a.iter().map(rules_anywhere).sum(),
        _ => 0,
    }
}

#[test]
fn every_rule_and_the_sum_are_within_the_api_servers_limits() {
    let costs = crd_rule_costs(&schema()).unwrap();
    let table = table(&costs);
    println!("{table}");
    assert_eq!(costs.len(), rules_anywhere(&schema()), "rules the walk did not reach");
    let over: Vec<_> =
        costs.iter().filter(|c| c.cost > RULE_LIMIT).map(|c| format!("{}: {}", c.path, c.rule)).collect();
    assert!(over.is_empty(), "rules over {RULE_LIMIT}:\n{}\n\n{table}", over.join("\n"));
    let total = costs.iter().fold(0u64, |sum, c| sum.saturating_add(c.cost));
    assert!(total <= CRD_LIMIT, "total {total} over {CRD_LIMIT}\n\n{table}");
}

#[test]
fn every_string_and_list_of_the_spec_is_bounded() {
    fn walk(node: &Value, path: &str, out: &mut Vec<String>) {
        // The API server sizes enums by their longest value and date-times as 32 bytes, whatever maxLength says.
        let sized = node.get("enum").is_some() || node.get("format").is_some_and(|f| f == "date-time");
        match node["type"].as_str() {
            Some("string") if node.get("maxLength").is_none() && !sized => out.push(format!("{path}: maxLength")),
            Some("array") if node.get("maxItems").is_none() => out.push(format!("{path}: maxItems")),
            _ => {}
        }
        for (k, child) in node.get("properties").and_then(Value::as_object).into_iter().flatten() {
            walk(child, &format!("{path}.{k}"), out);
        }
        if let Some(items) = node.get("items") {
            walk(items, &format!("{path}[]"), out);
        }
    }
    let mut unbounded = Vec::new();
    walk(&schema()["properties"]["spec"], "spec", &mut unbounded);
    walk(&schema()["properties"]["status"]["properties"]["conditions"], "status.conditions", &mut unbounded);
    assert_eq!(unbounded, Vec::<String>::new());
}
