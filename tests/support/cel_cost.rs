//! The Kubernetes API server's static cost estimate of a CRD's `x-kubernetes-validations` rules, ported for
//! the CEL functions and macros our CRD uses, so that a test can refuse a CRD the API server would refuse.
//!
//! What the API server does, and where this port takes each number from:
//! - **Limits** (k8s.io/apiextensions-apiserver `pkg/apis/apiextensions/validation/validation.go`):
//!   `StaticEstimatedCostLimit` = 10,000,000 per rule and `StaticEstimatedCRDCostLimit` = 100,000,000 for the
//!   sum over the CRD, checked in `ValidateCustomResourceDefinitionOpenAPISchema` on
//!   `getExpressionCost(cr, celContext)` = the rule's `MaxCost` × its cardinality (`multiplyWithOverflowGuard`).
//! - **Cardinality** (same package, `cel_validation.go`, `CELSchemaContext.childContext` and
//!   `extractMaxElements`): the product of `maxItems` (`maxProperties` for maps) of every list (map) enclosing
//!   the rule's schema node, objects counting 1. Under an unbounded list it falls back to the compiled rule's
//!   `MaxCardinality` = `maxCardinality(MinSerializedSize)` = 3 MiB / (min serialized size + 1)
//!   (`pkg/apiserver/schema/cel/compilation.go`).
//! - **Sizes** (`sizeEstimator.EstimateSize` in that `compilation.go`): a value reached by a path from `self`
//!   has size [0, `MaxElements`] of its schema's CEL declaration, built by `SchemaDeclType`
//!   (k8s.io/apiserver `pkg/cel/common/schemas.go`): a string's is `maxLength` × 4
//!   (`estimateMaxElementsFromMaxLength`: maxLength counts runes, sizes count bytes), without maxLength the
//!   longest enum value or 3 MiB − 2 (`estimateMaxStringLengthPerRequest`, `MaxRequestSizeBytes` in
//!   `pkg/cel/limits.go`); a list's is `maxItems`, without it (3 MiB − 2) / (min item size + 1)
//!   (`estimateMaxArrayItemsFromMinSize`); scalars and objects have 0 (`NewSimpleTypeWithMinSize`,
//!   `NewObjectType` in `pkg/cel/types.go`).
//! - **Costs** (google/cel-go `checker/cost.go`, constants in `common/cost.go`): identifiers and selects on
//!   objects 1, literals 0, list literals 10 plus their elements; `has()` 0 (Kubernetes' base environment sets
//!   `PresenceTestHasCost(false)`, k8s.io/apiserver `pkg/cel/environment/base.go`); `&&`/`||` the sum of both
//!   sides and `?:` the condition plus the dearer branch, with no call cost; `==`, `!=` and string comparisons
//!   ⌈min(size of both sides) × 0.1⌉; `matches` ⌈(size + 1) × 0.1⌉ × ⌈regex length × 0.25⌉; string `+`
//!   ⌈(sum of sizes) × 0.1⌉; every other function (size, `!`, `@not_strictly_false`, integer arithmetic and
//!   comparisons, index, list `+`) 1; each call adds its arguments' and receiver's costs. A comprehension
//!   (`all`, `exists`, `exists_one`, `filter`, `map`, as cel-go's macros expand them) costs its range,
//!   accumulator init and result plus size(range) × (loop condition + loop step).
//! - **Kubernetes library functions** (k8s.io/apiserver `pkg/cel/library/cost.go`,
//!   `CostEstimator.EstimateCallCost`): `lowerAscii` ⌈size × 0.1⌉, its result the same size (no rule of ours
//!   uses it any more; the estimate of the rules that did is a unit test below).
//!
//! The API server reads only the maximum of each estimate (`costEst.Max`) and no maximum depends on a
//! minimum, so only maxima are carried. Anything else (another function, a string with a format, a map
//! literal) is refused with an error rather than guessed. The unit tests below reproduce cases of Kubernetes'
//! own `TestCostEstimation` (apiextensions-apiserver `pkg/apiserver/schema/cel/compilation_test.go`).

