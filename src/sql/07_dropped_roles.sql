/*
 * 07_dropped_roles.sql: what becomes of the runs and objects of a dropped role.
 *
 * A part of the install script, which the Makefile assembles from
 * src/sql/[0-9]*.sql in name order.
 */

/*
 * Executor side: nothing a dropped role owned goes on acting for it.  Its
 * unfinished runs fail (without compensation, which would run as that role
 * too), its schedules and subscriptions are disabled, with an alert each;
 * then everything it owned, finished runs and workflows included, passes
 * to no role (regrole '-', seen and controlled by wf_admin only), so that
 * its OID, which a new role may get one day, or another role in a cluster
 * this database is restored into, never owns them.  The history and the
 * signals, events and alerts keep the OID as it was: they say who did
 * what, and give nobody any right.
 *
 * DROP ROLE cannot be refused here: it is a command of the whole cluster,
 * which may run in a database without pg_workflow.  The executors call this
 * at their start and after every change of pg_authid (owners.c).  Returns
 * the number of rows it had to leave because another transaction held them
 * (an executor running a step of the run): the caller tries again soon.
 */
CREATE FUNCTION wf._sweep_dropped_roles() RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	dropped	oid;
	r		wf.run;
	o		record;
	msg		text;
	held	int := 0;
BEGIN
	/* One executor at a time: another would only find this one's rows held. */
	PERFORM wf._xact_lock(hashtext('pg_workflow.sweep'), 0, false, false);
	FOR dropped IN
		WITH RECURSIVE run_owner(owner) AS (
			/* The distinct owners of runs, one index probe each. */
			SELECT min(owner::oid) FROM wf.run WHERE owner::oid > 0
			UNION ALL
			SELECT (SELECT min(x.owner::oid) FROM wf.run x WHERE x.owner::oid > p.owner)
			  FROM run_owner p WHERE p.owner IS NOT NULL
		), owners(owner) AS (
			SELECT owner FROM run_owner WHERE owner IS NOT NULL
			UNION SELECT owner::oid FROM wf.schedule
			UNION SELECT created_by::oid FROM wf.subscription
			UNION SELECT created_by::oid FROM wf.workflow_def
			UNION SELECT owner::oid FROM wf.secret
			UNION SELECT grantee::oid FROM wf.secret_grant
			UNION SELECT grantee::oid FROM wf.pool_grant
			UNION SELECT role::oid FROM wf.agent
			UNION SELECT claimed_by::oid FROM wf.task WHERE state = 'claimed'
		)
		SELECT w.owner FROM owners w
		 WHERE w.owner <> 0
		   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_authid a WHERE a.oid = w.owner)
		 ORDER BY 1
	LOOP
		/* Parents first: their children end with them. */
		FOR r IN SELECT * FROM wf.run
				  WHERE owner = dropped AND status IN ('pending', 'running', 'waiting')
				  ORDER BY id FOR UPDATE SKIP LOCKED LOOP
			SELECT * INTO r FROM wf.run WHERE id = r.id;
			CONTINUE WHEN r.status NOT IN ('pending', 'running', 'waiting');
			msg := format('role with OID %s that owned run %s was dropped', dropped, r.id);
			PERFORM wf._finish_run(r, 'failed',
								   jsonb_build_object('message', msg, 'sqlstate', '42704',
													  'class', 'permanent',
													  'dropped_role', dropped),
								   0);
		END LOOP;
		UPDATE wf.run SET owner = 0
		 WHERE id IN (SELECT id FROM wf.run WHERE owner = dropped FOR UPDATE SKIP LOCKED);

		FOR o IN UPDATE wf.schedule
					SET owner = 0, next_at = 'infinity', disabled_at = clock_timestamp(),
						disabled_reason = format('role with OID %s that owned it was dropped',
												 dropped)
				  WHERE name IN (SELECT name FROM wf.schedule WHERE owner = dropped
								 FOR UPDATE SKIP LOCKED)
				RETURNING name, workflow LOOP
			PERFORM wf._alert(NULL, NULL, 'owner_dropped',
							  format('schedule "%s" was disabled: role with OID %s that owned it was dropped',
									 o.name, dropped),
							  jsonb_build_object('schedule', o.name, 'workflow', o.workflow,
												 'dropped_role', dropped));
		END LOOP;

		FOR o IN UPDATE wf.subscription
					SET created_by = 0, disabled_at = clock_timestamp(),
						disabled_reason = format('role with OID %s that subscribed was dropped',
												 dropped)
				  WHERE (event, workflow) IN (SELECT event, workflow FROM wf.subscription
											   WHERE created_by = dropped
											   FOR UPDATE SKIP LOCKED)
				RETURNING event, workflow LOOP
			PERFORM wf._alert(NULL, NULL, 'owner_dropped',
							  format('subscription of workflow "%s" to event "%s" was disabled: role with OID %s that subscribed was dropped',
									 o.workflow, o.event, dropped),
							  jsonb_build_object('event', o.event, 'workflow', o.workflow,
												 'dropped_role', dropped));
		END LOOP;

		UPDATE wf.workflow_def SET created_by = 0 WHERE created_by = dropped;

		/*
		 * Its grants go; its secrets stay usable by the roles they were
		 * granted to, owned by no role (wf_admin manages them), so that a
		 * role that later gets the same OID inherits nothing.
		 */
		DELETE FROM wf.secret_grant WHERE grantee = dropped;
		/* Its pools too; the leases it held expire and are handed out again. */
		DELETE FROM wf.pool_grant WHERE grantee = dropped;
		DELETE FROM wf.agent WHERE role = dropped;
		UPDATE wf.task SET claimed_by = 0 WHERE claimed_by = dropped;
		FOR o IN UPDATE wf.secret SET owner = 0
				  WHERE owner = dropped RETURNING name LOOP
			PERFORM wf._alert(NULL, NULL, 'owner_dropped',
							  format('secret "%s" is owned by no role: role with OID %s that owned it was dropped',
									 o.name, dropped),
							  jsonb_build_object('secret', o.name, 'dropped_role', dropped));
		END LOOP;

		held := held + (SELECT count(*) FROM wf.run WHERE owner = dropped)
			+ (SELECT count(*) FROM wf.schedule WHERE owner = dropped)
			+ (SELECT count(*) FROM wf.subscription WHERE created_by = dropped);
	END LOOP;
	RETURN held;
END
$$;

