/*-------------------------------------------------------------------------
 *
 * template_redact.c
 *		Redaction of secrets: the secret values a rendering used
 *		(template.c remembers them in WfTemplateCtx's secret_values) are
 *		hidden in whatever comes back, outputs and errors, as text or as
 *		jsonb.  Each value is looked for as it is, JSON-escaped (also with
 *		\u00e9-style escapes) and percent-encoded.
 *
 * src/template_redact.c
 *
 *-------------------------------------------------------------------------
 */

#include "pg_workflow.h"

#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "template_int.h"

/* What a redacted secret is replaced by. */
#define WF_TEMPLATE_REDACTED	"[redacted]"

/* Interrupts are checked every this many bytes of a scan. */
#define WF_TEMPLATE_CHECK_MASK	0xFFFF

/* One byte string to redact, with its KMP failure function. */
typedef struct WfTemplatePattern
{
	char	   *str;
	int			len;
	int		   *fail;
} WfTemplatePattern;

static int	wf_template_pattern_cmp(const void *a, const void *b);
static void wf_template_add_pattern(WfTemplatePattern *pats, int *npats,
									char *str, int len);
static WfTemplatePattern *wf_template_patterns(WfTemplateCtx *tc, int *npats);
static bool wf_template_pattern_occurs(WfTemplatePattern *pat,
									   const char *text, int len);
static char *wf_template_redact_buf(WfTemplatePattern *pats, int npats,
									const char *text, int len, int *outlen);


/* ----------------------------------------------------------------
 * Redaction
 * ----------------------------------------------------------------
 */

/*
 * Replace every secret value used by tc in text with "[redacted]".  Each
 * secret is looked for as it is, JSON-escaped (as it appears in JSON text)
 * and percent-encoded (as it appears in a URL).  Every byte covered by some
 * occurrence (overlapping ones included) is hidden, and each maximal run of
 * hidden bytes becomes one "[redacted]": a secret that contains another,
 * or overlaps it, leaks nothing.  Returns text itself when no secret
 * occurs in it.
 */
char *
wf_template_redact(WfTemplateCtx *tc, const char *text)
{
	WfTemplatePattern *pats;
	int			npats;
	char	   *result;
	int			outlen;
	Size		len;

	if (text == NULL)
		return NULL;
	pats = wf_template_patterns(tc, &npats);
	if (npats == 0)
		return (char *) text;

	len = strlen(text);
	if (len > MaxAllocSize)
		elog(ERROR, "text too long to redact");
	result = wf_template_redact_buf(pats, npats, text, (int) len, &outlen);

	return result != NULL ? result : (char *) text;
}

/*
 * wf_template_redact() for a jsonb document: inside every string, object
 * keys included.  Returns value itself when no secret occurs in it.
 */
Jsonb *
wf_template_redact_jsonb(WfTemplateCtx *tc, Jsonb *value)
{
	WfTemplatePattern *pats;
	int			npats;
	int			i;
	const char *data;
	int			datalen;
	JsonbParseState *state = NULL;
	JsonbIterator *it;
	JsonbIteratorToken tok;
	JsonbValue	v;
	JsonbValue *res = NULL;
	bool		changed = false;
	uint32		n = 0;

	if (value == NULL)
		return NULL;
	pats = wf_template_patterns(tc, &npats);
	if (npats == 0)
		return value;

	/*
	 * Strings (and keys) are stored unescaped and contiguous in the binary:
	 * when no pattern occurs in it, none occurs in any string.
	 */
	data = (const char *) &value->root;
	datalen = VARSIZE(value) - VARHDRSZ;
	for (i = 0; i < npats; i++)
	{
		if (wf_template_pattern_occurs(&pats[i], data, datalen))
			break;
	}
	if (i == npats)
		return value;

	it = JsonbIteratorInit(&value->root);
	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		if ((++n & 0xFFF) == 0)
			CHECK_FOR_INTERRUPTS();

		if ((tok == WJB_KEY || tok == WJB_VALUE || tok == WJB_ELEM) &&
			v.type == jbvString)
		{
			int			outlen;
			char	   *red = wf_template_redact_buf(pats, npats,
													 v.val.string.val,
													 v.val.string.len,
													 &outlen);

			if (red != NULL)
			{
				v.val.string.val = red;
				v.val.string.len = outlen;
				changed = true;
			}
		}
		res = pushJsonbValue(&state, tok,
							 tok < WJB_BEGIN_ARRAY ||
							 (tok == WJB_BEGIN_ARRAY && v.val.array.rawScalar) ?
							 &v : NULL);
	}

	if (!changed)
		return value;
	return JsonbValueToJsonb(res);
}

