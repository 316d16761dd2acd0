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

-- similarity_reason: the reason shown for a personalised pick.
create or replace macro similarity_reason(because_title, count_because) as
    case
        when count_because = 1 then 'similar to ' || because_title || ', which you watched'
        else 'similar to ' || because_title || ' and ' || (count_because - 1) || ' more you watched'
    end;

-- matches_filters: whether an item of this genre and content type passes the
-- optional filters (null = any; compared lower-case, as the tables store them).
create or replace macro matches_filters(genre, content_type, only_genre, only_content_type) as
    (only_genre is null or genre = lower(only_genre))
    and (only_content_type is null or content_type = lower(only_content_type));

-- popular: the top_k most popular items, optionally of one genre and/or
-- content type. One row per item, best first.
create or replace macro popular(top_k := 10, only_genre := null, only_content_type := null) as table
with top as (
    select
        item_popularity.item_id,
        item_popularity.score,
        item_popularity.viewers,
        item_popularity.popularity_rank
    from item_popularity
    where matches_filters(item_popularity.genre, item_popularity.content_type, only_genre, only_content_type)
    order by item_popularity.popularity_rank
    limit top_k
)

select
    row_number() over (order by top.popularity_rank) as rank,
    items.item_id,
    items.title,
    items.content_type,
    items.genre,
    top.score,
    'popular' as source,
    popularity_reason(top.viewers) as reason
from top
join items on items.item_id = top.item_id
order by rank;

-- candidate_scores: one row per user and item the model could recommend to
-- them (an item similar to something they watched), with its score:
--   score(u, i) = sum over u's watched items w of strength(u, w) * cosine(w, i)
-- because_id is the watched item that contributed most: the reason shown.
-- A view, so a filter on user_id reaches the scan of user_item_strength.
create or replace view candidate_scores as
with contributions as (
    select
        user_item_strength.user_id,
        item_neighbors.neighbor_id as item_id,
        user_item_strength.item_id as because_id,
        user_item_strength.strength
            * item_neighbors.similarity
            * case
                when model_params.user_half_life_days > 0
                    then power(0.5, user_item_strength.days_before_user_end / model_params.user_half_life_days)
                else 1.0
            end as contribution
    from user_item_strength
    cross join model_params
    join item_neighbors on item_neighbors.item_id = user_item_strength.item_id
    where user_item_strength.strength > 0
)

select
    user_id,
    item_id,
    sum(contribution) as score,
    max_by(because_id, contribution) as because_id,
    count(*) as count_because
from contributions
group by user_id, item_id;

-- excluded_items: one row per user and item never to be recommended to them:
-- watched heavily (completion >= heavy_threshold), or at all unless
-- resurface_light is set.
create or replace view excluded_items as
select
    user_item_strength.user_id,
    user_item_strength.item_id
from user_item_strength
cross join model_params
where user_item_strength.is_heavy or not model_params.resurface_light;

-- recommend_all: the top_k items for every user with events; one row per
-- user and rank. Personalised candidates come first; when fewer than top_k
-- remain after the filters and exclusions, popular items (same filters) fill
-- the list, marked 'popular'. Filters apply before the top k is taken.
create or replace macro recommend_all(top_k := 10, only_genre := null, only_content_type := null) as table
with eligible as (
    select
        items.item_id,
        items.title,
        items.content_type,
        items.genre
    from items
    where matches_filters(items.genre, items.content_type, only_genre, only_content_type)
),

personal_ranked as (
    select
        candidate_scores.user_id,
        candidate_scores.item_id,
        candidate_scores.score,
        candidate_scores.because_id,
        candidate_scores.count_because,
        row_number() over (
            partition by candidate_scores.user_id
            order by candidate_scores.score desc, candidate_scores.item_id
        ) as order_in_source
    from candidate_scores
    join eligible on eligible.item_id = candidate_scores.item_id
    anti join excluded_items
        on excluded_items.user_id = candidate_scores.user_id
        and excluded_items.item_id = candidate_scores.item_id
),

personal as (
    select
        personal_ranked.user_id,
        personal_ranked.item_id,
        personal_ranked.score,
        'personalised' as source,
        similarity_reason(because.title, personal_ranked.count_because) as reason,
        1 as source_order,
        personal_ranked.order_in_source
    from personal_ranked
    join items as because on because.item_id = personal_ranked.because_id
    where personal_ranked.order_in_source <= top_k
),

