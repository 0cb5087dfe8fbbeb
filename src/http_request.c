/*-------------------------------------------------------------------------
 *
 * http_request.c
 *		The "http" step kind's request, prepared: the hosts it may go to
 *		(pg_workflow.http_allowed_hosts, a secret's hosts), the URL
 *		checked, the circuit breaker and the rate limit asked, the
 *		templates rendered, secrets included.  http.c sends it.  Also the
 *		check of an "http" action's definition, for wf_validate.
 *
 * See http.c for a request's life and the rules of secrets and redirects.
 *
 * src/http_request.c
 *
 *-------------------------------------------------------------------------
 */
#include "pg_workflow.h"

#include <arpa/inet.h>
#include <poll.h>

#include <curl/curl.h>

#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "http_int.h"
#include "validate_int.h"

/*
 * Does host match one of patterns (the syntax of
 * pg_workflow.http_allowed_hosts, and of a secret's hosts)?  Patterns are
 * exact names or addresses, "*.domain" (any name under domain) or "*",
 * separated by commas or white space.
 */
bool
wf_http_host_matches(const char *host, const char *patterns)
{
	char	   *list;
	char	   *tok;
	char	   *save;
	char	   *h = pstrdup(host);
	size_t		hl;

	/* [::1] and ::1 are the same host. */
	hl = strlen(h);
	if (hl > 2 && h[0] == '[' && h[hl - 1] == ']')
	{
		h[hl - 1] = '\0';
		h++;
	}
	list = pstrdup(patterns);
	for (tok = strtok_r(list, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save))
	{
		size_t		tl = strlen(tok);

		if (tl > 2 && tok[0] == '[' && tok[tl - 1] == ']')
		{
			tok[tl - 1] = '\0';
			tok++;
			tl -= 2;
		}
		if (strcmp(tok, "*") == 0 || pg_strcasecmp(tok, h) == 0)
			return true;
		if (tl > 2 && tok[0] == '*' && tok[1] == '.')
		{
			size_t		len = strlen(h);

			if (len > tl - 1 && pg_strcasecmp(h + len - (tl - 1), tok + 1) == 0)
				return true;
		}
	}
	return false;
}

/*
 * Is host allowed by pg_workflow.http_allowed_hosts?  An empty setting
 * allows every host.
 */
bool
wf_http_host_allowed(const char *host)
{
	if (wf_guc_http_allowed_hosts == NULL || wf_guc_http_allowed_hosts[0] == '\0')
		return true;
	return wf_http_host_matches(host, wf_guc_http_allowed_hosts);
}

/*
 * Is patterns a non-empty list that wf_http_host_matches() reads as meant:
 * each item "*", "*.domain", a host name, an IPv4 address, or an IPv6
 * address (bracketed or not)?  Otherwise sets *problem.
 */
bool
wf_http_hosts_valid(const char *patterns, char **problem)
{
	char	   *list = pstrdup(patterns);
	char	   *tok;
	char	   *save;
	int			n = 0;

	*problem = NULL;
	for (tok = strtok_r(list, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save))
	{
		const char *name = tok;
		size_t		tl = strlen(tok);
		bool		v6 = false;
		bool		ok = true;

		n++;
		if (strcmp(tok, "*") == 0)
			continue;
		if (tl > 2 && tok[0] == '*' && tok[1] == '.')
			name = tok + 2;
		else if (tl > 2 && tok[0] == '[' && tok[tl - 1] == ']')
		{
			tok[tl - 1] = '\0';
			name = tok + 1;
			v6 = true;
		}
		else if (strchr(tok, ':') != NULL)
			v6 = true;

		if (v6)
		{
			struct in6_addr addr;

			ok = inet_pton(AF_INET6, name, &addr) == 1;
		}
		else
		{
			ok = name[0] != '\0' && name[0] != '.' && name[0] != '-';
			for (const char *c = name; ok && *c; c++)
				ok = (*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'z') ||
					(*c >= 'A' && *c <= 'Z') || *c == '-' || *c == '.';
		}
		if (!ok)
		{
			*problem = psprintf("\"%s\" is not a host name, an address, \"*.domain\" or \"*\"",
								v6 && name != tok ? psprintf("[%s]", name) : tok);
			return false;
		}
	}
	if (n == 0)
	{
		*problem = pstrdup("the list is empty");
		return false;
	}
	return true;
}