/* Longest first, then bytewise, for sorting and de-duplication. */
static int
wf_template_pattern_cmp(const void *a, const void *b)
{
	const WfTemplatePattern *pa = (const WfTemplatePattern *) a;
	const WfTemplatePattern *pb = (const WfTemplatePattern *) b;

	if (pa->len != pb->len)
		return pa->len > pb->len ? -1 : 1;
	return memcmp(pa->str, pb->str, pa->len);
}

/* Append a pattern with its KMP failure function. */
static void
wf_template_add_pattern(WfTemplatePattern *pats, int *npats, char *str,
						int len)
{
	WfTemplatePattern *pat = &pats[(*npats)++];
	int			k = 0;
	int			q;

	pat->str = str;
	pat->len = len;
	pat->fail = palloc(sizeof(int) * len);
	pat->fail[0] = 0;
	for (q = 1; q < len; q++)
	{
		while (k > 0 && str[k] != str[q])
			k = pat->fail[k - 1];
		if (str[k] == str[q])
			k++;
		pat->fail[q] = k;
	}
}

/*
 * Appends s JSON-escaped with every non-ASCII character as \u00e9-style escapes (with
 * lower- or upper-case hex digits), as many JSON encoders write it.
 * Returns false when s has no non-ASCII character (the form is then the
 * plain JSON-escaped one).
 */
static bool
wf_template_json_ascii(StringInfo out, const char *s, int len, bool upper)
{
	const unsigned char *p = (const unsigned char *) s;
	const unsigned char *end = p + len;
	bool		non_ascii = false;

	while (p < end)
	{
		if (*p < 0x80)
		{
			char		one[2] = {(char) *p, '\0'};
			StringInfoData e;

			initStringInfo(&e);
			escape_json(&e, one);
			appendBinaryStringInfo(out, e.data + 1, e.len - 2);
			pfree(e.data);
			p++;
		}
		else
		{
			int			n = pg_utf_mblen(p);
			pg_wchar	c;

			if (p + n > end)
				break;
			c = utf8_to_unicode(p);
			if (c > 0xFFFF)
			{
				c -= 0x10000;
				appendStringInfo(out, upper ? "\\u%04X\\u%04X" : "\\u%04x\\u%04x",
								 0xD800 + (c >> 10), 0xDC00 + (c & 0x3FF));
			}
			else
				appendStringInfo(out, upper ? "\\u%04X" : "\\u%04x", c);
			non_ascii = true;
			p += n;
		}
	}
	return non_ascii;
}

/*
 * The byte strings to redact for the secrets of tc: each non-empty value
 * as it is, JSON-escaped (also with \u00e9-style escapes for non-ASCII) and
 * percent-encoded; without duplicates, longest first.
 */
