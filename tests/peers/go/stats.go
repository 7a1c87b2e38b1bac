package main

// What the tests observe: call and connection counters, and the count of grpc-go's "too many pings" log line,
// served as JSON over plain HTTP.

import (
	"encoding/json"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
)

type stats struct {
	callsStarted        int64
	callsFinished       int64
	callsCancelled      int64
	callsActive         int64
	connectionsAccepted int64
	connectionsOpen     int64
	tooManyPings        int64
}

func (s *stats) snapshot() map[string]int64 {
	return map[string]int64{
		"calls_started":        atomic.LoadInt64(&s.callsStarted),
		"calls_finished":       atomic.LoadInt64(&s.callsFinished),
		"calls_cancelled":      atomic.LoadInt64(&s.callsCancelled),
		"calls_active":         atomic.LoadInt64(&s.callsActive),
		"connections_accepted": atomic.LoadInt64(&s.connectionsAccepted),
		"connections_open":     atomic.LoadInt64(&s.connectionsOpen),
		"too_many_pings":       atomic.LoadInt64(&s.tooManyPings),
	}
}

// serve answers every GET with the counters as one JSON object.
func (s *stats) serve(l net.Listener) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(s.snapshot()); err != nil {
			log.Printf("stats: %v", err)
		}
	})
	if err := http.Serve(l, handler); err != nil {
		log.Printf("stats server stopped: %v", err)
	}
}

// countingListener counts the transport connections grpc-go accepts, and how many are still open.
type countingListener struct {
	net.Listener
	stats *stats
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	atomic.AddInt64(&l.stats.connectionsAccepted, 1)
	atomic.AddInt64(&l.stats.connectionsOpen, 1)
	return &countedConn{Conn: c, stats: l.stats}, nil
}

type countedConn struct {
	net.Conn
	stats *stats
	once  sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { atomic.AddInt64(&c.stats.connectionsOpen, -1) })
	return c.Conn.Close()
}

// tooManyPings is the text of grpc-go 1.33's log line when it ends a connection for ping abuse
// (internal/transport/http2_server.go, handlePing: `logger.Errorf("transport: Got too many pings from the
// client, closing the connection.")`, guarded by `logger.V(logLevel)` with logLevel 2).
const tooManyPings = "Got too many pings from the client"

// countingLogger is grpc-go's LoggerV2: everything goes to stderr, and the "too many pings" line is counted.
// V reports true up to level 2 because grpc-go only logs that line when V(2) holds; its default logger has
// verbosity 0 and would drop it.
type countingLogger struct {
	stats *stats
	out   *log.Logger
}

func newCountingLogger(s *stats) *countingLogger {
	return &countingLogger{stats: s, out: log.New(os.Stderr, "", log.LstdFlags|log.Lmicroseconds)}
}

func (l *countingLogger) emit(severity, msg string) {
	if strings.Contains(msg, tooManyPings) {
		atomic.AddInt64(&l.stats.tooManyPings, 1)
	}
	l.out.Output(3, severity+": "+msg)
}

func (l *countingLogger) Info(args ...interface{})   { l.emit("INFO", fmt.Sprint(args...)) }
func (l *countingLogger) Infoln(args ...interface{}) { l.emit("INFO", sprintln(args)) }
func (l *countingLogger) Infof(f string, args ...interface{}) {
	l.emit("INFO", fmt.Sprintf(f, args...))
}
func (l *countingLogger) Warning(args ...interface{})   { l.emit("WARNING", fmt.Sprint(args...)) }
func (l *countingLogger) Warningln(args ...interface{}) { l.emit("WARNING", sprintln(args)) }
func (l *countingLogger) Warningf(f string, args ...interface{}) {
	l.emit("WARNING", fmt.Sprintf(f, args...))
}
func (l *countingLogger) Error(args ...interface{})   { l.emit("ERROR", fmt.Sprint(args...)) }
func (l *countingLogger) Errorln(args ...interface{}) { l.emit("ERROR", sprintln(args)) }
func (l *countingLogger) Errorf(f string, args ...interface{}) {
	l.emit("ERROR", fmt.Sprintf(f, args...))
}
func (l *countingLogger) Fatal(args ...interface{})   { l.fatal(fmt.Sprint(args...)) }
func (l *countingLogger) Fatalln(args ...interface{}) { l.fatal(sprintln(args)) }
func (l *countingLogger) Fatalf(f string, args ...interface{}) {
	l.fatal(fmt.Sprintf(f, args...))
}
func (l *countingLogger) V(level int) bool { return level <= 2 }

func (l *countingLogger) fatal(msg string) {
	l.emit("FATAL", msg)
	os.Exit(1)
}

func sprintln(args []interface{}) string {
	return strings.TrimSuffix(fmt.Sprintln(args...), "\n")
}
