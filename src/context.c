/*-------------------------------------------------------------------------
 *
 * context.c
 *		Builds the run context a step is given: {"input", "steps", "run"}
 *		and, in a map item, its "item" and "index".
 *
 * The context holds the outputs of the run's named steps, which may be
 * large: a map over a step's 100,000-item output gives each item a context
 * holding that output.  Built with jsonb_object_agg() and
 * jsonb_build_object(), every item would decompress the output and walk it
 * value by value twice, so that an item cost grew with the size of its
 * map.  Here the context is assembled from the binary containers as they
 * are: a container moves into the new value with one copy of its bytes
 * (jsonb's binary format is position independent once aligned to 4 bytes,
 * see utils/jsonb.h), and each toasted value is fetched and decompressed
 * once per executor batch, then taken from a cache keyed by its toast
 * pointer, which names one immutable value for as long as it exists.  The
 * cache lives in the batch's memory context and is forgotten with it; the
 * context is written in one buffer kept from step to step.
 *
 * src/context.c
 *
 *-------------------------------------------------------------------------
 */
#include "pg_workflow.h"

#include "access/detoast.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"

/* One key and value of an object being built. */
typedef struct WfCtxPair
{
	const char *key;
	int			keylen;
	int			order;			/* among equal keys, the highest wins */
	JsonbValue	value;			/* a scalar, or jbvBinary ... */
	struct WfCtxPair *sub;		/* ... unless this is not NULL: an object */
	int			nsub;			/* of these pairs */
} WfCtxPair;

/* A toasted value fetched in this batch. */
typedef struct WfCtxCached
{
	Oid			toastrelid;
	Oid			valueid;
	Jsonb	   *value;
} WfCtxCached;

/* Values larger than this together are fetched anew for each step. */
#define WF_CTX_CACHE_BYTES	(64 * 1024 * 1024)

static MemoryContext wf_ctx_cachectx = NULL;
static List *wf_ctx_cache = NIL;
static Size wf_ctx_cached_bytes = 0;

static SPIPlanPtr wf_ctx_plan = NULL;

/*
 * The buffer the context is written in, kept from one step to the next: a
 * large context allocated anew for each step would be new pages for the
 * kernel to fault in each time.  Given back at the end of a batch when it
 * has grown past this.
 */
#define WF_CTX_KEEP_BYTES	(1024 * 1024)
static StringInfoData wf_ctx_out = {NULL, 0, 0, 0};

/*
 * A batch begins (cxt: its memory, reset when it ends) or ends (NULL): the
 * cache starts empty.
 */
void
wf_ctx_batch(MemoryContext cxt)
{
	wf_ctx_cachectx = cxt;
	wf_ctx_cache = NIL;
	wf_ctx_cached_bytes = 0;
	if (cxt == NULL && wf_ctx_out.data != NULL && wf_ctx_out.maxlen > WF_CTX_KEEP_BYTES)
	{
		pfree(wf_ctx_out.data);
		wf_ctx_out.data = NULL;
	}
}

/*
 * The jsonb value of a datum that SPI returned, detoasted: a value stored
 * out of line comes from the cache, or is fetched into it.
 */
static Jsonb *
wf_ctx_detoast(Datum d)
{
	struct varlena *v = (struct varlena *) DatumGetPointer(d);
	struct varatt_external ext;
	WfCtxCached *c;
	MemoryContext old;
	ListCell   *lc;

	if (!VARATT_IS_EXTERNAL_ONDISK(v) || wf_ctx_cachectx == NULL)
		return DatumGetJsonbP(d);

	VARATT_EXTERNAL_GET_POINTER(ext, v);
	foreach(lc, wf_ctx_cache)
	{
		c = (WfCtxCached *) lfirst(lc);
		if (c->valueid == ext.va_valueid && c->toastrelid == ext.va_toastrelid)
			return c->value;
	}
	if (wf_ctx_cached_bytes + VARATT_EXTERNAL_GET_EXTSIZE(ext) > WF_CTX_CACHE_BYTES)
		return DatumGetJsonbP(d);

	old = MemoryContextSwitchTo(wf_ctx_cachectx);
	c = palloc(sizeof(WfCtxCached));
	c->toastrelid = ext.va_toastrelid;
	c->valueid = ext.va_valueid;
	c->value = (Jsonb *) detoast_attr(v);
	wf_ctx_cache = lappend(wf_ctx_cache, c);
	MemoryContextSwitchTo(old);
	wf_ctx_cached_bytes += VARSIZE(c->value);
	return c->value;
}

