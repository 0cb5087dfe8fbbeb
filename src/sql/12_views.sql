/*
 * 12_views.sql: the views users read, each role its own rows.
 *
 * A part of the install script, which the Makefile assembles from
 * src/sql/[0-9]*.sql in name order.
 */

/* ---------------------------------------------------------------------
 * Views
 * ---------------------------------------------------------------------
 */

CREATE VIEW wf.workflows AS
	SELECT d.name, d.version, d.definition, d.description, d.created_at,
		   d.created_by
	  FROM wf.workflow_def d;

CREATE VIEW wf.runs WITH (security_barrier) AS
	SELECT r.id, r.workflow, r.version, r.status, r.input, r.output, r.error,
		   r.owner, r.priority, r.idempotency_key,
		   r.parent_run, r.parent_step, r.depth, r.origin_run,
		   r.created_at, r.start_at, r.started_at, r.finished_at
	  FROM wf.run r
	 WHERE r.owner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
		OR (SELECT pg_catalog.pg_has_role('wf_admin', 'MEMBER'));

/*
 * wf.metrics: every workflow's figures of the last hour, one row per
 * workflow and measure, for a Prometheus SQL exporter (measure names in
 * its style; durations in seconds).  The runs that ended are those
 * wf_metrics(workflow, '1 hour') counts, so the caller sees its own runs'
 * (every role's for wf_admin); the unfinished runs are counted from
 * wf.runs, by the same rule.  Measures without a value (no run ended) are
 * left out.
 */
CREATE VIEW wf.metrics AS
	SELECT w.name AS workflow, m.measure, m.value
	  FROM (SELECT DISTINCT d.name FROM wf.workflow_def d) w
		   CROSS JOIN LATERAL (
			SELECT * FROM @extschema@.wf_metrics(w.name, interval '1 hour') x
			 WHERE x.scope OPERATOR(pg_catalog.=) 'run') r
		   CROSS JOIN LATERAL (
			VALUES ('runs_ended_total', r.executions::float8),
				   ('runs_completed_total', r.completed::float8),
				   ('runs_failed_total', r.failed::float8),
				   ('runs_cancelled_total', r.cancelled::float8),
				   ('run_success_ratio', r.success_rate::float8),
				   ('run_error_ratio', r.error_rate::float8),
				   ('run_duration_mean_seconds', pg_catalog.date_part('epoch', r.mean)),
				   ('run_duration_p50_seconds', pg_catalog.date_part('epoch', r.p50)),
				   ('run_duration_p95_seconds', pg_catalog.date_part('epoch', r.p95)),
				   ('run_duration_p99_seconds', pg_catalog.date_part('epoch', r.p99)),
				   ('runs_pending', (SELECT pg_catalog.count(*) FROM wf.runs u
									  WHERE u.workflow OPERATOR(pg_catalog.=) w.name
										AND u.status OPERATOR(pg_catalog.=) 'pending')::float8),
				   ('runs_running', (SELECT pg_catalog.count(*) FROM wf.runs u
									  WHERE u.workflow OPERATOR(pg_catalog.=) w.name
										AND u.status OPERATOR(pg_catalog.=) 'running')::float8),
				   ('runs_waiting', (SELECT pg_catalog.count(*) FROM wf.runs u
									  WHERE u.workflow OPERATOR(pg_catalog.=) w.name
										AND u.status OPERATOR(pg_catalog.=) 'waiting')::float8)
		   ) m (measure, value)
	 WHERE m.value IS NOT NULL;

GRANT SELECT ON wf.metrics TO PUBLIC;

CREATE VIEW wf.steps WITH (security_barrier) AS
	SELECT s.run_id, s.step, s.kind, s.status, s.attempt, s.output, s.error,
		   CASE WHEN s.status IN ('ready', 'waiting') THEN s.ready_at END AS ready_at,
		   s.started_at, s.finished_at,
		   s.finished_at - s.started_at AS duration, s.ord, s.parent
	  FROM wf.step s JOIN wf.run r ON r.id = s.run_id
	 WHERE r.owner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
		OR (SELECT pg_catalog.pg_has_role('wf_admin', 'MEMBER'));

CREATE VIEW wf.history WITH (security_barrier) AS
	SELECT h.id, h.run_id, h.step, h.status, h.attempt, h.detail,
		   h.actor, h.at
	  FROM wf.history_log h JOIN wf.run r ON r.id = h.run_id
	 WHERE r.owner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
		OR (SELECT pg_catalog.pg_has_role('wf_admin', 'MEMBER'));

/*
 * The breakers of http hosts (host) and of agent pools (pool): an agent
 * step's is keyed "agent:POOL", which no host can be.
 */
CREATE VIEW wf.circuit_breakers AS
	SELECT CASE WHEN b.key NOT LIKE 'agent:%' THEN b.key END AS host,
		   b.state, b.failures, b.opened_at, b.reset_after,
		   CASE WHEN b.state <> 'closed' THEN b.opened_at + b.reset_after END AS retry_at,
		   b.updated_at,
		   CASE WHEN b.key LIKE 'agent:%' THEN substr(b.key, 7) END AS pool
	  FROM wf.circuit_breaker b;

