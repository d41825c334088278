-- The tables whose rows are captured into outbox.events: the capture triggers `migrate` installed
-- for OUTBOX_ADOPT, the framework (from the capture function's comment) and whether a DBA
-- disabled the trigger.
SELECT format('%I.%I', n.nspname, c.relname) AS table_name,
       coalesce(substring(obj_description(t.tgfoid, 'pg_proc') FROM 'adoption \(([a-z]+)\)'), '') AS framework,
       t.tgenabled <> 'D' AS enabled
FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE t.tgname = 'outbox_adopt_capture'
ORDER BY 1
