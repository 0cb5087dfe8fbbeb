/*-------------------------------------------------------------------------
 *
 * owners.c
 *		The roles that own runs, workflows, schedules and subscriptions:
 *		what happens when one of them is dropped.
 *
 * DROP ROLE is a command of the whole cluster, which any database may run,
 * and nothing in pg_workflow's tables can make PostgreSQL refuse it: its
 * shared dependencies (pg_shdepend) record only catalog objects.  So the
 * engine makes sure that nothing a dropped role owned goes on acting for
 * it:
 *
 *	- every function that records a role as an owner (wf_define, wf_start,
 *	  wf_schedule, wf_on_event, and the runs that schedules and events start)
 *	  locks the role first, as PostgreSQL does for the roles its catalogs
 *	  depend on (wf._lock_role), and fails if it is gone: DROP ROLE waits for
 *	  that transaction, and what it recorded is visible to the sweep below;
 *	- each executor registers a syscache callback on AUTHOID: pg_authid
 *	  changes reach every backend of the cluster, and an executor notices
 *	  them at its next transaction.  It then runs, in a transaction of its
 *	  own, wf._sweep_dropped_roles(), which fails the unfinished runs of the
 *	  roles that no longer exist and disables their schedules and
 *	  subscriptions, with an alert each (see src/sql/07_dropped_roles.sql).  It also
 *	  runs it once when it starts, for the roles dropped while it was down;
 *	- until that sweep is complete, the executor checks the owner of every
 *	  step before executing it, and a step whose owner is gone fails its run
 *	  at once: no retry, no on_error (WfStepResult.fatal).  While no role
 *	  changed, the check costs one comparison.  An sql step checks its
 *	  owner always (step_sql.c), as it becomes that role.
 *
 * src/owners.c
 *
 *-------------------------------------------------------------------------
 */
#include "pg_workflow.h"

#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/lmgr.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(wf_lock_role);

/*
 * Changes of pg_authid this executor has received (1 at its start: roles
 * may have been dropped while it was down), and how many of them the last
 * complete sweep covered.
 */
static uint64 wf_owners_changes = 1;
static uint64 wf_owners_swept = 0;

/*
 * A sweep that had to leave rows held by another transaction, or that
 * failed, is tried again at wf_owners_retry_at, unless roles changed again
 * since (wf_owners_tried).  The delay doubles while it keeps happening.
 */
#define WF_OWNERS_RETRY_MS		100
#define WF_OWNERS_RETRY_MAX_MS	5000
static uint64 wf_owners_tried = 0;
static TimestampTz wf_owners_retry_at = 0;
static int	wf_owners_retry_ms = WF_OWNERS_RETRY_MS;

/*
 * wf._lock_role(role oid, missing_ok boolean): locks the role against DROP
 * ROLE until the end of the transaction, and returns whether it exists
 * (raising an error instead when not missing_ok).
 */
Datum
wf_lock_role(PG_FUNCTION_ARGS)
{
	Oid			roleid = PG_GETARG_OID(0);
	bool		missing_ok = PG_GETARG_BOOL(1);

	/* Takes in the invalidations, so that a drop just committed is seen. */
	LockSharedObject(AuthIdRelationId, roleid, 0, AccessShareLock);
	if (SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(roleid)))
		PG_RETURN_BOOL(true);
	if (!missing_ok)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role with OID %u does not exist", roleid)));
	PG_RETURN_BOOL(false);
}

/*
 * Syscache callback: a role was created, altered or dropped somewhere in
 * the cluster (or the cache was reset).  The sweep runs before the executor
 * sleeps again.
 */
static void
wf_owners_invalidated(Datum arg, int cacheid, uint32 hashvalue)
{
	wf_owners_changes++;
	SetLatch(MyLatch);
}

/* Called once by each executor at its start. */
void
wf_owners_init(void)
{
	CacheRegisterSyscacheCallback(AUTHOID, wf_owners_invalidated, (Datum) 0);
}

/*
 * Is the owner of a step gone?  Looked up only while a change of pg_authid
 * has not been swept yet: otherwise every owner the executor meets existed
 * at the last sweep, or was locked by wf._lock_role when it was recorded.
 */
bool
wf_owners_gone(Oid owner)
{
	if (wf_owners_changes == wf_owners_swept)
		return false;
	return !SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(owner));
}

/*
 * The outcome of a step whose owner was dropped: its run fails at once.
 */
void
wf_owners_step_dropped(WfStepExec *ex, WfStepResult *res)
{
	res->outcome = WF_STEP_FAILED;
	res->error_class = WF_ERROR_PERMANENT;
	res->fatal = true;
	res->error_message = psprintf("role with OID %u that owned run " INT64_FORMAT " was dropped",
								  ex->owner, ex->run_id);
	strlcpy(res->sqlstate, unpack_sql_state(ERRCODE_UNDEFINED_OBJECT),
			sizeof(res->sqlstate));
}

/*
 * Runs wf._sweep_dropped_roles() in a subtransaction of the current
 * transaction; returns the number of rows it had to leave, or -1 after an
 * error (reported as a warning: the executor goes on with its work).
 */
static int
wf_owners_sweep_once(void)
{
	ErrorData  *edata;
	int32		held;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	edata = wf_util_try_spi(NULL, "SELECT wf._sweep_dropped_roles()", 0, NULL, NULL,
							&held);
	SPI_finish();
	if (edata != NULL)
	{
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("could not disable what dropped roles owned: %s", edata->message),
				 errhint("It is tried again later.")));
		FreeErrorData(edata);
		held = -1;
	}
	return held;
}

/*
 * The executor's main loop calls this before each batch.  When pg_authid
 * changed since the last complete sweep, sweeps in a transaction of its
 * own.  Returns when to call again at the latest (0: no need).
 */
TimestampTz
wf_owners_sweep(void)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	uint64		seen;
	int			held = 0;

	if (wf_owners_changes == wf_owners_swept)
		return 0;
	if (wf_owners_changes == wf_owners_tried &&
		GetCurrentTimestamp() < wf_owners_retry_at)
		return wf_owners_retry_at;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	/* What the start of this transaction took in is covered. */
	seen = wf_owners_changes;
	PushActiveSnapshot(GetTransactionSnapshot());
	if (wf_util_extension_ready())
	{
		pgstat_report_activity(STATE_RUNNING, "sweeping what dropped roles owned");
		held = wf_owners_sweep_once();
	}
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(oldcontext);
	pgstat_report_activity(STATE_IDLE, "");

	if (held != 0)
	{
		wf_owners_tried = seen;
		wf_owners_retry_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														 wf_owners_retry_ms);
		wf_owners_retry_ms = Min(2 * wf_owners_retry_ms, WF_OWNERS_RETRY_MAX_MS);
		return wf_owners_retry_at;
	}
	wf_owners_swept = seen;
	wf_owners_retry_ms = WF_OWNERS_RETRY_MS;
	return 0;
}
