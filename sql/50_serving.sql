-- The serving queries, stored in recs.db as table macros so the app and the
-- duckdb shell ask the same question by name, e.g.
--   select * from recommend('u1', 5, only_genre := 'drama');
-- (Table macros are DuckDB's; on another engine each is one parameterised
-- query.) Filters are applied before the top-k is taken.

-- user_key_of: for_user's integer key (null when they have no events). Every
-- per-user query starts here: the primary key of user_keys makes it a lookup.
create or replace macro user_key_of(for_user) as
    (select user_keys.user_key from user_keys where user_keys.user_id = for_user);

-- user_rows: for_user's rows of user_item_strength, by key (the table is
-- sorted by user_key, so only their row group is read). The user filter
-- stands on its own: combined with an OR (the exclusion rule) it would not
-- reach the scan, and every user's rows would be read.
create or replace macro user_rows(for_user) as table
select
    user_item_strength.item_key,
    user_item_strength.strength,
    user_item_strength.is_heavy,
    user_item_strength.days_before_user_end
from user_item_strength
where user_item_strength.user_key = user_key_of(for_user);

-- user_excluded: the items never to be recommended back to for_user.
create or replace macro user_excluded(for_user) as table
select history.item_key
from user_rows(for_user) as history
cross join model_params
where is_excluded(history.is_heavy, model_params.resurface_light);

-- popular_eligible: the catalogue in popularity order, only items passing
-- the filters (matches_filters: genres, content types, except_items): what
-- the popular list and every popular fill draw from.
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

-- candidate_scores: one row per user and item the model could recommend to
-- them (an item similar to something they watched), with its score:
--   score(u, i) = sum over u's watched items w of contribution(u, w -> i)
-- because_key is the watched item that contributed most: the reason shown.
-- By key (join user_keys and items for the ids). candidate_scores_of is
-- the same for the users of for_keys (a list of user keys; null = every
-- user); recommend_personal has the one-user plan of the same sum.
create or replace macro candidate_scores_of(for_keys) as table
with strengths as (
    -- every user's rows, or the chosen users' (by a join on the table itself:
    -- a user filter above the sum, or an OR beside it, would not reach its scan)
    select user_item_strength.*
    from user_item_strength
    where for_keys is null
    union all
    select user_item_strength.*
    from user_item_strength
    semi join (select unnest(for_keys) as user_key) as chosen
        on chosen.user_key = user_item_strength.user_key
),

contributions as (
    select
        strengths.user_key,
        entry.neighbor.neighbor_key as item_key,
        strengths.item_key as because_key,
        contribution(
            strengths.strength,
            entry.neighbor.similarity,
            strengths.days_before_user_end,
            model_params.user_half_life_days
        ) as contribution
    from strengths
    cross join model_params
    join neighbor_lists on neighbor_lists.item_key = strengths.item_key
    cross join unnest(neighbor_lists.neighbors) as entry (neighbor)
    where strengths.strength > 0
)

select
    user_key,
    item_key,
    sum(contribution) as score,
    max_by(because_key, contribution) as because_key,
    count(*) as count_because
from contributions
group by user_key, item_key;

create or replace view candidate_scores as
select * from candidate_scores_of(null);

-- excluded_items: one row per user and item never to be recommended to them
-- (is_excluded). By key; every user at once, as user_excluded is for one.
create or replace view excluded_items as
select
    user_item_strength.user_key,
    user_item_strength.item_key
from user_item_strength
cross join model_params
where is_excluded(user_item_strength.is_heavy, model_params.resurface_light);

-- recommend_all: the top_k items for every user with events (or those of
-- for_users, a list of user ids, reading only their rows); one row per
-- user and rank. The candidates (items similar to what the user watched
-- and, with a popularity prior, the most popular items they may get) are
-- ranked by personal score plus prior, as in recommend_personal; when fewer
-- than top_k remain after the filters and exclusions, popular items (same
-- filters) fill the list, marked 'popular'. Filters apply before the top k
-- is taken. It answers what recommend answers, for every user in one plan
-- (batch export and evaluation); a test checks the two agree.
create or replace macro recommend_all(
    top_k := 10, only_genre := null, only_content_type := null, except_items := null, for_users := null
) as table
with chosen as (
    -- the users answered: those of for_users (a list of user ids) with events, else all with events
    select user_keys.*
    from user_keys
    where for_users is null or list_contains(for_users, user_keys.user_id)
),

eligible as (
    select
        popular_items.*,
        row_number() over (order by popular_items.popularity_rank) as position
    from popular_eligible(only_genre, only_content_type, except_items := except_items) as popular_items
),

