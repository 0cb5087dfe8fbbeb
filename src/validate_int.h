/*-------------------------------------------------------------------------
 *
 * validate_int.h
 *		What the files of the definition checks share: the state of one
 *		validation, the objects and lists being checked, and the helpers
 *		that check values.
 *
 * validate.c walks a definition (its keys, by the table wfv_features[], and
 * its step lists); validate_values.c checks values (names, intervals, JSON
 * paths, templates, secrets, numbers); validate_steps.c checks the
 * definition's keys and the step policies.  Each step kind's action is
 * checked in the kind's own file, beside its execution (step_sql.c,
 * http_request.c, agent.c, step_wait.c, step_flow.c), by the functions
 * and member tables that wf_step_kinds[] (kinds.c) names.
 *
 * src/validate_int.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_WORKFLOW_VALIDATE_INT_H
#define PG_WORKFLOW_VALIDATE_INT_H

#include "pg_workflow.h"

#include "lib/stringinfo.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"

/* Longest step, branch, agent pool or workflow name, in bytes. */
#define WFV_MAX_NAME		63
/* An agent pool's: its NOTIFY channel, wf_pool_<pool>, is a name too. */
#define WFV_MAX_POOL_NAME	(WFV_MAX_NAME - 8)
/* Most steps in one definition, nested steps included. */
#define WFV_MAX_STEPS		1000
/* Deepest nesting of step lists; the top-level list is level 1. */
#define WFV_MAX_DEPTH		16
/* Largest "max_attempts" of a retry policy. */
#define WFV_MAX_ATTEMPTS	1000
/* Most problems listed in the DETAIL of wf_validate_report(). */
#define WFV_MAX_DETAIL		100

#define WFV_NULL_MESSAGE	"definition must not be null"

/* State of one validation. */
struct WfvState
{
	List	   *problems;		/* WfProblem *, in the order found */
	HTAB	   *names;			/* every valid step name seen so far */
	int			nsteps;			/* steps seen so far, nested ones included */
	bool		stop;			/* too many steps: look at no more of them */
};

/* Entry of WfvState.names. */
typedef struct WfvName
{
	char		name[WFV_MAX_NAME + 1];
} WfvName;

/* One list of steps: the top-level one, a branch of "if" or "parallel"... */
typedef struct WfvList
{
	const char *where;			/* e.g. "then" of step "x"; NULL at the top */
	bool		single;			/* the only step of a "map" */
	int			depth;			/* nesting level, 1 for the top-level list */
	int			nsteps;
	JsonbValue **steps;
	char	  **names;			/* each step's "name" if a string, else NULL */
	int		   *sorted;			/* positions of the named steps, by name */
	int			nsorted;
	bool	   *has_deps;		/* has the step a "dependencies" key? */
	List	  **edges;			/* each step's dependencies, as positions */
	int		   *mark;			/* scratch: finds repeated dependencies */
} WfvList;

typedef struct WfvFeature WfvFeature;

/* An object being checked: the definition, a step, or a step's part. */
struct WfvObject
{
	const char *label;			/* message prefix, NULL for the definition */
	const char *within;			/* "compensate" for a compensate action */
	JsonbContainer *obj;
	const WfStepKind *action;	/* the only action, once found */
	int			depth;			/* level of the step's list, 0 at the top */
	WfvList    *list;			/* list holding the step, if a step */
	int			index;			/* position of the step in that list */
};

/* Checks the value of one key; path names it in messages. */
typedef void (*WfvCheck) (WfvState *st, WfvObject *o, const char *path,
						  JsonbValue *value);

/*
 * One key of an object and the check of its value: the members of an
 * action's object, or a kind's companions (step keys allowed only with its
 * action).  A table of them ends with an entry whose key is NULL.
 */
struct WfvMember
{
	const char *key;
	bool		required;		/* a problem when the key is missing */
	WfvCheck	check;			/* checks the value; NULL if nothing to do */
};

typedef enum WfvRole
{
	WFV_DOCUMENT = 1 << 0,		/* a key of the definition itself */
	WFV_ACTION = 1 << 1,		/* a step's action: exactly one per step */
	WFV_COMPANION = 1 << 2,		/* a kind's companion (WfStepKind) */
	WFV_POLICY = 1 << 3,		/* a step key allowed with every action */
	WFV_STRATEGY = 1 << 4		/* a value of "on_error" */
} WfvRole;

/* An entry of wfv_features[]. */
struct WfvFeature
{
	const char *name;			/* the key, or the strategy */
	WfvRole		role;			/* not WFV_ACTION or WFV_COMPANION */
	WfvCheck	check;			/* checks the value; NULL if nothing to do */
	bool		supported;		/* false: rejected as not supported yet */
};

typedef Datum (*WfvParser) (const char *str);

/* Value checks in the form of a WfvCheck (validate_values.c) */
extern void wfv_check_text(WfvState *st, WfvObject *o, const char *path,
						   JsonbValue *v);
extern void wfv_check_interval(WfvState *st, WfvObject *o, const char *path,
							   JsonbValue *v);
extern void wfv_check_jsonpath(WfvState *st, WfvObject *o, const char *path,
							   JsonbValue *v);
extern void wfv_check_template(WfvState *st, WfvObject *o, const char *path,
							   JsonbValue *v);
extern void wfv_check_templates(WfvState *st, WfvObject *o, const char *path,
								JsonbValue *v);
extern void wfv_check_count(WfvState *st, WfvObject *o, const char *path,
							JsonbValue *v);

/* Policies and the definition's keys (validate_steps.c) */
extern void wfv_check_retry(WfvState *st, WfvObject *o, const char *path,
							JsonbValue *v);