/* v: a jsonb document as a value of a container (scalar or jbvBinary). */
static void
wf_ctx_value(Jsonb *jb, JsonbValue *v)
{
	if (JB_ROOT_IS_SCALAR(jb))
	{
		if (!JsonbExtractScalar(&jb->root, v))
			elog(ERROR, "could not read a jsonb scalar");
	}
	else
	{
		v->type = jbvBinary;
		v->val.binary.data = &jb->root;
		v->val.binary.len = VARSIZE(jb) - VARHDRSZ;
	}
}

/* How many bytes v takes at most in a container. */
static Size
wf_ctx_value_size(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvString:
			return v->val.string.len;
		case jbvNumeric:
			return VARSIZE_ANY(v->val.numeric) + 3;
		case jbvBinary:
			return v->val.binary.len + 3;
		default:
			return 0;
	}
}

/* Pads buf to a multiple of 4 bytes; returns the padding. */
static int
wf_ctx_pad(StringInfo buf)
{
	int			pad = INTALIGN(buf->len) - buf->len;

	if (pad > 0)
		appendBinaryStringInfo(buf, "\0\0\0", pad);
	return pad;
}

/* Appends the data of v to buf; returns its JEntry (type and length). */
static JEntry
wf_ctx_put_value(StringInfo buf, JsonbValue *v)
{
	int			pad;

	switch (v->type)
	{
		case jbvNull:
			return JENTRY_ISNULL;
		case jbvBool:
			return v->val.boolean ? JENTRY_ISBOOL_TRUE : JENTRY_ISBOOL_FALSE;
		case jbvString:
			appendBinaryStringInfo(buf, v->val.string.val, v->val.string.len);
			return (JEntry) v->val.string.len;
		case jbvNumeric:
			pad = wf_ctx_pad(buf);
			appendBinaryStringInfo(buf, (char *) v->val.numeric,
								   VARSIZE_ANY(v->val.numeric));
			return JENTRY_ISNUMERIC | (pad + VARSIZE_ANY(v->val.numeric));
		case jbvBinary:
			pad = wf_ctx_pad(buf);
			appendBinaryStringInfo(buf, (char *) v->val.binary.data,
								   v->val.binary.len);
			return JENTRY_ISCONTAINER | (pad + v->val.binary.len);
		default:
			elog(ERROR, "unexpected jsonb value type %d", (int) v->type);
	}
	return 0;					/* keep compiler quiet */
}

/* jsonb's key order: shorter first, then bytewise; the later pair first. */
static int
wf_ctx_pair_cmp(const void *a, const void *b)
{
	const WfCtxPair *pa = (const WfCtxPair *) a;
	const WfCtxPair *pb = (const WfCtxPair *) b;

	if (pa->keylen != pb->keylen)
		return pa->keylen > pb->keylen ? 1 : -1;
	if (pa->keylen > 0)
	{
		int			r = memcmp(pa->key, pb->key, pa->keylen);

		if (r != 0)
			return r;
	}
	return pa->order > pb->order ? -1 : (pa->order < pb->order ? 1 : 0);
}

/* Sorts the pairs in jsonb's key order; of equal keys, keeps the highest order. */
static int
wf_ctx_sort(WfCtxPair *pairs, int n)
{
	int			i,
				j;

	if (n > 1)
		qsort(pairs, n, sizeof(WfCtxPair), wf_ctx_pair_cmp);
	for (i = 0, j = 0; i < n; i++)
	{
		/* Of equal keys, sorted highest order first, the first stays. */
		if (j > 0 && pairs[i].keylen == pairs[j - 1].keylen &&
			memcmp(pairs[i].key, pairs[j - 1].key, pairs[i].keylen) == 0)
			continue;
		pairs[j++] = pairs[i];
	}
	return j;
}

/* How many bytes an object of the (sorted) pairs takes at most. */
static Size
wf_ctx_object_size(WfCtxPair *pairs, int n)
{
	Size		size = 3 + sizeof(uint32);
	int			i;

	for (i = 0; i < n; i++)
		size += 2 * sizeof(JEntry) + pairs[i].keylen +
			(pairs[i].sub != NULL ? wf_ctx_object_size(pairs[i].sub, pairs[i].nsub) :
			 wf_ctx_value_size(&pairs[i].value));
	return size;
}

