/*-------------------------------------------------------------------------
 *
 * schedule_int.h
 *		What the two schedule files share: a schedule as parsed
 *		(schedule.c), and the computation of its next time
 *		(schedule_next.c).
 *
 * src/schedule_int.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef PG_WORKFLOW_SCHEDULE_INT_H
#define PG_WORKFLOW_SCHEDULE_INT_H

#include "pg_workflow.h"

#include "datatype/timestamp.h"
#include "pgtime.h"

/* A parsed schedule. */
typedef struct WfScheduleSpec
{
	bool		every;			/* "every N unit" rather than cron fields */
	int64		interval;		/* every: the period in microseconds */
	/* cron: bit n set when value n matches */
	uint64		minutes;		/* bits 0-59 */
	uint64		hours;			/* bits 0-23 */
	uint64		mdays;			/* bits 1-31 */
	uint64		months;			/* bits 1-12 */
	uint64		wdays;			/* bits 0-6, 0 being Sunday */
	bool		mday_star;		/* the day-of-month field begins with "*" */
	bool		wday_star;		/* the day-of-week field begins with "*" */
} WfScheduleSpec;

/* schedule_next.c */
extern Timestamp wf_schedule_next_local(const WfScheduleSpec *spec,
										const char *schedule, Timestamp x);
extern TimestampTz wf_schedule_next_cron(const WfScheduleSpec *spec,
										 const char *schedule,
										 TimestampTz after, pg_tz *tz);
extern TimestampTz wf_schedule_next_every(int64 interval, TimestampTz after);
extern pg_tz *wf_schedule_lookup_tz(const char *tzname);

#endif							/* PG_WORKFLOW_SCHEDULE_INT_H */
