-- neighbor_lists: one row per item with its max_neighbors most similar items,
-- each with the co-occurrence support (users who watched both); item_neighbors,
-- at the end, shows them one row per pair.
--
-- neighbor_model = 'cosine': from item_pairs and item_norms (sql/40), an
-- asymmetric cosine, shrunk by its support and by the neighbour's popularity:
--   similarity(a -> b) = dot(a, b) / (sq(a)^alpha * sq(b)^(1 - alpha))^p
--                        * support / (support + shrinkage)
--                        / viewers(b)^popularity_beta
-- with alpha = similarity_alpha, p = similarity_normalisation and shrinkage
-- = support_shrinkage. alpha = 0.5, p = 1, no shrinkage and beta = 0 is
-- plain cosine; p = 0 is the raw dot product, which leans to popular
-- neighbours (as implicit's BM25 does); alpha > 0.5 favours neighbours b
-- broadly watched alongside a; shrinkage discounts pairs that only a few
-- users share; beta > 0 pushes popular neighbours down (RP3beta's penalty).
-- neighbor_model = 'ease': the weights engine/ease.py wrote to ease_weights.
-- docs/evaluation.md has the measurements behind the defaults.
create or replace table neighbor_lists as
with pair_scores as (
    select
        item_pairs.item_a,
        item_pairs.item_b,
        item_pairs.support,
        item_pairs.dot * item_pairs.support / (item_pairs.support + model_params.support_shrinkage) as shrunk_dot,
        power(norm_a.sum_squares, model_params.similarity_alpha)
            * power(norm_b.sum_squares, 1 - model_params.similarity_alpha) as norm_a_to_b,
        power(norm_b.sum_squares, model_params.similarity_alpha)
            * power(norm_a.sum_squares, 1 - model_params.similarity_alpha) as norm_b_to_a,
        norm_a.viewers as viewers_a,
        norm_b.viewers as viewers_b
    from item_pairs
    cross join model_params
    join item_norms as norm_a on norm_a.item_key = item_pairs.item_a
    join item_norms as norm_b on norm_b.item_key = item_pairs.item_b
    where model_params.neighbor_model = 'cosine'
),

scored as (
    select
        pair_scores.item_a as item_key,
        pair_scores.item_b as neighbor_key,
        pair_similarity(
            pair_scores.shrunk_dot,
            pair_scores.norm_a_to_b,
            pair_scores.viewers_b,
            model_params.similarity_normalisation,
            model_params.popularity_beta
        ) as similarity,
        pair_scores.support
    from pair_scores
    cross join model_params
    union all
    select
        pair_scores.item_b as item_key,
        pair_scores.item_a as neighbor_key,
        pair_similarity(
            pair_scores.shrunk_dot,
            pair_scores.norm_b_to_a,
            pair_scores.viewers_a,
            model_params.similarity_normalisation,
            model_params.popularity_beta
        ) as similarity,
        pair_scores.support
    from pair_scores
    cross join model_params
    union all
    select
        ease_weights.item_key,
        ease_weights.neighbor_key,
        ease_weights.weight as similarity,
        ease_weights.support
    from ease_weights
),

-- [duckdb] the top n per item; Spark's version below (engine/dialect.py)
top_neighbors as (
    -- DuckDB's max_by(arg, value, n) keeps each item's n best in a small heap
    -- instead of sorting every pair (elsewhere: row_number() over (partition
    -- by item_key order by ...) <= n). Ties (tie_value): more support, then lower key.
    select
        scored.item_key,
        max_by(
            struct_pack(neighbor_key := scored.neighbor_key, similarity := scored.similarity, support := scored.support),
            struct_pack(
                similarity := tie_value(scored.similarity), support := scored.support, key_order := -scored.neighbor_key
            ),
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

-- [spark]
-- -- Spark has no max_by(arg, value, n) nor ordered list(): the same top n by a
-- -- window, and the list built from (rank, entry) structs sorted by rank.
-- ranked as (
--     select
--         scored.item_key,
--         scored.neighbor_key,
--         scored.similarity,
--         scored.support,
--         row_number() over (
--             partition by scored.item_key
--             order by tie_value(scored.similarity) desc, scored.support desc, scored.neighbor_key
--         ) as neighbor_rank
--     from scored
-- ),
--
-- final as (
--     select
--         ranked.item_key,
--         item.item_id,
--         transform(
--             array_sort(collect_list(struct(
--                 ranked.neighbor_rank as neighbor_rank,
--                 ranked.neighbor_key as neighbor_key,
--                 neighbor.item_id as neighbor_id,
--                 ranked.similarity as similarity,
--                 ranked.support as support
--             ))),
--             entry -> named_struct(
--                 'neighbor_key', entry.neighbor_key,
--                 'neighbor_id', entry.neighbor_id,
--                 'similarity', entry.similarity,
--                 'support', entry.support
--             )
--         ) as neighbors
--     from ranked
--     cross join model_params
--     join items as item on item.item_key = ranked.item_key
--     join items as neighbor on neighbor.item_key = ranked.neighbor_key
--     where ranked.neighbor_rank <= model_params.max_neighbors
--     group by ranked.item_key, item.item_id
-- )
-- [end]

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
