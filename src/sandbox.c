/*-------------------------------------------------------------------------
 *
 * sandbox.c
 *		The sandbox in which every piece of user-controlled code that a step
 *		evaluates runs: its statement, the functions, casts and operators it
 *		reaches, the conversion of its result to jsonb, "when" predicates,
 *		template and "over" paths.
 *
 * The executors are superuser processes.  User code runs in them exactly as
 * PostgreSQL runs the code of an index expression during a maintenance
 * command (see DefineIndex and vacuum_rel) or of a SECURITY DEFINER
 * function (fmgr_security_definer):
 *
 *	- as the run's owner, with SECURITY_LOCAL_USERID_CHANGE and
 *	  SECURITY_RESTRICTED_OPERATION: no SET ROLE or SET SESSION
 *	  AUTHORIZATION back to the executor's role, no temporary tables,
 *	  prepared statements, held cursors, LISTEN or DISCARD;
 *	- under the owner's search_path, in a GUC nesting level of its own that
 *	  is always unwound with AtEOXact_GUC(false, ...): every setting the
 *	  code changes (SET, SET LOCAL, set_config(..., false), RESET ALL) is
 *	  undone when it ends, whether it committed or not;
 *	- with the session-level advisory locks it took released when the step
 *	  ends (the engine itself takes only transaction-level ones).
 *
 * The identity is set by the executor for the step it is handling
 * (wf_sandbox_begin_step) and cleared after it; entering the sandbox
 * without one is an internal error, so that no code path can run user code
 * as the executor by forgetting to say as whom.
 *
 * On an error, the step's subtransaction abort restores the user id,
 * security context and GUC nesting level as they were when it began; the
 * executor then calls wf_sandbox_end_step(), which releases the locks.
 *
 * src/sandbox.c
 *
 *-------------------------------------------------------------------------
 */
#include "pg_workflow.h"

#include "catalog/pg_authid.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

/* The identity of the step being handled, or InvalidOid. */
static Oid	wf_sandbox_owner = InvalidOid;
static char *wf_sandbox_path = NULL;
static int64 wf_sandbox_run = 0;

/*
 * The executor is about to handle a step of run_id owned by owner, whose
 * statements resolve names through search_path.
 */
void
wf_sandbox_begin_step(int64 run_id, Oid owner, const char *search_path)
{
	if (wf_sandbox_path != NULL)
		pfree(wf_sandbox_path);
	wf_sandbox_path = MemoryContextStrdup(TopMemoryContext,
										  search_path ? search_path : "");
	wf_sandbox_owner = owner;
	wf_sandbox_run = run_id;
}

/*
 * The step has been handled, successfully or not: forget its identity and
 * release the session-level advisory locks its code took.
 */
void
wf_sandbox_end_step(void)
{
	wf_sandbox_owner = InvalidOid;
	wf_sandbox_run = 0;
	LockReleaseSession(USER_LOCKMETHOD);
}

/* The owner of the step being handled, or InvalidOid. */
Oid
wf_sandbox_current_owner(void)
{
	return wf_sandbox_owner;
}

/*
 * Enter the sandbox of the current step.  Must be paired with
 * wf_sandbox_exit() on success; on error, the enclosing subtransaction's
 * abort undoes it.
 */
void
wf_sandbox_enter(WfSandbox *sb)
{
	if (!OidIsValid(wf_sandbox_owner))
		elog(ERROR, "pg_workflow: user code evaluated outside a step's sandbox");
	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(wf_sandbox_owner)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role %u that owns run " INT64_FORMAT " does not exist",
						wf_sandbox_owner, wf_sandbox_run)));

	GetUserIdAndSecContext(&sb->save_userid, &sb->save_sec_context);
	SetUserIdAndSecContext(wf_sandbox_owner,
						   sb->save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	sb->save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", wf_sandbox_path,
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
}

/*
 * Leave the sandbox: every setting changed inside it is undone, and the
 * executor's identity is back.
 */
void
wf_sandbox_exit(WfSandbox *sb)
{
	AtEOXact_GUC(false, sb->save_nestlevel);
	SetUserIdAndSecContext(sb->save_userid, sb->save_sec_context);
}
