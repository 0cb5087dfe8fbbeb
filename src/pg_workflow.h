/*-------------------------------------------------------------------------
 *
 * pg_workflow.h
 *		Declarations shared by the modules of pg_workflow, a durable
 *		workflow engine executed by background workers.
 *
 * Module prefixes: wf_guc_* (settings), wf_shmem_* (shared state and
 * wake-ups), wf_worker_* (process main loop), wf_exec_* (batch executor),
 * wf_sql_* (the "sql" step kind), wf_kind_* (the table of step kinds),
 * wf_long_* (long-step workers), wf_api_* (SQL-callable functions),
 * wf_validate_* (definition checks), wf_sandbox_* (the identity and
 * settings under which user code runs), wf_util_* (small helpers).
 *
 * src/pg_workflow.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_WORKFLOW_H
#define PG_WORKFLOW_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "nodes/pg_list.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/spin.h"
#include "utils/jsonb.h"
#include "utils/timeout.h"

/* The control file's default_version, passed by the Makefile. */
#ifndef WF_VERSION_STR
#error "WF_VERSION_STR must be defined (by the Makefile, from pg_workflow.control)"
#endif
#define WF_EXTENSION_NAME	"pg_workflow"
#define WF_SCHEMA_NAME		"wf"

/* Upper bound of pg_workflow.workers. */
#define WF_MAX_WORKERS		64

/* Never more step subtransactions in one executor transaction than this. */
#define WF_MAX_BATCH		60

/* ----------------------------------------------------------------
 * Settings (pg_workflow.c)
 * ----------------------------------------------------------------
 */
typedef enum WfNotifyLevel
{
	WF_NOTIFY_OFF,
	WF_NOTIFY_RUNS,
	WF_NOTIFY_STEPS
} WfNotifyLevel;

extern char *wf_guc_database;
extern int	wf_guc_workers;
extern int	wf_guc_notify;
extern int	wf_guc_batch_size;
extern int	wf_guc_batch_time_ms;
extern int	wf_guc_max_output_size;
extern int	wf_guc_max_context_size;
extern int	wf_guc_max_map_items;
extern int	wf_guc_step_timeout_ms;
extern int	wf_guc_long_step_threshold_ms;
extern int	wf_guc_max_long_workers;
extern int	wf_guc_retention_s;
extern int	wf_guc_event_retention_s;

/* ----------------------------------------------------------------
 * Shared memory (shmem.c)
 * ----------------------------------------------------------------
 */
typedef struct WfWorkerSlot
{
	pid_t		pid;			/* 0 when the slot is not in use */
	Latch	   *latch;			/* the worker's process latch */
	bool		sleeping;		/* will re-check for work only if woken */
	int64		current_run;	/* run whose step is executing, or 0 */
	int64		current_parent; /* that run's parent run, or 0 */
	bool		reserved;		/* a long-step worker is being started here */
	int			http_in_flight; /* requests it has in flight */
	bool		recheck_http;	/* some run ended: are its requests still wanted? */
	bool		connecting;		/* its last start did not get connected */
} WfWorkerSlot;

/* What one backend asks of the engine. */
typedef struct WfBackendSlot
{
	int64		waiting_for;	/* run it waits for in wf_wait, or 0 */
	int64		interrupting;	/* run it interrupts until its xact ends */
	uint32		claim_pool;		/* hash of the pool it waits for in
								 * wf_claim, or 0 */
	float4		claim_load;		/* then its tasks in flight / its capacity */
	uint64		claim_seq;		/* and when it began to wait, in order */
	Latch	   *latch;
} WfBackendSlot;

/*
 * Fair share between owners: each owner's virtual clock.  A run's first
 * steps are ordered by it (not delayed: they stay due at once), so that a
 * flood of one role's runs queues behind itself, not in front of another
 * role's.  A fixed table: the owner whose clock is the oldest gives way.
 */
#define WF_FAIR_OWNERS		256
#define WF_FAIR_STEP_US		10000	/* virtual time of one run start */

typedef struct WfOwnerClock
{
	Oid			owner;
	TimestampTz at;
} WfOwnerClock;

