//! The examples with real parts on loopback: the struct proxy's handler served by switchboard's `Server`
//! between a tonic chat backend and tonic (or raw HTTP/2) clients, and the frame proxy's setup in front of
//! an echo backend.

mod support;

// `main` and its flags belong to the example binaries.
#[allow(dead_code)]
#[path = "../examples/frame_proxy.rs"]
mod frame_proxy;
#[allow(dead_code)]
#[path = "../examples/struct_proxy.rs"]
mod struct_proxy;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::Stream;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status, Streaming};

use struct_proxy::common::framing::{encode, Decoder};
use struct_proxy::pb::chat_client::ChatClient;
use struct_proxy::pb::chat_server::{Chat, ChatServer};
use struct_proxy::pb::ChatMessage;
use struct_proxy::{ChatFilter, Rule, CONVERSE};
use switchboard::proxy::{shutdown_signal, Server, ShutdownTrigger};
use switchboard::table::EndpointAddr;

/// The proxy's message limit in these tests.
const MAX_MESSAGE: usize = 1024;

/// What the chat backend received.
#[derive(Debug, Default)]
struct Seen {
    texts: Mutex<Vec<String>>,
}

/// Echoes every message with user "server"; after the client's half-close it says goodbye with a count.
/// Controls: `x-fail: CODE` metadata fails the call at once; text `boom` fails it mid-stream with ABORTED;
/// text `big N` is answered with N bytes of text.
#[derive(Clone, Default)]
struct ChatBackend {
    seen: Arc<Seen>,
}

