#!/usr/bin/env bash
# The cost of adoption on the application's insert (docs/adoption.md, "What it costs"): pgbench
# writes rows as each framework writes them, with the capture trigger enabled and disabled, in
# alternated rounds, and as a writer of outbox.events would write the same event directly.
# Usage: scripts/adoption-cost.sh [seconds per pgbench round, 0: skip pgbench] [rounds]   (needs pgbench, psql and a
# built outbox-relay; TEST_DATABASE_URL as for the tests; creates and drops database adopt_cost).
set -euo pipefail
seconds=${1:-10}
rounds=${2:-3}
admin=${TEST_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}
url="${admin%/*}/adopt_cost"
relay=${OUTBOX_RELAY_BIN:-${CARGO_TARGET_DIR:-target}/debug/outbox-relay}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"; psql -q "$admin" -c "DROP DATABASE IF EXISTS adopt_cost WITH (FORCE)" >/dev/null' EXIT

psql -q "$admin" -c "DROP DATABASE IF EXISTS adopt_cost WITH (FORCE)" -c "CREATE DATABASE adopt_cost" >/dev/null
psql -q "$url" -f "$here/tests/integration/adopt/debezium.sql" -f "$here/tests/integration/adopt/masstransit.sql" >/dev/null
RUST_LOG=warn OUTBOX_DATABASE_URL=$url OUTBOX_ADOPT=debezium "$relay" migrate >/dev/null
RUST_LOG=warn OUTBOX_DATABASE_URL=$url OUTBOX_ADOPT=masstransit "$relay" migrate >/dev/null

# One event per transaction, as each writer writes it.
cat >"$work/debezium.sql" <<'SQL'
INSERT INTO public.outboxevent (id, aggregatetype, aggregateid, type, timestamp, payload)
VALUES (gen_random_uuid(), 'Order', (random() * 1000)::int::text, 'OrderCreated', now(),
        '{"orderId": 42, "customer": "c-17", "total": 99.5}');
SQL
cat >"$work/debezium_quarkus.sql" <<'SQL'
BEGIN;
INSERT INTO public.outboxevent (id, aggregatetype, aggregateid, type, timestamp, payload)
VALUES ('00000000-0000-0000-0000-000000000000'::uuid, 'Order', (random() * 1000)::int::text, 'OrderCreated', now(),
        '{"orderId": 42, "customer": "c-17", "total": 99.5}');
DELETE FROM public.outboxevent WHERE id = '00000000-0000-0000-0000-000000000000'::uuid;
COMMIT;
SQL
cat >"$work/masstransit.sql" <<'SQL'
BEGIN;
INSERT INTO "OutboxState" ("OutboxId", "Created", "LockId")
VALUES (gen_random_uuid(), now(), '00000000-0000-0000-0000-000000000000') RETURNING "OutboxId" AS outbox \gset
INSERT INTO "OutboxMessage" ("Body", "ContentType", "DestinationAddress", "Headers", "MessageId", "MessageType", "OutboxId", "SentTime")
VALUES ('{"messageId":"x","messageType":["urn:message:Contracts:OrderCreated"],"message":{"orderId":42}}',
        'application/vnd.masstransit+json', 'rabbitmq://localhost/Contracts:OrderCreated', '{}',
        gen_random_uuid(), 'urn:message:Contracts:OrderCreated', ':outbox', now())
RETURNING "SequenceNumber";
COMMIT;
SQL
cat >"$work/outbox_events.sql" <<'SQL'
INSERT INTO outbox.events (topic, key, payload, headers)
VALUES ('outbox.event.Order', (random() * 1000)::int::text, '{"orderId": 42, "customer": "c-17", "total": 99.5}',
        '{"type": "OrderCreated"}');
SQL

# The same events 100 to a transaction: commits no longer dominate, so the capture's per-row
# work shows (rows/s = transactions/s x 100).
cat >"$work/debezium_x100.sql" <<'SQL'
INSERT INTO public.outboxevent (id, aggregatetype, aggregateid, type, timestamp, payload)
SELECT gen_random_uuid(), 'Order', (random() * 1000)::int::text, 'OrderCreated', now(),
       '{"orderId": 42, "customer": "c-17", "total": 99.5}'
