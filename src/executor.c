/*-------------------------------------------------------------------------
 *
 * executor.c
 *		The batch executor: claims ready steps, runs each attempt in a
 *		subtransaction together with its checkpoint, and commits many steps
 *		of different runs in one transaction.
 *
 * One call of wf_exec_batch() is one transaction:
 *
 *	1. claim up to pg_workflow.batch_size ready steps with FOR UPDATE SKIP
 *	   LOCKED, so that no two executors ever run the same attempt;
 *	2. for each, in a subtransaction: load the step and its run context,
 *	   evaluate "when", execute the step kind, and checkpoint it (output,
 *	   successors made ready, run completion, history) through
 *	   wf._step_done();
 *	3. on an error, roll the subtransaction back, so that nothing of the
 *	   attempt remains, and record the failure (retry time, or failure of
 *	   the step and the run) through wf._step_failed();
 *	4. steps that a checkpoint made ready are executed next in the same
 *	   transaction, depth first, while the batch has room: a run of
 *	   sequential sql steps usually completes in a single commit;
 *	5. commit.
 *
 * A step's effects and its checkpoint are in the same transaction, so they
 * happen exactly once whatever crashes.  Batching only amortises the
 * commit: a failed step rolls back its own subtransaction, never its
 * neighbours'.
 *
 * Step kinds are looked up in the table of kinds.c; each kind executes one
 * attempt and reports a WfStepResult.  What becomes of a failed attempt and
 * of a finished http request is exec_outcome.c's, the containment of errors
 * that escape a step's handling exec_contain.c's; executor_int.h is what
 * the three files share.
 *
 * src/executor.c
 *
 *-------------------------------------------------------------------------
 */
#include "pg_workflow.h"

#include <math.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "executor_int.h"


/* The step timeout: its own timer, so that we know it was ours. */
TimeoutId	wf_exec_timeout_id = MAX_TIMEOUTS;
static volatile sig_atomic_t wf_exec_timed_out = false;

/* The timer armed is pg_workflow.long_step_threshold, not the timeout. */
static bool wf_exec_soft_armed = false;

/*
 * The step being executed has ready siblings in the batch's queue (steps of
 * its run that do not wait for it): it is handed over sooner.
 */
static bool wf_exec_has_siblings = false;

/* Steps this batch handed over to long-step workers. */
static int	wf_exec_offloaded = 0;

/* Prepared statements, kept for the life of the process. */
/*
 * How soon to look again at a deferred change whose row another transaction
 * held: usually an executor's, which lets go when its batch commits.  The
 * delay doubles while the row stays held (a step executing for long), up to
 * the maximum, and starts over once nothing is held.
 */
#define WF_DEFERRED_RETRY_MS		10
#define WF_DEFERRED_RETRY_MAX_MS	1000
static int	wf_exec_deferred_retry_ms = WF_DEFERRED_RETRY_MS;

/*
 * The current batch set timers (a step waiting with a timeout, a retry
 * later): the executors asleep learn about them only when they look.
 */
bool wf_exec_timers_set = false;

static SPIPlanPtr wf_plan_claim = NULL;
static SPIPlanPtr wf_plan_next_due = NULL;
static SPIPlanPtr wf_plan_load = NULL;
SPIPlanPtr wf_plan_done = NULL;
static SPIPlanPtr wf_plan_done_defer = NULL;
static SPIPlanPtr wf_plan_children_done = NULL;
SPIPlanPtr wf_plan_failed = NULL;
SPIPlanPtr wf_plan_resume = NULL;
static SPIPlanPtr wf_plan_requeue = NULL;
static SPIPlanPtr wf_plan_wait = NULL;
static SPIPlanPtr wf_plan_expire = NULL;
static SPIPlanPtr wf_plan_deferred = NULL;
static SPIPlanPtr wf_plan_solo = NULL;
static SPIPlanPtr wf_plan_solo_due = NULL;
static SPIPlanPtr wf_plan_solo_alike = NULL;
static SPIPlanPtr wf_plan_prune = NULL;

/*
 * The map items this batch completed, by map: the map's row is updated once
 * a batch (wf._children_done), not once an item, which would make its row a
 * chain of versions that every item walks.
 */
typedef struct WfMapDone
{
	int64		run_id;
	char	   *map;
	int			n;
} WfMapDone;

static List *wf_exec_maps_done = NIL;

/*
 * When wf._prune() is next worth calling (0: at once, DT_NOEND: never, until
 * a retention setting changes); a call never comes sooner than
 * WF_PRUNE_BUSY_MS after the previous one while there is a backlog, nor
 * than WF_PRUNE_INTERVAL_MS otherwise.
 */
TimestampTz wf_exec_next_prune = 0;
#define WF_PRUNE_BUSY_MS		1000
#define WF_PRUNE_INTERVAL_MS	10000

/*
 * The housekeeping done before a batch (wf._expire_runs, _fire_schedules,
 * _check_slas, _expire_tasks: about 0.5 ms) is done when what it last
 * returned is due, and otherwise at most once every WF_HOUSEKEEPING_MS: a
 * stream of small batches (agent steps arrive one at a time) does not pay
 * it each time.  A batch that skipped it bounds the next sleep to the end
 * of that interval, so that a deadline made meanwhile is seen then.
 */
static TimestampTz wf_exec_housekeeping_at = 0;
static TimestampTz wf_exec_housekeeping_due = 0;	/* 0: nothing due */
#define WF_HOUSEKEEPING_MS		100

/* All the plans above are prepared (a failure half-way starts over). */
static bool wf_exec_plans_ready = false;

/* Steps left running by an earlier incarnation have been requeued. */
static bool wf_exec_requeued = false;

static void wf_exec_checkpoint(WfStepExec *ex, WfStepResult *res);

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

