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

-- trending_top_k: the trend peer, "most watched over the training part's last
-- window_days days". For each user of for_users (a list of user ids), the
-- top_k items by watch_seconds summed over the training events of the window
-- (the window_days days up to the last training event), ties by all-time
-- training watch_seconds, then item_id; items the user watched in training
-- are excluded. Nothing in it is tuned. One row per user and rank.
create or replace macro trending_top_k(window_days, top_k, for_users) as table
with training_end as (
    select max(watched_at) as end_at
    from events
),

per_item as (
    select
        items.item_id,
        coalesce(
            sum(events.watch_seconds) filter (
                where events.watched_at > training_end.end_at - to_days(cast(window_days as integer))
            ),
            0
        ) as window_watch_seconds,
        coalesce(sum(events.watch_seconds), 0) as watch_seconds
    from items
    cross join training_end
    left join events on events.item_id = items.item_id
    group by items.item_id
),

trend as (
    select
        item_id,
        window_watch_seconds,
        row_number() over (order by window_watch_seconds desc, watch_seconds desc, item_id) as trend_rank
    from per_item
),

chosen as (
    -- a user can skip at most as many items of the list as they watched
    select
        chosen_ids.user_id,
        count(distinct events.item_id) as count_watched
    from (select unnest(for_users) as user_id) as chosen_ids
    left join events on events.user_id = chosen_ids.user_id
    group by chosen_ids.user_id
),

final as (
    select
        chosen.user_id,
        trend.item_id,
        trend.window_watch_seconds,
        row_number() over (partition by chosen.user_id order by trend.trend_rank) as rank
    from chosen
    join trend on trend.trend_rank <= chosen.count_watched + top_k
    anti join events on events.user_id = chosen.user_id and events.item_id = trend.item_id
)

select * from final
where rank <= top_k
order by user_id, rank;
