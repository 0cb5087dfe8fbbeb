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

/* Longest step, branch, agent pool or workflow name, in bytes. */
#define WFV_MAX_NAME		63
/* An agent pool's: its NOTIFY channel, wf_pool_<pool>, is a name too. */
#define WFV_MAX_POOL_NAME	(WFV_MAX_NAME - 8)
/* Most steps in one definition, nested steps included. */
#define WFV_MAX_STEPS		1000
/* Deepest nesting of step lists; the top-level list is level 1. */
#define WFV_MAX_DEPTH		16
/* Largest "max_attempts" of a retry policy. */
#define WFV_MAX_ATTEMPTS	1000
/* Most problems listed in the DETAIL of wf_validate_report(). */
#define WFV_MAX_DETAIL		100

#define WFV_NULL_MESSAGE	"definition must not be null"

/* State of one validation. */
struct WfvState
{
	List	   *problems;		/* WfProblem *, in the order found */
	HTAB	   *names;			/* every valid step name seen so far */
	int			nsteps;			/* steps seen so far, nested ones included */
	bool		stop;			/* too many steps: look at no more of them */
};

/* Entry of WfvState.names. */
typedef struct WfvName
{
	char		name[WFV_MAX_NAME + 1];
} WfvName;

/* One list of steps: the top-level one, a branch of "if" or "parallel"... */
typedef struct WfvList
{
	const char *where;			/* e.g. "then" of step "x"; NULL at the top */
	bool		single;			/* the only step of a "map" */
	int			depth;			/* nesting level, 1 for the top-level list */
	int			nsteps;
	JsonbValue **steps;
	char	  **names;			/* each step's "name" if a string, else NULL */
	int		   *sorted;			/* positions of the named steps, by name */
	int			nsorted;
	bool	   *has_deps;		/* has the step a "dependencies" key? */
	List	  **edges;			/* each step's dependencies, as positions */
	int		   *mark;			/* scratch: finds repeated dependencies */
} WfvList;

typedef struct WfvFeature WfvFeature;

/* An object being checked: the definition, a step, or a step's part. */
struct WfvObject
{
	const char *label;			/* message prefix, NULL for the definition */
	const char *within;			/* "compensate" for a compensate action */
	JsonbContainer *obj;
	const WfStepKind *action;	/* the only action, once found */
	int			depth;			/* level of the step's list, 0 at the top */
	WfvList    *list;			/* list holding the step, if a step */
	int			index;			/* position of the step in that list */
};

/* Checks the value of one key; path names it in messages. */
typedef void (*WfvCheck) (WfvState *st, WfvObject *o, const char *path,
						  JsonbValue *value);

typedef enum WfvRole
{
	WFV_DOCUMENT = 1 << 0,		/* a key of the definition itself */
	WFV_ACTION = 1 << 1,		/* a step's action: exactly one per step */
	WFV_COMPANION = 1 << 2,		/* a step key allowed only with an action */
	WFV_POLICY = 1 << 3,		/* a step key allowed with every action */
	WFV_STRATEGY = 1 << 4		/* a value of "on_error" */
} WfvRole;

/* An entry of wfv_features[]. */
struct WfvFeature
{
	const char *name;			/* the key, or the strategy */
	WfvRole		role;
	const char *kind;			/* WFV_COMPANION: the action it goes with */
	WfvCheck	check;			/* checks the value; NULL if nothing to do */
	bool		supported;		/* false: rejected as not supported yet */
};

typedef Datum (*WfvParser) (const char *str);

static void wfv_check_text(WfvState *st, WfvObject *o, const char *path,
						   JsonbValue *v);
static void wfv_check_interval(WfvState *st, WfvObject *o, const char *path,
							   JsonbValue *v);
static void wfv_check_jsonpath(WfvState *st, WfvObject *o, const char *path,
							   JsonbValue *v);
static void wfv_check_retry(WfvState *st, WfvObject *o, const char *path,
							JsonbValue *v);
static void wfv_check_on_error(WfvState *st, WfvObject *o, const char *path,
							   JsonbValue *v);
static void wfv_check_top_steps(WfvState *st, WfvObject *o, const char *path,
								JsonbValue *v);