use cel::common::ast::{operators, ComprehensionExpr, Expr, LiteralValue};
use cel::parser::Parser;
use cel::IdedExpr;
use serde_json::Value;

/// The most one rule may cost, cost of a call × cardinality (`StaticEstimatedCostLimit`).
pub const RULE_LIMIT: u64 = 10_000_000;
/// Sum over all rules of a CRD (`StaticEstimatedCRDCostLimit`).
pub const CRD_LIMIT: u64 = 100_000_000;
/// k8s.io/apiserver `pkg/cel/limits.go` `MaxRequestSizeBytes`.
const MAX_REQUEST_SIZE_BYTES: u64 = 3 * 1024 * 1024;
/// cel-go `common/cost.go`.
const SELECT_AND_IDENT_COST: u64 = 1;
const CONST_COST: u64 = 0;
const LIST_CREATE_BASE_COST: u64 = 10;
const CALL_COST: u64 = 1;
const STRING_TRAVERSAL_COST_FACTOR: f64 = 0.1;
const REGEX_STRING_LENGTH_COST_FACTOR: f64 = 0.25;
/// `PresenceTestHasCost(false)` in Kubernetes' base CEL environment.
const PRESENCE_TEST_COST: u64 = 0;

/// The estimate of one rule of a CRD.
#[derive(Clone, Debug)]
pub struct RuleCost {
    /// Where the rule sits, e.g. `spec.rules[].matches[].method`.
    pub path: String,
    /// The rule.
    pub rule: String,
    /// How many times it can run for one object.
    pub cardinality: u64,
    /// The estimated cost of one run.
    pub per_call: u64,
    /// `per_call` × `cardinality`: what the API server compares with [`RULE_LIMIT`].
    pub cost: u64,
}

/// Estimates every rule of a CRD version's `openAPIV3Schema`, in schema order.
pub fn crd_rule_costs(root: &Value) -> Result<Vec<RuleCost>, String> {
    let mut out = Vec::new();
    walk(root, "", Some(1), &mut out)?;
    Ok(out)
}

fn walk(node: &Value, path: &str, cardinality: Option<u64>, out: &mut Vec<RuleCost>) -> Result<(), String> {
    for r in node.get("x-kubernetes-validations").and_then(Value::as_array).into_iter().flatten() {
        let rule = r["rule"].as_str().ok_or_else(|| format!("{path}: a validation without a rule"))?;
        let per_call = rule_cost(node, rule).map_err(|e| format!("{path}: {rule}: {e}"))?;
        let cardinality = match cardinality {
            Some(c) => c,
            None => MAX_REQUEST_SIZE_BYTES / (min_serialized_size(node)? + 1),
        };
        let cost = if per_call == 0 { 0 } else { per_call.saturating_mul(cardinality) };
        out.push(RuleCost { path: path.to_string(), rule: rule.to_string(), cardinality, per_call, cost });
    }
    // `extractMaxElements`: lists and maps multiply their children's cardinality, objects do not.
    let child = |factor: Option<u64>| cardinality.zip(factor).map(|(c, f)| c.saturating_mul(f));
    for (name, prop) in node.get("properties").and_then(Value::as_object).into_iter().flatten() {
        let p = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
        walk(prop, &p, child(Some(1)), out)?;
    }
    if let Some(items) = node.get("items") {
        walk(items, &format!("{path}[]"), child(node.get("maxItems").and_then(Value::as_u64)), out)?;
    }
    if let Some(values) = node.get("additionalProperties").filter(|v| v.is_object()) {
        walk(values, &format!("{path}{{}}"), child(node.get("maxProperties").and_then(Value::as_u64)), out)?;
    }
    Ok(())
}

