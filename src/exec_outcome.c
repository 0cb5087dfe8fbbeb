/*-------------------------------------------------------------------------
 *
 * exec_outcome.c
 *		What happens after an attempt: a result that is a failure after
 *		all (a business error, an output too large), the failure recorded
 *		by the step's policy (retry time, on_error, the error as kept), and
 *		the completions of http requests checkpointed.
 *
 * The executor (executor.c) calls these in the step's or the batch's
 * transaction, with SPI connected.
 *
 * src/exec_outcome.c
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

/*
 * A retry policy setting: the step's, else the workflow's, else NULL.
 */
static char *
wf_exec_policy_text(Jsonb *step_policy, Jsonb *wf_policy, const char *key)
{
	char	   *v = wf_util_jsonb_get_text(step_policy, key);

	return v ? v : wf_util_jsonb_get_text(wf_policy, key);
}

static double
wf_exec_policy_number(Jsonb *step_policy, Jsonb *wf_policy, const char *key,
					  double dflt)
{
	return wf_util_jsonb_get_number(step_policy, key,
									wf_util_jsonb_get_number(wf_policy, key, dflt));
}

/*
 * When to run the next attempt after a transient failure of attempt
 * "attempt", or 0 when no attempt is left.  Defaults: 3 attempts,
 * exponential backoff from 1 s, capped at 5 minutes, no jitter.
 */
static TimestampTz
wf_exec_retry_at(Jsonb *step_retry, Jsonb *wf_retry, int attempt)
{
	double		max_attempts;
	char	   *backoff;
	char	   *s;
	double		initial_ms;
	double		max_ms;
	double		jitter;
	double		delay_ms;

	max_attempts = wf_exec_policy_number(step_retry, wf_retry, "max_attempts", 3);
	if (attempt >= max_attempts)
		return 0;

	backoff = wf_exec_policy_text(step_retry, wf_retry, "backoff");
	s = wf_exec_policy_text(step_retry, wf_retry, "initial_interval");
	initial_ms = s ? wf_util_interval_ms(s) : 1000;
	s = wf_exec_policy_text(step_retry, wf_retry, "max_interval");
	max_ms = s ? wf_util_interval_ms(s) : 5 * 60 * 1000;
	jitter = wf_exec_policy_number(step_retry, wf_retry, "jitter", 0);

	if (backoff != NULL && strcmp(backoff, "fixed") == 0)
		delay_ms = initial_ms;
	else if (backoff != NULL && strcmp(backoff, "linear") == 0)
		delay_ms = initial_ms * attempt;
	else
		delay_ms = initial_ms * pow(2.0, Min(attempt - 1, 60));
	delay_ms = Min(delay_ms, max_ms);
	if (jitter > 0)
		delay_ms *= 1.0 - Min(jitter, 1.0) * pg_prng_double(&pg_global_prng_state);

	return TimestampTzPlusMilliseconds(GetCurrentTimestamp(), (int64) delay_ms);
}

/*
 * The recorded form of a failed attempt.
 */
static Jsonb *
wf_exec_error_json(WfStepResult *res, int attempt)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"message\": ");
	escape_json(&buf, res->error_message ? res->error_message : "unknown error");
	if (res->error_detail)
	{
		appendStringInfoString(&buf, ", \"detail\": ");
		escape_json(&buf, res->error_detail);
	}
	if (res->sqlstate[0])
	{
		appendStringInfoString(&buf, ", \"sqlstate\": ");
		escape_json(&buf, res->sqlstate);
	}
	appendStringInfo(&buf, ", \"class\": \"%s\", \"attempt\": %d",
					 res->error_class == WF_ERROR_TRANSIENT ? "transient" :
					 res->error_class == WF_ERROR_BUSINESS ? "business" : "permanent",
					 attempt);
	if (res->timed_out)
		appendStringInfoString(&buf, ", \"timeout\": true");
	if (res->http_status)
		appendStringInfo(&buf, ", \"http_status\": %d", res->http_status);
	if (res->breaker_opened)
		appendStringInfoString(&buf, ", \"breaker_opened\": true");
	appendStringInfoChar(&buf, '}');
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}

