-- The signal: how strongly each user is into each item they watched.
--
-- Seconds mean different things per item (a microdrama episode runs minutes,
-- a movie two hours), so seconds are turned into "full views" of the item:
--   full_views = sum of the user's watch_seconds / the item's estimated length
-- items.csv has no duration, so an item's length is estimated from its plays:
-- the 90th percentile of watch_seconds per play (most plays that reach the
-- end sit there; abandoned plays sit far below). An item with fewer than
-- min_plays_for_length plays takes the typical length of its content type.
--
--   completion = least(full_views, 1)          -- how much of it they saw
--   strength   = log2(1 + least(full_views, max_full_views)) * recency_weight
-- One full view is worth 1, a 20% sample 0.26, a rewatch 1.58: more seconds,
-- more interest, with diminishing returns so a binge does not drown a history.
-- (strength_formula names the alternatives measured against it: 'views',
-- 'binary', raw 'seconds' and 'log_seconds'; see docs/evaluation.md.)
-- recency_weight halves every half_life_days before the last event in the data
-- (half_life_days = 0 turns it off). Parameters live in model_params.

-- item_length: one row per item with at least one play of more than 0 seconds.
create or replace table item_length as
with plays as (
    select
        events.item_id,
        items.content_type,
        events.watch_seconds
    from events
    join items on items.item_id = events.item_id
    where events.watch_seconds > 0
),

per_item as (
    select
        item_id,
        content_type,
        count(*) as count_plays,
        percentile_cont(0.9) within group (order by watch_seconds) as p90_watch_seconds
    from plays
    group by item_id, content_type
),

per_content_type as (
    select
        per_item.content_type,
        percentile_cont(0.5) within group (order by per_item.p90_watch_seconds) as typical_length_seconds
    from per_item
    cross join model_params
    where per_item.count_plays >= model_params.min_plays_for_length
    group by per_item.content_type
),

final as (
    select
        per_item.item_id,
        per_item.count_plays,
        per_item.p90_watch_seconds,
        case
            when per_item.count_plays >= model_params.min_plays_for_length
                or per_content_type.typical_length_seconds is null
                then per_item.p90_watch_seconds
            else greatest(per_content_type.typical_length_seconds, per_item.p90_watch_seconds)
        end as length_seconds,
        case
            when per_item.count_plays >= model_params.min_plays_for_length
                or per_content_type.typical_length_seconds is null
                then 'own plays'
            else 'content type'
        end as length_source
    from per_item
    cross join model_params
    left join per_content_type on per_content_type.content_type = per_item.content_type
)

select * from final;

-- user_item_strength: one row per user and item they have events for.
create or replace table user_item_strength as
with per_pair as (
    select
        user_id,
        item_id,
        count(*) as count_plays,
        sum(watch_seconds) as watch_seconds,
        max(watched_at) as last_watched_at
    from events
    group by user_id, item_id
),

data_end as (
    select max(watched_at) as data_end_at from events
),

user_end as (
    select
        user_id,
        -- user_key: a dense integer standing for user_id inside the model
        cast(row_number() over (order by user_id) as integer) as user_key,
        max(last_watched_at) as user_end_at
    from per_pair
    group by user_id
),

with_views as (
    select
        per_pair.*,
        user_end.user_key,
        items.item_key,
        item_length.length_seconds,
        full_views(per_pair.watch_seconds, item_length.length_seconds) as full_views,
        days_between(data_end.data_end_at, per_pair.last_watched_at) as days_before_end,
        days_between(user_end.user_end_at, per_pair.last_watched_at) as days_before_user_end
    from per_pair
    cross join data_end
    join user_end on user_end.user_id = per_pair.user_id
    join items on items.item_id = per_pair.item_id
    left join item_length on item_length.item_id = per_pair.item_id
),

strengths as (
    select
        with_views.*,
        completion(with_views.full_views) as completion,
        base_strength(
            with_views.full_views, with_views.watch_seconds, model_params.strength_formula, model_params.max_full_views
        ) as base_strength,
        half_life_weight(with_views.days_before_end, model_params.half_life_days) as recency_weight
    from with_views
    cross join model_params
),

final as (
    select
        strengths.user_key,
        strengths.item_key,
        strengths.user_id,
        strengths.item_id,
        strengths.count_plays,
        strengths.watch_seconds,
        strengths.last_watched_at,
        strengths.days_before_end,
        strengths.days_before_user_end,
        strengths.length_seconds,
        strengths.full_views,
        strengths.completion,
        is_heavy(strengths.completion, model_params.heavy_threshold) as is_heavy,
        strengths.base_strength,
        strengths.base_strength * strengths.recency_weight as strength
    from strengths
    cross join model_params
)

-- sorted by user: a lookup of one user reads only the row group holding them
select * from final
order by user_key, item_key;

-- user_keys: one row per user with events: their key, how many items they
-- watched, how many of those have a strength above 0 (what personalised
-- picks start from: count_history, the user's evidence) and whether any
-- does. The primary key's index makes the lookup by user_id that starts
-- every recommendation cheap.
create or replace table user_keys (
    user_id varchar primary key,
    user_key integer not null,
    count_items bigint not null,
    count_history bigint not null,
    has_history boolean not null
);

insert into user_keys
select
    user_id,
    user_key,
    count(*) as count_items,
    count(*) filter (where strength > 0) as count_history,
    bool_or(strength > 0) as has_history
from user_item_strength
group by user_id, user_key
order by user_key;
