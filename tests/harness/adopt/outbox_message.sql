-- One OutboxMessage as MassTransit's bus outbox saves it with EF Core (every column named):
-- $1 Body, $2 ContentType, $3 ConversationId, $4 DestinationAddress, $5 Headers, $6 MessageId,
-- $7 OutboxId. Returns the SequenceNumber it got.
INSERT INTO "OutboxMessage" ("Body", "ContentType", "ConversationId", "CorrelationId",
    "DestinationAddress", "EnqueueTime", "ExpirationTime", "FaultAddress", "Headers",
    "InboxConsumerId", "InboxMessageId", "InitiatorId", "MessageId", "MessageType",
    "OutboxId", "Properties", "RequestId", "ResponseAddress", "SentTime", "SourceAddress")
VALUES ($1, $2, $3, NULL, $4, NULL, NULL, NULL, $5, NULL, NULL, NULL, $6,
    'urn:message:Contracts:OrderCreated', $7, NULL, NULL, NULL, now(),
    'rabbitmq://localhost/shop_web_bus_abc')
RETURNING "SequenceNumber"
