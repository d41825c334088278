-- The session holding the leader lock of this database, if any. $1: the lock key.
-- A role sees the address and start of another role's session only with pg_read_all_stats (or the
-- privileges of that role); otherwise PostgreSQL shows them as NULL, and so does this query.
SELECT coalesce(a.application_name, '') AS application_name, a.pid,
       CASE WHEN a.backend_start IS NOT NULL THEN coalesce(host(a.client_addr), 'local') END AS client,
       a.backend_start
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND ((l.classid::bigint << 32) | l.objid::bigint) = $1