static void wfv_check_dependencies(WfvState *st, WfvObject *o,
								   const char *path, JsonbValue *v);
static void wfv_check_compensate(WfvState *st, WfvObject *o, const char *path,
								 JsonbValue *v);
static void wfv_check_circuit_breaker(WfvState *st, WfvObject *o,
									  const char *path, JsonbValue *v);
static void wfv_check_concurrency(WfvState *st, WfvObject *o,
								  const char *path, JsonbValue *v);
static void wfv_check_rate_limit(WfvState *st, WfvObject *o,
								 const char *path, JsonbValue *v);

/*
 * Everything a definition may contain besides the step actions (which are
 * the kinds of wf_step_kinds[]), and whether the engine implements it yet.
 * Enabling a feature is flipping its flag.
 */
static const WfvFeature wfv_features[] = {
	/* keys of the definition */
	{"description", WFV_DOCUMENT, NULL, wfv_check_text, true},
	{"timeout", WFV_DOCUMENT, NULL, wfv_check_interval, true},
	{"sla", WFV_DOCUMENT, NULL, wfv_check_interval, true},
	{"retry", WFV_DOCUMENT, NULL, wfv_check_retry, true},
	{"on_error", WFV_DOCUMENT, NULL, wfv_check_on_error, true},
	{"steps", WFV_DOCUMENT, NULL, wfv_check_top_steps, true},
	{"concurrency", WFV_DOCUMENT, NULL, wfv_check_concurrency, true},

	/* step keys that go with one action, checked by that action's check */
	{"payload", WFV_COMPANION, "agent", NULL, true},
	{"requires", WFV_COMPANION, "agent", NULL, true},
	{"input", WFV_COMPANION, "workflow", NULL, true},
	{"then", WFV_COMPANION, "if", NULL, true},
	{"else", WFV_COMPANION, "if", NULL, true},

	/* step policies */
	{"dependencies", WFV_POLICY, NULL, wfv_check_dependencies, true},
	{"when", WFV_POLICY, NULL, wfv_check_jsonpath, true},
	{"timeout", WFV_POLICY, NULL, wfv_check_interval, true},
	{"sla", WFV_POLICY, NULL, wfv_check_interval, true},
	{"retry", WFV_POLICY, NULL, wfv_check_retry, true},
	{"on_error", WFV_POLICY, NULL, wfv_check_on_error, true},
	{"compensate", WFV_POLICY, NULL, wfv_check_compensate, true},
	{"circuit_breaker", WFV_POLICY, NULL, wfv_check_circuit_breaker, true},
	{"rate_limit", WFV_POLICY, NULL, wfv_check_rate_limit, true},
	{"concurrency", WFV_POLICY, NULL, wfv_check_concurrency, true},

	/* strategies of "on_error" */
	{"retry", WFV_STRATEGY, NULL, NULL, true},
	{"skip", WFV_STRATEGY, NULL, NULL, true},
	{"compensate", WFV_STRATEGY, NULL, NULL, true},
	{"escalate", WFV_STRATEGY, NULL, NULL, true},
	{"fail", WFV_STRATEGY, NULL, NULL, true},
};

#define WFV_NFEATURES	lengthof(wfv_features)

static void wfv_problem(WfvState *st, const char *label, int sqlstate,
						const char *fmt,...) pg_attribute_printf(4, 5);
static const WfvFeature *wfv_find(int roles, const char *name, int len);
static const char **wfv_feature_names(WfvRole role);
static const char **wfv_kind_names(void);
static char *wfv_join(const char *const *items, bool quote_and);
static const char *wfv_path(WfvObject *o, const char *key);
static char *wfv_sub(const char *path, const char *key);
static JsonbValue *wfv_get(JsonbContainer *obj, const char *key,
						   JsonbValue *res);
static JsonbValue *wfv_member(WfvState *st, const char *label,
							  JsonbContainer *obj, const char *key,
							  const char *path, bool required,
							  JsonbValue *res);
static bool wfv_is_object(JsonbValue *v);
static bool wfv_is_array(JsonbValue *v);
static void wfv_unknown_keys(WfvState *st, const char *label,
							 JsonbContainer *obj, const char *const *keys,
							 int roles, const char *path);