extern void wfv_check_on_error(WfvState *st, WfvObject *o, const char *path,
							   JsonbValue *v);
extern void wfv_check_top_steps(WfvState *st, WfvObject *o, const char *path,
								JsonbValue *v);
extern void wfv_check_dependencies(WfvState *st, WfvObject *o,
								   const char *path, JsonbValue *v);
extern void wfv_check_compensate(WfvState *st, WfvObject *o, const char *path,
								 JsonbValue *v);
extern void wfv_check_circuit_breaker(WfvState *st, WfvObject *o,
									  const char *path, JsonbValue *v);
extern void wfv_check_concurrency(WfvState *st, WfvObject *o,
								  const char *path, JsonbValue *v);
extern void wfv_check_rate_limit(WfvState *st, WfvObject *o,
								 const char *path, JsonbValue *v);
extern void wfv_problem(WfvState *st, const char *label, int sqlstate,
						const char *fmt,...) pg_attribute_printf(4, 5);
extern const WfvFeature *wfv_find(int roles, const char *name, int len);
extern const char **wfv_feature_names(WfvRole role);
extern char *wfv_join(const char *const *items, bool quote_and);
extern const char *wfv_path(WfvObject *o, const char *key);
extern char *wfv_sub(const char *path, const char *key);
extern JsonbValue *wfv_get(JsonbContainer *obj, const char *key,
						   JsonbValue *res);
extern JsonbValue *wfv_member(WfvState *st, const char *label,
							  JsonbContainer *obj, const char *key,
							  const char *path, bool required,
							  JsonbValue *res);
extern bool wfv_is_object(JsonbValue *v);
extern bool wfv_is_array(JsonbValue *v);
extern void wfv_unknown_keys(WfvState *st, const char *label,
							 JsonbContainer *obj, const char *const *keys,
							 int roles, const char *path);
extern bool wfv_try_parse(WfvParser parser, const char *str, Datum *result,
						  ErrorData **error);
extern Datum wfv_parse_jsonpath(const char *str);
extern Datum wfv_parse_sql(const char *str);
extern char *wfv_string(WfvState *st, const char *label, const char *path,
						JsonbValue *v, bool nonempty);
extern JsonbContainer *wfv_object(WfvState *st, const char *label,
								  const char *path, JsonbValue *v);
extern bool wfv_name_chars(const char *s);
extern bool wfv_check_name(WfvState *st, const char *label, const char *path,
						   const char *name, bool restricted);
extern Interval *wfv_interval(WfvState *st, const char *label,
							  const char *path, JsonbValue *v);
extern bool wfv_jsonpath(WfvState *st, const char *label, const char *path,
						 JsonbValue *v);
extern bool wfv_template(WfvState *st, const char *label, const char *path,
						 JsonbValue *v);
extern void wfv_any_templates(WfvState *st, const char *label,
							  const char *path, JsonbValue *v);
extern void wfv_secrets_of(WfvState *st, const char *label, StringInfo path,
						   JsonbContainer *obj, const char *const *skip);
extern void wfv_step_secrets(WfvState *st, const char *label,
							 StringInfo path, JsonbContainer *obj);
extern bool wfv_integer(WfvState *st, const char *label, const char *path,
						JsonbValue *v, int32 min, int32 max);
extern const char *wfv_enum(WfvState *st, const char *label,
							const char *path, JsonbValue *v,
							const char *const *values);
extern bool wfv_ok_status(JsonbValue *v);
extern void wfv_members(WfvState *st, WfvObject *o, JsonbContainer *c,
						const char *path, const WfvMember *members);
extern void wfv_check_action(WfvState *st, WfvObject *o);
extern void wfv_check_companions(WfvState *st, WfvObject *o);
extern void wfv_step_array(WfvState *st, WfvObject *o, const char *path,
						   JsonbValue *v, bool nonempty);
extern void wfv_nested(WfvState *st, WfvObject *o, const char *path,
					   JsonbValue **steps, int nsteps, bool single);
extern int	wfv_list_find(WfvList *list, const char *name);
extern void wfv_step(WfvState *st, WfvList *list, int index);

/*
 * Each kind's checks, in the kind's file: of its action's value, and the
 * kind's companions (NULL-key-terminated), as wf_step_kinds[] names them.
 */
extern void wf_sql_check(WfvState *st, WfvObject *o, const char *path,
						 JsonbValue *v);
extern void wf_http_check(WfvState *st, WfvObject *o, const char *path,
						  JsonbValue *v);
extern void wf_agent_check(WfvState *st, WfvObject *o, const char *path,
						   JsonbValue *v);
extern const WfvMember wf_agent_companions[];
extern void wf_wait_for_check(WfvState *st, WfvObject *o, const char *path,
							  JsonbValue *v);
extern void wf_wait_human_check(WfvState *st, WfvObject *o, const char *path,
								JsonbValue *v);
extern void wf_wait_sleep_check(WfvState *st, WfvObject *o, const char *path,
								JsonbValue *v);
extern void wf_flow_workflow_check(WfvState *st, WfvObject *o,
								   const char *path, JsonbValue *v);
extern const WfvMember wf_flow_workflow_companions[];
extern void wf_flow_if_check(WfvState *st, WfvObject *o, const char *path,
							 JsonbValue *v);
extern const WfvMember wf_flow_if_companions[];
extern void wf_flow_parallel_check(WfvState *st, WfvObject *o,
								   const char *path, JsonbValue *v);
extern void wf_flow_map_check(WfvState *st, WfvObject *o, const char *path,
							  JsonbValue *v);

#endif							/* PG_WORKFLOW_VALIDATE_INT_H */
