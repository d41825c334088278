-- A bus outbox's OutboxState row as MassTransit's bus outbox saves it with EF Core: $1 OutboxId.
INSERT INTO "OutboxState" ("OutboxId", "Created", "Delivered", "LastSequenceNumber", "LockId", "RowVersion")
VALUES ($1, now(), NULL, NULL, '00000000-0000-0000-0000-000000000000', NULL)
