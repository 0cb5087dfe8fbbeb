/*-------------------------------------------------------------------------
 *
 * http.c
 *		The "http" step kind: requests made through one libcurl multi handle
 *		per executor, whose sockets and timer sit in the executor's own wait
 *		set next to its latch.
 *
 * A request's life:
 *
 *	1. The executor claims the step and calls wf_http_execute() in the
 *	   step's subtransaction: templates are rendered against the run
 *	   context and secrets, the URL's host is checked against
 *	   pg_workflow.http_allowed_hosts, and a WfHttpRequest is prepared.  The
 *	   step is checkpointed as "running" (by wf._step_load), and the request
 *	   is queued with wf_http_enqueue().
 *	2. Only when that transaction has committed does wf_http_submit() hand
 *	   the queued requests to libcurl; if it aborts, wf_http_discard() drops
 *	   them.  No transaction is ever open while we wait on the network.
 *	3. The executor waits in wf_http_wait(): latch, postmaster death, every
 *	   socket libcurl asked us to watch, and libcurl's timer as the timeout.
 *	   Socket events drive curl_multi_socket_action(); finished transfers
 *	   become WfHttpCompletion entries.
 *	4. The next executor transaction checkpoints the completions
 *	   (executor.c): output, or a classified failure with its retry time
 *	   (Retry-After honoured).
 *
 * Redirects are followed here, not by libcurl, so that every hop's host is
 * checked against the allowed hosts before any connection is made.  After
 * a crash, steps left "running" by an executor are made ready again and
 * sent anew with the same Idempotency-Key (at least once).
 *
 * Secrets ({{secret.NAME}}) render only in the url, the header values and
 * the body, and only if the run's owner may use them (template.c).  A
 * secret with hosts goes only to a host they match: the url's host is
 * checked when the request is rendered.  A redirect to another origin
 * (scheme, host or port) drops Authorization, Proxy-Authorization, Cookie
 * and every header that carried a secret; a body that carried one, kept by
 * the redirect (307, 308, or 301 and 302 of another method than POST),
 * goes to another origin only if each of its secrets is bound to hosts
 * that match the new host, or the step fails.
 *
 * src/http.c
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

/* A request prepared, queued, in flight, or finished. */
struct WfHttpRequest
{
	MemoryContext ctx;			/* holds this struct and everything below */
	int64		run_id;
	char	   *step;
	int			attempt;
	TimestampTz started_at;		/* identifies the attempt, with attempt */
	char	   *method;
	char	   *url;
	List	   *headers;		/* "Name: value" strings */
	char	   *body;			/* NULL: no body */
	size_t		body_len;
	long		timeout_ms;
	int			redirects_left;
	List	   *secret_values;	/* for redaction of what comes back */
	List	   *secret_headers; /* the strings of headers that carried a secret */
	List	   *body_secrets;	/* WfTemplateSecret * the body carried */
	char	   *refusal;		/* a redirect we would not follow, or NULL */
	char	   *breaker_key;	/* host, when the step has a circuit breaker */
	char	   *rate_key;		/* the key of the step's rate limit, or NULL */

	/* transfer state */
	CURL	   *easy;
	struct curl_slist *slist;
	StringInfoData response;
	List	   *resp_headers;	/* "name\0value" pairs as char * */
	bool		too_large;
	char		errbuf[CURL_ERROR_SIZE];
};

/* libcurl's wish for one socket. */
typedef struct WfHttpSocket
{
	curl_socket_t fd;
	int			what;			/* CURL_POLL_IN/OUT/INOUT */
} WfHttpSocket;

static CURLM *wf_http_multi = NULL;
static MemoryContext wf_http_ctx = NULL;

static List *wf_http_queued = NIL;	/* prepared in the current transaction */
static List *wf_http_in_flight = NIL;	/* handed to libcurl */
static List *wf_http_done = NIL;	/* WfHttpCompletion *, to checkpoint */

static WfHttpSocket *wf_http_sockets = NULL;
static int	wf_http_nsockets = 0;
static int	wf_http_maxsockets = 0;

