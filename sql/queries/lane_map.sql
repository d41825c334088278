-- Who relays which lane, from the advisory locks of this database: this session's pid, the pids
-- of every relay in lanes mode (each holds the shared lock 7340020100 while its session lives),
-- the lanes this session owns and the lanes any session owns (lock 7340020000 + lane).
WITH locks AS MATERIALIZED (
    SELECT l.pid, l.classid::bigint * 4294967296 + l.objid::bigint AS key
    FROM pg_locks l
    WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
)
SELECT pg_backend_pid() AS me,
       ARRAY(SELECT pid FROM locks WHERE key = 7340020100 ORDER BY pid) AS members,
       ARRAY(SELECT (key - 7340020000)::integer FROM locks
             WHERE key BETWEEN 7340020000 AND 7340020063 AND pid = pg_backend_pid()
             ORDER BY 1) AS owned,
       ARRAY(SELECT (key - 7340020000)::integer FROM locks
             WHERE key BETWEEN 7340020000 AND 7340020063
             ORDER BY 1) AS taken