/*
 * Turns a completed result into a failure when the output says so (a
 * business error) or is too large.
 */
void
wf_exec_check_output(WfStepResult *res)
{
	Jsonb	   *err;

	if (res->output == NULL)
		return;
	if (VARSIZE(res->output) > wf_guc_max_output_size)
	{
		res->outcome = WF_STEP_FAILED;
		res->error_class = WF_ERROR_PERMANENT;
		res->error_message = psprintf("step output of %zu bytes exceeds pg_workflow.max_output_size",
									  (size_t) VARSIZE(res->output));
		strlcpy(res->sqlstate, "54000", sizeof(res->sqlstate));
		res->output = NULL;
		return;
	}
	if (JB_ROOT_IS_OBJECT(res->output) &&
		(err = wf_util_jsonb_get(res->output, "error")) != NULL)
	{
		res->outcome = WF_STEP_FAILED;
		res->error_class = WF_ERROR_BUSINESS;
		res->error_message = wf_util_jsonb_get_text(res->output, "error");
		if (res->error_message == NULL)
			res->error_message = JsonbToCString(NULL, &err->root, VARSIZE(err));
	}
}


/*
 * Records a failed or interrupted attempt: the next attempt's time as the
 * retry policy says (no earlier than a Retry-After), or the step's failure
 * or skip as on_error says.  Returns the queue with the steps a skip made
 * ready in front.
 */
List *
wf_exec_record_failure(WfStepExec *ex, Jsonb *defaults, WfStepResult *res,
					   List *queue, MemoryContext batchctx)
{
	Datum		args[9];
	char		nulls[9] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	char	   *strategy = NULL;
	TimestampTz retry_at = 0;
	bool		skip = false;
	bool		escalate = false;
	bool		compensate = false;
	bool		isnull;
	Datum		ready;

	if (res->outcome == WF_STEP_FAILED)
	{
		Jsonb	   *on_error = wf_util_jsonb_get(ex->spec, "on_error");

		strategy = wf_util_jsonb_get_text(ex->spec, "on_error");
		if (strategy == NULL)
			strategy = wf_util_jsonb_get_text(on_error, "strategy");
		if (strategy == NULL)
			strategy = wf_util_jsonb_get_text(defaults, "on_error");
		if (strategy == NULL)
			strategy = wf_util_jsonb_get_text(wf_util_jsonb_get(defaults, "on_error"),
											  "strategy");

		/* on_error applies once the retry policy is exhausted. */
		if (res->error_class == WF_ERROR_TRANSIENT)
			retry_at = wf_exec_retry_at(wf_util_jsonb_get(ex->spec, "retry"),
										wf_util_jsonb_get(defaults, "retry"),
										ex->attempt);
		if (retry_at != 0 && res->retry_after_s > 0)
			retry_at = Max(retry_at,
						   TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   (int64) res->retry_after_s * 1000));
		if (retry_at == 0 && strategy != NULL && strcmp(strategy, "skip") == 0)
			skip = true;
		if (retry_at == 0 && strategy != NULL && strcmp(strategy, "escalate") == 0)
			escalate = true;
		if (retry_at == 0 && strategy != NULL && strcmp(strategy, "compensate") == 0)
			compensate = true;
		/* The run cannot go on (its owner was dropped): it fails now. */
		if (res->fatal)
		{
			retry_at = 0;
			skip = escalate = compensate = false;
		}
		ereport(LOG,
				(errmsg("step \"%s\" of run " INT64_FORMAT " failed: %s",
						ex->step, ex->run_id, res->error_message),
				 retry_at ? errdetail("Attempt %d will be retried at %s.", ex->attempt,
									  timestamptz_to_str(retry_at)) : 0));
	}

	if (res->outcome == WF_STEP_DEFERRED)
		retry_at = res->defer_until;
	if (retry_at != 0)
		wf_exec_timers_set = true;

	args[0] = Int64GetDatum(ex->run_id);
	args[1] = CStringGetTextDatum(ex->step);
	args[2] = JsonbPGetDatum(wf_exec_error_json(res, ex->attempt));
	args[3] = TimestampTzGetDatum(retry_at);
	nulls[3] = retry_at ? ' ' : 'n';
	args[4] = BoolGetDatum(skip);
	args[5] = BoolGetDatum(res->outcome == WF_STEP_INTERRUPTED ||
						   res->outcome == WF_STEP_DEFERRED);
	args[6] = BoolGetDatum(escalate);
	args[7] = BoolGetDatum(compensate);
	if (res->outcome == WF_STEP_DEFERRED && res->defer_key != NULL)
		args[8] = CStringGetTextDatum(res->defer_key);
	else
		nulls[8] = 'n';
	if (SPI_execute_plan(wf_plan_failed, args, nulls, false, 0) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not record the failure of step \"%s\"", ex->step);
	ready = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return wf_exec_append_ready(queue, ex->run_id, ready, isnull, false, batchctx);
}

