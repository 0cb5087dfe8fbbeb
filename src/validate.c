/*-------------------------------------------------------------------------
 *
 * validate.c
 *		Checks of workflow definitions.
 *
 * wf_validate_definition() walks a definition document and returns every
 * problem it finds; wf_validate_report() turns such a list into an ERROR.
 * The SQL functions wf_validate() and wf._check_definition() expose them.
 *
 * Problems are reported in document order: steps in the order of their
 * lists, nested steps right after the step holding them.  Since jsonb does
 * not keep the order of an object's keys, the problems of one object come
 * in a fixed order instead: its name, unknown keys, then the known keys in
 * the order of wfv_features[] (or of the key list of a nested object).
 *
 * What the engine accepts is decided by the table wfv_features[] (keys and
 * strategies) and by the table of step kinds, wf_step_kinds[] (kinds.c),
 * which the executor and the SQL planning use too: a key, action or
 * strategy that is specified but not supported yet has "supported" set
 * to false and is rejected with FEATURE_NOT_SUPPORTED.  The structural
 * check of every entry is written already and runs as soon as the flag is
 * set.
 *
 * Values that only PostgreSQL's own parsers can judge (intervals, JSON
 * paths, SQL statements) are parsed inside an internal subtransaction, so
 * that a bad value becomes a problem instead of an ERROR.  The functions of
 * this file must therefore run inside a transaction and not in parallel
 * mode.  All memory is allocated in CurrentMemoryContext.
 *
 * This file walks the definition (the exported functions, the table of
 * keys, the step lists and their dependency cycles); validate_values.c
 * checks values, validate_steps.c the definition's keys and step policies;
 * each kind's file checks its action (wf_step_kinds[] names the functions
 * and tables); validate_int.h is what they all share.
 *
 * src/validate.c
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

static const char **wfv_kind_names(void);
static const WfStepKind *wfv_companion_of(const char *key, int len);
static void wfv_check_keys(WfvState *st, WfvObject *o, WfvRole role);
static void wfv_steps(WfvState *st, JsonbValue **steps, int nsteps,
					  int depth, const char *where, bool single);
static int	wfv_name_cmp(const void *a, const void *b, void *arg);
static char *wfv_step_label(WfvList *list, int index, const char *name);
static void wfv_cycles(WfvState *st, WfvList *list);
static void wfv_cycles_visit(WfvState *st, WfvList *list, int step,
							 char *state, int *path, int *npath);

/*
 * Everything a definition may contain besides the step actions (which are
 * the kinds of wf_step_kinds[]), and whether the engine implements it yet.
 * Enabling a feature is flipping its flag.
 */
static const WfvFeature wfv_features[] = {
	/* keys of the definition */
	{"description", WFV_DOCUMENT, wfv_check_text, true},
	{"timeout", WFV_DOCUMENT, wfv_check_interval, true},
	{"sla", WFV_DOCUMENT, wfv_check_interval, true},
	{"retry", WFV_DOCUMENT, wfv_check_retry, true},
	{"on_error", WFV_DOCUMENT, wfv_check_on_error, true},
	{"steps", WFV_DOCUMENT, wfv_check_top_steps, true},
	{"concurrency", WFV_DOCUMENT, wfv_check_concurrency, true},

	/*
	 * The step keys that go with one action are its kind's companions
	 * (wf_step_kinds[]).
	 */

	/* step policies */
	{"dependencies", WFV_POLICY, wfv_check_dependencies, true},
	{"when", WFV_POLICY, wfv_check_jsonpath, true},
	{"timeout", WFV_POLICY, wfv_check_interval, true},
	{"sla", WFV_POLICY, wfv_check_interval, true},
	{"retry", WFV_POLICY, wfv_check_retry, true},
	{"on_error", WFV_POLICY, wfv_check_on_error, true},
	{"compensate", WFV_POLICY, wfv_check_compensate, true},
	{"circuit_breaker", WFV_POLICY, wfv_check_circuit_breaker, true},
	{"rate_limit", WFV_POLICY, wfv_check_rate_limit, true},
	{"concurrency", WFV_POLICY, wfv_check_concurrency, true},

	/* strategies of "on_error" */
	{"retry", WFV_STRATEGY, NULL, true},
	{"skip", WFV_STRATEGY, NULL, true},
	{"compensate", WFV_STRATEGY, NULL, true},
	{"escalate", WFV_STRATEGY, NULL, true},
	{"fail", WFV_STRATEGY, NULL, true},
};

