-- Offline evaluation (not part of a build; engine/evaluate.py runs it after
-- loading the CSVs and before computing the model). It hides the test events
-- from the model: the model tables are computed from `events`, which after
-- this holds the training events only.
--   $split = 'global': test = events after the (1 - $test_frac) quantile of time.
--   $split = 'user':   test = each user's last $test_frac of events by time
--                      (at least one; ties in time broken by item_id).

create table all_events as
select * from events;

-- event_split: one row per valid event, with whether it is held out.
create table event_split as
with cutoff as (
    select percentile_disc(1 - $test_frac) within group (order by watched_at) as cutoff_at
    from all_events
),

numbered as (
    select
        all_events.*,
        row_number() over (
            partition by all_events.user_id
            order by all_events.watched_at desc, all_events.item_id desc
        ) as position_from_end,
        count(*) over (partition by all_events.user_id) as count_user_events
    from all_events
)

select
    numbered.* exclude (position_from_end, count_user_events),
    case
        when $split = 'global' then numbered.watched_at > cutoff.cutoff_at
        else numbered.position_from_end <= greatest(1, round(numbered.count_user_events * $test_frac))
    end as is_test
from numbered
cross join cutoff;

create or replace table events as
select * exclude (is_test) from event_split where not is_test;

-- relevant_items: one row per evaluated user and item they watched in the
-- test period but never in training. Evaluated users have at least one
-- training event and at least one such item.
create table relevant_items as
select distinct
    test.user_id,
    test.item_id
from event_split as test
where test.is_test
    and test.user_id in (select user_id from events)
    and not exists (
        select 1 from events as train
        where train.user_id = test.user_id and train.item_id = test.item_id
    );
