-- $1: how many, oldest first
SELECT id, topic, key, attempts, last_error, dead_lettered_at
FROM outbox.dead_letters ORDER BY id LIMIT $1