/// The estimated worst-case cost of one evaluation of `rule` on a value of `schema` (`costEst.Max`).
pub fn rule_cost(schema: &Value, rule: &str) -> Result<u64, String> {
    let ast = Parser::new().parse(rule).map_err(|e| format!("does not parse: {e}"))?;
    let mut coster = Coster { scopes: vec![("self".into(), Val::of_schema(schema, 0)?)] };
    Ok(coster.cost(&ast)?.cost)
}

/// The CEL type of a value, as far as the estimate needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Bool,
    Int,
    Uint,
    Double,
    Str,
    Bytes,
    Null,
    List,
    Map,
    Object,
}

impl Kind {
    /// cel-go `isScalar`: values of constant size 1.
    fn is_scalar(self) -> bool {
        matches!(self, Self::Bool | Self::Int | Self::Uint | Self::Double)
    }
}

/// One estimated expression: its cost, its size if known (cel-go's `computeSize`), its type, and the schema
/// node its path from `self` leads to (cel-go's expression paths, read by the size estimator).
#[derive(Clone, Copy, Debug)]
struct Val<'a> {
    cost: u64,
    size: Option<u64>,
    kind: Kind,
    schema: Option<&'a Value>,
}

impl<'a> Val<'a> {
    /// A value reached by a path: sized by its schema (`EstimateSize` comes before the type in `computeSize`).
    fn of_schema(schema: &'a Value, cost: u64) -> Result<Self, String> {
        Ok(Self { cost, size: Some(max_elements(schema)?), kind: kind_of(schema)?, schema: Some(schema) })
    }

    /// A value without a path: sized by what the call computed, else by its type.
    fn computed(kind: Kind, cost: u64, size: Option<u64>) -> Self {
        Self { cost, size: size.or(kind.is_scalar().then_some(1)), kind, schema: None }
    }

    /// cel-go `sizeOrUnknown`.
    fn size_or_unknown(&self) -> u64 {
        self.size.unwrap_or(u64::MAX)
    }
}

struct Coster<'a> {
    /// Variables in scope, innermost last (cel-go's `scopes`); each use costs an ident and yields this value.
    scopes: Vec<(String, Val<'a>)>,
}

