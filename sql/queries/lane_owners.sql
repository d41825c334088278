-- The lane map for `status`: each session that owns lanes, with its name and the lanes it owns.
-- A session of another role shows its address and start only to a role with pg_read_all_stats.
SELECT a.application_name, l.pid, a.backend_start,
       array_agg((l.classid::bigint * 4294967296 + l.objid::bigint - 7340020000)::integer
                 ORDER BY l.objid) AS lanes
FROM pg_locks l
JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid::bigint * 4294967296 + l.objid::bigint BETWEEN 7340020000 AND 7340020063
GROUP BY a.application_name, l.pid, a.backend_start
ORDER BY min(l.objid)