type Replies = Pin<Box<dyn Stream<Item = Result<ChatMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Chat for ChatBackend {
    type ConverseStream = Replies;

    async fn converse(&self, request: Request<Streaming<ChatMessage>>) -> Result<Response<Replies>, Status> {
        if let Some(code) = request.metadata().get("x-fail").and_then(|v| v.to_str().ok()?.parse::<i32>().ok()) {
            return Err(Status::new(code.into(), "failed by the backend as asked"));
        }
        let mut input = request.into_inner();
        let seen = self.seen.clone();
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let mut received = 0;
            loop {
                let reply = match input.message().await {
                    Ok(Some(m)) => {
                        received += 1;
                        seen.texts.lock().unwrap().push(m.text.clone());
                        if m.text == "boom" {
                            Err(Status::aborted("boom, as asked"))
                        } else if let Some(n) = m.text.strip_prefix("big ") {
                            Ok(server("x".repeat(n.parse().unwrap())))
                        } else {
                            Ok(server(m.text))
                        }
                    }
                    Ok(None) => {
                        let _ = tx.send(Ok(server(format!("bye after {received}")))).await;
                        return;
                    }
                    Err(_) => return,
                };
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn server(text: impl Into<String>) -> ChatMessage {
    ChatMessage { user: "server".into(), text: text.into() }
}

fn alice(text: impl Into<String>) -> ChatMessage {
    ChatMessage { user: "alice".into(), text: text.into() }
}

/// A chat backend and the struct proxy in front of it.
struct ChatSetup {
    proxy: SocketAddr,
    seen: Arc<Seen>,
    _shutdown: ShutdownTrigger,
}

impl ChatSetup {
    async fn start() -> Self {
        Self::with_limit(MAX_MESSAGE).await
    }

    async fn with_limit(max_message: usize) -> Self {
        let seen = Arc::new(Seen::default());
        let backend = listener().await;
        let backend_addr = backend.local_addr().unwrap();
        let svc = ChatServer::new(ChatBackend { seen: seen.clone() });
        tokio::spawn(
            tonic::transport::Server::builder().add_service(svc).serve_with_incoming(TcpListenerStream::new(backend)),
        );
        let (proxy, _shutdown) = struct_proxy_for(backend_addr, max_message).await;
        Self { proxy, seen, _shutdown }
    }

    async fn client(&self) -> ChatClient<Channel> {
        ChatClient::new(support::channel(self.proxy).await)
    }

    fn backend_saw(&self) -> Vec<String> {
        self.seen.texts.lock().unwrap().clone()
    }
}

/// The struct proxy's handler, served by switchboard's `Server` on loopback: bans "spam", masks "darn".
async fn struct_proxy_for(backend: SocketAddr, max_message: usize) -> (SocketAddr, ShutdownTrigger) {
    let rule = Rule::new(&["spam".into()], &["darn".into()]);
    let filter = ChatFilter::new(&EndpointAddr::Socket(backend), rule, max_message);
    let listener = listener().await;
    let addr = listener.local_addr().unwrap();
    let (trigger, shutdown) = shutdown_signal();
    tokio::spawn(Server::new(filter).serve(listener, shutdown));
    (addr, trigger)
}

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// Fails the test instead of hanging it.
async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f).await.expect("timed out")
}

async fn next(replies: &mut Streaming<ChatMessage>) -> ChatMessage {
    within(replies.message()).await.unwrap().expect("a reply")
}

#[tokio::test]
async fn banned_messages_are_dropped_words_masked_and_order_kept() {
    let chat = ChatSetup::start().await;
    let (tx, rx) = mpsc::channel(64);
    let mut replies = chat.client().await.converse(ReceiverStream::new(rx)).await.unwrap().into_inner();

    // One at a time: each reply arrives while the call is open, so the proxy streams rather than buffers.
    tx.send(alice("hello")).await.unwrap();
    assert_eq!(next(&mut replies).await, server("hello"));
    tx.send(alice("buy Spam now")).await.unwrap();
    tx.send(alice("darn this DARN thing")).await.unwrap();
    assert_eq!(next(&mut replies).await, server("*** this *** thing"), "the banned message was dropped");

    // A burst, with banned messages among the others, then the half-close.
    let mut expected = Vec::new();
    for i in 0..40 {
        let text = if i % 7 == 3 { format!("spam {i}") } else { format!("message {i}, darn") };
        if i % 7 != 3 {
            expected.push(server(format!("message {i}, ***")));
        }
        tx.send(alice(text)).await.unwrap();
    }
    drop(tx);
    let forwarded = 2 + expected.len();
    expected.push(server(format!("bye after {forwarded}")));

    let mut rest = Vec::new();
    while let Some(m) = within(replies.message()).await.expect("status OK") {
        rest.push(m);
    }
    assert_eq!(rest, expected);
    let trailers = within(replies.trailers()).await.unwrap().expect("trailers arrive");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");

    let saw = chat.backend_saw();
    assert_eq!(saw.len(), forwarded);
    assert!(saw.iter().all(|t| !t.to_lowercase().contains("spam") && !t.to_lowercase().contains("darn")), "{saw:?}");
}

#[tokio::test]
async fn a_half_close_right_away_still_gets_the_whole_response() {
    let chat = ChatSetup::start().await;
    let messages = tokio_stream::iter([alice("one"), alice("spam"), alice("two")]);
    let replies = within(chat.client().await.converse(messages)).await.unwrap().into_inner();
    let replies: Vec<_> = within(tokio_stream::StreamExt::collect::<Vec<_>>(replies)).await;
    let replies: Vec<_> = replies.into_iter().map(Result::unwrap).collect();
    assert_eq!(replies, [server("one"), server("two"), server("bye after 2")]);
}

#[tokio::test]
async fn backend_error_statuses_are_relayed() {
    let chat = ChatSetup::start().await;
    let mut client = chat.client().await;

    // Before any message: a trailers-only response.
    let mut request = Request::new(tokio_stream::iter([alice("hi")]));
    request.metadata_mut().insert("x-fail", "7".parse().unwrap());
    let err = within(client.converse(request)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(err.message(), "failed by the backend as asked");

    // Mid-stream: trailers after a reply.
    let (tx, rx) = mpsc::channel(8);
    let mut replies = client.converse(ReceiverStream::new(rx)).await.unwrap().into_inner();
    tx.send(alice("hi")).await.unwrap();
    assert_eq!(next(&mut replies).await, server("hi"));
    tx.send(alice("boom")).await.unwrap();
    let err = within(replies.message()).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::Aborted, "boom, as asked"));
}

