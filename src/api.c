/*-------------------------------------------------------------------------
 *
 * api.c
 *		SQL-callable functions of pg_workflow written in C: the shim that
 *		gives the public wf_* functions their caller, wf_wait, and the
 *		hooks through which SQL asks for wake-ups at commit.
 *
 * The state changes themselves are made by SECURITY DEFINER functions
 * wf._NAME, owned by the extension's owner and executable by nobody else.
 * The public wf_NAME(args) is wf_api_call(), which invokes
 * wf._NAME(caller, caller_search_path, args) directly through fmgr: the
 * caller's role is GetUserId() at the time of the call, which no SQL
 * argument can forge (a SECURITY DEFINER function that calls wf_start
 * starts the run as its owner, exactly as it would create a table).
 *
 * src/api.c
 *
 *-------------------------------------------------------------------------
 */
#include "pg_workflow.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "commands/dbcommands.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "parser/parse_func.h"
#include "parser/parser.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#define WF_API_MAX_ARGS 8

/* A wf_wait timeout this long or longer is no limit at all (100 years). */
#define WF_WAIT_FOREVER_USECS	(100.0 * 365.25 * USECS_PER_DAY)

PG_FUNCTION_INFO_V1(wf_api_call);
PG_FUNCTION_INFO_V1(wf_wait);
PG_FUNCTION_INFO_V1(wf_wake);
PG_FUNCTION_INFO_V1(wf_defer);
PG_FUNCTION_INFO_V1(wf_interrupt);
PG_FUNCTION_INFO_V1(wf_run_ended);
PG_FUNCTION_INFO_V1(wf_xid_is_current);
PG_FUNCTION_INFO_V1(wf_start_trigger);
PG_FUNCTION_INFO_V1(wf_fair_at);
PG_FUNCTION_INFO_V1(wf_xact_lock);
PG_FUNCTION_INFO_V1(wf_current_run);
PG_FUNCTION_INFO_V1(wf_check_executors);

/*
 * Looks up wf._NAME(oid, text, argtypes...) and prepares to call it.
 */
void
wf_api_lookup(const char *name, int nargs, const Oid *argtypes,
			  FmgrInfo *finfo, MemoryContext mcxt)
{
	Oid			types[WF_API_MAX_ARGS + 2];
	Oid			fn;

	if (nargs > WF_API_MAX_ARGS)
		elog(ERROR, "too many arguments for %s", name);
	types[0] = OIDOID;
	types[1] = TEXTOID;
	memcpy(&types[2], argtypes, nargs * sizeof(Oid));
	fn = LookupFuncName(list_make2(makeString(WF_SCHEMA_NAME),
								   makeString(psprintf("_%s", name))),
						nargs + 2, types, false);
	fmgr_info_cxt(fn, finfo, mcxt);
}

/*
 * Calls an internal function.  Its PL/pgSQL context lines say nothing
 * useful to the caller: errors leave without them.
 *
 * The engine's SQL is parsed (and PL/pgSQL compiled, once a session) under
 * the settings in force: the caller's standard_conforming_strings would
 * change what its string literals say, backslashes in patterns included.
 * It is on for the call, as the functions' own SET clauses fix
 * search_path, and restored after it as they are (on an error, by the
 * abort of the transaction or subtransaction).
 */
static Datum
wf_api_call_internal(FunctionCallInfo inner, MemoryContext oldcxt)
{
	Datum		result = (Datum) 0;
	int			save_nestlevel = 0;

	/* The usual case, the setting on already, costs nothing. */
	if (!standard_conforming_strings)
	{
		save_nestlevel = NewGUCNestLevel();
		(void) set_config_option("standard_conforming_strings", "on",
								 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
								 true, 0, false);
	}
	PG_TRY();
	{
		result = FunctionCallInvoke(inner);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		edata->context = NULL;
		ReThrowError(edata);
	}
	PG_END_TRY();
	if (save_nestlevel > 0)
		AtEOXact_GUC(true, save_nestlevel);
	return result;
}

/*
 * Calls an internal function prepared by wf_api_lookup with the caller
 * prepended to args.
 */
static Datum
wf_api_invoke_rs(FmgrInfo *finfo, int nargs, NullableDatum *args, Oid collation,
				 ReturnSetInfo *rsinfo, bool *isnull)
{
	LOCAL_FCINFO(inner, WF_API_MAX_ARGS + 2);
	MemoryContext oldcxt = CurrentMemoryContext;
	Datum		result;
	int			i;

	InitFunctionCallInfoData(*inner, finfo, nargs + 2, collation, NULL,
							 (fmNodePtr) rsinfo);
	inner->args[0].value = ObjectIdGetDatum(GetUserId());
	inner->args[0].isnull = false;
	inner->args[1].value = CStringGetTextDatum(namespace_search_path);
	inner->args[1].isnull = false;
	for (i = 0; i < nargs; i++)
		inner->args[i + 2] = args[i];

	result = wf_api_call_internal(inner, oldcxt);
	*isnull = inner->isnull;
	return result;
}

