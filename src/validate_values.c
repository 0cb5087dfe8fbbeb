/*-------------------------------------------------------------------------
 *
 * validate_values.c
 *		Checks of the values in workflow definitions: names, intervals, JSON
 *		paths, templates, secrets, numbers and enumerations.
 *
 * See validate.c for how a definition is walked and what the functions of
 * these files may do (subtransactions, memory).
 *
 * src/validate_values.c
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

static Datum wfv_parse_interval(const char *str);
static void wfv_templates_in(WfvState *st, const char *label,
							 StringInfo path, JsonbValue *v);
static char *wfv_secret_in(const char *str, int len);
static void wfv_secrets_in(WfvState *st, const char *label, StringInfo path,
						   JsonbValue *v);
static bool wfv_numeric_int(Numeric num, int32 *result);
static bool wfv_status_code(JsonbValue *v);

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
bool
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

Datum
wfv_parse_jsonpath(const char *str)
{
	return DirectFunctionCall1(jsonpath_in, CStringGetDatum(str));
}

Datum
wfv_parse_sql(const char *str)
{
	return PointerGetDatum(raw_parser(str, RAW_PARSE_DEFAULT));
}

/* The string value v, or NULL after reporting that it is not one. */
char *
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
JsonbContainer *
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
bool
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
bool
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
Interval *
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
bool
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
bool
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
void
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
void
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
void
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
bool
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
const char *
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
bool
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
 * The value checks above in the form of a WfvCheck, for the tables of
 * keys and members
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
wfv_check_template(WfvState *st, WfvObject *o, const char *path,
				   JsonbValue *v)
{
	(void) wfv_template(st, o->label, path, v);
}

/* Any JSON, whose strings may hold templates. */
void
wfv_check_templates(WfvState *st, WfvObject *o, const char *path,
					JsonbValue *v)
{
	wfv_any_templates(st, o->label, path, v);
}

/* A positive integer. */
void
wfv_check_count(WfvState *st, WfvObject *o, const char *path, JsonbValue *v)
{
	(void) wfv_integer(st, o->label, path, v, 1, PG_INT32_MAX);
}
