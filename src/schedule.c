/*-------------------------------------------------------------------------
 *
 * schedule.c
 *		Schedules of wf_schedule(): parsing cron expressions and "every N
 *		unit" intervals, and computing the next time a schedule fires.
 *
 * A schedule is one of
 *
 *	- five cron fields "minute hour day-of-month month day-of-week".  Each
 *	  field is a comma-separated list of elements, an element being "*", a
 *	  number, a range "a-b", or "*" or a range followed by a step "/n".
 *	  Months (JAN-DEC) and days of the week (SUN-SAT) may be named, in any
 *	  case; day of week 7 is Sunday, like 0.
 *	- a macro: @yearly or @annually ("0 0 1 1 *"), @monthly ("0 0 1 * *"),
 *	  @weekly ("0 0 * * 0"), @daily or @midnight ("0 0 * * *"), @hourly
 *	  ("0 * * * *").
 *	- "every N unit", unit being second, minute, hour, day or week (or a
 *	  plural), N a positive integer; "every minute" means "every 1 minute".
 *
 * Semantics decided here:
 *
 *	- Cron fields are Vixie cron's.  When the day-of-month and day-of-week
 *	  fields are both restricted, a day matches if either matches; a field
 *	  counts as unrestricted when it begins with "*" (so "*" followed by a
 *	  step does too, as in Vixie cron and cronie), and then a day must
 *	  match both.  A single value with a step ("5/15") is rejected rather
 *	  than guessed at.
 *
 *	- Cron fields are matched against the wall clock of a time zone (any
 *	  name the TimeZone setting accepts).  A wall-clock time that does not
 *	  exist, skipped by a spring-forward transition, fires where PostgreSQL
 *	  puts it: like '2026-03-08 02:30'::timestamp AT TIME ZONE
 *	  'America/New_York', it is read with the offset in force before the
 *	  transition, so 02:30 fires at 03:30 EDT.  (Hence "30 2 * * *" fires
 *	  at 03:30 that day, and "*" for hours keeps firing once an hour.)  A
 *	  wall-clock time that occurs twice, in the hour repeated by a
 *	  fall-back transition, fires once, at its first occurrence: the
 *	  repeated hour fires nothing that already fired.  Strictly periodic
 *	  schedules should use "every N unit".
 *
 *	- "every N unit" fires at the multiples of N units counted from
 *	  2000-01-01 00:00:00 UTC (PostgreSQL's epoch), whatever the time zone:
 *	  every executor, before and after a restart, computes the same slots.
 *	  So "every 1 day" fires at midnight UTC, and "every 1 week" at
 *	  midnight UTC between Friday and Saturday (2000-01-01 was a Saturday).
 *
 *	- The next time is the first firing time strictly after the given
 *	  time.  A cron schedule whose day-of-month and month fields never
 *	  meet ("0 0 30 2 *") is rejected as never firing: the Gregorian
 *	  calendar repeats every 400 years, so a search that finds nothing
 *	  within 400 years proves it.
 *
 * The next time is found by walking the fields (month, then day, then hour,
 * then minute, carrying over), one bit mask per field, never minute by
 * minute.  The walk runs in local time within each stretch of constant UTC
 * offset between two transitions of the zone, so that transitions are
 * handled exactly rather than by probing.
 *
 * src/schedule.c
 *
 *-------------------------------------------------------------------------
 */

#include "pg_workflow.h"

#include "common/int.h"
#include "datatype/timestamp.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "pgtime.h"
#include "port/pg_bitutils.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"

PG_FUNCTION_INFO_V1(wf_schedule_next);
PG_FUNCTION_INFO_V1(wf_schedule_check);

/* Longer schedules are refused before anything else is said about them. */
#define WF_SCHEDULE_MAX_LENGTH	1000

/* Tokens of a schedule kept for parsing; more are only counted. */
#define WF_SCHEDULE_MAX_TOKENS	8

/* The longest interval of "every N unit". */
#define WF_SCHEDULE_MAX_EVERY_DAYS	36525

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

