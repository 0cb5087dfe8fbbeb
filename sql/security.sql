--
-- Privileges: steps run as the role that started the run; roles see and
-- control only their own runs; the audit log is append-only.
--
CREATE ROLE wf_alice LOGIN;
CREATE ROLE wf_bob LOGIN;
CREATE ROLE wf_carol LOGIN IN ROLE wf_admin;
CREATE TABLE alice_notes (who text);
ALTER TABLE alice_notes OWNER TO wf_alice;

SET ROLE wf_alice;
SELECT wf_define('alice-escalate', '{"steps": [{"name": "su", "sql": "CREATE ROLE wf_evil SUPERUSER"}]}');
SELECT wf_define('alice-read-file', '{"steps": [{"name": "rf", "sql": "SELECT pg_read_file(''PG_VERSION'')"}]}');
SELECT wf_define('alice-set-role', '{"steps": [{"name": "sr", "sql": "SET ROLE postgres; SELECT 1"}]}');
SELECT wf_define('alice-session-auth', '{"steps": [{"name": "sa", "sql": "SET SESSION AUTHORIZATION postgres; SELECT 1"}]}');
SELECT wf_define('alice-engine-tables', '{"steps": [{"name": "t", "sql": "UPDATE wf.run SET owner = 10 RETURNING 1"}]}');
SELECT wf_define('alice-notes', '{"steps": [{"name": "note", "sql": "INSERT INTO alice_notes VALUES (current_user) RETURNING who"}]}');
SELECT wf_start('alice-escalate') AS a1, wf_start('alice-read-file') AS a2,
       wf_start('alice-set-role') AS a3, wf_start('alice-session-auth') AS a4,
       wf_start('alice-engine-tables') AS a5, wf_start('alice-notes') AS a6 \gset
SELECT wf_wait(:a1, '60 s'), wf_wait(:a2, '60 s'), wf_wait(:a3, '60 s'),
       wf_wait(:a4, '60 s'), wf_wait(:a5, '60 s'), wf_wait(:a6, '60 s');
SELECT r.workflow, r.owner, s.status, s.output, s.error->>'sqlstate' AS sqlstate,
       s.error->>'message' AS message
  FROM wf.runs r JOIN wf.steps s ON s.run_id = r.id ORDER BY r.id;

-- The audit log and the engine's tables cannot be changed directly.
UPDATE wf.history SET status = 'completed';
DELETE FROM wf.history;
DELETE FROM wf.history_log;
UPDATE wf.run SET status = 'completed';
SELECT wf._start(10, '', 'alice-notes', '{}', '{}');
SELECT wf._step_done(:a6, 'note', 'completed', NULL);
RESET ROLE;
SELECT count(*) FROM pg_roles WHERE rolname = 'wf_evil';

-- Even the owner cannot rewrite history.
UPDATE wf.history_log SET status = 'x';
TRUNCATE wf.history_log;

-- Bob sees none of Alice's runs and cannot control them or her workflows.
SET ROLE wf_bob;
SELECT count(*) AS visible_runs FROM wf.runs;
SELECT count(*) AS visible_history FROM wf.history;
SELECT wf_cancel(:a6);
SELECT wf_retry(:a1);
SELECT wf_rewind(:a6, 'note');
SELECT wf_wait(:a6);
SELECT wf_define('alice-notes', '{"steps": [{"name": "note", "sql": "SELECT ''hijacked''"}]}');
-- Bob may start Alice's workflow: it runs with Bob's privileges.
SELECT wf_start('alice-notes') AS b1 \gset
SELECT wf_wait(:b1, '60 s');
SELECT owner, status, error->>'message' AS message FROM wf.runs;
RESET ROLE;

-- A member of wf_admin sees and controls every run.
SET ROLE wf_carol;
SELECT count(*) > 6 AS sees_all FROM wf.runs;
SELECT wf_rewind(:a6, 'note');
SELECT wf_wait(:a6, '60 s');
RESET ROLE;
SELECT count(*) AS alice_notes FROM alice_notes;

-- A SECURITY DEFINER function that starts a run starts it as its owner.
CREATE FUNCTION alice_starts() RETURNS bigint
	LANGUAGE sql SECURITY DEFINER AS $$ SELECT wf_start('alice-notes') $$;
ALTER FUNCTION alice_starts() OWNER TO wf_alice;
SET ROLE wf_bob;
SELECT alice_starts() AS d1 \gset
RESET ROLE;
SELECT owner FROM wf.runs WHERE id = :d1;
SELECT wf_wait(:d1, '60 s');

DROP FUNCTION alice_starts();
