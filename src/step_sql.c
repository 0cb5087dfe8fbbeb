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
 * The statement runs under SECURITY_LOCAL_USERID_CHANGE and
 * SECURITY_RESTRICTED_OPERATION, as a SECURITY DEFINER function owned by
 * the run's owner would: it cannot SET ROLE or SET SESSION AUTHORIZATION
 * back to the executor's superuser, nor leave session state (temporary
 * tables, prepared statements, held cursors) behind for later steps.  The
 * caller's search_path, saved by wf_start, applies to name resolution, and
 * every setting the statement changes is undone when it ends.
 *
 * src/step_sql.c
 *
 *-------------------------------------------------------------------------
 */
#include "pg_workflow.h"

#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/syscache.h"
#include "utils/timeout.h"

void
wf_sql_execute(WfStepExec *ex, WfStepResult *res)
{
	char	   *sql = wf_util_jsonb_get_text(ex->spec, "sql");
	Oid			argtypes[1] = {JSONBOID};
	Datum		values[1];
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
	int			ret;

	if (sql == NULL)
		elog(ERROR, "step \"%s\" of run " INT64_FORMAT " has no sql",
			 ex->step, ex->run_id);
	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(ex->owner)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role %u that started run " INT64_FORMAT " does not exist",
						ex->owner, ex->run_id)));

	values[0] = JsonbPGetDatum(ex->context);

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(ex->owner,
						   save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", ex->search_path,
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	if (ex->timeout_ms > 0)
		enable_timeout_after(wf_exec_timeout_id, ex->timeout_ms);

	/*
	 * On error, the subtransaction's abort restores the user, the settings
	 * and the timeout (the executor disables it).
	 */
	ret = SPI_execute_with_args(sql, 1, argtypes, values, NULL, false, 0);

	if (ex->timeout_ms > 0)
		disable_timeout(wf_exec_timeout_id, false);
	AtEOXact_GUC(true, save_nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);

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
}