#define WFV_NFEATURES	lengthof(wfv_features)

/* ----------------------------------------------------------------
 * Exported functions
 * ----------------------------------------------------------------
 */

/*
 * Return every problem of a workflow definition, as a list of WfProblem;
 * NIL when the definition is valid.
 */
List *
wf_validate_definition(Jsonb *definition)
{
	WfvState	st;
	WfvObject	doc;
	HASHCTL		ctl;

	memset(&st, 0, sizeof(st));

	if (!JB_ROOT_IS_OBJECT(definition))
	{
		wfv_problem(&st, NULL, ERRCODE_INVALID_PARAMETER_VALUE,
					"definition must be a JSON object");
		return st.problems;
	}

	ctl.keysize = sizeof(((WfvName *) NULL)->name);
	ctl.entrysize = sizeof(WfvName);
	ctl.hcxt = CurrentMemoryContext;
	st.names = hash_create("pg_workflow step names", 64, &ctl,
						   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);

	memset(&doc, 0, sizeof(doc));
	doc.obj = &definition->root;

	wfv_unknown_keys(&st, NULL, doc.obj, NULL, WFV_DOCUMENT, NULL);
	wfv_check_keys(&st, &doc, WFV_DOCUMENT);
	{
		static const char *const skip[] = {"steps", NULL};
		StringInfoData path;

		/* the steps are checked one by one, by wfv_step() */
		initStringInfo(&path);
		wfv_secrets_of(&st, NULL, &path, doc.obj, skip);
	}

	hash_destroy(st.names);

	return st.problems;
}

/*
 * Raise an ERROR for a list of problems, if not empty: the first problem is
 * the message, and when there are more the detail lists them all.
 */
void
wf_validate_report(List *problems)
{
	WfProblem  *first;
	StringInfoData detail;
	ListCell   *lc;
	int			n = 0;

	if (problems == NIL)
		return;

	first = (WfProblem *) linitial(problems);
	if (list_length(problems) == 1)
		ereport(ERROR,
				(errcode(first->sqlstate),
				 errmsg_internal("%s", first->message)));

	initStringInfo(&detail);
	appendStringInfo(&detail, "The definition has %d problems.",
					 list_length(problems));
	foreach(lc, problems)
	{
		WfProblem  *p = (WfProblem *) lfirst(lc);

		if (++n > WFV_MAX_DETAIL)
		{
			appendStringInfo(&detail, "\nProblems not shown: %d.",
							 list_length(problems) - WFV_MAX_DETAIL);
			break;
		}
		appendStringInfo(&detail, "\nProblem %d: %s.", n, p->message);
	}

	ereport(ERROR,
			(errcode(first->sqlstate),
			 errmsg_internal("%s", first->message),
			 errdetail_internal("%s", detail.data)));
}

/*
 * Check the templates of a string: each "{{" must be closed by "}}", and
 * the expression between them (trimmed) must be "secret.NAME" or a JSON
 * path.  On failure, returns false and sets *problem to a message.
 */
bool
wf_validate_template(const char *str, char **problem)
{
	const char *p = str;
	const char *open;

	*problem = NULL;
	while ((open = strstr(p, "{{")) != NULL)
	{
		const char *start = open + 2;
		const char *close = strstr(start, "}}");
		const char *end;
		char	   *expr;

		if (close == NULL)
		{
			*problem = psprintf("\"{{\" at character %d is not closed by \"}}\"",
								pg_mbstrlen_with_len(str, open - str) + 1);
			return false;
		}

		end = close;
		while (start < end && isspace((unsigned char) *start))
			start++;
		while (end > start && isspace((unsigned char) end[-1]))
			end--;
		expr = pnstrdup(start, end - start);

		if (expr[0] == '\0')
		{
			*problem = pstrdup("\"{{ }}\" has no expression");
			return false;
		}
		if (strncmp(expr, "secret.", 7) == 0)
		{
			if (expr[7] == '\0')
			{
				*problem = psprintf("\"{{ %s }}\" has no secret name", expr);
				return false;
			}
			if (!wfv_name_chars(expr + 7))
			{
				*problem = psprintf("secret name \"%s\" must contain only letters, digits, \"_\", \".\" and \"-\"",
									expr + 7);
				return false;
			}
		}
		else
		{
			Datum		parsed;
			ErrorData  *edata;

			if (!wfv_try_parse(wfv_parse_jsonpath, expr, &parsed, &edata))
			{
				*problem = psprintf("\"%s\" is not a valid JSON path: %s",
									expr, edata->message);
				return false;
			}
		}
		p = close + 2;
	}
	return true;
}

