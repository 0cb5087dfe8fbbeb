/*-------------------------------------------------------------------------
 *
 * exec_housekeeping.c
 *		What an executor does before it claims steps, besides them: the
 *		requests in flight of ended runs dropped, the changes deferred in
 *		wf.deferred made, runs expired, schedules fired, SLAs and task
 *		leases checked, old runs and events removed, each when it is due.
 *
 * The batch executor (executor.c) calls wf_exec_housekeeping() in the
 * batch's transaction, with SPI connected, and wf_exec_retry_deferred()
 * after its commit when deferred changes must wait still.
 *
 * src/exec_housekeeping.c
 *
 *-------------------------------------------------------------------------
 */
#include "pg_workflow.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/timestamp.h"

#include "executor_int.h"

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
TimestampTz
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
 * The housekeeping before the claim, in the batch's transaction with SPI
 * connected.  Returns the next deadline, schedule or removal, which bounds
 * the executor's sleep (0: none known); *deferred_held is whether deferred
 * changes must wait still (wf_exec_retry_deferred() after the commit).
 */
TimestampTz
wf_exec_housekeeping(bool *deferred_held)
{
	Datum		next_deadline;
	TimestampTz now;
	bool		isnull;

	/* Runs ended elsewhere: drop their requests still in flight. */
	wf_exec_recheck_http();

	/* Before the claim, which then sees the steps woken. */
	*deferred_held = wf_exec_run_deferred();

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

	return (TimestampTz) next_deadline;
}
