package main

// switchboard.echo.v1.Echo answered through grpc.UnknownServiceHandler with raw bytes, with the semantics of
// the tonic test backend in tests/support/mod.rs.

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const echoService = "/switchboard.echo.v1.Echo/"

// rawCodec passes message bytes through untouched, so no generated code is needed.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec cannot marshal %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec cannot unmarshal into %T", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

func (rawCodec) String() string { return "proto" }

type echo struct {
	name  string
	stats *stats
}

// handle is the UnknownServiceHandler: it counts the call and dispatches on the method name.
func (e *echo) handle(_ interface{}, stream grpc.ServerStream) error {
	atomic.AddInt64(&e.stats.callsStarted, 1)
	atomic.AddInt64(&e.stats.callsActive, 1)
	defer func() {
		if stream.Context().Err() != nil {
			atomic.AddInt64(&e.stats.callsCancelled, 1)
		}
		atomic.AddInt64(&e.stats.callsActive, -1)
		atomic.AddInt64(&e.stats.callsFinished, 1)
	}()

	method, _ := grpc.MethodFromServerStream(stream)
	if !strings.HasPrefix(method, echoService) {
		return status.Errorf(codes.Unimplemented, "unknown method %s", method)
	}
	md, _ := metadata.FromIncomingContext(stream.Context())
	stream.SetTrailer(metadata.Pairs("x-backend", e.name))
	if err := e.controls(stream.Context(), md); err != nil {
		return err
	}
	switch strings.TrimPrefix(method, echoService) {
	case "Unary":
		return e.unary(stream, md)
	case "ServerStream":
		return e.serverStream(stream, md)
	case "ClientStream":
		return e.clientStream(stream, md)
	case "BidiStream":
		return e.bidiStream(stream, md)
	default:
		return status.Errorf(codes.Unimplemented, "unknown method %s", method)
	}
}

// controls applies `x-sleep-ms: N` (cut short by a cancel) and then `x-fail: CODE`.
func (e *echo) controls(ctx context.Context, md metadata.MD) error {
	if ms, err := strconv.Atoi(first(md, "x-sleep-ms")); err == nil {
		t := time.NewTimer(time.Duration(ms) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	if code, err := strconv.Atoi(first(md, "x-fail")); err == nil {
		// No headers were sent, so grpc-go answers trailers-only, as tonic does.
		grpc.SetTrailer(ctx, metadata.Pairs("x-detail-bin", string([]byte{0, 1, 2, 255})))
		return status.Errorf(codes.Code(code), "failed by %s as asked", e.name)
	}
	return nil
}

func first(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

// sendHeader sends `x-backend` and every `x-echo-*` request entry back as response headers.
func (e *echo) sendHeader(stream grpc.ServerStream, md metadata.MD) error {
	out := metadata.Pairs("x-backend", e.name)
	for k, vs := range md {
		if strings.HasPrefix(k, "x-echo-") {
			out[k] = append(out[k], vs...)
		}
	}
	return stream.SendHeader(out)
}

func (e *echo) reply(stream grpc.ServerStream, r echoReply) error {
	b := r.encode()
	return stream.SendMsg(&b)
}

func recvRequest(stream grpc.ServerStream) (echoRequest, error) {
	var b []byte
	if err := stream.RecvMsg(&b); err != nil {
		return echoRequest{}, err
	}
	req, err := decodeEchoRequest(b)
	if err != nil {
		return req, status.Errorf(codes.InvalidArgument, "cannot decode EchoRequest: %v", err)
	}
	return req, nil
}

// noRead is the `x-no-read: 1` control of the streaming-request methods: headers go out at once, then the
// handler never reads and waits for the call to be cancelled (a stalled backend, for cancel propagation).
func (e *echo) noRead(stream grpc.ServerStream, md metadata.MD) (bool, error) {
	if first(md, "x-no-read") != "1" {
		return false, nil
	}
	if err := e.sendHeader(stream, md); err != nil {
		return true, err
	}
	<-stream.Context().Done()
	return true, status.FromContextError(stream.Context().Err()).Err()
}

func (e *echo) unary(stream grpc.ServerStream, md metadata.MD) error {
	req, err := recvRequest(stream)
	if err != nil {
		return err
	}
	if err := e.sendHeader(stream, md); err != nil {
		return err
	}
	return e.reply(stream, echoReply{payload: req.payload, backend: e.name, received: 1})
}

func (e *echo) serverStream(stream grpc.ServerStream, md metadata.MD) error {
	req, err := recvRequest(stream)
	if err != nil {
		return err
	}
	if err := e.sendHeader(stream, md); err != nil {
		return err
	}
	for i := uint64(0); i < req.count; i++ {
		if err := e.reply(stream, echoReply{payload: req.payload, backend: e.name, received: i}); err != nil {
			return err
		}
	}
	return nil
}

// clientStream answers once at the end: received = how many came, payload = the last one's first 64 bytes,
// backend = "NAME:BYTES" with BYTES the payload bytes received in all.
func (e *echo) clientStream(stream grpc.ServerStream, md metadata.MD) error {
	if stalled, err := e.noRead(stream, md); stalled {
		return err
	}
	var n, bytes uint64
	var last []byte
	for {
		req, err := recvRequest(stream)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		n++
		bytes += uint64(len(req.payload))
		last = req.payload
	}
	if len(last) > 64 {
		last = last[:64]
	}
	if err := e.sendHeader(stream, md); err != nil {
		return err
	}
	return e.reply(stream, echoReply{payload: last, backend: fmt.Sprintf("%s:%d", e.name, bytes), received: n})
}

// bidiStream answers each request as it comes, received = its index from 0.
func (e *echo) bidiStream(stream grpc.ServerStream, md metadata.MD) error {
	if stalled, err := e.noRead(stream, md); stalled {
		return err
	}
	if err := e.sendHeader(stream, md); err != nil {
		return err
	}
	for i := uint64(0); ; i++ {
		req, err := recvRequest(stream)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := e.reply(stream, echoReply{payload: req.payload, backend: e.name, received: i}); err != nil {
			return err
		}
	}
}
