-- The serving queries, stored in recs.db as table macros so the app and the
-- duckdb shell ask the same question by name, e.g.
--   select * from recommend('u1', 5, only_genre := 'drama');
-- (Table macros are DuckDB's; on another engine each is one parameterised
-- query.) Filters are applied before the top-k is taken.

-- popularity_reason: the reason shown for an item picked for its popularity.
create or replace macro popularity_reason(viewers) as
    case
        when viewers = 0 then 'in the catalogue, not watched yet'
        when viewers = 1 then 'popular on the platform (1 viewer)'
        else 'popular on the platform (' || viewers || ' viewers)'
    end;

-- popular: the top_k most popular items, optionally of one genre and/or
-- content type. One row per item, best first.
create or replace macro popular(top_k := 10, only_genre := null, only_content_type := null) as table
select
    row_number() over (order by item_popularity.popularity_rank) as rank,
    items.item_id,
    items.title,
    items.content_type,
    items.genre,
    item_popularity.score,
    'popular' as source,
    popularity_reason(item_popularity.viewers) as reason
from item_popularity
join items on items.item_id = item_popularity.item_id
where (only_genre is null or items.genre = lower(only_genre))
    and (only_content_type is null or items.content_type = lower(only_content_type))
order by item_popularity.popularity_rank
limit top_k;

-- recommend: the top_k items for for_user. Personalised candidates score
--   score(item) = sum over the user's watched items w of strength(w) * cosine(w, item)
-- and come first; when fewer than top_k remain after the filters and the
-- exclusions, popular items (same filters) fill the list, marked 'popular'.
-- Excluded: items the user watched heavily (completion >= heavy_threshold),
-- and lighter ones too unless resurface_light is set.
create or replace macro recommend(for_user, top_k := 10, only_genre := null, only_content_type := null) as table
with user_history as (
    select
        user_item_strength.item_id,
        user_item_strength.strength,
        user_item_strength.is_heavy
    from user_item_strength
    where user_item_strength.user_id = for_user
),

excluded as (
    select user_history.item_id
    from user_history
    cross join model_params
    where user_history.is_heavy or not model_params.resurface_light
),

eligible as (
    select
        items.item_id,
        items.title,
        items.content_type,
        items.genre
    from items
    where (only_genre is null or items.genre = lower(only_genre))
        and (only_content_type is null or items.content_type = lower(only_content_type))
        and items.item_id not in (select excluded.item_id from excluded)
),

contributions as (
    select
        item_neighbors.neighbor_id as item_id,
        user_history.item_id as because_id,
        user_history.strength * item_neighbors.similarity as contribution
    from user_history
    join item_neighbors on item_neighbors.item_id = user_history.item_id
    where user_history.strength > 0
),

candidates as (
    select
        item_id,
        sum(contribution) as score,
        -- the watched item that contributed most: the reason shown
        max_by(because_id, contribution) as because_id,
        count(*) as count_because
    from contributions
    group by item_id
),

personalised as (
    select
        eligible.*,
        candidates.score,
        'personalised' as source,
        case
            when candidates.count_because = 1 then 'similar to ' || because.title || ', which you watched'
            else 'similar to ' || because.title || ' and ' || (candidates.count_because - 1) || ' more you watched'
        end as reason,
        1 as source_order,
        row_number() over (order by candidates.score desc, eligible.item_id) as order_in_source
    from candidates
    join eligible on eligible.item_id = candidates.item_id
    join items as because on because.item_id = candidates.because_id
    order by candidates.score desc, eligible.item_id
    limit top_k
),

popular_fill as (
    select
        eligible.*,
        item_popularity.score,
        'popular' as source,
        popularity_reason(item_popularity.viewers) as reason,
        2 as source_order,
        item_popularity.popularity_rank as order_in_source
    from item_popularity
    join eligible on eligible.item_id = item_popularity.item_id
    where item_popularity.item_id not in (select personalised.item_id from personalised)
    order by item_popularity.popularity_rank
    limit top_k
),

combined as (
    select * from personalised
    union all
    select * from popular_fill
)

select
    row_number() over (order by source_order, order_in_source) as rank,
    item_id,
    title,
    content_type,
    genre,
    score,
    source,
    reason
from combined
order by source_order, order_in_source
limit top_k;

-- user_history: what for_user watched, one row per item, latest first.
create or replace macro user_history(for_user) as table
select
    user_item_strength.item_id,
    items.title,
    items.content_type,
    items.genre,
    user_item_strength.count_plays,
    user_item_strength.watch_seconds,
    user_item_strength.completion,
    user_item_strength.is_heavy,
    user_item_strength.strength,
    user_item_strength.last_watched_at
from user_item_strength
join items on items.item_id = user_item_strength.item_id
where user_item_strength.user_id = for_user
order by user_item_strength.last_watched_at desc, user_item_strength.item_id;

-- similar_items: the top_k neighbours of to_item, most similar first.
create or replace macro similar_items(to_item, top_k := 10) as table
select
    item_neighbors.neighbor_rank as rank,
    items.item_id,
    items.title,
    items.content_type,
    items.genre,
    item_neighbors.similarity as score,
    item_neighbors.support,
    'similar' as source,
    'watched by ' || item_neighbors.support
        || case when item_neighbors.support = 1 then ' viewer' else ' viewers' end
        || ' who also watched ' || source_item.title as reason
from item_neighbors
join items on items.item_id = item_neighbors.neighbor_id
join items as source_item on source_item.item_id = item_neighbors.item_id
where item_neighbors.item_id = to_item
order by item_neighbors.neighbor_rank
limit top_k;
