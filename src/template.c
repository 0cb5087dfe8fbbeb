/*-------------------------------------------------------------------------
 *
 * template.c
 *		Rendering of the templates in step actions against the run
 *		context: "{{ path }}" is replaced by the value of a SQL/JSON path
 *		on the context, "{{ secret.NAME }}" by a stored secret.  Secret
 *		values used by a rendering are remembered so that whatever comes
 *		back (outputs, errors) can be redacted (template_redact.c).
 *
 * A secret renders only where the caller allows it (WfTemplateCtx's
 * allow_secrets: an http step's url, header values and body) and only if
 * the run's owner has the privileges of the secret's owner or of a role it
 * is granted to, checked each time it is read.  Elsewhere a secret template
 * is an error, raised before its value is read.
 *
 * The template syntax is exactly the one wf_validate_template() accepts:
 * each "{{" is closed by the first "}}" after it, and the expression in
 * between, trimmed of white space, is "secret.NAME" or a JSON path.  There
 * is no escape syntax.
 *
 * src/template.c
 *
 *-------------------------------------------------------------------------
 */

#include "pg_workflow.h"

#include <ctype.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "template_int.h"

/* Strings quoted in error messages are clipped to this many bytes. */
#define WF_TEMPLATE_CLIP		200

/* The state of one rendering call. */
typedef struct WfTemplateRun
{
	WfTemplateCtx *tc;
	MemoryContext cxt;			/* the caller's context: results go there */
	MemoryContext scratch;		/* evaluation garbage, reset per template */
	Jsonb	   *target;			/* tc->context, or {} when there is none */
	Jsonb	   *vars;			/* {}: paths have no variables */
	List	   *cache_names;	/* secrets read by this call... */
	List	   *cache_values;	/* ...and their values */
} WfTemplateRun;

static void wf_template_run_init(WfTemplateRun *run, WfTemplateCtx *tc);
static void wf_template_run_done(WfTemplateRun *run);
static const char *wf_template_find(const char *hay, Size haylen,
									const char *needle, Size needlelen);
static char *wf_template_clip(const char *str);
static char *wf_template_expr(const char *str, const char *start,
							  const char *close);
static bool wf_template_is_whole(const char *str, Size len);
static const char *wf_template_secret(WfTemplateRun *run, const char *name);
static void wf_template_remember(WfTemplateCtx *tc, const char *value,
								 MemoryContext cxt);
static void wf_template_used(WfTemplateRun *run, const char *name,
							 const char *hosts);
static Jsonb *wf_template_eval_path(WfTemplateRun *run, const char *expr);
static void wf_template_append_value(WfTemplateRun *run, StringInfo out,
									 const char *expr, bool escape);
static void wf_template_eval_value(WfTemplateRun *run, const char *expr,
								   JsonbValue *result);
static void wf_template_render_into(WfTemplateRun *run, StringInfo out,
									const char *str, bool url_escape);
static void wf_template_render_scalar(WfTemplateRun *run, JsonbValue *v,
									  JsonbValue *result);


/* ----------------------------------------------------------------
 * Rendering
 * ----------------------------------------------------------------
 */

/*
 * Render a string: each "{{ expr }}" is replaced by its value, a string
 * value by its text, any other value by its JSON text.  With url_escape,
 * substituted values are percent-encoded, except when the template is the
 * whole string (so that "{{$.input.url}}" gives a usable URL).  The result
 * is always a new string (NULL for NULL).
 */
char *
wf_template_render_string(WfTemplateCtx *tc, const char *str, bool url_escape)
{
	WfTemplateRun run;
	StringInfoData out;

	if (str == NULL)
		return NULL;
	if (strstr(str, "{{") == NULL)
		return pstrdup(str);

	wf_template_run_init(&run, tc);
	initStringInfo(&out);
	wf_template_render_into(&run, &out, str, url_escape);
	wf_template_run_done(&run);

	return out.data;
}

/*
 * Render a JSON value: every string in it (object member values and array
 * elements, at any depth, but not object keys) is rendered.  A string that
 * is exactly one template is replaced by the JSON value it evaluates to (a
 * secret by a string); a string with text around its templates stays a
 * string.  Returns value itself when it has nothing to render.
 */
