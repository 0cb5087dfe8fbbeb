/*-------------------------------------------------------------------------
 *
 * validate_steps.c
 *		Checks of a definition's own keys, of the step policies (retry,
 *		on_error, dependencies, compensate, circuit breaker, flow control)
 *		and of the step actions.
 *
 * See validate.c for how a definition is walked and what the functions of
 * these files may do (subtransactions, memory).
 *
 * src/validate_steps.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "access/xact.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "parser/parser.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "pg_workflow.h"

#include "validate_int.h"

/* ----------------------------------------------------------------
 * Checks of the definition's keys and of step policies
 * ----------------------------------------------------------------
 */

void
wfv_check_text(WfvState *st, WfvObject *o, const char *path, JsonbValue *v)
{
	(void) wfv_string(st, o->label, path, v, false);
}

void
wfv_check_interval(WfvState *st, WfvObject *o, const char *path,
				   JsonbValue *v)
{
	(void) wfv_interval(st, o->label, path, v);
}

void
wfv_check_jsonpath(WfvState *st, WfvObject *o, const char *path,
				   JsonbValue *v)
{
	(void) wfv_jsonpath(st, o->label, path, v);
}

void
wfv_check_top_steps(WfvState *st, WfvObject *o, const char *path,
					JsonbValue *v)
{
	wfv_step_array(st, o, path, v, true);
}

/* "retry": {max_attempts, backoff, initial_interval, max_interval, jitter} */
void
wfv_check_retry(WfvState *st, WfvObject *o, const char *path, JsonbValue *v)
{
	static const char *const keys[] = {"max_attempts", "backoff",
	"initial_interval", "max_interval", "jitter", NULL};
	static const char *const backoffs[] = {"fixed", "linear", "exponential",
	NULL};
	JsonbContainer *c = wfv_object(st, o->label, path, v);
	Interval   *initial = NULL;
	Interval   *max = NULL;
	JsonbValue	jv;
	JsonbValue *m;
	char	   *p;

	if (c == NULL)
		return;
	wfv_unknown_keys(st, o->label, c, keys, 0, path);

	p = wfv_sub(path, "max_attempts");
	if ((m = wfv_member(st, o->label, c, "max_attempts", p, false, &jv)))
		(void) wfv_integer(st, o->label, p, m, 1, WFV_MAX_ATTEMPTS);

	p = wfv_sub(path, "backoff");
	if ((m = wfv_member(st, o->label, c, "backoff", p, false, &jv)))
		(void) wfv_enum(st, o->label, p, m, backoffs);

	p = wfv_sub(path, "initial_interval");
	if ((m = wfv_member(st, o->label, c, "initial_interval", p, false, &jv)))
		initial = wfv_interval(st, o->label, p, m);

	p = wfv_sub(path, "max_interval");
	if ((m = wfv_member(st, o->label, c, "max_interval", p, false, &jv)))
		max = wfv_interval(st, o->label, p, m);

	if (initial != NULL && max != NULL &&
		DatumGetInt32(DirectFunctionCall2(interval_cmp,
										  IntervalPGetDatum(max),
										  IntervalPGetDatum(initial))) < 0)
		wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" must not be less than \"%s\"",
					p, wfv_sub(path, "initial_interval"));

	p = wfv_sub(path, "jitter");
	if ((m = wfv_member(st, o->label, c, "jitter", p, false, &jv)) &&
		m->type != jbvBool)
	{
		Datum		zero = NumericGetDatum(int64_to_numeric(0));
		Datum		one = NumericGetDatum(int64_to_numeric(1));

		if (m->type != jbvNumeric ||
			DatumGetInt32(DirectFunctionCall2(numeric_cmp,
											  NumericGetDatum(m->val.numeric),
											  zero)) < 0 ||
			DatumGetInt32(DirectFunctionCall2(numeric_cmp,
											  NumericGetDatum(m->val.numeric),
											  one)) > 0)
			wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
						"\"%s\" must be a number between 0 and 1, or a boolean",
						p);
	}
}