/* The same, for a function that returns no set. */
static Datum
wf_api_invoke(FmgrInfo *finfo, int nargs, NullableDatum *args, Oid collation,
			  bool *isnull)
{
	return wf_api_invoke_rs(finfo, nargs, args, collation, NULL, isnull);
}

/*
 * The same, for a set-returning function in materialize mode: it fills
 * rsinfo as if the caller's own function had.
 */
Datum
wf_api_invoke_set(FmgrInfo *finfo, int nargs, NullableDatum *args,
				  ReturnSetInfo *rsinfo, bool *isnull)
{
	return wf_api_invoke_rs(finfo, nargs, args, InvalidOid, rsinfo, isnull);
}

/*
 * wf_NAME(args...): calls wf._NAME(caller, caller_search_path, args...).
 * A set-returning wf_NAME hands its ReturnSetInfo to wf._NAME, which must
 * then return its set in materialize mode (as PL/pgSQL does).
 */
Datum
wf_api_call(PG_FUNCTION_ARGS)
{
	FmgrInfo   *inner = fcinfo->flinfo->fn_extra;
	Datum		result;
	bool		isnull;

	if (inner == NULL)
	{
		HeapTuple	tp;
		Form_pg_proc proc;
		const char *name;

		tp = SearchSysCache1(PROCOID, ObjectIdGetDatum(fcinfo->flinfo->fn_oid));
		if (!HeapTupleIsValid(tp))
			elog(ERROR, "cache lookup failed for function %u", fcinfo->flinfo->fn_oid);
		proc = (Form_pg_proc) GETSTRUCT(tp);
		name = NameStr(proc->proname);
		if (strncmp(name, "wf_", 3) != 0)
			elog(ERROR, "wf_api_call called through function \"%s\"", name);
		inner = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(FmgrInfo));
		wf_api_lookup(name + 3, proc->pronargs, proc->proargtypes.values,
					  inner, fcinfo->flinfo->fn_mcxt);
		ReleaseSysCache(tp);
		fcinfo->flinfo->fn_extra = inner;
	}

	result = wf_api_invoke_rs(inner, PG_NARGS(), fcinfo->args, PG_GET_COLLATION(),
							  (ReturnSetInfo *) fcinfo->resultinfo, &isnull);
	if (isnull)
		PG_RETURN_NULL();
	return result;
}

static bool
wf_api_status_is_final(const char *status)
{
	return strcmp(status, "completed") == 0 ||
		strcmp(status, "failed") == 0 ||
		strcmp(status, "cancelled") == 0;
}

static void
wf_api_stop_waiting(int code, Datum arg)
{
	wf_shmem_set_waiting(0);
}

/*
 * wf_wait(run_id, timeout): sleeps on the backend's latch until the run
 * ends (the transaction that ends it wakes us at commit) or the timeout
 * passes; returns the run's status.  A NULL timeout, or one of 100 years or
 * more, waits without limit.
 *
 * Not on a standby: runs end on the primary, and no commit there wakes a
 * backend of the standby, which would sleep until the timeout.
 */
