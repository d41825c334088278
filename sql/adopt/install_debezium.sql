-- Installs (or brings up to date) the capture of a Debezium outbox table: $1 table, $2 topic template.
SELECT outbox.adopt_debezium($1, $2)