/* "on_error": STRATEGY or {"strategy": STRATEGY} */
void
wfv_check_on_error(WfvState *st, WfvObject *o, const char *path,
				   JsonbValue *v)
{
	static const char *const keys[] = {"strategy", NULL};
	const char *strategy;
	JsonbValue	jv;

	if (wfv_is_object(v))
	{
		JsonbContainer *c = v->val.binary.data;

		wfv_unknown_keys(st, o->label, c, keys, 0, path);
		path = wfv_sub(path, "strategy");
		if ((v = wfv_member(st, o->label, c, "strategy", path, true,
							&jv)) == NULL)
			return;
	}
	else if (v->type != jbvString)
	{
		wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" must be a string or an object", path);
		return;
	}

	strategy = wfv_enum(st, o->label, path, v,
						wfv_feature_names(WFV_STRATEGY));
	if (strategy != NULL &&
		!wfv_find(WFV_STRATEGY, strategy, strlen(strategy))->supported)
		wfv_problem(st, o->label, ERRCODE_FEATURE_NOT_SUPPORTED,
					"on_error strategy \"%s\" is not supported yet", strategy);
}

/* "dependencies": [names of other steps of the same list] */
void
wfv_check_dependencies(WfvState *st, WfvObject *o, const char *path,
					   JsonbValue *v)
{
	WfvList    *list = o->list;
	JsonbContainer *c;
	bool		bad_type = false;
	uint32		n;

	Assert(list != NULL);
	if (!wfv_is_array(v))
	{
		wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" must be an array of step names", path);
		return;
	}

	c = v->val.binary.data;
	n = JsonContainerSize(c);
	for (uint32 i = 0; i < n; i++)
	{
		JsonbValue *d = getIthJsonbValueFromContainer(c, i);
		char	   *dep;
		int			target;

		CHECK_FOR_INTERRUPTS();

		if (d->type != jbvString)
		{
			if (!bad_type)
				wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
							"\"%s\" must be an array of step names", path);
			bad_type = true;
			continue;
		}

		dep = pnstrdup(d->val.string.val, d->val.string.len);
		target = wfv_list_find(list, dep);
		if (target < 0)
			wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
						"dependency \"%s\" does not name a step%s", dep,
						list->where ? " in the same list" : "");
		else if (list->mark[target] == o->index + 1)
			wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
						"dependency \"%s\" is listed more than once", dep);
		else
		{
			list->mark[target] = o->index + 1;
			if (target == o->index)
				wfv_problem(st, o->label, ERRCODE_INVALID_OBJECT_DEFINITION,
							"step depends on itself");
			else
				list->edges[o->index] = lappend_int(list->edges[o->index],
													target);
		}
	}
}

/* "compensate": an object with one action, and its companion keys */
void
wfv_check_compensate(WfvState *st, WfvObject *o, const char *path,
					 JsonbValue *v)
{
	WfvObject	c;

	if (!wfv_object(st, o->label, path, v))
		return;

	memset(&c, 0, sizeof(c));
	c.label = o->label;
	c.within = path;
	c.obj = v->val.binary.data;
	c.depth = o->depth;

	wfv_unknown_keys(st, c.label, c.obj, NULL, WFV_ACTION | WFV_COMPANION,
					 path);
	wfv_check_action(st, &c);
	wfv_check_companions(st, &c);
}

