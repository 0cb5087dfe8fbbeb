/*-------------------------------------------------------------------------
 *
 * exec_contain.c
 *		Containment of engine-side errors: an error that escapes the
 *		handling of a step is charged to that step, whose run fails when it
 *		happens again, so that no step can stop an executor's other work.
 *
 * src/exec_contain.c
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

/* ----------------------------------------------------------------
 * Containment of engine-side errors
 *
 * An error in a step's attempt is caught in the step's subtransaction and
 * recorded as the step's failure.  One that escapes (while loading the
 * step, recording its failure, checkpointing an http response, planning a
 * compensation...) aborts the executor's transaction; the worker then
 * calls wf_exec_note_error(), which remembers the step being handled.  The
 * batch is tried again, since the error may have been a passing conflict;
 * when the same step's handling fails again, the next batch first records
 * the internal error on it (wf._step_internal_error: the step and its run
 * fail, an alert is raised) in a transaction of its own.  Should even that
 * fail, its run is left out of this executor's claims from then on, with a
 * WARNING.  No step's handling can stop the executor's other work.
 * ----------------------------------------------------------------
 */
#define WF_EXEC_ITEM_TRIES		2
#define WF_EXEC_MAX_EXCLUDED	1024

/* The step being handled now (run 0: none), in TopMemoryContext. */
static int64 wf_exec_item_run = 0;
static char *wf_exec_item_step = NULL;

/* The step whose handling failed last, how often in a row, and why. */
static int64 wf_exec_suspect_run = 0;
static char *wf_exec_suspect_step = NULL;
static int	wf_exec_suspect_errors = 0;
static char *wf_exec_suspect_message = NULL;
static char wf_exec_suspect_sqlstate[6];

/* Runs whose internal error could not even be recorded. */
static int64 wf_exec_excluded[WF_EXEC_MAX_EXCLUDED];
static int	wf_exec_nexcluded = 0;

/* The step being handled, to which an error escaping now belongs. */
void
wf_exec_set_item(int64 run_id, const char *step)
{
	if (wf_exec_item_step != NULL)
		pfree(wf_exec_item_step);
	wf_exec_item_step = step ? MemoryContextStrdup(TopMemoryContext, step) : NULL;
	wf_exec_item_run = step ? run_id : 0;
}

/*
 * Called by the worker, in its error recovery and before the transaction is
 * aborted: remembers the step whose handling raised the error.
 */
void
wf_exec_note_error(void)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);
	ErrorData  *edata;

	if (wf_exec_item_run == 0)
	{
		MemoryContextSwitchTo(old);
		return;					/* not a step's: the batch is retried */
	}
	edata = CopyErrorData();
	if (wf_exec_suspect_run == wf_exec_item_run &&
		strcmp(wf_exec_suspect_step, wf_exec_item_step) == 0)
		wf_exec_suspect_errors++;
	else
	{
		if (wf_exec_suspect_step != NULL)
			pfree(wf_exec_suspect_step);
		wf_exec_suspect_run = wf_exec_item_run;
		wf_exec_suspect_step = pstrdup(wf_exec_item_step);
		wf_exec_suspect_errors = 1;
	}
	if (wf_exec_suspect_message != NULL)
		pfree(wf_exec_suspect_message);
	wf_exec_suspect_message = pstrdup(edata->message ? edata->message : "unknown error");
	strlcpy(wf_exec_suspect_sqlstate, unpack_sql_state(edata->sqlerrcode),
			sizeof(wf_exec_suspect_sqlstate));
	FreeErrorData(edata);
	wf_exec_set_item(0, NULL);
	MemoryContextSwitchTo(old);
}

/*
 * The step whose handling failed WF_EXEC_ITEM_TRIES times in a row: its
 * internal error is recorded, in a transaction of its own.
 */
static void
wf_exec_fail_suspect(void)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ErrorData  *edata;
	StringInfoData err;
	Oid			types[3] = {INT8OID, TEXTOID, JSONBOID};
	Datum		args[3];
	int32		unused;

	initStringInfo(&err);
	appendStringInfoString(&err, "{\"message\": ");
	escape_json(&err, psprintf("internal error while handling the step: %s",
							   wf_exec_suspect_message));
	appendStringInfoString(&err, ", \"sqlstate\": ");
	escape_json(&err, wf_exec_suspect_sqlstate);
	appendStringInfo(&err, ", \"class\": \"internal\", \"tries\": %d}",
					 wf_exec_suspect_errors);

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	args[0] = Int64GetDatum(wf_exec_suspect_run);
	args[1] = CStringGetTextDatum(wf_exec_suspect_step);
	args[2] = DirectFunctionCall1(jsonb_in, CStringGetDatum(err.data));
	edata = wf_util_try_spi(NULL, "SELECT wf._step_internal_error($1, $2, $3)",
							3, types, args, &unused);
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(oldcontext);

	if (edata == NULL)
		ereport(LOG,
				(errmsg("step \"%s\" of run " INT64_FORMAT " failed with an internal error",
						wf_exec_suspect_step, wf_exec_suspect_run),
				 errdetail("Handling the step failed %d times: %s",
						   wf_exec_suspect_errors, wf_exec_suspect_message)));
	else
	{
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("could not record the internal error of step \"%s\" of run " INT64_FORMAT ": %s",
						wf_exec_suspect_step, wf_exec_suspect_run, edata->message),
				 errdetail("Handling the step failed %d times: %s",
						   wf_exec_suspect_errors, wf_exec_suspect_message),
				 errhint("This executor leaves the run alone until it restarts.")));
		if (wf_exec_nexcluded < WF_EXEC_MAX_EXCLUDED)
			wf_exec_excluded[wf_exec_nexcluded++] = wf_exec_suspect_run;
	}
	wf_exec_suspect_run = 0;
	wf_exec_suspect_errors = 0;
}

/* Fails the step whose handling failed again, if it did (before a batch). */
void
wf_exec_fail_suspect_if_due(void)
{
	if (wf_exec_suspect_errors >= WF_EXEC_ITEM_TRIES)
		wf_exec_fail_suspect();
}

/* The runs this executor leaves out of its claims (n of them). */
const int64 *
wf_exec_excluded_runs(int *n)
{
	*n = wf_exec_nexcluded;
	return wf_exec_excluded;
}
