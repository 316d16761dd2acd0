-- The serving queries, stored in recs.db as table macros so the app and the
-- duckdb shell ask the same question by name, e.g.
--   select * from recommend('u1', 5, only_genre := 'drama');
-- (Table macros are DuckDB's; on another engine each is one parameterised
-- query.)
--
-- The ranking is written once, in pieces, each a macro over for_keys (a list
-- of user keys; null = every user), so the one-user plan (recommend_personal,
-- recommend) and the all-users plan (recommend_all, recommend_many) are the
-- same pieces given one key or many:
--   history_of, excluded_of    a user's rows, and what is never shown back
--   candidate_scores_of        the neighbours of the history, summed (score)
--   personal_scores_of         less what is excluded; each user's top(u)
--   popular_eligible           the filters (matches_filters), in popularity order
--   recommendations_of         the popular candidates and the fill, the score,
--                              the tie rule and the top-N, source and reason
-- Filters restrict, they never re-score: top(u), and so every score, is taken
-- over every candidate before any filter, so a filtered list (or a page of
-- it) is the unfiltered list restricted to what the filter allows.

-- user_key_of: for_user's integer key (null when they have no events). Every
-- per-user query starts here: the primary key of user_keys makes it a lookup.
create or replace macro user_key_of(for_user) as
    (select user_keys.user_key from user_keys where user_keys.user_id = for_user);

-- history_of: the rows of user_item_strength of the users of for_keys (a
-- list of user keys; null = every user). The chosen users are joined on the
-- table itself: a user filter above a sum, or an OR beside it, would not
-- reach the scan, and the table is sorted by user_key, so a join on one key
-- reads only that user's row group.
create or replace macro history_of(for_keys) as table
select user_item_strength.*
from user_item_strength
where for_keys is null
union all
select user_item_strength.*
from user_item_strength
semi join (select unnest(for_keys) as user_key) as chosen
    on chosen.user_key = user_item_strength.user_key;

-- user_rows: for_user's rows of user_item_strength (history_of for one user).
create or replace macro user_rows(for_user) as table
select
    history.item_key,
    history.strength,
    history.is_heavy,
    history.days_before_user_end
from history_of([user_key_of(for_user)]) as history;

-- excluded_of: one row per user of for_keys and item never to be
-- recommended to them (is_excluded: watched heavily, or at all unless
-- resurface_light).
create or replace macro excluded_of(for_keys) as table
select
    history.user_key,
    history.item_key
from history_of(for_keys) as history
cross join model_params
where is_excluded(history.is_heavy, model_params.resurface_light);

-- user_excluded: the items never to be recommended back to for_user.
create or replace macro user_excluded(for_user) as table
select excluded.item_key
from excluded_of([user_key_of(for_user)]) as excluded;

create or replace view excluded_items as
select * from excluded_of(null);

-- candidate_scores_of: one row per user of for_keys and item similar to
-- something they watched, with its personal score:
--   score(u, i) = sum over u's watched items w of contribution(u, w -> i)
-- because_key is the watched item that contributed most (ties on tie_value
-- go to the lower key, i.e. the lower item_id): the reason shown;
-- count_because how many contributed. By key (join user_keys and items for
-- the ids).
create or replace macro candidate_scores_of(for_keys) as table
with contributions as (
    select
        history.user_key,
        entry.neighbor.neighbor_key as item_key,
        history.item_key as because_key,
        contribution(
            history.strength,
            entry.neighbor.similarity,
            history.days_before_user_end,
            model_params.user_half_life_days
        ) as contribution
    from history_of(for_keys) as history
    cross join model_params
    join neighbor_lists on neighbor_lists.item_key = history.item_key
    cross join unnest(neighbor_lists.neighbors) as entry (neighbor)
    where history.strength > 0
)

select
    user_key,
    item_key,
    sum(contribution) as score,
    arg_max(
        because_key, struct_pack(contribution := tie_value(contribution), key_order := -because_key)
    ) as because_key,
    count(*) as count_because
from contributions
group by user_key, item_key;