PG_FUNCTION_INFO_V1(wf_validate);

/*
 * wf_validate(definition jsonb) RETURNS SETOF text
 *
 * Every problem of a definition, one per row; none when it is valid.
 */
Datum
wf_validate(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	List	   *problems;
	ListCell   *lc;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);

	if (PG_ARGISNULL(0))
	{
		WfProblem  *p = palloc(sizeof(WfProblem));

		p->sqlstate = ERRCODE_NULL_VALUE_NOT_ALLOWED;
		p->message = pstrdup(WFV_NULL_MESSAGE);
		problems = list_make1(p);
	}
	else
		problems = wf_validate_definition(PG_GETARG_JSONB_P(0));

	foreach(lc, problems)
	{
		WfProblem  *p = (WfProblem *) lfirst(lc);
		Datum		value = CStringGetTextDatum(p->message);
		bool		isnull = false;

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc,
							 &value, &isnull);
	}

	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(wf_check_definition);

/*
 * wf._check_definition(definition jsonb) RETURNS void
 *
 * Raises an ERROR for the first problem of a definition.
 */
Datum
wf_check_definition(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg(WFV_NULL_MESSAGE)));

	wf_validate_report(wf_validate_definition(PG_GETARG_JSONB_P(0)));

	PG_RETURN_VOID();
}

/* ----------------------------------------------------------------
 * Generic helpers
 * ----------------------------------------------------------------
 */