impl<'a> Coster<'a> {
    fn cost(&mut self, e: &IdedExpr) -> Result<Val<'a>, String> {
        match &e.expr {
            Expr::Literal(l) => Ok(literal(l)),
            Expr::Ident(name) => {
                let (_, v) = self.scopes.iter().rev().find(|(n, _)| n == name).ok_or(format!("unknown {name}"))?;
                Ok(Val { cost: SELECT_AND_IDENT_COST, ..*v })
            }
            Expr::Select(s) => {
                let operand = self.cost(&s.operand)?;
                if s.test {
                    return Ok(Val::computed(Kind::Bool, add(PRESENCE_TEST_COST, operand.cost), None));
                }
                let field = match (operand.kind, operand.schema) {
                    (Kind::Object, Some(schema)) => &schema["properties"][&s.field],
                    (Kind::Map, Some(schema)) => &schema["additionalProperties"],
                    _ => return Err(format!("select .{} on {:?} without a schema", s.field, operand.kind)),
                };
                if field.is_null() {
                    return Err(format!("no field {}", s.field));
                }
                // `costSelect`: selecting on a map or object costs one more than the operand.
                Val::of_schema(field, add(operand.cost, SELECT_AND_IDENT_COST))
            }
            Expr::List(l) => {
                let mut cost = LIST_CREATE_BASE_COST;
                for element in &l.elements {
                    cost = add(cost, self.cost(element)?.cost);
                }
                Ok(Val::computed(Kind::List, cost, Some(l.elements.len() as u64)))
            }
            Expr::Call(call) => {
                let args = call.args.iter().map(|a| self.cost(a)).collect::<Result<Vec<_>, _>>()?;
                let target = call.target.as_deref().map(|t| self.cost(t)).transpose()?;
                self.call(&call.func_name, target, &args)
            }
            Expr::Comprehension(c) => self.comprehension(c),
            other => Err(format!("{other:?} is not modelled")),
        }
    }

    /// cel-go `costCall` and `functionCost`, with the Kubernetes library's `EstimateCallCost` first.
    fn call(&self, func: &str, target: Option<Val<'a>>, args: &[Val<'a>]) -> Result<Val<'a>, String> {
        let arg_sum = args.iter().fold(0, |sum, a| add(sum, a.cost));
        let target_cost = target.map_or(0, |t| t.cost);
        let plain = |kind: Kind| Val::computed(kind, add(add(CALL_COST, arg_sum), target_cost), None);
        let v = match (func, target, args) {
            (operators::LOGICAL_AND | operators::LOGICAL_OR, None, [_, _]) => Val::computed(Kind::Bool, arg_sum, None),
            (operators::CONDITIONAL, None, [c, t, f]) => {
                let size = t.size_or_unknown().max(f.size_or_unknown());
                Val::computed(t.kind, add(c.cost, t.cost.max(f.cost)), Some(size))
            }
            (operators::EQUALS | operators::NOT_EQUALS, None, [l, r]) => compare(l, r, arg_sum),
            (
                operators::LESS | operators::LESS_EQUALS | operators::GREATER | operators::GREATER_EQUALS,
                None,
                [l, r],
            ) if matches!(l.kind, Kind::Str | Kind::Bytes) => compare(l, r, arg_sum),
            (
                operators::LESS | operators::LESS_EQUALS | operators::GREATER | operators::GREATER_EQUALS,
                None,
                [l, _],
            ) if matches!(l.kind, Kind::Int | Kind::Uint | Kind::Double) => plain(Kind::Bool),
            (operators::ADD, None, [l, r]) => {
                let size = l.size_or_unknown().saturating_add(r.size_or_unknown());
                match l.kind {
                    Kind::Str | Kind::Bytes => {
                        Val::computed(l.kind, add(by_factor(size, STRING_TRAVERSAL_COST_FACTOR), arg_sum), Some(size))
                    }
                    Kind::List => Val::computed(Kind::List, add(CALL_COST, arg_sum), Some(size)),
                    Kind::Int | Kind::Uint | Kind::Double => plain(l.kind),
                    other => return Err(format!("+ on {other:?} is not modelled")),
                }
            }
            (operators::LOGICAL_NOT | operators::NOT_STRICTLY_FALSE, None, [_]) => plain(Kind::Bool),
            (operators::INDEX, None, [list, _]) if list.kind == Kind::List => {
                let items = list.schema.map(|s| &s["items"]).ok_or("index into a list without a schema")?;
                Val::of_schema(items, add(add(CALL_COST, arg_sum), target_cost))?
            }
            ("size", Some(_), []) | ("size", None, [_]) => plain(Kind::Int),
            ("matches", Some(s), [re]) if s.kind == Kind::Str => {
                let str_cost = by_factor(s.size_or_unknown().saturating_add(1), STRING_TRAVERSAL_COST_FACTOR);
                let regex_cost = by_factor(re.size_or_unknown(), REGEX_STRING_LENGTH_COST_FACTOR);
                Val::computed(Kind::Bool, add(add(str_cost.saturating_mul(regex_cost), arg_sum), target_cost), None)
            }
            ("lowerAscii", Some(s), []) if s.kind == Kind::Str => {
                let size = s.size_or_unknown();
                Val::computed(Kind::Str, add(by_factor(size, STRING_TRAVERSAL_COST_FACTOR), target_cost), Some(size))
            }
            _ => return Err(format!("{func} with these arguments is not modelled")),
        };
        Ok(v)
    }

    /// cel-go `costComprehension`.
    fn comprehension(&mut self, c: &ComprehensionExpr) -> Result<Val<'a>, String> {
        if c.iter_var2.is_some() {
            return Err("two-variable comprehensions are not modelled".into());
        }
        let range = self.cost(&c.iter_range)?;
        let init = self.cost(&c.accu_init)?;
        let item = match (range.kind, range.schema) {
            (Kind::List, Some(schema)) => Val::of_schema(&schema["items"], 0)?,
            _ => return Err(format!("iterating over {:?} without a schema is not modelled", range.kind)),
        };
        // The accumulator has no path: its size is its initial value's.
        self.scopes.push((c.accu_var.clone(), Val { schema: None, ..init }));
        self.scopes.push((c.iter_var.clone(), item));
        let loop_cost = self.cost(&c.loop_cond)?.cost;
        let step_cost = self.cost(&c.loop_step)?.cost;
        self.scopes.pop();
        let result = self.cost(&c.result)?;
        self.scopes.pop();
        let range_count = range.size_or_unknown();
        let cost =
            add(add(add(range.cost, init.cost), result.cost), range_count.saturating_mul(add(step_cost, loop_cost)));
        let size = match &c.accu_init.expr {
            Expr::List(_) => Some(range_count),
            _ => init.size,
        };
        Ok(Val::computed(result.kind, cost, size))
    }
}

