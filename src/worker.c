/*-------------------------------------------------------------------------
 *
 * worker.c
 *		The executor background workers: registration and main loop.
 *
 * Each executor connects to pg_workflow.database and repeats: look for due
 * steps and run a batch of them (executor.c); when none is due, sleep on
 * the process latch until woken by a committed wf_start (or any other
 * change that makes work due), or until the next retry or start_at time.
 * An idle executor runs no query at all.
 *
 * SIGTERM ends the executor at the next interrupt check, rolling back the
 * transaction in progress; SIGHUP reloads the configuration; SIGINT
 * interrupts the step being executed (wf_cancel) or ends a step's timeout.
 *
 * When pg_workflow.database does not exist, connecting to it is FATAL and
 * the postmaster would start the executor again every few seconds, each
 * time with the same error.  So an executor whose previous start did not
 * get connected first looks for the database without connecting to one:
 * while it is missing, the executors say so once in the log and look again
 * quietly, less and less often; once it exists, the executor exits to be
 * started again, connected to it.
 *
 * src/worker.c
 *
 *-------------------------------------------------------------------------
 */
#include "pg_workflow.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

WfWorkerSlot *wf_worker_slot = NULL;
int			wf_worker_index = -1;

/* How often an executor looks for a missing pg_workflow.database. */
#define WF_DB_PROBE_FIRST_MS	5000
#define WF_DB_PROBE_MAX_MS		60000

void
wf_worker_register(int index)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "pg_workflow");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "wf_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "pg_workflow executor %d", index + 1);
	snprintf(worker.bgw_type, BGW_MAXLEN, "pg_workflow executor");
	worker.bgw_main_arg = Int32GetDatum(index);
	RegisterBackgroundWorker(&worker);
}

void
wf_worker_detach(int code, Datum arg)
{
	SpinLockAcquire(&wf_shared->mutex);
	if (wf_worker_slot->pid != MyProcPid)
	{
		/* Left already (a long-step worker), maybe taken by another. */
		SpinLockRelease(&wf_shared->mutex);
		return;
	}
	wf_worker_slot->pid = 0;
	wf_worker_slot->latch = NULL;
	wf_worker_slot->sleeping = false;
	wf_worker_slot->current_run = 0;
	wf_worker_slot->current_parent = 0;
	SpinLockRelease(&wf_shared->mutex);

	/* What we held is ready again: another executor need not wait for us. */
	wf_shmem_wake_one();
}

static void
wf_worker_attach(int index)
{
	wf_worker_index = index;
	wf_worker_slot = &wf_shared->workers[index];
	SpinLockAcquire(&wf_shared->mutex);
	wf_worker_slot->pid = MyProcPid;
	wf_worker_slot->latch = MyLatch;
	wf_worker_slot->sleeping = false;
	wf_worker_slot->current_run = 0;
	wf_worker_slot->current_parent = 0;
	wf_worker_slot->reserved = false;
	SpinLockRelease(&wf_shared->mutex);
	before_shmem_exit(wf_worker_detach, (Datum) 0);
}

/*
 * Returns when connecting to pg_workflow.database may work: at once, unless
 * the previous start of this executor did not get connected.  Then waits,
 * connected to no database, until pg_workflow.database exists, and exits to
 * be started again (a process connects to one database only).
 */
static void
wf_worker_await_database(int index)
{
	WfWorkerSlot *slot = &wf_shared->workers[index];
	bool		failed;
	long		delay_ms = WF_DB_PROBE_FIRST_MS;

	SpinLockAcquire(&wf_shared->mutex);
	failed = slot->connecting;
	slot->connecting = true;
	SpinLockRelease(&wf_shared->mutex);
	if (!failed)
		return;

	/* The shared catalogs, pg_database among them, only. */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_activity(STATE_IDLE,
						   psprintf("waiting for database \"%s\"", wf_guc_database));
	for (;;)
	{
		bool		exists;
		bool		tell;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		StartTransactionCommand();
		exists = OidIsValid(get_database_oid(wf_guc_database, true));
		CommitTransactionCommand();

		SpinLockAcquire(&wf_shared->mutex);
		if (exists)
		{
			slot->connecting = false;
			wf_shared->db_missing_told = false;
		}
		tell = !exists && !wf_shared->db_missing_told;
		if (tell)
			wf_shared->db_missing_told = true;
		SpinLockRelease(&wf_shared->mutex);

		if (exists)
		{
			ereport(LOG,
					(errmsg("database \"%s\" exists: %s restarts to connect to it",
							wf_guc_database, MyBgworkerEntry->bgw_name)));
			proc_exit(1);
		}
		if (tell)
			ereport(WARNING,
					(errmsg("pg_workflow executors cannot start: database \"%s\" does not exist",
							wf_guc_database),
					 errdetail("pg_workflow.database names the database whose workflows "
							   "the executors run. They look for it again every minute "
							   "at most, and start once it exists."),
					 errhint("Create database \"%s\", or set pg_workflow.database to the "
							 "database where CREATE EXTENSION pg_workflow was run and "
							 "restart the server.", wf_guc_database)));

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 delay_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		delay_ms = Min(2 * delay_ms, WF_DB_PROBE_MAX_MS);
	}
}