#define WF_SCHEDULE_HINT \
	"A schedule is five cron fields \"minute hour day-of-month month day-of-week\" " \
	"such as '0 * * * *' or '*/15 9-17 * * MON-FRI', a macro among @yearly, " \
	"@monthly, @weekly, @daily and @hourly, or \"every N unit\" with unit " \
	"second, minute, hour, day or week, such as 'every 15 minutes'."

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

/* What a cron field accepts. */
typedef struct WfScheduleField
{
	const char *name;			/* in messages */
	int			min;
	int			max;
	const char *const *names;	/* names of values names_base, ... or NULL */
	int			names_base;
	const char *name_kind;		/* "unknown %s name" */
	bool		seven_is_zero;	/* day of week 7 is Sunday, like 0 */
} WfScheduleField;

static const char *const wf_schedule_month_names[] = {
	"jan", "feb", "mar", "apr", "may", "jun",
	"jul", "aug", "sep", "oct", "nov", "dec", NULL
};

static const char *const wf_schedule_day_names[] = {
	"sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL
};

enum
{
	WF_SCHEDULE_MINUTE,
	WF_SCHEDULE_HOUR,
	WF_SCHEDULE_MDAY,
	WF_SCHEDULE_MONTH,
	WF_SCHEDULE_WDAY,
	WF_SCHEDULE_NFIELDS
};

static const WfScheduleField wf_schedule_fields[WF_SCHEDULE_NFIELDS] = {
	{"minute", 0, 59, NULL, 0, NULL, false},
	{"hour", 0, 23, NULL, 0, NULL, false},
	{"day of month", 1, 31, NULL, 0, NULL, false},
	{"month", 1, 12, wf_schedule_month_names, 1, "month", false},
	{"day of week", 0, 7, wf_schedule_day_names, 0, "day", true},
};

/* The macros and what they stand for. */
static const struct
{
	const char *name;
	const char *cron;
}			wf_schedule_macros[] = {
	{"@yearly", "0 0 1 1 *"},
	{"@annually", "0 0 1 1 *"},
	{"@monthly", "0 0 1 * *"},
	{"@weekly", "0 0 * * 0"},
	{"@daily", "0 0 * * *"},
	{"@midnight", "0 0 * * *"},
	{"@hourly", "0 * * * *"},
};

/* The units of "every N unit". */
static const struct
{
	const char *name;
	int64		usecs;
}			wf_schedule_units[] = {
	{"second", USECS_PER_SEC},
	{"minute", USECS_PER_MINUTE},
	{"hour", USECS_PER_HOUR},
	{"day", USECS_PER_DAY},
	{"week", 7 * USECS_PER_DAY},
};

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

static void wf_schedule_fail(const char *schedule, const char *fmt,...)
			pg_attribute_printf(2, 3) pg_attribute_noreturn();
static void wf_schedule_never_fires(const char *schedule) pg_attribute_noreturn();

/* ----------------------------------------------------------------
 * Parsing
 * ----------------------------------------------------------------
 */

/*
 * Raises the error for a malformed schedule, the problem being described by
 * fmt and its arguments.
 */
static void
wf_schedule_fail(const char *schedule, const char *fmt,...)
{
	StringInfoData problem;

	initStringInfo(&problem);
	for (;;)
	{
		va_list		args;
		int			needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(&problem, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(&problem, needed);
	}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid schedule \"%s\": %s", schedule, problem.data),
			 errhint(WF_SCHEDULE_HINT)));
	pg_unreachable();
}

static void
wf_schedule_never_fires(const char *schedule)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid schedule \"%s\": it never fires", schedule),
			 errdetail("No date matches its day-of-month, month and day-of-week fields.")));
	pg_unreachable();
}

static inline bool
wf_schedule_is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
		c == '\v';
}

static inline bool
wf_schedule_is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static inline bool
wf_schedule_is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/*
 * Reads the digits at *p into a number, saturating at a value larger than
 * any field accepts.  Advances *p past them.
 */
static int64
wf_schedule_read_digits(const char **p)
{
	const char *s = *p;
	int64		value = 0;

	while (wf_schedule_is_digit(*s))
	{
		if (value < PG_INT32_MAX)
			value = value * 10 + (*s - '0');
		s++;
	}
	*p = s;
	return value;
}