#[tokio::test]
async fn oversized_messages_end_the_call_with_resource_exhausted() {
    let chat = ChatSetup::start().await;
    let mut client = chat.client().await;

    // From the client: refused by its prefix and never forwarded.
    let (tx, rx) = mpsc::channel(8);
    let mut replies = client.converse(ReceiverStream::new(rx)).await.unwrap().into_inner();
    tx.send(alice("small")).await.unwrap();
    assert_eq!(next(&mut replies).await, server("small"));
    tx.send(alice("y".repeat(2 * MAX_MESSAGE))).await.unwrap();
    let err = within(replies.message()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("larger than the limit of 1024 bytes"), "{}", err.message());
    assert_eq!(chat.backend_saw(), ["small"]);

    // From the backend.
    let mut replies = client.converse(tokio_stream::iter([alice("big 2000")])).await.unwrap().into_inner();
    let err = within(replies.message()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
}

/// A raw HTTP/2 backend for one call, to act and observe below gRPC.
async fn raw_backend<F, Fut>(serve: F) -> SocketAddr
where
    F: FnOnce(h2::RecvStream, h2::server::SendResponse<Bytes>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = listener().await;
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut conn = h2::server::handshake(tcp).await.unwrap();
        let (request, respond) = conn.accept().await.unwrap().unwrap();
        // Accepting drives the connection; nothing else is expected on it.
        tokio::spawn(async move { while conn.accept().await.is_some() {} });
        serve(request.into_body(), respond).await;
    });
    addr
}

fn grpc_headers() -> http::Response<()> {
    http::Response::builder().header("content-type", "application/grpc").body(()).unwrap()
}

#[tokio::test]
async fn messages_larger_than_the_flow_control_windows_pass_both_ways() {
    // 2 MiB: twice the 1 MiB stream windows, within the default 4 MiB limits of tonic and the proxy.
    let chat = ChatSetup::with_limit(4 << 20).await;
    let text = "darn ".repeat(400 << 10);
    let mut replies =
        within(chat.client().await.converse(tokio_stream::iter([alice(text)]))).await.unwrap().into_inner();
    let reply = next(&mut replies).await;
    assert_eq!(reply.text, "*** ".repeat(400 << 10));
    assert_eq!(next(&mut replies).await, server("bye after 1"));
}

#[tokio::test]
async fn a_client_reset_cancels_the_backend_stream() {
    let (ended, how) = tokio::sync::oneshot::channel();
    let backend = raw_backend(|mut body, mut respond| async move {
        let mut send = respond.send_response(grpc_headers(), false).unwrap();
        let first = body.data().await.unwrap().unwrap();
        send.send_data(first, false).unwrap();
        let _ = ended.send(body.data().await.map(|r| r.map_err(|e| e.reason())));
    })
    .await;
    let (proxy, _shutdown) = struct_proxy_for(backend, MAX_MESSAGE).await;

    let (response, mut send) = raw_open(proxy).await;
    send.send_data(encode(&alice("hi")), false).unwrap();
    let (_, mut body) = within(response).await.unwrap().into_parts();
    assert_eq!(within(body.data()).await.unwrap().unwrap(), encode(&alice("hi")));
    send.send_reset(h2::Reason::CANCEL);
    let how = within(how).await.unwrap();
    assert!(matches!(how, Some(Err(Some(h2::Reason::CANCEL)))), "{how:?}");
}

#[tokio::test]
async fn a_backend_reset_is_relayed_to_the_client() {
    let backend = raw_backend(|_body, mut respond| async move {
        let mut send = respond.send_response(grpc_headers(), false).unwrap();
        send.send_reset(h2::Reason::INADEQUATE_SECURITY);
    })
    .await;
    let (proxy, _shutdown) = struct_proxy_for(backend, MAX_MESSAGE).await;
    let mut client = ChatClient::new(support::channel(proxy).await);
    let (_tx, rx) = mpsc::channel(1);
    let result = within(async { client.converse(ReceiverStream::new(rx)).await?.into_inner().message().await }).await;
    // INADEQUATE_SECURITY is PERMISSION_DENIED by the gRPC spec's reset mapping.
    assert_eq!(result.unwrap_err().code(), Code::PermissionDenied);
}