/*
 * Is status one of the step's ok_status (default 200-299)?  ok_status is a
 * number, a range "200-299", or an array of those.
 */
static bool
wf_exec_http_status_ok(Jsonb *ok_status, int status)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;

	if (ok_status == NULL)
		return status >= 200 && status <= 299;
	it = JsonbIteratorInit(&ok_status->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok != WJB_ELEM && tok != WJB_VALUE)
			continue;
		if (v.type == jbvNumeric &&
			DatumGetInt32(DirectFunctionCall1(numeric_int4,
											  NumericGetDatum(v.val.numeric))) == status)
			return true;
		if (v.type == jbvString)
		{
			char	   *range = pnstrdup(v.val.string.val, v.val.string.len);
			int			lo,
						hi;

			if (sscanf(range, "%d-%d", &lo, &hi) == 2 && status >= lo && status <= hi)
				return true;
		}
	}
	return false;
}

/*
 * The definition (ex->spec) and the workflow's defaults of the step of an
 * asynchronous attempt that just ended (an http response, an agent's
 * task), locked, if ex's attempt is still the step's running one; false
 * otherwise (the run was cancelled, retried or rewound meanwhile).
 */
bool
wf_exec_resume_attempt(WfStepExec *ex, Jsonb **defaults)
{
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	bool		isnull;

	args[0] = Int64GetDatum(ex->run_id);
	args[1] = CStringGetTextDatum(ex->step);
	args[2] = Int32GetDatum(ex->attempt);
	args[3] = TimestampTzGetDatum(ex->started_at);
	if (SPI_execute_plan(wf_plan_resume, args, nulls, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not resume step \"%s\"", ex->step);
	if (SPI_processed == 0)
		return false;
	ex->spec = DatumGetJsonbPCopy(SPI_getbinval(SPI_tuptable->vals[0],
												SPI_tuptable->tupdesc, 1, &isnull));
	*defaults = DatumGetJsonbPCopy(SPI_getbinval(SPI_tuptable->vals[0],
												 SPI_tuptable->tupdesc, 2, &isnull));
	SPI_freetuptable(SPI_tuptable);
	return true;
}

/*
 * Records an attempt's end on circuit breaker "key" of a step with
 * "circuit_breaker" (an http step's host, an agent step's "agent:POOL"):
 * ok for an answer the other side gave (a success, or an error that is
 * not transient), a failure otherwise.  Returns true when this failure
 * opened the breaker.
 */
bool
wf_exec_breaker_record(Jsonb *spec, const char *key, bool ok)
{
	Jsonb	   *breaker = wf_util_jsonb_get(spec, "circuit_breaker");
	Oid			types[4] = {TEXTOID, BOOLOID, INT4OID, TEXTOID};
	Datum		args[4];
	bool		isnull;

	if (breaker == NULL)
		return false;
	args[0] = CStringGetTextDatum(key);
	args[1] = BoolGetDatum(ok);
	args[2] = Int32GetDatum((int) wf_util_jsonb_get_number(breaker, "failures", 5));
	args[3] = CStringGetTextDatum(wf_util_jsonb_get_text(breaker, "reset_after"));
	if (SPI_execute_with_args("SELECT wf._breaker_record($1, $2, $3, $4::interval)",
							  4, types, args, NULL, false, 0) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not record on the circuit breaker");
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0],
									  SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * Checkpoints a finished http request: the step's output, or its failure
 * classified (429, 408, 5xx and transport errors are transient, other
 * statuses permanent).  A completion whose attempt is no longer the step's
 * running one (the run was cancelled or rewound meanwhile) is dropped.
 */
List *
wf_exec_completion(WfHttpCompletion *c, List *queue, MemoryContext batchctx)
{
	WfStepExec *ex = palloc0(sizeof(WfStepExec));
	WfStepResult *res = palloc0(sizeof(WfStepResult));
	Jsonb	   *defaults;
	bool		transient;
	bool		isnull;

	wf_http_completion_key(c, &ex->run_id, &ex->step, &ex->attempt, &ex->started_at);
	if (!wf_exec_resume_attempt(ex, &defaults))
		return queue;

	transient = c->error != NULL ? c->transient :
		(c->status == 429 || c->status == 408 || c->status >= 500);
	if (wf_http_breaker_key(c) != NULL)
		res->breaker_opened = wf_exec_breaker_record(ex->spec, wf_http_breaker_key(c),
													 !transient);
	/* A 429 with Retry-After: the rate limit has no token until then. */
	if (c->status == 429 && c->retry_after_s > 0 && wf_http_rate_key(c) != NULL)
	{
		Oid			rtypes[2] = {TEXTOID, TIMESTAMPTZOID};
		Datum		rargs[2];

		rargs[0] = CStringGetTextDatum(wf_http_rate_key(c));
		rargs[1] = TimestampTzGetDatum(TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
																   (int64) c->retry_after_s * 1000));
		if (SPI_execute_with_args("SELECT wf._rate_block($1, $2)", 2, rtypes, rargs,
								  NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not record a Retry-After on the rate limit");
	}

	if (c->error == NULL &&
		wf_exec_http_status_ok(wf_util_jsonb_get(wf_util_jsonb_get(ex->spec, "http"),
												 "ok_status"), c->status))
	{
		Jsonb	   *output = wf_http_output(c);
		Datum		dargs[4];
		char		dnulls[4] = {' ', ' ', ' ', ' '};
		Datum		ready;

		dargs[0] = Int64GetDatum(ex->run_id);
		dargs[1] = CStringGetTextDatum(ex->step);
		dargs[2] = CStringGetTextDatum("completed");
		dargs[3] = JsonbPGetDatum(output);
		if (SPI_execute_plan(wf_plan_done, dargs, dnulls, false, 0) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "could not checkpoint step \"%s\"", ex->step);
		if (!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
										1, &isnull)))
			return queue;
		ready = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
		return wf_exec_append_ready(queue, ex->run_id, ready, isnull, false, batchctx);
	}

	res->outcome = WF_STEP_FAILED;
	res->error_message = wf_http_error_message(c);
	strlcpy(res->sqlstate, c->sqlstate, sizeof(res->sqlstate));
	res->http_status = c->status;
	res->timed_out = c->timed_out;
	res->retry_after_s = c->retry_after_s;
	res->error_class = transient ? WF_ERROR_TRANSIENT : WF_ERROR_PERMANENT;
	return wf_exec_record_failure(ex, defaults, res, queue, batchctx);
}

