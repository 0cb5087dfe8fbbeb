/*-------------------------------------------------------------------------
 *
 * schedule_next.c
 *		The next time a schedule fires, strictly after a given time: cron
 *		fields read in the wall clock of a time zone, "every N unit" at the
 *		multiples of its interval.  schedule.c parses schedules, says the
 *		rules followed here (time zone transitions, never-firing
 *		schedules), and has the entry points.
 *
 * The next time is found by walking the fields (month, then day, then hour,
 * then minute, carrying over), one bit mask per field, never minute by
 * minute.  The walk runs in local time within each stretch of constant UTC
 * offset between two transitions of the zone, so that transitions are
 * handled exactly rather than by probing.
 *
 * src/schedule_next.c
 *
 *-------------------------------------------------------------------------
 */

#include "pg_workflow.h"

#include "common/int.h"
#include "datatype/timestamp.h"
#include "miscadmin.h"
#include "pgtime.h"
#include "port/pg_bitutils.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"

#include "schedule_int.h"

/* A cron schedule that does not fire within this many years never does. */
#define WF_SCHEDULE_CYCLE_YEARS 400

/*
 * Transitions of a zone closer than this to an instant are looked for when
 * computing its stretch of constant offset; no zone's offsets differ by
 * as much.
 */
#define WF_SCHEDULE_LOOKBACK_SECS	(2 * SECS_PER_DAY)

#define WF_SCHEDULE_ALL_WDAYS	UINT64CONST(0x7F)

/* The first year no timestamp reaches (TIMESTAMP_END_JULIAN). */
#define WF_SCHEDULE_END_YEAR	294277

/* Unix time of PostgreSQL's epoch, 2000-01-01 00:00:00 UTC. */
#define WF_SCHEDULE_EPOCH_UNIX \
	((pg_time_t) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY)

/*
 * A stretch of time during which a zone's UTC offset does not change, and
 * the transition that began it.
 */
typedef struct WfScheduleSegment
{
	TimestampTz start;			/* the transition that began it, or
								 * DT_NOBEGIN if none in the lookback */
	TimestampTz end;			/* the next transition, or DT_NOEND */
	int64		offset;			/* local time = UTC + offset, microseconds */
	int64		prev_offset;	/* the offset before start */
} WfScheduleSegment;

static void wf_schedule_never_fires(const char *schedule) pg_attribute_noreturn();

/* ----------------------------------------------------------------
 * Next firing time
 * ----------------------------------------------------------------
 */

static void
wf_schedule_never_fires(const char *schedule)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid schedule \"%s\": it never fires", schedule),
			 errdetail("No date matches its day-of-month, month and day-of-week fields.")));
	pg_unreachable();
}

/* The lowest bit of mask at position "from" or above, or -1. */
static inline int
wf_schedule_next_bit(uint64 mask, int from)
{
	if (from >= 64)
		return -1;
	mask &= ~UINT64CONST(0) << from;
	return mask == 0 ? -1 : pg_rightmost_one_pos64(mask);
}

/* Does the date match the day-of-month and day-of-week fields? */
static inline bool
wf_schedule_day_matches(const WfScheduleSpec *spec, int year, int mon, int mday)
{
	bool		dom = (spec->mdays >> mday) & 1;
	bool		dow = (spec->wdays >> j2day(date2j(year, mon, mday))) & 1;

	if (spec->mday_star || spec->wday_star)
		return dom && dow;
	return dom || dow;
}

/*
 * The first whole minute of local time strictly after local time x (both
 * timestamps without time zone) that the cron fields match.
 */