Jsonb *
wf_template_render_jsonb(WfTemplateCtx *tc, Jsonb *value)
{
	WfTemplateRun run;
	JsonbParseState *state = NULL;
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	v;
	JsonbValue *res = NULL;
	Jsonb	   *result;
	uint32		n = 0;

	if (value == NULL)
		return NULL;

	/* Strings are stored unescaped: no "{{" in the binary, no template. */
	if (wf_template_find((const char *) &value->root,
						 VARSIZE(value) - VARHDRSZ, "{{", 2) == NULL)
		return value;

	wf_template_run_init(&run, tc);

	if (JB_ROOT_IS_SCALAR(value))
	{
		JsonbValue	scalar;
		JsonbValue	rendered;

		if (!JsonbExtractScalar(&value->root, &scalar))
			elog(ERROR, "could not extract the scalar of a jsonb value");
		if (scalar.type != jbvString)
		{
			wf_template_run_done(&run);
			return value;
		}
		wf_template_render_scalar(&run, &scalar, &rendered);
		/* a scalar becomes a scalar root, a container is copied as is */
		result = JsonbValueToJsonb(&rendered);
		wf_template_run_done(&run);
		return result;
	}

	it = JsonbIteratorInit(&value->root);
	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		if ((++n & 0xFFF) == 0)
			CHECK_FOR_INTERRUPTS();

		if ((tok == WJB_VALUE || tok == WJB_ELEM) && v.type == jbvString)
		{
			JsonbValue	rendered;

			wf_template_render_scalar(&run, &v, &rendered);
			res = pushJsonbValue(&state, tok, &rendered);
		}
		else
			res = pushJsonbValue(&state, tok,
								 tok < WJB_BEGIN_ARRAY ? &v : NULL);
	}
	result = JsonbValueToJsonb(res);
	wf_template_run_done(&run);

	return result;
}

/* Set up the state of a rendering call. */
static void
wf_template_run_init(WfTemplateRun *run, WfTemplateCtx *tc)
{
	run->tc = tc;
	run->cxt = CurrentMemoryContext;
	run->scratch = AllocSetContextCreate(CurrentMemoryContext,
										 "pg_workflow template",
										 ALLOCSET_DEFAULT_SIZES);
	run->vars = DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
												   CStringGetDatum("{}")));
	run->target = tc->context != NULL ? tc->context : run->vars;
	run->cache_names = NIL;
	run->cache_values = NIL;
}

/* Release what a rendering call used (its results stay). */
static void
wf_template_run_done(WfTemplateRun *run)
{
	MemoryContextDelete(run->scratch);
	list_free_deep(run->cache_names);
	list_free_deep(run->cache_values);
	pfree(run->vars);
}

/*
 * Render str into out.  Each "{{" is closed by the first "}}" after it,
 * as in wf_validate_template().
 */
static void
wf_template_render_into(WfTemplateRun *run, StringInfo out, const char *str,
						bool url_escape)
{
	const char *p = str;
	const char *open;

	while ((open = strstr(p, "{{")) != NULL)
	{
		const char *close = strstr(open + 2, "}}");
		MemoryContext old;
		char	   *expr;
		bool		escape;

		CHECK_FOR_INTERRUPTS();

		if (close == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unterminated template in \"%s\"",
							wf_template_clip(str))));

		appendBinaryStringInfo(out, p, open - p);

		old = MemoryContextSwitchTo(run->scratch);
		expr = wf_template_expr(str, open + 2, close);
		escape = url_escape && !(open == str && close[2] == '\0');
		wf_template_append_value(run, out, expr, escape);
		MemoryContextSwitchTo(old);
		MemoryContextReset(run->scratch);

		p = close + 2;
	}
	appendStringInfoString(out, p);
}

/*
 * Render one string of a JSON document (v, a jbvString) into result: the
 * value of its template when it is exactly one, a string otherwise.
 * Whatever result points to lives in the caller's context.
 */
