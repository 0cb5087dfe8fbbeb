/*-------------------------------------------------------------------------
 *
 * agent.c
 *		Steps executed by external agents: the "agent" step kind, which
 *		turns an attempt into a task of a pool and checkpoints its end, and
 *		wf_claim, through which agents take tasks, waiting for them in the
 *		server.
 *
 * An attempt of an agent step renders its payload (as the run's owner,
 * without secrets) and inserts a row of wf.task in the step's
 * subtransaction: the task becomes claimable when the executor's
 * transaction commits, which wakes the backends waiting in wf_claim for
 * that pool.  The step stays running until wf_complete or wf_fail (or the
 * expiry of its lease or timeout, wf._expire_tasks) checkpoints the
 * attempt through wf._agent_finish, below, by the executor's own path
 * (executor_int.h).  One task is one attempt: an expired lease is a
 * transient failure of the attempt, and the retry policy's next attempt is
 * a new task.
 *
 * src/agent.c
 *
 *-------------------------------------------------------------------------
 */
#include "pg_workflow.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "executor_int.h"
#include "validate_int.h"

/* A wf_claim wait this long or longer is no limit at all (100 years). */
#define WF_CLAIM_FOREVER_USECS	(100.0 * 365.25 * USECS_PER_DAY)

PG_FUNCTION_INFO_V1(wf_agent_finish);
PG_FUNCTION_INFO_V1(wf_claim);
PG_FUNCTION_INFO_V1(wf_tasks_ready);

/*
 * The capabilities a task requires: the text[] of the step's "requires".
 */
static Datum
wf_agent_requires(Jsonb *spec)
{
	Jsonb	   *req = wf_util_jsonb_get(spec, "requires");
	List	   *names = NIL;
	Datum	   *elems;
	ListCell   *lc;
	int			i = 0;

	if (req != NULL && JB_ROOT_IS_ARRAY(req))
	{
		JsonbIterator *it = JsonbIteratorInit(&req->root);
		JsonbIteratorToken tok;
		JsonbValue	v;

		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
			if (tok == WJB_ELEM && v.type == jbvString)
				names = lappend(names, pnstrdup(v.val.string.val, v.val.string.len));
	}
	elems = palloc(sizeof(Datum) * (list_length(names) + 1));
	foreach(lc, names)
		elems[i++] = CStringGetTextDatum((char *) lfirst(lc));
	return PointerGetDatum(construct_array(elems, i, TEXTOID, -1, false,
										   TYPALIGN_INT));
}

/*
 * The key of an agent step's circuit breaker: "agent:POOL", which no host
 * (the key of an http step's) can be.
 */
char *
wf_agent_breaker_key(Jsonb *spec)
{
	return psprintf("agent:%s", wf_util_jsonb_get_text(spec, "agent"));
}

/*
 * Executes an attempt of an agent step: its payload rendered as the run's
 * owner (secrets never render outside http), and its task created.  The
 * attempt ends when an agent completes or fails the task.
 */