static bool wfv_try_parse(WfvParser parser, const char *str, Datum *result,
						  ErrorData **error);
static Datum wfv_parse_interval(const char *str);
static Datum wfv_parse_jsonpath(const char *str);
static Datum wfv_parse_sql(const char *str);
static char *wfv_string(WfvState *st, const char *label, const char *path,
						JsonbValue *v, bool nonempty);
static JsonbContainer *wfv_object(WfvState *st, const char *label,
								  const char *path, JsonbValue *v);
static bool wfv_name_chars(const char *s);
static bool wfv_check_name(WfvState *st, const char *label, const char *path,
						   const char *name, bool restricted);
static Interval *wfv_interval(WfvState *st, const char *label,
							  const char *path, JsonbValue *v);
static bool wfv_jsonpath(WfvState *st, const char *label, const char *path,
						 JsonbValue *v);
static bool wfv_template(WfvState *st, const char *label, const char *path,
						 JsonbValue *v);
static void wfv_templates_in(WfvState *st, const char *label,
							 StringInfo path, JsonbValue *v);
static void wfv_any_templates(WfvState *st, const char *label,
							  const char *path, JsonbValue *v);
static char *wfv_secret_in(const char *str, int len);
static void wfv_secrets_in(WfvState *st, const char *label, StringInfo path,
						   JsonbValue *v);
static void wfv_secrets_of(WfvState *st, const char *label, StringInfo path,
						   JsonbContainer *obj, const char *const *skip);
static void wfv_step_secrets(WfvState *st, const char *label,
							 StringInfo path, JsonbContainer *obj);
static bool wfv_numeric_int(Numeric num, int32 *result);
static bool wfv_integer(WfvState *st, const char *label, const char *path,
						JsonbValue *v, int32 min, int32 max);
static const char *wfv_enum(WfvState *st, const char *label,
							const char *path, JsonbValue *v,
							const char *const *values);
static bool wfv_status_code(JsonbValue *v);
static bool wfv_ok_status(JsonbValue *v);
static void wfv_check_keys(WfvState *st, WfvObject *o, WfvRole role);
static void wfv_check_action(WfvState *st, WfvObject *o);
static void wfv_check_companions(WfvState *st, WfvObject *o);
static void wfv_step_array(WfvState *st, WfvObject *o, const char *path,
						   JsonbValue *v, bool nonempty);
static void wfv_nested(WfvState *st, WfvObject *o, const char *path,
					   JsonbValue **steps, int nsteps, bool single);
static void wfv_steps(WfvState *st, JsonbValue **steps, int nsteps,
					  int depth, const char *where, bool single);
static int	wfv_name_cmp(const void *a, const void *b, void *arg);
static int	wfv_list_find(WfvList *list, const char *name);
static char *wfv_step_label(WfvList *list, int index, const char *name);
static void wfv_step(WfvState *st, WfvList *list, int index);
static void wfv_cycles(WfvState *st, WfvList *list);
static void wfv_cycles_visit(WfvState *st, WfvList *list, int step,
							 char *state, int *path, int *npath);


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
static void
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
static const WfvFeature *
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
static const char **
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
static char *
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
static const char *
wfv_path(WfvObject *o, const char *key)
{
	return o->within ? wfv_sub(o->within, key) : key;
}

/* How a key of the object named path is named in messages. */
static char *
wfv_sub(const char *path, const char *key)
{
	return psprintf("%s.%s", path, key);
}

/* The value of key in object obj, or NULL. */
static JsonbValue *
wfv_get(JsonbContainer *obj, const char *key, JsonbValue *res)
{
	return getKeyJsonValueFromContainer(obj, key, strlen(key), res);
}

/* Like wfv_get(), and reports a required key that is missing. */
static JsonbValue *
wfv_member(WfvState *st, const char *label, JsonbContainer *obj,
		   const char *key, const char *path, bool required, JsonbValue *res)
{
	JsonbValue *v = wfv_get(obj, key, res);

	if (v == NULL && required)
		wfv_problem(st, label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" is required", path);
	return v;
}

