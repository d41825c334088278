-- The group roles of migration 0003 that do not exist (the role running migrate could not create them).
SELECT r AS role FROM unnest(ARRAY['outbox_writer', 'outbox_relay']) AS r
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r)
ORDER BY r