static WaitEventSet *wf_http_wes = NULL;
static bool wf_http_wes_dirty = true;
static TimestampTz wf_http_timer_at = 0;	/* 0: no libcurl timer */

/* Settings */
int			wf_guc_http_max_concurrency = 256;
int			wf_guc_http_max_response_size = 10 * 1024 * 1024;
int			wf_guc_http_timeout_ms = 30000;
char	   *wf_guc_http_allowed_hosts = NULL;
char	   *wf_guc_http_ca_file = NULL;

static void wf_http_start_transfer(WfHttpRequest *req);
static void wf_http_publish_count(void);

/* ----------------------------------------------------------------
 * libcurl callbacks
 * ----------------------------------------------------------------
 */

static int
wf_http_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	int			i;

	for (i = 0; i < wf_http_nsockets; i++)
		if (wf_http_sockets[i].fd == fd)
			break;
	if (what == CURL_POLL_REMOVE)
	{
		if (i < wf_http_nsockets)
			wf_http_sockets[i] = wf_http_sockets[--wf_http_nsockets];
	}
	else if (i < wf_http_nsockets)
	{
		if (wf_http_sockets[i].what == what)
			return 0;
		wf_http_sockets[i].what = what;
	}
	else
	{
		if (wf_http_nsockets == wf_http_maxsockets)
		{
			wf_http_maxsockets = Max(64, wf_http_maxsockets * 2);
			wf_http_sockets = repalloc(wf_http_sockets,
									   wf_http_maxsockets * sizeof(WfHttpSocket));
		}
		wf_http_sockets[wf_http_nsockets].fd = fd;
		wf_http_sockets[wf_http_nsockets].what = what;
		wf_http_nsockets++;
	}
	wf_http_wes_dirty = true;
	return 0;
}

static int
wf_http_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	if (timeout_ms < 0)
		wf_http_timer_at = 0;
	else
		wf_http_timer_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	return 0;
}

static size_t
wf_http_write_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	WfHttpRequest *req = (WfHttpRequest *) userp;
	size_t		n = size * nmemb;

	if ((size_t) req->response.len + n > (size_t) wf_guc_http_max_response_size)
	{
		req->too_large = true;
		return 0;				/* makes libcurl fail with CURLE_WRITE_ERROR */
	}
	appendBinaryStringInfo(&req->response, data, n);
	return n;
}

static size_t
wf_http_header_cb(char *data, size_t size, size_t nmemb, void *userp)
{
	WfHttpRequest *req = (WfHttpRequest *) userp;
	size_t		n = size * nmemb;
	char	   *colon;
	char	   *line;
	char	   *value;
	int			i;
	MemoryContext old;

	/* A status line starts a new header block (e.g. after 100 Continue). */
	if (n >= 5 && strncmp(data, "HTTP/", 5) == 0)
	{
		req->resp_headers = NIL;
		return n;
	}
	colon = memchr(data, ':', n);
	if (colon == NULL)
		return n;

	old = MemoryContextSwitchTo(req->ctx);
	line = pnstrdup(data, n);
	colon = line + (colon - data);
	*colon = '\0';
	for (i = 0; line[i]; i++)
		line[i] = pg_tolower((unsigned char) line[i]);
	value = colon + 1;
	while (*value == ' ' || *value == '\t')
		value++;
	i = strlen(value);
	while (i > 0 && (value[i - 1] == '\r' || value[i - 1] == '\n' ||
					 value[i - 1] == ' '))
		value[--i] = '\0';
	memmove(colon + 1, value, i + 1);
	/* Store as "name\0value": the name is the string, the value follows. */
	req->resp_headers = lappend(req->resp_headers, line);
	MemoryContextSwitchTo(old);
	return n;
}

/* ----------------------------------------------------------------
 * Set-up and the request's preparation
 * ----------------------------------------------------------------
 */

