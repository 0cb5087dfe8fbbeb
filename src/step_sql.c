/*-------------------------------------------------------------------------
 *
 * step_sql.c
 *		The "sql" step kind: runs the step's statement with $1 bound to the
 *		run context, as the role that started the run.
 *
 * The executor calls this inside a subtransaction of the transaction that
 * will also checkpoint the step, so the statement's effects and the
 * step's new state commit together, or neither does.
 *
 * The statement, and the conversion of its result to jsonb, run in the
 * step's sandbox (sandbox.c): as the run's owner, under
 * SECURITY_RESTRICTED_OPERATION and the owner's search_path, with every
 * setting it changes undone when it ends.
 *
 * A single statement is planned once per owner and search_path and kept
 * (PostgreSQL's plan cache replans it after DDL); a string of several
 * statements is parsed at each run, since each may depend on the one
 * before.
 *
 * Hence some statements can never run as a step: those that cannot run
 * inside a transaction block, those that a security-restricted operation
 * forbids, and COPY to or from the client.  wf_sql_unsupported() names
 * them, so that wf_define rejects them instead of every attempt failing.
 * It sees only the statements written in the step: a procedure or a DO
 * block that controls transactions fails when it runs (2D000).  The check
 * of a step's statement, for wf_validate, is at the end of this file.
 *
 * src/step_sql.c
 *
 *-------------------------------------------------------------------------
 */
#include "pg_workflow.h"

#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "common/hashfn.h"
#include "nodes/parsenodes.h"
#include "parser/parser.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/timeout.h"

#include "validate_int.h"

/* At most this many statements keep a plan; beyond, all are forgotten. */
#define WF_SQL_MAX_PLANS	512

typedef struct WfSqlPlanKey
{
	Oid			owner;
	uint32		sql_hash;
	uint32		path_hash;
} WfSqlPlanKey;

typedef struct WfSqlPlan
{
	WfSqlPlanKey key;
	char	   *sql;			/* to tell hash collisions apart */
	char	   *search_path;
	SPIPlanPtr	plan;			/* NULL: several statements, not kept */
} WfSqlPlan;

/* SET CONSTRAINTS ALL IMMEDIATE */
static ConstraintsSetStmt wf_sql_all_immediate = {T_ConstraintsSetStmt, NIL, false};

static HTAB *wf_sql_plans = NULL;
static MemoryContext wf_sql_plan_ctx = NULL;

