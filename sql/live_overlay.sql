-- The live overlay: what the events accepted since the last build change in
-- the built model, until the next build folds them in. Not a build file: the
-- engine runs it on a serving connection (engine/live.py) each time the live
-- log grows, with recs.db attached read-only as recs and an in-memory
-- catalog live (sql/live_tables.sql) holding live.events (one row per
-- checked event past what the build folded, as sql/12_events.sql checks
-- them), live.changed (the users of the latest batch) and the built keys
-- and rows of those users. It recomputes the rows of the changed users and
-- the popularity of every item. Temp views named
-- user_item_strength, user_keys and item_popularity then stand in front of
-- the built tables, so every serving macro of sql/50_serving.sql answers
-- with the live events, unchanged.
--
-- What is live: the rows of user_item_strength of every user with live
-- events (plays, seconds, completion, heaviness, strength, recency within
-- their history), their user_keys row (a new user gets a key after the
-- built ones) and item_popularity. What waits for the next build: item
-- lengths, item neighbours, and the data's end that recency and trending
-- count back from (a live event counts as at that end: 0 days before it).

-- live.users: the users of the latest batch not seen before, with their
-- built key or a new one after every key given so far (in user_id order).
insert into live.users
with fresh as (
    select distinct changed.user_id
    from live.changed as changed
    anti join live.users as seen on seen.user_id = changed.user_id
),

keyed as (
    select
        fresh.user_id,
        built.user_key as built_key
    from fresh
    left join live.built_keys as built on built.user_id = fresh.user_id
),

last_key as (
    select greatest(
        (select coalesce(max(user_key), 0) from recs.user_keys),
        (select coalesce(max(user_key), 0) from live.users)
    ) as user_key
)

select
    keyed.user_id,
    coalesce(
        keyed.built_key,
        last_key.user_key + row_number() over (partition by keyed.built_key is null order by keyed.user_id)
    )::integer as user_key,
    keyed.built_key is not null as is_built
from keyed
cross join last_key;

-- live.pairs: one row per user and item with live events.
delete from live.pairs where user_id in (select user_id from live.changed);

insert into live.pairs
select
    events.user_id,
    events.item_id,
    count(*) as count_plays,
    sum(events.watch_seconds) as watch_seconds,
    max(events.watched_at) as last_watched_at
from live.events as events
where events.user_id in (select user_id from live.changed)
group by events.user_id, events.item_id;

-- live.user_item_strength: every row of user_item_strength of each changed
-- user, the built sums plus the live ones, through the rules of
-- sql/05_rules.sql as sql/20_user_item_strength.sql applies them.
delete from live.user_item_strength where user_id in (select user_id from live.changed);

insert into live.user_item_strength
with data_end as (
    select max(last_watched_at) as data_end_at from recs.user_item_strength
),

changed_users as (
    select live_users.*
    from live.users as live_users
    semi join live.changed as changed on changed.user_id = live_users.user_id
),

built_rows as (
    select
        built.user_key,
        built.item_key,
        changed_users.user_id,
        items.item_id,
        built.count_plays,
        built.watch_seconds,
        built.last_watched_at
    from live.built_rows as built
    join changed_users on changed_users.user_key = built.user_key
    join recs.items as items on items.item_key = built.item_key
),

live_rows as (
    select
        changed_users.user_key,
        items.item_key,
        pairs.user_id,
        pairs.item_id,
        pairs.count_plays,
        pairs.watch_seconds,
        pairs.last_watched_at
    from live.pairs as pairs
    join changed_users on changed_users.user_id = pairs.user_id
    join recs.items as items on items.item_id = pairs.item_id
),

per_pair as (
    select
        coalesce(built_rows.user_key, live_rows.user_key) as user_key,
        coalesce(built_rows.item_key, live_rows.item_key) as item_key,
        coalesce(built_rows.user_id, live_rows.user_id) as user_id,
        coalesce(built_rows.item_id, live_rows.item_id) as item_id,
        coalesce(built_rows.count_plays, 0) + coalesce(live_rows.count_plays, 0) as count_plays,
        coalesce(built_rows.watch_seconds, 0) + coalesce(live_rows.watch_seconds, 0) as watch_seconds,
        greatest(built_rows.last_watched_at, live_rows.last_watched_at) as last_watched_at
    from built_rows
    full outer join live_rows
        on live_rows.user_key = built_rows.user_key
        and live_rows.item_key = built_rows.item_key
),

user_end as (
    select
        user_key,
        max(last_watched_at) as user_end_at
    from per_pair
    group by user_key
),

with_views as (
    select
        per_pair.*,
        item_length.length_seconds,
        full_views(per_pair.watch_seconds, item_length.length_seconds) as full_views,
        greatest(days_between(data_end.data_end_at, per_pair.last_watched_at), 0) as days_before_end,
        days_between(user_end.user_end_at, per_pair.last_watched_at) as days_before_user_end
    from per_pair
    cross join data_end
    join user_end on user_end.user_key = per_pair.user_key
    left join recs.item_length as item_length on item_length.item_id = per_pair.item_id
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
    cross join recs.model_params as model_params
)

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
cross join recs.model_params as model_params
order by strengths.user_key, strengths.item_key;

-- live.user_keys: the user_keys row of each user with live events.
delete from live.user_keys where user_id in (select user_id from live.changed);

insert into live.user_keys
select
    user_id,
    user_key,
    count(*) as count_items,
    count(*) filter (where strength > 0) as count_history,
    bool_or(strength > 0) as has_history
from live.user_item_strength
where user_id in (select user_id from live.changed)
group by user_id, user_key
order by user_key;

-- live.item_popularity: item_popularity with the built parts of every user
-- with live events taken out and their live parts put in, ranked again as
-- sql/30_item_popularity.sql ranks.
create or replace table live.item_popularity as
with built_parts as (
    select
        built.item_key,
        count(*) as viewers,
        sum(built.count_plays) as count_plays,
        sum(built.watch_seconds) as watch_seconds,
        sum(popularity_part(built.base_strength, built.days_before_end, model_params.trending_half_life_days)) as score
    from live.built_rows as built
    cross join recs.model_params as model_params
    group by built.item_key
),

live_parts as (
    select
        rows.item_key,
        count(*) as viewers,
        sum(rows.count_plays) as count_plays,
        sum(rows.watch_seconds) as watch_seconds,
        sum(popularity_part(rows.base_strength, rows.days_before_end, model_params.trending_half_life_days)) as score
    from live.user_item_strength as rows
    cross join recs.model_params as model_params
    group by rows.item_key
),

per_item as (
    select
        built.item_key,
        built.item_id,
        built.title,
        built.content_type,
        built.genre,
        built.viewers - coalesce(built_parts.viewers, 0) + coalesce(live_parts.viewers, 0) as viewers,
        built.count_plays - coalesce(built_parts.count_plays, 0) + coalesce(live_parts.count_plays, 0) as count_plays,
        built.watch_seconds - coalesce(built_parts.watch_seconds, 0) + coalesce(live_parts.watch_seconds, 0)
            as watch_seconds,
        built.score - coalesce(built_parts.score, 0) + coalesce(live_parts.score, 0) as score
    from recs.item_popularity as built
    left join built_parts on built_parts.item_key = built.item_key
    left join live_parts on live_parts.item_key = built.item_key
)

select
    per_item.*,
    coalesce(per_item.score / nullif(max(per_item.score) over (), 0), 0) as relative_score,
    row_number() over (order by per_item.score desc, per_item.viewers desc, per_item.item_id) as popularity_rank
from per_item
order by popularity_rank;