void
wf_http_init(void)
{
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		elog(ERROR, "curl_global_init failed");
	wf_http_ctx = AllocSetContextCreate(TopMemoryContext, "pg_workflow http",
										ALLOCSET_DEFAULT_SIZES);
	wf_http_sockets = MemoryContextAlloc(wf_http_ctx, 64 * sizeof(WfHttpSocket));
	wf_http_maxsockets = 64;
	wf_http_multi = curl_multi_init();
	if (wf_http_multi == NULL)
		elog(ERROR, "curl_multi_init failed");
	curl_multi_setopt(wf_http_multi, CURLMOPT_SOCKETFUNCTION, wf_http_socket_cb);
	curl_multi_setopt(wf_http_multi, CURLMOPT_TIMERFUNCTION, wf_http_timer_cb);
	curl_multi_setopt(wf_http_multi, CURLMOPT_MAXCONNECTS,
					  (long) wf_guc_http_max_concurrency);
}

/* Requests queued, in flight or finished but not yet checkpointed. */
int
wf_http_busy(void)
{
	return list_length(wf_http_queued) + list_length(wf_http_in_flight) +
		list_length(wf_http_done);
}

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
static bool
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
 * Asks the host's circuit breaker whether a request may go now; returns 0
 * if so, else the time to try again.
 */
static TimestampTz
wf_http_breaker_admit(const char *host, Jsonb *breaker)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		args[2];
	bool		isnull;
	Datum		d;

	args[0] = CStringGetTextDatum(host);
	args[1] = CStringGetTextDatum(wf_util_jsonb_get_text(breaker, "reset_after"));
	if (SPI_execute_with_args("SELECT wf._breaker_admit($1, $2::interval)", 2, types,
							  args, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not consult the circuit breaker of \"%s\"", host);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? 0 : DatumGetTimestampTz(d);
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
	breaker = wf_util_jsonb_get(ex->spec, "circuit_breaker");
	if (breaker != NULL)
	{
		TimestampTz until = wf_http_breaker_admit(host, breaker);

		if (until != 0)
		{
			res->outcome = WF_STEP_DEFERRED;
			res->defer_until = until;
			res->defer_key = psprintf("breaker:%s", host);
			return;
		}
	}

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

/* Frees everything of a request, its transfer included. */
static void
wf_http_free(WfHttpRequest *req)
{
	if (req->easy)
	{
		curl_multi_remove_handle(wf_http_multi, req->easy);
		curl_easy_cleanup(req->easy);
		req->easy = NULL;
	}
	if (req->slist)
	{
		curl_slist_free_all(req->slist);
		req->slist = NULL;
	}
	MemoryContextDelete(req->ctx);
}

/* Queues a request whose step has been checkpointed as running. */
void
wf_http_enqueue(WfHttpRequest *req)
{
	MemoryContext old = MemoryContextSwitchTo(wf_http_ctx);

	wf_http_queued = lappend(wf_http_queued, req);
	MemoryContextSwitchTo(old);
}

/* The transaction that started the queued requests aborted: drop them. */
void
wf_http_discard(void)
{
	ListCell   *lc;

	foreach(lc, wf_http_queued)
		wf_http_free((WfHttpRequest *) lfirst(lc));
	list_free(wf_http_queued);
	wf_http_queued = NIL;
}

/* The transaction that started the queued requests committed: send them. */
void
wf_http_submit(void)
{
	ListCell   *lc;

	foreach(lc, wf_http_queued)
		wf_http_start_transfer((WfHttpRequest *) lfirst(lc));
	list_free(wf_http_queued);
	wf_http_queued = NIL;
	wf_http_publish_count();
}

static void
wf_http_start_transfer(WfHttpRequest *req)
{
	CURL	   *e = curl_easy_init();
	ListCell   *lc;
	MemoryContext old;

	if (e == NULL)
		elog(ERROR, "curl_easy_init failed");
	req->easy = e;
	req->slist = NULL;
	foreach(lc, req->headers)
		req->slist = curl_slist_append(req->slist, (char *) lfirst(lc));

	curl_easy_setopt(e, CURLOPT_PRIVATE, req);
	curl_easy_setopt(e, CURLOPT_URL, req->url);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_USERAGENT,
					 "pg_workflow/" WF_VERSION_STR " (libcurl/" LIBCURL_VERSION ")");
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, req->slist);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, req->timeout_ms);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, Min(req->timeout_ms, 10000L));
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, req->errbuf);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, wf_http_write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, req);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, wf_http_header_cb);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, req);
	curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE,
					 (curl_off_t) wf_guc_http_max_response_size);
	curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
	if (wf_guc_http_ca_file != NULL && wf_guc_http_ca_file[0] != '\0')
		curl_easy_setopt(e, CURLOPT_CAINFO, wf_guc_http_ca_file);

	if (strcmp(req->method, "HEAD") == 0)
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
	else if (strcmp(req->method, "GET") != 0)
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
	if (req->body != NULL && strcmp(req->method, "GET") != 0 &&
		strcmp(req->method, "HEAD") != 0)
	{
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) req->body_len);
	}

	old = MemoryContextSwitchTo(wf_http_ctx);
	wf_http_in_flight = lappend(wf_http_in_flight, req);
	MemoryContextSwitchTo(old);
	curl_multi_add_handle(wf_http_multi, e);
}

