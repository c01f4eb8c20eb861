# domi — the two commands a new user runs are `make run` and `make test`.
# Both install what a fresh Debian/Ubuntu machine lacks (`make setup`).

SHELL := /bin/bash
CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup setup-peers run test bench bench-peers profile-one-way scale etcd chaos fuzz lint fmt clean

ETCD_PORT ?= 2379

## setup: install system packages the build and the tests need, only when missing
setup:
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
	@missing=""; \
	command -v protoc  >/dev/null || missing="$$missing protobuf-compiler"; \
	command -v etcd    >/dev/null || missing="$$missing etcd-server"; \
	command -v etcdctl >/dev/null || missing="$$missing etcd-client"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v ip      >/dev/null || missing="$$missing iproute2"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v chromium     >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
		echo "make setup: installing$$missing"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing </dev/null; \
	fi

## setup-peers: what `make bench-peers` needs (ZeroMQ, NATS server)
setup-peers: setup
	@missing=""; \
	[ -e /usr/include/zmq.h ] || missing="$$missing libzmq3-dev"; \
	command -v pkg-config  >/dev/null || missing="$$missing pkg-config"; \
	command -v nats-server >/dev/null || missing="$$missing nats-server"; \
	if [ -n "$$missing" ]; then \
		echo "make setup-peers: installing$$missing"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing </dev/null; \
	fi

## run: the quick start — a server and a client node in one process (static membership, no etcd)
run: setup
	$(CARGO) run --release --example pingpong

## test: every test: unit, property, integration, examples, and a quick bench run
test: setup
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc
	$(CARGO) run -q -p domi-bench -- --quick --reps 1 --out target/bench-quick
	$(CARGO) run -q -p domi-bench -- --quick --one-way-only 64 --reps 1 --out target/bench-quick-one-way >/dev/null
	$(CARGO) run -q -p domi-bench -- cluster --nodes 128 --kill 12 --churn-secs 10 --churn-rate 2 --ttl 10 --check --out target/scale-128

## bench: throughput, latency and memory against same-run baselines -> target/bench/
bench: setup
	$(CARGO) build --release -p domi-bench
	./target/release/domi-bench --reps 3 --out target/bench
	./target/release/domi-bench scale | tee target/bench/scale.json
	$(CARGO) bench -p domi-core --bench hot_paths -- --warm-up-time 1 --measurement-time 3 | tee target/bench/micro.txt

## scale: a real cluster of 1024 nodes (processes) on this machine -> target/scale/ (about 10 minutes; `make scale NODES=256` for fewer)
scale: setup
	$(CARGO) build --release -p domi-bench
	./target/release/domi-bench cluster --nodes $(or $(NODES),1024) --out target/scale

## profile-one-way: where a one-way message's CPU time goes on each side, in ns per message (needs perf; PAYLOAD=64) -> target/profile-one-way/
profile-one-way: setup
	./benches/profile-one-way.sh $(or $(PAYLOAD),64)

## bench-peers: the same workloads against ZeroMQ and NATS, alternating -> target/bench-peers/
bench-peers: setup-peers
	$(CARGO) build --release --manifest-path benches/peers/Cargo.toml
	$(CARGO) build --release -p domi-bench
	./target/release/domi-bench --reps 3 --peers-only --peers benches/peers/target/release/domi-peers --out target/bench-peers

## chaos: fault injection under load (SIGKILL, etcd restart, etcd leader kill, pause, freeze, partition, SIGTERM, panics, overload), plaintext and TLS -> target/chaos.md, target/chaos-tls.md
CHAOS_PHASE_MS ?= 5000
chaos: setup
	CHAOS_PHASE_MS=$(CHAOS_PHASE_MS) $(CARGO) test --release --test chaos -- --nocapture

## fuzz: every cargo-fuzz target for FUZZ_SECONDS each (default 60)
FUZZ_SECONDS ?= 60
fuzz: setup
	FUZZ_SECONDS=$(FUZZ_SECONDS) ./fuzz/run.sh

## etcd: a local single-member etcd on 127.0.0.1:$(ETCD_PORT) (foreground; Ctrl-C stops it)
etcd: setup
	etcd --name domi-dev --data-dir target/etcd-data \
		--listen-client-urls http://127.0.0.1:$(ETCD_PORT) --advertise-client-urls http://127.0.0.1:$(ETCD_PORT) \
		--listen-peer-urls http://127.0.0.1:$$(( $(ETCD_PORT) + 1 )) \
		--initial-advertise-peer-urls http://127.0.0.1:$$(( $(ETCD_PORT) + 1 )) \
		--initial-cluster domi-dev=http://127.0.0.1:$$(( $(ETCD_PORT) + 1 ))

## lint: formatting check and clippy with warnings as errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