typedef struct WfShared
{
	slock_t		mutex;			/* protects everything below */
	int			nworkers;		/* executors: slots 0 .. nworkers - 1 */
	int			nslots;			/* and long-step workers up to this */
	uint32		next_wake;		/* round-robin position for wake-ups */
	WfWorkerSlot workers[WF_MAX_WORKERS];
	int			ninterrupts;	/* backends interrupting a run now */
	bool		deferred;		/* wf.deferred may have changes to make */
	WfOwnerClock clocks[WF_FAIR_OWNERS];
	bool		db_missing_told;	/* the log said pg_workflow.database is missing */
	uint64		claim_seq;		/* the last wf_claim waiter's claim_seq */
	pg_atomic_uint32 listeners; /* backends that LISTEN to a wf_ channel
								 * (listen.c; not under mutex) */
	/* One entry per backend id: wf_wait and interrupt requests. */
	int			nbackends;
	WfBackendSlot backends[FLEXIBLE_ARRAY_MEMBER];
} WfShared;

extern WfShared *wf_shared;

/* listen.c */
extern void wf_listen_init(void);

extern void wf_shmem_request(void);
extern void wf_shmem_startup(void);
extern void wf_shmem_wake_one(void);
extern void wf_shmem_wake_all(void);
extern void wf_shmem_wake_at_commit(void);
extern void wf_shmem_defer_at_commit(void);
extern bool wf_shmem_take_deferred(void);
extern void wf_shmem_set_deferred(void);
extern void wf_shmem_run_ended_at_commit(int64 run_id);
extern void wf_shmem_interrupt_run(int64 run_id);
extern int64 *wf_shmem_interrupted_runs(int *n);
extern bool wf_shmem_run_is_interrupted(int64 run_id);
extern void wf_shmem_wake_waiters(int64 *run_ids, int nruns);
extern void wf_shmem_set_waiting(int64 run_id);
extern uint32 wf_shmem_pool_hash(const char *pool, int len);
extern void wf_shmem_set_claim_waiting(uint32 pool_hash, float4 load);
extern void wf_shmem_claim_pass_on(uint32 pool_hash);
extern void wf_shmem_pool_ready_at_commit(uint32 pool_hash);
extern TimestampTz wf_shmem_fair_at(Oid owner);

/* ----------------------------------------------------------------
 * Worker process (worker.c)
 * ----------------------------------------------------------------
 */
extern void wf_worker_register(int index);
extern PGDLLEXPORT void wf_worker_main(Datum main_arg);
extern void wf_worker_start(int index, bool executor);
extern void wf_worker_detach(int code, Datum arg);

/* longstep.c */
extern PGDLLEXPORT void wf_long_main(Datum main_arg);
extern bool wf_long_launch(void);
extern bool wf_long_available(void);
extern bool wf_long_am_worker;
extern WfWorkerSlot *wf_worker_slot;
extern int	wf_worker_index;

/* ----------------------------------------------------------------
 * Executor (executor.c) and step kinds
 * ----------------------------------------------------------------
 */

/* What an error means for the retry policy. */
typedef enum WfErrorClass
{
	WF_ERROR_TRANSIENT,
	WF_ERROR_PERMANENT,
	WF_ERROR_BUSINESS
} WfErrorClass;

/* Everything a step kind needs to execute one attempt. */
typedef struct WfStepKind WfStepKind;
typedef struct WfHttpRequest WfHttpRequest;

typedef struct WfStepExec
{
	int64		run_id;
	char	   *step;			/* step name (path for nested steps) */
	char	   *kind;			/* action key, e.g. "sql" */
	Jsonb	   *spec;			/* the step's definition object */
	Jsonb	   *context;		/* the run context passed to the step */
	Oid			owner;			/* role that started the run */
	char	   *search_path;	/* caller's search_path at wf_start */
	int			attempt;		/* 1 for the first attempt */
	int			timeout_ms;		/* 0 for none */
	TimestampTz started_at;		/* identifies the attempt, with attempt */
	const WfStepKind *kind_def;
	bool		resuming;		/* a waiting step's timer fired or it was woken */
	Jsonb	   *payload;		/* the event that woke it, or NULL */
	char	   *wait_key;		/* what it waited for */
	TimestampTz escalated_at;	/* a human step's escalation, or 0 */
	int64		parent_run;		/* the run's parent run (child runs), or 0 */
} WfStepExec;