neighbour_candidates as (
    select candidate_scores.*
    from candidate_scores_of(
        case when for_users is not null then (select coalesce(list(chosen.user_key), []) from chosen) end
    ) as candidate_scores
    semi join eligible on eligible.item_key = candidate_scores.item_key
    anti join excluded_items
        on excluded_items.user_key = candidate_scores.user_key
        and excluded_items.item_key = candidate_scores.item_key
),

popular_candidates as (
    -- with a popularity prior, each user's top_k most popular items they may
    -- get compete with the neighbours; only top_k can beat the rest on
    -- popularity alone
    select
        ranked_popular.user_key,
        ranked_popular.item_key
    from (
        select
            user_keys.user_key,
            eligible.item_key,
            row_number() over (partition by user_keys.user_key order by eligible.position) as order_in_source
        from chosen as user_keys
        cross join model_params
        join eligible on eligible.position <= user_keys.count_items + top_k
        anti join excluded_items
            on excluded_items.user_key = user_keys.user_key
            and excluded_items.item_key = eligible.item_key
        where model_params.popularity_prior > 0
            and user_keys.count_history > 0
    ) as ranked_popular
    where ranked_popular.order_in_source <= top_k
),

candidates as (
    select
        coalesce(neighbour_candidates.user_key, popular_candidates.user_key) as user_key,
        coalesce(neighbour_candidates.item_key, popular_candidates.item_key) as item_key,
        coalesce(neighbour_candidates.score, 0) as personal_score,
        neighbour_candidates.because_key,
        neighbour_candidates.count_because,
        -- the user's best personal score among what may be shown: the scale of their prior
        max(coalesce(neighbour_candidates.score, 0)) over (
            partition by coalesce(neighbour_candidates.user_key, popular_candidates.user_key)
        ) as user_top_score
    from neighbour_candidates
    full outer join popular_candidates
        on popular_candidates.user_key = neighbour_candidates.user_key
        and popular_candidates.item_key = neighbour_candidates.item_key
),

scored as (
    select
        candidates.*,
        eligible.viewers,
        prior_score(
            eligible.relative_score, candidates.user_top_score, user_keys.count_history, model_params.popularity_prior
        ) as prior
    from candidates
    cross join model_params
    join eligible on eligible.item_key = candidates.item_key
    join user_keys on user_keys.user_key = candidates.user_key
),

personal_ranked as (
    select
        scored.*,
        scored.personal_score + scored.prior as score,
        row_number() over (
            partition by scored.user_key
            order by scored.personal_score + scored.prior desc, scored.item_key  -- item_key follows item_id order
        ) as order_in_source
    from scored
),

personal as (
    select
        personal_ranked.user_key,
        personal_ranked.item_key,
        personal_ranked.score,
        pick_source(personal_ranked.personal_score, personal_ranked.prior) as source,
        case
            when pick_source(personal_ranked.personal_score, personal_ranked.prior) = 'personalised'
                then similarity_reason(because.title, personal_ranked.count_because)
            else popularity_reason(personal_ranked.viewers)
        end as reason,
        1 as source_order,
        personal_ranked.order_in_source
    from personal_ranked
    left join items as because on because.item_key = personal_ranked.because_key
    where personal_ranked.order_in_source <= top_k
),

fill_ranked as (
    -- a user can skip at most count_items + top_k items of the popular list
    -- (watched, or already picked): only that many are joined per user
    select
        user_keys.user_key,
        eligible.item_key,
        eligible.score,
        eligible.viewers,
        row_number() over (partition by user_keys.user_key order by eligible.position) as order_in_source
    from chosen as user_keys
    join eligible on eligible.position <= user_keys.count_items + 2 * top_k
    anti join excluded_items
        on excluded_items.user_key = user_keys.user_key
        and excluded_items.item_key = eligible.item_key
    anti join personal
        on personal.user_key = user_keys.user_key
        and personal.item_key = eligible.item_key
),

fill as (
    select
        user_key,
        item_key,
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
            partition by combined.user_key
            order by combined.source_order, combined.order_in_source
        ) as rank
    from combined
)

select
    user_keys.user_id,
    ranked.rank,
    items.item_id,
    items.title,
    items.content_type,
    items.genre,
    ranked.score,
    ranked.source,
    ranked.reason
from ranked
join user_keys on user_keys.user_key = ranked.user_key
join items on items.item_key = ranked.item_key
where ranked.rank <= top_k;