/* "circuit_breaker": {"failures": N, "reset_after": INTERVAL} */
void
wfv_check_circuit_breaker(WfvState *st, WfvObject *o, const char *path,
						  JsonbValue *v)
{
	static const char *const keys[] = {"failures", "reset_after", NULL};
	JsonbContainer *c;
	JsonbValue	jv;
	JsonbValue *m;
	char	   *p;

	/* without a single action, that has been reported already */
	if (o->action != NULL &&
		strcmp(wf_kind_base(o->action)->name, "agent") == 0)
		wfv_problem(st, o->label, ERRCODE_FEATURE_NOT_SUPPORTED,
					"\"%s\" is not supported on agent steps yet", path);
	else if (o->action != NULL &&
			 strcmp(wf_kind_base(o->action)->name, "http") != 0)
		wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" is only allowed on http steps", path);

	if ((c = wfv_object(st, o->label, path, v)) == NULL)
		return;
	wfv_unknown_keys(st, o->label, c, keys, 0, path);

	p = wfv_sub(path, "failures");
	if ((m = wfv_member(st, o->label, c, "failures", p, true, &jv)))
		(void) wfv_integer(st, o->label, p, m, 1, PG_INT32_MAX);

	p = wfv_sub(path, "reset_after");
	if ((m = wfv_member(st, o->label, c, "reset_after", p, true, &jv)))
		(void) wfv_interval(st, o->label, p, m);
}

/*
 * "concurrency": {"key": TEMPLATE, "limit": N} of the workflow or of a
 * step; the key is rendered from the run's input (see wf._flow_admit), and
 * a step's also from its map item (wf._step_slot_key).
 */
void
wfv_check_concurrency(WfvState *st, WfvObject *o, const char *path,
					  JsonbValue *v)
{
	static const char *const keys[] = {"key", "limit", NULL};
	JsonbContainer *c;
	JsonbValue	jv;
	JsonbValue *m;
	char	   *p;

	if ((c = wfv_object(st, o->label, path, v)) == NULL)
		return;
	wfv_unknown_keys(st, o->label, c, keys, 0, path);

	p = wfv_sub(path, "key");
	if ((m = wfv_member(st, o->label, c, "key", p, false, &jv)) &&
		wfv_string(st, o->label, p, m, true) != NULL)
		(void) wfv_template(st, o->label, p, m);

	p = wfv_sub(path, "limit");
	if ((m = wfv_member(st, o->label, c, "limit", p, true, &jv)))
		(void) wfv_integer(st, o->label, p, m, 1, PG_INT32_MAX);
}

/*
 * "rate_limit": {"key": TEMPLATE, "limit": N, "per": INTERVAL} of an http
 * step (the key defaults to the url's host) or an agent step (its pool).  The limit is at most 10,000:
 * the bucket keeps the time of each grant within "per".
 */
void
wfv_check_rate_limit(WfvState *st, WfvObject *o, const char *path,
					 JsonbValue *v)
{
	static const char *const keys[] = {"key", "limit", "per", NULL};
	JsonbContainer *c;
	JsonbValue	jv;
	JsonbValue *m;
	char	   *p;

	/* without a single action, that has been reported already */
	if (o->action != NULL &&
		strcmp(wf_kind_base(o->action)->name, "http") != 0 &&
		strcmp(wf_kind_base(o->action)->name, "agent") != 0)
		wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" is only allowed on http and agent steps", path);

	if ((c = wfv_object(st, o->label, path, v)) == NULL)
		return;
	wfv_unknown_keys(st, o->label, c, keys, 0, path);

	p = wfv_sub(path, "key");
	if ((m = wfv_member(st, o->label, c, "key", p, false, &jv)) &&
		wfv_string(st, o->label, p, m, true) != NULL)
		(void) wfv_template(st, o->label, p, m);

	p = wfv_sub(path, "limit");
	if ((m = wfv_member(st, o->label, c, "limit", p, true, &jv)))
		(void) wfv_integer(st, o->label, p, m, 1, 10000);

	p = wfv_sub(path, "per");
	if ((m = wfv_member(st, o->label, c, "per", p, true, &jv)))
		(void) wfv_interval(st, o->label, p, m);
}

/* ----------------------------------------------------------------
 * Checks of step actions
 * ----------------------------------------------------------------
 */

