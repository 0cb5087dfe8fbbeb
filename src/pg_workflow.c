/*-------------------------------------------------------------------------
 *
 * pg_workflow.c
 *		Module entry point: settings, shared memory requests and the
 *		registration of the executor background workers.
 *
 * The library must be loaded through shared_preload_libraries, because the
 * executors are started by the postmaster and share state with backends.
 *
 * src/pg_workflow.c
 *
 *-------------------------------------------------------------------------
 */
#include "pg_workflow.h"

#include <limits.h>

#include "commands/dbcommands.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/guc.h"
#include "utils/memutils.h"

PG_MODULE_MAGIC;

char	   *wf_guc_database = NULL;
int			wf_guc_workers = 2;
int			wf_guc_notify = WF_NOTIFY_RUNS;
int			wf_guc_batch_size = 32;
int			wf_guc_step_timeout_ms = 60000;
int			wf_guc_long_step_threshold_ms = 500;
int			wf_guc_max_long_workers = 4;
int			wf_guc_batch_time_ms = 50;
int			wf_guc_max_output_size = 1024 * 1024;
static int	wf_guc_agent_lost_after_s = 60;
int			wf_guc_max_context_size = 16 * 1024 * 1024;
int			wf_guc_max_map_items = 100000;
static int	wf_guc_max_input_size = 1024 * 1024;
static int	wf_guc_max_definition_size = 1024 * 1024;
static int	wf_guc_max_user_priority = 0;
static int	wf_guc_max_depth = 16;
int			wf_guc_retention_s = 30 * SECS_PER_DAY;
int			wf_guc_event_retention_s = 7 * SECS_PER_DAY;

static const struct config_enum_entry wf_notify_options[] = {
	{"off", WF_NOTIFY_OFF, false},
	{"runs", WF_NOTIFY_RUNS, false},
	{"steps", WF_NOTIFY_STEPS, false},
	{NULL, 0, false}
};

static shmem_request_hook_type wf_prev_shmem_request_hook = NULL;
static shmem_startup_hook_type wf_prev_shmem_startup_hook = NULL;

void		_PG_init(void);

PG_FUNCTION_INFO_V1(wf_check_database);

static void
wf_shmem_request_hook(void)
{
	if (wf_prev_shmem_request_hook)
		wf_prev_shmem_request_hook();
	wf_shmem_request();
}

static void
wf_shmem_startup_hook(void)
{
	if (wf_prev_shmem_startup_hook)
		wf_prev_shmem_startup_hook();
	wf_shmem_startup();
}

/*
 * A retention setting changed: the executors look again now rather than
 * at the time they computed with the old value.
 */
static void
wf_guc_retention_assign(int newval, void *extra)
{
	wf_exec_next_prune = 0;
}

