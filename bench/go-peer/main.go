// The Go peers of the benchmark (bench/bench.mjs): what a Go engineer would
// put in place of the sidecar, net/http/httputil's ReverseProxy through the
// same proxy to the same TLS origin, stdlib only. Like bench/floor.mjs, no
// feature beyond forwarding and a 502.
//
// PEER_UPSTREAM (https://backend.test:PORT), PEER_PROXY (http://user:pass@host:port;
// Go's Transport sends Basic Proxy-Authorization with each CONNECT from its
// userinfo), PEER_CA (PEM to trust for the origin), PEER_MODE:
//   - seed: http.DefaultTransport's settings, as the prior-art Go sidecar has
//     them. MaxIdleConnsPerHost is 2, so under concurrency most connections
//     are closed after one request and a new tunnel is opened for the next.
//   - tuned: the pool sized for the load (64 kept idle, at most 64 open, as
//     the floor's ProxyAgent), HTTP/1.1 only, and the upstream request not
//     cancelled with the client's (as the floor's is not). In Go until
//     golang/go#59017 was fixed (Debian's 1.19 among them), a dial runs
//     under the context of the request that started it: when that request
//     is served by a connection freed meanwhile and returns, the tunnel being
//     opened for it is torn down in its TLS handshake, and the pool never
//     fills. The pool settings alone, on Debian's Go 1.19, open about one
//     tunnel per request from a cold start at concurrency 64.
//
// Prints {"port":N} on stdout once it listens on 127.0.0.1. GET
// /.peer/tunnels answers the number of connections dialled to the proxy
// (one CONNECT each), for the bench's CONNECTs column.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("go-peer: ")
	upstream := mustURL("PEER_UPSTREAM")
	proxy := mustURL("PEER_PROXY")
	mode := os.Getenv("PEER_MODE")

	var tunnels atomic.Int64
	transport, err := newTransport(mode, proxy, os.Getenv("PEER_CA"), &tunnels)
	if err != nil {
		log.Fatal(err)
	}

	forward := &httputil.ReverseProxy{
		Director: func(req *http.Request) {
			req.URL.Scheme = upstream.Scheme
			req.URL.Host = upstream.Host
			req.Host = upstream.Host
			// No User-Agent from the client: send none, not Go's own.
			if _, ok := req.Header["User-Agent"]; !ok {
				req.Header.Set("User-Agent", "")
			}
		},
		Transport:    transport,
		ErrorHandler: badGateway(),
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/.peer/tunnels" {
			fmt.Fprintln(w, tunnels.Load())
			return
		}
		if mode == "tuned" {
			// plainWriter hides http.CloseNotifier, with which ReverseProxy
			// would cancel the request anyway when the handler returns.
			forward.ServeHTTP(plainWriter{w}, r.WithContext(detached{r.Context()}))
			return
		}
		forward.ServeHTTP(w, r)
	})

	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	// As the floor's keepAliveTimeout: the load tool's connections stay open between runs.
	server := &http.Server{Handler: handler, IdleTimeout: 60 * time.Second, ReadHeaderTimeout: 10 * time.Second}
	fmt.Printf("{\"port\":%d}\n", listener.Addr().(*net.TCPAddr).Port)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = server.Shutdown(shutdown)
	}()
	if err := server.Serve(listener); err != nil && err != http.ErrServerClosed {
		log.Fatal(err)
	}
	transport.CloseIdleConnections()
}

func mustURL(name string) *url.URL {
	u, err := url.Parse(os.Getenv(name))
	if err != nil || u.Host == "" {
		log.Fatalf("%s must be an absolute URL, not %q", name, os.Getenv(name))
	}
	return u
}

// newTransport clones http.DefaultTransport, as the seed does, and in tuned
// mode sizes its pool for the bench's concurrency.
func newTransport(mode string, proxy *url.URL, caFile string, tunnels *atomic.Int64) (*http.Transport, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("PEER_CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("PEER_CA %s holds no PEM certificate", caFile)
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = http.ProxyURL(proxy)
	t.TLSClientConfig = &tls.Config{RootCAs: roots}
	// With a proxy, DialContext dials the proxy: one call, one tunnel.
	dial := t.DialContext
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		tunnels.Add(1)
		return dial(ctx, network, addr)
	}
	switch mode {
	case "seed":
	case "tuned":
		t.MaxIdleConns = 64
		t.MaxIdleConnsPerHost = 64
		t.MaxConnsPerHost = 64
		t.IdleConnTimeout = 90 * time.Second
		t.ForceAttemptHTTP2 = false
	default:
		return nil, fmt.Errorf("PEER_MODE must be seed or tuned, not %q", mode)
	}
	return t, nil
}

// badGateway answers 502 to a request that could not be forwarded. Only the
// first failure is logged: under tunnel churn there may be thousands, and
// the bench counts them from the answers.
func badGateway() func(http.ResponseWriter, *http.Request, error) {
	var failures atomic.Int64
	return func(w http.ResponseWriter, r *http.Request, err error) {
		// The client left (the load tool stops with every connection busy): no one reads the answer.
		if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		if n := failures.Add(1); n == 1 {
			log.Printf("forwarding failed (further failures are not logged): %v", err)
		}
		w.WriteHeader(http.StatusBadGateway)
	}
}

// detached carries a request's values without its cancellation or deadline
// (context.WithoutCancel, before Go 1.21 had it).
type detached struct{ context.Context }

func (detached) Deadline() (time.Time, bool) { return time.Time{}, false }
func (detached) Done() <-chan struct{}       { return nil }
func (detached) Err() error                  { return nil }

// plainWriter is an http.ResponseWriter and nothing more. The origin's
// answers carry a Content-Length, so ReverseProxy has no need to flush.
type plainWriter struct{ http.ResponseWriter }
