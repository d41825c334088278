-- Debezium's outbox table as its documentation creates it (the outbox event router's
-- expected layout; Debezium Quarkus's extension generates the same columns, plus the optional
-- `tracingspancontext`).
CREATE TABLE public.outboxevent (
    id                 uuid         NOT NULL,
    aggregatetype      varchar(255) NOT NULL,
    aggregateid        varchar(255) NOT NULL,
    type               varchar(255) NOT NULL,
    timestamp          timestamp    NOT NULL,
    payload            jsonb,
    tracingspancontext varchar(256),
    PRIMARY KEY (id)
);