static void
wf_define_settings(void)
{
	DefineCustomStringVariable("pg_workflow.database",
							   "Database whose workflows the executors run.",
							   NULL,
							   &wf_guc_database,
							   "postgres",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("pg_workflow.workers",
							"Number of executor background workers.",
							NULL,
							&wf_guc_workers,
							2, 1, WF_MAX_WORKERS / 2,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomEnumVariable("pg_workflow.notify",
							 "Transitions announced on channel wf_events.",
							 "\"runs\" announces run transitions, \"steps\" also "
							 "step transitions, \"off\" nothing.",
							 &wf_guc_notify,
							 WF_NOTIFY_RUNS,
							 wf_notify_options,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("pg_workflow.batch_size",
							"Maximum number of steps an executor checkpoints "
							"in one transaction.",
							NULL,
							&wf_guc_batch_size,
							32, 1, WF_MAX_BATCH,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_workflow.batch_time",
							"Time after which an executor stops adding steps "
							"to its current transaction.",
							NULL,
							&wf_guc_batch_time_ms,
							50, 0, 10000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_workflow.step_timeout",
							"Time limit of an sql step whose definition sets no "
							"timeout.",
							"A step past it is cancelled and fails as a "
							"timeout; 0 disables the limit.",
							&wf_guc_step_timeout_ms,
							60000, 0, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_workflow.long_step_threshold",
							"Time after which an sql step leaves its executor "
							"for a long-step worker.",
							"Its attempt is rolled back and runs again, alone, "
							"in a long-step worker; 0 keeps every step in the "
							"executors.",
							&wf_guc_long_step_threshold_ms,
							500, 0, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_workflow.max_long_workers",
							"Most long-step workers running at once.",
							"Each takes a background worker process "
							"(max_worker_processes).",
							&wf_guc_max_long_workers,
							4, 0, WF_MAX_WORKERS / 2,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_workflow.max_context_size",
							"Largest run context a step is given, in bytes.",
							"A step whose context (input and outputs of the "
							"steps before it) is larger fails.",
							&wf_guc_max_context_size,
							16 * 1024 * 1024, 1024, MaxAllocSize / 2,
							PGC_SIGHUP,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_workflow.max_map_items",
							"Most items a map step may fan out to.",
							NULL,
							&wf_guc_max_map_items,
							100000, 1, INT_MAX,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_workflow.max_output_size",
							"Largest step output accepted, in bytes.",
							NULL,
							&wf_guc_max_output_size,
							1024 * 1024, 1024, MaxAllocSize / 2,
							PGC_SIGHUP,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_workflow.agent_lost_after",
							"Time without a claim or a heartbeat after which wf.agents shows an agent as lost.",
							NULL,
							&wf_guc_agent_lost_after_s,
							60, 1, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_workflow.max_input_size",
							"Largest run input accepted by wf_start, in bytes.",
							NULL,
							&wf_guc_max_input_size,
							1024 * 1024, 1024, MaxAllocSize / 2,
							PGC_SUSET,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_workflow.max_definition_size",
							"Largest workflow definition accepted by wf_define, "
							"in bytes.",
							NULL,
							&wf_guc_max_definition_size,
							1024 * 1024, 1024, MaxAllocSize / 2,
							PGC_SUSET,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_workflow.http_max_concurrency",
							"Most http requests one executor has in flight.",
							"Further http steps wait, ready, in wf.step.",
							&wf_guc_http_max_concurrency,
							256, 1, 10000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_workflow.http_max_response_size",
							"Largest http response body accepted, in bytes.",
							NULL,
							&wf_guc_http_max_response_size,
							10 * 1024 * 1024, 1024, MaxAllocSize / 2,
							PGC_SIGHUP,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_workflow.http_timeout",
							"Time limit of an http request whose step sets none.",
							NULL,
							&wf_guc_http_timeout_ms,
							30000, 1, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomStringVariable("pg_workflow.http_allowed_hosts",
							   "Hosts http steps may connect to.",
							   "Comma-separated names, addresses, \"*.domain\" "
							   "patterns or \"*\"; empty allows every host.",
							   &wf_guc_http_allowed_hosts,
							   "",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("pg_workflow.http_ca_file",
							   "File of certificate authorities that https "
							   "servers are verified against.",
							   "Empty uses the system's default.",
							   &wf_guc_http_ca_file,
							   "",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("pg_workflow.max_user_priority",
							"Highest priority at which a role that is not a "
							"member of wf_admin may start runs.",
							"Members of wf_admin may use any priority.",
							&wf_guc_max_user_priority,
							0, INT_MIN, INT_MAX,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_workflow.max_depth",
							"Deepest nesting of runs started by steps of other runs.",
							"A child run of a \"workflow\" step, or a run started "
							"by wf_start or wf_emit inside a step, is one level "
							"below the step's run.",
							&wf_guc_max_depth,
							16, 1, INT_MAX,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("pg_workflow.retention",
							"Time after which finished runs are removed, with "
							"their steps, signals, alerts and history.",
							"0 keeps them forever.",
							&wf_guc_retention_s,
							30 * SECS_PER_DAY, 0, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, wf_guc_retention_assign, NULL);

	DefineCustomIntVariable("pg_workflow.event_retention",
							"Time after which events emitted by wf_emit are removed.",
							"0 keeps them forever.",
							&wf_guc_event_retention_s,
							7 * SECS_PER_DAY, 0, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, wf_guc_retention_assign, NULL);

	MarkGUCPrefixReserved("pg_workflow");
}

void
_PG_init(void)
{
	int			i;

	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_workflow must be loaded via shared_preload_libraries"),
				 errhint("Add pg_workflow to shared_preload_libraries in "
						 "postgresql.conf and restart the server.")));

	wf_define_settings();

	wf_prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = wf_shmem_request_hook;
	wf_prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = wf_shmem_startup_hook;
	wf_listen_init();

	for (i = 0; i < wf_guc_workers; i++)
		wf_worker_register(i);
}

/*
 * wf._check_database(): called first by the install script, so that the
 * extension is only created where the executors run.
 */
Datum
wf_check_database(PG_FUNCTION_ARGS)
{
	char	   *dbname = get_database_name(MyDatabaseId);

	if (dbname == NULL || strcmp(dbname, wf_guc_database) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("pg_workflow can only be created in database \"%s\"",
						wf_guc_database),
				 errdetail("The executors run the workflows of the database named "
						   "by pg_workflow.database."),
				 errhint("Create the extension in database \"%s\", or set "
						 "pg_workflow.database = '%s' and restart the server.",
						 wf_guc_database, dbname ? dbname : "")));
	PG_RETURN_VOID();
}