/* Record a problem; label, if any, prefixes the message. */
void
wfv_problem(WfvState *st, const char *label, int sqlstate,
			const char *fmt,...)
{
	WfProblem  *p = palloc(sizeof(WfProblem));
	StringInfoData buf;

	initStringInfo(&buf);
	if (label != NULL)
		appendStringInfo(&buf, "%s: ", label);
	for (;;)
	{
		va_list		args;
		int			needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(&buf, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(&buf, needed);
	}

	p->sqlstate = sqlstate;
	p->message = buf.data;
	st->problems = lappend(st->problems, p);
}

/* The entry of wfv_features[] with one of the roles and this name. */
const WfvFeature *
wfv_find(int roles, const char *name, int len)
{
	int			i;

	for (i = 0; i < WFV_NFEATURES; i++)
	{
		const WfvFeature *f = &wfv_features[i];

		if ((f->role & roles) != 0 &&
			strlen(f->name) == len && memcmp(f->name, name, len) == 0)
			return f;
	}
	return NULL;
}

/* NULL-terminated names of the features of a role. */
const char **
wfv_feature_names(WfvRole role)
{
	const char **names = palloc(sizeof(char *) * (WFV_NFEATURES + 1));
	int			n = 0;
	int			i;

	for (i = 0; i < WFV_NFEATURES; i++)
	{
		const WfvFeature *f = &wfv_features[i];

		if (f->role == role)
			names[n++] = f->name;
	}
	names[n] = NULL;
	return names;
}

/* NULL-terminated names of the step kinds, aliases left out. */
static const char **
wfv_kind_names(void)
{
	const char **names = palloc(sizeof(char *) * (wf_step_nkinds + 1));
	int			n = 0;
	int			i;

	for (i = 0; i < wf_step_nkinds; i++)
		if (wf_step_kinds[i].alias_of == NULL)
			names[n++] = wf_step_kinds[i].name;
	names[n] = NULL;
	return names;
}

/* "a, b, c", or with quote_and "\"a\", \"b\" and \"c\"". */
char *
wfv_join(const char *const *items, bool quote_and)
{
	StringInfoData buf;
	int			i;

	initStringInfo(&buf);
	for (i = 0; items[i] != NULL; i++)
	{
		if (i > 0)
			appendStringInfoString(&buf,
								   quote_and && items[i + 1] == NULL ?
								   " and " : ", ");
		if (quote_and)
			appendStringInfo(&buf, "\"%s\"", items[i]);
		else
			appendStringInfoString(&buf, items[i]);
	}
	return buf.data;
}

/* How a key of o is named in messages: "sql" or "compensate.sql". */
const char *
wfv_path(WfvObject *o, const char *key)
{
	return o->within ? wfv_sub(o->within, key) : key;
}

/* How a key of the object named path is named in messages. */
char *
wfv_sub(const char *path, const char *key)
{
	return psprintf("%s.%s", path, key);
}

/* The value of key in object obj, or NULL. */
JsonbValue *
wfv_get(JsonbContainer *obj, const char *key, JsonbValue *res)
{
	return getKeyJsonValueFromContainer(obj, key, strlen(key), res);
}

/* Like wfv_get(), and reports a required key that is missing. */
JsonbValue *
wfv_member(WfvState *st, const char *label, JsonbContainer *obj,
		   const char *key, const char *path, bool required, JsonbValue *res)
{
	JsonbValue *v = wfv_get(obj, key, res);

	if (v == NULL && required)
		wfv_problem(st, label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" is required", path);
	return v;
}

bool
wfv_is_object(JsonbValue *v)
{
	return v->type == jbvBinary && JsonContainerIsObject(v->val.binary.data);
}

bool
wfv_is_array(JsonbValue *v)
{
	return v->type == jbvBinary && JsonContainerIsArray(v->val.binary.data);
}

/*
 * Report the keys of obj that are neither in keys (NULL-terminated, may be
 * NULL) nor features of one of roles.  path names obj in the messages; for
 * a step (label set, path NULL) and the definition (neither) it is implied.
 */
void
wfv_unknown_keys(WfvState *st, const char *label, JsonbContainer *obj,
				 const char *const *keys, int roles, const char *path)
{
	JsonbIterator *it = JsonbIteratorInit(obj);
	JsonbIteratorToken tok;
	JsonbValue	v;

	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		const char *key = v.val.string.val;
		int			len = v.val.string.len;
		bool		known = false;
		char	   *name;

		if (tok != WJB_KEY)
			continue;

		for (int i = 0; keys != NULL && keys[i] != NULL && !known; i++)
			known = (strlen(keys[i]) == len &&
					 memcmp(keys[i], key, len) == 0);
		if (known || wfv_find(roles, key, len) != NULL ||
			((roles & WFV_ACTION) != 0 && wf_kind_find(key, len) != NULL) ||
			((roles & WFV_COMPANION) != 0 && wfv_companion_of(key, len) != NULL))
			continue;

		name = pnstrdup(key, len);
		if (path != NULL)
			wfv_problem(st, label, ERRCODE_INVALID_PARAMETER_VALUE,
						"unknown key \"%s\" in \"%s\"", name, path);
		else if (label == NULL)
			wfv_problem(st, label, ERRCODE_INVALID_PARAMETER_VALUE,
						"unknown key \"%s\" in definition", name);
		else
			wfv_problem(st, label, ERRCODE_INVALID_PARAMETER_VALUE,
						"unknown key \"%s\"", name);
	}
}

/* ----------------------------------------------------------------
 * Checks of keys, by wfv_features[]
 * ----------------------------------------------------------------
 */

/* Check the keys of o that are features of role (document or policy). */
static void
wfv_check_keys(WfvState *st, WfvObject *o, WfvRole role)
{
	for (int i = 0; i < WFV_NFEATURES; i++)
	{
		const WfvFeature *f = &wfv_features[i];
		JsonbValue	jv;
		JsonbValue *v;

		if (f->role != role)
			continue;
		v = wfv_member(st, o->label, o->obj, f->name, f->name,
					   role == WFV_DOCUMENT && strcmp(f->name, "steps") == 0,
					   &jv);
		if (v == NULL)
			continue;

		if (!f->supported)
		{
			if (o->label == NULL)
				wfv_problem(st, NULL, ERRCODE_FEATURE_NOT_SUPPORTED,
							"workflow \"%s\" is not supported yet", f->name);
			else
				wfv_problem(st, o->label, ERRCODE_FEATURE_NOT_SUPPORTED,
							"\"%s\" is not supported yet", f->name);
		}
		else if (f->check != NULL)
			f->check(st, o, f->name, v);
	}
}