Timestamp
wf_schedule_next_local(const WfScheduleSpec *spec, const char *schedule,
					   Timestamp x)
{
	int64		days = x / USECS_PER_DAY;
	int64		rem = x % USECS_PER_DAY;
	int			minute_of_day;
	int			year;
	int			mon;
	int			mday;
	int			hour;
	int			min;
	int			limit;
	bool		day_by_bits;

	if (rem < 0)
	{
		rem += USECS_PER_DAY;
		days--;
	}
	minute_of_day = (int) (rem / USECS_PER_MINUTE) + 1;
	if (minute_of_day == MINS_PER_HOUR * HOURS_PER_DAY)
	{
		minute_of_day = 0;
		days++;
	}
	j2date((int) (days + POSTGRES_EPOCH_JDATE), &year, &mon, &mday);
	hour = minute_of_day / MINS_PER_HOUR;
	min = minute_of_day % MINS_PER_HOUR;
	limit = year + WF_SCHEDULE_CYCLE_YEARS + 1;

	/*
	 * When any day of the week will do, the next matching day is the next
	 * bit of the day-of-month mask.
	 */
	day_by_bits = (spec->mday_star || spec->wday_star) &&
		spec->wdays == WF_SCHEDULE_ALL_WDAYS;

	for (;;)
	{
		int			next;
		int			mdays_in_month;

		if (year >= WF_SCHEDULE_END_YEAR)
			ereport(ERROR,
					(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
					 errmsg("timestamp out of range")));
		if (year > limit)
			wf_schedule_never_fires(schedule);

		/* Month */
		next = wf_schedule_next_bit(spec->months, mon);
		if (next < 0)
		{
			year++;
			mon = 1;
			mday = 1;
			hour = min = 0;
			continue;
		}
		if (next != mon)
		{
			mon = next;
			mday = 1;
			hour = min = 0;
		}

		/* Day */
		mdays_in_month = day_tab[isleap(year) ? 1 : 0][mon - 1];
		if (mday <= mdays_in_month &&
			!wf_schedule_day_matches(spec, year, mon, mday))
		{
			hour = min = 0;
			if (day_by_bits)
			{
				next = wf_schedule_next_bit(spec->mdays, mday);
				mday = next < 0 ? mdays_in_month + 1 : next;
			}
			else
			{
				mday++;
				continue;
			}
		}
		if (mday > mdays_in_month)
		{
			mon++;
			mday = 1;
			hour = min = 0;
			continue;
		}

		/* Hour */
		next = wf_schedule_next_bit(spec->hours, hour);
		if (next < 0 || next >= HOURS_PER_DAY)
		{
			mday++;
			hour = min = 0;
			continue;
		}
		if (next != hour)
		{
			hour = next;
			min = 0;
		}

		/* Minute */
		next = wf_schedule_next_bit(spec->minutes, min);
		if (next < 0 || next >= MINS_PER_HOUR)
		{
			hour++;
			min = 0;
			continue;
		}
		min = next;
		break;
	}

	return (int64) (date2j(year, mon, mday) - POSTGRES_EPOCH_JDATE) * USECS_PER_DAY +
		(int64) (hour * MINS_PER_HOUR + min) * USECS_PER_MINUTE;
}

/* Unix time of an instant, rounded down to the second. */
static pg_time_t
wf_schedule_to_unix(TimestampTz t)
{
	int64		secs = t / USECS_PER_SEC;

	if (t % USECS_PER_SEC < 0)
		secs--;
	return (pg_time_t) secs + WF_SCHEDULE_EPOCH_UNIX;
}

/* The instant of a Unix time; DT_NOEND when beyond the timestamp range. */
static TimestampTz
wf_schedule_from_unix(pg_time_t t)
{
	if (t - WF_SCHEDULE_EPOCH_UNIX >= END_TIMESTAMP / USECS_PER_SEC)
		return DT_NOEND;
	return (TimestampTz) (t - WF_SCHEDULE_EPOCH_UNIX) * USECS_PER_SEC;
}

/* The stretch of constant UTC offset that contains instant s. */
static void
wf_schedule_segment(pg_tz *tz, TimestampTz s, WfScheduleSegment *seg)
{
	pg_time_t	t = wf_schedule_to_unix(s);
	pg_time_t	probe = t - WF_SCHEDULE_LOOKBACK_SECS;
	pg_time_t	boundary;
	long int	before_gmtoff;
	long int	after_gmtoff;
	int			before_isdst;
	int			after_isdst;
	int			r;
	int			i;

	/*
	 * The last transition at or before t, if one is that recent.  (Zones
	 * have at most a couple of transitions in the lookback; the bound only
	 * guards against a corrupt zone.)
	 */
	seg->start = DT_NOBEGIN;
	seg->prev_offset = 0;
	for (i = 0; i < 100; i++)
	{
		r = pg_next_dst_boundary(&probe, &before_gmtoff, &before_isdst,
								 &boundary, &after_gmtoff, &after_isdst, tz);
		if (r < 0)
			elog(ERROR, "could not find the transitions of time zone \"%s\"",
				 pg_get_timezone_name(tz));
		if (r == 0 || boundary > t)
			break;
		seg->start = wf_schedule_from_unix(boundary);
		seg->prev_offset = (int64) before_gmtoff * USECS_PER_SEC;
		probe = boundary;
	}

	/* The offset in force at t, and the next transition. */
	r = pg_next_dst_boundary(&t, &before_gmtoff, &before_isdst,
							 &boundary, &after_gmtoff, &after_isdst, tz);
	if (r < 0)
		elog(ERROR, "could not find the transitions of time zone \"%s\"",
			 pg_get_timezone_name(tz));
	seg->offset = (int64) before_gmtoff * USECS_PER_SEC;
	seg->end = (r == 1) ? wf_schedule_from_unix(boundary) : DT_NOEND;
}