FROM generate_series(1, 100);
SQL
cat >"$work/masstransit_x100.sql" <<'SQL'
BEGIN;
INSERT INTO "OutboxState" ("OutboxId", "Created", "LockId")
VALUES (gen_random_uuid(), now(), '00000000-0000-0000-0000-000000000000') RETURNING "OutboxId" AS outbox \gset
INSERT INTO "OutboxMessage" ("Body", "ContentType", "DestinationAddress", "Headers", "MessageId", "MessageType", "OutboxId", "SentTime")
SELECT '{"messageId":"x","messageType":["urn:message:Contracts:OrderCreated"],"message":{"orderId":42}}',
       'application/vnd.masstransit+json', 'rabbitmq://localhost/Contracts:OrderCreated', '{}',
       gen_random_uuid(), 'urn:message:Contracts:OrderCreated', ':outbox', now()
FROM generate_series(1, 100);
COMMIT;
SQL
cat >"$work/outbox_events_x100.sql" <<'SQL'
INSERT INTO outbox.events (topic, key, payload, headers)
SELECT 'outbox.event.Order', (random() * 1000)::int::text, '{"orderId": 42, "customer": "c-17", "total": 99.5}',
       '{"type": "OrderCreated"}'
FROM generate_series(1, 100);
SQL

tps() { pgbench -n -c 2 -j 2 -T "$seconds" -f "$1" "$url" 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p'; }
reset() {
    psql -q "$url" -c 'TRUNCATE outbox.events, public.outboxevent, "OutboxMessage", "OutboxState"' \
        -c 'VACUUM ANALYZE outbox.events' >/dev/null
}
capture() { psql -q "$url" -c "ALTER TABLE public.outboxevent $1 TRIGGER outbox_adopt_capture" \
    -c "ALTER TABLE \"OutboxMessage\" $1 TRIGGER outbox_adopt_capture" \
    -c "ALTER TABLE \"OutboxState\" $1 TRIGGER outbox_adopt_forget" >/dev/null; }

# rows/s: one row per transaction, or 100 (x100).
rows() { case $1 in *_x100) awk -v t="$2" 'BEGIN { printf "%.0f", t * 100 }' ;; *) printf '%.0f' "$2" ;; esac; }
printf '%-6s %-28s %10s\n' round writer rows/s
for round in $(seq 1 "$rounds"); do
    [ "$seconds" -gt 0 ] || break
    for state in DISABLE ENABLE; do
        capture "$state"
        label=$([ "$state" = ENABLE ] && echo "captured" || echo "plain")
        for script in debezium debezium_quarkus masstransit debezium_x100 masstransit_x100; do
            reset
            printf '%-6s %-28s %10s\n' "$round" "$script/$label" "$(rows $script "$(tps "$work/$script.sql")")"
        done
    done
    for script in outbox_events outbox_events_x100; do
        reset
        printf '%-6s %-28s %10s\n' "$round" "$script" "$(rows $script "$(tps "$work/$script.sql")")"
    done
done

