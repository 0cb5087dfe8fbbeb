/*-------------------------------------------------------------------------
 *
 * snapwait.c
 *		Lets the statement that waits in wf_wait or wf_claim hold back no
 *		cleanup while it sleeps.
 *
 * A statement holds the snapshot it started with until it ends, and the
 * backend's xmin with it: while `SELECT wf_wait(42, '1 hour')` sleeps, no
 * row version that ends after its start can be removed by VACUUM or
 * pruning, and no index entry of one can be marked dead, anywhere in the
 * database.  The engine's own queue suffers first: every claim of the
 * executors steps over the entries of the steps done meanwhile (a map of
 * 100,000 items ran four times slower under one such wait).
 *
 * The snapshot is needed only by what reads with it.  When the statement
 * is a lone SELECT, alone in its transaction, that reads no table (its
 * range table holds only functions and the empty result) and calls only
 * built-in C functions, wf_start and the waiting function, nothing will
 * ever read with it: these read with snapshots of their own (each of
 * their queries takes one), or no table at all.  Then, before each sleep, the backend's
 * xmin is let go, as SnapshotResetXmin() does when no snapshot is left;
 * the next query of the waiting function sets it anew, to the xmin of its
 * own, newer snapshot.  In any other statement (a join with a table, a
 * call from a PL/pgSQL function, which may read with the same snapshot
 * after we return) nothing is changed.
 *
 * src/snapwait.c
 *
 *-------------------------------------------------------------------------
 */
#include "pg_workflow.h"

#include "access/htup_details.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_language.h"
#include "catalog/pg_proc.h"
#include "nodes/nodeFuncs.h"
#include "nodes/plannodes.h"
#include "storage/proc.h"
#include "tcop/pquery.h"
#include "utils/lsyscache.h"
#include "utils/portal.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

/* What the walkers allow: the waiting function, the engine's namespace. */
typedef struct WfSnapOk
{
	Oid			self;
	Oid			own_namespace;
} WfSnapOk;

/*
 * May the function be called by a statement whose snapshot we let go?
 * Built-in functions in C (they read no table with the statement's
 * snapshot), the waiting function itself, and wf_start (which reads and
 * writes only through queries of its own); no other: a STABLE function in
 * SQL or PL/pgSQL reads with the caller's snapshot.
 */
static bool
wf_snap_fn_ok(Oid fn, WfSnapOk *ok)
{
	HeapTuple	tp;
	Oid			lang;
	char	   *name;

	if (fn == ok->self)
		return true;
	if (fn < FirstGenbkiObjectId)
	{
		tp = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
		if (!HeapTupleIsValid(tp))
			return false;
		lang = ((Form_pg_proc) GETSTRUCT(tp))->prolang;
		ReleaseSysCache(tp);
		return lang == INTERNALlanguageId || lang == ClanguageId;
	}
	if (get_func_namespace(fn) != ok->own_namespace)
		return false;
	name = get_func_name(fn);
	return name != NULL && strcmp(name, "wf_start") == 0;
}

/* Is there anything in the expression that we do not allow? */
static bool
wf_snap_expr_walker(Node *node, void *context)
{
	WfSnapOk   *ok = (WfSnapOk *) context;
	Oid			fn = InvalidOid;

	if (node == NULL)
		return false;
	switch (nodeTag(node))
	{
		case T_FuncExpr:
			fn = ((FuncExpr *) node)->funcid;
			break;
		case T_OpExpr:
		case T_DistinctExpr:
		case T_NullIfExpr:
			set_opfuncid((OpExpr *) node);
			fn = ((OpExpr *) node)->opfuncid;
			break;
		case T_Aggref:
			fn = ((Aggref *) node)->aggfnoid;
			break;
		case T_SubPlan:
		case T_AlternativeSubPlan:
		case T_SubLink:
		case T_ScalarArrayOpExpr:
		case T_CoerceViaIO:
		case T_ArrayCoerceExpr:
		case T_RowCompareExpr:
		case T_WindowFunc:
			return true;		/* rather than look into them */
		default:
			break;
	}
	if (OidIsValid(fn) && !wf_snap_fn_ok(fn, ok))
		return true;
	return expression_tree_walker(node, wf_snap_expr_walker, context);
}

/* Does no node of the plan read a table, or call a function of another's? */
static bool
wf_snap_plan_ok(Plan *plan, WfSnapOk *ok)
{
	if (plan == NULL)
		return true;
	switch (nodeTag(plan))
	{
		case T_Result:
		case T_ProjectSet:
		case T_Agg:
		case T_Sort:
		case T_Limit:
			break;
		case T_FunctionScan:
			if (wf_snap_expr_walker((Node *) ((FunctionScan *) plan)->functions, ok))
				return false;
			break;
		default:
			return false;
	}
	if (wf_snap_expr_walker((Node *) plan->targetlist, ok) ||
		wf_snap_expr_walker((Node *) plan->qual, ok))
		return false;
	if (IsA(plan, Result) &&
		wf_snap_expr_walker(((Result *) plan)->resconstantqual, ok))
		return false;
	return wf_snap_plan_ok(plan->lefttree, ok) &&
		wf_snap_plan_ok(plan->righttree, ok);
}

/*
 * Called by wf_wait and wf_claim (fn: the caller's own function) before
 * each sleep: lets the backend's xmin go if nothing will read with the
 * statement's snapshot (see above).
 */
void
wf_snap_release_for_wait(Oid fn)
{
	PlannedStmt *stmt;
	ListCell   *lc;
	WfSnapOk	ok;

	/*
	 * Alone in its transaction: no cursor, no suspended portal of the
	 * extended protocol, that reads with an older snapshot later.
	 */
	if (ActivePortal == NULL || list_length(ActivePortal->stmts) != 1 ||
		IsTransactionBlock() || IsolationUsesXactSnapshot() ||
		!ThereAreNoReadyPortals())
		return;
	stmt = linitial_node(PlannedStmt, ActivePortal->stmts);
	if (stmt->commandType != CMD_SELECT || stmt->utilityStmt != NULL ||
		stmt->subplans != NIL || stmt->hasModifyingCTE)
		return;
	foreach(lc, stmt->rtable)
	{
		RangeTblEntry *rte = lfirst_node(RangeTblEntry, lc);

		if (rte->rtekind != RTE_FUNCTION && rte->rtekind != RTE_RESULT)
			return;
	}
	ok.self = fn;
	ok.own_namespace = get_func_namespace(fn);
	if (!wf_snap_plan_ok(stmt->planTree, &ok))
		return;

	InvalidateCatalogSnapshot();
	MyProc->xmin = InvalidTransactionId;
}
