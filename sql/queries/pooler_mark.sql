-- Connection-pooler probe, first step: the server process of this session, and a random token set
-- as a session-level custom setting. Both survive only as long as the session does.
SELECT pg_backend_pid()::text,
       set_config('outbox_relay.pooler_probe', md5(random()::text || clock_timestamp()::text), false)