Datum
wf_wait(PG_FUNCTION_ARGS)
{
	FmgrInfo	status_fn;
	NullableDatum args[1];
	TimestampTz deadline = 0;
	char	   *volatile status = NULL;
	bool		isnull;
	Oid			argtypes[1] = {INT8OID};

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("run id must not be null")));
	if (wf_worker_slot != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("wf_wait cannot be called from a step"),
				 errdetail("A step waiting for a run would hold up its executor."),
				 errhint("Use a \"workflow\" step to run a child workflow and wait for it.")));
	if (!PG_ARGISNULL(1))
	{
		Interval   *iv = PG_GETARG_INTERVAL_P(1);

		/* As a double, which no interval overflows. */
		double		usecs = (double) iv->time + (double) iv->day * USECS_PER_DAY +
			(double) iv->month * DAYS_PER_MONTH * USECS_PER_DAY;

		if (usecs < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("timeout must not be negative")));
		if (usecs < WF_WAIT_FOREVER_USECS)
			deadline = GetCurrentTimestamp() + (int64) usecs;
	}
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("wf_wait cannot wait on a standby server"),
				 errdetail("Runs end on the primary server, and a standby is not told when they do."),
				 errhint("Call wf_wait on the primary server, or read the run's status from wf.runs.")));

	wf_api_lookup("wait_status", 1, argtypes, &status_fn, CurrentMemoryContext);
	args[0].value = PG_GETARG_DATUM(0);
	args[0].isnull = false;

	PG_ENSURE_ERROR_CLEANUP(wf_api_stop_waiting, (Datum) 0);
	{
		wf_shmem_set_waiting(DatumGetInt64(args[0].value));
		for (;;)
		{
			long		timeout_ms = -1;
			int			events = WL_LATCH_SET | WL_EXIT_ON_PM_DEATH;

			ResetLatch(MyLatch);
			status = TextDatumGetCString(wf_api_invoke(&status_fn, 1, args,
													   InvalidOid, &isnull));
			if (wf_api_status_is_final(status))
				break;
			if (IsolationUsesXactSnapshot())
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("wf_wait cannot wait in a REPEATABLE READ or SERIALIZABLE transaction"),
						 errdetail("The transaction's snapshot would never show the run ending."),
						 errhint("Call wf_wait in a READ COMMITTED transaction.")));
			if (deadline != 0)
			{
				if (GetCurrentTimestamp() >= deadline)
					break;
				timeout_ms = wf_util_ms_until(deadline);
				events |= WL_TIMEOUT;
			}
			wf_snap_release_for_wait(fcinfo->flinfo->fn_oid);
			(void) WaitLatch(MyLatch, events, timeout_ms, PG_WAIT_EXTENSION);
			CHECK_FOR_INTERRUPTS();
		}
	}
	PG_END_ENSURE_ERROR_CLEANUP(wf_api_stop_waiting, (Datum) 0);
	wf_shmem_set_waiting(0);

	PG_RETURN_TEXT_P(cstring_to_text(status));
}

/* wf._wake(): wake an executor when the current transaction commits. */
Datum
wf_wake(PG_FUNCTION_ARGS)
{
	wf_shmem_wake_at_commit();
	PG_RETURN_VOID();
}

/* wf._defer(): have wf.deferred looked at once the transaction commits. */
Datum
wf_defer(PG_FUNCTION_ARGS)
{
	wf_shmem_defer_at_commit();
	PG_RETURN_VOID();
}

/* wf._interrupt(run_id): interrupt the run's step being executed now. */
Datum
wf_interrupt(PG_FUNCTION_ARGS)
{
	wf_shmem_interrupt_run(PG_GETARG_INT64(0));
	PG_RETURN_VOID();
}

/* wf._run_ended(run_id): wake its wf_wait callers at commit. */
Datum
wf_run_ended(PG_FUNCTION_ARGS)
{
	wf_shmem_run_ended_at_commit(PG_GETARG_INT64(0));
	PG_RETURN_VOID();
}

/* wf._xid_is_current(xid): was the row written by this transaction? */
Datum
wf_xid_is_current(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(TransactionIdIsCurrentTransactionId(DatumGetTransactionId(PG_GETARG_DATUM(0))));
}

/*
 * wf_start_trigger('workflow' [, 'options']): a row trigger that starts
 * the workflow with the row as input, through wf._start_by_trigger.
 *
 * Written in C so that no name is resolved through the writer's
 * search_path: the row is converted by to_jsonb itself, as the role that
 * changed it (like any trigger of the table's, and like to_jsonb(NEW)
 * would), and the run belongs to the table's owner.
 */
Datum
wf_start_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Trigger    *trigger;
	HeapTuple	tuple;
	Relation	rel;
	Jsonb	   *row;
	Jsonb	   *options;
	FmgrInfo	start_fn;
	Oid			argtypes[4] = {OIDOID, TEXTOID, JSONBOID, JSONBOID};
	LOCAL_FCINFO(inner, 4);
	Oid			fn;
	int			i;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("wf_start_trigger must be called as a trigger")));
	if (!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
				 errmsg("wf_start_trigger must be used in a FOR EACH ROW trigger")));
	trigger = trigdata->tg_trigger;
	if (trigger->tgnargs < 1 || trigger->tgnargs > 2)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("wf_start_trigger takes the name of the workflow to start and, optionally, wf_start options"),
				 errhint("EXECUTE FUNCTION wf_start_trigger('workflow-name') or wf_start_trigger('workflow-name', '{\"priority\": 1}').")));

	rel = trigdata->tg_relation;
	tuple = TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ?
		trigdata->tg_newtuple : trigdata->tg_trigtuple;
	row = wf_util_datum_to_jsonb(heap_copy_tuple_as_datum(tuple, RelationGetDescr(rel)),
								 RelationGetDescr(rel)->tdtypeid, false);
	options = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
												 CStringGetDatum(trigger->tgnargs == 2 ?
																 trigger->tgargs[1] : "{}")));

	fn = LookupFuncName(list_make2(makeString(WF_SCHEMA_NAME),
								   makeString("_start_by_trigger")),
						4, argtypes, false);
	fmgr_info(fn, &start_fn);
	InitFunctionCallInfoData(*inner, &start_fn, 4, InvalidOid, NULL, NULL);
	inner->args[0].value = ObjectIdGetDatum(RelationGetRelid(rel));
	inner->args[1].value = CStringGetTextDatum(trigger->tgargs[0]);
	inner->args[2].value = JsonbPGetDatum(row);
	inner->args[3].value = JsonbPGetDatum(options);
	for (i = 0; i < 4; i++)
		inner->args[i].isnull = false;
	(void) wf_api_call_internal(inner, CurrentMemoryContext);

	return PointerGetDatum(tuple);
}

