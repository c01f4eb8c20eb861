# domi — the two commands a new user runs are `make run` and `make test`.
# Both install what a fresh Debian/Ubuntu machine lacks (`make setup`).

SHELL := /bin/bash
CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup run test lint fmt clean

## setup: install system packages the build and the tests need, only when missing
setup:
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
	@missing=""; \
	command -v protoc  >/dev/null || missing="$$missing protobuf-compiler"; \
	command -v etcd    >/dev/null || missing="$$missing etcd-server"; \
	command -v etcdctl >/dev/null || missing="$$missing etcd-client"; \
	if [ -n "$$missing" ]; then \
		echo "make setup: installing$$missing"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing </dev/null; \
	fi

## run: the quick start — a server and a client node in one process (static membership, no etcd)
run: setup
	$(CARGO) run --release --example pingpong

## test: every test: unit, property, integration, examples
test: setup
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc

## lint: formatting check and clippy with warnings as errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
