/*-------------------------------------------------------------------------
 *
 * util.c
 *		Small helpers shared by the modules of pg_workflow: intervals,
 *		jsonb access and conversion, error classification.
 *
 * src/util.c
 *
 *-------------------------------------------------------------------------
 */
#include "pg_workflow.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

/*
 * Milliseconds in an interval given as text ('5m', '3 minutes'), months
 * counted as 30 days.  Raises on malformed input.
 */
int64
wf_util_interval_ms(const char *text)
{
	Interval   *iv;
	int64		usecs;

	iv = DatumGetIntervalP(DirectFunctionCall3(interval_in,
											   CStringGetDatum(text),
											   ObjectIdGetDatum(InvalidOid),
											   Int32GetDatum(-1)));
	usecs = iv->time + (int64) iv->day * USECS_PER_DAY +
		(int64) iv->month * DAYS_PER_MONTH * USECS_PER_DAY;
	return usecs / 1000;
}

/*
 * The value of key in a jsonb object, or NULL when absent (or not an
 * object).
 */
Jsonb *
wf_util_jsonb_get(Jsonb *obj, const char *key)
{
	JsonbValue	vbuf;
	JsonbValue *v;

	if (obj == NULL || !JB_ROOT_IS_OBJECT(obj))
		return NULL;
	v = getKeyJsonValueFromContainer(&obj->root, key, strlen(key), &vbuf);
	if (v == NULL)
		return NULL;
	return JsonbValueToJsonb(v);
}

/*
 * The string value of key in a jsonb object, or NULL when absent or not a
 * string.
 */
char *
wf_util_jsonb_get_text(Jsonb *obj, const char *key)
{
	JsonbValue	vbuf;
	JsonbValue *v;

	if (obj == NULL || !JB_ROOT_IS_OBJECT(obj))
		return NULL;
	v = getKeyJsonValueFromContainer(&obj->root, key, strlen(key), &vbuf);
	if (v == NULL || v->type != jbvString)
		return NULL;
	return pnstrdup(v->val.string.val, v->val.string.len);
}

/*
 * The numeric value of key in a jsonb object as a double, or dflt.
 */
double
wf_util_jsonb_get_number(Jsonb *obj, const char *key, double dflt)
{
	JsonbValue	vbuf;
	JsonbValue *v;

	if (obj == NULL || !JB_ROOT_IS_OBJECT(obj))
		return dflt;
	v = getKeyJsonValueFromContainer(&obj->root, key, strlen(key), &vbuf);
	if (v == NULL)
		return dflt;
	if (v->type == jbvNumeric)
		return DatumGetFloat8(DirectFunctionCall1(numeric_float8,
												  NumericGetDatum(v->val.numeric)));
	if (v->type == jbvBool)
		return v->val.boolean ? 1.0 : 0.0;
	return dflt;
}

/*
 * The text of a jsonb scalar string, or NULL for any other value.
 */
char *
wf_util_jsonb_scalar_text(Jsonb *value)
{
	JsonbValue	v;

	if (value == NULL || !JB_ROOT_IS_SCALAR(value) ||
		!JsonbExtractScalar(&value->root, &v) || v.type != jbvString)
		return NULL;
	return pnstrdup(v.val.string.val, v.val.string.len);
}

/*
 * A value of any type as jsonb, with to_jsonb()'s rules; NULL stays NULL.
 */
Jsonb *
wf_util_datum_to_jsonb(Datum value, Oid typid, bool isnull)
{
	FmgrInfo	flinfo;

	if (isnull)
		return NULL;
	if (typid == JSONBOID)
		return DatumGetJsonbPCopy(value);

	/* to_jsonb(anyelement) learns the argument's type from fn_expr. */
	fmgr_info(F_TO_JSONB, &flinfo);
	flinfo.fn_expr = (Node *) makeFuncExpr(F_TO_JSONB, JSONBOID,
										   list_make1(makeNullConst(typid, -1,
																	InvalidOid)),
										   InvalidOid, InvalidOid,
										   COERCE_EXPLICIT_CALL);
	return DatumGetJsonbP(FunctionCall1(&flinfo, value));
}

/*
 * Is the extension installed in the current database?  Executors keep
 * sleeping while it is not (before CREATE EXTENSION, after DROP EXTENSION).
 * Called first in a transaction: when it is there, it stays there until the
 * transaction ends, as a lock on it keeps DROP EXTENSION (which locks it
 * before its objects) waiting, rather than dropping the tables from under
 * the statements that follow.
 */