static void
wf_exec_prepare_all(void)
{
	Oid			claim_types[5] = {INT4OID, INT8ARRAYOID, BOOLOID, BOOLOID, BOOLOID};
	Oid			resume_types[4] = {INT8OID, TEXTOID, INT4OID, TIMESTAMPTZOID};
	Oid			requeue_types[2] = {INT4OID, INT4OID};
	Oid			wait_types[4] = {INT8OID, TEXTOID, TIMESTAMPTZOID, TEXTOID};
	Oid			key_types[3] = {INT8OID, TEXTOID, INT4OID};
	Oid			done_types[4] = {INT8OID, TEXTOID, TEXTOID, JSONBOID};
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
									" SELECT c.run_id, c.step, c.http FROM c JOIN wf.run r ON r.id = c.run_id"
									" WHERE $2 IS NULL OR r.parent_run IS NULL OR r.parent_run <> ALL ($2)"
											 " FOR %s OF r SKIP LOCKED",
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
										 "SELECT ok, ready, done_in FROM wf._step_done($1, $2, $3, $4, true)",
										 4, done_types);
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
 * Timeout handler: cancels the statement in progress, as a query cancel
 * would, and remembers that the step's time was up.
 */
static void
wf_exec_timeout_handler(void)
{
	wf_exec_timed_out = true;
	QueryCancelPending = true;
	InterruptPending = true;
	SetLatch(MyLatch);
}

void
wf_exec_init(void)
{
	wf_exec_timeout_id = RegisterTimeout(USER_TIMEOUT, wf_exec_timeout_handler);
}

/*
 * Arms the timer of an sql step's statement: its timeout or, in an
 * executor that may hand it over, pg_workflow.long_step_threshold when that
 * comes first.  Returns the time armed (0: none).
 *
 * A step whose run has other steps ready in the batch is handed over once
 * it outlasts pg_workflow.batch_time already: the executor runs a run's
 * steps one after the other, and independent steps that take their time
 * would otherwise wait for each other.  Handed over, it runs in a
 * long-step worker beside them (and the ready steps of the same definition
 * go there at once).
 */
int
wf_exec_arm_timeout(WfStepExec *ex)
{
	int			limit = ex->timeout_ms;
	int			threshold = wf_guc_long_step_threshold_ms;

	if (threshold > 0 && wf_exec_has_siblings && wf_guc_batch_time_ms < threshold)
		threshold = Max(wf_guc_batch_time_ms, 1);
	wf_exec_soft_armed = false;
	if (!wf_long_am_worker && wf_long_available() && threshold > 0 &&
		(limit == 0 || threshold < limit))
	{
		limit = threshold;
		wf_exec_soft_armed = true;
	}
	if (limit > 0)
		enable_timeout_after(wf_exec_timeout_id, limit);
	return limit;
}

/*
 * Is a solo step due that no long-step worker holds?  (In an executor's
 * transaction, with SPI.)
 */
bool
wf_exec_solo_due(void)
{
	wf_exec_prepare_all();
	return SPI_execute_plan(wf_plan_solo_due, NULL, NULL, false, 1) == SPI_OK_SELECT &&
		SPI_processed == 1;
}

/* What we execute now, for wf_cancel to interrupt (0, 0: nothing). */
static void
wf_exec_set_current_run(int64 run_id, int64 parent_run)
{
	SpinLockAcquire(&wf_shared->mutex);
	wf_worker_slot->current_run = run_id;
	wf_worker_slot->current_parent = parent_run;
	SpinLockRelease(&wf_shared->mutex);
}

/*
 * Calls a jsonb_path_* function(target, path, '{}', false) in the step's
 * sandbox, as everything the definition's author wrote; *isnull is the
 * function's.
 */
static Datum
wf_exec_path_call(PGFunction fn, Jsonb *target, const char *path, bool *isnull)
{
	LOCAL_FCINFO(fcinfo, 4);
	Datum		result;
	WfSandbox	sb;

	wf_sandbox_enter(&sb);
	InitFunctionCallInfoData(*fcinfo, NULL, 4, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = JsonbPGetDatum(target);
	fcinfo->args[0].isnull = false;
	/* A malformed path raises here: the definition is at fault. */
	fcinfo->args[1].value = DirectFunctionCall1(jsonpath_in, CStringGetDatum(path));
	fcinfo->args[1].isnull = false;
	fcinfo->args[2].value = DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"));
	fcinfo->args[2].isnull = false;
	fcinfo->args[3].value = BoolGetDatum(false);
	fcinfo->args[3].isnull = false;
	result = fn(fcinfo);
	*isnull = fcinfo->isnull;
	wf_sandbox_exit(&sb);
	return result;
}

/*
 * Evaluates a "when" or "if" predicate on the context, jsonb_path_match()
 * style; an unknown (NULL) result counts as false.
 */
bool
wf_exec_predicate(Jsonb *context, const char *path)
{
	bool		isnull;
	Datum		result = wf_exec_path_call(jsonb_path_match, context, path, &isnull);

	return !isnull && DatumGetBool(result);
}

/*
 * The first item a JSON path finds in target (a template's or a map's
 * "over"), or NULL when it finds none.
 */
Jsonb *
wf_exec_path_first(Jsonb *target, const char *path)
{
	bool		isnull;
	Datum		result = wf_exec_path_call(jsonb_path_query_first, target, path,
										   &isnull);

	return isnull ? NULL : DatumGetJsonbP(result);
}

/* Appends the names of a text[] datum as work items of run_id. */
List *
wf_exec_append_ready(List *queue, int64 run_id, Datum arr, bool isnull,
					 MemoryContext batchctx)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;
	MemoryContext old;
	List	   *items = NIL;

	if (isnull)
		return queue;
	deconstruct_array(DatumGetArrayTypeP(arr), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &n);
	old = MemoryContextSwitchTo(batchctx);
	for (i = 0; i < n; i++)
	{
		WfWorkItem *item = palloc0(sizeof(WfWorkItem));

		item->run_id = run_id;
		item->step = TextDatumGetCString(elems[i]);
		items = lappend(items, item);
	}
	/* Depth first: the run that just advanced goes on first. */
	queue = list_concat(items, queue);
	MemoryContextSwitchTo(old);
	return queue;
}