/*
 * Splits a schedule into its whitespace-separated tokens, keeping copies of
 * the first "max" in tokens[].  Returns how many there are.
 */
static int
wf_schedule_split(const char *schedule, char **tokens, int max)
{
	const char *p = schedule;
	int			n = 0;

	for (;;)
	{
		const char *start;

		while (wf_schedule_is_space(*p))
			p++;
		if (*p == '\0')
			break;
		start = p;
		while (*p != '\0' && !wf_schedule_is_space(*p))
			p++;
		if (n < max)
			tokens[n] = pnstrdup(start, p - start);
		n++;
	}
	return n;
}

/*
 * Reads a number or a name of field f at *p, and advances *p past it.
 * "field" is the whole field, for messages.
 */
static int
wf_schedule_parse_value(const char *schedule, const WfScheduleField *f,
						const char *field, const char **p)
{
	const char *start = *p;
	const char *s = start;
	int			value = -1;

	if (wf_schedule_is_digit(*s))
	{
		int64		v = wf_schedule_read_digits(&s);

		if (v < f->min || v > f->max)
			wf_schedule_fail(schedule, "%s %.*s is out of range %d-%d",
							 f->name, (int) (s - start), start, f->min, f->max);
		value = (int) v;
	}
	else if (wf_schedule_is_alpha(*s) && f->names != NULL)
	{
		int			i;

		while (wf_schedule_is_alpha(*s))
			s++;
		if (s - start == 3)
		{
			for (i = 0; f->names[i] != NULL; i++)
			{
				if (pg_strncasecmp(start, f->names[i], 3) == 0)
				{
					value = f->names_base + i;
					break;
				}
			}
		}
		if (value < 0)
			wf_schedule_fail(schedule, "unknown %s name \"%.*s\"",
							 f->name_kind, (int) (s - start), start);
	}
	else
		wf_schedule_fail(schedule, "invalid %s field \"%s\"", f->name, field);
	*p = s;
	return value;
}

/*
 * Parses one element of a list: "*", a value, a range, with or without a
 * step.  Returns its bits.
 */
static uint64
wf_schedule_parse_element(const char *schedule, const WfScheduleField *f,
						  const char *field, const char *element)
{
	const char *p = element;
	int			lo;
	int			hi;
	int			step = 1;
	bool		ranged = false;
	uint64		bits = 0;
	int			v;

	if (*p == '*')
	{
		lo = f->min;
		hi = f->max;
		ranged = true;
		p++;
	}
	else
	{
		lo = hi = wf_schedule_parse_value(schedule, f, field, &p);
		if (*p == '-')
		{
			p++;
			hi = wf_schedule_parse_value(schedule, f, field, &p);
			ranged = true;
		}
	}
	if (*p == '/')
	{
		const char *start;
		int64		n;

		if (!ranged)
			wf_schedule_fail(schedule,
							 "%s element \"%s\" has a step but no range",
							 f->name, element);
		start = ++p;
		if (!wf_schedule_is_digit(*p))
			wf_schedule_fail(schedule, "invalid %s field \"%s\"", f->name, field);
		n = wf_schedule_read_digits(&p);
		if (n < 1 || n > f->max - f->min)
			wf_schedule_fail(schedule, "%s step %.*s is out of range 1-%d",
							 f->name, (int) (p - start), start, f->max - f->min);
		step = (int) n;
	}
	if (*p != '\0')
		wf_schedule_fail(schedule, "invalid %s field \"%s\"", f->name, field);
	if (lo > hi)
		wf_schedule_fail(schedule, "%s range \"%s\" ends before it starts",
						 f->name, element);

	for (v = lo; v <= hi; v += step)
		bits |= UINT64CONST(1) << (v == 7 && f->seven_is_zero ? 0 : v);
	return bits;
}

/*
 * Parses a cron field, a comma-separated list.  Returns its bits; *star
 * tells whether it begins with "*".
 */
