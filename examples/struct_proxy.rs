//! The seed's second handler mode, "decode and redirect": a proxy for `switchboard.chat.v1.Chat/Converse`
//! that decodes every message, drops or rewrites client messages by a rule, and forwards them re-encoded.
//! It plugs into switchboard through the same `Handler` trait as the frame forwarder.
//!
//! ```text
//! cargo run --example struct_proxy -- --backend 127.0.0.1:50051 --ban spam --mask darn
//! ```
#![forbid(unsafe_code)]

pub mod common;

use std::borrow::Cow;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use clap::Parser;
use h2::client::ResponseFuture;
use h2::{Reason, RecvStream, SendStream};
use http::{Request, Response, Uri};
use regex::Regex;
use switchboard::proxy::{
    shutdown_signal, BoxFuture, Endpoint, Error, Handler, PoolSettings, Pools, Responder, Server,
};
use switchboard::table::EndpointAddr;
use tokio::net::TcpListener;
use tonic::Code;

use common::framing::{self, MessageReader, ReadError};
use pb::ChatMessage;

/// The generated chat types.
pub mod pb {
    tonic::include_proto!("switchboard.chat.v1");
}

/// The one method this proxy serves.
pub const CONVERSE: &str = "/switchboard.chat.v1.Chat/Converse";

#[derive(Parser)]
#[command(about = "A chat proxy that drops and rewrites messages, built on switchboard's Handler trait")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "STRUCT_PROXY_LISTEN", default_value = "127.0.0.1:50081")]
    listen: SocketAddr,
    /// The chat backend, as HOST:PORT.
    #[arg(long, env = "STRUCT_PROXY_BACKEND", default_value = "127.0.0.1:50051", value_parser = endpoint_addr)]
    backend: EndpointAddr,
    /// Drop client messages that contain this word (repeatable, or comma-separated).
    #[arg(long, env = "STRUCT_PROXY_BAN", value_delimiter = ',')]
    ban: Vec<String>,
    /// Replace this word by `***` in client messages (repeatable, or comma-separated).
    #[arg(long, env = "STRUCT_PROXY_MASK", value_delimiter = ',')]
    mask: Vec<String>,
    /// Largest message accepted in either direction, in bytes; a larger one ends the call with
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "STRUCT_PROXY_MAX_MESSAGE_SIZE", default_value_t = 4 << 20)]
    max_message_size: usize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::builder()
                .with_default_directive(tracing::Level::INFO.into())
                .from_env_lossy(),
        )
        .init();
    let args = Args::parse();
    let filter = ChatFilter::new(&args.backend, Rule::new(&args.ban, &args.mask), args.max_message_size);
    let listener = TcpListener::bind(args.listen).await?;
    let listener_addr = listener.local_addr()?;
    let (trigger, shutdown) = shutdown_signal();
    let serving = tokio::spawn(Server::new(filter).serve(listener, shutdown));
    tracing::info!(listen = %listener_addr, backend = %args.backend, "struct proxy serving");
    tokio::signal::ctrl_c().await?;
    trigger.trigger();
    serving.await??;
    Ok(())
}

fn endpoint_addr(s: &str) -> Result<EndpointAddr, String> {
    if let Ok(addr) = s.parse() {
        return Ok(EndpointAddr::Socket(addr));
    }
    let (host, port) = s.rsplit_once(':').ok_or("expected HOST:PORT")?;
    let port = port.parse().map_err(|_| format!("invalid port {port:?}"))?;
    Ok(EndpointAddr::Host { host: host.into(), port })
}

/// What happens to the messages clients send: those with a banned word are dropped, masked words become
/// `***`. Words match whole and regardless of case.
#[derive(Clone, Debug, Default)]
pub struct Rule {
    banned: Option<Regex>,
    masked: Option<Regex>,
}

impl Rule {
    /// A rule that drops messages containing any of `banned` and masks every word of `masked`.
    pub fn new(banned: &[String], masked: &[String]) -> Self {
        Self { banned: any_word(banned), masked: any_word(masked) }
    }

    /// The message to forward, or `None` to drop it.
    pub fn apply(&self, mut message: ChatMessage) -> Option<ChatMessage> {
        if self.banned.as_ref().is_some_and(|re| re.is_match(&message.text)) {
            return None;
        }
        if let Some(Cow::Owned(text)) = self.masked.as_ref().map(|re| re.replace_all(&message.text, "***")) {
            message.text = text;
        }
        Some(message)
    }
}