/*
 * One attempt, inside the step's subtransaction: "when", the step kind and,
 * on success, the checkpoint.  Reports only through ex and res, so that
 * the caller's PG_TRY has no local variable to protect.
 */
static void
wf_exec_attempt(WfStepExec *ex, WfStepResult *res)
{
	char	   *when = wf_util_jsonb_get_text(ex->spec, "when");
	const char *status = "completed";
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	/* Any cancel still pending was meant for an earlier step. */
	QueryCancelPending = false;
	wf_exec_timed_out = false;
	wf_exec_soft_armed = false;
	wf_exec_set_current_run(ex->run_id, ex->parent_run);
	RESUME_CANCEL_INTERRUPTS();

	if (ex->resuming)
	{
		ex->kind_def->resume(ex, res);
		wf_exec_check_output(res);
	}
	else if (when != NULL && !wf_exec_predicate(ex->context, when))
	{
		res->outcome = WF_STEP_COMPLETED;
		status = "skipped";
	}
	else
	{
		ex->kind_def->execute(ex, res);
		wf_exec_check_output(res);
	}

	HOLD_CANCEL_INTERRUPTS();

	if (res->outcome == WF_STEP_WAITING)
	{
		args[0] = Int64GetDatum(ex->run_id);
		args[1] = CStringGetTextDatum(ex->step);
		args[2] = TimestampTzGetDatum(res->wake_at);
		nulls[2] = res->wake_at ? ' ' : 'n';
		if (res->wake_at != 0)
			wf_exec_timers_set = true;
		args[3] = res->wait_key ? CStringGetTextDatum(res->wait_key) : (Datum) 0;
		nulls[3] = res->wait_key ? ' ' : 'n';
		if (SPI_execute_plan(wf_plan_wait, args, nulls, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not make step \"%s\" wait", ex->step);
		return;
	}

	/* An asynchronous attempt was marked running when it was loaded. */
	if (res->outcome != WF_STEP_COMPLETED)
		return;
	res->done_status = status;
	if (wf_long_am_worker)
		wf_exec_checkpoint(ex, res);
}

/*
 * Checkpoints a completed (or skipped) step: wf._step_done.
 *
 * An executor does it in the batch's transaction, after the step's
 * subtransaction: the batch claimed the step's row, and a row locked by a
 * transaction and then updated by its subtransaction gets a MultiXactId
 * for xmax.  Such a row version is never known to be dead without a look
 * into pg_multixact, so its entry in the index of due steps is never marked
 * dead, and every claim stepped over those of all the steps done lately (a
 * map of 100,000 items spent nine tenths of its time there).  It can do so
 * because the batch also holds its run's row locked (see the claim): no
 * one else can end the run before the batch commits, so that the
 * checkpoint, which refuses a step whose run has ended, does not refuse it
 * then; should it, the batch is rolled back with an error.
 *
 * A long-step worker holds the run's row less strongly (so that the run's
 * other steps go on during a long one): it checkpoints in the step's
 * subtransaction, which a refusal rolls back.
 */
static void
wf_exec_checkpoint(WfStepExec *ex, WfStepResult *res)
{
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	bool		isnull;
	Datum		ready;

	args[0] = Int64GetDatum(ex->run_id);
	args[1] = CStringGetTextDatum(ex->step);
	args[2] = CStringGetTextDatum(res->done_status);
	args[3] = res->output ? JsonbPGetDatum(res->output) : (Datum) 0;
	nulls[3] = res->output ? ' ' : 'n';
	if (SPI_execute_plan(wf_plan_done_defer, args, nulls, false, 0) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not checkpoint step \"%s\"", ex->step);
	if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									1, &isnull)))
	{
		if (!wf_long_am_worker)
			elog(ERROR, "run " INT64_FORMAT " of step \"%s\" ended while the step was checkpointed",
				 ex->run_id, ex->step);
		/* The run ended meanwhile: the attempt must leave no trace. */
		res->outcome = WF_STEP_INTERRUPTED;
		return;
	}
	ready = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (!isnull)
		res->ready = PointerGetDatum(PG_DETOAST_DATUM_COPY(ready));
	ready = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
	if (!isnull)
		res->done_in = TextDatumGetCString(ready);
	SPI_freetuptable(SPI_tuptable);
}

/* Counts a map item done, for wf_exec_maps_checkpoint() (in batchctx). */
static void
wf_exec_map_item_done(int64 run_id, const char *map, MemoryContext batchctx)
{
	ListCell   *lc;
	WfMapDone  *m;
	MemoryContext old;

	foreach(lc, wf_exec_maps_done)
	{
		m = (WfMapDone *) lfirst(lc);
		if (m->run_id == run_id && strcmp(m->map, map) == 0)
		{
			m->n++;
			return;
		}
	}
	old = MemoryContextSwitchTo(batchctx);
	m = palloc(sizeof(WfMapDone));
	m->run_id = run_id;
	m->map = pstrdup(map);
	m->n = 1;
	wf_exec_maps_done = lappend(wf_exec_maps_done, m);
	MemoryContextSwitchTo(old);
}

/*
 * Before the batch commits: each map counts the items it completed, and
 * completes when none is left.  Returns whether steps became ready (for
 * the next batch).
 */
