-- events: one row per valid viewing session in events.csv, with watched_at
-- in UTC ('Z' and offsets converted; a timestamp without one is taken as UTC;
-- unix seconds or milliseconds and plain dates are accepted too).
-- A row with any problem below is skipped and reported: the model cannot use
-- an event without a known user, a known item, seconds and a time. Events of
-- users missing from users.csv are kept: those users are known by behaviour.
-- Ids and times follow id_problem and timestamp_problem (sql/05_rules.sql);
-- the present is the one row of the clock view (engine/clock.py). The live
-- path (POST /events, ingest) runs this same statement.
create temp table events_checked as
with source as (
    select
        file,
        rec_no,
        nullif(trim(user_id), '') as user_id,
        nullif(trim(item_id), '') as item_id,
        nullif(lower(trim(event_type)), '') as event_type,
        nullif(trim(watch_seconds), '') as seconds_text,
        nullif(trim("timestamp"), '') as timestamp_text
    from raw_events
),

parsed as (
    select
        *,
        case
            when regexp_full_match(seconds_text, '[0-9]{1,12}(\.[0-9]*)?')
                then cast(seconds_text as double)
        end as watch_seconds,
        -- Unix time: 9-10 digits are seconds (1973-2286, a fraction allowed),
        -- 12-13 digits milliseconds; any other text is a date ('2024-01-05',
        -- midnight UTC) or a date and time. try_cast turns text that is no
        -- time (or no real date) into null; a timestamptz is an instant,
        -- stored as a plain UTC timestamp. (DuckDB's epoch_us/make_timestamp
        -- run 4x faster than timezone('UTC', ...).)
        case
            when regexp_full_match(timestamp_text, '[0-9]{9,10}(\.[0-9]{1,6})?')
                then make_timestamp(cast(round(cast(timestamp_text as double) * 1000000) as bigint))
            when regexp_full_match(timestamp_text, '[0-9]{12,13}')
                then make_timestamp(cast(timestamp_text as bigint) * 1000)
            else make_timestamp(epoch_us(try_cast(timestamp_text as timestamptz)))
        end as watched_at
    from source
),

-- One column per field: the first of its rules the field fails, or null.
-- The live path names every one of them; a loaded row is reported with its
-- first problem in this order (an unlisted item only once the rest is
-- readable), as row_problem in problem_column.
checked as (
    select
        parsed.*,
        case
            when parsed.user_id is null then 'user_id is blank'
            else id_problem(parsed.user_id, 'user_id')
        end as problem_user_id,
        case
            when parsed.item_id is null then 'item_id is blank'
            else id_problem(parsed.item_id, 'item_id')
        end as problem_item_id,
        case
            when parsed.event_type is null then 'event_type is blank'
            when event_types.event_type is null
                then 'unknown event_type ' || quoted(parsed.event_type) || ' (accepted: '
                    || (select string_agg(event_type, ', ' order by event_type) from event_types) || ')'
        end as problem_event_type,
        case
            when seconds_text is null then 'watch_seconds is blank'
            when regexp_full_match(seconds_text, '-[0-9.]+') then 'watch_seconds ' || quoted(seconds_text) || ' is negative'
            when parsed.watch_seconds is null then 'watch_seconds ' || quoted(seconds_text) || ' is not a number of seconds'
            when parsed.watch_seconds > 86400 then 'watch_seconds ' || quoted(seconds_text) || ' is more than a day in one session'
        end as problem_watch_seconds,
        case
            when timestamp_text is null then 'timestamp is blank'
            when watched_at is null then 'timestamp ' || quoted(timestamp_text) || ' is not a date and time'
            else timestamp_problem(watched_at, timestamp_text, clock.now_at)
        end as problem_timestamp,
        case
            when items.item_id is null and parsed.item_id is not null and id_problem(parsed.item_id, 'item_id') is null
                then 'item_id ' || quoted(parsed.item_id) || ' is not in items.csv'
        end as problem_item_listed
    from parsed
    cross join clock
    left join event_types on event_types.event_type = parsed.event_type
    left join items on items.item_id = parsed.item_id
),

final as (
    select
        *,
        coalesce(
            problem_user_id,
            problem_item_id,
            problem_event_type,
            problem_watch_seconds,
            problem_timestamp,
            problem_item_listed
        ) as row_problem,
        case
            when problem_user_id is not null then 'user_id'
            when problem_item_id is not null then 'item_id'
            when problem_event_type is not null then 'event_type'
            when problem_watch_seconds is not null then 'watch_seconds'
            when problem_timestamp is not null then 'timestamp'
            when problem_item_listed is not null then 'item_id'
        end as problem_column
    from checked
)

select * from final;

insert into load_issue_records (file, rec_no, column_name, problem, action)
select file, rec_no, problem_column, row_problem, 'row skipped'
from events_checked
where row_problem is not null;

create table events as
select
    user_id,
    item_id,
    event_type,
    watch_seconds,
    watched_at
from events_checked
where row_problem is null;