/*
 * Find the action of o (a step or a compensate object): there must be
 * exactly one, of a kind of wf_step_kinds[] that the engine implements
 * (and, in a compensate object, that may compensate).  Sets o->action and
 * checks it.
 */
void
wfv_check_action(WfvState *st, WfvObject *o)
{
	const char **found = palloc(sizeof(char *) * (wf_step_nkinds + 1));
	const WfStepKind *action = NULL;
	const WfStepKind *kind;
	const char *in = o->within ? psprintf(" in \"%s\"", o->within) : "";
	JsonbValue	jv;
	int			nfound = 0;

	for (int i = 0; i < wf_step_nkinds; i++)
	{
		const WfStepKind *k = &wf_step_kinds[i];

		if (wfv_get(o->obj, k->name, &jv) != NULL)
		{
			found[nfound++] = k->name;
			action = k;
		}
	}
	found[nfound] = NULL;

	if (nfound == 0)
	{
		wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
					"no action%s; expected one of %s", in,
					wfv_join(wfv_kind_names(), false));
		return;
	}
	if (nfound > 1)
	{
		wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
					"more than one action%s (%s)", in, wfv_join(found, true));
		return;
	}

	o->action = action;
	kind = wf_kind_base(action);
	if (!kind->supported)
	{
		if (o->within)
			wfv_problem(st, o->label, ERRCODE_FEATURE_NOT_SUPPORTED,
						"step kind \"%s\" in \"%s\" is not supported yet",
						kind->name, o->within);
		else
			wfv_problem(st, o->label, ERRCODE_FEATURE_NOT_SUPPORTED,
						"step kind \"%s\" is not supported yet", kind->name);
		return;
	}
	if (o->within && !kind->compensates)
	{
		if (kind->container)
			wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
						"\"%s\" must be a single step, not a container (\"%s\"); "
						"to undo with several steps, compensate with a \"workflow\" step",
						o->within, action->name);
		else
			wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
						"\"%s\" cannot be a \"%s\" step", o->within, action->name);
		return;
	}
	action->check(st, o, wfv_path(o, action->name),
				  wfv_get(o->obj, action->name, &jv));
	if (action->companions != NULL)
		wfv_members(st, o, o->obj, NULL, action->companions);
}

/* Report companion keys of o that lack their action. */
void
wfv_check_companions(WfvState *st, WfvObject *o)
{
	JsonbValue	jv;

	for (int i = 0; i < wf_step_nkinds; i++)
	{
		const WfStepKind *k = &wf_step_kinds[i];

		if (k->companions == NULL || wfv_get(o->obj, k->name, &jv) != NULL)
			continue;
		for (const WfvMember *m = k->companions; m->key != NULL; m++)
			if (wfv_get(o->obj, m->key, &jv) != NULL)
				wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
							"\"%s\" is only allowed with \"%s\"",
							wfv_path(o, m->key), k->name);
	}
}

/*
 * The kind whose companion is the key of len bytes, or NULL.
 */
static const WfStepKind *
wfv_companion_of(const char *key, int len)
{
	for (int i = 0; i < wf_step_nkinds; i++)
	{
		const WfvMember *m = wf_step_kinds[i].companions;

		for (; m != NULL && m->key != NULL; m++)
			if (strlen(m->key) == len && memcmp(m->key, key, len) == 0)
				return &wf_step_kinds[i];
	}
	return NULL;
}

/*
 * Check the members of object c by the table members: each key's value by
 * its check, a missing required key, and (unless c is the step object
 * itself, path NULL, whose other keys are checked elsewhere) keys the
 * table does not know.  path names c in messages.
 */
void
wfv_members(WfvState *st, WfvObject *o, JsonbContainer *c, const char *path,
			const WfvMember *members)
{
	const WfvMember *m;

	if (path != NULL)
	{
		const char **keys;
		int			n = 0;

		for (m = members; m->key != NULL; m++)
			n++;
		keys = palloc(sizeof(char *) * (n + 1));
		for (n = 0, m = members; m->key != NULL; m++)
			keys[n++] = m->key;
		keys[n] = NULL;
		wfv_unknown_keys(st, o->label, c, keys, 0, path);
	}
	for (m = members; m->key != NULL; m++)
	{
		const char *p = path ? wfv_sub(path, m->key) : wfv_path(o, m->key);
		JsonbValue	jv;
		JsonbValue *v = wfv_member(st, o->label, c, m->key, p, m->required, &jv);

		if (v != NULL && m->check != NULL)
			m->check(st, o, p, v);
	}
}

