//! Metrics after known traffic: exact counts, labels only from the route table.

mod support;

use support::*;

/// `name{labels}` with the labels sorted, as the text format writes them.
fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let mut l = labels.to_vec();
    l.sort();
    let l: Vec<String> = l.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", l.join(","))
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')).map(|v| v.parse().unwrap()))
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

#[tokio::test]
async fn counts_after_known_traffic() {
    let b = backend("alpha").await;
    let yaml = format!(
        "apiVersion: switchboard.dev/v1alpha1\nkind: GrpcRoute\nmetadata: {{name: echo}}\nspec:\n  rules:\n    - matches: [{{method: {{service: {ECHO}, method: Unary}}}}]\n      backendRefs: [{{name: \"127.0.0.1\", port: {port}}}]\n    - matches: [{{method: {{service: {ECHO}}}}}]\n      backendRefs: [{{name: \"127.0.0.1\", port: {port}}}]\n",
        port = b.addr.port()
    );
    let p = proxy(&yaml).await;
    let mut via = client(p.addr).await;
    for _ in 0..3 {
        via.unary(req(b"ok")).await.unwrap();
    }
    for _ in 0..2 {
        let mut r = tonic::Request::new(req(b"fail"));
        r.metadata_mut().insert("x-fail", "9".parse().unwrap());
        via.unary(r).await.unwrap_err();
    }
    let replies: Vec<_> = tokio_stream::StreamExt::collect::<Vec<_>>(
        via.server_stream(pb::EchoRequest { payload: b"s".to_vec(), count: 5 }).await.unwrap().into_inner(),
    )
    .await;
    assert_eq!(replies.len(), 5);
    let mut grpc = tonic::client::Grpc::new(channel(p.addr).await);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<pb::EchoRequest, pb::EchoReply>::default();
    let path = http::uri::PathAndQuery::from_static("/random.v1.Junk/Whatever");
    grpc.unary(tonic::Request::new(req(b"")), path, codec).await.unwrap_err();

    let text = p.routes.metrics().render();
    let svc = ("grpc_service", ECHO);
    let unary = [svc, ("grpc_method", "Unary")];
    let other = [svc, ("grpc_method", "unknown")];
    let junk = [("grpc_service", "unknown"), ("grpc_method", "unknown")];
    let with = |base: &[(&'static str, &'static str)], code: &'static str| {
        let mut v = base.to_vec();
        v.push(("grpc_code", code));
        v
    };
    assert_eq!(value(&text, &series("grpc_server_started_total", &unary)), 5.0);
    assert_eq!(value(&text, &series("grpc_server_handled_total", &with(&unary, "OK"))), 3.0);
    assert_eq!(value(&text, &series("grpc_server_handled_total", &with(&unary, "FailedPrecondition"))), 2.0);
    assert_eq!(value(&text, &series("grpc_server_msg_received_total", &unary)), 5.0);
    assert_eq!(value(&text, &series("grpc_server_msg_sent_total", &unary)), 3.0);
    assert_eq!(value(&text, &series("grpc_server_handling_seconds_count", &unary)), 5.0);
    assert_eq!(value(&text, &series("grpc_server_msg_sent_total", &other)), 5.0);
    assert_eq!(value(&text, &series("grpc_server_handled_total", &with(&other, "OK"))), 1.0);
    assert_eq!(value(&text, &series("grpc_server_handled_total", &with(&junk, "Unimplemented"))), 1.0);
    assert!(!text.contains("random.v1.Junk") && !text.contains("Whatever"), "client input never becomes a label");
    assert_eq!(value(&text, &series("switchboard_local_responses_total", &[("reason", "no_route")])), 1.0);

    let port = b.addr.port().to_string();
    let backend_name = format!("127.0.0.1:{port}");
    let rb = [("route", "default/echo"), ("backend", backend_name.as_str())];
    let rbc = |code| [rb[0], rb[1], ("grpc_code", code)];
    assert_eq!(value(&text, &series("switchboard_route_requests_total", &rb)), 6.0);
    assert_eq!(value(&text, &series("switchboard_route_responses_total", &rbc("OK"))), 4.0);
    assert_eq!(value(&text, &series("switchboard_route_responses_total", &rbc("FailedPrecondition"))), 2.0);
    assert_eq!(value(&text, &series("switchboard_backend_response_seconds_count", &rb)), 6.0);
    assert_eq!(value(&text, "switchboard_route_table_rules"), 2.0);
    assert_eq!(value(&text, "switchboard_active_streams"), 0.0);
}