static void
wf_template_render_scalar(WfTemplateRun *run, JsonbValue *v,
						  JsonbValue *result)
{
	const char *s = v->val.string.val;
	int			len = v->val.string.len;
	char	   *str;

	if (wf_template_find(s, len, "{{", 2) == NULL)
	{
		*result = *v;
		return;
	}

	str = pnstrdup(s, len);
	if (wf_template_is_whole(str, len))
	{
		MemoryContext old = MemoryContextSwitchTo(run->scratch);
		char	   *expr = wf_template_expr(str, str + 2, str + len - 2);

		wf_template_eval_value(run, expr, result);
		MemoryContextSwitchTo(old);
		MemoryContextReset(run->scratch);
	}
	else
	{
		StringInfoData out;

		initStringInfo(&out);
		wf_template_render_into(run, &out, str, false);
		result->type = jbvString;
		result->val.string.val = out.data;
		result->val.string.len = out.len;
	}
	pfree(str);
}

/*
 * Is str (of len bytes) exactly one template: "{{" at its start and the
 * first "}}" after it at its end?
 */
static bool
wf_template_is_whole(const char *str, Size len)
{
	const char *close;

	if (len < 4 || str[0] != '{' || str[1] != '{')
		return false;
	close = strstr(str + 2, "}}");
	return close != NULL && close + 2 == str + len;
}

/*
 * The expression of the template of str that begins at start and is closed
 * at close, trimmed as wf_validate_template() trims it.  Raises for what
 * the validator rejects without a JSON path parse: an empty expression, a
 * secret without a valid name.
 */
static char *
wf_template_expr(const char *str, const char *start, const char *close)
{
	const char *end = close;
	char	   *expr;

	while (start < end && isspace((unsigned char) *start))
		start++;
	while (end > start && isspace((unsigned char) end[-1]))
		end--;
	if (start == end)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("empty template in \"%s\"", wf_template_clip(str))));

	expr = pnstrdup(start, end - start);
	if (strncmp(expr, "secret.", 7) == 0)
	{
		const char *c = expr + 7;

		if (*c == '\0')
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("template \"{{%s}}\" has no secret name",
							wf_template_clip(expr))));
		for (; *c != '\0'; c++)
		{
			if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
				  (*c >= '0' && *c <= '9') ||
				  *c == '_' || *c == '.' || *c == '-'))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid secret name \"%s\"",
								wf_template_clip(expr + 7))));
		}
	}
	return expr;
}

/*
 * Append the value of expr to out: a string's (or a secret's) text, the
 * JSON text of anything else; percent-encoded if escape.  Runs in the
 * scratch context; out lives in the caller's.
 */
static void
wf_template_append_value(WfTemplateRun *run, StringInfo out,
						 const char *expr, bool escape)
{
	const char *text;
	Size		len;

	if (strncmp(expr, "secret.", 7) == 0)
	{
		text = wf_template_secret(run, expr + 7);
		len = strlen(text);
	}
	else
	{
		Jsonb	   *jb = wf_template_eval_path(run, expr);
		JsonbValue	scalar;

		if (JB_ROOT_IS_SCALAR(jb) &&
			JsonbExtractScalar(&jb->root, &scalar) &&
			scalar.type == jbvString)
		{
			text = scalar.val.string.val;
			len = scalar.val.string.len;
		}
		else if (!escape)
		{
			(void) JsonbToCString(out, &jb->root, VARSIZE(jb));
			return;
		}
		else
		{
			text = JsonbToCString(NULL, &jb->root, VARSIZE(jb));
			len = strlen(text);
		}
	}

	if (escape)
		wf_template_url_escape(out, text, len);
	else
		appendBinaryStringInfo(out, text, len);
}

/*
 * The JSON value of expr in result, for a string that is exactly one
 * template: a secret as a string, a path's result as it is.  Runs in the
 * scratch context; result points to copies in the caller's context.
 */
static void
wf_template_eval_value(WfTemplateRun *run, const char *expr,
					   JsonbValue *result)
{
	if (strncmp(expr, "secret.", 7) == 0)
	{
		/* The secret cache lives in the caller's context. */
		const char *value = wf_template_secret(run, expr + 7);

		result->type = jbvString;
		result->val.string.val = (char *) value;
		result->val.string.len = strlen(value);
	}
	else
	{
		Jsonb	   *jb = wf_template_eval_path(run, expr);
		Jsonb	   *copy;

		copy = MemoryContextAlloc(run->cxt, VARSIZE(jb));
		memcpy(copy, jb, VARSIZE(jb));

		if (JB_ROOT_IS_SCALAR(copy))
		{
			if (!JsonbExtractScalar(&copy->root, result))
				elog(ERROR, "could not extract the scalar of a jsonb value");
		}
		else
		{
			result->type = jbvBinary;
			result->val.binary.data = &copy->root;
			result->val.binary.len = VARSIZE(copy) - VARHDRSZ;
		}
	}
}

