-- bench/yardstick.sql -- pgbench script of the yardstick: one durable
-- single-row INSERT per transaction (the commit costs a WAL flush, as each
-- executor transaction does). Run with 1 client, -T seconds.
\set v random(1, 1000000)
INSERT INTO pgwf_bench_insert (v) VALUES (:v);