void
wf_agent_execute(WfStepExec *ex, WfStepResult *res)
{
	Jsonb	   *payload = wf_util_jsonb_get(ex->spec, "payload");
	char	   *pool = wf_util_jsonb_get_text(ex->spec, "agent");
	WfTemplateCtx tc;
	Oid			types[6] = {INT8OID, TEXTOID, TEXTOID, JSONBOID, TEXTARRAYOID, INT4OID};
	Datum		args[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};

	if (pool == NULL)
		elog(ERROR, "agent step \"%s\" has no pool", ex->step);

	/* The pool's breaker open: no task yet, no attempt burnt. */
	if (!wf_http_breaker_admit(ex, res, wf_agent_breaker_key(ex->spec)))
		return;

	/* No token of its rate limit (by pool by default): no task yet. */
	if (!wf_http_rate_admit(ex, res, pool, NULL))
		return;

	memset(&tc, 0, sizeof(tc));
	tc.context = ex->context;
	tc.owner = ex->owner;
	if (payload != NULL)
		payload = wf_template_render_jsonb(&tc, payload);

	args[0] = Int64GetDatum(ex->run_id);
	args[1] = CStringGetTextDatum(ex->step);
	args[2] = CStringGetTextDatum(pool);
	args[3] = payload ? JsonbPGetDatum(payload) : (Datum) 0;
	nulls[3] = payload ? ' ' : 'n';
	args[4] = wf_agent_requires(ex->spec);
	args[5] = Int32GetDatum(ex->timeout_ms);
	if (SPI_execute_with_args("SELECT wf._task_create($1, $2, $3, $4, $5, $6)",
							  6, types, args, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not create the task of step \"%s\"", ex->step);
	res->outcome = WF_STEP_STARTED;
}

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
	Jsonb	   *defaults;
	bool		isnull;

	ex->run_id = PG_GETARG_INT64(0);
	ex->step = text_to_cstring(PG_GETARG_TEXT_PP(1));
	ex->attempt = PG_GETARG_INT32(2);
	ex->started_at = PG_GETARG_TIMESTAMPTZ(3);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	wf_exec_prepare_all();
	if (!wf_exec_resume_attempt(ex, &defaults))
	{
		SPI_finish();
		PG_RETURN_BOOL(false);
	}

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

		dargs[0] = Int64GetDatum(ex->run_id);
		dargs[1] = PG_GETARG_DATUM(1);
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

/* ----------------------------------------------------------------
 * The check of the action, for wf_validate (kinds.c)
 * ----------------------------------------------------------------
 */

/* "requires": [CAPABILITY, ...] */
static void
wf_agent_check_requires(WfvState *st, WfvObject *o, const char *path,
						JsonbValue *v)
{
	bool		ok = wfv_is_array(v);

	if (ok)
	{
		JsonbIterator *it = JsonbIteratorInit(v->val.binary.data);
		JsonbIteratorToken tok;
		JsonbValue	ev;

		while ((tok = JsonbIteratorNext(&it, &ev, true)) != WJB_DONE)
			if (tok == WJB_ELEM && (ev.type != jbvString || ev.val.string.len == 0))
				ok = false;
	}
	if (!ok)
		wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" must be an array of non-empty strings", path);
}

/* The step keys that go with "agent": any JSON, and capabilities. */
const WfvMember wf_agent_companions[] = {
	{"payload", false, wfv_check_templates},
	{"requires", false, wf_agent_check_requires},
	{NULL}
};

/* "agent": POOL, whose name makes its NOTIFY channel */
void
wf_agent_check(WfvState *st, WfvObject *o, const char *path, JsonbValue *v)
{
	char	   *pool = wfv_string(st, o->label, path, v, false);

	if (pool != NULL && wfv_check_name(st, o->label, path, pool, true) &&
		strlen(pool) > WFV_MAX_POOL_NAME)
		wfv_problem(st, o->label, ERRCODE_PROGRAM_LIMIT_EXCEEDED,
					"\"%s\" is longer than %d bytes", path, WFV_MAX_POOL_NAME);
}

/*
 * wf._tasks_ready(pool): wake the backends waiting in wf_claim for the
 * pool when the current transaction commits.
 */
Datum
wf_tasks_ready(PG_FUNCTION_ARGS)
{
	text	   *pool = PG_GETARG_TEXT_PP(0);

	wf_shmem_pool_ready_at_commit(wf_shmem_pool_hash(VARDATA_ANY(pool),
													 VARSIZE_ANY_EXHDR(pool)));
	PG_RETURN_VOID();
}

static void
wf_claim_stop_waiting(int code, Datum arg)
{
	wf_shmem_set_claim_waiting(0, 0);
}

/*
 * wf_claim(pool, max, lease, agent, capabilities, wait, capacity): the
 * tasks that wf._claim(caller, ...) hands to the caller.  With wait, and
 * none to hand, sleeps on the backend's latch until a transaction that
 * makes tasks of the pool claimable commits (it wakes us), or wait passes,
 * and looks again; each look is a new statement of wf._claim, with a new
 * snapshot, and nothing is locked while we sleep.
 *
 * Load balancing: a commit that makes n tasks of a pool ready wakes n of
 * its waiters, the least loaded first (tasks in flight over the capacity
 * each declared); one woken for tasks it then does not get (they require
 * capabilities it lacks, or another took them) wakes the next one.
 */