/*
 * The first value of a JSON path on the context, as jsonb_path_query_first
 * (lax unless the path says strict, no variables, errors not silenced).
 * Raises when it matches nothing.
 */
static Jsonb *
wf_template_eval_path(WfTemplateRun *run, const char *expr)
{
	Jsonb	   *result = wf_exec_path_first(run->target, expr);

	if (result == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("template \"{{%s}}\" matched nothing in the run context",
						wf_template_clip(expr))));
	return result;
}

/*
 * The value of secret name, read from wf.secret (once per rendering call:
 * nothing is cached across calls, secrets and grants may change), if the
 * caller allows secrets here and the run's owner may use it.  The value is
 * remembered in the session for redaction, and the secret in
 * tc->secrets_used.  Works whether or not the caller is connected to SPI.
 */
static const char *
wf_template_secret(WfTemplateRun *run, const char *name)
{
	MemoryContext old = CurrentMemoryContext;
	ListCell   *lc1;
	ListCell   *lc2;
	Oid			argtypes[2] = {TEXTOID, OIDOID};
	Datum		args[2];
	char	   *value = NULL;
	char	   *hosts = NULL;
	bool		found = false;
	bool		permitted = false;
	int			rc;

	if (!run->tc->allow_secrets)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("secret \"%s\" cannot be used here", name),
				 errdetail("Secrets are allowed only in an http step's url, headers and body.")));
	if (!OidIsValid(run->tc->owner))
		elog(ERROR, "secret \"%s\" rendered without a run owner", name);

	forboth(lc1, run->cache_names, lc2, run->cache_values)
	{
		if (strcmp((char *) lfirst(lc1), name) == 0)
			return (const char *) lfirst(lc2);
	}

	/* Names are qualified: the executor's search_path is not ours to trust. */
	args[0] = CStringGetTextDatum(name);
	args[1] = ObjectIdGetDatum(run->tc->owner);
	if ((rc = SPI_connect()) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed: %s", SPI_result_code_string(rc));
	rc = SPI_execute_with_args("SELECT s.value, s.hosts,"
							   " pg_catalog.pg_has_role($2, s.owner::pg_catalog.oid, 'USAGE')"
							   " OR EXISTS (SELECT 1 FROM " WF_SCHEMA_NAME ".secret_grant g"
							   " WHERE g.name OPERATOR(pg_catalog.=) s.name"
							   " AND pg_catalog.pg_has_role($2, g.grantee::pg_catalog.oid, 'USAGE'))"
							   " FROM " WF_SCHEMA_NAME ".secret s"
							   " WHERE s.name OPERATOR(pg_catalog.=) $1",
							   2, argtypes, args, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not read secret \"%s\": %s",
			 name, SPI_result_code_string(rc));
	if (SPI_processed > 0)
	{
		HeapTuple	tuple = SPI_tuptable->vals[0];
		TupleDesc	tupdesc = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		d;

		found = true;
		d = SPI_getbinval(tuple, tupdesc, 3, &isnull);
		permitted = !isnull && DatumGetBool(d);
		if (permitted)
		{
			/* Copy out of SPI's memory before SPI_finish() frees it. */
			MemoryContextSwitchTo(run->cxt);
			d = SPI_getbinval(tuple, tupdesc, 1, &isnull);
			value = isnull ? pstrdup("") : TextDatumGetCString(d);
			d = SPI_getbinval(tuple, tupdesc, 2, &isnull);
			hosts = isnull ? NULL : TextDatumGetCString(d);
		}
	}
	SPI_finish();
	MemoryContextSwitchTo(old);

	if (!found)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("secret \"%s\" does not exist", name)));
	if (!permitted)
	{
		char	   *role = GetUserNameFromId(run->tc->owner, true);

		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for secret \"%s\"", name),
				 errdetail("The run's owner, role %s, is not the secret's owner and has the privileges of no role the secret is granted to.",
						   role ? quote_identifier(role) :
						   psprintf("%u", run->tc->owner)),
				 errhint("The secret's owner can allow it with wf_grant_secret().")));
	}

	MemoryContextSwitchTo(run->cxt);
	run->cache_names = lappend(run->cache_names, pstrdup(name));
	run->cache_values = lappend(run->cache_values, value);
	MemoryContextSwitchTo(old);

	wf_template_remember(run->tc, value, run->cxt);
	wf_template_used(run, name, hosts);

	return value;
}