-- recommend_personal: the personalised part of recommend, for_user's best
-- top_k candidates, best first: items similar to what they watched, scored
--   score(u, i) = sum over u's watched items w of contribution(u, w -> i)
--                 + prior_score(i)   -- 0 unless popularity_prior > 0
-- and, with a popularity prior, the most popular items they may get. A pick
-- is 'personalised' when similarity gave most of its score (the reason names
-- the watched item that gave most), else 'popular'. recommend, below, adds
-- the popular fill; the app asks for this first and for the whole of
-- recommend only when it comes back short, since most lists need no fill. It reads for_user's rows only:
-- their rows of user_item_strength, the neighbour lists of what they
-- watched (one indexed row per item), then the few items shown. It is the
-- sum of candidate_scores for one user, as its own plan: a user filter on
-- that view does not reach its scan (at 10M, seconds per user instead of
-- milliseconds).
create or replace macro recommend_personal(
    for_user, top_k := 10, only_genre := null, only_content_type := null, except_items := null
) as table
with history as (
    select * from user_rows(for_user)
),

contributions as (
    select
        entry.neighbor.neighbor_key as item_key,
        history.item_key as because_key,
        contribution(
            history.strength,
            entry.neighbor.similarity,
            history.days_before_user_end,
            model_params.user_half_life_days
        ) as contribution
    from history
    cross join model_params
    join neighbor_lists on neighbor_lists.item_key = history.item_key
    cross join unnest(neighbor_lists.neighbors) as entry (neighbor)
    where history.strength > 0
),

neighbour_scores as (
    select
        item_key,
        sum(contribution) as personal_score,
        max_by(because_key, contribution) as because_key,
        count(*) as count_because
    from contributions
    group by item_key
),

evidence as (
    select user_keys.count_history
    from user_keys
    where user_keys.user_key = user_key_of(for_user)
),

popular_candidates as (
    -- with a popularity prior, the top_k most popular items for_user may get
    -- compete with the neighbours (only top_k can win on popularity alone)
    select eligible.item_key
    from popular_eligible(only_genre, only_content_type, except_items := except_items) as eligible
    cross join model_params
    cross join evidence
    where model_params.popularity_prior > 0
        and evidence.count_history > 0
        and eligible.item_key not in (select item_key from user_excluded(for_user))
    order by eligible.popularity_rank
    limit top_k
),

candidates as (
    select
        coalesce(neighbour_scores.item_key, popular_candidates.item_key) as item_key,
        coalesce(neighbour_scores.personal_score, 0) as personal_score,
        neighbour_scores.because_key,
        neighbour_scores.count_because
    from neighbour_scores
    full outer join popular_candidates on popular_candidates.item_key = neighbour_scores.item_key
),

eligible_candidates as (
    select
        candidates.*,
        item.viewers,
        item.relative_score,
        evidence.count_history,
        -- the user's best personal score among what may be shown: the scale of their prior
        max(candidates.personal_score) over () as user_top_score
    from candidates
    cross join evidence
    join item_popularity as item on item.item_key = candidates.item_key
    where matches_filters(
            item.genre, item.content_type, only_genre, only_content_type,
            item_id := item.item_id, except_items := except_items
        )
        and candidates.item_key not in (select item_key from user_excluded(for_user))
),

picks as (
    select
        eligible_candidates.*,
        prior_score(
            eligible_candidates.relative_score,
            eligible_candidates.user_top_score,
            eligible_candidates.count_history,
            model_params.popularity_prior
        ) as prior,
        eligible_candidates.personal_score + prior as score
    from eligible_candidates
    cross join model_params
    order by score desc, eligible_candidates.item_key  -- item_key follows item_id order
    limit top_k
)

select
    row_number() over (order by picks.score desc, picks.item_key) as rank,
    items.item_id,
    items.title,
    items.content_type,
    items.genre,
    picks.score,
    pick_source(picks.personal_score, picks.prior) as source,
    case
        when pick_source(picks.personal_score, picks.prior) = 'personalised'
            then similarity_reason(because.title, picks.count_because)
        else popularity_reason(picks.viewers)
    end as reason
from picks
join items on items.item_key = picks.item_key
left join items as because on because.item_key = picks.because_key
order by rank;

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
with personal as (
    select *
    from recommend_personal(
        for_user, top_k, only_genre := only_genre, only_content_type := only_content_type,
        except_items := except_items
    )
),

fill as (
    select eligible.*
    from popular_eligible(only_genre, only_content_type, except_items := except_items) as eligible
    where eligible.item_key not in (select item_key from user_excluded(for_user))
        and eligible.item_id not in (select personal.item_id from personal)
    order by eligible.popularity_rank
    limit top_k
),

combined as (
    select * from personal
    union all
    select
        (select count(*) from personal) + row_number() over (order by fill.popularity_rank) as rank,
        fill.item_id,
        fill.title,
        fill.content_type,
        fill.genre,
        fill.score,
        'popular' as source,
        popularity_reason(fill.viewers) as reason
    from fill
)

select *
from combined
where combined.rank <= top_k
order by combined.rank;

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
