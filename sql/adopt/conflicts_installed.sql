-- Whether MassTransit's adoption installed its guard in this database (sql/adopt/masstransit.sql).
SELECT to_regprocedure('outbox.masstransit_conflicts(boolean)') IS NOT NULL AS installed