bool
wf_util_extension_ready(void)
{
	Oid			extoid = get_extension_oid(WF_EXTENSION_NAME, true);
	static bool warned = false;
	char	   *version;

	if (!OidIsValid(extoid))
		return false;
	LockDatabaseObject(ExtensionRelationId, extoid, 0, AccessShareLock);
	/* Dropped while we waited for the lock? */
	if (get_extension_oid(WF_EXTENSION_NAME, true) != extoid)
		return false;
	version = wf_util_extension_version(extoid);
	if (strcmp(version, WF_VERSION_STR) == 0)
	{
		warned = false;
		return true;
	}

	/*
	 * The library and the installed SQL disagree (a new library before
	 * ALTER EXTENSION ... UPDATE): the tables may not be what this code
	 * expects, so nothing is done until they agree.  Said once.
	 */
	if (!warned)
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_workflow executors are idle: the library is version %s, the extension installed in database \"%s\" is version %s",
						WF_VERSION_STR, get_database_name(MyDatabaseId), version),
				 errhint("Run ALTER EXTENSION pg_workflow UPDATE in that database, or install the library that matches it.")));
	warned = true;
	return false;
}

/* The installed version of the extension extoid. */
char *
wf_util_extension_version(Oid extoid)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	char	   *version = NULL;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(extoid));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
	{
		bool		isnull;
		Datum		d = heap_getattr(tuple, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		if (!isnull)
			version = TextDatumGetCString(d);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return version ? version : pstrdup("");
}

/*
 * Transient errors are worth retrying: concurrency conflicts, timeouts,
 * lack of resources, lost connections.  Everything else is permanent.
 */
WfErrorClass
wf_util_classify_sqlstate(int sqlerrcode)
{
	switch (ERRCODE_TO_CATEGORY(sqlerrcode))
	{
		case ERRCODE_TRANSACTION_ROLLBACK:	/* serialization, deadlock */
		case ERRCODE_INSUFFICIENT_RESOURCES:
		case ERRCODE_CONNECTION_EXCEPTION:
		case ERRCODE_SYSTEM_ERROR:
			return WF_ERROR_TRANSIENT;
		default:
			break;
	}
	switch (sqlerrcode)
	{
		case ERRCODE_LOCK_NOT_AVAILABLE:
		case ERRCODE_QUERY_CANCELED:	/* the step's timeout */
		case ERRCODE_ADMIN_SHUTDOWN:
		case ERRCODE_CANNOT_CONNECT_NOW:
			return WF_ERROR_TRANSIENT;
		default:
			return WF_ERROR_PERMANENT;
	}
}

/*
 * Runs one of the engine's statements (plan, or sql with nargs args) that
 * returns at most one row, in an internal subtransaction of its own, with
 * SPI connected by the caller: an engine task whose failure must not undo
 * or stop the rest of the executor's transaction.  Returns NULL on success,
 * with *result the int4 of the first column (0 when NULL or absent); on
 * error the subtransaction is rolled back and the error is returned, in the
 * caller's memory context, for the caller to report.
 */
ErrorData *
wf_util_try_spi(SPIPlanPtr plan, const char *sql, int nargs, Oid *argtypes,
				Datum *args, int32 *result)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;

	*result = 0;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcontext);
	PG_TRY();
	{
		int			ret;
		bool		isnull;

		ret = plan != NULL ?
			SPI_execute_plan(plan, args, NULL, false, 1) :
			SPI_execute_with_args(sql, nargs, argtypes, args, NULL, false, 1);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "could not execute \"%s\": %s",
				 sql ? sql : "a prepared statement", SPI_result_code_string(ret));
		if (SPI_processed == 1 && SPI_tuptable->tupdesc->natts >= 1 &&
			SPI_gettypeid(SPI_tuptable->tupdesc, 1) == INT4OID)
		{
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0],
										  SPI_tuptable->tupdesc, 1, &isnull);

			*result = isnull ? 0 : DatumGetInt32(d);
		}
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcontext);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcontext);
	CurrentResourceOwner = oldowner;
	return edata;
}

/*
 * Milliseconds from now until when, rounded up, for a latch wait; 0 once
 * it has passed.
 */
long
wf_util_ms_until(TimestampTz when)
{
	long		secs;
	int			usecs;

	TimestampDifference(GetCurrentTimestamp(), when, &secs, &usecs);
	return secs * 1000 + (usecs + 999) / 1000;
}