create or replace view candidate_scores as
select * from candidate_scores_of(null);

-- personal_scores_of: the candidates of candidate_scores_of each user may
-- get (not excluded), before any filter: the best of them is top(u), the
-- scale of the popularity prior, so a filter never changes a score.
create or replace macro personal_scores_of(for_keys) as table
select candidates.*
from candidate_scores_of(for_keys) as candidates
anti join excluded_of(for_keys) as excluded
    on excluded.user_key = candidates.user_key
    and excluded.item_key = candidates.item_key;

-- popular_eligible: the catalogue in popularity order, only items passing
-- the filters (matches_filters: genres, content types, except_items): what
-- the popular list, the popular candidates and the fill draw from.
create or replace macro popular_eligible(only_genre, only_content_type, except_items := null) as table
select
    item_popularity.item_key,
    item_popularity.item_id,
    item_popularity.title,
    item_popularity.content_type,
    item_popularity.genre,
    item_popularity.score,
    item_popularity.relative_score,
    item_popularity.viewers,
    item_popularity.popularity_rank
from item_popularity
where matches_filters(
    item_popularity.genre, item_popularity.content_type, only_genre, only_content_type,
    item_id := item_popularity.item_id, except_items := except_items
);

-- popular: the top_k most popular items, optionally of some genres and/or
-- content types (one or a list each: any of them), never those of
-- except_items. One row per item, best first. item_popularity carries every
-- column shown, so this reads one table.
create or replace macro popular(
    top_k := 10, only_genre := null, only_content_type := null, except_items := null
) as table
with top as (
    select eligible.*
    from popular_eligible(only_genre, only_content_type, except_items := except_items) as eligible
    -- ranks run 1, 2, 3, ... so without a filter the top k are ranks 1..k:
    -- said outright, the scan reads a few rows instead of the catalogue
    where only_genre is not null or only_content_type is not null or except_items is not null
        or eligible.popularity_rank <= top_k
    order by eligible.popularity_rank
    limit top_k
)

-- rank is numbered after the limit: a window next to the limit would number
-- every item first
select
    row_number() over (order by top.popularity_rank) as rank,
    top.item_id,
    top.title,
    top.content_type,
    top.genre,
    top.score,
    'popular' as source,
    popularity_reason(top.viewers) as reason
from top
order by rank;

-- recommendations_of: the top_k items for each user of for_keys (with
-- events), one row per user (by key) and rank: the ranking, one CTE a step.
--   candidates: the personal ones (personal_scores_of) passing the filters,
--     and each user's first top_k items of popular_eligible (the filters)
--     they may get, in popularity order, passing over the personal
--     candidates with a negative score (EASE's weights can speak against an
--     item): an item drawn in on popularity scores at least its prior, and
--     none further down the list has a higher prior, so no other item can
--     beat these.
--   score: score(u, i) = personal(u, i) + prior_score(i), the prior 0 unless
--     popularity_prior > 0 or prior_floor > 0, on top(u) taken before the
--     filters.
--   top-N: on tie_value(score), ties to the more popular item
--     (popularity_rank: unique, so the order is total and the same in every
--     plan). Without a prior the popular candidates that are not personal
--     ones follow as the fill, scored and ranked by popularity, marked
--     'popular'; with_fill := false leaves them out (recommend_personal).
-- A pick is 'personalised' when similarity gave most of its score (the
-- reason names the watched item that gave most), else 'popular'.
create or replace macro recommendations_of(
    for_keys, top_k, only_genre, only_content_type, except_items, with_fill := true
) as table
with personal as (
    select * from personal_scores_of(for_keys)
),

eligible as (
    select
        popular_items.item_key,
        row_number() over (order by popular_items.popularity_rank) as position
    from popular_eligible(only_genre, only_content_type, except_items := except_items) as popular_items
),

passed_over as (
    select
        excluded.user_key,
        excluded.item_key
    from excluded_of(for_keys) as excluded
    union all
    select
        personal.user_key,
        personal.item_key
    from personal
    where personal.score < 0
),