/* The outcome of one attempt. */
typedef enum WfStepOutcome
{
	WF_STEP_COMPLETED,			/* output is set */
	WF_STEP_FAILED,				/* error fields are set */
	WF_STEP_INTERRUPTED,		/* the run was cancelled under our feet */
	WF_STEP_STARTED,			/* asynchronous: request is set */
	WF_STEP_DEFERRED,			/* not now (open circuit): defer_until */
	WF_STEP_WAITING,			/* durably waiting: wake_at, wait_key */
	WF_STEP_EXPANDED			/* a container: its children are ready */
} WfStepOutcome;

typedef struct WfStepResult
{
	WfStepOutcome outcome;
	Jsonb	   *output;
	WfErrorClass error_class;
	char	   *error_message;
	char	   *error_detail;
	char		sqlstate[6];
	bool		timed_out;
	Datum		ready;			/* text[] of steps made ready, or 0 */
	bool		ready_held;		/* ... and still pending in the table (see
								 * WfWorkItem.held) */
	const char *done_status;	/* WF_STEP_COMPLETED: "completed" or "skipped" */
	char	   *done_in;		/* a map item: its map, to count it done in */
	WfHttpRequest *request;		/* WF_STEP_STARTED by the http kind */
	int			retry_after_s;	/* the server asked to wait this long */
	int			http_status;	/* the response's status, for the record */
	bool		breaker_opened; /* this failure opened the circuit breaker */
	TimestampTz defer_until;	/* WF_STEP_DEFERRED: when to try again */
	bool		offload;		/* WF_STEP_DEFERRED: to a long-step worker */
	char	   *defer_key;		/* WF_STEP_DEFERRED: what may end the wait
								 * earlier ("breaker:HOST"), or NULL */
	TimestampTz wake_at;		/* WF_STEP_WAITING: timer, or 0 */
	char	   *wait_key;		/* WF_STEP_WAITING: "signal:..." or "event:..." */
	bool		fatal;			/* WF_STEP_FAILED: the run fails at once, with
								 * no retry and no on_error (owners.c) */
} WfStepResult;

/* What validate.c checks an action's value with (validate_int.h). */
typedef struct WfvState WfvState;
typedef struct WfvObject WfvObject;
typedef struct WfvMember WfvMember;
typedef void (*WfKindCheck) (WfvState *st, WfvObject *o, const char *path,
							 JsonbValue *value);

/*
 * A step kind, an entry of the one table of them (kinds.c).  "execute"
 * performs one attempt synchronously inside the executor's transaction (in
 * a subtransaction of its own).
 */
struct WfStepKind
{
	const char *name;			/* the action key, e.g. "sql" */
	const char *alias_of;		/* a short form of that kind ("until"), or NULL */
	bool		supported;		/* false: known, but rejected as not supported */
	bool		container;		/* holds steps of its own (if, parallel, map) */
	bool		compensates;	/* may be a step's "compensate" action */
	bool		async;			/* an attempt ends outside the executor's
								 * transaction (http, agent) */
	bool		calls_out;		/* its attempts call another system, which
								 * "circuit_breaker" and "rate_limit" guard */
	void		(*execute) (WfStepExec *ex, WfStepResult *res);
	/* for kinds that wait: the timer fired, or a signal or event came */
	void		(*resume) (WfStepExec *ex, WfStepResult *res);
	/* checks the action's value, in the kind's file (validate_int.h) */
	WfKindCheck check;
	/* the step keys allowed only with this action, and their checks */
	const WfvMember *companions;
};

/* kinds.c */
extern const WfStepKind wf_step_kinds[];
extern const int wf_step_nkinds;
extern const WfStepKind *wf_kind_find(const char *name, int len);
extern const WfStepKind *wf_kind_base(const WfStepKind *kind);
extern const WfStepKind *wf_kind_of_step(Jsonb *spec, bool compensate);
extern const WfStepKind *wf_exec_find_kind(const char *name);

/* executor.c */
extern TimeoutId wf_exec_timeout_id;
extern void wf_exec_init(void);
extern int	wf_exec_arm_timeout(WfStepExec *ex);
extern int	wf_exec_batch(int max_steps, TimestampTz *next_due);
extern bool wf_exec_solo_due(void);

/* exec_contain.c */
extern void wf_exec_note_error(void);
extern void wf_exec_set_item(int64 run_id, const char *step);

/* exec_housekeeping.c */
extern TimestampTz wf_exec_next_prune;

/* exec_path.c */
extern bool wf_exec_predicate(Jsonb *context, const char *path);
extern Jsonb *wf_exec_path_first(Jsonb *target, const char *path);

