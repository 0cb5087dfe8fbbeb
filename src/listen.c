/*-------------------------------------------------------------------------
 *
 * listen.c
 *		Who listens to the engine's channels (wf_events, wf_alerts,
 *		wf_pool_<pool>): the engine notifies only while some session does.
 *
 * PostgreSQL serialises the commits of all transactions that notify: each
 * takes one cluster-wide lock before its commit record and keeps it until
 * the commit is flushed (PreCommit_Notify, in src/backend/commands/
 * async.c).  A run start, a run's end and a task of an idle pool notify,
 * so with notifications always on, ten clients starting runs commit one
 * after the other, one WAL flush each, and wait for the executors' commits
 * too.  Notifications are a convenience (the tables are the truth), so the
 * engine sends them only while a session listens to one of its channels.
 *
 * A backend counts as listening from its first LISTEN of a channel named
 * wf_... (seen by a ProcessUtility hook, so also from PL/pgSQL or a
 * driver's protocol-level query) until it exits; UNLISTEN does not end it,
 * which costs only notifications nobody reads.  A transaction that looked
 * before a LISTEN ran, and commits after that LISTEN commits, does not
 * notify the new listener: a session that must not miss a transition
 * LISTENs first and then reads the tables, as it must anyway for what
 * happened before it listened.
 *
 * src/listen.c
 *
 *-------------------------------------------------------------------------
 */
#include "pg_workflow.h"

#include "fmgr.h"
#include "nodes/parsenodes.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "tcop/utility.h"

PG_FUNCTION_INFO_V1(wf_listened);

static ProcessUtility_hook_type wf_listen_prev_utility = NULL;

/* This backend counts in wf_shared->listeners. */
static bool wf_listen_counted = false;

static bool
wf_listen_is_ours(const char *channel)
{
	return channel != NULL && strncmp(channel, "wf_", 3) == 0;
}

static void
wf_listen_forget(int code, Datum arg)
{
	if (!wf_listen_counted || wf_shared == NULL)
		return;
	pg_atomic_fetch_sub_u32(&wf_shared->listeners, 1);
	wf_listen_counted = false;
}

/* The backend LISTENs to one of the engine's channels: count it, once. */
static void
wf_listen_note(void)
{
	if (wf_listen_counted || wf_shared == NULL)
		return;
	before_shmem_exit(wf_listen_forget, (Datum) 0);
	pg_atomic_fetch_add_u32(&wf_shared->listeners, 1);
	wf_listen_counted = true;
}

static void
wf_listen_utility(PlannedStmt *pstmt, const char *queryString,
				  bool readOnlyTree, ProcessUtilityContext context,
				  ParamListInfo params, QueryEnvironment *queryEnv,
				  DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *stmt = pstmt->utilityStmt;

	/* Before the LISTEN itself: a notification that follows it counts us. */
	if (IsA(stmt, ListenStmt) &&
		wf_listen_is_ours(((ListenStmt *) stmt)->conditionname))
		wf_listen_note();

	if (wf_listen_prev_utility)
		wf_listen_prev_utility(pstmt, queryString, readOnlyTree, context,
							   params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
								params, queryEnv, dest, qc);
}

void
wf_listen_init(void)
{
	wf_listen_prev_utility = ProcessUtility_hook;
	ProcessUtility_hook = wf_listen_utility;
}

/*
 * wf._listened(): does any session listen to one of the engine's channels?
 * The engine's notifications are sent only then.
 */
Datum
wf_listened(PG_FUNCTION_ARGS)
{
	if (wf_shared == NULL)
		PG_RETURN_BOOL(true);
	PG_RETURN_BOOL(pg_atomic_read_u32(&wf_shared->listeners) > 0);
}