/* wf._fair_at(owner): where a run owner starts now goes in the claim order. */
Datum
wf_fair_at(PG_FUNCTION_ARGS)
{
	PG_RETURN_TIMESTAMPTZ(wf_shmem_fair_at(PG_GETARG_OID(0)));
}

/*
 * wf._current_run(): the run whose step this executor is executing now, or
 * NULL (not an executor, or between steps).
 */
Datum
wf_current_run(PG_FUNCTION_ARGS)
{
	/* Only this process writes its slot's current_run. */
	if (wf_worker_slot == NULL || wf_worker_slot->current_run == 0)
		PG_RETURN_NULL();
	PG_RETURN_INT64(wf_worker_slot->current_run);
}

/*
 * wf._check_executors(): called by every wf_start; warns (once per
 * transaction) when the run will not start soon because no executor serves
 * this database (pg_workflow.database names another one) or none is
 * running (they cannot connect, or are being restarted).
 *
 * A warning, not an error: the run is durable and starts once an executor
 * serves it, and an error would lose the rest of the caller's transaction
 * (the order that a trigger starts a run for, say).
 */
Datum
wf_check_executors(PG_FUNCTION_ARGS)
{
	static LocalTransactionId warned = InvalidLocalTransactionId;
	static char *dbname = NULL;
	bool		alive = false;
	int			i;

	/* The executors' own starts (schedules, child runs) need no check. */
	if (wf_worker_slot != NULL || MyProc->lxid == warned)
		PG_RETURN_VOID();

	/* The current database cannot be renamed while we are connected. */
	if (dbname == NULL)
		dbname = MemoryContextStrdup(TopMemoryContext,
									 get_database_name(MyDatabaseId));
	if (strcmp(dbname, wf_guc_database) != 0)
	{
		warned = MyProc->lxid;
		ereport(WARNING,
				(errcode(ERRCODE_WARNING),
				 errmsg("no pg_workflow executor runs the workflows of database \"%s\"",
						dbname),
				 errdetail("The executors serve database \"%s\", named by pg_workflow.database; "
						   "the run stays pending.", wf_guc_database),
				 errhint("Set pg_workflow.database = '%s' and restart the server.", dbname)));
		PG_RETURN_VOID();
	}

	SpinLockAcquire(&wf_shared->mutex);
	for (i = 0; i < wf_shared->nworkers && !alive; i++)
		alive = (wf_shared->workers[i].pid != 0);
	SpinLockRelease(&wf_shared->mutex);
	if (!alive)
	{
		warned = MyProc->lxid;
		ereport(WARNING,
				(errcode(ERRCODE_WARNING),
				 errmsg("no pg_workflow executor is running"),
				 errdetail("The run stays pending until an executor runs it."),
				 errhint("Look in the server log for why the executors are not running; "
						 "they connect to the database named by pg_workflow.database (\"%s\").",
						 wf_guc_database)));
	}
	PG_RETURN_VOID();
}

/*
 * The engine's own locks: advisory locks in a key space of their own
 * (field 4 of the lock tag is WF_LOCKTAG_SPACE; SQL's pg_advisory_* use 1
 * and 2), so that no user code, a step's included, can take or hold one.
 */
#define WF_LOCKTAG_SPACE	3

/*
 * wf._xact_lock(key1, key2, shared, try): takes the engine's lock
 * (key1, key2) until the end of the transaction, in share or exclusive
 * mode; with try, returns false at once instead of waiting.
 */
Datum
wf_xact_lock(PG_FUNCTION_ARGS)
{
	LOCKTAG		tag;
	LOCKMODE	mode = PG_GETARG_BOOL(2) ? ShareLock : ExclusiveLock;
	LockAcquireResult res;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) PG_GETARG_INT32(0),
						 (uint32) PG_GETARG_INT32(1), WF_LOCKTAG_SPACE);
	res = LockAcquire(&tag, mode, false, PG_GETARG_BOOL(3));
	PG_RETURN_BOOL(res != LOCKACQUIRE_NOT_AVAIL);
}