/* slots.c */
extern void wf_slots_want(int64 run_id, const char *step, const char *key);
extern bool wf_slots_pending(void);
extern void wf_slots_take(void);
extern void wf_slots_forget(void);
extern void wf_slots_defer_begin(void);
extern void wf_slots_release_all(void);

/* snapwait.c */
extern void wf_snap_release_for_wait(Oid fn);

/* context.c */
extern void wf_ctx_batch(MemoryContext cxt);
extern Jsonb *wf_ctx_build(int64 run_id, const char *step, int attempt, Size *size);

/* step_sql.c */
extern void wf_sql_execute(WfStepExec *ex, WfStepResult *res);
extern const char *wf_sql_unsupported(Node *parsetree, const char **why);

/* step_wait.c */
extern void wf_wait_sleep_execute(WfStepExec *ex, WfStepResult *res);
extern void wf_wait_sleep_resume(WfStepExec *ex, WfStepResult *res);
extern void wf_wait_for_execute(WfStepExec *ex, WfStepResult *res);
extern void wf_wait_for_resume(WfStepExec *ex, WfStepResult *res);
extern void wf_wait_human_execute(WfStepExec *ex, WfStepResult *res);
extern void wf_wait_human_resume(WfStepExec *ex, WfStepResult *res);

/* schedule.c */
extern void wf_schedule_validate(const char *schedule);
extern TimestampTz wf_schedule_next_time(const char *schedule, TimestampTz after,
										 const char *tzname);

/* step_flow.c */
extern void wf_flow_if_execute(WfStepExec *ex, WfStepResult *res);
extern void wf_flow_parallel_execute(WfStepExec *ex, WfStepResult *res);
extern void wf_flow_map_execute(WfStepExec *ex, WfStepResult *res);
extern void wf_flow_workflow_execute(WfStepExec *ex, WfStepResult *res);
extern void wf_flow_workflow_resume(WfStepExec *ex, WfStepResult *res);

/* ----------------------------------------------------------------
 * The http kind (http.c)
 * ----------------------------------------------------------------
 */
typedef struct WfHttpCompletion
{
	WfHttpRequest *request;
	int			status;			/* HTTP status, 0 when no response */
	int			curl_code;		/* CURLE_OK when a response came */
	char	   *error;			/* transport error, or NULL */
	bool		transient;		/* the transport error is worth a retry */
	bool		timed_out;
	int			retry_after_s;	/* Retry-After, 0 when absent */
	char		sqlstate[6];	/* of a refusal by the engine, or "" */
} WfHttpCompletion;

extern int	wf_guc_http_max_concurrency;
extern int	wf_guc_http_max_response_size;
extern int	wf_guc_http_timeout_ms;
extern char *wf_guc_http_allowed_hosts;
extern char *wf_guc_http_ca_file;

extern void wf_http_init(void);
extern void wf_http_execute(WfStepExec *ex, WfStepResult *res);
extern bool wf_http_breaker_admit(WfStepExec *ex, WfStepResult *res,
								  const char *key);
extern bool wf_http_rate_admit(WfStepExec *ex, WfStepResult *res,
							   const char *default_key, char **key_out);
extern void wf_http_enqueue(WfHttpRequest *req);
extern void wf_http_forget(WfHttpRequest *req);
extern void wf_http_submit(void);
extern void wf_http_discard(void);
extern int	wf_http_busy(void);
extern List *wf_http_completions(void);
extern void wf_http_release(WfHttpCompletion *c);
extern void wf_http_drop_interrupted(void);
extern int64 *wf_http_in_flight_runs(int *n);
extern void wf_http_drop_runs(int64 *runs, int n);
extern void wf_http_wait(long timeout_ms);
extern bool wf_http_host_allowed_url(const char *url);
extern bool wf_http_host_matches(const char *host, const char *patterns);
extern bool wf_http_hosts_valid(const char *patterns, char **problem);
extern Jsonb *wf_http_output(WfHttpCompletion *c);
extern char *wf_http_error_message(WfHttpCompletion *c);
extern char *wf_http_breaker_key(WfHttpCompletion *c);
extern char *wf_http_rate_key(WfHttpCompletion *c);
extern void wf_http_completion_key(WfHttpCompletion *c, int64 *run_id, char **step,
								   int *attempt, TimestampTz *started_at);

/* External agents (agent.c) */
extern char *wf_agent_breaker_key(Jsonb *spec);
extern void wf_agent_execute(WfStepExec *ex, WfStepResult *res);