/*
 * Appends an object of the (sorted) pairs to buf, as convertJsonbObject()
 * would; returns its JEntry (the padding before it counts in its length).
 */
static JEntry
wf_ctx_put_object(StringInfo buf, WfCtxPair *pairs, int n)
{
	int			base = buf->len;
	uint32		header;
	int			jentries;
	int			totallen = 0;
	int			i;

	wf_ctx_pad(buf);
	header = (uint32) n | JB_FOBJECT;
	appendBinaryStringInfo(buf, (char *) &header, sizeof(uint32));
	jentries = buf->len;
	enlargeStringInfo(buf, 2 * n * sizeof(JEntry));
	buf->len += 2 * n * sizeof(JEntry);

	for (i = 0; i < 2 * n; i++)
	{
		JEntry		meta;

		if (i < n)
		{
			appendBinaryStringInfo(buf, pairs[i].key, pairs[i].keylen);
			meta = (JEntry) pairs[i].keylen;
		}
		else if (pairs[i - n].sub != NULL)
			meta = wf_ctx_put_object(buf, pairs[i - n].sub, pairs[i - n].nsub);
		else
			meta = wf_ctx_put_value(buf, &pairs[i - n].value);
		totallen += JBE_OFFLENFLD(meta);
		if (totallen > JENTRY_OFFLENMASK)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("total size of jsonb object elements exceeds the maximum of %u bytes",
							JENTRY_OFFLENMASK)));
		if (i % JB_OFFSET_STRIDE == 0)
			meta = (meta & JENTRY_TYPEMASK) | totallen | JENTRY_HAS_OFF;
		memcpy(buf->data + jentries + i * sizeof(JEntry), &meta, sizeof(JEntry));
	}
	if (buf->len - base > JENTRY_OFFLENMASK)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("total size of jsonb object elements exceeds the maximum of %u bytes",
						JENTRY_OFFLENMASK)));
	return JENTRY_ISCONTAINER | (buf->len - base);
}

static void
wf_ctx_set_key(WfCtxPair *p, const char *key, int order)
{
	p->key = key;
	p->keylen = strlen(key);
	p->order = order;
}

/*
 * The run context of step `step` of run `run_id`, at its attempt
 * `attempt`, or NULL when it would take more than
 * pg_workflow.max_context_size (*size: the bytes it takes, or would take at
 * most): it is then not even written.  Must be called inside the
 * executor's SPI connection.  The value returned lives until the next call
 * (it is the buffer reused from step to step): the step being handled is
 * its only user.
 */
