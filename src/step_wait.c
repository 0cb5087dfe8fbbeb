/*-------------------------------------------------------------------------
 *
 * step_wait.c
 *		The step kinds that wait durably: "sleep" (a timer) and "wait_for"
 *		(a signal sent with wf_signal, or an event emitted with wf_emit).
 *
 * A waiting step is a row with status "waiting": its timer, if any, is its
 * ready_at (the executors sleep until the earliest one), and what it waits
 * for is its wait_key ("signal:NAME" or "event:NAME:KEY").  wf_signal and
 * wf_emit set ready_at to now for the steps they concern and wake an
 * executor at commit.  Nothing runs and no query is made while a step
 * waits; it survives restarts because it is nothing but that row.
 *
 * When the executor claims a waiting step, it calls the kind's "resume":
 * the timer fired, or a signal or an event came.  A signal is taken from
 * wf.signal by exactly one step; a signal sent before the step waits is
 * kept there and taken as soon as the step starts.  ("human" steps wait
 * the same way; this file also checks the definitions of the three kinds.)
 *
 * src/step_wait.c
 *
 *-------------------------------------------------------------------------
 */
#include "pg_workflow.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "validate_int.h"

/*
 * Takes the oldest pending signal "name" of the run; true and *payload
 * when there was one.
 */
static bool
wf_wait_take_signal(WfStepExec *ex, const char *name, Jsonb **payload)
{
	Oid			types[3] = {INT8OID, TEXTOID, TEXTOID};
	Datum		args[3];
	bool		isnull;
	bool		found;

	args[0] = Int64GetDatum(ex->run_id);
	args[1] = CStringGetTextDatum(ex->step);
	args[2] = CStringGetTextDatum(name);
	if (SPI_execute_with_args("SELECT taken, payload FROM wf._take_signal($1, $2, $3)",
							  3, types, args, NULL, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not take signal \"%s\"", name);
	found = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									   1, &isnull));
	if (found)
		*payload = DatumGetJsonbPCopy(SPI_getbinval(SPI_tuptable->vals[0],
													SPI_tuptable->tupdesc, 2, &isnull));
	SPI_freetuptable(SPI_tuptable);
	return found;
}

/* The moment an interval given as text after "from" is over. */
static TimestampTz
wf_wait_after(TimestampTz from, const char *interval)
{
	return TimestampTzPlusMilliseconds(from, wf_util_interval_ms(interval));
}

/* ----------------------------------------------------------------
 * sleep: "5 minutes", {"until": TEMPLATE}, or a step-level "until"
 * ----------------------------------------------------------------
 */
void
wf_wait_sleep_execute(WfStepExec *ex, WfStepResult *res)
{
	Jsonb	   *sleep = wf_util_jsonb_get(ex->spec, "sleep");
	char	   *duration = wf_util_jsonb_scalar_text(sleep);
	char	   *until = NULL;
	TimestampTz at;

	if (duration != NULL)
		at = wf_wait_after(GetCurrentTimestamp(), duration);
	else
	{
		WfTemplateCtx tc;

		until = sleep ? wf_util_jsonb_get_text(sleep, "until") :
			wf_util_jsonb_get_text(ex->spec, "until");
		if (until == NULL)
			elog(ERROR, "sleep step \"%s\" has neither a duration nor \"until\"", ex->step);
		memset(&tc, 0, sizeof(tc));
		tc.context = ex->context;
		tc.owner = ex->owner;	/* allow_secrets stays false */
		until = wf_template_render_string(&tc, until, false);
		at = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in,
													 CStringGetDatum(until),
													 ObjectIdGetDatum(InvalidOid),
													 Int32GetDatum(-1)));
	}

	if (at <= GetCurrentTimestamp())
	{
		res->outcome = WF_STEP_COMPLETED;
		res->output = NULL;
		return;
	}
	res->outcome = WF_STEP_WAITING;
	res->wake_at = at;
	res->wait_key = NULL;
}