static uint64
wf_schedule_parse_field(const char *schedule, const WfScheduleField *f,
						const char *field, bool *star)
{
	const char *p = field;
	uint64		bits = 0;

	*star = (field[0] == '*');
	for (;;)
	{
		const char *end = strchr(p, ',');
		char	   *element;

		if (end == NULL)
			end = p + strlen(p);
		if (end == p)
			wf_schedule_fail(schedule, "empty element in the %s field \"%s\"",
							 f->name, field);
		element = pnstrdup(p, end - p);
		bits |= wf_schedule_parse_element(schedule, f, field, element);
		pfree(element);
		if (*end == '\0')
			break;
		p = end + 1;
	}
	return bits;
}

/* Parses the five fields of cron, already split, into spec. */
static void
wf_schedule_parse_cron(const char *schedule, char **fields, WfScheduleSpec *spec)
{
	bool		star;

	spec->minutes = wf_schedule_parse_field(schedule,
											&wf_schedule_fields[WF_SCHEDULE_MINUTE],
											fields[WF_SCHEDULE_MINUTE], &star);
	spec->hours = wf_schedule_parse_field(schedule,
										  &wf_schedule_fields[WF_SCHEDULE_HOUR],
										  fields[WF_SCHEDULE_HOUR], &star);
	spec->mdays = wf_schedule_parse_field(schedule,
										  &wf_schedule_fields[WF_SCHEDULE_MDAY],
										  fields[WF_SCHEDULE_MDAY],
										  &spec->mday_star);
	spec->months = wf_schedule_parse_field(schedule,
										   &wf_schedule_fields[WF_SCHEDULE_MONTH],
										   fields[WF_SCHEDULE_MONTH], &star);
	spec->wdays = wf_schedule_parse_field(schedule,
										  &wf_schedule_fields[WF_SCHEDULE_WDAY],
										  fields[WF_SCHEDULE_WDAY],
										  &spec->wday_star);
}

/* Parses "every [N] unit"; tokens[0] is "every". */
static void
wf_schedule_parse_every(const char *schedule, char **tokens, int ntokens,
						WfScheduleSpec *spec)
{
	int64		n = 1;
	int			i = 1;
	int			u;
	const char *unit;

	if (ntokens < 2)
		wf_schedule_fail(schedule, "missing unit after \"%s\"", tokens[0]);
	if (wf_schedule_is_digit(tokens[1][0]) || tokens[1][0] == '-' ||
		tokens[1][0] == '+' || tokens[1][0] == '.')
	{
		const char *p = tokens[1];
		bool		negative = false;

		if (*p == '-' || *p == '+')
			negative = (*p++ == '-');
		if (!wf_schedule_is_digit(*p))
			wf_schedule_fail(schedule, "the interval \"%s\" is not a whole number",
							 tokens[1]);
		n = wf_schedule_read_digits(&p);
		if (*p != '\0')
			wf_schedule_fail(schedule, "the interval \"%s\" is not a whole number",
							 tokens[1]);
		if (negative || n == 0)
			wf_schedule_fail(schedule, "the interval must be positive");
		i = 2;
		if (ntokens < 3)
			wf_schedule_fail(schedule, "missing unit after \"%s\"", tokens[1]);
	}

	unit = tokens[i];
	for (u = 0; u < lengthof(wf_schedule_units); u++)
	{
		size_t		len = strlen(wf_schedule_units[u].name);

		if (pg_strncasecmp(unit, wf_schedule_units[u].name, len) == 0 &&
			(unit[len] == '\0' ||
			 ((unit[len] == 's' || unit[len] == 'S') && unit[len + 1] == '\0')))
			break;
	}
	if (u == lengthof(wf_schedule_units))
		wf_schedule_fail(schedule, "unknown unit \"%s\"", unit);
	if (ntokens > i + 1)
		wf_schedule_fail(schedule, "unexpected \"%s\" after the unit",
						 tokens[i + 1]);
	if (n > WF_SCHEDULE_MAX_EVERY_DAYS * USECS_PER_DAY / wf_schedule_units[u].usecs)
		wf_schedule_fail(schedule, "the interval must be at most %d days",
						 WF_SCHEDULE_MAX_EVERY_DAYS);

	spec->every = true;
	spec->interval = n * wf_schedule_units[u].usecs;
}