static void
wf_sql_init_plans(void)
{
	HASHCTL		ctl;

	if (wf_sql_plan_ctx == NULL)
		wf_sql_plan_ctx = AllocSetContextCreate(TopMemoryContext,
												"pg_workflow sql plans",
												ALLOCSET_DEFAULT_SIZES);
	ctl.keysize = sizeof(WfSqlPlanKey);
	ctl.entrysize = sizeof(WfSqlPlan);
	ctl.hcxt = wf_sql_plan_ctx;
	wf_sql_plans = hash_create("pg_workflow sql plans", 64, &ctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/* Forgets every kept plan. */
static void
wf_sql_reset_plans(void)
{
	HASH_SEQ_STATUS seq;
	WfSqlPlan  *e;

	hash_seq_init(&seq, wf_sql_plans);
	while ((e = hash_seq_search(&seq)) != NULL)
		if (e->plan)
			SPI_freeplan(e->plan);
	hash_destroy(wf_sql_plans);
	wf_sql_plans = NULL;
	MemoryContextReset(wf_sql_plan_ctx);
}

/*
 * The kept plan of sql for this owner and search_path, prepared now if need
 * be (as the owner, under that search_path); NULL for a string of several
 * statements.
 */
static SPIPlanPtr
wf_sql_plan(WfStepExec *ex, const char *sql)
{
	WfSqlPlanKey key;
	WfSqlPlan  *e;
	bool		found;
	Oid			argtypes[1] = {JSONBOID};
	SPIPlanPtr	plan = NULL;
	MemoryContext old;

	if (wf_sql_plans == NULL)
		wf_sql_init_plans();

	memset(&key, 0, sizeof(key));
	key.owner = ex->owner;
	key.sql_hash = hash_bytes((const unsigned char *) sql, strlen(sql));
	key.path_hash = hash_bytes((const unsigned char *) ex->search_path,
							   strlen(ex->search_path));
	e = hash_search(wf_sql_plans, &key, HASH_FIND, NULL);
	if (e != NULL && strcmp(e->sql, sql) == 0 &&
		strcmp(e->search_path, ex->search_path) == 0)
		return e->plan;
	if (e != NULL)
		return NULL;			/* a collision: run this one unkept */

	if (list_length(raw_parser(sql, RAW_PARSE_DEFAULT)) == 1)
	{
		plan = SPI_prepare(sql, 1, argtypes);
		if (plan == NULL)
			elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "SPI_keepplan failed");
	}

	if (hash_get_num_entries(wf_sql_plans) >= WF_SQL_MAX_PLANS)
	{
		wf_sql_reset_plans();
		wf_sql_init_plans();
	}
	e = hash_search(wf_sql_plans, &key, HASH_ENTER, &found);
	old = MemoryContextSwitchTo(wf_sql_plan_ctx);
	e->sql = pstrdup(sql);
	e->search_path = pstrdup(ex->search_path);
	e->plan = plan;
	MemoryContextSwitchTo(old);
	return plan;
}

void
wf_sql_execute(WfStepExec *ex, WfStepResult *res)
{
	char	   *sql = wf_util_jsonb_get_text(ex->spec, "sql");
	Oid			argtypes[1] = {JSONBOID};
	Datum		values[1];
	WfSandbox	sb;
	SPIPlanPtr	plan;
	int			ret;

	if (sql == NULL)
		elog(ERROR, "step \"%s\" of run " INT64_FORMAT " has no sql",
			 ex->step, ex->run_id);
	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(ex->owner)))
	{
		/* Dropped: the run fails, whatever the step's on_error says. */
		wf_owners_step_dropped(ex, res);
		return;
	}

	values[0] = JsonbPGetDatum(ex->context);
	if (ex->timeout_ms == 0)
		ex->timeout_ms = wf_guc_step_timeout_ms;

	/*
	 * Planning, execution and the conversion of the result to jsonb (which
	 * may call the owner's casts and output functions) all run as the owner.
	 * On error, the subtransaction's abort restores the user, the settings
	 * and the timeout (the executor disables it).
	 */
	wf_sandbox_enter(&sb);

	/*
	 * Deferrable constraints and constraint triggers act at the end of each
	 * statement: PostgreSQL fires no deferred trigger in a
	 * security-restricted operation (it would run at the executor's commit,
	 * as the executor), and a step's checks are the step's alone.
	 */
	AfterTriggerSetState(&wf_sql_all_immediate);
	(void) wf_exec_arm_timeout(ex);

	plan = wf_sql_plan(ex, sql);
	if (plan != NULL)
		ret = SPI_execute_plan(plan, values, NULL, false, 0);
	else
		ret = SPI_execute_with_args(sql, 1, argtypes, values, NULL, false, 0);
	if (ret < 0)
		elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(ret));

	res->outcome = WF_STEP_COMPLETED;
	res->output = NULL;
	if (SPI_tuptable != NULL && SPI_processed > 0 && SPI_tuptable->tupdesc->natts > 0)
	{
		bool		isnull;
		Datum		d;

		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		res->output = wf_util_datum_to_jsonb(d, SPI_gettypeid(SPI_tuptable->tupdesc, 1),
											 isnull);
	}
	if (SPI_tuptable != NULL)
		SPI_freetuptable(SPI_tuptable);

	disable_timeout(wf_exec_timeout_id, false);
	wf_sandbox_exit(&sb);
}

/* Is the relation of a CREATE statement temporary? */
static bool
wf_sql_is_temp(RangeVar *rel)
{
	return rel != NULL && rel->relpersistence == RELPERSISTENCE_TEMP;
}

/*
 * The statement, as a raw parse tree, if it cannot run as a step: returns
 * what it is ("VACUUM") and sets *why to the reason, a phrase.  NULL when it
 * can run (transaction control is the caller's to reject).
 */
