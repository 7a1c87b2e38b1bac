//! The demo's client: one call of each kind through switchboard, plus one to a method no route knows,
//! printing which backend answered each.
#![forbid(unsafe_code)]

use clap::Parser;
use pb::echo_client::EchoClient;
use pb::EchoRequest;
use tonic::Request;

pub mod pb {
    tonic::include_proto!("switchboard.echo.v1");
}

#[derive(Parser)]
#[command(about = "Makes demo calls through switchboard")]
struct Args {
    /// switchboard's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:7500")]
    target: String,
}

fn msg(payload: &str, count: u32) -> EchoRequest {
    EchoRequest { payload: payload.as_bytes().to_vec(), count }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let channel = tonic::transport::Endpoint::from_shared(args.target)?.connect().await?;
    let mut echo = EchoClient::new(channel.clone());
    let row = |call: &str, backend: &str, detail: String| println!("  {call:<28} -> {backend:<6} {detail}");
    println!("calls through switchboard:");

    let r = echo.unary(msg("hello", 0)).await?.into_inner();
    row("Unary", &r.backend, format!("payload {:?}", String::from_utf8_lossy(&r.payload)));

    let mut canary = Request::new(msg("hello", 0));
    canary.metadata_mut().insert("x-canary", "true".parse()?);
    let r = echo.unary(canary).await?.into_inner();
    row("Unary (x-canary: true)", &r.backend, "header match wins over the service rule".into());

    let mut s = echo.server_stream(msg("tick", 3)).await?.into_inner();
    let mut n = 0;
    let mut backend = String::new();
    while let Some(r) = s.message().await? {
        n += 1;
        backend = r.backend;
    }
    row("ServerStream", &backend, format!("{n} replies"));

    let up = tokio_stream::iter((0..5).map(|i| msg(&format!("part {i}"), 0)));
    let r = echo.client_stream(up).await?;
    let routed_by = r.metadata().get("x-routed-by").map(|v| v.to_str().unwrap_or("").to_string()).unwrap_or_default();
    let r = r.into_inner();
    row("ClientStream", &r.backend, format!("{} messages received, x-routed-by: {routed_by}", r.received));

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut replies = echo.bidi_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    let mut backend = String::new();
    for i in 0..3 {
        tx.send(msg(&format!("ping {i}"), 0)).await?;
        backend = replies.message().await?.map(|r| r.backend).unwrap_or_default();
    }
    drop(tx);
    while replies.message().await?.is_some() {}
    row("BidiStream", &backend, "3 ping-pongs, then half-close".into());

    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let codec = tonic_prost::ProstCodec::<EchoRequest, pb::EchoReply>::default();
    let path = http::uri::PathAndQuery::from_static("/demo.v1.Unknown/Call");
    match grpc.unary(Request::new(msg("?", 0)), path, codec).await {
        Ok(_) => row("/demo.v1.Unknown/Call", "??", "unexpectedly answered".into()),
        Err(s) => row("/demo.v1.Unknown/Call", "-", format!("{:?}: {}", s.code(), s.message())),
    }
    Ok(())
}
