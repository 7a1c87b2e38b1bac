//! The `GrpcRoute` resource: the one definition of the CRD and of the standalone routes file.
//!
//! The spec mirrors the Gateway API's GRPCRoute v1 rules (hostnames, matches, filters, backendRefs) so
//! tools and people that know GRPCRoute feel at home; `timeout` and `retry` are our extensions. The
//! schema carries the same limits and CEL rules (`x-kubernetes-validations`) as the Gateway API CRD, so
//! the API server rejects what a Gateway would; `tests/crd.rs` checks each of them offline.
//!
//! Every string and list is bounded: the API server estimates each rule's worst-case cost from those
//! bounds, times the number of times the rule can run, and refuses a CRD over its limits
//! (`tests/crd_cost.rs` computes the same estimate). Checks that would cost too much in CEL (header names
//! unique case-insensitively) are the table builder's: a route failing them is not accepted.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// RFC 1123 host name, optionally with a leading `*.` label (Gateway API `Hostname`).
const HOSTNAME: &str = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// RFC 1123 subdomain (Gateway API `SectionName`, used for rule names).
const SECTION_NAME: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// RFC 7230 token (Gateway API `HeaderName`).
const HEADER_NAME: &str = r"^[A-Za-z0-9!#$%&'*+\-.^_\x60|~]+$";
/// An API group, empty for the core group (Gateway API `Group`).
const GROUP: &str = r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A kind (Gateway API `Kind`).
const KIND: &str = r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$";
/// RFC 1123 label (Gateway API `Namespace`).
const NAMESPACE: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// Gateway API `Duration`: 1 to 4 parts of up to 5 digits and a unit, e.g. `1h30m`, `250ms` (so at most 28
/// characters).
const DURATION: &str = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$";
/// A retryable gRPC status code: its canonical name (the longest, FAILED_PRECONDITION, has 19 characters) or
/// its number (1-16; OK is never retried).
const RETRY_CODE: &str = "^(CANCELLED|UNKNOWN|INVALID_ARGUMENT|DEADLINE_EXCEEDED|NOT_FOUND|ALREADY_EXISTS\
|PERMISSION_DENIED|RESOURCE_EXHAUSTED|FAILED_PRECONDITION|ABORTED|OUT_OF_RANGE|UNIMPLEMENTED|INTERNAL\
|UNAVAILABLE|DATA_LOSS|UNAUTHENTICATED|[1-9]|1[0-6])$";

/// `metav1.Condition` type: a qualified name.
const CONDITION_TYPE: &str =
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$";
/// `metav1.Condition` reason: CamelCase.
const CONDITION_REASON: &str = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$";

/// Gateway API: at most 128 matches over all rules of a route (16 rules of up to 64 matches would allow
/// 1024). CEL has no sum over a list, hence the Gateway's unrolled form.
const TOTAL_MATCHES: &str = "(self.size() > 0 ? (has(self[0].matches) ? self[0].matches.size() : 0) : 0) + \
(self.size() > 1 ? (has(self[1].matches) ? self[1].matches.size() : 0) : 0) + \
(self.size() > 2 ? (has(self[2].matches) ? self[2].matches.size() : 0) : 0) + \
(self.size() > 3 ? (has(self[3].matches) ? self[3].matches.size() : 0) : 0) + \
(self.size() > 4 ? (has(self[4].matches) ? self[4].matches.size() : 0) : 0) + \
(self.size() > 5 ? (has(self[5].matches) ? self[5].matches.size() : 0) : 0) + \
(self.size() > 6 ? (has(self[6].matches) ? self[6].matches.size() : 0) : 0) + \
(self.size() > 7 ? (has(self[7].matches) ? self[7].matches.size() : 0) : 0) + \
(self.size() > 8 ? (has(self[8].matches) ? self[8].matches.size() : 0) : 0) + \
(self.size() > 9 ? (has(self[9].matches) ? self[9].matches.size() : 0) : 0) + \
(self.size() > 10 ? (has(self[10].matches) ? self[10].matches.size() : 0) : 0) + \
(self.size() > 11 ? (has(self[11].matches) ? self[11].matches.size() : 0) : 0) + \
(self.size() > 12 ? (has(self[12].matches) ? self[12].matches.size() : 0) : 0) + \
(self.size() > 13 ? (has(self[13].matches) ? self[13].matches.size() : 0) : 0) + \
(self.size() > 14 ? (has(self[14].matches) ? self[14].matches.size() : 0) : 0) + \
(self.size() > 15 ? (has(self[15].matches) ? self[15].matches.size() : 0) : 0) <= 128";