const char *
wf_sql_unsupported(Node *parsetree, const char **why)
{
	static const char *const in_xact =
	"it cannot run inside a transaction block, and a step runs inside the executor's transaction";
	static const char *const restricted =
	"a step runs as a security-restricted operation, which forbids it";

	*why = in_xact;
	switch (nodeTag(parsetree))
	{
		case T_CopyStmt:
			if (((CopyStmt *) parsetree)->filename == NULL &&
				!((CopyStmt *) parsetree)->is_program)
			{
				*why = "a step has no client to copy to or from";
				return "COPY to STDOUT or from STDIN";
			}
			return NULL;
		case T_VacuumStmt:
			return ((VacuumStmt *) parsetree)->is_vacuumcmd ? "VACUUM" : NULL;
		case T_CreatedbStmt:
			return "CREATE DATABASE";
		case T_DropdbStmt:
			return "DROP DATABASE";
		case T_CreateTableSpaceStmt:
			return "CREATE TABLESPACE";
		case T_DropTableSpaceStmt:
			return "DROP TABLESPACE";
		case T_AlterSystemStmt:
			return "ALTER SYSTEM";
		case T_IndexStmt:
			return ((IndexStmt *) parsetree)->concurrent ? "CREATE INDEX CONCURRENTLY" : NULL;
		case T_DropStmt:
			return ((DropStmt *) parsetree)->concurrent ? "DROP INDEX CONCURRENTLY" : NULL;
		case T_ReindexStmt:
			{
				ReindexStmt *stmt = (ReindexStmt *) parsetree;
				ListCell   *lc;

				if (stmt->kind == REINDEX_OBJECT_SCHEMA)
					return "REINDEX SCHEMA";
				if (stmt->kind == REINDEX_OBJECT_SYSTEM)
					return "REINDEX SYSTEM";
				if (stmt->kind == REINDEX_OBJECT_DATABASE)
					return "REINDEX DATABASE";
				foreach(lc, stmt->params)
					if (strcmp(lfirst_node(DefElem, lc)->defname, "concurrently") == 0)
						return "REINDEX CONCURRENTLY";
				return NULL;
			}
		case T_ClusterStmt:
			return ((ClusterStmt *) parsetree)->relation == NULL ? "CLUSTER of every table" : NULL;
		case T_AlterTableStmt:
			{
				ListCell   *lc;

				foreach(lc, ((AlterTableStmt *) parsetree)->cmds)
				{
					AlterTableCmd *cmd = lfirst_node(AlterTableCmd, lc);

					if (cmd->subtype == AT_DetachPartition &&
						((PartitionCmd *) cmd->def)->concurrent)
						return "DETACH PARTITION CONCURRENTLY";
				}
				return NULL;
			}
		default:
			break;
	}

	*why = restricted;
	switch (nodeTag(parsetree))
	{
		case T_ListenStmt:
			return "LISTEN";
		case T_UnlistenStmt:
			return "UNLISTEN";
		case T_DiscardStmt:
			return "DISCARD";
		case T_PrepareStmt:
			return "PREPARE";
		case T_DeallocateStmt:
			return "DEALLOCATE";
		case T_ClosePortalStmt:
			return "CLOSE";
		case T_DeclareCursorStmt:
			return (((DeclareCursorStmt *) parsetree)->options & CURSOR_OPT_HOLD) ?
				"DECLARE CURSOR WITH HOLD" : NULL;
		case T_CreateStmt:
			return wf_sql_is_temp(((CreateStmt *) parsetree)->relation) ?
				"CREATE TEMPORARY TABLE" : NULL;
		case T_CreateTableAsStmt:
			return wf_sql_is_temp(((CreateTableAsStmt *) parsetree)->into->rel) ?
				"CREATE TEMPORARY TABLE" : NULL;
		case T_SelectStmt:
			return ((SelectStmt *) parsetree)->intoClause != NULL &&
				wf_sql_is_temp(((SelectStmt *) parsetree)->intoClause->rel) ?
				"SELECT INTO TEMPORARY" : NULL;
		case T_ViewStmt:
			return wf_sql_is_temp(((ViewStmt *) parsetree)->view) ?
				"CREATE TEMPORARY VIEW" : NULL;
		case T_CreateSeqStmt:
			return wf_sql_is_temp(((CreateSeqStmt *) parsetree)->sequence) ?
				"CREATE TEMPORARY SEQUENCE" : NULL;
		default:
			return NULL;
	}
}

/* ----------------------------------------------------------------
 * The check of the action, for wf_validate (kinds.c)
 * ----------------------------------------------------------------
 */

/* "sql": a statement, never templated; it reads the context as $1 */
void
wf_sql_check(WfvState *st, WfvObject *o, const char *path, JsonbValue *v)
{
	char	   *sql = wfv_string(st, o->label, path, v, true);
	Datum		parsed;
	ErrorData  *edata;
	List	   *stmts;
	ListCell   *lc;

	if (sql == NULL)
		return;

	if (!wfv_try_parse(wfv_parse_sql, sql, &parsed, &edata))
	{
		if (edata->cursorpos > 0)
			wfv_problem(st, o->label, ERRCODE_SYNTAX_ERROR,
						"\"%s\" is not valid SQL: %s at character %d",
						path, edata->message, edata->cursorpos);
		else
			wfv_problem(st, o->label, ERRCODE_SYNTAX_ERROR,
						"\"%s\" is not valid SQL: %s", path, edata->message);
		return;
	}

	stmts = (List *) DatumGetPointer(parsed);
	if (stmts == NIL)
		wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
					"\"%s\" contains no statement", path);

	foreach(lc, stmts)
	{
		RawStmt    *stmt = lfirst_node(RawStmt, lc);
		const char *why;
		const char *what;

		if (IsA(stmt->stmt, TransactionStmt))
		{
			wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
						"\"%s\" must not contain transaction control statements",
						path);
			break;
		}
		if ((what = wf_sql_unsupported(stmt->stmt, &why)) != NULL)
		{
			wfv_problem(st, o->label, ERRCODE_INVALID_PARAMETER_VALUE,
						"\"%s\" must not contain %s: %s", path, what, why);
			break;
		}
	}
}