# The capture's own time per row, with no commit and no concurrency in the way: one session
# inserts 10,000 rows in one statement, capture disabled and enabled, alternated.
per_row() {
    psql -q "$url" -v ON_ERROR_STOP=1 >/dev/null <<SQL
ALTER TABLE public.outboxevent $1 TRIGGER outbox_adopt_capture;
ALTER TABLE "OutboxMessage" $1 TRIGGER outbox_adopt_capture;
SQL
    reset
    psql -X -q "$url" -v ON_ERROR_STOP=1 <<'SQL' | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | paste -sd' '
\timing on
INSERT INTO public.outboxevent (id, aggregatetype, aggregateid, type, timestamp, payload)
SELECT gen_random_uuid(), 'Order', (n % 1000)::text, 'OrderCreated', now(),
       '{"orderId": 42, "customer": "c-17", "total": 99.5}'
FROM generate_series(1, 10000) AS n;
BEGIN;
INSERT INTO "OutboxState" ("OutboxId", "Created", "LockId")
VALUES ('11111111-1111-1111-1111-111111111111', now(), '00000000-0000-0000-0000-000000000000');
INSERT INTO "OutboxMessage" ("Body", "ContentType", "DestinationAddress", "Headers", "MessageId", "MessageType", "OutboxId", "SentTime")
SELECT '{"messageId":"x","messageType":["urn:message:Contracts:OrderCreated"],"message":{"orderId":42}}',
       'application/vnd.masstransit+json', 'rabbitmq://localhost/Contracts:OrderCreated', '{}',
       gen_random_uuid(), 'urn:message:Contracts:OrderCreated', '11111111-1111-1111-1111-111111111111', now()
FROM generate_series(1, 10000);
COMMIT;
INSERT INTO outbox.events (topic, key, payload, headers)
SELECT 'outbox.event.Order', (n % 1000)::text, '{"orderId": 42, "customer": "c-17", "total": 99.5}',
       '{"type": "OrderCreated"}'
FROM generate_series(1, 10000) AS n;
SQL
}
echo
echo "one session, 10,000 rows per statement: us per row (debezium insert, masstransit insert, outbox.events insert)"
for round in $(seq 1 "$rounds"); do
    for state in DISABLE ENABLE; do
        read -r -a ms <<<"$(per_row "$state")"
        # ms[0] debezium, ms[1] BEGIN, ms[2] state, ms[3] masstransit, ms[4] COMMIT, ms[5] outbox.events
        awk -v r="$round" -v s="$state" -v d="${ms[0]}" -v m="${ms[3]}" -v o="${ms[5]}" \
            'BEGIN { printf "%-6s capture %-8s debezium %6.1f  masstransit %6.1f  outbox.events %6.1f\n", r, s, d / 10, m / 10, o / 10 }'
    done
done

# As the frameworks write: one row per INSERT statement (EF Core, Debezium's Quarkus extension),
# 5,000 statements in one transaction of one session.
per_statement() {
    psql -q "$url" -v ON_ERROR_STOP=1 >/dev/null <<SQL
ALTER TABLE public.outboxevent $1 TRIGGER outbox_adopt_capture;
ALTER TABLE "OutboxMessage" $1 TRIGGER outbox_adopt_capture;
SQL
    reset
    psql -X -q "$url" -v ON_ERROR_STOP=1 <<'SQL' | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | paste -sd' '
\timing on
DO $$
BEGIN
    FOR n IN 1 .. 5000 LOOP
        INSERT INTO public.outboxevent (id, aggregatetype, aggregateid, type, timestamp, payload)
        VALUES (gen_random_uuid(), 'Order', (n % 1000)::text, 'OrderCreated', now(),
                '{"orderId": 42, "customer": "c-17", "total": 99.5}');
    END LOOP;
END
$$;
DO $$
DECLARE
    outbox uuid := gen_random_uuid();
BEGIN
    INSERT INTO "OutboxState" ("OutboxId", "Created", "LockId")
    VALUES (outbox, now(), '00000000-0000-0000-0000-000000000000');
    FOR n IN 1 .. 5000 LOOP
        INSERT INTO "OutboxMessage" ("Body", "ContentType", "DestinationAddress", "Headers", "MessageId", "MessageType", "OutboxId", "SentTime")
        VALUES ('{"messageId":"x","messageType":["urn:message:Contracts:OrderCreated"],"message":{"orderId":42}}',
                'application/vnd.masstransit+json', 'rabbitmq://localhost/Contracts:OrderCreated', '{}',
                gen_random_uuid(), 'urn:message:Contracts:OrderCreated', outbox, now());
    END LOOP;
END
$$;
DO $$
BEGIN
    FOR n IN 1 .. 5000 LOOP
        INSERT INTO outbox.events (topic, key, payload, headers)
        VALUES ('outbox.event.Order', (n % 1000)::text, '{"orderId": 42, "customer": "c-17", "total": 99.5}',
                '{"type": "OrderCreated"}');
    END LOOP;
END
$$;
SQL
}
echo
echo "one session, one row per statement: us per row (debezium insert, masstransit insert, outbox.events insert)"
for round in $(seq 1 "$rounds"); do
    for state in DISABLE ENABLE; do
        read -r -a ms <<<"$(per_statement "$state")"
        awk -v r="$round" -v s="$state" -v d="${ms[0]}" -v m="${ms[1]}" -v o="${ms[2]}" \
            'BEGIN { printf "%-6s capture %-8s debezium %6.1f  masstransit %6.1f  outbox.events %6.1f\n", r, s, d / 5, m / 5, o / 5 }'
    done
done