/* Parses a schedule into spec, or raises an error saying what is wrong. */
static void
wf_schedule_parse(const char *schedule, WfScheduleSpec *spec)
{
	char	   *tokens[WF_SCHEDULE_MAX_TOKENS];
	int			ntokens;

	memset(spec, 0, sizeof(*spec));
	if (strlen(schedule) > WF_SCHEDULE_MAX_LENGTH)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid schedule: it is longer than %d bytes",
						WF_SCHEDULE_MAX_LENGTH)));

	ntokens = wf_schedule_split(schedule, tokens, lengthof(tokens));
	if (ntokens == 0)
		wf_schedule_fail(schedule, "the schedule is empty");

	if (tokens[0][0] == '@')
	{
		int			i;

		for (i = 0; i < lengthof(wf_schedule_macros); i++)
		{
			if (pg_strcasecmp(tokens[0], wf_schedule_macros[i].name) == 0)
				break;
		}
		if (i == lengthof(wf_schedule_macros))
			wf_schedule_fail(schedule, "unknown macro \"%s\"", tokens[0]);
		if (ntokens > 1)
			wf_schedule_fail(schedule, "unexpected \"%s\" after \"%s\"",
							 tokens[1], tokens[0]);
		ntokens = wf_schedule_split(wf_schedule_macros[i].cron, tokens,
									lengthof(tokens));
		Assert(ntokens == WF_SCHEDULE_NFIELDS);
		wf_schedule_parse_cron(schedule, tokens, spec);
		return;
	}

	if (pg_strcasecmp(tokens[0], "every") == 0)
	{
		wf_schedule_parse_every(schedule, tokens, ntokens, spec);
		return;
	}

	if (ntokens != WF_SCHEDULE_NFIELDS)
		wf_schedule_fail(schedule,
						 "expected 5 fields (minute, hour, day of month, month, day of week) but found %d",
						 ntokens);
	wf_schedule_parse_cron(schedule, tokens, spec);
}

/* ----------------------------------------------------------------
 * Next firing time
 * ----------------------------------------------------------------
 */

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
static Timestamp
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
static TimestampTz
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
static TimestampTz
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
static pg_tz *
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

/* ----------------------------------------------------------------
 * Entry points
 * ----------------------------------------------------------------
 */

/*
 * Raises an error if the schedule is malformed or never fires.
 */
void
wf_schedule_validate(const char *schedule)
{
	WfScheduleSpec spec;

	wf_schedule_parse(schedule, &spec);
	/* From 2000-01-01, a 400-year search sees every kind of date. */
	if (!spec.every)
		(void) wf_schedule_next_local(&spec, schedule, -1);
}

/*
 * The first time strictly after "after" at which the schedule fires, cron
 * fields being read in zone tzname.
 */
TimestampTz
wf_schedule_next_time(const char *schedule, TimestampTz after,
					  const char *tzname)
{
	WfScheduleSpec spec;
	pg_tz	   *tz;

	wf_schedule_parse(schedule, &spec);
	tz = wf_schedule_lookup_tz(tzname);
	if (TIMESTAMP_NOT_FINITE(after))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range"),
				 errdetail("A schedule has no next time after an infinite timestamp.")));
	if (spec.every)
		return wf_schedule_next_every(spec.interval, after);
	return wf_schedule_next_cron(&spec, schedule, after, tz);
}

/*
 * wf._schedule_next(schedule text, after timestamptz, tz text DEFAULT 'UTC')
 * RETURNS timestamptz
 */
Datum
wf_schedule_next(PG_FUNCTION_ARGS)
{
	char	   *schedule = text_to_cstring(PG_GETARG_TEXT_PP(0));
	TimestampTz after = PG_GETARG_TIMESTAMPTZ(1);
	char	   *tzname = text_to_cstring(PG_GETARG_TEXT_PP(2));

	PG_RETURN_TIMESTAMPTZ(wf_schedule_next_time(schedule, after, tzname));
}

/*
 * wf._schedule_check(schedule text) RETURNS void
 */
Datum
wf_schedule_check(PG_FUNCTION_ARGS)
{
	wf_schedule_validate(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	PG_RETURN_VOID();
}