static WfTemplatePattern *
wf_template_patterns(WfTemplateCtx *tc, int *npats)
{
	WfTemplatePattern *pats;
	int			n = 0;
	int			i;
	int			j;
	ListCell   *lc;

	*npats = 0;
	if (tc == NULL || tc->secret_values == NIL)
		return NULL;

	pats = palloc(sizeof(WfTemplatePattern) * 5 * list_length(tc->secret_values));
	foreach(lc, tc->secret_values)
	{
		char	   *secret = (char *) lfirst(lc);
		int			len = strlen(secret);
		StringInfoData buf;

		if (len == 0)
			continue;
		wf_template_add_pattern(pats, &n, secret, len);

		/* JSON-escaped, without the quotes escape_json() adds */
		initStringInfo(&buf);
		escape_json(&buf, secret);
		if (buf.len - 2 != len)
			wf_template_add_pattern(pats, &n, pnstrdup(buf.data + 1, buf.len - 2),
									buf.len - 2);
		pfree(buf.data);

		/* JSON with \u00e9-style escapes, as Python's json.dumps writes it */
		if (GetDatabaseEncoding() == PG_UTF8)
		{
			bool		upper;

			for (upper = false;; upper = true)
			{
				initStringInfo(&buf);
				if (wf_template_json_ascii(&buf, secret, len, upper))
					wf_template_add_pattern(pats, &n, buf.data, buf.len);
				else
					pfree(buf.data);
				if (upper)
					break;
			}
		}

		/* percent-encoded, as in a rendered URL */
		initStringInfo(&buf);
		wf_template_url_escape(&buf, secret, len);
		if (buf.len != len)
			wf_template_add_pattern(pats, &n, buf.data, buf.len);
		else
			pfree(buf.data);
	}
	if (n == 0)
		return NULL;

	qsort(pats, n, sizeof(WfTemplatePattern), wf_template_pattern_cmp);
	for (i = 1, j = 1; i < n; i++)
	{
		if (wf_template_pattern_cmp(&pats[i], &pats[j - 1]) != 0)
			pats[j++] = pats[i];
	}
	*npats = j;
	return pats;
}

/*
 * Knuth-Morris-Pratt: the length of pattern pat matched after byte c, when
 * q bytes of it were matched before.
 */
static inline int
wf_template_kmp_next(const WfTemplatePattern *pat, int q, char c)
{
	while (q > 0 && pat->str[q] != c)
		q = pat->fail[q - 1];
	return pat->str[q] == c ? q + 1 : q;
}

/* Does pat occur in text (of len bytes)? */
static bool
wf_template_pattern_occurs(WfTemplatePattern *pat, const char *text, int len)
{
	int			q = 0;
	int			i;

	for (i = 0; i < len; i++)
	{
		if ((i & WF_TEMPLATE_CHECK_MASK) == 0)
			CHECK_FOR_INTERRUPTS();
		q = wf_template_kmp_next(pat, q, text[i]);
		if (q == pat->len)
			return true;
	}
	return false;
}

/*
 * Redact text (len bytes, not necessarily terminated): every byte covered
 * by an occurrence of a pattern is hidden, each maximal run of hidden bytes
 * replaced by "[redacted]".  Returns NULL when nothing is hidden, else a
 * new terminated string of *outlen bytes.  Linear in len for each pattern
 * (Knuth-Morris-Pratt; each byte is marked at most once per pattern).
 */
static char *
wf_template_redact_buf(WfTemplatePattern *pats, int npats, const char *text,
					   int len, int *outlen)
{
	bool	   *hidden = NULL;
	StringInfoData out;
	int			p;
	int			i;

	for (p = 0; p < npats; p++)
	{
		WfTemplatePattern *pat = &pats[p];
		int			q = 0;
		int			marked = 0; /* bytes below this are marked already */

		if (pat->len > len)
			continue;
		for (i = 0; i < len; i++)
		{
			if ((i & WF_TEMPLATE_CHECK_MASK) == 0)
				CHECK_FOR_INTERRUPTS();
			q = wf_template_kmp_next(pat, q, text[i]);
			if (q == pat->len)
			{
				int			j = Max(i - pat->len + 1, marked);

				if (hidden == NULL)
					hidden = palloc0(len);
				for (; j <= i; j++)
					hidden[j] = true;
				marked = i + 1;
				q = pat->fail[q - 1];
			}
		}
	}
	if (hidden == NULL)
		return NULL;

	initStringInfo(&out);
	i = 0;
	while (i < len)
	{
		int			start = i;

		if (hidden[i])
		{
			while (i < len && hidden[i])
				i++;
			appendStringInfoString(&out, WF_TEMPLATE_REDACTED);
			continue;
		}
		while (i < len && !hidden[i])
			i++;
		appendBinaryStringInfo(&out, text + start, i - start);
	}
	pfree(hidden);

	*outlen = out.len;
	return out.data;
}
