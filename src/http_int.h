/*-------------------------------------------------------------------------
 *
 * http_int.h
 *		What the http step kind's two files share: a request, as prepared
 *		(http_request.c) and as sent and finished (http.c).
 *
 * src/http_int.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_WORKFLOW_HTTP_INT_H
#define PG_WORKFLOW_HTTP_INT_H

#include "pg_workflow.h"

#include <curl/curl.h>

#include "lib/stringinfo.h"

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

/* The executor's http memory: requests' own contexts are its children. */
extern MemoryContext wf_http_ctx;

/* http_request.c */
extern bool wf_http_host_allowed(const char *host);

#endif							/* PG_WORKFLOW_HTTP_INT_H */