/// A pattern matching any of `words` as a whole word; `None` when there are none (an empty word would
/// match everywhere).
fn any_word(words: &[String]) -> Option<Regex> {
    let words: Vec<String> = words.iter().filter(|w| !w.is_empty()).map(|w| regex::escape(w)).collect();
    if words.is_empty() {
        return None;
    }
    Some(Regex::new(&format!(r"(?i)\b(?:{})\b", words.join("|"))).expect("escaped words form a valid pattern"))
}

/// The decode-and-redirect handler: relays `Converse` calls to one backend message by message, applying
/// the [`Rule`] to what clients send. Every other method is UNIMPLEMENTED.
pub struct ChatFilter {
    backend: Arc<Endpoint>,
    rule: Rule,
    max_message: usize,
}

/// How a call ended before its response completed.
enum Abort {
    /// The client reset its stream, or its connection failed.
    Client(Reason),
    /// The backend reset its stream; the client gets the same reset.
    BackendReset(Reason),
    /// The call ends with this status.
    Status(Error),
}

impl ChatFilter {
    /// A handler for `backend`, accepting messages of up to `max_message` bytes each way.
    pub fn new(backend: &EndpointAddr, rule: Rule, max_message: usize) -> Self {
        // The endpoint keeps its HTTP/2 connections open across calls and multiplexes calls on them.
        let backend = Pools::new(PoolSettings::default()).endpoint(backend);
        Self { backend, rule, max_message }
    }

    async fn converse(&self, request: Request<RecvStream>, respond: &mut Responder) -> Result<(), Error> {
        let (mut head, body) = request.into_parts();
        if head.uri.path() != CONVERSE {
            return Err(Error::NoRoute { method: head.uri.path().to_owned() });
        }
        if head.headers.get("grpc-encoding").is_some_and(|e| e != "identity") {
            return Err(message_status(&ReadError::Compressed));
        }
        // A peer compresses only what the other side accepts, and this proxy has to read every message.
        head.headers.remove("grpc-accept-encoding");
        // Messages are re-encoded, so a length would be wrong.
        head.headers.remove(http::header::CONTENT_LENGTH);
        head.uri = Uri::builder()
            .scheme("http")
            .authority(self.backend.authority().clone())
            .path_and_query(CONVERSE)
            .build()
            .expect("a valid URI");

        // The lease holds this call's stream slot on a pooled backend connection until the call ends.
        let lease = self.backend.lease().await?;
        let mut sender = lease.sender().ready().await.map_err(|e| self.upstream_error(e))?;
        let client_done = body.is_end_stream();
        let (response, mut to_backend) =
            sender.send_request(Request::from_parts(head, ()), client_done).map_err(|e| self.upstream_error(e))?;
        let mut from_client = MessageReader::new(body, self.max_message);

        let outcome = {
            let requests = self.requests(&mut from_client, &mut to_backend);
            let responses = self.responses(response, respond);
            tokio::pin!(requests, responses);
            let mut requests_open = !client_done;
            // The response decides when the call is over; the requests may finish earlier (half-close).
            loop {
                tokio::select! {
                    done = &mut requests, if requests_open => match done {
                        Ok(()) => requests_open = false,
                        Err(abort) => break Err(abort),
                    },
                    done = &mut responses => break done,
                }
            }
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(Abort::Client(reason)) => {
                tracing::debug!(?reason, "client went away; cancelling the backend stream");
                to_backend.send_reset(Reason::CANCEL);
                respond.reset(reason);
                Ok(())
            }
            Err(Abort::BackendReset(reason)) => {
                tracing::debug!(?reason, "backend reset the stream; relaying the reset");
                respond.reset(reason);
                Ok(())
            }
            Err(Abort::Status(e)) => {
                to_backend.send_reset(Reason::CANCEL);
                Err(e)
            }
        }
    }

    /// Client to backend: decode, apply the rule, re-encode, then relay the half-close.
    async fn requests(&self, from: &mut MessageReader, to: &mut SendStream<Bytes>) -> Result<(), Abort> {
        while let Some(message) = from.message::<ChatMessage>().await.map_err(client_read_error)? {
            let Some(message) = self.rule.apply(message) else { continue };
            if framing::send_message(to, &message).await.is_err() {
                // The backend stopped reading (it answered or reset): the response says how the call ends.
                return Ok(());
            }
        }
        let trailers = from.trailers().await.map_err(|e| Abort::Client(reason(&e)))?;
        let _ = framing::finish(to, trailers);
        Ok(())
    }

