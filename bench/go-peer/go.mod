module apicast-sidecar-proxy/bench/go-peer

go 1.19