static bool
wfv_is_object(JsonbValue *v)
{
	return v->type == jbvBinary && JsonContainerIsObject(v->val.binary.data);
}

static bool
wfv_is_array(JsonbValue *v)
{
	return v->type == jbvBinary && JsonContainerIsArray(v->val.binary.data);
}

/*
 * Report the keys of obj that are neither in keys (NULL-terminated, may be
 * NULL) nor features of one of roles.  path names obj in the messages; for
 * a step (label set, path NULL) and the definition (neither) it is implied.
 */
static void
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
			((roles & WFV_ACTION) != 0 && wf_kind_find(key, len) != NULL))
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
 * Checks of values
 * ----------------------------------------------------------------
 */

/*
 * Run a parser inside an internal subtransaction, as PL/pgSQL runs a block
 * with an exception handler.  On success, returns true and the parser's
 * result (allocated in the caller's memory context).  If the input is
 * rejected, returns false and the error.  Errors that are not about the
 * input (query cancel, out of memory...) are thrown again.
 *
 * The callers' error context callbacks are hidden from the parser: they
 * describe what the caller is doing, not our input, and some of them alter
 * the error (SPI's turns the error position into an internal position).
 */
static bool
wfv_try_parse(WfvParser parser, const char *str, Datum *result,
			  ErrorData **error)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	volatile bool ok = false;

	*result = (Datum) 0;
	*error = NULL;

	BeginInternalSubTransaction(NULL);
	/* Parse in the caller's memory context, so that the result survives. */
	MemoryContextSwitchTo(oldcontext);

	PG_TRY();
	{
		ErrorContextCallback *save_context = error_context_stack;

		error_context_stack = NULL;
		*result = parser(str);
		error_context_stack = save_context;

		ReleaseCurrentSubTransaction();
		ok = true;
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		int			category;

		MemoryContextSwitchTo(oldcontext);
		edata = CopyErrorData();
		FlushErrorState();

		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;

		category = ERRCODE_TO_CATEGORY(edata->sqlerrcode);
		if (category != ERRCODE_DATA_EXCEPTION &&
			category != ERRCODE_SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION)
			ReThrowError(edata);
		*error = edata;
	}
	PG_END_TRY();

	MemoryContextSwitchTo(oldcontext);
	CurrentResourceOwner = oldowner;

	return ok;
}

static Datum
wfv_parse_interval(const char *str)
{
	return DirectFunctionCall3(interval_in,
							   CStringGetDatum(str),
							   ObjectIdGetDatum(InvalidOid),
							   Int32GetDatum(-1));
}

static Datum
wfv_parse_jsonpath(const char *str)
{
	return DirectFunctionCall1(jsonpath_in, CStringGetDatum(str));
}

static Datum
wfv_parse_sql(const char *str)
{
	return PointerGetDatum(raw_parser(str, RAW_PARSE_DEFAULT));
}

/* The string value v, or NULL after reporting that it is not one. */
static char *
wfv_string(WfvState *st, const char *label, const char *path,
		   JsonbValue *v, bool nonempty)
{
	if (v->type != jbvString)
	{
		wfv_problem(st, label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" must be a string", path);
		return NULL;
	}
	if (nonempty && v->val.string.len == 0)
	{
		wfv_problem(st, label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" must not be empty", path);
		return NULL;
	}
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/* The object value v, or NULL after reporting that it is not one. */
static JsonbContainer *
wfv_object(WfvState *st, const char *label, const char *path, JsonbValue *v)
{
	if (!wfv_is_object(v))
	{
		wfv_problem(st, label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" must be an object", path);
		return NULL;
	}
	return v->val.binary.data;
}

/* Does s match ^[A-Za-z0-9_.-]+$? */
static bool
wfv_name_chars(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++)
	{
		char		c = *s;

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
			return false;
	}
	return true;
}

/*
 * Check a name: not empty, at most WFV_MAX_NAME bytes and, if restricted,
 * made of the characters of step names.
 */
