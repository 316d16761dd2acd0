-- item_neighbors: one row per item and one of its max_neighbors most similar
-- items, with the co-occurrence support (users who watched both) beside it.
--
-- cosine(a, b) = sum over users of strength(u, a) * strength(u, b)
--                / (||strength(., a)|| * ||strength(., b)||)
-- Pairs seen together by fewer than min_support users are dropped.
create table item_neighbors as
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
    from user_item_strength
    join user_keys on user_keys.user_id = user_item_strength.user_id
    join item_keys on item_keys.item_id = user_item_strength.item_id
    where user_item_strength.strength > 0
),

item_norms as (
    select
        item_key,
        sqrt(sum(strength * strength)) as norm
    from strengths
    group by item_key
),

pair_dots as (
    -- each unordered pair once (a < b); both directions are restored below
    select
        a.item_key as item_a,
        b.item_key as item_b,
        sum(a.strength * b.strength) as dot,
        count(*) as support
    from strengths as a
    join strengths as b
        on b.user_key = a.user_key
        and b.item_key > a.item_key
    group by a.item_key, b.item_key
),

pair_cosines as (
    select
        pair_dots.item_a,
        pair_dots.item_b,
        pair_dots.dot / (norm_a.norm * norm_b.norm) as similarity,
        pair_dots.support
    from pair_dots
    cross join model_params
    join item_norms as norm_a on norm_a.item_key = pair_dots.item_a
    join item_norms as norm_b on norm_b.item_key = pair_dots.item_b
    where pair_dots.support >= model_params.min_support
),

both_directions as (
    select item_a as item_key, item_b as neighbor_key, similarity, support from pair_cosines
    union all
    select item_b as item_key, item_a as neighbor_key, similarity, support from pair_cosines
),

ranked as (
    select
        *,
        row_number() over (
            partition by item_key
            order by similarity desc, support desc, neighbor_key
        ) as neighbor_rank
    from both_directions
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
