package main

// Hand-written protobuf for proto/echo.proto: the Debian grpc-go 1.33 build ships no protowire, and two small
// messages do not justify generated code.

import (
	"errors"
	"fmt"
)

// echoRequest is switchboard.echo.v1.EchoRequest.
type echoRequest struct {
	payload []byte // field 1
	count   uint64 // field 2
}

// echoReply is switchboard.echo.v1.EchoReply.
type echoReply struct {
	payload  []byte // field 1
	backend  string // field 2
	received uint64 // field 3
}

const (
	wireVarint  = 0
	wireFixed64 = 1
	wireBytes   = 2
	wireFixed32 = 5
)

var errTruncated = errors.New("truncated protobuf message")

func readVarint(b []byte) (uint64, int, error) {
	var v uint64
	for i := 0; i < len(b) && i < 10; i++ {
		v |= uint64(b[i]&0x7f) << (7 * uint(i))
		if b[i] < 0x80 {
			return v, i + 1, nil
		}
	}
	return 0, 0, errTruncated
}

func appendVarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func decodeEchoRequest(b []byte) (echoRequest, error) {
	var req echoRequest
	for len(b) > 0 {
		key, n, err := readVarint(b)
		if err != nil {
			return req, err
		}
		b = b[n:]
		field, wire := key>>3, key&7
		switch wire {
		case wireVarint:
			v, n, err := readVarint(b)
			if err != nil {
				return req, err
			}
			b = b[n:]
			if field == 2 {
				req.count = v
			}
		case wireBytes:
			l, n, err := readVarint(b)
			if err != nil {
				return req, err
			}
			b = b[n:]
			if uint64(len(b)) < l {
				return req, errTruncated
			}
			if field == 1 {
				req.payload = append([]byte(nil), b[:l]...)
			}
			b = b[l:]
		case wireFixed64, wireFixed32:
			size := 8
			if wire == wireFixed32 {
				size = 4
			}
			if len(b) < size {
				return req, errTruncated
			}
			b = b[size:]
		default:
			return req, fmt.Errorf("unsupported protobuf wire type %d", wire)
		}
	}
	return req, nil
}

func (r echoReply) encode() []byte {
	b := make([]byte, 0, len(r.payload)+len(r.backend)+24)
	if len(r.payload) > 0 {
		b = appendVarint(b, 1<<3|wireBytes)
		b = appendVarint(b, uint64(len(r.payload)))
		b = append(b, r.payload...)
	}
	if r.backend != "" {
		b = appendVarint(b, 2<<3|wireBytes)
		b = appendVarint(b, uint64(len(r.backend)))
		b = append(b, r.backend...)
	}
	if r.received != 0 {
		b = appendVarint(b, 3<<3|wireVarint)
		b = appendVarint(b, r.received)
	}
	return b
}