CREATE VIEW wf.alerts WITH (security_barrier) AS
	SELECT a.id, a.run_id, coalesce(r.workflow, a.detail->>'workflow') AS workflow, a.step,
		   a.kind, a.message, a.detail, a.raised_at, a.resolved_at, a.resolved_by,
		   a.acknowledged_by, a.acknowledged_at
	  FROM wf.alert a LEFT JOIN wf.run r ON r.id = a.run_id
	 WHERE r.owner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
		OR (SELECT pg_catalog.pg_has_role('wf_admin', 'MEMBER'));

/*
 * Unfinished runs: steps finished of the steps there are now (a container's
 * children count from its expansion), the steps running or waiting and
 * since when, and an estimate of the time left from this workflow
 * version's measured step durations: for each unfinished step (a running
 * container's children standing for it), the mean duration of the step of
 * the same path in the version's 20 last completed runs, less what it has
 * run already, summed as if they ran one after the other (an upper bound
 * for branches that run side by side); NULL without completed runs.
 */
CREATE VIEW wf.progress WITH (security_barrier) AS
	SELECT r.id AS run_id, r.workflow, r.version, r.status, r.owner,
		   p.done AS steps_done, p.total AS steps_total,
		   CASE WHEN p.total > 0 THEN round(100.0 * p.done / p.total, 1) END AS percent,
		   coalesce(p.active_steps, '{}') AS active_steps,
		   r.started_at, date_trunc('milliseconds', clock_timestamp() - r.started_at) AS elapsed,
		   date_trunc('milliseconds', e.time_left) AS estimated_left
	  FROM wf.run r
	 CROSS JOIN LATERAL (
			SELECT count(*) FILTER (WHERE s.status IN ('completed', 'skipped', 'failed',
													   'compensated', 'cancelled')) AS done,
				   count(*) AS total,
				   array_agg(format('%s %s since %s', s.step, s.status,
									to_char(coalesce(s.started_at, s.ready_at), 'HH24:MI:SS.MS'))
							 ORDER BY s.ord, s.step)
					 FILTER (WHERE s.status IN ('running', 'waiting', 'escalated')
							   AND s.children_left IS NULL) AS active_steps
			  FROM wf.step s WHERE s.run_id = r.id) p
	 CROSS JOIN LATERAL (
			WITH hist AS (
				SELECT h.id FROM wf.run h
				 WHERE h.workflow = r.workflow AND h.status = 'completed'
				   AND h.version = r.version
				 ORDER BY h.finished_at DESC LIMIT 20
			)
			SELECT CASE WHEN EXISTS (SELECT 1 FROM hist) THEN
					coalesce(sum(greatest(t.mean - coalesce(clock_timestamp() - t.started_at,
															'0'::interval), '0'::interval)),
							 '0'::interval) END AS time_left
			  FROM (SELECT s.started_at,
						   (SELECT avg(m.finished_at - m.started_at)
							  FROM hist JOIN wf.step m ON m.run_id = hist.id AND m.step = s.step
							 WHERE m.status = 'completed') AS mean
					  FROM wf.step s
					 WHERE s.run_id = r.id
					   AND s.status IN ('pending', 'ready', 'running', 'waiting', 'escalated')
					   AND s.children_left IS NULL) t) e
	 WHERE r.status IN ('pending', 'running', 'waiting')
	   AND (r.owner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
			OR (SELECT pg_catalog.pg_has_role('wf_admin', 'MEMBER')));

/* Open approvals, for their assignees. */
CREATE VIEW wf.human_tasks WITH (security_barrier) AS
	SELECT s.run_id, r.workflow, s.step, s.assignee,
		   coalesce(s.title, s.spec->'human'->>'title') AS title,
		   s.spec->'human'->>'description' AS description,
		   s.started_at AS opened_at, s.ready_at AS deadline,
		   s.escalated_at IS NOT NULL AS escalated, s.escalated_at
	  FROM wf.step s JOIN wf.run r ON r.id = s.run_id
	 WHERE s.kind = 'human' AND s.status = 'waiting'
	   AND (r.owner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
			OR s.assignee = current_user
			OR (SELECT pg_catalog.pg_has_role('wf_admin', 'MEMBER')));

/*
 * The secrets a role may use or manage, never their values: those whose
 * owner or a grantee it has the privileges of (all of them for wf_admin).
 */
CREATE VIEW wf.secrets WITH (security_barrier) AS
	SELECT s.name, s.owner, s.hosts,
		   ARRAY(SELECT g.grantee FROM wf.secret_grant g
				  WHERE g.name OPERATOR(pg_catalog.=) s.name
				  ORDER BY g.grantee::text) AS grantees,
		   s.created_at, s.updated_at, s.updated_by
	  FROM wf.secret s
	 WHERE pg_catalog.pg_has_role(s.owner::oid, 'USAGE')
		OR EXISTS (SELECT 1 FROM wf.secret_grant g
					WHERE g.name OPERATOR(pg_catalog.=) s.name
					  AND pg_catalog.pg_has_role(g.grantee::oid, 'USAGE'))
		OR (SELECT pg_catalog.pg_has_role('wf_admin', 'MEMBER'));

GRANT SELECT ON wf.workflows, wf.runs, wf.steps, wf.history, wf.secrets,
	wf.circuit_breakers, wf.alerts, wf.human_tasks, wf.progress TO PUBLIC;

