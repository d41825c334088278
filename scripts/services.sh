#!/usr/bin/env bash
# Makes sure what the tests and the demo need is there: build packages, PostgreSQL, RabbitMQ,
# Redis, a Kafka-protocol broker (tansu), NATS with JetStream, the PgBouncer binary and the
# tests' Python packages (the CloudEvents SDK, the Standard Webhooks reference library). Arguments
# pick steps, e.g. `services.sh postgres rabbitmq`.
# Reuses a service that is already running; otherwise starts it, installing it from Debian's
# packages first when it is missing. Idempotent.
set -euo pipefail

log() { echo "services: $*" >&2; }

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

apt_updated=""
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ -z "$apt_updated" ]; then
    log "apt-get update"
    $SUDO apt-get update -qq
    apt_updated=1
  fi
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # name, seconds, command...
  local name=$1 seconds=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    if [ $SECONDS -ge $deadline ]; then log "$name did not come up within ${seconds}s"; return 1; fi
    sleep 0.5
  done
}

build_deps() {
  # rdkafka builds its bundled librdkafka with these.
  apt_install build-essential pkg-config libssl-dev zlib1g-dev
}

postgres() {
  if port_open 5432; then return 0; fi
  apt_install postgresql postgresql-client
  local version
  version=$(ls /etc/postgresql | sort -n | tail -1)
  log "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || $SUDO -u postgres pg_ctlcluster "$version" main start
  wait_for PostgreSQL 60 port_open 5432
  # A fresh cluster asks for passwords over TCP: give the test user the one the tests use.
  $SUDO -u postgres psql -qc "ALTER USER postgres PASSWORD 'postgres'" >/dev/null
}

rabbitmq() {
  if port_open 5672; then return 0; fi
  apt_install rabbitmq-server
  log "starting RabbitMQ"
  $SUDO rabbitmq-server -detached >/dev/null 2>&1 || true
  wait_for RabbitMQ 120 port_open 5672
  # The port opens before the broker accepts logins; wait for the app itself.
  $SUDO rabbitmqctl await_startup --timeout 120 >/dev/null
}

# Redis for the redis sink's tests on 127.0.0.1:6379 (nothing kept on disk). The tests also start
# private redis-server processes on free ports, so the binary must be on the PATH.
redis() {
  # openssl: the TLS test makes its certificates with it.
  apt_install redis-server openssl
  if port_open 6379; then return 0; fi
  log "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no >/dev/null
  wait_for Redis 30 port_open 6379
}

# PgBouncer for the connection-pooler tests: only the binary. Each test starts its own pgbouncer
# on a free port with a generated ini; the system service is never started.
pgbouncer() {
  # type -P: the binary, not this function of the same name.
  if type -P pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ]; then return 0; fi
  # policy-rc.d 101: keep apt from starting the packaged service.
  local policy=/usr/sbin/policy-rc.d created=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    created=1
  fi
  apt_install pgbouncer || { [ -n "$created" ] && $SUDO rm -f "$policy"; return 1; }
  [ -n "$created" ] && $SUDO rm -f "$policy"
  $SUDO systemctl disable --now pgbouncer >/dev/null 2>&1 || true
  log "installed $(/usr/sbin/pgbouncer --version | head -1)"
}

# A Kafka-protocol broker for the Kafka tests: tansu (Apache-2.0, from crates.io), in-memory
# storage, on 127.0.0.1:19092. Built once into the cache; skipped when KAFKA_BROKERS points at a
# real Kafka.
CACHE="${OUTBOX_CACHE_DIR:-$HOME/.cache/outbox-relay}"
TANSU_VERSION=0.6.0
TANSU_BIN="$CACHE/tools/bin/tansu"
KAFKA_PORT=19092