users as (
    -- each user's evidence, top(u) over every candidate before the filters, and
    -- how far down the popular list they may need to go: past at most every
    -- item passed over
    select
        user_keys.user_key,
        user_keys.count_history,
        -- a prior (prior_score, the one rule) when it gives the most popular item something
        prior_score(
            1.0, 1.0, user_keys.count_history, model_params.popularity_prior, model_params.prior_floor
        ) > 0 as has_prior,
        per_user.user_top_score,
        user_keys.count_items + coalesce(per_user.count_negative, 0) + top_k as reach
    from user_keys
    cross join model_params
    left join (
        select
            personal.user_key,
            max(personal.score) as user_top_score,
            count(*) filter (where personal.score < 0) as count_negative
        from personal
        group by personal.user_key
    ) as per_user on per_user.user_key = user_keys.user_key
    where for_keys is null
        or list_contains(for_keys, user_keys.user_key)
),

popular_candidates as (
    select
        ranked_popular.user_key,
        ranked_popular.item_key
    from (
        select
            users.user_key,
            eligible.item_key,
            row_number() over (partition by users.user_key order by eligible.position) as order_in_source
        from users
        join eligible on eligible.position <= users.reach
        anti join passed_over
            on passed_over.user_key = users.user_key
            and passed_over.item_key = eligible.item_key
    ) as ranked_popular
    where ranked_popular.order_in_source <= top_k
),

candidates as (
    select
        coalesce(shown.user_key, popular_candidates.user_key) as user_key,
        coalesce(shown.item_key, popular_candidates.item_key) as item_key,
        coalesce(shown.score, 0) as personal_score,
        shown.because_key,
        shown.count_because,
        shown.item_key is null as is_popular
    from (
        select personal.*
        from personal
        semi join eligible on eligible.item_key = personal.item_key
    ) as shown
    full outer join popular_candidates
        on popular_candidates.user_key = shown.user_key
        and popular_candidates.item_key = shown.item_key
),

scored as (
    select
        candidates.*,
        item.viewers,
        item.popularity_rank,
        candidates.is_popular and not users.has_prior as is_fill,
        prior_score(
            item.relative_score, users.user_top_score, users.count_history,
            model_params.popularity_prior, model_params.prior_floor
        ) as prior,
        case
            when candidates.is_popular and not users.has_prior then item.score
            else candidates.personal_score + prior
        end as score
    from candidates
    cross join model_params
    join users on users.user_key = candidates.user_key
    join item_popularity as item on item.item_key = candidates.item_key
),

ranked as (
    select
        scored.*,
        row_number() over (
            partition by scored.user_key
            order by
                scored.is_fill,
                case when not scored.is_fill then tie_value(scored.score) end desc,
                scored.popularity_rank
        ) as rank
    from scored
    where with_fill or not scored.is_fill
)

select
    ranked.user_key,
    ranked.rank,
    items.item_id,
    items.title,
    items.content_type,
    items.genre,
    ranked.score,
    case when ranked.is_fill then 'popular' else pick_source(ranked.personal_score, ranked.prior) end as source,
    case
        when not ranked.is_fill and pick_source(ranked.personal_score, ranked.prior) = 'personalised'
            then similarity_reason(because.title, ranked.count_because)
        else popularity_reason(ranked.viewers)
    end as reason
from ranked
join items on items.item_key = ranked.item_key
left join items as because on because.item_key = ranked.because_key
where ranked.rank <= top_k;

-- recommend_all: the top_k items for every user with events (or those of
-- for_users, a list of user ids, reading only their rows); one row per user
-- and rank: recommendations_of for every user in one plan (batch export and
-- evaluation). What recommend answers, user by user.
create or replace macro recommend_all(
    top_k := 10, only_genre := null, only_content_type := null, except_items := null, for_users := null
) as table
select
    user_keys.user_id,
    picks.* exclude (user_key)
