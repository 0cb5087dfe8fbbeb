/*-------------------------------------------------------------------------
 *
 * step_flow.c
 *		The step kinds that hold other steps: "if", "parallel", "map" and
 *		"workflow" (a child run).
 *
 * A container does not run anything itself.  When it starts, it expands:
 * its children become rows of wf.step named by their path ("check/then-a",
 * "fan/branch/step", "each[3]"), with the container as parent, and run
 * like any step, in their lists' order or dependencies.  When the last
 * child is done, wf._step_done completes the container with its output:
 * the taken branch's last output (if), {branch: last output} (parallel),
 * the array of the items' outputs in input order (map).  Containers nest
 * freely: a child may itself be a container.
 *
 * A "workflow" step starts a child run, as the parent's owner, and waits
 * durably for it; the child's end wakes it.  Cancelling the parent
 * cancels the child.  The checks of the four kinds' definitions, for
 * wf_validate, are here too.
 *
 * src/step_flow.c
 *
 *-------------------------------------------------------------------------
 */
#include "pg_workflow.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/json.h"

#include "validate_int.h"

/*
 * Calls an expanding SQL function and keeps the children ready now as the
 * outcome.
 */
static void
wf_flow_expand(WfStepResult *res, const char *sql, int nargs, Oid *types, Datum *args)
{
	bool		isnull;
	Datum		ready;

	if (SPI_execute_with_args(sql, nargs, types, args, NULL, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not expand a step: %s", sql);
	ready = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	res->outcome = WF_STEP_EXPANDED;
	res->ready = isnull ? (Datum) 0 : PointerGetDatum(PG_DETOAST_DATUM_COPY(ready));
	SPI_freetuptable(SPI_tuptable);
}

/* Expands the groups [{"steps": [...], "prefix": "..."}] under the step. */
static void
wf_flow_expand_groups(WfStepExec *ex, WfStepResult *res, const char *groups)
{
	Oid			types[3] = {INT8OID, TEXTOID, JSONBOID};
	Datum		args[3];

	args[0] = Int64GetDatum(ex->run_id);
	args[1] = CStringGetTextDatum(ex->step);
	args[2] = DirectFunctionCall1(jsonb_in, CStringGetDatum(groups));
	wf_flow_expand(res, "SELECT ready FROM wf._expand($1, $2, $3)", 3, types, args);
}

/* One group's JSON text: {"steps": <steps>, "prefix": "<path>/"}. */
static void
wf_flow_append_group(StringInfo buf, Jsonb *steps, const char *prefix)
{
	if (buf->len > 1)
		appendStringInfoString(buf, ", ");
	appendStringInfoString(buf, "{\"steps\": ");
	appendStringInfoString(buf, JsonbToCString(NULL, &steps->root, VARSIZE(steps)));
	appendStringInfoString(buf, ", \"prefix\": ");
	escape_json(buf, prefix);
	appendStringInfoChar(buf, '}');
}

/* if: {"if": PREDICATE, "then": [...], "else": [...]} */
void
wf_flow_if_execute(WfStepExec *ex, WfStepResult *res)
{
	char	   *predicate = wf_util_jsonb_get_text(ex->spec, "if");
	bool		taken = wf_exec_predicate(ex->context, predicate);
	Jsonb	   *branch = wf_util_jsonb_get(ex->spec, taken ? "then" : "else");
	StringInfoData buf;

	if (branch == NULL)
	{
		/* No else: nothing to run, no output. */
		res->outcome = WF_STEP_COMPLETED;
		res->output = NULL;
		return;
	}
	initStringInfo(&buf);
	appendStringInfoChar(&buf, '[');
	wf_flow_append_group(&buf, branch, psprintf("%s/", ex->step));
	appendStringInfoChar(&buf, ']');
	wf_flow_expand_groups(ex, res, buf.data);
}

/* parallel: [{"name": BRANCH, "steps": [...]}, ...] */
void
wf_flow_parallel_execute(WfStepExec *ex, WfStepResult *res)
{
	Jsonb	   *branches = wf_util_jsonb_get(ex->spec, "parallel");
	JsonbIterator *it = JsonbIteratorInit(&branches->root);
	JsonbValue	v;
	JsonbIteratorToken tok;
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '[');
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		Jsonb	   *branch;

		if (tok != WJB_ELEM)
			continue;
		branch = JsonbValueToJsonb(&v);
		wf_flow_append_group(&buf, wf_util_jsonb_get(branch, "steps"),
							 psprintf("%s/%s/", ex->step,
									  wf_util_jsonb_get_text(branch, "name")));
	}
	appendStringInfoChar(&buf, ']');
	wf_flow_expand_groups(ex, res, buf.data);
}