/// Gateway API: the service of an `Exact` match is a protobuf full name.
const EXACT_SERVICE: &str = concat!(
    "(!has(self.type) || self.type == 'Exact') && has(self.service) ? ",
    r#"self.service.matches(r"""^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$"""): true"#
);
/// Gateway API: the method of an `Exact` match is a protobuf identifier.
const EXACT_METHOD: &str = concat!(
    "(!has(self.type) || self.type == 'Exact') && has(self.method) ? ",
    r#"self.method.matches(r"""^[A-Za-z_][A-Za-z_0-9]*$"""): true"#
);
/// Gateway API `BackendRef`, whose `group` and `kind` default to "" and `Service`; ours may be absent.
const SERVICE_NEEDS_PORT: &str = concat!(
    "((!has(self.group) || size(self.group) == 0) && (!has(self.kind) || self.kind == 'Service')) ",
    "? has(self.port) : true"
);

/// A set of routing rules for gRPC calls: which calls (hostnames, methods, headers) go to which backends.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "switchboard.dev",
    version = "v1alpha1",
    kind = "GrpcRoute",
    plural = "grpcroutes",
    shortname = "grpcr",
    namespaced,
    status = "GrpcRouteStatus",
    doc = "GrpcRoute routes gRPC calls by hostname, service, method and headers to weighted backend Services, \
           with the rules of the Gateway API's GRPCRoute plus per-rule timeouts and retries.",
    printcolumn(name = "Hostnames", type_ = "string", json_path = ".spec.hostnames"),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Accepted")].status"#
    ),
    printcolumn(
        name = "ResolvedRefs",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="ResolvedRefs")].status"#
    ),
    printcolumn(name = "Rules", type_ = "integer", json_path = ".status.ruleCount"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
// Each `printcolumn(...)` has its own `type_`; clippy takes the repeats for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
pub struct GrpcRouteSpec {
    /// Hostnames matched against the call's `:authority` (port ignored). `*.example.com` matches any
    /// subdomain of example.com but not example.com itself. Empty matches every authority.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 253), regex(pattern = HOSTNAME)))]
    pub hostnames: Vec<String>,
    /// Rules, tried by the Gateway API precedence; within equally specific matches, in list order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(
        validation = Rule::new(TOTAL_MATCHES).message(
            "While 16 rules and 64 matches per rule are allowed, the total number of matches across all rules \
             in a route must be less than 128"
        ),
        validation = Rule::new("self.all(l1, !has(l1.name) || self.exists_one(l2, has(l2.name) && l1.name == l2.name))")
            .message("Rule name must be unique within the route")
    )]
    pub rules: Vec<GrpcRouteRule>,
}

/// One rule: the calls it matches, what to do to them, and where they go.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRouteRule {
    /// Optional name of the rule, unique within the route; shown by `explain` and in status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = SECTION_NAME))]
    pub name: Option<String>,
    /// Matches are ORed; the parts of one match are ANDed. No matches: the rule matches every call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub matches: Vec<GrpcRouteMatch>,
    /// Filters applied to matching calls; at most one of each header modifier.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(
        validation = Rule::new("self.filter(f, f.type == 'RequestHeaderModifier').size() <= 1")
            .message("RequestHeaderModifier filter cannot be repeated"),
        validation = Rule::new("self.filter(f, f.type == 'ResponseHeaderModifier').size() <= 1")
            .message("ResponseHeaderModifier filter cannot be repeated")
    )]
    pub filters: Vec<GrpcRouteFilter>,
    /// Weighted backends. No backends, or all of weight 0: calls fail with UNAVAILABLE.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub backend_refs: Vec<GrpcBackendRef>,
    /// Cap on the call's duration in the Gateway API duration format (e.g. `1s500ms`, `250ms`, `1m`);
    /// a shorter `grpc-timeout` from the client wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 28), regex(pattern = DURATION))]
    #[x_kube(
        validation = Rule::new(r"!self.matches('^(0+(h|m|s|ms))+$')").message("timeout must be greater than zero")
    )]
    pub timeout: Option<String>,
    /// Retries of unary calls that fail with one of the given codes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Only clients whose TLS certificate names one of these identities may call: a URI subject alternative
    /// name such as a SPIFFE ID (`spiffe://cluster.local/ns/shop/sa/web`, compared exactly) or a DNS one
    /// (case-insensitive). Other clients, and clients without a certificate, get PERMISSION_DENIED. Needs
    /// client TLS with client certificates (`--tls-client-ca`). Absent: every client may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), inner(length(min = 1, max = 512)))]
    pub client_identities: Option<Vec<String>>,
}