/*
 * Recovers from an error that escaped the executor: the transaction is
 * rolled back, nothing of it remains, and the work is found again.
 */
static void
wf_worker_recover(MemoryContext iterctx, int *consecutive_errors)
{
	long		delay_ms;

	error_context_stack = NULL;
	HOLD_INTERRUPTS();
	disable_all_timeouts(false);
	QueryCancelPending = false;
	EmitErrorReport();
	wf_exec_note_error();
	AbortCurrentTransaction();
	MemoryContextSwitchTo(TopMemoryContext);
	FlushErrorState();
	MemoryContextReset(iterctx);
	wf_http_discard();
	wf_slots_forget();
	SpinLockAcquire(&wf_shared->mutex);
	wf_worker_slot->current_run = 0;
	wf_worker_slot->current_parent = 0;
	SpinLockRelease(&wf_shared->mutex);
	/* The deferred changes the lost transaction made are to be made again. */
	wf_shmem_set_deferred();
	pgstat_report_activity(STATE_IDLE, "");
	RESUME_INTERRUPTS();

	/*
	 * A conflict between executors (a deadlock on a run) resolves itself on
	 * the next try; anything that repeats is backed off, up to 10 s.
	 */
	(*consecutive_errors)++;
	if (*consecutive_errors > 1)
	{
		delay_ms = Min(10000L, 100L << Min(*consecutive_errors, 10));
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 delay_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * What every pg_workflow process does first: its signals, the connection
 * to pg_workflow.database (an executor waits for that database to exist),
 * its shared-memory slot, and the engine's settings.
 */
void
wf_worker_start(int index, bool executor)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	pqsignal(SIGINT, StatementCancelHandler);
	BackgroundWorkerUnblockSignals();

	if (executor)
		wf_worker_await_database(index);
	BackgroundWorkerInitializeConnection(wf_guc_database, NULL, 0);
	if (executor)
	{
		SpinLockAcquire(&wf_shared->mutex);
		wf_shared->workers[index].connecting = false;
		SpinLockRelease(&wf_shared->mutex);
	}
	wf_worker_attach(index);
	wf_exec_init();
	SetConfigOption("application_name", MyBgworkerEntry->bgw_name,
					PGC_USERSET, PGC_S_SESSION);

	/*
	 * The engine's own SQL runs as superuser: nothing a user can create may
	 * capture its names.  (Steps get their owner's search_path.)
	 */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_SESSION);
	pgstat_report_appname(MyBgworkerEntry->bgw_name);

	/* Cancels only act inside a step's execution (executor.c). */
	HOLD_CANCEL_INTERRUPTS();
}

void
wf_worker_main(Datum main_arg)
{
	int			index = DatumGetInt32(main_arg);
	sigjmp_buf	local_sigjmp_buf;
	MemoryContext iterctx;

	/* Kept across longjmp: static, not a register's copy. */
	static int	consecutive_errors = 0;

	wf_worker_start(index, true);
	wf_http_init();
	wf_owners_init();

	iterctx = AllocSetContextCreate(TopMemoryContext,
									"pg_workflow executor iteration",
									ALLOCSET_DEFAULT_SIZES);

	ereport(LOG,
			(errmsg("%s started in database \"%s\"",
					MyBgworkerEntry->bgw_name, wf_guc_database)));

	if (sigsetjmp(local_sigjmp_buf, 1) != 0)
	{
		QueryCancelHoldoffCount = 1;
		wf_worker_recover(iterctx, &consecutive_errors);
	}
	PG_exception_stack = &local_sigjmp_buf;

	for (;;)
	{
		TimestampTz next_due;
		TimestampTz next_sweep;
		long		timeout_ms = -1;
		int			done;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		MemoryContextReset(iterctx);
		MemoryContextSwitchTo(iterctx);

		/*
		 * Mark ourselves sleeping before looking: a wake-up that comes
		 * after the look then sets our latch, and the wait returns at once.
		 */
		SpinLockAcquire(&wf_shared->mutex);
		wf_worker_slot->sleeping = true;
		SpinLockRelease(&wf_shared->mutex);
		ResetLatch(MyLatch);

		/* Roles were dropped: what they owned stops first (owners.c). */
		next_sweep = wf_owners_sweep();
		done = wf_exec_batch(wf_guc_batch_size, &next_due);
		consecutive_errors = 0;
		if (wf_shared->ninterrupts > 0)
			wf_http_drop_interrupted();
		if (done > 0)
		{
			/* Busy: service the requests in flight without sleeping. */
			if (wf_http_busy() > 0)
				wf_http_wait(0);
			continue;
		}

		if (next_sweep != 0 && (next_due == 0 || next_sweep < next_due))
			next_due = next_sweep;
		if (next_due != 0)
			timeout_ms = wf_util_ms_until(next_due);
		/* About to sleep: flush our statistics first. */
		pgstat_report_stat(true);

		/* Latch, libcurl's sockets and timer, and our own next due time. */
		wf_http_wait(timeout_ms);
	}
}