/* ----------------------------------------------------------------
 * Completion
 * ----------------------------------------------------------------
 */

/*
 * Do two absolute URLs have the same origin: scheme, host and port (the
 * default port of the scheme when none is given)?  False when either does
 * not parse.
 */
static bool
wf_http_same_origin(const char *a, const char *b)
{
	const CURLUPart parts[3] = {CURLUPART_SCHEME, CURLUPART_HOST, CURLUPART_PORT};
	CURLU	   *ua = curl_url();
	CURLU	   *ub = curl_url();
	bool		same;

	same = curl_url_set(ua, CURLUPART_URL, a, 0) == CURLUE_OK &&
		curl_url_set(ub, CURLUPART_URL, b, 0) == CURLUE_OK;
	for (int i = 0; same && i < lengthof(parts); i++)
	{
		char	   *pa = NULL;
		char	   *pb = NULL;

		same = curl_url_get(ua, parts[i], &pa, CURLU_DEFAULT_PORT) == CURLUE_OK &&
			curl_url_get(ub, parts[i], &pb, CURLU_DEFAULT_PORT) == CURLUE_OK &&
			pg_strcasecmp(pa, pb) == 0;
		curl_free(pa);
		curl_free(pb);
	}
	curl_url_cleanup(ua);
	curl_url_cleanup(ub);
	return same;
}

/*
 * Before a hop to another origin: drop the headers that are credentials
 * (Authorization, Proxy-Authorization, Cookie) and every header that
 * carried a secret.  They do not come back on later hops.
 */
static void
wf_http_drop_credentials(WfHttpRequest *req)
{
	static const char *const names[] = {"Authorization", "Proxy-Authorization",
	"Cookie"};
	ListCell   *lc;

	foreach(lc, req->headers)
	{
		char	   *line = lfirst(lc);
		const char *colon = strchr(line, ':');
		size_t		len = colon ? colon - line : strlen(line);
		bool		drop = list_member_ptr(req->secret_headers, line);

		for (int i = 0; !drop && i < lengthof(names); i++)
			drop = strlen(names[i]) == len && pg_strncasecmp(line, names[i], len) == 0;
		if (drop)
			req->headers = foreach_delete_current(req->headers, lc);
	}
	req->secret_headers = NIL;
}

/*
 * Before a hop to another origin that keeps the body: if the body carried
 * a secret that is not bound to hosts matching the new host (a secret
 * without hosts is bound to none in particular), why the hop must not be
 * made; else NULL.
 */