/* map: {"over": PATH, "step": {...}, "concurrency": N} */
void
wf_flow_map_execute(WfStepExec *ex, WfStepResult *res)
{
	Jsonb	   *map = wf_util_jsonb_get(ex->spec, "map");
	char	   *over = wf_util_jsonb_get_text(map, "over");
	double		concurrency = wf_util_jsonb_get_number(map, "concurrency", 0);
	Jsonb	   *items;
	Oid			types[5] = {INT8OID, TEXTOID, JSONBOID, JSONBOID, INT4OID};
	Datum		args[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	bool		isnull;

	/* The items: what the path finds in the context, which must be an array. */
	items = wf_exec_path_first(ex->context, over);
	if (items == NULL || !JB_ROOT_IS_ARRAY(items) || JB_ROOT_IS_SCALAR(items))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("\"over\" of map step \"%s\" does not give an array", ex->step),
				 errdetail("The path %s found %s in the run context.", over,
						   items == NULL ? "nothing" : "a value that is not an array")));
	if (JB_ROOT_COUNT(items) > wf_guc_max_map_items)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("map step \"%s\" has %u items, more than pg_workflow.max_map_items (%d)",
						ex->step, JB_ROOT_COUNT(items), wf_guc_max_map_items)));

	args[0] = Int64GetDatum(ex->run_id);
	args[1] = CStringGetTextDatum(ex->step);
	args[2] = JsonbPGetDatum(wf_util_jsonb_get(map, "step"));
	args[3] = JsonbPGetDatum(items);
	args[4] = Int32GetDatum((int) concurrency);
	nulls[4] = concurrency >= 1 ? ' ' : 'n';
	if (SPI_execute_with_args("SELECT ready FROM wf._expand_map($1, $2, $3, $4, $5)",
							  5, types, args, nulls, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not expand map step \"%s\"", ex->step);
	args[0] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	res->outcome = WF_STEP_EXPANDED;
	res->ready = isnull ? (Datum) 0 : PointerGetDatum(PG_DETOAST_DATUM_COPY(args[0]));
	SPI_freetuptable(SPI_tuptable);
}

/* workflow: "NAME", optional "input" (templated) */
void
wf_flow_workflow_execute(WfStepExec *ex, WfStepResult *res)
{
	Jsonb	   *input = wf_util_jsonb_get(ex->spec, "input");
	Oid			types[4] = {INT8OID, TEXTOID, TEXTOID, JSONBOID};
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	bool		isnull;
	int64		child;

	if (input != NULL)
	{
		WfTemplateCtx tc;

		memset(&tc, 0, sizeof(tc));
		tc.context = ex->context;
		tc.owner = ex->owner;	/* allow_secrets stays false */
		input = wf_template_render_jsonb(&tc, input);
	}
	args[0] = Int64GetDatum(ex->run_id);
	args[1] = CStringGetTextDatum(ex->step);
	args[2] = CStringGetTextDatum(wf_util_jsonb_get_text(ex->spec, "workflow"));
	args[3] = input ? JsonbPGetDatum(input) : (Datum) 0;
	nulls[3] = input ? ' ' : 'n';
	if (SPI_execute_with_args("SELECT wf._start_child($1, $2, $3, $4)", 4, types, args,
							  nulls, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not start the child run of step \"%s\"", ex->step);
	child = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1,
										&isnull));
	SPI_freetuptable(SPI_tuptable);
	wf_shmem_wake_at_commit();
	res->outcome = WF_STEP_WAITING;
	res->wake_at = 0;
	res->wait_key = psprintf("run:" INT64_FORMAT, child);
}

/* The child run ended (wf._child_ended left its outcome), or a spurious wake. */
void
wf_flow_workflow_resume(WfStepExec *ex, WfStepResult *res)
{
	char	   *status = wf_util_jsonb_get_text(ex->payload, "status");

	if (status == NULL)
	{
		res->outcome = WF_STEP_WAITING;
		res->wake_at = 0;
		res->wait_key = ex->wait_key;
		return;
	}
	if (strcmp(status, "completed") == 0)
	{
		res->outcome = WF_STEP_COMPLETED;
		res->output = wf_util_jsonb_get(ex->payload, "output");
		return;
	}
	res->outcome = WF_STEP_FAILED;
	res->error_class = WF_ERROR_PERMANENT;
	res->error_message = psprintf("child run %s %s: %s",
								  JsonbToCString(NULL, &wf_util_jsonb_get(ex->payload, "run")->root, 0),
								  status,
								  wf_util_jsonb_get_text(wf_util_jsonb_get(ex->payload, "error"),
														 "message") ?: "no message");
}

