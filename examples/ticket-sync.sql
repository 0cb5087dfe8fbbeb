--
-- ticket-sync: a high-priority ticket becomes a task in a project tracker.
--
-- A trigger on table sync_tickets starts workflow "ticket-sync" for each new
-- high-priority ticket, in the inserting transaction.  The workflow
-- validates the ticket (sql), creates the task over the tracker's REST API
-- (http, ClickUp-style, with a stored secret as credentials), and records
-- the mapping (sql), exactly once.
--
-- Run it against the local mock tracker of the tests:
--   python3 test/http_server.py --port 8765 --token my-clickup-token &
--   psql -f examples/ticket-sync.sql
-- The tracker's address comes from psql variables api_host (default
-- 127.0.0.1) and api_port (default 8765): psql -v api_port=9000 -f ...
-- It is independent of the README's worked example and of the other
-- examples: its tables are its own.
--
\set ON_ERROR_STOP on
\if :{?api_host}
\else
\set api_host 127.0.0.1
\endif
\if :{?api_port}
\else
\set api_port 8765
\endif

CREATE TABLE IF NOT EXISTS sync_tickets (
	id			int PRIMARY KEY,
	subject		text NOT NULL,
	priority	text NOT NULL,
	list_id		text NOT NULL DEFAULT '901'
);
CREATE TABLE IF NOT EXISTS ticket_tasks (
	ticket_id	int PRIMARY KEY REFERENCES sync_tickets,
	task_id		text NOT NULL,
	task_url	text,
	synced_at	timestamptz NOT NULL DEFAULT now()
);

-- Credentials live in a secret: never in the definition, outputs or logs,
-- and sent to the tracker's host only.
SELECT wf_set_secret('clickup_token', 'my-clickup-token', :'api_host');

SELECT wf_define('ticket-sync', replace($json$
{
  "description": "Sync high-priority tickets to the project tracker",
  "retry": {"max_attempts": 5, "backoff": "exponential", "initial_interval": "1s", "max_interval": "1m"},
  "steps": [
    {"name": "validate",
     "sql": "SELECT CASE WHEN $1->'input'->>'subject' <> '' THEN jsonb_build_object('ok', true) ELSE jsonb_build_object('error', 'ticket has no subject') END"},
    {"name": "create-task", "timeout": "30s",
     "circuit_breaker": {"failures": 5, "reset_after": "1 minute"},
     "http": {"method": "POST",
              "url": "http://@API@/api/v2/list/{{$.input.list_id}}/task",
              "headers": {"Authorization": "{{secret.clickup_token}}"},
              "body": {"name": "[#{{$.input.id}}] {{$.input.subject}}", "priority": 1}}},
    {"name": "record",
     "sql": "INSERT INTO ticket_tasks (ticket_id, task_id, task_url) VALUES (($1->'input'->>'id')::int, $1->'steps'->'create-task'->'body'->>'id', $1->'steps'->'create-task'->'body'->>'url') RETURNING task_id"}
  ]
}
$json$, '@API@', :'api_host' || ':' || :'api_port')::jsonb);

CREATE OR REPLACE TRIGGER sync_tickets_sync
	AFTER INSERT ON sync_tickets
	FOR EACH ROW WHEN (NEW.priority = 'high')
	EXECUTE FUNCTION wf_start_trigger('ticket-sync');

-- Two tickets; only the high-priority one starts a run.
INSERT INTO sync_tickets (id, subject, priority) VALUES
	(42, 'Printer on fire', 'high'),
	(43, 'Coffee machine noisy', 'low')
ON CONFLICT DO NOTHING;

SELECT wf_wait(max(id), '60 seconds') AS status
  FROM wf.runs WHERE workflow = 'ticket-sync';
SELECT r.id AS run, s.step, s.status, s.attempt,
	   coalesce(s.output->'body'->>'id', s.output::text) AS output
  FROM wf.runs r JOIN wf.steps s ON s.run_id = r.id
 WHERE r.workflow = 'ticket-sync' ORDER BY r.id, s.ord;
SELECT * FROM ticket_tasks;
