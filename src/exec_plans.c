/*-------------------------------------------------------------------------
 *
 * exec_plans.c
 *		The executor's prepared statements: the claim of ready steps, the
 *		load, wait, checkpoint and failure of a step, its hand-over to a
 *		long-step worker, and the housekeeping, prepared once and kept for
 *		the life of the process.
 *
 * wf_exec_prepare_all() prepares them, with SPI connected, before the
 * first use of any: the batch executor (executor.c and its exec_*.c parts)
 * and wf._agent_finish (agent.c) call it.
 *
 * src/exec_plans.c
 *
 *-------------------------------------------------------------------------
 */
#include "pg_workflow.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/guc.h"

#include "executor_int.h"

/* Prepared statements, kept for the life of the process. */
SPIPlanPtr	wf_plan_claim = NULL;
SPIPlanPtr	wf_plan_next_due = NULL;
SPIPlanPtr	wf_plan_load = NULL;
SPIPlanPtr	wf_plan_done = NULL;
SPIPlanPtr	wf_plan_done_defer = NULL;
SPIPlanPtr	wf_plan_release = NULL;
SPIPlanPtr	wf_plan_children_done = NULL;
SPIPlanPtr	wf_plan_failed = NULL;
SPIPlanPtr	wf_plan_resume = NULL;
SPIPlanPtr	wf_plan_requeue = NULL;
SPIPlanPtr	wf_plan_wait = NULL;
SPIPlanPtr	wf_plan_expire = NULL;
SPIPlanPtr	wf_plan_deferred = NULL;
SPIPlanPtr	wf_plan_solo = NULL;
SPIPlanPtr	wf_plan_solo_due = NULL;
SPIPlanPtr	wf_plan_solo_alike = NULL;
SPIPlanPtr	wf_plan_prune = NULL;

/* All the plans above are prepared (a failure half-way starts over). */
static bool wf_exec_plans_ready = false;

static SPIPlanPtr
wf_exec_prepare(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s",
			 sql, SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	return plan;
}