/// Equality and string comparison: ⌈min(both sizes) × 0.1⌉ plus the arguments.
fn compare<'a>(l: &Val<'a>, r: &Val<'a>, arg_sum: u64) -> Val<'a> {
    let smallest = l.size_or_unknown().min(r.size_or_unknown());
    Val::computed(Kind::Bool, add(by_factor(smallest, STRING_TRAVERSAL_COST_FACTOR), arg_sum), None)
}

/// cel-go `computeExprSize` for a literal: runes of a string, bytes of bytes, 1 for the rest.
fn literal<'a>(l: &LiteralValue) -> Val<'a> {
    let (kind, size) = match l {
        LiteralValue::Boolean(_) => (Kind::Bool, 1),
        LiteralValue::Int(_) => (Kind::Int, 1),
        LiteralValue::UInt(_) => (Kind::Uint, 1),
        LiteralValue::Double(_) => (Kind::Double, 1),
        LiteralValue::Null => (Kind::Null, 1),
        LiteralValue::String(s) => (Kind::Str, s.chars().count() as u64),
        LiteralValue::Bytes(b) => (Kind::Bytes, b.len() as u64),
    };
    Val { cost: CONST_COST, size: Some(size), kind, schema: None }
}

fn kind_of(schema: &Value) -> Result<Kind, String> {
    match (schema["type"].as_str(), schema.get("format").and_then(Value::as_str)) {
        (Some("string"), None) => Ok(Kind::Str),
        (Some("string"), Some("byte")) => Ok(Kind::Bytes),
        (Some("integer"), _) => Ok(Kind::Int),
        (Some("number"), _) => Ok(Kind::Double),
        (Some("boolean"), _) => Ok(Kind::Bool),
        (Some("array"), _) => Ok(Kind::List),
        (Some("object"), _) if schema.get("additionalProperties").is_some_and(Value::is_object) => Ok(Kind::Map),
        (Some("object"), _) => Ok(Kind::Object),
        (ty, format) => Err(format!("a schema of type {ty:?} and format {format:?} is not modelled")),
    }
}

/// `SchemaDeclType`'s `MaxElements`: the largest size a value of this schema can have.
fn max_elements(schema: &Value) -> Result<u64, String> {
    let max = |key: &str| schema.get(key).and_then(Value::as_u64);
    Ok(match kind_of(schema)? {
        Kind::Str => match (max("maxLength"), schema.get("enum").and_then(Value::as_array)) {
            (Some(n), _) => n.saturating_mul(4),
            (None, Some(values)) => values.iter().filter_map(Value::as_str).map(|v| v.len() as u64).max().unwrap_or(0),
            (None, None) => MAX_REQUEST_SIZE_BYTES - 2,
        },
        Kind::Bytes => max("maxLength").unwrap_or(MAX_REQUEST_SIZE_BYTES - 2),
        Kind::List => match max("maxItems") {
            Some(n) => n,
            None => (MAX_REQUEST_SIZE_BYTES - 2) / (min_serialized_size(&schema["items"])? + 1),
        },
        Kind::Map => match max("maxProperties") {
            Some(n) => n,
            None => (MAX_REQUEST_SIZE_BYTES - 2) / (min_serialized_size(&schema["additionalProperties"])? + 6),
        },
        _ => 0,
    })
}