/* ----------------------------------------------------------------
 * Step lists
 * ----------------------------------------------------------------
 */

/* Check the steps of a value that must be an array of steps. */
void
wfv_step_array(WfvState *st, WfvObject *o, const char *path, JsonbValue *v,
			   bool nonempty)
{
	JsonbContainer *c;
	JsonbValue **steps;
	uint32		n;

	if (!wfv_is_array(v) ||
		(nonempty && JsonContainerSize(v->val.binary.data) == 0))
	{
		wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
					nonempty ? "\"%s\" must be a non-empty array" :
					"\"%s\" must be an array", path);
		return;
	}

	c = v->val.binary.data;
	n = JsonContainerSize(c);
	steps = palloc(sizeof(JsonbValue *) * n);
	for (uint32 i = 0; i < n; i++)
		steps[i] = getIthJsonbValueFromContainer(c, i);

	wfv_nested(st, o, path, steps, n, false);
}

/* Check a list of steps held by o under key path, one level deeper. */
void
wfv_nested(WfvState *st, WfvObject *o, const char *path,
		   JsonbValue **steps, int nsteps, bool single)
{
	if (o->depth >= WFV_MAX_DEPTH)
	{
		wfv_problem(st, o->label, ERRCODE_PROGRAM_LIMIT_EXCEEDED,
					"steps are nested more than %d levels deep",
					WFV_MAX_DEPTH);
		return;
	}

	wfv_steps(st, steps, nsteps, o->depth + 1,
			  o->label ? psprintf("\"%s\" of %s", path, o->label) : NULL,
			  single);
}

/*
 * Check a list of steps: each step, then the dependency cycles among them.
 * A step without "dependencies" depends on the step before it.
 */
static void
wfv_steps(WfvState *st, JsonbValue **steps, int nsteps, int depth,
		  const char *where, bool single)
{
	WfvList		list;
	JsonbValue	jv;

	list.where = where;
	list.single = single;
	list.depth = depth;
	list.nsteps = nsteps;
	list.steps = steps;
	list.names = palloc0(sizeof(char *) * nsteps);
	list.sorted = palloc(sizeof(int) * nsteps);
	list.nsorted = 0;
	list.has_deps = palloc0(sizeof(bool) * nsteps);
	list.edges = palloc0(sizeof(List *) * nsteps);
	list.mark = palloc0(sizeof(int) * nsteps);

	/* Dependencies may name later steps: collect the names first. */
	for (int i = 0; i < nsteps; i++)
	{
		JsonbValue *name;

		if (!wfv_is_object(steps[i]))
			continue;
		name = wfv_get(steps[i]->val.binary.data, "name", &jv);
		if (name != NULL && name->type == jbvString)
		{
			list.names[i] = pnstrdup(name->val.string.val,
									 name->val.string.len);
			list.sorted[list.nsorted++] = i;
		}
		list.has_deps[i] = wfv_get(steps[i]->val.binary.data,
								   "dependencies", &jv) != NULL;
	}
	qsort_arg(list.sorted, list.nsorted, sizeof(int), wfv_name_cmp,
			  list.names);

	for (int i = 0; i < nsteps && !st->stop; i++)
	{
		if (++st->nsteps > WFV_MAX_STEPS)
		{
			wfv_problem(st, NULL, ERRCODE_PROGRAM_LIMIT_EXCEEDED,
						"definition has more than %d steps", WFV_MAX_STEPS);
			st->stop = true;
			break;
		}

		if (!wfv_is_object(steps[i]))
			wfv_problem(st, NULL, ERRCODE_INVALID_PARAMETER_VALUE,
						"%s must be a JSON object",
						wfv_step_label(&list, i, NULL));
		else
			wfv_step(st, &list, i);

		if (!list.has_deps[i] && i > 0)
			list.edges[i] = list_make1_int(i - 1);
	}

	wfv_cycles(st, &list);
}

/* Order of WfvList.sorted: by name, then by position. */
static int
wfv_name_cmp(const void *a, const void *b, void *arg)
{
	char	  **names = (char **) arg;
	int			ia = *(const int *) a;
	int			ib = *(const int *) b;
	int			r = strcmp(names[ia], names[ib]);

	if (r != 0)
		return r;
	return (ia > ib) - (ia < ib);
}

