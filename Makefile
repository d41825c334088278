# outbox-relay: `make help` lists the targets.
SHELL := /bin/bash
export OUTBOX_CACHE_DIR ?= $(HOME)/.cache/outbox-relay
export CARGO_TARGET_DIR ?= $(OUTBOX_CACHE_DIR)/target
BIN := $(CARGO_TARGET_DIR)/release/outbox-relay
DEMO_DB ?= outbox_demo
DEMO_DATABASE_URL ?= postgres://postgres:postgres@127.0.0.1:5432/$(DEMO_DB)

.PHONY: help services build test test-kafka lint demo bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

services: ## install/start what the tests need (build packages, PostgreSQL, RabbitMQ, Redis, NATS, tansu, pgbouncer, webhook library, bullmq worker)
	@bash scripts/services.sh

build: ## release build of the relay
	@bash scripts/services.sh build_deps
	cargo build --release --locked

# The Kafka tests find tansu (for brokers of their own) here; KAFKA_BROKERS points them at a real Kafka.
export TANSU_BIN ?= $(OUTBOX_CACHE_DIR)/tools/bin/tansu

test: services ## run every test: unit, integration on real PostgreSQL/RabbitMQ/Kafka-protocol, Helm chart
	cargo test --locked -- --nocapture
	@if [ -f tests/chart/run.sh ]; then bash tests/chart/run.sh; fi

test-kafka: services ## only the Kafka sink tests, against tansu or KAFKA_BROKERS
	cargo test --locked --test kafka -- --nocapture

lint: ## rustfmt and clippy, warnings are errors
	cargo fmt --all -- --check
	cargo clippy --locked --all-targets -- -D warnings
	@# The binary alone, without the features the dev-dependencies add: what `make build` ships.
	cargo check --locked --bin outbox-relay

demo: build ## migrate a local database, insert events and show them relayed
	@bash scripts/services.sh postgres
	@bash scripts/demo.sh "$(BIN)" "$(DEMO_DATABASE_URL)"

bench: services ## drain, steady state, latency, cost per sink against the local services; one table (not part of test)
	cargo build --release --locked
	KAFKA_BROKERS="$${KAFKA_BROKERS:-127.0.0.1:19092}" cargo bench --locked --bench relay