/* Add secret name (with its hosts) to tc->secrets_used, unless there. */
static void
wf_template_used(WfTemplateRun *run, const char *name, const char *hosts)
{
	MemoryContext old;
	WfTemplateSecret *secret;
	ListCell   *lc;

	foreach(lc, run->tc->secrets_used)
	{
		if (strcmp(((WfTemplateSecret *) lfirst(lc))->name, name) == 0)
			return;
	}

	old = MemoryContextSwitchTo(run->tc->secrets_used != NIL ?
								GetMemoryChunkContext(run->tc->secrets_used) :
								run->cxt);
	secret = palloc(sizeof(WfTemplateSecret));
	secret->name = pstrdup(name);
	secret->hosts = hosts ? pstrdup(hosts) : NULL;
	run->tc->secrets_used = lappend(run->tc->secrets_used, secret);
	MemoryContextSwitchTo(old);
}

/*
 * Add a secret value to tc->secret_values, unless empty or already there.
 * The string goes in the list's memory context (cxt, the caller's, for the
 * first), so that list and strings live and die together.
 */
static void
wf_template_remember(WfTemplateCtx *tc, const char *value, MemoryContext cxt)
{
	MemoryContext old;
	ListCell   *lc;

	if (value[0] == '\0')
		return;
	foreach(lc, tc->secret_values)
	{
		if (strcmp((char *) lfirst(lc), value) == 0)
			return;
	}

	if (tc->secret_values != NIL)
		cxt = GetMemoryChunkContext(tc->secret_values);
	old = MemoryContextSwitchTo(cxt);
	tc->secret_values = lappend(tc->secret_values, pstrdup(value));
	MemoryContextSwitchTo(old);
}

/*
 * Append s percent-encoded to out: RFC 3986 unreserved characters (letters,
 * digits, "-", ".", "_", "~") are kept, every other byte is "%XX".
 */
void
wf_template_url_escape(StringInfo out, const char *s, Size len)
{
	static const char hex[] = "0123456789ABCDEF";
	Size		i = 0;

	while (i < len)
	{
		Size		run = i;
		unsigned char c;
		char		enc[3];

		while (run < len &&
			   ((s[run] >= 'a' && s[run] <= 'z') ||
				(s[run] >= 'A' && s[run] <= 'Z') ||
				(s[run] >= '0' && s[run] <= '9') ||
				s[run] == '-' || s[run] == '.' ||
				s[run] == '_' || s[run] == '~'))
			run++;
		if (run > i)
			appendBinaryStringInfo(out, s + i, run - i);
		if (run >= len)
			break;

		c = (unsigned char) s[run];
		enc[0] = '%';
		enc[1] = hex[c >> 4];
		enc[2] = hex[c & 0x0F];
		appendBinaryStringInfo(out, enc, 3);
		i = run + 1;
	}
}


/* ----------------------------------------------------------------
 * Small helpers
 * ----------------------------------------------------------------
 */

/* The first occurrence of needle in hay (neither terminated), or NULL. */
static const char *
wf_template_find(const char *hay, Size haylen, const char *needle,
				 Size needlelen)
{
	const char *p = hay;
	const char *end = hay + haylen;

	if (needlelen == 0)
		return hay;
	while ((Size) (end - p) >= needlelen)
	{
		p = memchr(p, needle[0], (end - p) - needlelen + 1);
		if (p == NULL)
			return NULL;
		if (memcmp(p, needle, needlelen) == 0)
			return p;
		p++;
	}
	return NULL;
}

/* str for an error message: clipped to a sensible length. */
static char *
wf_template_clip(const char *str)
{
	int			len = strlen(str);
	int			clip;

	if (len <= WF_TEMPLATE_CLIP)
		return (char *) str;
	clip = pg_mbcliplen(str, len, WF_TEMPLATE_CLIP);
	return psprintf("%.*s...", clip, str);
}