/* "sql": a statement, never templated; it reads the context as $1 */
void
wf_validate_sql(WfvState *st, WfvObject *o, const char *path, JsonbValue *v)
{
	char	   *sql = wfv_string(st, o->label, path, v, true);
	Datum		parsed;
	ErrorData  *edata;
	List	   *stmts;
	ListCell   *lc;

	if (sql == NULL)
		return;

	if (!wfv_try_parse(wfv_parse_sql, sql, &parsed, &edata))
	{
		if (edata->cursorpos > 0)
			wfv_problem(st, o->label, ERRCODE_SYNTAX_ERROR,
						"\"%s\" is not valid SQL: %s at character %d",
						path, edata->message, edata->cursorpos);
		else
			wfv_problem(st, o->label, ERRCODE_SYNTAX_ERROR,
						"\"%s\" is not valid SQL: %s", path, edata->message);
		return;
	}

	stmts = (List *) DatumGetPointer(parsed);
	if (stmts == NIL)
		wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" contains no statement", path);

	foreach(lc, stmts)
	{
		RawStmt    *stmt = lfirst_node(RawStmt, lc);
		const char *why;
		const char *what;

		if (IsA(stmt->stmt, TransactionStmt))
		{
			wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
						"\"%s\" must not contain transaction control statements",
						path);
			break;
		}
		if ((what = wf_sql_unsupported(stmt->stmt, &why)) != NULL)
		{
			wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
						"\"%s\" must not contain %s: %s", path, what, why);
			break;
		}
	}
}

/* "http": {method, url, headers, body, timeout, ok_status} */
void
wf_validate_http(WfvState *st, WfvObject *o, const char *path, JsonbValue *v)
{
	static const char *const keys[] = {"method", "url", "headers", "body",
	"timeout", "ok_status", NULL};
	static const char *const methods[] = {"GET", "POST", "PUT", "PATCH",
	"DELETE", "HEAD", NULL};
	JsonbContainer *c = wfv_object(st, o->label, path, v);
	JsonbValue	jv;
	JsonbValue *m;
	char	   *p;

	if (c == NULL)
		return;
	wfv_unknown_keys(st, o->label, c, keys, 0, path);

	p = wfv_sub(path, "method");
	if ((m = wfv_member(st, o->label, c, "method", p, false, &jv)))
		(void) wfv_enum(st, o->label, p, m, methods);

	p = wfv_sub(path, "url");
	if ((m = wfv_member(st, o->label, c, "url", p, true, &jv)) &&
		wfv_template(st, o->label, p, m))
	{
		const char *url = m->val.string.val;
		int			len = m->val.string.len;

		/* without a template, the URL is final: check its scheme */
		if (strstr(pnstrdup(url, len), "{{") == NULL &&
			!(len >= 7 && pg_strncasecmp(url, "http://", 7) == 0) &&
			!(len >= 8 && pg_strncasecmp(url, "https://", 8) == 0))
			wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
						"\"%s\" must start with http:// or https://", p);
	}

	p = wfv_sub(path, "headers");
	if ((m = wfv_member(st, o->label, c, "headers", p, false, &jv)) &&
		wfv_object(st, o->label, p, m))
	{
		JsonbIterator *it = JsonbIteratorInit(m->val.binary.data);
		JsonbIteratorToken tok;
		JsonbValue	key;
		JsonbValue	val;

		while ((tok = JsonbIteratorNext(&it, &key, true)) != WJB_DONE)
		{
			if (tok != WJB_KEY)
				continue;
			tok = JsonbIteratorNext(&it, &val, true);
			Assert(tok == WJB_VALUE);
			(void) wfv_template(st, o->label,
								psprintf("%s.%.*s", p, key.val.string.len,
										 key.val.string.val),
								&val);
		}
	}

	p = wfv_sub(path, "body");
	if ((m = wfv_member(st, o->label, c, "body", p, false, &jv)))
		wfv_any_templates(st, o->label, p, m);

	p = wfv_sub(path, "timeout");
	if ((m = wfv_member(st, o->label, c, "timeout", p, false, &jv)))
		(void) wfv_interval(st, o->label, p, m);

	p = wfv_sub(path, "ok_status");
	if ((m = wfv_member(st, o->label, c, "ok_status", p, false, &jv)) &&
		!wfv_ok_status(m))
		wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" must be a status code from 100 to 599, an array of them, or a range such as \"200-299\"",
					p);
}

