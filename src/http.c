/*-------------------------------------------------------------------------
 *
 * http.c
 *		The "http" step kind: requests made through one libcurl multi handle
 *		per executor, whose sockets and timer sit in the executor's own wait
 *		set next to its latch.  A request is prepared (its hosts, URL,
 *		breaker, rate limit and templates) in http_request.c; http_int.h is
 *		what the two files share.
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

#include "http_int.h"


/* libcurl's wish for one socket. */
typedef struct WfHttpSocket
{
	curl_socket_t fd;
	int			what;			/* CURL_POLL_IN/OUT/INOUT */
} WfHttpSocket;

static CURLM *wf_http_multi = NULL;
MemoryContext wf_http_ctx = NULL;

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