from recommendations_of(
    case
        when for_users is not null
            then (select coalesce(list(user_keys.user_key), []) from user_keys where list_contains(for_users, user_keys.user_id))
    end,
    top_k, only_genre, only_content_type, except_items
) as picks
join user_keys on user_keys.user_key = picks.user_key;

-- recommend_personal: the personalised part of recommend, for_user's best
-- top_k candidates, best first (recommendations_of without the fill): with a
-- popularity prior the whole list, without one the items similar to what
-- they watched. The app asks for this first and for the whole of recommend
-- only when it comes back short, since most lists need no fill. It reads
-- for_user's rows only: their rows of user_item_strength, the neighbour
-- lists of what they watched (one indexed row per item), then the few items
-- shown.
create or replace macro recommend_personal(
    for_user, top_k := 10, only_genre := null, only_content_type := null, except_items := null
) as table
select picks.* exclude (user_key)
from recommendations_of(
    [user_key_of(for_user)], top_k, only_genre, only_content_type, except_items, with_fill := false
) as picks
order by picks.rank;

-- recommend: the top_k items for for_user, best first: what recommend_all
-- gives for_user, as a one-user plan that reads only their rows.
-- Personalised picks first; when fewer than top_k pass the filters, popular
-- items (same filters, nothing for_user watched, marked 'popular') fill the
-- list. A user without events (unknown, or only in users.csv) gets the
-- popular list. Items of except_items (e.g. already on the user's screen)
-- are never picked.
create or replace macro recommend(
    for_user, top_k := 10, only_genre := null, only_content_type := null, except_items := null
) as table
with picks as (
    select picks.* exclude (user_key)
    from recommendations_of([user_key_of(for_user)], top_k, only_genre, only_content_type, except_items) as picks
    union all
    select *
    from popular(
        top_k, only_genre := only_genre, only_content_type := only_content_type, except_items := except_items
    )
    where user_key_of(for_user) is null
)

select *
from picks
order by picks.rank;

-- recommend_many: the top_k for each of user_ids (a list; null = every user
-- in users.csv or with events), one row per user and rank: the users in the
-- order of user_ids (the first time each appears), else by user_id; each
-- user's rows by rank. A user without events gets the popular list. The
-- filters and except_items are those of recommend. What export writes, and
-- what a batch of users is answered with.
create or replace macro recommend_many(
    user_ids, top_k := 10, only_genre := null, only_content_type := null, except_items := null
) as table
with listed as (
    select
        user_id,
        min(position) as position
    from (
        select
            unnest(user_ids) as user_id,
            generate_subscripts(user_ids, 1) as position
        where user_ids is not null
    ) as given
    group by user_id
),

wanted as (
    select user_id, position from listed
    union all
    select everyone.user_id, null as position
    from (select user_id from users union select user_id from user_keys) as everyone
    where user_ids is null
),

picks as (
    select all_picks.*
    from recommend_all(
        top_k, only_genre := only_genre, only_content_type := only_content_type, except_items := except_items,
        for_users := user_ids
    ) as all_picks
    semi join wanted on wanted.user_id = all_picks.user_id
    union all
    select wanted.user_id, popular_picks.*
    from wanted
    anti join user_keys on user_keys.user_id = wanted.user_id
    cross join popular(
        top_k, only_genre := only_genre, only_content_type := only_content_type, except_items := except_items
    ) as popular_picks
)

select picks.*
from picks
join wanted on wanted.user_id = picks.user_id
order by wanted.position, picks.user_id, picks.rank;

-- user_history: what for_user watched, one row per item, latest first.
create or replace macro user_history(for_user) as table
select
    items.item_id,
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
join items on items.item_key = user_item_strength.item_key
where user_item_strength.user_key = user_key_of(for_user)
order by user_item_strength.last_watched_at desc, items.item_id;

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
    neighbor_reason(item_neighbors.support, source_item.title) as reason
from item_neighbors
join items on items.item_id = item_neighbors.neighbor_id
join items as source_item on source_item.item_id = item_neighbors.item_id
where item_neighbors.item_id = to_item
order by item_neighbors.neighbor_rank
limit top_k;