Datum
wf_claim(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	FmgrInfo	claim_fn;
	FmgrInfo	seen_fn;
	FmgrInfo	load_fn;
	NullableDatum args[6];
	Oid			argtypes[6] = {TEXTOID, INT4OID, INTERVALOID, TEXTOID, TEXTARRAYOID, INT4OID};
	TimestampTz deadline = 0;
	bool		waits = false;
	uint32		pool_hash;
	bool		isnull;
	bool		woken = false;
	bool		got = false;
	bool		loaded = false;
	int			i;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		(rsinfo->allowedModes & SFRM_Materialize) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("pool must not be null")));
	if (!PG_ARGISNULL(5))
	{
		Interval   *iv = PG_GETARG_INTERVAL_P(5);
		double		usecs = (double) iv->time + (double) iv->day * USECS_PER_DAY +
			(double) iv->month * DAYS_PER_MONTH * USECS_PER_DAY;

		if (usecs < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("wait must not be negative")));
		waits = usecs > 0;
		if (usecs < WF_CLAIM_FOREVER_USECS)
			deadline = GetCurrentTimestamp() + (int64) usecs;
	}
	if (waits && wf_worker_slot != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("wf_claim cannot wait in a step"),
				 errdetail("A step waiting for a task would hold up its executor.")));
	if (waits && RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("wf_claim cannot wait on a standby server"),
				 errdetail("Tasks are created on the primary server, and a standby is not told when they are.")));

	wf_api_lookup("claim", 6, argtypes, &claim_fn, CurrentMemoryContext);
	wf_api_lookup("agent_seen", 5, argtypes, &seen_fn, CurrentMemoryContext);
	wf_api_lookup("agent_load", 6, argtypes, &load_fn, CurrentMemoryContext);
	for (i = 0; i < 5; i++)
	{
		args[i].value = PG_GETARG_DATUM(i);
		args[i].isnull = PG_ARGISNULL(i);
	}
	/* Argument 5 is wait, 6 the capacity: the internal functions' 6th. */
	args[5].value = PG_GETARG_DATUM(6);
	args[5].isnull = PG_ARGISNULL(6);
	pool_hash = wf_shmem_pool_hash(VARDATA_ANY(PG_GETARG_TEXT_PP(0)),
								   VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(0)));

	PG_ENSURE_ERROR_CLEANUP(wf_claim_stop_waiting, (Datum) 0);
	{
		/*
		 * Registered before the first look: no commit after it is missed.
		 * The load orders the waiters that a commit wakes; it is computed
		 * only once the first look found nothing (most claims of a busy
		 * pool get tasks at once), and does not change while we wait (only
		 * our own claims and ends change it).
		 */
		if (waits)
			wf_shmem_set_claim_waiting(pool_hash, 0);
		for (;;)
		{
			long		timeout_ms = -1;
			int			events = WL_LATCH_SET | WL_EXIT_ON_PM_DEATH;
			int			rc;

			ResetLatch(MyLatch);
			rsinfo->setResult = NULL;
			rsinfo->setDesc = NULL;
			(void) wf_api_invoke_set(&claim_fn, 6, args, rsinfo, &isnull);
			got = rsinfo->setResult != NULL &&
				tuplestore_tuple_count(rsinfo->setResult) > 0;
			if (!waits || got)
				break;
			if (!loaded)
			{
				wf_shmem_set_claim_waiting(pool_hash,
										   DatumGetFloat4(wf_api_invoke_set(&load_fn, 6, args,
																			NULL, &isnull)));
				loaded = true;
			}
			if (woken)
			{
				/* Woken for tasks it did not get: the next waiter's turn. */
				wf_shmem_claim_pass_on(pool_hash);
				woken = false;
			}
			if (IsolationUsesXactSnapshot())
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("wf_claim cannot wait in a REPEATABLE READ or SERIALIZABLE transaction"),
						 errdetail("The transaction's snapshot would never show a new task."),
						 errhint("Call wf_claim in a READ COMMITTED transaction.")));
			if (deadline != 0)
			{
				if (GetCurrentTimestamp() >= deadline)
					break;
				timeout_ms = wf_util_ms_until(deadline);
				events |= WL_TIMEOUT;
			}
			if (rsinfo->setResult != NULL)
			{
				tuplestore_end(rsinfo->setResult);
				rsinfo->setResult = NULL;
			}
			wf_snap_release_for_wait(fcinfo->flinfo->fn_oid);
			rc = WaitLatch(MyLatch, events, timeout_ms, PG_WAIT_EXTENSION);
			woken = (rc & WL_LATCH_SET) != 0;
			CHECK_FOR_INTERRUPTS();
		}
	}
	PG_END_ENSURE_ERROR_CLEANUP(wf_claim_stop_waiting, (Datum) 0);
	wf_shmem_set_claim_waiting(0, 0);

	/*
	 * The agent is seen now: its row in wf.agent is written, and locked,
	 * only from here to the end of the transaction, never while it waits
	 * (by the look of wf._claim that returned tasks, else here).
	 */
	if (!got)
		(void) wf_api_invoke_set(&seen_fn, 5, args, NULL, &isnull);

	rsinfo->returnMode = SFRM_Materialize;
	return (Datum) 0;
}
