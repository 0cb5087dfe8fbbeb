/*-------------------------------------------------------------------------
 *
 * kinds.c
 *		The one table of step kinds, used by validation, planning,
 *		compensation and execution alike.
 *
 * A step's kind is its action key: exactly one of the names below is a key
 * of the step's object.  For each kind the table says whether the engine
 * implements it, whether it holds steps of its own (a container, expanded
 * into child steps), whether it may be the "compensate" action of a saga
 * step, whether an attempt ends outside the executor's transaction, how it
 * executes and resumes, how its value is checked and which step keys go
 * with it (its companions, such as "payload" of "agent"): the functions
 * and tables named here live in the kind's own file, its checks beside its
 * execution.  The SQL side asks through wf._step_kind(), so that no list
 * of names is written twice.
 *
 * Containers cannot compensate: a compensation is one step of the run,
 * named compensate:STEP, run in the reverse order of completion; to undo
 * with several steps, a saga compensates with a "workflow" step.
 *
 * src/kinds.c
 *
 *-------------------------------------------------------------------------
 */
#include "pg_workflow.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "validate_int.h"

/*
 * In the order in which wf_validate lists the actions it expects; "until"
 * is the short form of "sleep" and shares its functions.
 */
const WfStepKind wf_step_kinds[] = {
	/* name, alias_of, supported, container, compensates, async, calls_out, ... */
	{"sql", NULL, true, false, true, false, false,
	wf_sql_execute, NULL, wf_sql_check, NULL},
	{"http", NULL, true, false, true, true, true,
	wf_http_execute, NULL, wf_http_check, NULL},
	{"agent", NULL, true, false, true, true, true,
	wf_agent_execute, NULL, wf_agent_check, wf_agent_companions},
	{"wait_for", NULL, true, false, true, false, false,
	wf_wait_for_execute, wf_wait_for_resume, wf_wait_for_check, NULL},
	{"human", NULL, true, false, true, false, false,
	wf_wait_human_execute, wf_wait_human_resume, wf_wait_human_check, NULL},
	{"sleep", NULL, true, false, true, false, false,
	wf_wait_sleep_execute, wf_wait_sleep_resume, wf_wait_sleep_check, NULL},
	{"workflow", NULL, true, false, true, false, false,
	wf_flow_workflow_execute, wf_flow_workflow_resume, wf_flow_workflow_check,
	wf_flow_workflow_companions},
	{"if", NULL, true, true, false, false, false,
	wf_flow_if_execute, NULL, wf_flow_if_check, wf_flow_if_companions},
	{"parallel", NULL, true, true, false, false, false,
	wf_flow_parallel_execute, NULL, wf_flow_parallel_check, NULL},
	{"map", NULL, true, true, false, false, false,
	wf_flow_map_execute, NULL, wf_flow_map_check, NULL},
	{"until", "sleep", true, false, true, false, false,
	wf_wait_sleep_execute, wf_wait_sleep_resume, wf_wait_sleep_check, NULL},
};

const int	wf_step_nkinds = lengthof(wf_step_kinds);

PG_FUNCTION_INFO_V1(wf_step_kind);

/*
 * The kind named by the first len bytes of name, or NULL.
 */
const WfStepKind *
wf_kind_find(const char *name, int len)
{
	int			i;

	for (i = 0; i < wf_step_nkinds; i++)
		if (strlen(wf_step_kinds[i].name) == len &&
			memcmp(wf_step_kinds[i].name, name, len) == 0)
			return &wf_step_kinds[i];
	return NULL;
}

/*
 * The kind that decides what an alias may do ("sleep" for "until").
 */
const WfStepKind *
wf_kind_base(const WfStepKind *kind)
{
	if (kind->alias_of == NULL)
		return kind;
	return wf_kind_find(kind->alias_of, strlen(kind->alias_of));
}

/*
 * The kind the executor runs a step of, or NULL when it has none (not
 * implemented, or not a kind at all).
 */
const WfStepKind *
wf_exec_find_kind(const char *name)
{
	const WfStepKind *kind = wf_kind_find(name, strlen(name));

	if (kind == NULL || kind->execute == NULL || !wf_kind_base(kind)->supported)
		return NULL;
	return kind;
}

/*
 * The kind of a step given by its object, or NULL unless the object has
 * exactly one action and its kind is implemented (and, for a compensate
 * action, may compensate).
 */
const WfStepKind *
wf_kind_of_step(Jsonb *spec, bool compensate)
{
	const WfStepKind *found = NULL;
	JsonbValue	v;
	int			i;

	if (spec == NULL || !JB_ROOT_IS_OBJECT(spec))
		return NULL;
	for (i = 0; i < wf_step_nkinds; i++)
	{
		const char *name = wf_step_kinds[i].name;

		if (getKeyJsonValueFromContainer(&spec->root, name, strlen(name), &v) == NULL)
			continue;
		if (found != NULL)
			return NULL;		/* more than one action */
		found = &wf_step_kinds[i];
	}
	if (found == NULL || !wf_kind_base(found)->supported ||
		(compensate && !wf_kind_base(found)->compensates))
		return NULL;
	return found;
}

/*
 * wf._step_kind(spec jsonb, compensate boolean DEFAULT false) RETURNS text
 *
 * The action key of a step's object, which is its kind; NULL when the
 * object is not a step the engine can run (no action, several actions, a
 * kind the engine does not run) or, with compensate, not a step that may undo
 * another.  Planning, expansion and compensation call it, so that every
 * step row gets its kind from the table above.
 */
Datum
wf_step_kind(PG_FUNCTION_ARGS)
{
	const WfStepKind *kind;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	kind = wf_kind_of_step(PG_GETARG_JSONB_P(0),
						   !PG_ARGISNULL(1) && PG_GETARG_BOOL(1));
	if (kind == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(kind->name));
}