viewers as (
    select
        user_id,
        count(*) as count_watched
    from user_item_strength
    group by user_id
),

popular_ranked as (
    select
        item_popularity.item_id,
        item_popularity.score,
        item_popularity.viewers,
        row_number() over (order by item_popularity.popularity_rank) as position
    from item_popularity
    join eligible on eligible.item_id = item_popularity.item_id
),

fill_ranked as (
    -- a user can skip at most count_watched + top_k items of the popular list
    -- (watched, or already picked): only that many are joined per user
    select
        viewers.user_id,
        popular_ranked.item_id,
        popular_ranked.score,
        popular_ranked.viewers,
        row_number() over (partition by viewers.user_id order by popular_ranked.position) as order_in_source
    from viewers
    join popular_ranked on popular_ranked.position <= viewers.count_watched + 2 * top_k
    anti join excluded_items
        on excluded_items.user_id = viewers.user_id
        and excluded_items.item_id = popular_ranked.item_id
    anti join personal
        on personal.user_id = viewers.user_id
        and personal.item_id = popular_ranked.item_id
),

fill as (
    select
        user_id,
        item_id,
        score,
        'popular' as source,
        popularity_reason(viewers) as reason,
        2 as source_order,
        order_in_source
    from fill_ranked
    where order_in_source <= top_k
),

combined as (
    select * from personal
    union all
    select * from fill
),

ranked as (
    select
        combined.*,
        row_number() over (
            partition by combined.user_id
            order by combined.source_order, combined.order_in_source
        ) as rank
    from combined
)

select
    ranked.user_id,
    ranked.rank,
    ranked.item_id,
    eligible.title,
    eligible.content_type,
    eligible.genre,
    ranked.score,
    ranked.source,
    ranked.reason
from ranked
join eligible on eligible.item_id = ranked.item_id
where ranked.rank <= top_k;

-- recommend: the top_k items for for_user, best first: recommend_all for one
-- user, written out again because a filter on user_id does not reach through
-- the window functions of recommend_all (one user would cost all users).
-- A user without events (unknown, or only in users.csv) gets the popular list
-- (the fill, with nothing excluded).
create or replace macro recommend(for_user, top_k := 10, only_genre := null, only_content_type := null) as table
with excluded as (
    select excluded_items.item_id
    from excluded_items
    where excluded_items.user_id = for_user
),

personal as (
    select
        candidate_scores.item_id,
        candidate_scores.score,
        candidate_scores.because_id,
        candidate_scores.count_because
    from candidate_scores
    join item_popularity as item on item.item_id = candidate_scores.item_id
    where candidate_scores.user_id = for_user
        and matches_filters(item.genre, item.content_type, only_genre, only_content_type)
        and candidate_scores.item_id not in (select excluded.item_id from excluded)
    order by candidate_scores.score desc, candidate_scores.item_id
    limit top_k
),

fill as (
    select
        item_popularity.item_id,
        item_popularity.score,
        item_popularity.viewers,
        item_popularity.popularity_rank
    from item_popularity
    where matches_filters(item_popularity.genre, item_popularity.content_type, only_genre, only_content_type)
        and item_popularity.item_id not in (select excluded.item_id from excluded)
        and item_popularity.item_id not in (select personal.item_id from personal)
    order by item_popularity.popularity_rank
    limit top_k
),

combined as (
    select
        personal.item_id,
        personal.score,
        'personalised' as source,
        similarity_reason(because.title, personal.count_because) as reason,
        row_number() over (order by personal.score desc, personal.item_id) as rank
    from personal
    join items as because on because.item_id = personal.because_id
    union all
    select
        fill.item_id,
        fill.score,
        'popular' as source,
        popularity_reason(fill.viewers) as reason,
        (select count(*) from personal) + row_number() over (order by fill.popularity_rank) as rank
    from fill
)

select
    combined.rank,
    combined.item_id,
    items.title,
    items.content_type,
    items.genre,
    combined.score,
    combined.source,
    combined.reason
from combined
join items on items.item_id = combined.item_id
where combined.rank <= top_k
order by combined.rank;

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