static char *
wf_http_body_refusal(WfHttpRequest *req, const char *next)
{
	CURLU	   *u;
	char	   *host = NULL;
	char	   *refusal = NULL;
	ListCell   *lc;

	if (req->body == NULL || req->body_secrets == NIL)
		return NULL;
	u = curl_url();
	if (curl_url_set(u, CURLUPART_URL, next, 0) != CURLUE_OK ||
		curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
		host = NULL;
	foreach(lc, req->body_secrets)
	{
		WfTemplateSecret *secret = lfirst(lc);

		if (host == NULL || secret->hosts == NULL ||
			!wf_http_host_matches(host, secret->hosts))
		{
			refusal = psprintf("redirect to %s not followed: the body carries secret \"%s\", which is not bound to host \"%s\"",
							   next, secret->name, host ? host : "");
			break;
		}
	}
	curl_free(host);
	curl_url_cleanup(u);
	return refusal;
}

/*
 * A transfer ended: follow a redirect (after checking its host), or turn
 * it into a completion for the executor to checkpoint.
 */
static void
wf_http_finish(WfHttpRequest *req, CURLcode code)
{
	WfHttpCompletion *c;
	long		status = 0;
	curl_off_t	retry_after = 0;
	char	   *location = NULL;
	MemoryContext old;

	wf_http_in_flight = list_delete_ptr(wf_http_in_flight, req);
	if (code == CURLE_OK)
	{
		curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &status);
		curl_easy_getinfo(req->easy, CURLINFO_RETRY_AFTER, &retry_after);
		if (status >= 300 && status < 400 && status != 304)
			curl_easy_getinfo(req->easy, CURLINFO_REDIRECT_URL, &location);
	}

	old = MemoryContextSwitchTo(req->ctx);
	if (location != NULL && req->redirects_left > 0)
	{
		char	   *next = pstrdup(location);

		req->redirects_left--;
		location = NULL;
		if (!wf_http_host_allowed_url(next))
		{
			code = CURLE_UNSUPPORTED_PROTOCOL;
			snprintf(req->errbuf, sizeof(req->errbuf),
					 "redirect to a URL that is not allowed: %s", next);
		}
		else
		{
			/* 301, 302, 303: a POST becomes a GET, as browsers do. */
			if (status == 303 || ((status == 301 || status == 302) &&
								  strcmp(req->method, "POST") == 0))
			{
				req->method = "GET";
				req->body = NULL;
				req->body_secrets = NIL;
			}
			/* No credential, no secret to another origin (see the top). */
			if (!wf_http_same_origin(req->url, next))
			{
				wf_http_drop_credentials(req);
				req->refusal = wf_http_body_refusal(req, next);
			}
			if (req->refusal == NULL)
			{
				curl_multi_remove_handle(wf_http_multi, req->easy);
				curl_easy_cleanup(req->easy);
				req->easy = NULL;
				curl_slist_free_all(req->slist);
				req->slist = NULL;
				req->url = next;
				resetStringInfo(&req->response);
				req->resp_headers = NIL;
				MemoryContextSwitchTo(old);
				wf_http_start_transfer(req);
				return;
			}
		}
	}

	if (location != NULL)
	{
		/* Out of redirects. */
		code = CURLE_TOO_MANY_REDIRECTS;
		snprintf(req->errbuf, sizeof(req->errbuf), "stopped after 5 redirects");
	}

	c = palloc0(sizeof(WfHttpCompletion));
	c->request = req;
	c->status = (int) status;
	c->curl_code = (int) code;
	c->retry_after_s = (int) retry_after;
	if (req->refusal != NULL)
	{
		/* The step fails, for good, whatever the status said. */
		c->error = req->refusal;
		c->transient = false;
		strlcpy(c->sqlstate, "42501", sizeof(c->sqlstate));
	}
	else if (code != CURLE_OK)
	{
		if (req->too_large)
			c->error = psprintf("response body exceeds pg_workflow.http_max_response_size (%d bytes)",
								wf_guc_http_max_response_size);
		else if (code == CURLE_FILESIZE_EXCEEDED)
			c->error = psprintf("response body exceeds pg_workflow.http_max_response_size (%d bytes)",
								wf_guc_http_max_response_size);
		else
			c->error = psprintf("%s: %s", curl_easy_strerror(code),
								req->errbuf[0] ? req->errbuf : "no detail");
		c->transient = (code == CURLE_COULDNT_RESOLVE_HOST ||
						code == CURLE_COULDNT_RESOLVE_PROXY ||
						code == CURLE_COULDNT_CONNECT ||
						code == CURLE_OPERATION_TIMEDOUT ||
						code == CURLE_SEND_ERROR ||
						code == CURLE_RECV_ERROR ||
						code == CURLE_GOT_NOTHING ||
						code == CURLE_PARTIAL_FILE ||
						code == CURLE_SSL_CONNECT_ERROR ||
						code == CURLE_HTTP2 ||
						code == CURLE_HTTP2_STREAM);
		c->timed_out = (code == CURLE_OPERATION_TIMEDOUT);
	}
	MemoryContextSwitchTo(old);

	curl_multi_remove_handle(wf_http_multi, req->easy);
	curl_easy_cleanup(req->easy);
	req->easy = NULL;
	curl_slist_free_all(req->slist);
	req->slist = NULL;

	old = MemoryContextSwitchTo(wf_http_ctx);
	wf_http_done = lappend(wf_http_done, c);
	MemoryContextSwitchTo(old);
}