/// `SchemaDeclType`'s `MinSerializedSize`: the fewest JSON bytes a value of this schema takes.
fn min_serialized_size(schema: &Value) -> Result<u64, String> {
    Ok(match kind_of(schema)? {
        Kind::Str | Kind::Bytes => 2,
        Kind::Bool => 4,
        Kind::Int | Kind::Uint | Kind::Double => 1,
        Kind::List | Kind::Map => 2,
        Kind::Object => {
            let required: Vec<&str> = schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let mut size = 2;
            for (name, prop) in schema.get("properties").and_then(Value::as_object).into_iter().flatten() {
                if required.contains(&name.as_str()) && prop.get("default").is_none() {
                    size += name.len() as u64 + min_serialized_size(prop)? + 4;
                }
            }
            size
        }
        Kind::Null => 4,
    })
}

fn add(a: u64, b: u64) -> u64 {
    a.saturating_add(b)
}

/// cel-go `multiplyByCostFactor`: ⌈x × factor⌉, saturating.
fn by_factor(x: u64, factor: f64) -> u64 {
    let product = (x as f64 * factor).ceil();
    if product >= u64::MAX as f64 {
        u64::MAX
    } else {
        product as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(max_items: u64, max_length: u64) -> Value {
        json!({"type": "array", "maxItems": max_items, "items": {"type": "object", "required": ["name"],
            "properties": {"name": {"type": "string", "maxLength": max_length}}}})
    }

    /// `schema` with `key: limit` when there is a limit.
    fn limited(mut schema: Value, key: &str, limit: Option<u64>) -> Value {
        if let Some(limit) = limit {
            schema[key] = json!(limit);
        }
        schema
    }

    /// Cases of Kubernetes' own `TestCostEstimation` (apiextensions-apiserver `pkg/apiserver/schema/cel/
    /// compilation_test.go`): a rule, its schema, the cost expected without limits, then with `limit` as
    /// maxItems of the list or maxLength of the string and the cost expected.
    #[test]
    fn agrees_with_kubernetes_own_cost_expectations() {
        let string = |limit| limited(json!({"type": "string"}), "maxLength", limit);
        let strings = |limit| limited(json!({"type": "array", "items": {"type": "string"}}), "maxItems", limit);
        let numbers = |limit| limited(json!({"type": "array", "items": {"type": "number"}}), "maxItems", limit);
        let booleans = |limit| limited(json!({"type": "array", "items": {"type": "boolean"}}), "maxItems", limit);
        type Schema<'s> = &'s dyn Fn(Option<u64>) -> Value;
        let cases: [(&str, Schema, u64, u64, u64); 11] = [
            ("self.all(x, true)", &strings, 3_145_727, 20, 62),
            ("self.all(x, true)", &numbers, 4_718_591, 10, 32),
            ("self.all(x, true)", &booleans, 1_887_437, 5, 17),
            ("self.all(x, x == 0.0)", &numbers, 6_291_454, 3 * 1024 * 2048, 25_165_826),
            ("self[1] == self[1]", &strings, 314_577, 8, 314_577),
            (r#"size(self + "hello") > size("hello")"#, &string, 314_578, 4, 7),
            (r#"self.matches("x")"#, &string, 314_574, 50, 22),
            (r#""".matches("(((((((((())))))))))[0-9]")"#, &string, 7, 10, 7),
            (r#"self.matches("")"#, &string, 1, 100, 1),
            ("self.lowerAscii() == 'lower!'", &string, 314_575, 10, 6),
            (r#"self == "x""#, &string, 2, 0, 1),
        ];
        for (rule, schema, unbounded, limit, bounded) in cases {
            assert_eq!(rule_cost(&schema(None), rule), Ok(unbounded), "{rule} without limits");
            assert_eq!(rule_cost(&schema(Some(limit)), rule), Ok(bounded), "{rule} with {limit}");
        }
        let quadratic = "self.all(x, self.all(y, true))";
        assert!(rule_cost(&numbers(None), quadratic).unwrap() > RULE_LIMIT);
        assert_eq!(rule_cost(&numbers(Some(10)), quadratic), Ok(352));
    }

    #[test]
    fn a_quadratic_case_insensitive_uniqueness_rule_is_expensive() {
        // 16 × 16 iterations of two lowerAscii (⌈1024 × 0.1⌉ + 2 each) and a comparison (103).
        let rule = "self.all(h, self.exists_one(o, o.name.lowerAscii() == h.name.lowerAscii()))";
        let per_call = rule_cost(&names(16, 256), rule).unwrap();
        assert_eq!(per_call, 80_738);
        // Under 64 matches of 16 rules, as our header matches were, it runs 1024 times: over the limit.
        assert!(per_call * 1024 > RULE_LIMIT);
    }

    #[test]
    fn an_unbounded_string_is_sized_by_the_request_limit() {
        let rule = "!self.matches('^(0+(h|m|s|ms))+$')";
        let unbounded = rule_cost(&json!({"type": "string"}), rule).unwrap();
        // ⌈(3 MiB - 2 + 1) × 0.1⌉ × ⌈17 × 0.25⌉ + self + `!`.
        assert_eq!(unbounded, 314_573 * 5 + 2);
        let bounded = rule_cost(&json!({"type": "string", "maxLength": 28}), rule).unwrap();
        assert_eq!(bounded, 12 * 5 + 2);
    }

    #[test]
    fn cardinality_multiplies_the_enclosing_lists() {
        let crd = json!({"type": "object", "properties": {"outer": {"type": "array", "maxItems": 8, "items": {
            "type": "object", "properties": {"inner": {
                "type": "array", "maxItems": 4, "items": {"type": "string", "maxLength": 10},
                "x-kubernetes-validations": [{"rule": "self.size() <= 2"}]}}}}}});
        let costs = crd_rule_costs(&crd).unwrap();
        assert_eq!(costs.len(), 1);
        assert_eq!((costs[0].path.as_str(), costs[0].cardinality), ("outer[].inner", 8));
        // size() 1 + self 1, `<=` on ints 1.
        assert_eq!((costs[0].per_call, costs[0].cost), (3, 24));
    }

    #[test]
    fn unbounded_lists_fall_back_to_the_request_size() {
        let list = json!({"type": "array", "items": {"type": "string"},
            "x-kubernetes-validations": [{"rule": "self.all(s, s == 'x')"}]});
        // (3 MiB - 2) / (2 + 1) items, each compared at ⌈min(3 MiB - 2, 1) × 0.1⌉ = 1 plus s.
        let per_call = rule_cost(&list, "self.all(s, s == 'x')").unwrap();
        let items = (MAX_REQUEST_SIZE_BYTES - 2) / 3;
        assert_eq!(per_call, 1 + 1 + items * (1 + 1 + 1 + 1 + 1));
        let crd = json!({"type": "object", "properties": {"l": {"type": "array", "items": list}}});
        assert_eq!(crd_rule_costs(&crd).unwrap()[0].cardinality, MAX_REQUEST_SIZE_BYTES / 3);
    }

    #[test]
    fn what_is_not_modelled_is_refused() {
        let s = json!({"type": "string", "maxLength": 10});
        assert!(rule_cost(&s, "self.startsWith('a')").unwrap_err().contains("not modelled"));
        assert!(rule_cost(&s, "{'a': 1}.size() > 0").unwrap_err().contains("not modelled"));
    }
}
