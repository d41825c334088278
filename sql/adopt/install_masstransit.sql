-- Installs (or brings up to date) the capture of MassTransit's OutboxMessage table: $1 table.
SELECT outbox.adopt_masstransit($1)