/* "agent": POOL, with "payload": any JSON, "requires": [CAPABILITY, ...] */
void
wf_validate_agent(WfvState *st, WfvObject *o, const char *path, JsonbValue *v)
{
	char	   *pool = wfv_string(st, o->label, path, v, false);
	JsonbValue	jv;
	JsonbValue *m;
	const char *p = wfv_path(o, "payload");

	if (pool != NULL && wfv_check_name(st, o->label, path, pool, true) &&
		strlen(pool) > WFV_MAX_POOL_NAME)
		wfv_problem(st, o->label, ERRCODE_PROGRAM_LIMIT_EXCEEDED,
					"\"%s\" is longer than %d bytes", path, WFV_MAX_POOL_NAME);
	if ((m = wfv_member(st, o->label, o->obj, "payload", p, false, &jv)))
		wfv_any_templates(st, o->label, p, m);

	p = wfv_path(o, "requires");
	if ((m = wfv_member(st, o->label, o->obj, "requires", p, false, &jv)))
	{
		bool		ok = wfv_is_array(m);

		if (ok)
		{
			JsonbIterator *it = JsonbIteratorInit(m->val.binary.data);
			JsonbIteratorToken tok;
			JsonbValue	ev;

			while ((tok = JsonbIteratorNext(&it, &ev, true)) != WJB_DONE)
				if (tok == WJB_ELEM && (ev.type != jbvString || ev.val.string.len == 0))
					ok = false;
		}
		if (!ok)
			wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
						"\"%s\" must be an array of non-empty strings", p);
	}
}

/* "wait_for": {"signal": NAME} or {"event": NAME, "key": TEMPLATE}, timeout */
void
wf_validate_wait_for(WfvState *st, WfvObject *o, const char *path,
				   JsonbValue *v)
{
	static const char *const keys[] = {"signal", "event", "key", "timeout",
	NULL};
	JsonbContainer *c = wfv_object(st, o->label, path, v);
	JsonbValue	sjv,
				ejv,
				jv;
	JsonbValue *signal;
	JsonbValue *event;
	JsonbValue *m;
	char	   *p;

	if (c == NULL)
		return;
	wfv_unknown_keys(st, o->label, c, keys, 0, path);

	signal = wfv_get(c, "signal", &sjv);
	event = wfv_get(c, "event", &ejv);
	if (signal != NULL && event != NULL)
		wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" must have \"signal\" or \"event\", not both",
					path);
	else if (signal == NULL && event == NULL)
		wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" must have \"signal\" or \"event\"", path);
	if (signal != NULL)
		(void) wfv_string(st, o->label, wfv_sub(path, "signal"), signal, true);
	if (event != NULL)
	{
		char	   *name = wfv_string(st, o->label, wfv_sub(path, "event"), event, true);

		/* A waiting step's key is "event:NAME:KEY": NAME has no ":". */
		if (name != NULL && strchr(name, ':') != NULL)
			wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
						"\"%s\" must not contain \":\"", wfv_sub(path, "event"));
	}

	p = wfv_sub(path, "key");
	if ((m = wfv_member(st, o->label, c, "key", p, false, &jv)))
	{
		if (event == NULL)
			wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
						"\"%s\" is only allowed with \"event\"", p);
		else
			(void) wfv_template(st, o->label, p, m);
	}

	p = wfv_sub(path, "timeout");
	if ((m = wfv_member(st, o->label, c, "timeout", p, false, &jv)))
		(void) wfv_interval(st, o->label, p, m);
}

