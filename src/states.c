/*-------------------------------------------------------------------------
 *
 * states.c
 *		The states a run, a step and an agent's task can be in: the checks
 *		of the tables' state columns (wf.run.status, wf.step.status,
 *		wf.task.state).
 *
 * A CHECK constraint is read back from its stored text (stringToNode) and
 * simplified again by every statement that writes its table: for an IN
 * list of ten strings, some 30 us an UPDATE, on the engine's hottest
 * statements.  A call of one of these functions is a node of a few words,
 * and the list is here, once.
 *
 * src/states.c
 *
 *-------------------------------------------------------------------------
 */
#include "pg_workflow.h"

#include "fmgr.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(wf_run_status_ok);
PG_FUNCTION_INFO_V1(wf_step_status_ok);
PG_FUNCTION_INFO_V1(wf_task_state_ok);

static const char *const wf_run_states[] = {
	"pending", "running", "waiting", "completed", "failed", "cancelled", NULL
};

static const char *const wf_step_states[] = {
	"pending", "ready", "running", "waiting", "completed", "failed", "skipped",
	"escalated", "compensated", "cancelled", NULL
};

static const char *const wf_task_states[] = {
	"ready", "claimed", "completed", "failed", "expired", "cancelled", NULL
};

/* Is the text value one of states? */
static bool
wf_state_in(text *value, const char *const *states)
{
	const char *v = VARDATA_ANY(value);
	int			len = VARSIZE_ANY_EXHDR(value);

	for (; *states != NULL; states++)
		if (strlen(*states) == len && memcmp(*states, v, len) == 0)
			return true;
	return false;
}

/* wf._run_status_ok(text): a state of a run? */
Datum
wf_run_status_ok(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(wf_state_in(PG_GETARG_TEXT_PP(0), wf_run_states));
}

/* wf._step_status_ok(text): a state of a step? */
Datum
wf_step_status_ok(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(wf_state_in(PG_GETARG_TEXT_PP(0), wf_step_states));
}

/* wf._task_state_ok(text): a state of an agent's task? */
Datum
wf_task_state_ok(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(wf_state_in(PG_GETARG_TEXT_PP(0), wf_task_states));
}