/* Position of the first step of list named name, or -1. */
int
wfv_list_find(WfvList *list, const char *name)
{
	int			lo = 0;
	int			hi = list->nsorted;

	while (lo < hi)
	{
		int			mid = lo + (hi - lo) / 2;

		if (strcmp(list->names[list->sorted[mid]], name) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < list->nsorted && strcmp(list->names[list->sorted[lo]], name) == 0)
		return list->sorted[lo];
	return -1;
}

/* How a step is named in messages; name is NULL if it has no valid one. */
static char *
wfv_step_label(WfvList *list, int index, const char *name)
{
	if (name != NULL)
		return psprintf("step \"%s\"", name);
	if (list->where == NULL)
		return psprintf("step #%d", index + 1);
	if (list->single)
		return psprintf("step in %s", list->where);
	return psprintf("step #%d in %s", index + 1, list->where);
}

/* Check one step, an object. */
void
wfv_step(WfvState *st, WfvList *list, int index)
{
	static const char *const step_keys[] = {"name", NULL};
	JsonbContainer *obj = list->steps[index]->val.binary.data;
	char	   *label = wfv_step_label(list, index, NULL);
	char	   *name = list->names[index];
	WfvObject	o;
	JsonbValue	jv;

	CHECK_FOR_INTERRUPTS();

	if (wfv_member(st, label, obj, "name", "name", true, &jv) != NULL)
	{
		if (name == NULL)
			wfv_problem(st, label, ERRCODE_INVALID_PARAMETER_VALUE,
						"\"name\" must be a string");
		else if (wfv_check_name(st, label, "name", name, true))
		{
			bool		found;

			label = wfv_step_label(list, index, name);
			(void) hash_search(st->names, name, HASH_ENTER, &found);
			if (found)
				wfv_problem(st, label, ERRCODE_DUPLICATE_OBJECT,
							"step name \"%s\" is used more than once", name);
		}
	}

	memset(&o, 0, sizeof(o));
	o.label = label;
	o.obj = obj;
	o.depth = list->depth;
	o.list = list;
	o.index = index;

	wfv_unknown_keys(st, label, obj, step_keys,
					 WFV_ACTION | WFV_COMPANION | WFV_POLICY, NULL);
	wfv_check_action(st, &o);
	wfv_check_companions(st, &o);
	wfv_check_keys(st, &o, WFV_POLICY);

	{
		StringInfoData path;

		initStringInfo(&path);
		wfv_step_secrets(st, label, &path, obj);
	}
}

/* Report one dependency cycle for each back edge of a depth-first walk. */
static void
wfv_cycles(WfvState *st, WfvList *list)
{
	char	   *state = palloc0(list->nsteps);
	int		   *path = palloc(sizeof(int) * list->nsteps);
	int			npath = 0;

	for (int i = 0; i < list->nsteps; i++)
	{
		if (state[i] == 0)
			wfv_cycles_visit(st, list, i, state, path, &npath);
	}
}

/*
 * Visit step and its dependencies.  state: 0 not visited yet, 1 on the
 * current path, 2 done.  path holds the current path.
 */
static void
wfv_cycles_visit(WfvState *st, WfvList *list, int step, char *state,
				 int *path, int *npath)
{
	ListCell   *lc;

	check_stack_depth();

	state[step] = 1;
	path[(*npath)++] = step;

	foreach(lc, list->edges[step])
	{
		int			dep = lfirst_int(lc);

		if (state[dep] == 0)
			wfv_cycles_visit(st, list, dep, state, path, npath);
		else if (state[dep] == 1)
		{
			StringInfoData buf;
			int			j = *npath - 1;

			while (path[j] != dep)
				j--;

			initStringInfo(&buf);
			for (; j <= *npath; j++)
			{
				int			s = (j < *npath) ? path[j] : dep;

				if (buf.len > 0)
					appendStringInfoString(&buf, " -> ");
				if (list->names[s] != NULL)
					appendStringInfoString(&buf, list->names[s]);
				else
					appendStringInfo(&buf, "#%d", s + 1);
			}
			wfv_problem(st, NULL, ERRCODE_INVALID_OBJECT_DEFINITION,
						"dependency cycle: %s", buf.data);
		}
	}

	(*npath)--;
	state[step] = 2;
}