    /// Backend to client: headers, each message decoded and re-encoded, then the trailers.
    async fn responses(&self, response: ResponseFuture, respond: &mut Responder) -> Result<(), Abort> {
        let response = tokio::select! {
            response = response => response.map_err(|e| self.backend_error(e))?,
            reason = poll_fn(|cx| respond.poll_reset(cx)) => return Err(Abort::Client(reason)),
        };
        let (mut head, recv) = response.into_parts();
        // As for the request: no compression, no length.
        head.headers.remove("grpc-accept-encoding");
        head.headers.remove(http::header::CONTENT_LENGTH);
        // HEADERS with END_STREAM is a trailers-only response (typically an error status): relay it as such.
        let end = recv.is_end_stream();
        respond.send_headers(Response::from_parts(head, ()), end).map_err(|e| Abort::Client(reason(&e)))?;
        if end {
            return Ok(());
        }
        let mut from_backend = MessageReader::new(recv, self.max_message);
        loop {
            let next = tokio::select! {
                next = from_backend.message::<ChatMessage>() => next,
                reason = poll_fn(|cx| respond.poll_reset(cx)) => return Err(Abort::Client(reason)),
            };
            let message = match next {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(ReadError::Stream(e)) => return Err(self.backend_error(e)),
                Err(e) => return Err(Abort::Status(message_status(&e))),
            };
            let to = respond.body().expect("headers were sent");
            framing::send_message(to, &message).await.map_err(|e| Abort::Client(reason(&e)))?;
        }
        let trailers = from_backend.trailers().await.map_err(|e| self.backend_error(e))?;
        framing::finish(respond.body().expect("headers were sent"), trailers).map_err(|e| Abort::Client(reason(&e)))?;
        respond.mark_done();
        Ok(())
    }

    fn upstream_error(&self, source: h2::Error) -> Error {
        Error::Upstream { endpoint: self.backend.addr().to_string(), source }
    }

    /// A backend's reset is relayed with its code (the client maps it per the gRPC spec); a failed connection
    /// becomes UNAVAILABLE.
    fn backend_error(&self, e: h2::Error) -> Abort {
        match e.reason() {
            Some(reason) if e.is_reset() && e.is_remote() => Abort::BackendReset(reason),
            _ => Abort::Status(self.upstream_error(e)),
        }
    }
}

impl Handler for ChatFilter {
    fn call<'a>(
        &'a self,
        request: Request<RecvStream>,
        respond: &'a mut Responder,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.converse(request, respond))
    }
}

fn client_read_error(e: ReadError) -> Abort {
    match e {
        ReadError::Stream(e) => Abort::Client(reason(&e)),
        e => Abort::Status(message_status(&e)),
    }
}

/// The status a call ends with when a message cannot be relayed: the one mapping for this proxy.
fn message_status(e: &ReadError) -> Error {
    let code = match e {
        ReadError::Compressed => Code::Unimplemented,
        ReadError::TooLarge { .. } => Code::ResourceExhausted,
        ReadError::InvalidFlag(_) | ReadError::Invalid(_) | ReadError::Truncated | ReadError::Stream(_) => {
            Code::Internal
        }
    };
    Error::Status { code, message: e.to_string() }
}

fn reason(e: &h2::Error) -> Reason {
    e.reason().unwrap_or(Reason::CANCEL)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(text: &str) -> ChatMessage {
        ChatMessage { user: "alice".into(), text: text.into() }
    }

    fn rule() -> Rule {
        Rule::new(&["spam".into()], &["darn".into(), "heck".into()])
    }

    #[test]
    fn banned_words_drop_the_message_whole_word_any_case() {
        assert_eq!(rule().apply(msg("buy SPAM now")), None);
        assert_eq!(rule().apply(msg("spam")), None);
        assert_eq!(rule().apply(msg("spamalot is a musical")), Some(msg("spamalot is a musical")));
    }

    #[test]
    fn masked_words_become_stars() {
        assert_eq!(rule().apply(msg("darn it, Heck!")), Some(msg("*** it, ***!")));
        assert_eq!(rule().apply(msg("darned")), Some(msg("darned")));
        assert_eq!(rule().apply(msg("")), Some(msg("")));
    }

    #[test]
    fn empty_words_match_nothing() {
        let rule = Rule::new(&[String::new()], &[String::new()]);
        assert_eq!(rule.apply(msg("hello")), Some(msg("hello")));
        assert_eq!(Rule::default().apply(msg("spam")), Some(msg("spam")));
    }
}
