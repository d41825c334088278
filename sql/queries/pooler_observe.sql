-- Connection-pooler probe: which server process runs this session, and the probe token it holds
-- (NULL when none was set in this session).
SELECT pg_backend_pid()::text, current_setting('outbox_relay.pooler_probe', true)