PG_FUNCTION_INFO_V1(wf_check_hosts);

/*
 * wf._check_hosts(hosts text) RETURNS void
 *
 * Raises an ERROR unless hosts is a valid list for a secret's hosts.
 */
Datum
wf_check_hosts(PG_FUNCTION_ARGS)
{
	char	   *hosts = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *problem;

	if (!wf_http_hosts_valid(hosts, &problem))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid hosts list \"%s\": %s", hosts, problem),
				 errhint("List host names, addresses, \"*.domain\" patterns or \"*\", separated by commas, as in pg_workflow.http_allowed_hosts; NULL allows every host that setting allows.")));
	PG_RETURN_VOID();
}

/*
 * Checks an absolute URL's scheme and host; raises if either is refused.
 */
static char *
wf_http_check_url(const char *url, WfTemplateCtx *tc)
{
	char	   *result;
	CURLU	   *u = curl_url();
	char	   *scheme = NULL;
	char	   *host = NULL;
	bool		ok_scheme;
	bool		ok_host;

	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
		curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
		curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
	{
		curl_url_cleanup(u);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid URL \"%s\"", wf_template_redact(tc, url))));
	}
	ok_scheme = (pg_strcasecmp(scheme, "http") == 0 || pg_strcasecmp(scheme, "https") == 0);
	ok_host = wf_http_host_allowed(host);
	curl_free(scheme);
	if (!ok_scheme)
	{
		curl_free(host);
		curl_url_cleanup(u);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("URL scheme not allowed in \"%s\"", wf_template_redact(tc, url)),
				 errhint("Only http and https URLs are allowed.")));
	}
	if (!ok_host)
	{
		char	   *h = pstrdup(host);

		curl_free(host);
		curl_url_cleanup(u);
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("host \"%s\" is not allowed", wf_template_redact(tc, h)),
				 errhint("Add it to pg_workflow.http_allowed_hosts.")));
	}
	result = pstrdup(host);
	curl_free(host);
	curl_url_cleanup(u);
	return result;
}

/*
 * Asks circuit breaker "key" (a host, or "agent:POOL") of a step with
 * "circuit_breaker" whether its attempt may start now.  If not, the step
 * is deferred without burning an attempt until the breaker may let a probe
 * through, or closes (wf._breaker_record wakes it then), and false is
 * returned.  Also for agent steps.
 */