/* "human": {assignee, title, description, timeout, escalation, ...} */
void
wf_validate_human(WfvState *st, WfvObject *o, const char *path, JsonbValue *v)
{
	static const char *const keys[] = {"assignee", "title", "description",
	"timeout", "escalation", "on_timeout", "payload", NULL};
	static const char *const escalation_keys[] = {"timeout", "escalate_to",
	NULL};
	JsonbContainer *c = wfv_object(st, o->label, path, v);
	JsonbContainer *e;
	JsonbValue	jv;
	JsonbValue *m;
	char	   *p;

	if (c == NULL)
		return;
	wfv_unknown_keys(st, o->label, c, keys, 0, path);

	p = wfv_sub(path, "assignee");
	if ((m = wfv_member(st, o->label, c, "assignee", p, true, &jv)))
		(void) wfv_template(st, o->label, p, m);

	p = wfv_sub(path, "title");
	if ((m = wfv_member(st, o->label, c, "title", p, false, &jv)))
		(void) wfv_string(st, o->label, p, m, false);

	p = wfv_sub(path, "description");
	if ((m = wfv_member(st, o->label, c, "description", p, false, &jv)))
		(void) wfv_string(st, o->label, p, m, false);

	p = wfv_sub(path, "timeout");
	if ((m = wfv_member(st, o->label, c, "timeout", p, false, &jv)))
		(void) wfv_interval(st, o->label, p, m);

	path = wfv_sub(path, "escalation");
	if ((m = wfv_member(st, o->label, c, "escalation", path, false, &jv)) &&
		(e = wfv_object(st, o->label, path, m)) != NULL)
	{
		wfv_unknown_keys(st, o->label, e, escalation_keys, 0, path);

		p = wfv_sub(path, "timeout");
		if ((m = wfv_member(st, o->label, e, "timeout", p, true, &jv)))
			(void) wfv_interval(st, o->label, p, m);

		p = wfv_sub(path, "escalate_to");
		if ((m = wfv_member(st, o->label, e, "escalate_to", p, true, &jv)))
			(void) wfv_template(st, o->label, p, m);
	}
}

/* "sleep": INTERVAL or {"until": TEMPLATE}; or "until": TEMPLATE */
void
wf_validate_sleep(WfvState *st, WfvObject *o, const char *path, JsonbValue *v)
{
	static const char *const keys[] = {"until", NULL};

	if (strcmp(o->action->name, "until") == 0)
		(void) wfv_template(st, o->label, path, v);
	else if (v->type == jbvString)
		(void) wfv_interval(st, o->label, path, v);
	else if (wfv_is_object(v))
	{
		JsonbContainer *c = v->val.binary.data;
		char	   *p = wfv_sub(path, "until");
		JsonbValue	jv;
		JsonbValue *m;

		wfv_unknown_keys(st, o->label, c, keys, 0, path);
		if ((m = wfv_member(st, o->label, c, "until", p, true, &jv)))
			(void) wfv_template(st, o->label, p, m);
	}
	else
		wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" must be an interval or an object with \"until\"",
					path);
}

/* "workflow": NAME, with "input": any JSON */
void
wf_validate_workflow(WfvState *st, WfvObject *o, const char *path,
				   JsonbValue *v)
{
	char	   *name = wfv_string(st, o->label, path, v, false);
	JsonbValue	jv;
	JsonbValue *m;
	const char *p = wfv_path(o, "input");

	if (name != NULL)
		(void) wfv_check_name(st, o->label, path, name, false);
	if ((m = wfv_member(st, o->label, o->obj, "input", p, false, &jv)))
		wfv_any_templates(st, o->label, p, m);
}