static bool
wfv_check_name(WfvState *st, const char *label, const char *path,
			   const char *name, bool restricted)
{
	if (name[0] == '\0')
		wfv_problem(st, label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" must not be empty", path);
	else if (strlen(name) > WFV_MAX_NAME)
		wfv_problem(st, label, ERRCODE_PROGRAM_LIMIT_EXCEEDED,
					"\"%s\" is longer than %d bytes", path, WFV_MAX_NAME);
	else if (restricted && !wfv_name_chars(name))
		wfv_problem(st, label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" must contain only letters, digits, \"_\", \".\" and \"-\": \"%s\"",
					path, name);
	else
		return true;
	return false;
}

/* The positive interval v, or NULL after reporting what is wrong. */
static Interval *
wfv_interval(WfvState *st, const char *label, const char *path,
			 JsonbValue *v)
{
	char	   *str = wfv_string(st, label, path, v, false);
	Interval   *zero;
	Datum		parsed;
	ErrorData  *edata;

	if (str == NULL)
		return NULL;
	if (!wfv_try_parse(wfv_parse_interval, str, &parsed, &edata))
	{
		wfv_problem(st, label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" is not a valid interval: \"%s\"", path, str);
		return NULL;
	}

	zero = palloc0(sizeof(Interval));
	if (DatumGetInt32(DirectFunctionCall2(interval_cmp, parsed,
										  IntervalPGetDatum(zero))) <= 0)
	{
		wfv_problem(st, label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" must be positive", path);
		return NULL;
	}
	return DatumGetIntervalP(parsed);
}

/* Is v a string that parses as a JSON path?  Reports it if not. */
static bool
wfv_jsonpath(WfvState *st, const char *label, const char *path,
			 JsonbValue *v)
{
	char	   *str = wfv_string(st, label, path, v, false);
	Datum		parsed;
	ErrorData  *edata;

	if (str == NULL)
		return false;
	if (!wfv_try_parse(wfv_parse_jsonpath, str, &parsed, &edata))
	{
		wfv_problem(st, label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" is not a valid JSON path: %s",
					path, edata->message);
		return false;
	}
	return true;
}

/* Is v a string with valid templates?  Reports it if not. */
static bool
wfv_template(WfvState *st, const char *label, const char *path,
			 JsonbValue *v)
{
	char	   *str = wfv_string(st, label, path, v, false);
	char	   *problem;

	if (str == NULL)
		return false;
	if (!wf_validate_template(str, &problem))
	{
		wfv_problem(st, label, ERRCODE_INVALID_PARAMETER_VALUE,
					"invalid template in \"%s\": %s", path, problem);
		return false;
	}
	return true;
}

/*
 * Check the templates of every string in any JSON value v (object keys are
 * not templated).  path names v and is extended for its members.
 */
static void
wfv_templates_in(WfvState *st, const char *label, StringInfo path,
				 JsonbValue *v)
{
	JsonbContainer *c;
	int			len = path->len;

	check_stack_depth();
	CHECK_FOR_INTERRUPTS();

	if (v->type == jbvString)
	{
		(void) wfv_template(st, label, path->data, v);
		return;
	}
	if (v->type != jbvBinary)
		return;

	c = v->val.binary.data;
	if (JsonContainerIsArray(c))
	{
		uint32		n = JsonContainerSize(c);

		for (uint32 i = 0; i < n; i++)
		{
			appendStringInfo(path, "[%u]", i);
			wfv_templates_in(st, label, path,
							 getIthJsonbValueFromContainer(c, i));
			path->len = len;
			path->data[len] = '\0';
		}
	}
	else
	{
		JsonbIterator *it = JsonbIteratorInit(c);
		JsonbIteratorToken tok;
		JsonbValue	key;
		JsonbValue	val;

		while ((tok = JsonbIteratorNext(&it, &key, true)) != WJB_DONE)
		{
			if (tok != WJB_KEY)
				continue;
			tok = JsonbIteratorNext(&it, &val, true);
			Assert(tok == WJB_VALUE);
			appendStringInfoChar(path, '.');
			appendBinaryStringInfo(path, key.val.string.val,
								   key.val.string.len);
			wfv_templates_in(st, label, path, &val);
			path->len = len;
			path->data[len] = '\0';
		}
	}
}