static void
wf_http_harvest(void)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(wf_http_multi, &left)) != NULL)
	{
		WfHttpRequest *req;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &req);
		wf_http_finish(req, msg->data.result);
	}
	wf_http_publish_count();
}

/*
 * The finished requests, for the executor to checkpoint.  They stay here
 * until released, so that a checkpoint transaction that fails leaves them
 * for the next one.
 */
List *
wf_http_completions(void)
{
	return list_copy(wf_http_done);
}

/* A completion has been checkpointed, and that committed: free it. */
void
wf_http_release(WfHttpCompletion *c)
{
	wf_http_done = list_delete_ptr(wf_http_done, c);
	wf_http_free(c->request);	/* c lives in the request's context */
}

/* A request whose step could not be marked running: never sent. */
void
wf_http_forget(WfHttpRequest *req)
{
	wf_http_free(req);
}

/*
 * Drops the transfers of runs being cancelled, rewound or retried: their
 * steps are no longer running, and nothing must come of them.
 */
void
wf_http_drop_interrupted(void)
{
	ListCell   *lc;

	foreach(lc, wf_http_in_flight)
	{
		WfHttpRequest *req = lfirst(lc);

		if (wf_shmem_run_is_interrupted(req->run_id))
		{
			wf_http_in_flight = foreach_delete_current(wf_http_in_flight, lc);
			wf_http_free(req);
		}
	}
}

/* The runs of the requests in flight (palloc'd; NULL when none). */
int64 *
wf_http_in_flight_runs(int *n)
{
	int64	   *runs;
	ListCell   *lc;

	*n = 0;
	if (wf_http_in_flight == NIL)
		return NULL;
	runs = palloc(sizeof(int64) * list_length(wf_http_in_flight));
	foreach(lc, wf_http_in_flight)
		runs[(*n)++] = ((WfHttpRequest *) lfirst(lc))->run_id;
	return runs;
}

/* Drops the transfers of the given runs, which have ended. */
void
wf_http_drop_runs(int64 *runs, int n)
{
	ListCell   *lc;
	int			i;

	foreach(lc, wf_http_in_flight)
	{
		WfHttpRequest *req = lfirst(lc);

		for (i = 0; i < n; i++)
		{
			if (req->run_id == runs[i])
			{
				wf_http_in_flight = foreach_delete_current(wf_http_in_flight, lc);
				wf_http_free(req);
				break;
			}
		}
	}
	wf_http_publish_count();
}

/* Tells the other processes how many requests we have in flight. */
static void
wf_http_publish_count(void)
{
	int			n = list_length(wf_http_in_flight);

	if (wf_worker_slot == NULL || wf_worker_slot->http_in_flight == n)
		return;
	SpinLockAcquire(&wf_shared->mutex);
	wf_worker_slot->http_in_flight = n;
	SpinLockRelease(&wf_shared->mutex);
}

/* ----------------------------------------------------------------
 * Waiting
 * ----------------------------------------------------------------
 */