/* The timer fired. */
void
wf_wait_sleep_resume(WfStepExec *ex, WfStepResult *res)
{
	res->outcome = WF_STEP_COMPLETED;
	res->output = NULL;
}

/* ----------------------------------------------------------------
 * wait_for: {"signal": NAME} or {"event": NAME, "key": TEMPLATE},
 * optional "timeout"
 * ----------------------------------------------------------------
 */

/*
 * Waits (again): until the timeout counted from the attempt's start, for
 * what wait_key names.
 */
static void
wf_wait_for_wait(WfStepExec *ex, WfStepResult *res, Jsonb *w, char *wait_key)
{
	char	   *timeout = wf_util_jsonb_get_text(w, "timeout");
	char	   *what = wf_util_jsonb_get_text(w, "signal");

	res->wait_key = wait_key;
	res->wake_at = timeout ? wf_wait_after(ex->started_at, timeout) : 0;
	if (res->wake_at != 0 && res->wake_at <= GetCurrentTimestamp())
	{
		res->outcome = WF_STEP_FAILED;
		res->error_class = WF_ERROR_PERMANENT;
		res->timed_out = true;
		if (what == NULL)
			what = wf_util_jsonb_get_text(w, "event");
		res->error_message = psprintf("no %s \"%s\" came within %s",
									  wf_util_jsonb_get_text(w, "signal") ? "signal" : "event",
									  what, timeout);
		return;
	}
	res->outcome = WF_STEP_WAITING;
}

/*
 * Completes with the oldest pending signal, or waits (again) for one: at
 * the start, a signal sent before we got here is kept for us; on a wake-up
 * without one, another step took it or the timer fired.
 */
static void
wf_wait_for_signal(WfStepExec *ex, WfStepResult *res, Jsonb *w, const char *signal)
{
	Jsonb	   *payload;

	if (wf_wait_take_signal(ex, signal, &payload))
	{
		res->outcome = WF_STEP_COMPLETED;
		res->output = payload;
		return;
	}
	wf_wait_for_wait(ex, res, w, psprintf("signal:%s", signal));
}

void
wf_wait_for_execute(WfStepExec *ex, WfStepResult *res)
{
	Jsonb	   *w = wf_util_jsonb_get(ex->spec, "wait_for");
	char	   *signal = wf_util_jsonb_get_text(w, "signal");
	char	   *event = wf_util_jsonb_get_text(w, "event");

	if (signal != NULL)
		wf_wait_for_signal(ex, res, w, signal);
	else
	{
		char	   *key = wf_util_jsonb_get_text(w, "key");

		if (key != NULL)
		{
			WfTemplateCtx tc;

			memset(&tc, 0, sizeof(tc));
			tc.context = ex->context;
			tc.owner = ex->owner;	/* allow_secrets stays false */
			key = wf_template_render_string(&tc, key, false);
		}
		wf_wait_for_wait(ex, res, w, psprintf("event:%s:%s", event, key ? key : ""));
	}
}

void
wf_wait_for_resume(WfStepExec *ex, WfStepResult *res)
{
	Jsonb	   *w = wf_util_jsonb_get(ex->spec, "wait_for");
	char	   *signal = wf_util_jsonb_get_text(w, "signal");

	if (signal != NULL)
	{
		wf_wait_for_signal(ex, res, w, signal);
		return;
	}
	if (ex->payload != NULL)
	{
		/* wf_emit left {"event", "key", "payload"}: the output is the payload. */
		res->outcome = WF_STEP_COMPLETED;
		res->output = wf_util_jsonb_get(ex->payload, "payload");
		return;
	}
	wf_wait_for_wait(ex, res, w, ex->wait_key);
}

/* ----------------------------------------------------------------
 * human: {assignee, timeout, escalation: {timeout, escalate_to},
 * on_timeout, title, description}.  The decision is the signal named
 * after the step: wf_signal(run, '<step name>', decision).
 * ----------------------------------------------------------------
 */