/* "if": PREDICATE, with "then": [steps] and "else": [steps] */
void
wf_validate_if(WfvState *st, WfvObject *o, const char *path, JsonbValue *v)
{
	const char *then_path = wfv_path(o, "then");
	const char *else_path = wfv_path(o, "else");
	JsonbValue	jv;
	JsonbValue *m;

	(void) wfv_jsonpath(st, o->label, path, v);
	if ((m = wfv_member(st, o->label, o->obj, "then", then_path, true, &jv)))
		wfv_step_array(st, o, then_path, m, true);
	if ((m = wfv_member(st, o->label, o->obj, "else", else_path, false, &jv)))
		wfv_step_array(st, o, else_path, m, false);
}

/* "parallel": [{"name": BRANCH, "steps": [steps]}, ...] */
void
wf_validate_parallel(WfvState *st, WfvObject *o, const char *path,
				   JsonbValue *v)
{
	static const char *const keys[] = {"name", "steps", NULL};
	JsonbContainer *c;
	char	  **seen;
	int			nseen = 0;
	uint32		n;

	if (!wfv_is_array(v) || JsonContainerSize(v->val.binary.data) == 0)
	{
		wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" must be a non-empty array", path);
		return;
	}

	c = v->val.binary.data;
	n = JsonContainerSize(c);
	seen = palloc(sizeof(char *) * n);
	for (uint32 i = 0; i < n && !st->stop; i++)
	{
		JsonbValue *b = getIthJsonbValueFromContainer(c, i);
		WfvObject	branch = *o;
		JsonbValue	jv;
		JsonbValue *m;
		char	   *name;

		if (!wfv_is_object(b))
		{
			wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
						"branch #%u must be a JSON object", i + 1);
			continue;
		}

		branch.label = psprintf("%s, branch #%u", o->label, i + 1);
		branch.within = NULL;
		branch.obj = b->val.binary.data;

		if ((m = wfv_member(st, branch.label, branch.obj, "name", "name",
							true, &jv)) &&
			(name = wfv_string(st, branch.label, "name", m, false)) &&
			wfv_check_name(st, branch.label, "name", name, true))
		{
			for (int j = 0; j < nseen; j++)
			{
				if (strcmp(seen[j], name) == 0)
				{
					wfv_problem(st, o->label, ERRCODE_DUPLICATE_OBJECT,
								"branch name \"%s\" is used more than once",
								name);
					break;
				}
			}
			seen[nseen++] = name;
			branch.label = psprintf("%s, branch \"%s\"", o->label, name);
		}

		wfv_unknown_keys(st, branch.label, branch.obj, keys, 0, NULL);
		if ((m = wfv_member(st, branch.label, branch.obj, "steps", "steps",
							true, &jv)))
			wfv_step_array(st, &branch, "steps", m, true);
	}
}

/* "map": {"over": PATH, "step": step, "concurrency": N} */
void
wf_validate_map(WfvState *st, WfvObject *o, const char *path, JsonbValue *v)
{
	static const char *const keys[] = {"over", "step", "concurrency", NULL};
	JsonbContainer *c = wfv_object(st, o->label, path, v);
	JsonbValue	jv;
	JsonbValue *m;
	char	   *p;

	if (c == NULL)
		return;
	wfv_unknown_keys(st, o->label, c, keys, 0, path);

	p = wfv_sub(path, "over");
	if ((m = wfv_member(st, o->label, c, "over", p, true, &jv)))
		(void) wfv_jsonpath(st, o->label, p, m);

	p = wfv_sub(path, "step");
	if ((m = wfv_member(st, o->label, c, "step", p, true, &jv)))
		wfv_nested(st, o, p, &m, 1, true);

	p = wfv_sub(path, "concurrency");
	if ((m = wfv_member(st, o->label, c, "concurrency", p, false, &jv)))
		(void) wfv_integer(st, o->label, p, m, 1, PG_INT32_MAX);
}