/// Which calls a rule applies to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRouteMatch {
    /// The gRPC method; absent matches every method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<GrpcMethodMatch>,
    /// Request headers (metadata) that must all match; each name at most once (case-insensitive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub headers: Vec<GrpcHeaderMatch>,
}

/// How a method match compares.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum MatchType {
    /// Byte-for-byte equality.
    #[default]
    Exact,
    /// An RE2-style regular expression that must match the whole value.
    RegularExpression,
}

/// A match on the `/service/method` path (GEP-1016).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.type) ? has(self.service) || has(self.method) : true")
        .message("One or both of 'service' or 'method' must be specified"),
    validation = Rule::new(EXACT_SERVICE).message(concat!(
        "service must only contain valid characters ",
        r"(matching ^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$)"
    )),
    validation = Rule::new(EXACT_METHOD)
        .message("method must only contain valid characters (matching ^[A-Za-z_][A-Za-z_0-9]*$)")
)]
pub struct GrpcMethodMatch {
    /// `Exact` (default) or `RegularExpression`.
    #[serde(rename = "type", default)]
    pub match_type: MatchType,
    /// Fully qualified service, e.g. `foo.v1.Greeter`. Absent: any service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub service: Option<String>,
    /// Method name, e.g. `SayHello`. Absent: any method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub method: Option<String>,
}

/// A match on one request header. Names are case-insensitive.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrpcHeaderMatch {
    /// `Exact` (default) or `RegularExpression`.
    #[serde(rename = "type", default)]
    pub match_type: MatchType,
    /// Header name.
    #[schemars(length(min = 1, max = 256), regex(pattern = HEADER_NAME))]
    pub name: String,
    /// Value to compare with.
    #[schemars(length(min = 1, max = 4096))]
    pub value: String,
}

/// The kinds of filter.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum FilterType {
    /// Set, add or remove request headers before forwarding.
    RequestHeaderModifier,
    /// Set, add or remove response headers before relaying them.
    ResponseHeaderModifier,
    /// Send a copy of the call to another backend; its answer is ignored.
    RequestMirror,
}

/// A filter; the field named by `type` must be set, and no other.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!(has(self.requestHeaderModifier) && self.type != 'RequestHeaderModifier')")
        .message("filter.requestHeaderModifier must be nil if the filter.type is not RequestHeaderModifier"),
    validation = Rule::new("!(!has(self.requestHeaderModifier) && self.type == 'RequestHeaderModifier')")
        .message("filter.requestHeaderModifier must be specified for RequestHeaderModifier filter.type"),
    validation = Rule::new("!(has(self.responseHeaderModifier) && self.type != 'ResponseHeaderModifier')")
        .message("filter.responseHeaderModifier must be nil if the filter.type is not ResponseHeaderModifier"),
    validation = Rule::new("!(!has(self.responseHeaderModifier) && self.type == 'ResponseHeaderModifier')")
        .message("filter.responseHeaderModifier must be specified for ResponseHeaderModifier filter.type"),
    validation = Rule::new("!(has(self.requestMirror) && self.type != 'RequestMirror')")
        .message("filter.requestMirror must be nil if the filter.type is not RequestMirror"),
    validation = Rule::new("!(!has(self.requestMirror) && self.type == 'RequestMirror')")
        .message("filter.requestMirror must be specified for RequestMirror filter.type")
)]
pub struct GrpcRouteFilter {
    /// Which filter this is.
    #[serde(rename = "type")]
    pub filter_type: FilterType,
    /// For `RequestHeaderModifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HeaderModifier>,
    /// For `ResponseHeaderModifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HeaderModifier>,
    /// For `RequestMirror`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<RequestMirror>,
}