/* The caller-passing calls of wf._NAME functions (api.c) */
struct ReturnSetInfo;
extern void wf_api_lookup(const char *name, int nargs, const Oid *argtypes,
						  FmgrInfo *finfo, MemoryContext mcxt);
extern Datum wf_api_invoke_set(FmgrInfo *finfo, int nargs, NullableDatum *args,
							   struct ReturnSetInfo *rsinfo, bool *isnull);

/* ----------------------------------------------------------------
 * Templates and secrets (template.c, template_redact.c)
 * ----------------------------------------------------------------
 */
/* A secret that a rendering substituted. */
typedef struct WfTemplateSecret
{
	char	   *name;
	char	   *hosts;			/* allowed-hosts syntax; NULL: any host */
} WfTemplateSecret;

/*
 * What a rendering needs and leaves behind.  Zeroed, it renders no secret:
 * only the http kind sets allow_secrets, for its url, header values and
 * body, and then each secret renders only if owner may use it.
 */
typedef struct WfTemplateCtx
{
	Jsonb	   *context;		/* the run context {"input", "steps", "run"} */
	List	   *secret_values;	/* char * of every secret value substituted */
	Oid			owner;			/* the run's owner, whose privileges count */
	bool		allow_secrets;	/* may {{secret.NAME}} render here? */
	List	   *secrets_used;	/* WfTemplateSecret * substituted; the caller
								 * resets it to tell parts apart */
} WfTemplateCtx;

extern char *wf_template_render_string(WfTemplateCtx *tc, const char *str,
									   bool url_escape);
extern Jsonb *wf_template_render_jsonb(WfTemplateCtx *tc, Jsonb *value);
extern char *wf_template_redact(WfTemplateCtx *tc, const char *text);
extern Jsonb *wf_template_redact_jsonb(WfTemplateCtx *tc, Jsonb *value);

/* ----------------------------------------------------------------
 * Owners and dropped roles (owners.c)
 * ----------------------------------------------------------------
 */
extern void wf_owners_init(void);
extern bool wf_owners_gone(Oid owner);
extern void wf_owners_step_dropped(WfStepExec *ex, WfStepResult *res);
extern TimestampTz wf_owners_sweep(void);

/* ----------------------------------------------------------------
 * Definition checks (validate.c)
 * ----------------------------------------------------------------
 */
typedef struct WfProblem
{
	int			sqlstate;		/* an ERRCODE_* value */
	char	   *message;		/* lower-case, no trailing period */
} WfProblem;

extern List *wf_validate_definition(Jsonb *definition);
extern void wf_validate_report(List *problems);
extern bool wf_validate_template(const char *str, char **problem);

/* ----------------------------------------------------------------
 * The sandbox of user code (sandbox.c)
 * ----------------------------------------------------------------
 */
typedef struct WfSandbox
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
} WfSandbox;

extern void wf_sandbox_begin_step(int64 run_id, Oid owner, const char *search_path);
extern void wf_sandbox_end_step(void);
extern Oid	wf_sandbox_current_owner(void);
extern void wf_sandbox_enter(WfSandbox *sb);
extern void wf_sandbox_exit(WfSandbox *sb);

/* ----------------------------------------------------------------
 * Helpers (util.c)
 * ----------------------------------------------------------------
 */
extern int64 wf_util_interval_ms(const char *text);
extern double wf_util_jsonb_get_number(Jsonb *obj, const char *key, double dflt);
extern char *wf_util_jsonb_scalar_text(Jsonb *value);
extern Jsonb *wf_util_datum_to_jsonb(Datum value, Oid typid, bool isnull);
extern char *wf_util_jsonb_get_text(Jsonb *obj, const char *key);
extern Jsonb *wf_util_jsonb_get(Jsonb *obj, const char *key);
extern bool wf_util_extension_ready(void);
extern char *wf_util_extension_version(Oid extoid);
extern long wf_util_ms_until(TimestampTz when);
extern WfErrorClass wf_util_classify_sqlstate(int sqlerrcode);
struct _SPI_plan;				/* executor/spi.h's SPIPlanPtr */
extern ErrorData *wf_util_try_spi(struct _SPI_plan *plan, const char *sql, int nargs,
								  Oid *argtypes, Datum *args, int32 *result);

#endif							/* PG_WORKFLOW_H */
