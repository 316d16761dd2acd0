-- neighbor_lists: one row per item with its max_neighbors most similar items,
-- each with the co-occurrence support (users who watched both); item_neighbors,
-- at the end, shows them one row per pair.
--
-- An asymmetric cosine over user-weighted strengths. With s(u, i) the
-- strength, n(u) how many items u watched, w(u, i) = s(u, i) / n(u)^gamma
-- (gamma = user_weight_gamma) and sq(i) = sum_u w(u, i)^2:
--   similarity(a -> b) = sum_u w(u, a) * w(u, b)
--                        / (sq(a)^alpha * sq(b)^(1 - alpha))   -- alpha = similarity_alpha
--                        / viewers(b)^popularity_beta
-- alpha = 0.5, gamma = 0, popularity_beta = 0 is plain cosine. gamma > 0 lets
-- a user who watched everything say less about which items go together;
-- alpha > 0.5 favours neighbours b broadly watched alongside a;
-- popularity_beta > 0 pushes popular neighbours down. Pairs seen together by
-- fewer than min_support users are dropped. With similarity_history_cap > 0
-- only each user's that many most recent items enter the pairs: the cost
-- grows with the square of a history, and the latest part of a long history
-- says the most about what goes together now. docs/evaluation.md has the measurements
-- behind the defaults; docs/performance.md the cost.
create or replace table neighbor_lists as
with weighted as (
    select
        user_item_strength.user_key,
        user_item_strength.item_key,
        user_item_strength.strength
            * power(count(*) over (partition by user_item_strength.user_key), -model_params.user_weight_gamma) as weight,
        row_number() over (
            partition by user_item_strength.user_key
            order by user_item_strength.last_watched_at desc, user_item_strength.strength desc, user_item_strength.item_key
        ) as recency_rank
    from user_item_strength
    cross join model_params
    where user_item_strength.strength > 0
),

item_norms as (
    select
        item_key,
        sum(weight * weight) as sum_squares,
        count(*) as viewers
    from weighted
    group by item_key
),

pair_weights as (
    select
        weighted.user_key,
        weighted.item_key,
        weighted.weight
    from weighted
    cross join model_params
    where model_params.similarity_history_cap = 0
        or weighted.recency_rank <= model_params.similarity_history_cap
),

pair_dots as (
    -- each unordered pair once (a < b); both directions are scored below
    select
        a.item_key as item_a,
        b.item_key as item_b,
        sum(a.weight * b.weight) as dot,
        count(*) as support
    from pair_weights as a
    join pair_weights as b
        on b.user_key = a.user_key
        and b.item_key > a.item_key
    group by a.item_key, b.item_key
    having count(*) >= (select min_support from model_params)
),

pair_scores as (
    select
        pair_dots.item_a,
        pair_dots.item_b,
        pair_dots.support,
        pair_dots.dot
            / (power(norm_a.sum_squares, model_params.similarity_alpha)
                * power(norm_b.sum_squares, 1 - model_params.similarity_alpha))
            / power(norm_b.viewers, model_params.popularity_beta) as similarity_a_to_b,
        pair_dots.dot
            / (power(norm_b.sum_squares, model_params.similarity_alpha)
                * power(norm_a.sum_squares, 1 - model_params.similarity_alpha))
            / power(norm_a.viewers, model_params.popularity_beta) as similarity_b_to_a
    from pair_dots
    cross join model_params
    join item_norms as norm_a on norm_a.item_key = pair_dots.item_a
    join item_norms as norm_b on norm_b.item_key = pair_dots.item_b
),

scored as (
    select item_a as item_key, item_b as neighbor_key, similarity_a_to_b as similarity, support from pair_scores
    union all
    select item_b as item_key, item_a as neighbor_key, similarity_b_to_a as similarity, support from pair_scores
),

top_neighbors as (
    -- DuckDB's max_by(arg, value, n) keeps each item's n best in a small heap
    -- instead of sorting every pair (elsewhere: row_number() over (partition
    -- by item_key order by ...) <= n). Ties: more support, then lower key.
    select
        scored.item_key,
        max_by(
            struct_pack(neighbor_key := scored.neighbor_key, similarity := scored.similarity, support := scored.support),
            struct_pack(similarity := scored.similarity, support := scored.support, key_order := -scored.neighbor_key),
            greatest(model_params.max_neighbors, 1)  -- n must be positive; 0 is applied below
        ) as best
    from scored
    cross join model_params
    group by scored.item_key, model_params.max_neighbors
),

ranked as (
    select
        item_key,
        unnest(best, recursive := true),
        generate_subscripts(best, 1) as neighbor_rank
    from top_neighbors
),

final as (
    -- one row per item, its neighbours best first: a recommendation looks up
    -- a few items by key and reads each one's whole list in one row
    select
        ranked.item_key,
        item.item_id,
        list(
            struct_pack(
                neighbor_key := ranked.neighbor_key,
                neighbor_id := neighbor.item_id,
                similarity := ranked.similarity,
                support := ranked.support
            )
            order by ranked.neighbor_rank
        ) as neighbors
    from ranked
    cross join model_params
    join items as item on item.item_key = ranked.item_key
    join items as neighbor on neighbor.item_key = ranked.neighbor_key
    where ranked.neighbor_rank <= model_params.max_neighbors
    group by ranked.item_key, item.item_id
)

select * from final
order by item_key;

create unique index neighbor_lists_by_key on neighbor_lists (item_key);

-- item_neighbors: the same, one row per item and neighbour: what to query
-- by hand, and what similar_items reads (the recommendation queries read
-- neighbor_lists).
create or replace view item_neighbors as
select
    neighbor_lists.item_id,
    entry.neighbor.neighbor_id,
    entry.neighbor_rank,
    entry.neighbor.similarity,
    entry.neighbor.support,
    neighbor_lists.item_key,
    entry.neighbor.neighbor_key
from neighbor_lists
cross join unnest(neighbor_lists.neighbors) with ordinality as entry (neighbor, neighbor_rank);
