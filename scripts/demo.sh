#!/usr/bin/env bash
# `make demo`: migrate a local database, start the relay with the stdout sink, insert sample
# events in a transaction, show them relayed, show `status`, stop the relay gracefully.
set -euo pipefail
bin=$1
url=$2
admin_url="${url%/*}/postgres"
db="${url##*/}"
out=$(mktemp -d)
trap 'kill $relay 2>/dev/null || true; rm -rf "$out"' EXIT

psql "$admin_url" -qtc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 \
  || psql "$admin_url" -qc "CREATE DATABASE $db"
export OUTBOX_DATABASE_URL="$url" OUTBOX_SINK=stdout OUTBOX_HTTP_ADDR=127.0.0.1:${DEMO_HTTP_PORT:-9898}
"$bin" migrate

"$bin" run >"$out/events.jsonl" 2>"$out/relay.log" &
relay=$!

echo "== inserting 3 events in one transaction with an order update"
psql "$url" -q <<'SQL'
CREATE TABLE IF NOT EXISTS orders (id int PRIMARY KEY, status text);
INSERT INTO orders VALUES (42, 'new') ON CONFLICT (id) DO UPDATE SET status = 'new';
BEGIN;
UPDATE orders SET status = 'paid' WHERE id = 42;
INSERT INTO outbox.events (topic, key, payload) VALUES ('orders', '42', '{"type":"OrderPaid","order":42}');
SELECT outbox.enqueue('orders', '42', '{"type":"OrderShipped","order":42}'::jsonb, '{"traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}'::jsonb);
SELECT outbox.enqueue('invoices', '7', '{"type":"InvoiceIssued","invoice":7}'::jsonb);
COMMIT;
SQL

deadline=$((SECONDS + 30))
until [ "$(wc -l <"$out/events.jsonl")" -ge 3 ]; do
  if [ $SECONDS -ge $deadline ]; then echo "events did not arrive in 30s; relay log:"; cat "$out/relay.log"; exit 1; fi
  sleep 0.2
done
echo "== relayed (stdout sink, one JSON line per event)"
tail -n 3 "$out/events.jsonl"
# The relay records a delivery with its next claim or up to 50 ms later: wait for that, so that
# `status` shows the settled state rather than the moment between publishing and recording.
deadline=$((SECONDS + 10))
until "$bin" status --json | grep -Eq '"pending": 0(,|$)'; do
  if [ $SECONDS -ge $deadline ]; then echo "(deliveries not yet recorded: 'pending' counts them until they are)"; break; fi
  sleep 0.1
done
echo "== outbox-relay status"
"$bin" status
kill -TERM $relay
wait $relay
echo "== relay stopped gracefully (exit 0)"
