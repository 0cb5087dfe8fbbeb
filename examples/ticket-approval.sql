--
-- ticket-approval: an event-started workflow with a human approval.
--
-- A "ticket.high_priority" event starts the workflow (wf_on_event); it
-- analyses the ticket (sql), asks the manager for approval (human: in
-- production 24 hours, then escalated to the director for another 24
-- hours), implements the change when approved, and notifies the requester
-- when rejected or when nobody answered.  The timeouts below are shrunk to
-- seconds so that the whole story runs in psql in a few seconds:
--
--   psql -f examples/ticket-approval.sql
--
\set ON_ERROR_STOP on

CREATE TABLE IF NOT EXISTS changes (ticket int, action text, at timestamptz DEFAULT now());

SELECT wf_define('ticket-approval', $json$
{
  "description": "High-priority ticket: analyse, approve (manager, then director), implement or notify",
  "timeout": "7 days",
  "steps": [
    {"name": "analyse",
     "sql": "SELECT jsonb_build_object('ticket', ($1->'input'->>'ticket')::int, 'risk', CASE WHEN $1->'input'->>'subject' ILIKE '%database%' THEN 'high' ELSE 'low' END)"},
    {"name": "approval",
     "human": {"assignee": "manager", "title": "Approve the fix for ticket {{$.input.ticket}}",
               "timeout": "2 seconds",
               "escalation": {"timeout": "2 seconds", "escalate_to": "director"},
               "on_timeout": {"decision": "rejected", "reason": "no answer in time"}}},
    {"name": "implement", "when": "$.steps.approval.decision == \"approved\"",
     "sql": "INSERT INTO changes (ticket, action) VALUES (($1->'input'->>'ticket')::int, 'implemented') RETURNING action"},
    {"name": "notify-rejection", "when": "$.steps.approval.decision != \"approved\"",
     "sql": "INSERT INTO changes (ticket, action) VALUES (($1->'input'->>'ticket')::int, 'requester notified: ' || ($1->'steps'->'approval'->>'decision')) RETURNING action"}
  ]
}
$json$);
SELECT wf_on_event('ticket.high_priority', 'ticket-approval');

-- Two high-priority tickets arrive.
SELECT wf_emit('ticket.high_priority', '{"ticket": 7, "subject": "database is slow"}');
SELECT wf_emit('ticket.high_priority', '{"ticket": 8, "subject": "printer"}');
SELECT max(id) - 1 AS approved_run, max(id) AS silent_run
  FROM wf.runs WHERE workflow = 'ticket-approval' \gset

-- The manager's inbox: both approvals are open.
SELECT pg_sleep(0.5);
SELECT run_id, step, assignee, title, deadline FROM wf.human_tasks ORDER BY run_id;

-- The manager approves ticket 7; nobody answers for ticket 8: it is
-- escalated to the director (an alert is raised), then rejected.
SELECT wf_signal(:approved_run, 'approval', '{"decision": "approved", "by": "manager"}');
SELECT wf_wait(:approved_run, '30 seconds') AS ticket_7, wf_wait(:silent_run, '30 seconds') AS ticket_8;

SELECT r.id AS run, s.step, s.status, s.output
  FROM wf.runs r JOIN wf.steps s ON s.run_id = r.id
 WHERE r.id IN (:approved_run, :silent_run) ORDER BY r.id, s.ord;
SELECT run_id, step, kind, message FROM wf.alerts WHERE run_id = :silent_run;
SELECT * FROM changes ORDER BY at;
