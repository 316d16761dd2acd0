-- item_neighbors: one row per item and one of its max_neighbors most similar
-- items, with the co-occurrence support (users who watched both) beside it.
--
-- similarity_formula = 'cosine' (the default), an asymmetric cosine over
-- user-weighted strengths. With w(u, i) = s(u, i) / n(u)^user_weight_gamma,
-- where s is the strength and n(u) how many items u watched, and
-- sq(i) = sum_u w(u, i)^2:
--   similarity(a -> b) = sum_u w(u, a) * w(u, b) / (sq(a)^alpha * sq(b)^(1 - alpha))
-- alpha = 0.5 and gamma = 0 is plain cosine. gamma > 0 lets a user who
-- watched everything say less about which items go together; alpha > 0.5
-- favours neighbours b that are broadly watched alongside a.
--
-- similarity_formula = 'rp3beta', a random walk a -> user -> b:
--   similarity(a -> b) = sum_u (s(u, a) / sum_v s(v, a))^rp3_alpha
--                              * (s(u, b) / sum_j s(u, j))^rp3_alpha
--
-- Either is then divided by viewers(b)^popularity_beta (0 by default), which
-- would push popular neighbours down. Pairs seen together by fewer than
-- min_support users are dropped. docs/evaluation.md has the measurements
-- behind the defaults.
create or replace table item_neighbors as
with item_keys as (
    -- integer keys make the self-join below several times cheaper than text ids
    select
        item_id,
        row_number() over (order by item_id) as item_key
    from items
),

user_keys as (
    select
        user_id,
        row_number() over (order by user_id) as user_key
    from (select distinct user_id from user_item_strength) as watchers
),

strengths as (
    select
        user_keys.user_key,
        item_keys.item_key,
        user_item_strength.strength
            * power(count(*) over (partition by user_keys.user_key), -model_params.user_weight_gamma) as strength,
        -- rp3beta's two steps of the walk: item -> user (the user's share of
        -- the item's viewers) and user -> item (the item's share of what the
        -- user watched)
        power(
            user_item_strength.strength
                / sum(user_item_strength.strength) over (partition by user_keys.user_key),
            model_params.rp3_alpha
        ) as user_to_item,
        power(
            user_item_strength.strength
                / sum(user_item_strength.strength) over (partition by item_keys.item_key),
            model_params.rp3_alpha
        ) as item_to_user
    from user_item_strength
    cross join model_params
    join user_keys on user_keys.user_id = user_item_strength.user_id
    join item_keys on item_keys.item_id = user_item_strength.item_id
    where user_item_strength.strength > 0
),

item_norms as (
    select
        item_key,
        sum(strength * strength) as sum_squares,
        sum(strength) as sum_strength,
        count(*) as viewers
    from strengths
    group by item_key
),

pair_dots as (
    -- each unordered pair once (a < b); both directions are restored below
    select
        a.item_key as item_a,
        b.item_key as item_b,
        sum(a.strength * b.strength) as dot,
        sum(a.item_to_user * b.user_to_item) as walk_a_to_b,
        sum(b.item_to_user * a.user_to_item) as walk_b_to_a,
        count(*) as support
    from strengths as a
    join strengths as b
        on b.user_key = a.user_key
        and b.item_key > a.item_key
    group by a.item_key, b.item_key
),

both_directions as (
    select item_a as item_key, item_b as neighbor_key, dot, walk_a_to_b as walk, support from pair_dots
    union all
    select item_b as item_key, item_a as neighbor_key, dot, walk_b_to_a as walk, support from pair_dots
),

scored as (
    select
        both_directions.item_key,
        both_directions.neighbor_key,
        case model_params.similarity_formula
            when 'cosine' then both_directions.dot
                / (
                    power(item_norm.sum_squares, model_params.similarity_alpha)
                    * power(neighbor_norm.sum_squares, 1 - model_params.similarity_alpha)
                )
            when 'rp3beta' then both_directions.walk
        end
            / power(neighbor_norm.viewers, model_params.popularity_beta) as similarity,
        both_directions.support
    from both_directions
    cross join model_params
    join item_norms as item_norm on item_norm.item_key = both_directions.item_key
    join item_norms as neighbor_norm on neighbor_norm.item_key = both_directions.neighbor_key
    where both_directions.support >= model_params.min_support
),

ranked as (
    select
        *,
        row_number() over (
            partition by item_key
            order by similarity desc, support desc, neighbor_key
        ) as neighbor_rank
    from scored
),

final as (
    select
        item.item_id,
        neighbor.item_id as neighbor_id,
        ranked.neighbor_rank,
        ranked.similarity,
        ranked.support
    from ranked
    cross join model_params
    join item_keys as item on item.item_key = ranked.item_key
    join item_keys as neighbor on neighbor.item_key = ranked.neighbor_key
    where ranked.neighbor_rank <= model_params.max_neighbors
)

select * from final;
