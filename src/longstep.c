/*-------------------------------------------------------------------------
 *
 * longstep.c
 *		Long-step workers: dynamic background workers that run, each alone
 *		in its transaction, the sql steps that outlast
 *		pg_workflow.long_step_threshold in an executor.
 *
 * An executor runs many short steps in one transaction.  A step still
 * running at the threshold would hold up the steps claimed with it and
 * keep those already done uncommitted, so the executor cancels it (its
 * subtransaction rolls back: nothing of it happened, and the attempt is not
 * counted), marks it "solo" and commits the rest.  Solo steps are claimed
 * only by long-step workers, started on demand here, up to
 * pg_workflow.max_long_workers at once; each takes one solo step per
 * transaction until none is due, then exits.  They use the shared-memory
 * slots after the executors', so that wf_cancel interrupts their steps the
 * same way.
 *
 * Should no long-step worker be startable (max_worker_processes is
 * exhausted), executors stop handing steps over and run solo steps
 * themselves, so that nothing is stranded.
 *
 * src/longstep.c
 *
 *-------------------------------------------------------------------------
 */
#include "pg_workflow.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

/* Are we a long-step worker? */
bool		wf_long_am_worker = false;

/* After a failed start, executors keep their steps for this long. */
#define WF_LONG_RETRY_MS	10000

static TimestampTz wf_long_unavailable_until = 0;

/*
 * May an executor hand a step over now?  Yes unless long-step workers are
 * disabled or could not be started lately.
 */
bool
wf_long_available(void)
{
	if (wf_guc_max_long_workers == 0 || wf_guc_long_step_threshold_ms == 0)
		return false;
	return wf_long_unavailable_until == 0 ||
		GetCurrentTimestamp() >= wf_long_unavailable_until;
}

/*
 * Starts a long-step worker in a free slot, if there is one.  Returns
 * false when one was needed but could not be started.
 */
bool
wf_long_launch(void)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	int			index = -1;
	int			i;

	SpinLockAcquire(&wf_shared->mutex);
	for (i = wf_shared->nworkers; i < wf_shared->nslots; i++)
	{
		WfWorkerSlot *slot = &wf_shared->workers[i];

		if (slot->pid == 0 && !slot->reserved)
		{
			slot->reserved = true;
			index = i;
			break;
		}
	}
	SpinLockRelease(&wf_shared->mutex);
	if (index < 0)
		return true;			/* all running: they take the step in turn */

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "pg_workflow");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "wf_long_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "pg_workflow long-step worker %d",
			 index - wf_shared->nworkers + 1);
	snprintf(worker.bgw_type, BGW_MAXLEN, "pg_workflow long-step worker");
	worker.bgw_main_arg = Int32GetDatum(index);
	worker.bgw_notify_pid = 0;

	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
	{
		SpinLockAcquire(&wf_shared->mutex);
		wf_shared->workers[index].reserved = false;
		SpinLockRelease(&wf_shared->mutex);
		wf_long_unavailable_until =
			TimestampTzPlusMilliseconds(GetCurrentTimestamp(), WF_LONG_RETRY_MS);
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start a pg_workflow long-step worker"),
				 errdetail("Executors run long steps themselves for %d seconds.",
						   WF_LONG_RETRY_MS / 1000),
				 errhint("Raise max_worker_processes, or lower pg_workflow.max_long_workers.")));
		return false;
	}
	return true;
}

/*
 * Once detached from its slot, a long-step worker that is about to exit
 * looks once more: an executor that handed a step over while the slot was
 * still taken started no worker for it.
 */
static bool
wf_long_more_due(void)
{
	bool		due;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	due = wf_util_extension_ready() && wf_exec_solo_due();
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	return due;
}

/*
 * Main of a long-step worker: the solo steps due, one per transaction,
 * then exit.  An error that escapes a step's handling is dealt with as in
 * the executors (wf_exec_note_error), and the loop goes on.
 */
void
wf_long_main(Datum main_arg)
{
	int			index = DatumGetInt32(main_arg);
	sigjmp_buf	local_sigjmp_buf;
	MemoryContext iterctx;

	/* Kept across longjmp: static, not a register's copy. */
	static int	errors = 0;

	wf_long_am_worker = true;
	wf_worker_start(index, false);

	iterctx = AllocSetContextCreate(TopMemoryContext,
									"pg_workflow long-step iteration",
									ALLOCSET_DEFAULT_SIZES);

	if (sigsetjmp(local_sigjmp_buf, 1) != 0)
	{
		QueryCancelHoldoffCount = 1;
		error_context_stack = NULL;
		HOLD_INTERRUPTS();
		disable_all_timeouts(false);
		QueryCancelPending = false;
		EmitErrorReport();
		wf_exec_note_error();
		AbortCurrentTransaction();
		MemoryContextSwitchTo(TopMemoryContext);
		FlushErrorState();
		wf_slots_forget();
		wf_worker_slot->current_run = 0;
		wf_worker_slot->current_parent = 0;
		RESUME_INTERRUPTS();
		if (++errors > 10)
			proc_exit(1);		/* the executors start another later */
	}
	PG_exception_stack = &local_sigjmp_buf;

	for (;;)
	{
		TimestampTz next_due;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		MemoryContextReset(iterctx);
		MemoryContextSwitchTo(iterctx);
		if (wf_exec_batch(1, &next_due) == 0)
			break;
	}

	wf_worker_detach(0, (Datum) 0);
	if (wf_long_more_due())
		(void) wf_long_launch();
	proc_exit(0);
}
