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
 * that escape a step's handling exec_contain.c's, the prepared statements
 * exec_plans.c's, what is done before the claim besides steps (deferred
 * changes, expiry, schedules, pruning) exec_housekeeping.c's;
 * executor_int.h is what these files share.  The evaluation of a
 * definition's JSON paths ("when", and for the kinds "if", a map's "over",
 * a template's paths) is exec_path.c's.
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

/*
 * The current batch set timers (a step waiting with a timeout, a retry
 * later): the executors asleep learn about them only when they look.
 */
bool wf_exec_timers_set = false;

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

/* Steps left running by an earlier incarnation have been requeued. */
static bool wf_exec_requeued = false;

static void wf_exec_checkpoint(WfStepExec *ex, WfStepResult *res);

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
 * A held step (WfWorkItem.held) that this batch does not run after all:
 * written ready, for any executor to claim once the batch commits.
 */
static void
wf_exec_release_held(WfWorkItem *item)
{
	Datum		args[2];

	if (!item->held)
		return;
	args[0] = Int64GetDatum(item->run_id);
	args[1] = CStringGetTextDatum(item->step);
	if (SPI_execute_plan(wf_plan_release, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not make step \"%s\" of run " INT64_FORMAT " ready",
			 item->step, item->run_id);
	item->held = false;
}

/* Appends the names of a text[] datum as work items of run_id. */
List *
wf_exec_append_ready(List *queue, int64 run_id, Datum arr, bool isnull, bool held,
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
		item->held = held;
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
	Datum		args[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	bool		isnull;
	Datum		ready;

	args[0] = Int64GetDatum(ex->run_id);
	args[1] = CStringGetTextDatum(ex->step);
	args[2] = CStringGetTextDatum(res->done_status);
	args[3] = res->output ? JsonbPGetDatum(res->output) : (Datum) 0;
	nulls[3] = res->output ? ' ' : 'n';
	/*
	 * An executor runs the step's successor next, unless it has other steps
	 * of the run at hand (which may look at the states of their run's
	 * steps); a long-step worker leaves it to others.
	 */
	args[4] = BoolGetDatum(!wf_long_am_worker && !wf_exec_has_siblings);
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
	ready = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull);
	res->ready_held = !isnull && DatumGetBool(ready);
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
		char	   *key = TextDatumGetCString(d);

		SPI_freetuptable(SPI_tuptable);
		/* The slot goes to a ready step. */
		wf_exec_release_held(item);
		wf_slots_want(item->run_id, item->step, key);
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
									res->ready == (Datum) 0, res->ready_held,
									batchctx);
	}
	if (res->outcome == WF_STEP_WAITING)
		return queue;
	if (res->outcome == WF_STEP_EXPANDED)
		return wf_exec_append_ready(queue, ex->run_id, res->ready,
									res->ready == (Datum) 0, false, batchctx);
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

	/*
	 * Requests of runs ended elsewhere dropped, deferred changes made, runs
	 * past their workflow timeout failed, due schedules started, old runs
	 * and events removed (exec_housekeeping.c); the next deadline, schedule
	 * or removal bounds our sleep.
	 */
	next_deadline = wf_exec_housekeeping(&deferred_held);

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
	if (wf_exec_claim(args, nulls) != SPI_OK_SELECT)
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
		WfWorkItem *item = palloc0(sizeof(WfWorkItem));

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
		{
			wf_exec_release_held(item); /* ready for after the interrupter */
			continue;
		}
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
	/* What the batch leaves for the next ones. */
	foreach(lc, queue)
		wf_exec_release_held((WfWorkItem *) lfirst(lc));
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