static void
wf_wait_human_assign(WfStepExec *ex, const char *assignee, bool escalate)
{
	Oid			types[5] = {INT8OID, TEXTOID, TEXTOID, BOOLOID, TEXTOID};
	Datum		args[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', 'n'};
	char	   *title = wf_util_jsonb_get_text(wf_util_jsonb_get(ex->spec, "human"), "title");
	WfTemplateCtx tc;

	memset(&tc, 0, sizeof(tc));
	tc.context = ex->context;
	tc.owner = ex->owner;	/* allow_secrets stays false */
	args[0] = Int64GetDatum(ex->run_id);
	args[1] = CStringGetTextDatum(ex->step);
	args[2] = CStringGetTextDatum(wf_template_render_string(&tc, assignee, false));
	args[3] = BoolGetDatum(escalate);
	if (title != NULL && !escalate)
	{
		args[4] = CStringGetTextDatum(wf_template_render_string(&tc, title, false));
		nulls[4] = ' ';
	}
	if (SPI_execute_with_args("SELECT wf._human_task($1, $2, $3, $4, $5)", 5, types, args,
							  nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not assign human step \"%s\"", ex->step);
}

void
wf_wait_human_execute(WfStepExec *ex, WfStepResult *res)
{
	Jsonb	   *h = wf_util_jsonb_get(ex->spec, "human");
	char	   *timeout = wf_util_jsonb_get_text(h, "timeout");
	Jsonb	   *decision;

	wf_wait_human_assign(ex, wf_util_jsonb_get_text(h, "assignee"), false);
	if (wf_wait_take_signal(ex, ex->step, &decision))
	{
		res->outcome = WF_STEP_COMPLETED;
		res->output = decision;
		return;
	}
	res->outcome = WF_STEP_WAITING;
	res->wait_key = psprintf("signal:%s", ex->step);
	res->wake_at = timeout ? wf_wait_after(ex->started_at, timeout) : 0;
}

void
wf_wait_human_resume(WfStepExec *ex, WfStepResult *res)
{
	Jsonb	   *h = wf_util_jsonb_get(ex->spec, "human");
	Jsonb	   *escalation = wf_util_jsonb_get(h, "escalation");
	Jsonb	   *on_timeout = wf_util_jsonb_get(h, "on_timeout");
	char	   *timeout = wf_util_jsonb_get_text(h, "timeout");
	Jsonb	   *decision;
	TimestampTz deadline;

	if (wf_wait_take_signal(ex, ex->step, &decision))
	{
		res->outcome = WF_STEP_COMPLETED;
		res->output = decision;
		return;
	}

	/* Woken without a decision: the deadline, or a spurious wake-up. */
	res->wait_key = psprintf("signal:%s", ex->step);
	deadline = timeout ? wf_wait_after(ex->started_at, timeout) : 0;
	if (ex->escalated_at != 0)
		deadline = wf_wait_after(ex->escalated_at,
								 wf_util_jsonb_get_text(escalation, "timeout"));
	if (deadline == 0 || deadline > GetCurrentTimestamp())
	{
		res->outcome = WF_STEP_WAITING;
		res->wake_at = deadline;
		return;
	}

	if (escalation != NULL && ex->escalated_at == 0)
	{
		/* First deadline: reassign, alert, and wait for the second. */
		wf_wait_human_assign(ex, wf_util_jsonb_get_text(escalation, "escalate_to"), true);
		res->outcome = WF_STEP_WAITING;
		res->wake_at = wf_wait_after(GetCurrentTimestamp(),
									 wf_util_jsonb_get_text(escalation, "timeout"));
		return;
	}
	if (on_timeout != NULL)
	{
		res->outcome = WF_STEP_COMPLETED;
		res->output = on_timeout;
		return;
	}
	res->outcome = WF_STEP_FAILED;
	res->error_class = WF_ERROR_PERMANENT;
	res->timed_out = true;
	res->error_message = psprintf("approval \"%s\" got no decision in time", ex->step);
}

/* ----------------------------------------------------------------
 * The checks of the actions, for wf_validate (kinds.c)
 * ----------------------------------------------------------------
 */

static void
wf_wait_check_signal(WfvState *st, WfvObject *o, const char *path,
					 JsonbValue *v)
{
	(void) wfv_string(st, o->label, path, v, true);
}

/* A waiting step's key is "event:NAME:KEY": NAME has no ":". */
static void
wf_wait_check_event(WfvState *st, WfvObject *o, const char *path,
					JsonbValue *v)
{
	char	   *name = wfv_string(st, o->label, path, v, true);

	if (name != NULL && strchr(name, ':') != NULL)
		wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" must not contain \":\"", path);
}

static const WfvMember wf_wait_for_members[] = {
	{"signal", false, wf_wait_check_signal},
	{"event", false, wf_wait_check_event},
	{"key", false, wfv_check_template},
	{"timeout", false, wfv_check_interval},
	{NULL}
};

/* "wait_for": {"signal": NAME} or {"event": NAME, "key": TEMPLATE}, timeout */
void
wf_wait_for_check(WfvState *st, WfvObject *o, const char *path, JsonbValue *v)
{
	JsonbContainer *c = wfv_object(st, o->label, path, v);
	JsonbValue	jv;
	bool		signal;
	bool		event;

	if (c == NULL)
		return;
	signal = wfv_get(c, "signal", &jv) != NULL;
	event = wfv_get(c, "event", &jv) != NULL;
	if (signal && event)
		wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" must have \"signal\" or \"event\", not both",
					path);
	else if (!signal && !event)
		wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" must have \"signal\" or \"event\"", path);
	wfv_members(st, o, c, path, wf_wait_for_members);
	if (!event && wfv_get(c, "key", &jv) != NULL)
		wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" is only allowed with \"event\"",
					wfv_sub(path, "key"));
}