Jsonb *
wf_ctx_build(int64 run_id, const char *step, int attempt, Size *size)
{
	Datum		args[2];
	WfCtxPair  *steps;
	WfCtxPair	top[8];
	WfCtxPair	run[4];
	int			nsteps = 0;
	int			ntop = 0;
	Jsonb	   *input = NULL;
	Jsonb	   *item = NULL;
	char	   *workflow = NULL;
	int32		version = 0;
	uint64		i;

	if (wf_ctx_plan == NULL)
	{
		Oid			types[2] = {INT8OID, TEXTOID};

		/*
		 * The run's input, the step's item and the outputs of the named
		 * steps done, as stored: out-of-line values stay toast pointers.
		 * A fast-start plan: an index scan, which marks the entries of dead
		 * versions as such as it meets them (a bitmap scan does not), so
		 * that a container's row, updated often, does not leave a trail
		 * that every later context reads.
		 */
		wf_ctx_plan = SPI_prepare_cursor("SELECT 0, r.workflow, r.input, r.version FROM wf.run r"
								  " WHERE r.id = $1"
								  " UNION ALL"
								  " SELECT 1, NULL, s.item, NULL FROM wf.step s"
								  " WHERE s.run_id = $1 AND s.step = $2 AND s.item IS NOT NULL"
								  " UNION ALL"
								  " SELECT 2, s.label, s.output, s.ord FROM wf.step s"
								  " WHERE s.run_id = $1 AND s.label IS NOT NULL"
								  " AND s.status IN ('completed', 'skipped')",
								  2, types, CURSOR_OPT_FAST_PLAN);
		if (wf_ctx_plan == NULL || SPI_keepplan(wf_ctx_plan) != 0)
			elog(ERROR, "could not prepare the run context's query");
	}
	args[0] = Int64GetDatum(run_id);
	args[1] = CStringGetTextDatum(step);
	if (SPI_execute_plan(wf_ctx_plan, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the run context of run " INT64_FORMAT, run_id);

	steps = palloc0(sizeof(WfCtxPair) * Max(SPI_processed, 1));
	memset(top, 0, sizeof(top));
	memset(run, 0, sizeof(run));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	tupdesc = SPI_tuptable->tupdesc;
		bool		isnull;
		int32		k = DatumGetInt32(SPI_getbinval(tuple, tupdesc, 1, &isnull));
		Datum		value = SPI_getbinval(tuple, tupdesc, 3, &isnull);
		Jsonb	   *jb = isnull ? NULL : wf_ctx_detoast(value);

		if (k == 0)
		{
			workflow = TextDatumGetCString(SPI_getbinval(tuple, tupdesc, 2, &isnull));
			version = DatumGetInt32(SPI_getbinval(tuple, tupdesc, 4, &isnull));
			input = jb;
		}
		else if (k == 1)
			item = jb;
		else
		{
			WfCtxPair  *p = &steps[nsteps++];

			wf_ctx_set_key(p, TextDatumGetCString(SPI_getbinval(tuple, tupdesc, 2, &isnull)),
						   DatumGetInt32(SPI_getbinval(tuple, tupdesc, 4, &isnull)));
			if (jb == NULL)
				p->value.type = jbvNull;
			else
				wf_ctx_value(jb, &p->value);
		}
	}
	if (workflow == NULL)
		elog(ERROR, "run " INT64_FORMAT " does not exist", run_id);

	/* "run": {"id", "workflow", "version", "attempt"} */
	wf_ctx_set_key(&run[0], "id", 0);
	run[0].value.type = jbvNumeric;
	run[0].value.val.numeric = int64_to_numeric(run_id);
	wf_ctx_set_key(&run[1], "workflow", 0);
	run[1].value.type = jbvString;
	run[1].value.val.string.val = workflow;
	run[1].value.val.string.len = strlen(workflow);
	wf_ctx_set_key(&run[2], "version", 0);
	run[2].value.type = jbvNumeric;
	run[2].value.val.numeric = int64_to_numeric(version);
	wf_ctx_set_key(&run[3], "attempt", 0);
	run[3].value.type = jbvNumeric;
	run[3].value.val.numeric = int64_to_numeric(attempt);

	wf_ctx_set_key(&top[ntop], "input", 0);
	wf_ctx_value(input, &top[ntop++].value);
	wf_ctx_set_key(&top[ntop], "steps", 0);
	top[ntop].sub = steps;
	top[ntop++].nsub = wf_ctx_sort(steps, nsteps);
	wf_ctx_set_key(&top[ntop], "run", 0);
	top[ntop].sub = run;
	top[ntop++].nsub = wf_ctx_sort(run, 4);

	/* A map item's {"item", "index"}, over anything of the same name. */
	if (item != NULL && JB_ROOT_IS_OBJECT(item))
	{
		JsonbIterator *it = JsonbIteratorInit(&item->root);
		JsonbIteratorToken tok;
		JsonbValue	v;

		while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		{
			if (tok != WJB_KEY)
				continue;
			if (ntop == lengthof(top))
				elog(ERROR, "map item of step \"%s\" has too many keys", step);
			top[ntop].key = pnstrdup(v.val.string.val, v.val.string.len);
			top[ntop].keylen = v.val.string.len;
			top[ntop].order = 1;
			if (JsonbIteratorNext(&it, &top[ntop].value, true) != WJB_VALUE)
				elog(ERROR, "could not read the map item of step \"%s\"", step);
			ntop++;
		}
	}
	ntop = wf_ctx_sort(top, ntop);

	/* Written in the buffer kept from the step before. */
	*size = VARHDRSZ + wf_ctx_object_size(top, ntop);
	if (*size > (Size) wf_guc_max_context_size)
		return NULL;
	if (wf_ctx_out.data == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		initStringInfo(&wf_ctx_out);
		MemoryContextSwitchTo(old);
	}
	resetStringInfo(&wf_ctx_out);
	enlargeStringInfo(&wf_ctx_out, (int) *size);
	wf_ctx_out.len = VARHDRSZ;
	(void) wf_ctx_put_object(&wf_ctx_out, top, ntop);
	SET_VARSIZE(wf_ctx_out.data, wf_ctx_out.len);
	*size = wf_ctx_out.len;
	return (Jsonb *) wf_ctx_out.data;
}