/// Starts a `Converse` call over a raw HTTP/2 connection, to control its frames.
async fn raw_open(proxy: SocketAddr) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let request = http::Request::post(format!("http://{proxy}{CONVERSE}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    client.ready().await.unwrap().send_request(request, false).unwrap()
}

/// A raw HTTP/2 call to the proxy with DATA frames exactly as given; the reply messages and the status.
async fn raw_call(proxy: SocketAddr, frames: Vec<Bytes>) -> (Vec<ChatMessage>, String, String) {
    let (response, mut send) = raw_open(proxy).await;
    for frame in frames {
        send.send_data(frame, false).unwrap();
    }
    send.send_data(Bytes::new(), true).unwrap();
    let (head, mut body) = response.await.unwrap().into_parts();
    let status = |h: &http::HeaderMap| {
        let get = |k| h.get(k).map(|v: &http::HeaderValue| v.to_str().unwrap().to_owned()).unwrap_or_default();
        (get("grpc-status"), get("grpc-message"))
    };
    if body.is_end_stream() {
        let (code, message) = status(&head.headers);
        return (Vec::new(), code, message);
    }
    let mut decoder = Decoder::new(MAX_MESSAGE);
    let mut replies = Vec::new();
    while let Some(data) = body.data().await {
        let data = data.unwrap();
        decoder.push(&data);
        let _ = body.flow_control().release_capacity(data.len());
        while let Some(m) = decoder.decode().unwrap() {
            replies.push(prost::Message::decode(m).unwrap());
        }
    }
    let (code, message) = status(&body.trailers().await.unwrap().expect("trailers"));
    (replies, code, message)
}

#[tokio::test]
async fn messages_are_found_across_and_within_data_frames() {
    let chat = ChatSetup::start().await;
    let wire: Vec<u8> = ["split across frames", "spam", "two in", "one frame, darn"]
        .into_iter()
        .flat_map(|t| encode(&alice(t)).to_vec())
        .collect();
    // Three-byte frames split every prefix and message; then the last two messages share one frame.
    let first_two = encode(&alice("split across frames")).len() + encode(&alice("spam")).len();
    let mut frames: Vec<Bytes> = wire[..first_two].chunks(3).map(Bytes::copy_from_slice).collect();
    frames.push(Bytes::copy_from_slice(&wire[first_two..]));

    let (replies, code, _) = within(raw_call(chat.proxy, frames)).await;
    assert_eq!(code, "0");
    let texts: Vec<_> = replies.into_iter().map(|m| m.text).collect();
    assert_eq!(texts, ["split across frames", "two in", "one frame, ***", "bye after 3"]);
}

#[tokio::test]
async fn compressed_messages_are_refused() {
    let chat = ChatSetup::start().await;
    let mut message = encode(&alice("zipped")).to_vec();
    message[0] = 1;
    let (replies, code, message) = within(raw_call(chat.proxy, vec![message.into()])).await;
    assert!(replies.is_empty());
    assert_eq!((code.as_str(), message.as_str()), ("12", "compressed messages not supported"));
    assert!(chat.backend_saw().is_empty());
}

#[tokio::test]
async fn other_methods_are_unimplemented() {
    let chat = ChatSetup::start().await;
    let mut echo = support::client(chat.proxy).await;
    let err = within(echo.unary(support::req(b"x"))).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
}

#[tokio::test]
async fn the_frame_proxy_setup_routes_calls_and_serves_health() {
    let backend = support::backend("alpha").await;
    let yaml = frame_proxy::catch_all(&backend.addr.ip().to_string(), backend.addr.port());
    let routes = frame_proxy::routes(Path::new("inline"), &yaml).unwrap();
    let listener = listener().await;
    let addr = listener.local_addr().unwrap();
    let (_shutdown, signal) = shutdown_signal();
    tokio::spawn(frame_proxy::server(routes).serve(listener, signal));

    let reply = within(support::client(addr).await.unary(support::req(b"hello"))).await.unwrap();
    assert_eq!(reply.metadata().get("x-backend").unwrap(), "alpha");
    assert_eq!(reply.into_inner().payload, b"hello");

    let mut health = tonic_health::pb::health_client::HealthClient::new(support::channel(addr).await);
    let check = tonic_health::pb::HealthCheckRequest { service: String::new() };
    let status = within(health.check(check)).await.unwrap().into_inner().status;
    assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
}
