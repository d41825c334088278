-- The relay's own session settings, set once when it connects.
-- Server-side keepalives, so PostgreSQL frees the leader lock within seconds when this host
-- vanishes without closing the connection.
SET tcp_keepalives_idle = 10;
SET tcp_keepalives_interval = 5;
SET tcp_keepalives_count = 3;
-- No parallel query: the planner misjudges the (nearly always empty) deferred-events index and
-- started two workers for every claim, 8.8 ms instead of 0.7 ms per batch of 500 on a 1M backlog.
SET max_parallel_workers_per_gather = 0;
-- Custom plans only: a generic plan is made once, for the table as it was (often young and small,
-- so a sequential scan looks cheap), and kept as the table grows. Tried again with sequential
-- scans off: after an ANALYZE the generic plan read `fresh` through the primary key, and the claim
-- test with a long snapshot elsewhere (tests/integration/claim.rs) read 540k pending-index
-- entries for its second 20k events instead of about as many as for the first. A custom plan sees
-- the table's size at each claim and the actual floor and transaction ids.
-- The steady claim (claim_steady.sql) is the exception: it is written to stay on its indexes
-- under any plan, and planning it afresh would cost ~3x running it, so the session switches to
-- force_generic_plan before it and back before claim.sql (src/outbox/session/claim.rs); the other
-- statements look events up by id and plan alike in either mode.
SET plan_cache_mode = force_custom_plan;
-- No JIT: the claim's estimated cost can pass `jit_above_cost` on a large outbox, and compiling
-- it took ~70-130 ms per claim, against ~5 ms to run it.
SET jit = off;
-- No wait for the WAL flush at each commit: the session writes only the relay's own records
-- (marks, attempts, dead letters); a PostgreSQL crash may lose its last ~0.6 s of them, and those
-- events are published again, as after any crash (at-least-once). At 1,000 events/s with a 2 ms
-- linger it took the claim from 1.96 to 1.35 ms and a mark from 0.86 to 0.26 ms.
SET synchronous_commit = off;