/* wfv_templates_in() for a value named path. */
static void
wfv_any_templates(WfvState *st, const char *label, const char *path,
				  JsonbValue *v)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, path);
	wfv_templates_in(st, label, &buf, v);
}

/*
 * Where secrets may be
 *
 * "{{secret.NAME}}" renders only in an http action's url, header values
 * and body; anywhere else in a definition it is a problem, reported with
 * its path.  The walk is over the whole step object rather than over the
 * keys the engine renders, so that a key that becomes templated one day is
 * covered without being listed here.  Nested step lists are skipped: their
 * steps are walked by wfv_step() like any other.
 */

/* The name of the first secret template in str (len bytes), or NULL. */
static char *
wfv_secret_in(const char *str, int len)
{
	const char *p = str;
	const char *end = str + len;

	while (p < end)
	{
		const char *open = NULL;
		const char *close = NULL;
		const char *start;
		const char *stop;

		for (; p + 1 < end; p++)
			if (p[0] == '{' && p[1] == '{')
			{
				open = p;
				break;
			}
		if (open == NULL)
			return NULL;
		for (p = open + 2; p + 1 < end; p++)
			if (p[0] == '}' && p[1] == '}')
			{
				close = p;
				break;
			}
		if (close == NULL)
			return NULL;

		start = open + 2;
		stop = close;
		while (start < stop && isspace((unsigned char) *start))
			start++;
		while (stop > start && isspace((unsigned char) stop[-1]))
			stop--;
		if (stop - start >= 7 && strncmp(start, "secret.", 7) == 0)
			return pnstrdup(start + 7, stop - start - 7);
		p = close + 2;
	}
	return NULL;
}

/* Report the secrets in the strings of v, a value named path. */
static void
wfv_secrets_in(WfvState *st, const char *label, StringInfo path,
			   JsonbValue *v)
{
	check_stack_depth();
	CHECK_FOR_INTERRUPTS();

	if (v->type == jbvString)
	{
		char	   *name = wfv_secret_in(v->val.string.val, v->val.string.len);

		if (name != NULL)
			wfv_problem(st, label, ERRCODE_INVALID_PARAMETER_VALUE,
						"\"%s\" uses secret \"%s\": secrets are allowed only in an http step's url, headers and body",
						path->data, name);
		return;
	}
	if (v->type != jbvBinary)
		return;
	if (JsonContainerIsArray(v->val.binary.data))
	{
		int			len = path->len;
		uint32		n = JsonContainerSize(v->val.binary.data);

		for (uint32 i = 0; i < n; i++)
		{
			appendStringInfo(path, "[%u]", i);
			wfv_secrets_in(st, label, path,
						   getIthJsonbValueFromContainer(v->val.binary.data, i));
			path->len = len;
			path->data[len] = '\0';
		}
	}
	else
		wfv_secrets_of(st, label, path, v->val.binary.data, NULL);
}

/*
 * Report the secrets in the members of object obj, named path ("" for a
 * step or the definition), except those of the keys in skip.
 */
static void
wfv_secrets_of(WfvState *st, const char *label, StringInfo path,
			   JsonbContainer *obj, const char *const *skip)
{
	JsonbIterator *it = JsonbIteratorInit(obj);
	JsonbIteratorToken tok;
	JsonbValue	key;
	JsonbValue	val;
	int			len = path->len;

	while ((tok = JsonbIteratorNext(&it, &key, true)) != WJB_DONE)
	{
		bool		skipped = false;

		if (tok != WJB_KEY)
			continue;
		tok = JsonbIteratorNext(&it, &val, true);
		Assert(tok == WJB_VALUE);
		for (int i = 0; skip != NULL && skip[i] != NULL && !skipped; i++)
			skipped = (strlen(skip[i]) == key.val.string.len &&
					   memcmp(skip[i], key.val.string.val, key.val.string.len) == 0);
		if (skipped)
			continue;
		if (len > 0)
			appendStringInfoChar(path, '.');
		appendBinaryStringInfo(path, key.val.string.val, key.val.string.len);
		wfv_secrets_in(st, label, path, &val);
		path->len = len;
		path->data[len] = '\0';
	}
}

/*
 * Report the secrets of a step object, or of a "compensate" action (path
 * "compensate"), outside an http action's url, headers and body and the
 * steps it holds.
 */
