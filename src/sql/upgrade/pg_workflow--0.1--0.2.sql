/*
 * pg_workflow--0.1--0.2.sql: from version 0.1 to 0.2 (ALTER EXTENSION
 * pg_workflow UPDATE).
 *
 * Its changes, then src/sql/99_finish.sql (appended by the Makefile).  TAP
 * test 044_upgrade checks that a database updated from 0.1 has exactly the
 * objects of one where 0.2 was installed, and that the runs in flight
 * during the update go on.
 */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION pg_workflow UPDATE TO '0.2'" to load this file. \quit

/*
 * Small functions of the executors' and agents' hot paths, in PL/pgSQL
 * rather than SQL: a SQL function with a SET clause is never inlined and
 * is parsed and planned again in every transaction that calls it (246 us a
 * call for wf._next_deadline, called before every batch); PL/pgSQL keeps
 * its plans for the session.
 */
CREATE OR REPLACE FUNCTION wf._next_deadline() RETURNS timestamptz
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	RETURN (SELECT deadline FROM wf.run
			 WHERE status IN ('pending', 'running', 'waiting') AND deadline IS NOT NULL
			 ORDER BY deadline LIMIT 1);
END
$$;

CREATE OR REPLACE FUNCTION wf._may_claim(caller oid, p_pool text) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	RETURN pg_has_role(caller, 'wf_admin', 'MEMBER')
		OR EXISTS (SELECT 1 FROM wf.pool_grant g
					WHERE g.pool = p_pool AND pg_has_role(caller, g.grantee::oid, 'MEMBER'));
END
$$;

CREATE OR REPLACE FUNCTION wf._agent_name(caller oid, p_agent text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	RETURN coalesce(p_agent, nullif(current_setting('application_name'), ''),
					caller::regrole::text);
END
$$;

CREATE OR REPLACE FUNCTION wf._agent_in_flight(p_pool text, p_agent text) RETURNS bigint
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	RETURN (SELECT count(*) FROM wf.task t
			 WHERE t.pool = p_pool AND t.agent = p_agent AND t.state = 'claimed');
END
$$;

CREATE OR REPLACE FUNCTION wf._agent_load(caller oid, caller_path text, p_pool text, p_max int,
							   p_lease interval, p_agent text, p_caps text[], p_capacity int)
RETURNS float4
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	RETURN (wf._agent_in_flight(p_pool, wf._agent_name(caller, p_agent))
			/ coalesce(p_capacity, greatest(p_max, 1))::float8)::float4;
END
$$;

CREATE OR REPLACE FUNCTION wf._task_held(t wf.task) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	RETURN t.state = 'claimed' AND t.lease_until >= clock_timestamp();
END
$$;

