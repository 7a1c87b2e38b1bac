//! `switchboard.echo.v1.Echo` backend for `make bench` and for manual testing.
//!
//! Every reply and every error carries the `x-backend: NAME` header (and
//! `EchoReply.backend = NAME`), so routing through a proxy can be checked. A
//! request with `x-fail: CODE` metadata fails with that gRPC code; a value that
//! is not a non-zero number gives `INTERNAL`.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::pin::Pin;

use clap::Parser;
use futures_util::{Stream, StreamExt};
use pb::echo_server::{Echo, EchoServer};
use pb::{EchoReply, EchoRequest};
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::{Code, Request, Response, Status, Streaming};

pub mod pb {
    tonic::include_proto!("switchboard.echo.v1");
}

#[derive(Parser)]
#[command(about = "Echo backend for the switchboard benchmark")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "BENCH_BACKEND_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Name reported in the `x-backend` header and in `EchoReply.backend`.
    #[arg(long, env = "BENCH_BACKEND_NAME", default_value = "echo")]
    name: String,
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

struct Backend {
    name: String,
    header: AsciiMetadataValue,
}

impl Backend {
    /// Fails the call when the client asked for it with `x-fail`.
    fn check_fail(&self, md: &MetadataMap) -> Result<(), Status> {
        let Some(value) = md.get("x-fail") else {
            return Ok(());
        };
        let code = value
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .filter(|c| *c != 0)
            .map_or(Code::Internal, Code::from_i32);
        let mut status = Status::new(code, "failure requested by x-fail");
        status.metadata_mut().insert("x-backend", self.header.clone());
        Err(status)
    }

    fn respond<T>(&self, msg: T) -> Response<T> {
        let mut resp = Response::new(msg);
        resp.metadata_mut().insert("x-backend", self.header.clone());
        resp
    }

    fn reply(&self, payload: Vec<u8>, received: u32) -> EchoReply {
        EchoReply { payload, backend: self.name.clone(), received }
    }
}

#[tonic::async_trait]
impl Echo for Backend {
    async fn unary(&self, req: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        self.check_fail(req.metadata())?;
        let msg = req.into_inner();
        Ok(self.respond(self.reply(msg.payload, 1)))
    }

    type ServerStreamStream = ReplyStream;

    async fn server_stream(&self, req: Request<EchoRequest>) -> Result<Response<ReplyStream>, Status> {
        self.check_fail(req.metadata())?;
        let EchoRequest { payload, count } = req.into_inner();
        let name = self.name.clone();
        let replies = (0..count.max(1))
            .map(move |_| Ok(EchoReply { payload: payload.clone(), backend: name.clone(), received: 1 }));
        Ok(self.respond(Box::pin(futures_util::stream::iter(replies)) as ReplyStream))
    }

    async fn client_stream(&self, req: Request<Streaming<EchoRequest>>) -> Result<Response<EchoReply>, Status> {
        self.check_fail(req.metadata())?;
        let mut inbound = req.into_inner();
        let mut last = self.reply(Vec::new(), 0);
        while let Some(msg) = inbound.message().await? {
            last.payload = msg.payload;
            last.received += 1;
        }
        Ok(self.respond(last))
    }

    type BidiStreamStream = ReplyStream;

    async fn bidi_stream(&self, req: Request<Streaming<EchoRequest>>) -> Result<Response<ReplyStream>, Status> {
        self.check_fail(req.metadata())?;
        let name = self.name.clone();
        let echoed = req
            .into_inner()
            .map(move |msg| msg.map(|m| EchoReply { payload: m.payload, backend: name.clone(), received: 1 }));
        Ok(self.respond(Box::pin(echoed) as ReplyStream))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let backend = Backend { header: args.name.parse()?, name: args.name };
    eprintln!("bench_backend {} listening on {}", backend.name, args.listen);
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(EchoServer::new(backend))
        .serve_with_shutdown(args.listen, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