static void
wf_http_rebuild_wait_set(void)
{
	int			i;

	if (wf_http_wes != NULL)
		FreeWaitEventSet(wf_http_wes);
	wf_http_wes = CreateWaitEventSet(wf_http_ctx, wf_http_nsockets + 2);
	AddWaitEventToSet(wf_http_wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wf_http_wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (i = 0; i < wf_http_nsockets; i++)
	{
		uint32		ev = 0;

		if (wf_http_sockets[i].what & CURL_POLL_IN)
			ev |= WL_SOCKET_READABLE;
		if (wf_http_sockets[i].what & CURL_POLL_OUT)
			ev |= WL_SOCKET_WRITEABLE;
		AddWaitEventToSet(wf_http_wes, ev, wf_http_sockets[i].fd, NULL, NULL);
	}
	wf_http_wes_dirty = false;
}

/*
 * Lets libcurl act on every socket that is ready now, without waiting.
 */
static void
wf_http_poll_sockets(void)
{
	struct pollfd *fds;
	int			nfds = wf_http_nsockets;
	int			running;
	int			i;

	if (nfds == 0)
		return;
	fds = palloc(nfds * sizeof(struct pollfd));
	for (i = 0; i < nfds; i++)
	{
		fds[i].fd = wf_http_sockets[i].fd;
		fds[i].events = ((wf_http_sockets[i].what & CURL_POLL_IN) ? POLLIN : 0) |
			((wf_http_sockets[i].what & CURL_POLL_OUT) ? POLLOUT : 0);
		fds[i].revents = 0;
	}
	if (poll(fds, nfds, 0) > 0)
	{
		/* socket_action may change wf_http_sockets: we work on the copy. */
		for (i = 0; i < nfds; i++)
		{
			int			mask = 0;

			if (fds[i].revents & (POLLIN | POLLHUP))
				mask |= CURL_CSELECT_IN;
			if (fds[i].revents & POLLOUT)
				mask |= CURL_CSELECT_OUT;
			if (fds[i].revents & POLLERR)
				mask |= CURL_CSELECT_ERR;
			if (mask != 0)
				curl_multi_socket_action(wf_http_multi, fds[i].fd, mask, &running);
		}
	}
	pfree(fds);
}

/*
 * Waits for the latch, a socket of libcurl's or libcurl's timer, at most
 * timeout_ms (-1: no limit but libcurl's), and lets libcurl act on what
 * happened.  Returns after one round of events.
 */
void
wf_http_wait(long timeout_ms)
{
	WaitEvent	events[64];
	int			n = 0;
	int			i;
	int			running;

	/* libcurl's timer shortens the wait. */
	if (wf_http_timer_at != 0)
	{
		long		curl_ms = wf_util_ms_until(wf_http_timer_at);

		if (timeout_ms < 0 || curl_ms < timeout_ms)
			timeout_ms = curl_ms;
	}

	if (timeout_ms == 0)
	{
		/*
		 * A busy executor does not sleep, it only looks: a poll() of the
		 * sockets, rather than rebuilding the wait set they keep changing.
		 */
		wf_http_poll_sockets();
	}
	else
	{
		if (wf_http_wes_dirty || wf_http_wes == NULL)
			wf_http_rebuild_wait_set();
		n = WaitEventSetWait(wf_http_wes, timeout_ms, events, lengthof(events),
							 PG_WAIT_EXTENSION);
		for (i = 0; i < n; i++)
		{
			int			mask = 0;

			if (events[i].events & (WL_LATCH_SET | WL_POSTMASTER_DEATH))
				continue;
			if (events[i].events & WL_SOCKET_READABLE)
				mask |= CURL_CSELECT_IN;
			if (events[i].events & WL_SOCKET_WRITEABLE)
				mask |= CURL_CSELECT_OUT;
			curl_multi_socket_action(wf_http_multi, events[i].fd, mask, &running);
		}
	}
	if (wf_http_timer_at != 0 && GetCurrentTimestamp() >= wf_http_timer_at)
	{
		wf_http_timer_at = 0;
		curl_multi_socket_action(wf_http_multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}
	wf_http_harvest();
}

/* ----------------------------------------------------------------
 * Helpers for the executor's checkpoint of a completion
 * ----------------------------------------------------------------
 */

bool
wf_http_host_allowed_url(const char *url)
{
	CURLU	   *u = curl_url();
	char	   *scheme = NULL;
	char	   *host = NULL;
	bool		ok = false;

	if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
		curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
		curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK)
		ok = (pg_strcasecmp(scheme, "http") == 0 || pg_strcasecmp(scheme, "https") == 0) &&
			wf_http_host_allowed(host);
	curl_free(scheme);
	curl_free(host);
	curl_url_cleanup(u);
	return ok;
}

/*
 * The step output {"status", "headers", "body"} of a completion; the body
 * is parsed when it is JSON, kept as a string when it is text, and
 * described when it is neither.  Secrets used by the request are redacted.
 */
Jsonb *
wf_http_output(WfHttpCompletion *c)
{
	WfHttpRequest *req = c->request;
	StringInfoData buf;
	ListCell   *lc;
	bool		first = true;
	char	   *body = req->response.data;
	int			len = req->response.len;
	WfTemplateCtx tc;
	Jsonb	   *out;

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"status\": %d, \"headers\": {", c->status);
	foreach(lc, req->resp_headers)
	{
		char	   *name = lfirst(lc);
		char	   *value = name + strlen(name) + 1;

		if (!first)
			appendStringInfoString(&buf, ", ");
		first = false;
		escape_json(&buf, name);
		appendStringInfoString(&buf, ": ");
		escape_json(&buf, value);
	}
	appendStringInfoString(&buf, "}, \"body\": ");

	if (len == 0)
		appendStringInfoString(&buf, "null");
	else if (memchr(body, '\0', len) != NULL ||
			 !pg_verify_mbstr(GetDatabaseEncoding(), body, len, true))
		appendStringInfo(&buf, "\"[binary body of %d bytes]\"", len);
	else
	{
		JsonLexContext *lex = makeJsonLexContextCstringLen(body, len,
														   GetDatabaseEncoding(),
														   false);

		if (pg_parse_json(lex, &nullSemAction) == JSON_SUCCESS)
			appendBinaryStringInfo(&buf, body, len);
		else
			escape_json(&buf, body);
	}
	appendStringInfoChar(&buf, '}');

	out = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
	memset(&tc, 0, sizeof(tc));
	tc.secret_values = req->secret_values;
	return wf_template_redact_jsonb(&tc, out);
}