static const WfvMember wf_wait_escalation_members[] = {
	{"timeout", true, wfv_check_interval},
	{"escalate_to", true, wfv_check_template},
	{NULL}
};

/* "escalation": {"timeout": INTERVAL, "escalate_to": TEMPLATE} */
static void
wf_wait_check_escalation(WfvState *st, WfvObject *o, const char *path,
						 JsonbValue *v)
{
	JsonbContainer *c = wfv_object(st, o->label, path, v);

	if (c != NULL)
		wfv_members(st, o, c, path, wf_wait_escalation_members);
}

static const WfvMember wf_wait_human_members[] = {
	{"assignee", true, wfv_check_template},
	{"title", false, wfv_check_text},
	{"description", false, wfv_check_text},
	{"timeout", false, wfv_check_interval},
	{"escalation", false, wf_wait_check_escalation},
	{"on_timeout", false, NULL},
	{"payload", false, NULL},
	{NULL}
};

/* "human": {assignee, title, description, timeout, escalation, ...} */
void
wf_wait_human_check(WfvState *st, WfvObject *o, const char *path,
					JsonbValue *v)
{
	JsonbContainer *c = wfv_object(st, o->label, path, v);

	if (c != NULL)
		wfv_members(st, o, c, path, wf_wait_human_members);
}

static const WfvMember wf_wait_sleep_members[] = {
	{"until", true, wfv_check_template},
	{NULL}
};

/* "sleep": INTERVAL or {"until": TEMPLATE}; or "until": TEMPLATE */
void
wf_wait_sleep_check(WfvState *st, WfvObject *o, const char *path,
					JsonbValue *v)
{
	if (strcmp(o->action->name, "until") == 0)
		(void) wfv_template(st, o->label, path, v);
	else if (v->type == jbvString)
		(void) wfv_interval(st, o->label, path, v);
	else if (wfv_is_object(v))
		wfv_members(st, o, v->val.binary.data, path, wf_wait_sleep_members);
	else
		wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" must be an interval or an object with \"until\"",
					path);
}