tansu_binary() {
  if [ -x "$TANSU_BIN" ] && [ "$(cat "$CACHE/tools/tansu.version" 2>/dev/null)" = "$TANSU_VERSION" ]; then
    return 0
  fi
  log "building tansu $TANSU_VERSION (once; about 20 minutes on 2 cores)"
  mkdir -p "$CACHE/tools"
  # --locked: newer dependency versions have broken tansu's build before.
  CARGO_TARGET_DIR="$CACHE/tansu-build" cargo install tansu --version "$TANSU_VERSION" --locked \
    --features dynostore --root "$CACHE/tools" >"$CACHE/tansu-install.log" 2>&1 \
    || { tail -30 "$CACHE/tansu-install.log" >&2; return 1; }
  echo "$TANSU_VERSION" >"$CACHE/tools/tansu.version"
}

kafka() {
  if [ -n "${KAFKA_BROKERS:-}" ]; then log "using Kafka at $KAFKA_BROKERS"; return 0; fi
  tansu_binary
  if port_open "$KAFKA_PORT"; then return 0; fi
  log "starting tansu on 127.0.0.1:$KAFKA_PORT"
  nohup "$TANSU_BIN" broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" --storage-engine memory://tansu/ \
    >"$CACHE/tansu.log" 2>&1 </dev/null &
  wait_for tansu 60 port_open "$KAFKA_PORT"
}

# NATS with JetStream on 127.0.0.1:4222 for the NATS sink tests; the tests start private
# nats-server instances (free ports, store dirs of their own) from the same binary.
NATS_PORT=4222
nats() {
  # openssl: the TLS test makes its own CA and server certificate.
  apt_install nats-server openssl
  if port_open "$NATS_PORT"; then return 0; fi
  local store="$CACHE/nats-store"
  mkdir -p "$store"
  log "starting nats-server with JetStream on 127.0.0.1:$NATS_PORT"
  nohup "$(command -v nats-server || echo /usr/sbin/nats-server)" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$store" \
    >"$CACHE/nats-server.log" 2>&1 </dev/null &
  wait_for nats-server 30 port_open "$NATS_PORT"
}

# Python packages the tests read messages with (tests/python-requirements.txt: the CloudEvents SDK,
# the Standard Webhooks library), in one venv of the cache. Installed again only when that file
# changed; packages installed by other means stay.
VENV="$CACHE/venv"
PYTHON_REQUIREMENTS="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/python-requirements.txt"

python_packages() {
  local stamp="$VENV/.requirements.sha256" want
  want="$(sha256sum "$PYTHON_REQUIREMENTS" | cut -d' ' -f1)"
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return 0; fi
  command -v python3 >/dev/null || apt_install python3
  # Debian's python3 creates venvs only with python3-venv (ensurepip) installed.
  python3 -c "import ensurepip" >/dev/null 2>&1 || apt_install python3-venv
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  log "installing tests/python-requirements.txt into $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$PYTHON_REQUIREMENTS"
  echo "$want" >"$stamp"
}

# The BullMQ worker the bullmq sink's tests read jobs with: the pinned `bullmq` npm package
# (tests/harness/bullmq/package.json and its lock file) in the cache. Installed again only when
# the lock file changed; needs Node.js and npm and nothing but the npm registry.
BULLMQ_DIR="$CACHE/bullmq"
BULLMQ_PACKAGE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/harness/bullmq"

bullmq() {
  local stamp="$BULLMQ_DIR/.lock.sha256" want
  want="$(sha256sum "$BULLMQ_PACKAGE/package-lock.json" | cut -d' ' -f1)"
  if [ -d "$BULLMQ_DIR/node_modules/bullmq" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return 0; fi
  command -v npm >/dev/null || apt_install nodejs npm
  mkdir -p "$BULLMQ_DIR"
  cp "$BULLMQ_PACKAGE/package.json" "$BULLMQ_PACKAGE/package-lock.json" "$BULLMQ_DIR/"
  log "installing the bullmq npm package into $BULLMQ_DIR"
  # No install scripts: msgpackr's optional native addon is not needed (it falls back to JS).
  (cd "$BULLMQ_DIR" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  echo "$want" >"$stamp"
}

# The Standard Webhooks reference library (http sink tests) is one of those packages.
webhooks() { python_packages; }

for what in "${@:-build_deps postgres rabbitmq redis pgbouncer kafka nats python_packages bullmq}"; do
  for step in $what; do "$step"; done
done