static void
wfv_step_secrets(WfvState *st, const char *label, StringInfo path,
				 JsonbContainer *obj)
{
	static const char *const step_lists[] = {"then", "else", "parallel",
	"map", "http", "compensate", NULL};
	static const char *const http_secrets[] = {"url", "headers", "body", NULL};
	static const char *const branch_steps[] = {"steps", NULL};
	static const char *const map_step[] = {"step", NULL};
	int			len = path->len;
	JsonbValue	jv;
	JsonbValue *v;

	wfv_secrets_of(st, label, path, obj, step_lists);

	/* The steps of "then", "else", branches and maps are steps. */
	for (int i = 0; i < 2; i++)
	{
		const char *key = i == 0 ? "then" : "else";

		if ((v = wfv_get(obj, key, &jv)) != NULL && !wfv_is_array(v))
		{
			appendStringInfo(path, len > 0 ? ".%s" : "%s", key);
			wfv_secrets_in(st, label, path, v);
			path->len = len;
			path->data[len] = '\0';
		}
	}

	appendStringInfoString(path, len > 0 ? ".parallel" : "parallel");
	if ((v = wfv_get(obj, "parallel", &jv)) != NULL)
	{
		if (wfv_is_array(v))
		{
			uint32		n = JsonContainerSize(v->val.binary.data);
			int			plen = path->len;

			for (uint32 i = 0; i < n; i++)
			{
				JsonbValue *b = getIthJsonbValueFromContainer(v->val.binary.data, i);

				appendStringInfo(path, "[%u]", i);
				if (wfv_is_object(b))
					wfv_secrets_of(st, label, path, b->val.binary.data,
								   branch_steps);
				else
					wfv_secrets_in(st, label, path, b);
				path->len = plen;
				path->data[plen] = '\0';
			}
		}
		else
			wfv_secrets_in(st, label, path, v);
	}
	path->len = len;
	path->data[len] = '\0';

	appendStringInfoString(path, len > 0 ? ".map" : "map");
	if ((v = wfv_get(obj, "map", &jv)) != NULL)
	{
		if (wfv_is_object(v))
			wfv_secrets_of(st, label, path, v->val.binary.data, map_step);
		else
			wfv_secrets_in(st, label, path, v);
	}
	path->len = len;
	path->data[len] = '\0';

	appendStringInfoString(path, len > 0 ? ".http" : "http");
	if ((v = wfv_get(obj, "http", &jv)) != NULL)
	{
		if (wfv_is_object(v))
			wfv_secrets_of(st, label, path, v->val.binary.data, http_secrets);
		else
			wfv_secrets_in(st, label, path, v);
	}
	path->len = len;
	path->data[len] = '\0';

	/* A step's compensate action is walked as the step is. */
	if ((v = wfv_get(obj, "compensate", &jv)) != NULL)
	{
		appendStringInfoString(path, len > 0 ? ".compensate" : "compensate");
		if (len == 0 && wfv_is_object(v))
			wfv_step_secrets(st, label, path, v->val.binary.data);
		else
			wfv_secrets_in(st, label, path, v);
		path->len = len;
		path->data[len] = '\0';
	}
}

/* Is num an integer that fits in int32?  Then sets *result. */
static bool
wfv_numeric_int(Numeric num, int32 *result)
{
	bool		error = false;
	int32		i = numeric_int4_opt_error(num, &error);
	Datum		rounded;

	if (error)
		return false;
	/* numeric_int4_opt_error() rounds: reject what it had to round */
	rounded = NumericGetDatum(int64_to_numeric(i));
	if (!DatumGetBool(DirectFunctionCall2(numeric_eq, NumericGetDatum(num),
										  rounded)))
		return false;
	*result = i;
	return true;
}

/*
 * Is v an integer from min to max?  Reports it if not.  A max of
 * PG_INT32_MAX means no upper bound, and min must then be 1.
 */