bool
wf_http_breaker_admit(WfStepExec *ex, WfStepResult *res, const char *key)
{
	Jsonb	   *breaker = wf_util_jsonb_get(ex->spec, "circuit_breaker");
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		args[2];
	bool		isnull;
	Datum		d;

	if (breaker == NULL)
		return true;
	args[0] = CStringGetTextDatum(key);
	args[1] = CStringGetTextDatum(wf_util_jsonb_get_text(breaker, "reset_after"));
	if (SPI_execute_with_args("SELECT wf._breaker_admit($1, $2::interval)", 2, types,
							  args, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not consult the circuit breaker of \"%s\"", key);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
		return true;
	res->outcome = WF_STEP_DEFERRED;
	res->defer_until = DatumGetTimestampTz(d);
	res->defer_key = psprintf("breaker:%s", key);
	return false;
}

/*
 * Takes a token of rate limit "key" for the step (wf._rate_take); returns 0
 * if one was taken (the grant's time is then the attempt's started_at, in
 * ex and in wf.step), else the time of the next token.
 */
static TimestampTz
wf_http_rate_take(const char *key, Jsonb *rate, WfStepExec *ex)
{
	Oid			types[5] = {TEXTOID, INT4OID, TEXTOID, INT8OID, TEXTOID};
	Datum		args[5];
	bool		isnull;
	Datum		d;

	args[0] = CStringGetTextDatum(key);
	args[1] = Int32GetDatum((int32) wf_util_jsonb_get_number(rate, "limit", 1));
	args[2] = CStringGetTextDatum(wf_util_jsonb_get_text(rate, "per"));
	args[3] = Int64GetDatum(ex->run_id);
	args[4] = CStringGetTextDatum(ex->step);
	if (SPI_execute_with_args("SELECT * FROM wf._rate_take($1, $2, $3::interval, $4, $5)",
							  5, types, args, NULL, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not take a token of rate limit \"%s\"", key);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
		return DatumGetTimestampTz(d);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (isnull)
		elog(ERROR, "rate limit \"%s\" neither granted a token nor said when", key);
	ex->started_at = DatumGetTimestampTz(d);
	return 0;
}

/*
 * May the step go now under its "rate_limit", if it has one?  True when it
 * has none or a token was taken (*key_out: the bucket's key, rendered as
 * the run's owner, default_key when the definition names none); false when
 * there was no token: the step is deferred until the next one, without an
 * attempt burnt.  Used by the http and agent kinds.
 */
bool
wf_http_rate_admit(WfStepExec *ex, WfStepResult *res, const char *default_key,
				   char **key_out)
{
	Jsonb	   *rate = wf_util_jsonb_get(ex->spec, "rate_limit");
	WfTemplateCtx rtc;
	TimestampTz until;
	char	   *rate_key;

	if (key_out != NULL)
		*key_out = NULL;
	if (rate == NULL)
		return true;
	memset(&rtc, 0, sizeof(rtc));
	rtc.context = ex->context;
	rtc.owner = ex->owner;
	rate_key = wf_util_jsonb_get_text(rate, "key");
	rate_key = rate_key ? wf_template_render_string(&rtc, rate_key, false) :
		pstrdup(default_key);
	if (rate_key[0] == '\0' || strlen(rate_key) > 1000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("rate limit key of step \"%s\" must have 1 to 1000 bytes",
						ex->step)));
	if (key_out != NULL)
		*key_out = rate_key;
	until = wf_http_rate_take(rate_key, rate, ex);
	if (until == 0)
		return true;
	res->outcome = WF_STEP_DEFERRED;
	res->defer_until = until;
	return false;
}

/*
 * The "http" kind's execute: renders and checks the request, and leaves it
 * in res->request for the executor to queue once the step is checkpointed
 * as running.
 */
void
wf_http_execute(WfStepExec *ex, WfStepResult *res)
{
	Jsonb	   *http = wf_util_jsonb_get(ex->spec, "http");
	Jsonb	   *headers = wf_util_jsonb_get(http, "headers");
	Jsonb	   *body = wf_util_jsonb_get(http, "body");
	char	   *method = wf_util_jsonb_get_text(http, "method");
	char	   *url = wf_util_jsonb_get_text(http, "url");
	char	   *timeout = wf_util_jsonb_get_text(http, "timeout");
	WfTemplateCtx tc;
	WfHttpRequest *req;
	MemoryContext reqctx;
	MemoryContext old;
	bool		has_content_type = false;
	bool		has_idempotency_key = false;
	List	   *hdrs = NIL;
	char	   *body_text = NULL;
	const char *content_type = NULL;
	ListCell   *lc;
	char	   *host;
	Jsonb	   *breaker;
	char	   *rate_key;
	List	   *secrets = NIL;	/* every secret the request carries */
	List	   *secret_hdrs = NIL;	/* the headers that carry one */
	List	   *body_secrets = NIL;

	/* The three places where secrets may render, as the run's owner's. */
	memset(&tc, 0, sizeof(tc));
	tc.context = ex->context;
	tc.owner = ex->owner;
	tc.allow_secrets = true;

	if (url == NULL)
		elog(ERROR, "http step \"%s\" has no url", ex->step);
	url = wf_template_render_string(&tc, url, true);
	host = wf_http_check_url(url, &tc);
	secrets = tc.secrets_used;

	/* An open breaker: wait, without burning an attempt. */
	if (!wf_http_breaker_admit(ex, res, host))
		return;
	breaker = wf_util_jsonb_get(ex->spec, "circuit_breaker");

	/* No token of its rate limit: wait for the next one, no attempt burnt. */
	if (!wf_http_rate_admit(ex, res, host, &rate_key))
		return;

	if (headers != NULL && JB_ROOT_IS_OBJECT(headers))
	{
		JsonbIterator *it = JsonbIteratorInit(&headers->root);
		JsonbValue	v;
		JsonbIteratorToken tok;
		char	   *name = NULL;

		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			if (tok == WJB_KEY)
				name = pnstrdup(v.val.string.val, v.val.string.len);
			else if (tok == WJB_VALUE && v.type == jbvString && name != NULL)
			{
				char	   *value = pnstrdup(v.val.string.val, v.val.string.len);

				if (strchr(name, '\r') || strchr(name, '\n'))
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("invalid header name \"%s\"", name)));
				tc.secrets_used = NIL;
				value = wf_template_render_string(&tc, value, false);
				if (strchr(value, '\r') || strchr(value, '\n'))
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("value of header \"%s\" contains a line break", name)));
				if (pg_strcasecmp(name, "content-type") == 0)
					has_content_type = true;
				if (pg_strcasecmp(name, "idempotency-key") == 0)
					has_idempotency_key = true;
				hdrs = lappend(hdrs, psprintf("%s: %s", name, value));
				if (tc.secrets_used != NIL)
				{
					secret_hdrs = lappend(secret_hdrs, llast(hdrs));
					secrets = list_concat(secrets, tc.secrets_used);
				}
			}
		}
	}

	if (body != NULL)
	{
		Jsonb	   *rendered;
		char	   *s;

		tc.secrets_used = NIL;
		rendered = wf_template_render_jsonb(&tc, body);
		s = wf_util_jsonb_scalar_text(rendered);
		body_secrets = tc.secrets_used;
		secrets = list_concat(secrets, body_secrets);

		if (s != NULL)
		{
			body_text = s;
			content_type = "text/plain; charset=utf-8";
		}
		else
		{
			body_text = JsonbToCString(NULL, &rendered->root, VARSIZE(rendered));
			content_type = "application/json";
		}
	}
	tc.allow_secrets = false;

	/* Each secret goes only to a host it is bound to. */
	foreach(lc, secrets)
	{
		WfTemplateSecret *secret = lfirst(lc);

		if (secret->hosts != NULL && !wf_http_host_matches(host, secret->hosts))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("secret \"%s\" may not be sent to host \"%s\"",
							secret->name, wf_template_redact(&tc, host)),
					 errdetail("The secret is bound to hosts \"%s\".", secret->hosts)));
	}

	if (content_type != NULL && !has_content_type)
		hdrs = lappend(hdrs, psprintf("Content-Type: %s", content_type));
	if (!has_idempotency_key)
		hdrs = lappend(hdrs, psprintf("Idempotency-Key: wf-" INT64_FORMAT "-%s",
									  ex->run_id, ex->step));
	/* No "Expect: 100-continue" round trip for larger bodies. */
	hdrs = lappend(hdrs, pstrdup("Expect:"));

	/* The request outlives the transaction: give it a context of its own. */
	reqctx = AllocSetContextCreate(wf_http_ctx, "pg_workflow http request",
								   ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(reqctx);
	req = palloc0(sizeof(WfHttpRequest));
	req->ctx = reqctx;
	req->run_id = ex->run_id;
	req->step = pstrdup(ex->step);
	req->attempt = ex->attempt;
	req->started_at = ex->started_at;
	req->method = pstrdup(method ? method : "GET");
	req->url = pstrdup(url);
	foreach(lc, hdrs)
	{
		char	   *line = pstrdup(lfirst(lc));

		req->headers = lappend(req->headers, line);
		if (list_member_ptr(secret_hdrs, lfirst(lc)))
			req->secret_headers = lappend(req->secret_headers, line);
	}
	foreach(lc, body_secrets)
	{
		WfTemplateSecret *from = lfirst(lc);
		WfTemplateSecret *secret = palloc(sizeof(WfTemplateSecret));

		secret->name = pstrdup(from->name);
		secret->hosts = from->hosts ? pstrdup(from->hosts) : NULL;
		req->body_secrets = lappend(req->body_secrets, secret);
	}
	if (body_text != NULL)
	{
		req->body = pstrdup(body_text);
		req->body_len = strlen(body_text);
	}
	req->timeout_ms = ex->timeout_ms > 0 ? ex->timeout_ms :
		(timeout ? wf_util_interval_ms(timeout) : wf_guc_http_timeout_ms);
	req->redirects_left = 5;
	req->breaker_key = breaker ? pstrdup(host) : NULL;
	req->rate_key = rate_key ? pstrdup(rate_key) : NULL;
	foreach(lc, tc.secret_values)
		req->secret_values = lappend(req->secret_values, pstrdup(lfirst(lc)));
	initStringInfo(&req->response);
	MemoryContextSwitchTo(old);

	res->outcome = WF_STEP_STARTED;
	res->request = req;
}

