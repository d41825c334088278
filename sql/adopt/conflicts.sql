-- Evidence that MassTransit's own delivery service runs beside the relay (sql/adopt/masstransit.sql):
-- bus outbox messages deleted by someone else and, with $1, OutboxState rows it marked.
SELECT table_name, evidence, rows, detected_at, last_seen, usename, application_name, client_addr
FROM outbox.masstransit_conflicts($1)
