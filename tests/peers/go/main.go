// Command echo-server is a grpc-go (Debian's 1.33) server for switchboard.echo.v1.Echo, a real peer for
// switchboard's tests: it answers like the tonic test backend (tests/support/mod.rs), exposes grpc-go's
// connection-lifecycle options as flags, and serves counters as JSON for the tests to observe.
//
// stdout: `listening HOST:PORT`, then `stats HOST:PORT` when -stats is given. SIGTERM: GracefulStop, exit 0.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"log"
	"math"
	"net"
	"io/ioutil"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/grpclog"
	"google.golang.org/grpc/keepalive"
)

const maxMessage = 64 << 20

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "gRPC listen address (port 0: any free port)")
	statsAddr := flag.String("stats", "", "HTTP listen address of the JSON counters (empty: none)")
	name := flag.String("name", "go", "backend name, in x-backend and in replies")
	maxAge := flag.Duration("max-connection-age", 0, "keepalive.ServerParameters.MaxConnectionAge (0: grpc-go's default, infinite)")
	maxAgeGrace := flag.Duration("max-connection-age-grace", 0, "keepalive.ServerParameters.MaxConnectionAgeGrace (0: infinite)")
	minTime := flag.Duration("keepalive-min-time", 0, "keepalive.EnforcementPolicy.MinTime (unset: grpc-go's default, 5m)")
	permit := flag.Bool("permit-without-stream", false, "keepalive.EnforcementPolicy.PermitWithoutStream (grpc-go's default: false)")
	maxStreams := flag.Uint("max-concurrent-streams", 0, "grpc.MaxConcurrentStreams (0: grpc-go's default, unlimited)")
	tlsCert := flag.String("tls-cert", "", "serve TLS with this PEM certificate chain (with -tls-key)")
	tlsKey := flag.String("tls-key", "", "PEM private key of -tls-cert")
	tlsClientCA := flag.String("tls-client-ca", "", "require client certificates issued by this PEM CA bundle")
	flag.Parse()

	st := &stats{}
	grpclog.SetLoggerV2(newCountingLogger(st))
	e := &echo{name: *name, stats: st}

	opts := []grpc.ServerOption{
		grpc.CustomCodec(rawCodec{}),
		grpc.UnknownServiceHandler(e.handle),
		grpc.MaxRecvMsgSize(maxMessage),
		grpc.MaxSendMsgSize(maxMessage),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: *maxAge, MaxConnectionAgeGrace: *maxAgeGrace}),
	}
	// The enforcement policy is only passed when asked for, so that by default grpc-go applies its own.
	given := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if given["keepalive-min-time"] || given["permit-without-stream"] {
		opts = append(opts, grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: *minTime, PermitWithoutStream: *permit}))
	}
	if *maxStreams > 0 {
		if *maxStreams > math.MaxUint32 {
			log.Fatalf("-max-concurrent-streams %d is above 2^32-1", *maxStreams)
		}
		opts = append(opts, grpc.MaxConcurrentStreams(uint32(*maxStreams)))
	}
	if *tlsCert != "" {
		opts = append(opts, grpc.Creds(serverTLS(*tlsCert, *tlsKey, *tlsClientCA)))
	}
	server := grpc.NewServer(opts...)

	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("cannot listen on %s: %v", *listen, err)
	}
	fmt.Printf("listening %s\n", lis.Addr())
	if *statsAddr != "" {
		sl, err := net.Listen("tcp", *statsAddr)
		if err != nil {
			log.Fatalf("cannot listen on %s: %v", *statsAddr, err)
		}
		fmt.Printf("stats %s\n", sl.Addr())
		go st.serve(sl)
	}
	os.Stdout.Sync()

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	stopped := make(chan struct{})
	go func() {
		sig := <-stop
		log.Printf("%v: graceful stop", sig)
		start := time.Now()
		server.GracefulStop()
		log.Printf("graceful stop done in %v", time.Since(start))
		close(stopped)
	}()
	if err := server.Serve(countingListener{Listener: lis, stats: st}); err != nil {
		log.Fatalf("serve: %v", err)
	}
	<-stopped
}

// serverTLS is grpc-go's TLS transport (ALPN h2), verifying client certificates against clientCA when given.
func serverTLS(certFile, keyFile, clientCA string) credentials.TransportCredentials {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		log.Fatalf("-tls-cert/-tls-key: %v", err)
	}
	config := &tls.Config{Certificates: []tls.Certificate{cert}}
	if clientCA != "" {
		pem, err := ioutil.ReadFile(clientCA)
		if err != nil {
			log.Fatalf("-tls-client-ca: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			log.Fatalf("-tls-client-ca %s: no certificate", clientCA)
		}
		config.ClientCAs = pool
		config.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return credentials.NewTLS(config)
}