/* ----------------------------------------------------------------
 * The check of the action, for wf_validate (kinds.c)
 * ----------------------------------------------------------------
 */

static void
wf_http_check_method(WfvState *st, WfvObject *o, const char *path,
					 JsonbValue *v)
{
	static const char *const methods[] = {"GET", "POST", "PUT", "PATCH",
	"DELETE", "HEAD", NULL};

	(void) wfv_enum(st, o->label, path, v, methods);
}

/* A template; without one, the URL is final: its scheme is checked. */
static void
wf_http_check_url_value(WfvState *st, WfvObject *o, const char *path,
						JsonbValue *v)
{
	const char *url;
	int			len;

	if (!wfv_template(st, o->label, path, v))
		return;
	url = v->val.string.val;
	len = v->val.string.len;
	if (strstr(pnstrdup(url, len), "{{") == NULL &&
		!(len >= 7 && pg_strncasecmp(url, "http://", 7) == 0) &&
		!(len >= 8 && pg_strncasecmp(url, "https://", 8) == 0))
		wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" must start with http:// or https://", path);
}

/* An object of header names and templates. */
static void
wf_http_check_headers(WfvState *st, WfvObject *o, const char *path,
					  JsonbValue *v)
{
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	key;
	JsonbValue	val;

	if (wfv_object(st, o->label, path, v) == NULL)
		return;
	it = JsonbIteratorInit(v->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &key, true)) != WJB_DONE)
	{
		if (tok != WJB_KEY)
			continue;
		tok = JsonbIteratorNext(&it, &val, true);
		Assert(tok == WJB_VALUE);
		(void) wfv_template(st, o->label,
							psprintf("%s.%.*s", path, key.val.string.len,
									 key.val.string.val),
							&val);
	}
}

static void
wf_http_check_ok_status(WfvState *st, WfvObject *o, const char *path,
						JsonbValue *v)
{
	if (!wfv_ok_status(v))
		wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" must be a status code from 100 to 599, an array of them, or a range such as \"200-299\"",
					path);
}

static const WfvMember wf_http_members[] = {
	{"method", false, wf_http_check_method},
	{"url", true, wf_http_check_url_value},
	{"headers", false, wf_http_check_headers},
	{"body", false, wfv_check_templates},
	{"timeout", false, wfv_check_interval},
	{"ok_status", false, wf_http_check_ok_status},
	{NULL}
};

/* "http": {method, url, headers, body, timeout, ok_status} */
void
wf_http_check(WfvState *st, WfvObject *o, const char *path, JsonbValue *v)
{
	JsonbContainer *c = wfv_object(st, o->label, path, v);

	if (c != NULL)
		wfv_members(st, o, c, path, wf_http_members);
}