/* ----------------------------------------------------------------
 * The checks of the actions, for wf_validate (kinds.c)
 * ----------------------------------------------------------------
 */

/* The step keys that go with "workflow": its input, any JSON. */
const WfvMember wf_flow_workflow_companions[] = {
	{"input", false, wfv_check_templates},
	{NULL}
};

/* "workflow": NAME */
void
wf_flow_workflow_check(WfvState *st, WfvObject *o, const char *path,
					   JsonbValue *v)
{
	char	   *name = wfv_string(st, o->label, path, v, false);

	if (name != NULL)
		(void) wfv_check_name(st, o->label, path, name, false);
}

static void
wf_flow_check_then(WfvState *st, WfvObject *o, const char *path,
				   JsonbValue *v)
{
	wfv_step_array(st, o, path, v, true);
}

static void
wf_flow_check_else(WfvState *st, WfvObject *o, const char *path,
				   JsonbValue *v)
{
	wfv_step_array(st, o, path, v, false);
}

/* The step keys that go with "if": its branches. */
const WfvMember wf_flow_if_companions[] = {
	{"then", true, wf_flow_check_then},
	{"else", false, wf_flow_check_else},
	{NULL}
};

/* "if": PREDICATE */
void
wf_flow_if_check(WfvState *st, WfvObject *o, const char *path, JsonbValue *v)
{
	(void) wfv_jsonpath(st, o->label, path, v);
}

/* "parallel": [{"name": BRANCH, "steps": [steps]}, ...] */
void
wf_flow_parallel_check(WfvState *st, WfvObject *o, const char *path,
					   JsonbValue *v)
{
	static const char *const keys[] = {"name", "steps", NULL};
	JsonbContainer *c;
	char	  **seen;
	int			nseen = 0;
	uint32		n;

	if (!wfv_is_array(v) || JsonContainerSize(v->val.binary.data) == 0)
	{
		wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" must be a non-empty array", path);
		return;
	}

	c = v->val.binary.data;
	n = JsonContainerSize(c);
	seen = palloc(sizeof(char *) * n);
	for (uint32 i = 0; i < n && !st->stop; i++)
	{
		JsonbValue *b = getIthJsonbValueFromContainer(c, i);
		WfvObject	branch = *o;
		JsonbValue	jv;
		JsonbValue *m;
		char	   *name;

		if (!wfv_is_object(b))
		{
			wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
						"branch #%u must be a JSON object", i + 1);
			continue;
		}

		branch.label = psprintf("%s, branch #%u", o->label, i + 1);
		branch.within = NULL;
		branch.obj = b->val.binary.data;

		if ((m = wfv_member(st, branch.label, branch.obj, "name", "name",
							true, &jv)) &&
			(name = wfv_string(st, branch.label, "name", m, false)) &&
			wfv_check_name(st, branch.label, "name", name, true))
		{
			for (int j = 0; j < nseen; j++)
			{
				if (strcmp(seen[j], name) == 0)
				{
					wfv_problem(st, o->label, ERRCODE_DUPLICATE_OBJECT,
								"branch name \"%s\" is used more than once",
								name);
					break;
				}
			}
			seen[nseen++] = name;
			branch.label = psprintf("%s, branch \"%s\"", o->label, name);
		}

		wfv_unknown_keys(st, branch.label, branch.obj, keys, 0, NULL);
		if ((m = wfv_member(st, branch.label, branch.obj, "steps", "steps",
							true, &jv)))
			wfv_step_array(st, &branch, "steps", m, true);
	}
}

/* A map's "step": one step, its items' */
static void
wf_flow_check_map_step(WfvState *st, WfvObject *o, const char *path,
					   JsonbValue *v)
{
	wfv_nested(st, o, path, &v, 1, true);
}

static const WfvMember wf_flow_map_members[] = {
	{"over", true, wfv_check_jsonpath},
	{"step", true, wf_flow_check_map_step},
	{"concurrency", false, wfv_check_count},
	{NULL}
};

/* "map": {"over": PATH, "step": step, "concurrency": N} */
void
wf_flow_map_check(WfvState *st, WfvObject *o, const char *path, JsonbValue *v)
{
	JsonbContainer *c = wfv_object(st, o->label, path, v);

	if (c != NULL)
		wfv_members(st, o, c, path, wf_flow_map_members);
}