static bool
wf_exec_maps_checkpoint(void)
{
	ListCell   *lc;
	bool		ready = false;

	foreach(lc, wf_exec_maps_done)
	{
		WfMapDone  *m = (WfMapDone *) lfirst(lc);
		Datum		args[3];
		bool		isnull;

		wf_exec_set_item(m->run_id, m->map);
		args[0] = Int64GetDatum(m->run_id);
		args[1] = CStringGetTextDatum(m->map);
		args[2] = Int32GetDatum(m->n);
		if (SPI_execute_plan(wf_plan_children_done, args, NULL, false, 0) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "could not count the items of map step \"%s\" done", m->map);
		(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (!isnull)
			ready = true;
		SPI_freetuptable(SPI_tuptable);
	}
	wf_exec_maps_done = NIL;
	return ready;
}

/*
 * Executes one claimed step and checkpoints the outcome.  Returns the
 * queue with the steps that became ready in front.
 */
static List *
wf_exec_step(WfWorkItem *item, List *queue, MemoryContext batchctx)
{
	Datum		args[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	WfStepExec *ex = palloc0(sizeof(WfStepExec));
	WfStepResult *res = palloc0(sizeof(WfStepResult));
	Jsonb	   *defaults;
	char	   *s;
	bool		isnull;
	TupleDesc	tupdesc;
	HeapTuple	tuple;
	Datum		d;
	MemoryContext stepctx = CurrentMemoryContext;
	Size		ctx_size;
	ResourceOwner oldowner = CurrentResourceOwner;
	int			holdoff = QueryCancelHoldoffCount;
	char	   *slot_error;
	ListCell   *lc;

	/* Load the step, its run context and the workflow's defaults. */
	args[0] = Int64GetDatum(item->run_id);
	args[1] = CStringGetTextDatum(item->step);
	args[2] = Int32GetDatum(wf_worker_index);
	if (SPI_execute_plan(wf_plan_load, args, nulls, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not load step \"%s\" of run " INT64_FORMAT,
			 item->step, item->run_id);
	if (SPI_processed == 0)
		return queue;			/* the run has ended: step cancelled */

	tupdesc = SPI_tuptable->tupdesc;
	tuple = SPI_tuptable->vals[0];

	/* It needs a slot of its step concurrency key first (slots.c). */
	d = SPI_getbinval(tuple, tupdesc, 13, &isnull);
	if (!isnull)
	{
		wf_slots_want(item->run_id, item->step, TextDatumGetCString(d));
		SPI_freetuptable(SPI_tuptable);
		return queue;
	}

	ex->run_id = item->run_id;
	wf_exec_has_siblings = false;
	foreach(lc, queue)
	{
		if (((WfWorkItem *) lfirst(lc))->run_id == item->run_id)
		{
			wf_exec_has_siblings = true;
			break;
		}
	}
	ex->step = item->step;
	ex->kind = TextDatumGetCString(SPI_getbinval(tuple, tupdesc, 1, &isnull));
	ex->spec = DatumGetJsonbPCopy(SPI_getbinval(tuple, tupdesc, 2, &isnull));
	ex->owner = DatumGetObjectId(SPI_getbinval(tuple, tupdesc, 3, &isnull));
	ex->search_path = TextDatumGetCString(SPI_getbinval(tuple, tupdesc, 4, &isnull));
	ex->attempt = DatumGetInt32(SPI_getbinval(tuple, tupdesc, 5, &isnull));
	defaults = DatumGetJsonbPCopy(SPI_getbinval(tuple, tupdesc, 6, &isnull));
	ex->started_at = DatumGetTimestampTz(SPI_getbinval(tuple, tupdesc, 7, &isnull));
	ex->resuming = DatumGetBool(SPI_getbinval(tuple, tupdesc, 8, &isnull));
	d = SPI_getbinval(tuple, tupdesc, 9, &isnull);
	ex->payload = isnull ? NULL : DatumGetJsonbPCopy(d);
	d = SPI_getbinval(tuple, tupdesc, 10, &isnull);
	ex->wait_key = isnull ? NULL : TextDatumGetCString(d);
	d = SPI_getbinval(tuple, tupdesc, 11, &isnull);
	ex->escalated_at = isnull ? 0 : DatumGetTimestampTz(d);
	d = SPI_getbinval(tuple, tupdesc, 12, &isnull);
	ex->parent_run = isnull ? 0 : DatumGetInt64(d);
	d = SPI_getbinval(tuple, tupdesc, 14, &isnull);
	slot_error = isnull ? NULL : TextDatumGetCString(d);
	SPI_freetuptable(SPI_tuptable);

	if (slot_error != NULL)
	{
		/* Its concurrency key could not be rendered: the attempt fails. */
		res->outcome = WF_STEP_FAILED;
		res->error_class = WF_ERROR_PERMANENT;
		res->error_message = slot_error;
		strlcpy(res->sqlstate, "22023", sizeof(res->sqlstate));
		return wf_exec_record_failure(ex, defaults, res, queue, batchctx);
	}

	ex->context = wf_ctx_build(ex->run_id, ex->step, ex->attempt, &ctx_size);

	if (ex->context == NULL)
	{
		/* Not even loaded into the step: it fails as if it had run. */
		res->outcome = WF_STEP_FAILED;
		res->error_class = WF_ERROR_PERMANENT;
		res->error_message = psprintf("run context of %zu bytes exceeds pg_workflow.max_context_size (%d bytes)",
									  ctx_size, wf_guc_max_context_size);
		strlcpy(res->sqlstate, "54000", sizeof(res->sqlstate));
		return wf_exec_record_failure(ex, defaults, res, queue, batchctx);
	}

	s = wf_util_jsonb_get_text(ex->spec, "timeout");
	ex->timeout_ms = s ? (int) Min(wf_util_interval_ms(s), INT_MAX) : 0;
	ex->kind_def = wf_exec_find_kind(ex->kind);
	if (ex->kind_def == NULL)
		elog(ERROR, "step \"%s\" of run " INT64_FORMAT " has unknown kind \"%s\"",
			 ex->step, ex->run_id, ex->kind);

	/* Its owner may have been dropped since the last sweep (owners.c). */
	if (wf_owners_gone(ex->owner))
	{
		wf_owners_step_dropped(ex, res);
		return wf_exec_record_failure(ex, defaults, res, queue, batchctx);
	}

	pgstat_report_activity(STATE_RUNNING,
						   psprintf("run " INT64_FORMAT " step %s", ex->run_id, ex->step));
	wf_sandbox_begin_step(ex->run_id, ex->owner, ex->search_path);

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(stepctx);
	PG_TRY();
	{
		wf_exec_attempt(ex, res);
		if (res->outcome == WF_STEP_COMPLETED || res->outcome == WF_STEP_STARTED ||
			res->outcome == WF_STEP_WAITING || res->outcome == WF_STEP_EXPANDED)
			ReleaseCurrentSubTransaction();
		else
			RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(stepctx);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		QueryCancelHoldoffCount = holdoff;
		disable_timeout(wf_exec_timeout_id, false);

		MemoryContextSwitchTo(stepctx);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(stepctx);
		CurrentResourceOwner = oldowner;

		if (res->request != NULL)
		{
			wf_http_forget(res->request);
			res->request = NULL;
		}
		res->outcome = WF_STEP_FAILED;
		res->error_message = edata->message;
		res->error_detail = edata->detail;
		strlcpy(res->sqlstate, unpack_sql_state(edata->sqlerrcode),
				sizeof(res->sqlstate));
		res->error_class = wf_util_classify_sqlstate(edata->sqlerrcode);
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
		{
			if (wf_exec_timed_out && wf_exec_soft_armed)
			{
				/* Rolled back, not counted: it goes to a long-step worker. */
				res->outcome = WF_STEP_DEFERRED;
				res->offload = true;
			}
			else if (wf_exec_timed_out)
			{
				res->timed_out = true;
				res->error_message = psprintf("step timed out after %d ms",
											  ex->timeout_ms);
			}
			else
				res->outcome = WF_STEP_INTERRUPTED;
		}
	}
	PG_END_TRY();

	wf_sandbox_end_step();
	wf_exec_set_current_run(0, 0);
	QueryCancelPending = false;

	if (res->outcome == WF_STEP_COMPLETED)
	{
		if (!wf_long_am_worker)
			wf_exec_checkpoint(ex, res);
		if (res->done_in != NULL)
			wf_exec_map_item_done(ex->run_id, res->done_in, batchctx);
		return wf_exec_append_ready(queue, ex->run_id, res->ready,
									res->ready == (Datum) 0, batchctx);
	}
	if (res->outcome == WF_STEP_WAITING)
		return queue;
	if (res->outcome == WF_STEP_EXPANDED)
		return wf_exec_append_ready(queue, ex->run_id, res->ready,
									res->ready == (Datum) 0, batchctx);
	if (res->outcome == WF_STEP_STARTED)
	{
		/* An agent step's task was created in the step's subtransaction. */
		if (res->request != NULL)
			wf_http_enqueue(res->request);
		return queue;
	}
	if (res->request != NULL)
	{
		/* Rolled back after all (the run ended): never send it. */
		wf_http_forget(res->request);
		res->request = NULL;
	}
	queue = wf_exec_record_failure(ex, defaults, res, queue, batchctx);
	if (res->offload)
	{
		Datum		sargs[2];

		sargs[0] = Int64GetDatum(ex->run_id);
		sargs[1] = CStringGetTextDatum(ex->step);
		if (SPI_execute_plan(wf_plan_solo, sargs, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not hand step \"%s\" over", ex->step);
		ereport(DEBUG1,
				(errmsg("step \"%s\" of run " INT64_FORMAT " outlasted pg_workflow.long_step_threshold: handed to a long-step worker",
						ex->step, ex->run_id)));
		wf_exec_offloaded++;

		/*
		 * The same step of other runs (or the other items of its map) due
		 * soon will most likely take as long: they go to long-step workers
		 * at once, rather than each holding up an executor for the
		 * threshold first.  (This one is solo already.)
		 */
		sargs[0] = JsonbPGetDatum(ex->spec);
		if (SPI_execute_plan(wf_plan_solo_alike, sargs, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not hand the steps like \"%s\" over", ex->step);
		wf_exec_offloaded += (int) Min(SPI_processed, INT_MAX / 2);
	}
	return queue;
}

/*
 * Drops the requests in flight whose runs have ended (cancelled, failed),
 * when a commit that ended runs asked us to look.
 */
static void
wf_exec_recheck_http(void)
{
	bool		recheck;
	int64	   *runs;
	int			n;
	Datum	   *elems;
	Datum		args[1];
	Oid			types[1] = {INT8ARRAYOID};
	int64	   *ended;
	uint64		i;
	bool		isnull;

	SpinLockAcquire(&wf_shared->mutex);
	recheck = wf_worker_slot->recheck_http;
	wf_worker_slot->recheck_http = false;
	SpinLockRelease(&wf_shared->mutex);
	if (!recheck || (runs = wf_http_in_flight_runs(&n)) == NULL)
		return;

	elems = palloc(sizeof(Datum) * n);
	for (i = 0; i < n; i++)
		elems[i] = Int64GetDatum(runs[i]);
	args[0] = PointerGetDatum(construct_array(elems, n, INT8OID, sizeof(int64),
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	if (SPI_execute_with_args("SELECT id FROM wf.run WHERE id = ANY ($1)"
							  " AND status NOT IN ('pending', 'running', 'waiting')",
							  1, types, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not look at the runs of the requests in flight");
	if (SPI_processed == 0)
		return;
	ended = palloc(sizeof(int64) * SPI_processed);
	for (i = 0; i < SPI_processed; i++)
		ended[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
											   SPI_tuptable->tupdesc, 1, &isnull));
	wf_http_drop_runs(ended, (int) SPI_processed);
}

/*
 * Makes the changes left in wf.deferred (wake-ups from wf_signal and
 * wf_emit, cancellations of an ended run's steps and child runs) because
 * another transaction held their rows.  True when some of them must wait
 * still: the caller asks for another look after its commit.
 */
static bool
wf_exec_run_deferred(void)
{
	ErrorData  *edata;
	int32		held;

	if (!wf_shmem_take_deferred())
		return false;

	/*
	 * In a subtransaction of its own: a change that fails must not keep the
	 * executor from the rest of its work.  It is tried again later.
	 */
	edata = wf_util_try_spi(wf_plan_deferred, NULL, 0, NULL, NULL, &held);
	if (edata != NULL)
	{
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("could not make the changes deferred in wf.deferred: %s",
						edata->message),
				 errhint("They are tried again later.")));
		FreeErrorData(edata);
		held = 1;
	}

	if (held > 0)
		return true;
	wf_exec_deferred_retry_ms = WF_DEFERRED_RETRY_MS;
	return false;
}

/*
 * Some deferred changes must wait for a lock still held: asks for another
 * look, and returns when it should be.
 */
static TimestampTz
wf_exec_retry_deferred(void)
{
	TimestampTz retry = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													wf_exec_deferred_retry_ms);

	wf_shmem_set_deferred();
	wf_exec_deferred_retry_ms = Min(2 * wf_exec_deferred_retry_ms,
									WF_DEFERRED_RETRY_MAX_MS);
	return retry;
}

/*
 * Removes the finished runs and the events that pg_workflow.retention and
 * pg_workflow.event_retention no longer keep, one batch, when that is due
 * (wf._prune says when there will be something to remove).
 */
static void
wf_exec_prune(void)
{
	TimestampTz now = GetCurrentTimestamp();
	Datum		args[2];
	Datum		next;
	bool		isnull;

	if (now < wf_exec_next_prune ||
		(wf_guc_retention_s == 0 && wf_guc_event_retention_s == 0))
		return;
	/* Should it fail, the batch is not tried again with it at once. */
	wf_exec_next_prune = TimestampTzPlusMilliseconds(now, WF_PRUNE_INTERVAL_MS);
	args[0] = Int32GetDatum(wf_guc_retention_s);
	args[1] = Int32GetDatum(wf_guc_event_retention_s);
	if (SPI_execute_plan(wf_plan_prune, args, NULL, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not remove old runs and events");
	next = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
		wf_exec_next_prune = DT_NOEND;
	else if (DatumGetTimestampTz(next) <= now)
		wf_exec_next_prune = TimestampTzPlusMilliseconds(now, WF_PRUNE_BUSY_MS);
	else
		wf_exec_next_prune = Max(DatumGetTimestampTz(next), wf_exec_next_prune);
}

/*
 * Runs one executor transaction.  Returns the number of steps executed;
 * when none was due, *next_due is when the next one will be (0: none
 * known, sleep until woken).
 */
int
wf_exec_batch(int max_steps, TimestampTz *next_due)
{
	const int64 *excluded;
	int			nexcluded;
	MemoryContext batchctx = CurrentMemoryContext;
	MemoryContext stepctx;
	List	   *queue = NIL;
	Datum		args[5];
	char		nulls[5] = {' ', 'n', ' ', ' ', ' '};
	List	   *completions = NIL;
	ListCell   *lc;
	bool		requeued = false;
	Datum		next_deadline;
	int64	   *interrupted;
	int			ninterrupted;
	uint64		i;
	int			done = 0;
	int			budget;
	TimestampTz start;
	TimestampTz now;
	bool		isnull;
	bool		deferred_held = false;
	bool		solo_due = false;
	bool		maps_ready = false;
	int			nlaunch;

	*next_due = 0;
	wf_exec_timers_set = false;
	wf_exec_offloaded = 0;
	wf_ctx_batch(batchctx);
	wf_exec_maps_done = NIL;

	wf_exec_fail_suspect_if_due();

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	wf_slots_defer_begin();

	if (!wf_util_extension_ready())
	{
		PopActiveSnapshot();
		CommitTransactionCommand();
		MemoryContextSwitchTo(batchctx);
		return 0;
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	wf_exec_prepare_all();

	/* A long-step worker only claims solo steps: the rest is the executors'. */
	if (wf_long_am_worker)
	{
		next_deadline = 0;
		goto claim;
	}

	/* Requests an earlier incarnation of this executor left in flight. */
	if (!wf_exec_requeued)
	{
		Datum		rargs[2];

		rargs[0] = Int32GetDatum(wf_worker_index);
		rargs[1] = Int32GetDatum(wf_guc_workers);
		if (SPI_execute_plan(wf_plan_requeue, rargs, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not requeue orphaned steps");
		requeued = true;
	}

	completions = wf_http_completions();

	/* Runs ended elsewhere: drop their requests still in flight. */
	wf_exec_recheck_http();

	/* Before the claim, which then sees the steps woken. */
	deferred_held = wf_exec_run_deferred();

	/*
	 * Runs past their workflow timeout fail, due schedules start their runs,
	 * old runs and events go; the next deadline, schedule or removal bounds
	 * our sleep.
	 */
	now = GetCurrentTimestamp();
	if (wf_exec_housekeeping_at == 0 ||
		TimestampDifferenceExceeds(wf_exec_housekeeping_at, now, WF_HOUSEKEEPING_MS) ||
		(wf_exec_housekeeping_due != 0 && wf_exec_housekeeping_due <= now))
	{
		Datum		due;

		if (SPI_execute_plan(wf_plan_expire, NULL, NULL, false, 1) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "could not expire runs");
		due = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		wf_exec_housekeeping_due = isnull ? 0 : DatumGetTimestampTz(due);
		wf_exec_housekeeping_at = now;
		next_deadline = wf_exec_housekeeping_due;
	}
	else
	{
		TimestampTz bound = TimestampTzPlusMilliseconds(wf_exec_housekeeping_at,
														WF_HOUSEKEEPING_MS);

		next_deadline = wf_exec_housekeeping_due;
		if (next_deadline == 0 || bound < (TimestampTz) next_deadline)
			next_deadline = bound;
	}
	wf_exec_prune();
	if (wf_exec_next_prune != 0 && wf_exec_next_prune != DT_NOEND &&
		(next_deadline == 0 || wf_exec_next_prune < next_deadline))
		next_deadline = wf_exec_next_prune;

claim:
	args[0] = Int32GetDatum(max_steps);
	interrupted = wf_shmem_interrupted_runs(&ninterrupted);
	excluded = wf_exec_excluded_runs(&nexcluded);
	if (ninterrupted + nexcluded > 0)
	{
		Datum	   *elems = palloc(sizeof(Datum) * (ninterrupted + nexcluded));

		for (i = 0; i < ninterrupted; i++)
			elems[i] = Int64GetDatum(interrupted[i]);
		for (i = 0; i < nexcluded; i++)
			elems[ninterrupted + i] = Int64GetDatum(excluded[i]);
		args[1] = PointerGetDatum(construct_array(elems, ninterrupted + nexcluded,
												  INT8OID, sizeof(int64), FLOAT8PASSBYVAL,
												  TYPALIGN_DOUBLE));
		nulls[1] = ' ';
	}
	args[2] = BoolGetDatum(!wf_long_am_worker &&
						   wf_http_busy() < wf_guc_http_max_concurrency);
	/* Solo steps are the long-step workers', unless none can be had. */
	args[3] = BoolGetDatum(wf_long_am_worker);
	args[4] = BoolGetDatum(!wf_long_am_worker && !wf_long_available());
	if (SPI_execute_plan(wf_plan_claim, args, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not claim ready steps");

	if (SPI_processed == 0 && completions == NIL)
	{
		/* Solo steps left without a long-step worker (a restart...). */
		if (!wf_long_am_worker && wf_long_available())
			solo_due = wf_exec_solo_due();
		if (SPI_execute_plan(wf_plan_next_due, NULL, NULL, true, 1) == SPI_OK_SELECT &&
			SPI_processed == 1)
		{
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0],
										  SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
				*next_due = DatumGetTimestampTz(d);
		}
		if (next_deadline != 0 && (*next_due == 0 || next_deadline < *next_due))
			*next_due = next_deadline;
		wf_slots_release_all();
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
		MemoryContextSwitchTo(batchctx);
		if (requeued)
			wf_exec_requeued = true;
		if (deferred_held)
		{
			TimestampTz retry = wf_exec_retry_deferred();

			if (*next_due == 0 || retry < *next_due)
				*next_due = retry;
		}
		if (solo_due)
			(void) wf_long_launch();
		return 0;
	}

	/* Working: wake-ups now go to another executor. */
	SpinLockAcquire(&wf_shared->mutex);
	wf_worker_slot->sleeping = false;
	SpinLockRelease(&wf_shared->mutex);
	if (SPI_processed == max_steps)
		wf_shmem_wake_one();	/* there is probably more */

	MemoryContextSwitchTo(batchctx);
	for (i = 0; i < SPI_processed; i++)
	{
		WfWorkItem *item = palloc(sizeof(WfWorkItem));

		item->run_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
												   SPI_tuptable->tupdesc, 1, &isnull));
		item->step = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[i],
													   SPI_tuptable->tupdesc, 2, &isnull));
		item->http = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i],
												SPI_tuptable->tupdesc, 3, &isnull));
		queue = lappend(queue, item);
	}
	SPI_freetuptable(SPI_tuptable);

	/*
	 * Checkpoint the http requests that finished.  After the claim: the
	 * steps they make ready are ours, uncommitted, and must be queued once.
	 */
	stepctx = AllocSetContextCreate(batchctx, "pg_workflow step",
									ALLOCSET_DEFAULT_SIZES);
	foreach(lc, completions)
	{
		WfHttpCompletion *c = (WfHttpCompletion *) lfirst(lc);
		int64		crun;
		char	   *cstep;
		int			cattempt;
		TimestampTz cstarted;

		wf_http_completion_key(c, &crun, &cstep, &cattempt, &cstarted);
		wf_exec_set_item(crun, cstep);
		MemoryContextSwitchTo(stepctx);
		queue = wf_exec_completion(c, queue, batchctx);
		MemoryContextSwitchTo(batchctx);
		MemoryContextReset(stepctx);
		done++;
	}

	budget = wf_long_am_worker ? 1 : Max(max_steps, Min(2 * max_steps, WF_MAX_BATCH));
	start = GetCurrentTimestamp();

	while (queue != NIL)
	{
		WfWorkItem *item = linitial(queue);

		queue = list_delete_first(queue);
		CHECK_FOR_INTERRUPTS();
		if (wf_shmem_run_is_interrupted(item->run_id))
			continue;			/* stays ready for after the interrupter */
		if (item->http && wf_http_busy() >= wf_guc_http_max_concurrency)
			continue;			/* stays ready until there is room */

		wf_exec_set_item(item->run_id, item->step);
		MemoryContextSwitchTo(stepctx);
		queue = wf_exec_step(item, queue, batchctx);
		MemoryContextSwitchTo(batchctx);
		MemoryContextReset(stepctx);
		done++;

		/* A step handed over took its time: commit what is done. */
		if (done >= budget || wf_exec_offloaded > 0 ||
			TimestampDifferenceExceeds(start, GetCurrentTimestamp(),
									   wf_guc_batch_time_ms))
			break;
	}
	/* The maps done make their successors ready: someone should claim them. */
	if (wf_exec_maps_done != NIL && wf_exec_maps_checkpoint())
		maps_ready = true;
	wf_exec_set_item(0, NULL);
	wf_ctx_batch(NULL);
	wf_slots_release_all();
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(batchctx);
	pgstat_report_activity(STATE_IDLE, "");

	/* Let autovacuum know about the rows we updated. */
	pgstat_report_stat(false);

	/* Committed: send what was started, forget what was checkpointed. */
	if (requeued)
		wf_exec_requeued = true;
	if (deferred_held)
	{
		TimestampTz retry = wf_exec_retry_deferred();

		if (done == 0)
			*next_due = retry;
	}
	/* A worker for each step handed over, as far as there are slots. */
	for (nlaunch = 0; nlaunch < Min(wf_exec_offloaded, wf_guc_max_long_workers); nlaunch++)
		if (!wf_long_launch())
			break;
	if (!wf_long_am_worker)
		wf_http_submit();
	foreach(lc, completions)
		wf_http_release((WfHttpCompletion *) lfirst(lc));
	if (wf_slots_pending())
	{
		wf_slots_take();
		MemoryContextSwitchTo(batchctx);
	}

	/*
	 * Work left for others: some of it may be a parallel branch.  New timers:
	 * an executor asleep looks again and sleeps until the earliest, so that
	 * it does not depend on us, who may be busy with a long step then.
	 */
	if (queue != NIL || wf_exec_timers_set || maps_ready)
		wf_shmem_wake_one();

	return done;
}

PG_FUNCTION_INFO_V1(wf_agent_finish);

/*
 * wf._agent_finish(run_id, step, attempt, started_at, output, error,
 *					retryable, timed_out) RETURNS boolean
 *
 * Checkpoints the attempt of an agent step that an agent completed (error
 * NULL) or failed, or whose lease or timeout expired, through the same
 * path as any step: the output's size limit, an {"error": ...} output as
 * a business error, the successors made ready, or the failure recorded
 * under the step's retry policy and on_error (transient when retryable,
 * business otherwise).  False, with nothing changed, when that attempt is
 * no longer the step's running one (the run was cancelled, retried or
 * rewound).  An executor is woken at commit for what became ready.
 */
Datum
wf_agent_finish(PG_FUNCTION_ARGS)
{
	WfStepExec *ex = palloc0(sizeof(WfStepExec));
	WfStepResult *res = palloc0(sizeof(WfStepResult));
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	Jsonb	   *defaults;
	bool		isnull;

	ex->run_id = PG_GETARG_INT64(0);
	ex->step = text_to_cstring(PG_GETARG_TEXT_PP(1));
	ex->attempt = PG_GETARG_INT32(2);
	ex->started_at = PG_GETARG_TIMESTAMPTZ(3);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	wf_exec_prepare_all();
	args[0] = Int64GetDatum(ex->run_id);
	args[1] = PG_GETARG_DATUM(1);
	args[2] = Int32GetDatum(ex->attempt);
	args[3] = TimestampTzGetDatum(ex->started_at);
	if (SPI_execute_plan(wf_plan_resume, args, nulls, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not resume step \"%s\"", ex->step);
	if (SPI_processed == 0)
	{
		SPI_finish();
		PG_RETURN_BOOL(false);
	}
	ex->spec = DatumGetJsonbPCopy(SPI_getbinval(SPI_tuptable->vals[0],
												SPI_tuptable->tupdesc, 1, &isnull));
	defaults = DatumGetJsonbPCopy(SPI_getbinval(SPI_tuptable->vals[0],
												SPI_tuptable->tupdesc, 2, &isnull));
	SPI_freetuptable(SPI_tuptable);

	if (PG_ARGISNULL(5))
	{
		res->outcome = WF_STEP_COMPLETED;
		res->output = PG_ARGISNULL(4) ? NULL : PG_GETARG_JSONB_P_COPY(4);
		wf_exec_check_output(res);
	}
	else
	{
		res->outcome = WF_STEP_FAILED;
		res->error_message = text_to_cstring(PG_GETARG_TEXT_PP(5));
		res->error_class = (!PG_ARGISNULL(6) && PG_GETARG_BOOL(6)) ?
			WF_ERROR_TRANSIENT : WF_ERROR_BUSINESS;
		res->timed_out = !PG_ARGISNULL(7) && PG_GETARG_BOOL(7);
	}

	/*
	 * The pool's circuit breaker: a task completed, or failed for a reason
	 * of its own, is an answer; a transient failure, an expired lease or a
	 * lost agent is not.
	 */
	res->breaker_opened =
		wf_exec_breaker_record(ex->spec, wf_agent_breaker_key(ex->spec),
							   res->outcome == WF_STEP_COMPLETED ||
							   res->error_class == WF_ERROR_BUSINESS);

	if (res->outcome == WF_STEP_COMPLETED)
	{
		Datum		dargs[4];
		char		dnulls[4] = {' ', ' ', ' ', ' '};

		dargs[0] = args[0];
		dargs[1] = args[1];
		dargs[2] = CStringGetTextDatum("completed");
		dargs[3] = res->output ? JsonbPGetDatum(res->output) : (Datum) 0;
		dnulls[3] = res->output ? ' ' : 'n';
		if (SPI_execute_plan(wf_plan_done, dargs, dnulls, false, 0) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "could not checkpoint step \"%s\"", ex->step);
		if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
										1, &isnull)))
		{
			SPI_finish();
			PG_RETURN_BOOL(false);
		}
	}
	else
		(void) wf_exec_record_failure(ex, defaults, res, NIL, CurrentMemoryContext);

	SPI_finish();
	wf_shmem_wake_at_commit();
	PG_RETURN_BOOL(true);
}