/*
 * The first instant strictly after "after" at which cron fields fire in
 * zone tz.
 *
 * Within a stretch [start, end) of constant offset, an instant fires when
 * its local time matches, except in the window after a fall-back
 * transition where local times repeat those already shown, and besides in
 * the window after a spring-forward transition where the skipped local
 * times land when read with the previous offset.  Stretches without a
 * firing time are passed over; so is a long run of them, since the local
 * search already knows its first match.
 */
TimestampTz
wf_schedule_next_cron(const WfScheduleSpec *spec, const char *schedule,
					  TimestampTz after, pg_tz *tz)
{
	TimestampTz cur = after;
	int			i;

	for (i = 0; i < 10000; i++)
	{
		WfScheduleSegment seg;
		TimestampTz lo = cur;
		TimestampTz best = DT_NOEND;
		TimestampTz first;

		CHECK_FOR_INTERRUPTS();
		wf_schedule_segment(tz, cur + 1, &seg);

		if (seg.start != DT_NOBEGIN && seg.prev_offset > seg.offset)
		{
			/* Fall back: the first instant whose local time is new. */
			TimestampTz new_from = seg.start + (seg.prev_offset - seg.offset);

			if (lo < new_from - 1)
				lo = new_from - 1;
		}
		first = wf_schedule_next_local(spec, schedule, lo + seg.offset) - seg.offset;
		if (first < seg.end)
			best = first;

		if (seg.start != DT_NOBEGIN && seg.prev_offset < seg.offset)
		{
			/* Spring forward: the skipped local times, as PostgreSQL reads them. */
			TimestampTz window_end = seg.start + (seg.offset - seg.prev_offset);

			if (cur < window_end - 1)
			{
				TimestampTz skipped;

				skipped = wf_schedule_next_local(spec, schedule,
												 cur + seg.prev_offset) - seg.prev_offset;
				if (skipped < window_end && skipped < seg.end && skipped < best)
					best = skipped;
			}
		}

		if (best != DT_NOEND)
		{
			if (!IS_VALID_TIMESTAMP(best))
				ereport(ERROR,
						(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
						 errmsg("timestamp out of range")));
			return best;
		}

		/*
		 * Nothing in this stretch.  No local time before the first match
		 * fires, so nothing does until shortly before it (offsets change by
		 * less than the lookback).
		 */
		Assert(seg.end != DT_NOEND);
		cur = Max(seg.end - 1, first - WF_SCHEDULE_LOOKBACK_SECS * USECS_PER_SEC);
	}
	elog(ERROR, "could not compute the next time of schedule \"%s\"", schedule);
	return 0;					/* keep compiler quiet */
}

/* The first multiple of interval since PostgreSQL's epoch after "after". */
TimestampTz
wf_schedule_next_every(int64 interval, TimestampTz after)
{
	int64		slots = after / interval;
	TimestampTz result;

	if (after % interval < 0)
		slots--;
	if (pg_mul_s64_overflow(slots + 1, interval, &result) ||
		!IS_VALID_TIMESTAMP(result))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range")));
	return result;
}

/*
 * The zone of a name, as the TimeZone setting reads it: a number of hours
 * east of UTC, or a zone name (including POSIX specifications such as
 * "<+02>-02", the form SHOW TimeZone gives fixed offsets).
 */
pg_tz *
wf_schedule_lookup_tz(const char *tzname)
{
	pg_tz	   *tz = NULL;
	char	   *end;
	double		hours;

	if (tzname[0] != '\0')
	{
		hours = strtod(tzname, &end);
		if (end != tzname && *end == '\0')
		{
			if (hours >= -15.0 && hours <= 15.0)
				tz = pg_tzset_offset((long) (-hours * SECS_PER_HOUR));
		}
		else
			tz = pg_tzset(tzname);
	}
	if (tz == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("time zone \"%s\" not recognized", tzname)));
	if (!pg_tz_acceptable(tz))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("time zone \"%s\" appears to use leap seconds", tzname),
				 errdetail("PostgreSQL does not support leap seconds.")));
	return tz;
}
