/*-------------------------------------------------------------------------
 *
 * exec_path.c
 *		The JSON paths of a definition evaluated: a "when" or "if"
 *		predicate on the run context, the first item a path finds (a map's
 *		"over", a template's {{ path }}), each in the step's sandbox.
 *
 * src/exec_path.c
 *
 *-------------------------------------------------------------------------
 */
#include "pg_workflow.h"

#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"

/*
 * Calls a jsonb_path_* function(target, path, '{}', false) in the step's
 * sandbox, as everything the definition's author wrote; *isnull is the
 * function's.
 */
static Datum
wf_exec_path_call(PGFunction fn, Jsonb *target, const char *path, bool *isnull)
{
	LOCAL_FCINFO(fcinfo, 4);
	Datum		result;
	WfSandbox	sb;

	wf_sandbox_enter(&sb);
	InitFunctionCallInfoData(*fcinfo, NULL, 4, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = JsonbPGetDatum(target);
	fcinfo->args[0].isnull = false;
	/* A malformed path raises here: the definition is at fault. */
	fcinfo->args[1].value = DirectFunctionCall1(jsonpath_in, CStringGetDatum(path));
	fcinfo->args[1].isnull = false;
	fcinfo->args[2].value = DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"));
	fcinfo->args[2].isnull = false;
	fcinfo->args[3].value = BoolGetDatum(false);
	fcinfo->args[3].isnull = false;
	result = fn(fcinfo);
	*isnull = fcinfo->isnull;
	wf_sandbox_exit(&sb);
	return result;
}

/*
 * Evaluates a "when" or "if" predicate on the context, jsonb_path_match()
 * style; an unknown (NULL) result counts as false.
 */
bool
wf_exec_predicate(Jsonb *context, const char *path)
{
	bool		isnull;
	Datum		result = wf_exec_path_call(jsonb_path_match, context, path, &isnull);

	return !isnull && DatumGetBool(result);
}

/*
 * The first item a JSON path finds in target (a template's or a map's
 * "over"), or NULL when it finds none.
 */
Jsonb *
wf_exec_path_first(Jsonb *target, const char *path)
{
	bool		isnull;
	Datum		result = wf_exec_path_call(jsonb_path_query_first, target, path,
										   &isnull);

	return isnull ? NULL : DatumGetJsonbP(result);
}