void
wf_exec_prepare_all(void)
{
	Oid			claim_types[5] = {INT4OID, INT8ARRAYOID, BOOLOID, BOOLOID, BOOLOID};
	Oid			resume_types[4] = {INT8OID, TEXTOID, INT4OID, TIMESTAMPTZOID};
	Oid			requeue_types[2] = {INT4OID, INT4OID};
	Oid			wait_types[4] = {INT8OID, TEXTOID, TIMESTAMPTZOID, TEXTOID};
	Oid			key_types[3] = {INT8OID, TEXTOID, INT4OID};
	Oid			done_types[5] = {INT8OID, TEXTOID, TEXTOID, JSONBOID, BOOLOID};
	Oid			children_types[3] = {INT8OID, TEXTOID, INT4OID};
	Oid			alike_types[1] = {JSONBOID};
	Oid			failed_types[9] = {INT8OID, TEXTOID, JSONBOID, TIMESTAMPTZOID,
	BOOLOID, BOOLOID, BOOLOID, BOOLOID, TEXTOID};
	Oid			prune_types[2] = {INT4OID, INT4OID};

	if (wf_exec_plans_ready)
		return;

	/*
	 * Due steps in the order of index step_ready (the CTE, so that the plan
	 * reads the index in order and stops at the limit), skipping those
	 * another executor holds and those of runs that wf_cancel, wf_retry or
	 * wf_rewind are interrupting ($2), or whose parent run they are.  The
	 * lock on the run orders our locks as theirs are ordered, run first:
	 * they lock the run FOR UPDATE, which waits for our transaction, before
	 * they touch its steps.  An executor takes it NO KEY UPDATE, the mode in
	 * which a checkpoint locks it, in the batch's transaction rather than in
	 * each step's subtransaction:
	 *	- a run's steps are claimed by one executor at a time: another one
	 *	  skips them (it would only wait for our commit to checkpoint them);
	 *	- a lock of a subtransaction over the batch's, or of one
	 *	  subtransaction over another's, would make the row's xmax a
	 *	  MultiXactId, whose members every later read of the row must look up
	 *	  (flat runs spent a third more executor time per step).
	 * A batch lasts pg_workflow.batch_time, or until its step outlasts
	 * pg_workflow.long_step_threshold.  A long-step worker's transaction
	 * lasts as long as its step: it takes KEY SHARE, so that the run's
	 * other steps go on meanwhile.
	 * Each run is locked by a lookup of its key (LATERAL), never by a join
	 * that a plan made while wf.run was small would do by reading it
	 * whole (a generic plan kept until the next ANALYZE: 10 ms a claim at
	 * 10,000 runs).
	 */
	wf_plan_claim = wf_exec_prepare(psprintf(
											 "WITH c AS ("
									" SELECT s.run_id, s.step, s.kind = 'http' AND s.status = 'ready' AS http"
									" FROM wf.step s"
									" WHERE s.status IN ('ready', 'waiting')"
									" AND s.ready_at <= pg_catalog.clock_timestamp()"
									" AND ($2 IS NULL OR s.run_id <> ALL ($2))"
									" AND (s.kind <> 'http' OR $3)"
									" AND (s.solo = $4 OR $5)"
									" ORDER BY s.priority DESC, coalesce(s.fair_at, s.ready_at) LIMIT $1"
									" FOR UPDATE OF s SKIP LOCKED)"
									" SELECT c.run_id, c.step, c.http FROM c,"
									" LATERAL (SELECT FROM wf.run r WHERE r.id = c.run_id"
									" AND ($2 IS NULL OR r.parent_run IS NULL OR r.parent_run <> ALL ($2))"
											 " FOR %s OF r SKIP LOCKED) l",
											 wf_long_am_worker ? "KEY SHARE" : "NO KEY UPDATE"),
									5, claim_types);
	/*
	 * statement_timestamp(), not clock_timestamp(): a stable bound, which the
	 * index scan starts from, rather than a filter on every due step (a map
	 * of 100,000 ready items made this 6 ms).  A step due between the two
	 * only wakes us at once.
	 */
	wf_plan_next_due = wf_exec_prepare(
									   "SELECT pg_catalog.min(ready_at) FROM wf.step"
									   " WHERE status IN ('ready', 'waiting')"
									   " AND ready_at > pg_catalog.statement_timestamp()",
									   0, NULL);
	wf_plan_load = wf_exec_prepare(
								   "SELECT kind, spec, owner, search_path, attempt, defaults, started_at,"
								   " resuming, payload, wait_key, escalated_at, parent_run,"
								   " slot_wanted, slot_error"
								   " FROM wf._step_load($1, $2, $3)",
								   3, key_types);
	wf_plan_done = wf_exec_prepare(
								   "SELECT ok, ready FROM wf._step_done($1, $2, $3, $4)",
								   4, done_types);
	wf_plan_done_defer = wf_exec_prepare(
										 "SELECT ok, ready, done_in, held FROM wf._step_done($1, $2, $3, $4, true, $5)",
										 5, done_types);
	/* A step made ready but held (WfWorkItem.held) that the batch did not run. */
	wf_plan_release = wf_exec_prepare("UPDATE wf.step SET status = 'ready',"
									  " ready_at = pg_catalog.clock_timestamp()"
									  " WHERE run_id = $1 AND step = $2"
									  " AND status = 'pending' AND deps_left = 0",
									  2, key_types);
	wf_plan_children_done = wf_exec_prepare(
											"SELECT wf._children_done($1, $2, $3)",
											3, children_types);
	wf_plan_failed = wf_exec_prepare(
									 "SELECT ready FROM wf._step_failed($1, $2, $3, $4, $5, $6, $7, $8, $9)",
									 9, failed_types);
	wf_plan_resume = wf_exec_prepare(
									 "SELECT spec, defaults FROM wf._step_resume($1, $2, $3, $4)",
									 4, resume_types);
	wf_plan_requeue = wf_exec_prepare(
									  "SELECT wf._requeue_orphans($1, $2)",
									  2, requeue_types);
	wf_plan_wait = wf_exec_prepare(
								   "SELECT wf._step_wait($1, $2, $3, $4)",
								   4, wait_types);
	wf_plan_expire = wf_exec_prepare("SELECT LEAST(wf._expire_runs(), wf._fire_schedules(),"
									 " wf._check_slas(), wf._expire_tasks())",
									 0, NULL);
	wf_plan_deferred = wf_exec_prepare("SELECT wf._run_deferred()", 0, NULL);
	wf_plan_solo = wf_exec_prepare("UPDATE wf.step SET solo = true"
								   " WHERE run_id = $1 AND step = $2",
								   2, key_types);
	/*
	 * The ready sql steps not yet solo with the definition $1 (but for the
	 * name, which numbers a map's items) among the next 1,000 in the claim
	 * order, skipping those other executors hold.
	 */
	wf_plan_solo_alike = wf_exec_prepare("WITH w AS ("
										 " SELECT run_id, step FROM wf.step"
										 " WHERE status IN ('ready', 'waiting')"
										 " ORDER BY priority DESC, coalesce(fair_at, ready_at)"
										 " LIMIT 1000),"
										 " l AS ("
										 " SELECT s.run_id, s.step FROM wf.step s JOIN w"
										 " ON s.run_id = w.run_id AND s.step = w.step"
										 " WHERE s.status = 'ready' AND NOT s.solo AND s.kind = 'sql'"
										 " AND (s.spec OPERATOR(pg_catalog.-) 'name'::text)"
										 " OPERATOR(pg_catalog.=) ($1 OPERATOR(pg_catalog.-) 'name'::text)"
										 " FOR UPDATE OF s SKIP LOCKED)"
										 " UPDATE wf.step s SET solo = true FROM l"
										 " WHERE s.run_id = l.run_id AND s.step = l.step",
										 1, alike_types);
	/* Solo steps due that no long-step worker holds. */
	wf_plan_solo_due = wf_exec_prepare("SELECT FROM wf.step"
									   " WHERE solo AND status = 'ready'"
									   " AND ready_at <= pg_catalog.clock_timestamp()"
									   " LIMIT 1 FOR UPDATE SKIP LOCKED",
									   0, NULL);
	wf_plan_prune = wf_exec_prepare("SELECT wf._prune($1, $2)", 2, prune_types);
	wf_exec_plans_ready = true;
}

/*
 * Runs the claim (wf_plan_claim), planned with sorts disabled: the only
 * plan left reads index step_ready in its order and stops at the limit.
 * The statistics of wf.step say how many steps were ready at its last
 * ANALYZE, often none; planned on them, the claim read every entry of the
 * ready steps' indexes, live and dead, and sorted what it found (9 to 40
 * ms a claim with a backlog of 5,000 steps).  JIT is off: should a plan
 * have to sort all the same, the cost of a disabled sort would make it
 * compile the query, every time.  The settings are restored at once (or
 * by the abort).
 */
int
wf_exec_claim(Datum *args, const char *nulls)
{
	int			nestlevel = NewGUCNestLevel();
	int			rc;

	(void) set_config_option("enable_sort", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	(void) set_config_option("jit", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	rc = SPI_execute_plan(wf_plan_claim, args, nulls, false, 0);
	AtEOXact_GUC(true, nestlevel);
	return rc;
}