/* "503 from host: <body excerpt>", redacted. */
char *
wf_http_error_message(WfHttpCompletion *c)
{
	WfHttpRequest *req = c->request;
	WfTemplateCtx tc;
	char	   *msg;

	memset(&tc, 0, sizeof(tc));
	tc.secret_values = req->secret_values;
	if (c->error != NULL)
		msg = psprintf("%s %s: %s", req->method, req->url, c->error);
	else
	{
		/* Redacted first: a secret cut by the excerpt's end would not match. */
		char	   *body = req->response.data;
		int			len = req->response.len;
		char	   *excerpt;
		int			n;

		if (memchr(body, '\0', len) != NULL ||
			!pg_verify_mbstr(GetDatabaseEncoding(), body, len, true))
			excerpt = "[binary]";
		else
		{
			body = wf_template_redact(&tc, body);
			len = strlen(body);
			n = pg_mbcliplen(body, len, 200);
			excerpt = pnstrdup(body, n);
		}
		msg = psprintf("%s %s answered %d%s%s", req->method, req->url, c->status,
					   len > 0 ? ": " : "", len > 0 ? excerpt : "");
	}
	return wf_template_redact(&tc, msg);
}

/* The key of the rate limit this completion's step took a token of, or NULL. */
char *
wf_http_rate_key(WfHttpCompletion *c)
{
	return c->request->rate_key;
}

/* The host whose circuit breaker counts this completion, or NULL. */
char *
wf_http_breaker_key(WfHttpCompletion *c)
{
	return c->request->breaker_key;
}

/* Identity of the attempt a completion belongs to. */
void
wf_http_completion_key(WfHttpCompletion *c, int64 *run_id, char **step,
					   int *attempt, TimestampTz *started_at)
{
	*run_id = c->request->run_id;
	*step = c->request->step;
	*attempt = c->request->attempt;
	*started_at = c->request->started_at;
}