/// Header edits, applied in the order set, add, remove. Each header name (case-insensitive) may appear
/// once in all three lists together: one action per header. The API server refuses exact repeats within a
/// list; the table builder refuses the rest.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderModifier {
    /// Replace the header's value (or add it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub set: Vec<HttpHeader>,
    /// Append a value to the header.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub add: Vec<HttpHeader>,
    /// Remove the header.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 256), regex(pattern = HEADER_NAME)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub remove: Vec<String>,
}

/// A header name and value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct HttpHeader {
    /// Header name (case-insensitive).
    #[schemars(length(min = 1, max = 256), regex(pattern = HEADER_NAME))]
    pub name: String,
    /// Header value.
    #[schemars(length(min = 1, max = 4096))]
    pub value: String,
}

/// Where mirrored calls go.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestMirror {
    /// The mirror's backend.
    pub backend_ref: BackendObjectRef,
}

/// A reference to a backend without a weight.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(SERVICE_NEEDS_PORT).message("Must have port for Service reference"))]
pub struct BackendObjectRef {
    /// API group of the referent; empty or absent means the core group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253), regex(pattern = GROUP))]
    pub group: Option<String>,
    /// Kind of the referent; absent means `Service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = KIND))]
    pub kind: Option<String>,
    /// In a cluster, the Service name; standalone, a host name or IP address.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the Service; absent means the route's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = NAMESPACE))]
    pub namespace: Option<String>,
    /// Port of the Service (or, standalone, of the host); required for Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
}

/// A weighted backend.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrpcBackendRef {
    /// The backend.
    #[serde(flatten)]
    pub backend: BackendObjectRef,
    /// Relative share of calls (default 1); 0 sends nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub weight: Option<u32>,
}

/// Retries for unary calls (streaming calls are never retried), capped by a budget so that retries
/// cannot multiply the load on a struggling backend: per rule, at most `budgetPercent`% of calls, or
/// `minRetriesPerSecond` a second, whichever is more.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.codes)").message("retry must name at least one code"))]
pub struct RetryPolicy {
    /// gRPC status codes that are retried, by canonical name (`UNAVAILABLE`) or number (`14`).
    // Not `default: []` in the schema: the API server rejects a default that fails `minItems`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 16), inner(length(max = 19), regex(pattern = RETRY_CODE)))]
    pub codes: Vec<String>,
    /// Total attempts including the first (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub attempts: Option<u32>,
    /// Retries allowed, as a percentage of the rule's calls (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub budget_percent: Option<u32>,
    /// Retries a second that the budget allows however few calls there are (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_retries_per_second: Option<u32>,
}

/// Observed state of a GrpcRoute.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRouteStatus {
    /// `Accepted` and `ResolvedRefs` conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    /// The generation these conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Rules of this route in the data plane's table (0 when it is not accepted); a printer column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_count: Option<i64>,
}

/// `status.conditions`: Kubernetes' `metav1.Condition` with the limits of its upstream OpenAPI schema, which
/// k8s-openapi's leaves out, as a list keyed by type of at most 8 (the Gateway API's route status conditions).
fn conditions_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": 8,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "description": "One aspect of the route's state.",
            "type": "object",
            "required": ["type", "status", "lastTransitionTime", "reason", "message"],
            "properties": {
                "type": {
                    "description": "Condition type: Accepted or ResolvedRefs.",
                    "type": "string",
                    "maxLength": 316,
                    "pattern": CONDITION_TYPE,
                },
                "status": {
                    "description": "True, False or Unknown.",
                    "type": "string",
                    "enum": ["True", "False", "Unknown"],
                },
                "observedGeneration": {
                    "description": "The route generation this condition describes.",
                    "type": "integer",
                    "format": "int64",
                    "minimum": 0,
                },
                "lastTransitionTime": {
                    "description": "When the status last changed.",
                    "type": "string",
                    "format": "date-time",
                },
                "reason": {
                    "description": "Why, in CamelCase.",
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 1024,
                    "pattern": CONDITION_REASON,
                },
                "message": {
                    "description": "Details for people.",
                    "type": "string",
                    "maxLength": 32768,
                },
            },
        },
    })
}
