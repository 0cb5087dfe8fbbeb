/*-------------------------------------------------------------------------
 *
 * validate_steps.c
 *		Checks of a definition's own keys and of the step policies (retry,
 *		on_error, dependencies, compensate, circuit breaker, flow control).
 *
 * See validate.c for how a definition is walked and what the functions of
 * these files may do (subtransactions, memory).  Each step kind's action
 * is checked in the kind's own file (wf_step_kinds[], kinds.c).
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

static const WfvMember wfv_breaker_members[] = {
	{"failures", true, wfv_check_count},
	{"reset_after", true, wfv_check_interval},
	{NULL}
};

/* "circuit_breaker": {"failures": N, "reset_after": INTERVAL} */
void
wfv_check_circuit_breaker(WfvState *st, WfvObject *o, const char *path,
						  JsonbValue *v)
{
	JsonbContainer *c;

	/* without a single action, that has been reported already */
	if (o->action != NULL && !o->action->calls_out)
		wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" is only allowed on http and agent steps", path);

	if ((c = wfv_object(st, o->label, path, v)) != NULL)
		wfv_members(st, o, c, path, wfv_breaker_members);
}

/* The key of a concurrency or rate limit: a non-empty template. */
static void
wfv_check_limit_key(WfvState *st, WfvObject *o, const char *path,
					JsonbValue *v)
{
	if (wfv_string(st, o->label, path, v, true) != NULL)
		(void) wfv_template(st, o->label, path, v);
}

static const WfvMember wfv_concurrency_members[] = {
	{"key", false, wfv_check_limit_key},
	{"limit", true, wfv_check_count},
	{NULL}
};

/*
 * "concurrency": {"key": TEMPLATE, "limit": N} of the workflow or of a
 * step; the key is rendered from the run's input (see wf._flow_admit), and
 * a step's also from its map item (wf._step_slot_key).
 */
void
wfv_check_concurrency(WfvState *st, WfvObject *o, const char *path,
					  JsonbValue *v)
{
	JsonbContainer *c = wfv_object(st, o->label, path, v);

	if (c != NULL)
		wfv_members(st, o, c, path, wfv_concurrency_members);
}

/* A rate limit's: at most 10,000 (see below). */
static void
wfv_check_rate(WfvState *st, WfvObject *o, const char *path, JsonbValue *v)
{
	(void) wfv_integer(st, o->label, path, v, 1, 10000);
}

static const WfvMember wfv_rate_limit_members[] = {
	{"key", false, wfv_check_limit_key},
	{"limit", true, wfv_check_rate},
	{"per", true, wfv_check_interval},
	{NULL}
};

/*
 * "rate_limit": {"key": TEMPLATE, "limit": N, "per": INTERVAL} of an http
 * step (the key defaults to the url's host) or an agent step (its pool).
 * The limit is at most 10,000: the bucket keeps the time of each grant
 * within "per".
 */
void
wfv_check_rate_limit(WfvState *st, WfvObject *o, const char *path,
					 JsonbValue *v)
{
	JsonbContainer *c;

	/* without a single action, that has been reported already */
	if (o->action != NULL && !o->action->calls_out)
		wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" is only allowed on http and agent steps", path);

	if ((c = wfv_object(st, o->label, path, v)) != NULL)
		wfv_members(st, o, c, path, wfv_rate_limit_members);
}