static bool
wfv_integer(WfvState *st, const char *label, const char *path,
			JsonbValue *v, int32 min, int32 max)
{
	int32		i;

	if (v->type == jbvNumeric && wfv_numeric_int(v->val.numeric, &i) &&
		i >= min && i <= max)
		return true;

	if (max == PG_INT32_MAX)
	{
		Assert(min == 1);
		wfv_problem(st, label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" must be a positive integer", path);
	}
	else
		wfv_problem(st, label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" must be an integer between %d and %d",
					path, min, max);
	return false;
}

/*
 * The member of values (NULL-terminated) that string v equals, or NULL
 * after reporting that v is none of them.
 */
static const char *
wfv_enum(WfvState *st, const char *label, const char *path, JsonbValue *v,
		 const char *const *values)
{
	for (int i = 0; v->type == jbvString && values[i] != NULL; i++)
	{
		if (strlen(values[i]) == v->val.string.len &&
			memcmp(values[i], v->val.string.val, v->val.string.len) == 0)
			return values[i];
	}
	wfv_problem(st, label, ERRCODE_INVALID_PARAMETER_VALUE,
				"\"%s\" must be one of %s", path, wfv_join(values, false));
	return NULL;
}

/* Is v an HTTP status code? */
static bool
wfv_status_code(JsonbValue *v)
{
	int32		code;

	return v->type == jbvNumeric && wfv_numeric_int(v->val.numeric, &code) &&
		code >= 100 && code <= 599;
}

/* Is v a status code, a non-empty array of them, or a range "200-299"? */
static bool
wfv_ok_status(JsonbValue *v)
{
	if (v->type == jbvString)
	{
		char	   *s = pnstrdup(v->val.string.val, v->val.string.len);
		int			lo,
					hi;

		if (strlen(s) != 7 || s[3] != '-' ||
			strspn(s, "0123456789") != 3 ||
			strspn(s + 4, "0123456789") != 3)
			return false;
		lo = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
		hi = (s[4] - '0') * 100 + (s[5] - '0') * 10 + (s[6] - '0');
		return lo >= 100 && lo <= hi && hi <= 599;
	}
	if (wfv_is_array(v))
	{
		JsonbContainer *c = v->val.binary.data;
		uint32		n = JsonContainerSize(c);

		if (n == 0)
			return false;
		for (uint32 i = 0; i < n; i++)
		{
			if (!wfv_status_code(getIthJsonbValueFromContainer(c, i)))
				return false;
		}
		return true;
	}
	return wfv_status_code(v);
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
static void
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
}

/* Report companion keys of o that lack their action. */
static void
wfv_check_companions(WfvState *st, WfvObject *o)
{
	for (int i = 0; i < WFV_NFEATURES; i++)
	{
		const WfvFeature *f = &wfv_features[i];
		JsonbValue	jv;

		if (f->role == WFV_COMPANION &&
			wfv_get(o->obj, f->name, &jv) != NULL &&
			wfv_get(o->obj, f->kind, &jv) == NULL)
			wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
						"\"%s\" is only allowed with \"%s\"",
						wfv_path(o, f->name), f->kind);
	}
}


/* ----------------------------------------------------------------
 * Step lists
 * ----------------------------------------------------------------
 */

/* Check the steps of a value that must be an array of steps. */
static void
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
static void
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
static int
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
static void
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


/* ----------------------------------------------------------------
 * Checks of the definition's keys and of step policies
 * ----------------------------------------------------------------
 */

static void
wfv_check_text(WfvState *st, WfvObject *o, const char *path, JsonbValue *v)
{
	(void) wfv_string(st, o->label, path, v, false);
}

static void
wfv_check_interval(WfvState *st, WfvObject *o, const char *path,
				   JsonbValue *v)
{
	(void) wfv_interval(st, o->label, path, v);
}

static void
wfv_check_jsonpath(WfvState *st, WfvObject *o, const char *path,
				   JsonbValue *v)
{
	(void) wfv_jsonpath(st, o->label, path, v);
}

static void
wfv_check_top_steps(WfvState *st, WfvObject *o, const char *path,
					JsonbValue *v)
{
	wfv_step_array(st, o, path, v, true);
}

/* "retry": {max_attempts, backoff, initial_interval, max_interval, jitter} */
static void
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
static void
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
static void
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
static void
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
static void
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
static void
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
static void
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
