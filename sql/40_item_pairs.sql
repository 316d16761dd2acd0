-- item_pairs: one row per pair of items watched by the same users (each
-- unordered pair once, item_a < item_b), with the dot product of their
-- user-weighted strengths and their support (users who watched both);
-- item_norms: one row per watched item. sql/45 turns them into similarities.
--
-- With s(u, i) the strength and n(u) how many items u watched:
--   w(u, i)  = s(u, i) / n(u)^gamma                  -- gamma = user_weight_gamma
--   dot(a, b) = sum over users u of w(u, a) * w(u, b)
--   sq(i)     = sum over users u of w(u, i)^2;  viewers(i) = users of i
-- gamma > 0 lets a user who watched everything say less about which items
-- go together. With similarity_history_cap > 0 only each user's that many
-- most recent items enter the pairs: the cost grows with the square of a
-- history, and the latest part of a long history says the most about what
-- goes together now. Pairs seen by fewer than min_support users are dropped.
-- This self-join is most of a build's time (docs/performance.md); the tuner
-- reuses its result while it tries parameters of the later files. A build
-- drops item_pairs and item_weights once sql/45 has read them (their size
-- grows with the square of histories); item_norms stays.

create or replace table item_weights as
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
where user_item_strength.strength > 0;

create or replace table item_norms as
select
    item_key,
    sum(weight * weight) as sum_squares,
    count(*) as viewers
from item_weights
group by item_key;

create or replace table item_pairs as
with pair_weights as (
    select
        item_weights.user_key,
        item_weights.item_key,
        item_weights.weight
    from item_weights
    cross join model_params
    where model_params.similarity_history_cap = 0
        or item_weights.recency_rank <= model_params.similarity_history_cap
)

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
having count(*) >= (select min_support from model_params);

-- ease_weights: one row per item and neighbour of the EASE model (Steck
-- 2019), filled by engine/ease.py from the co-watch counts when
-- model_params.neighbor_model = 'ease' (the matrix inverse is numpy's, not
-- SQL's); empty otherwise.
create or replace table ease_weights (
    item_key integer not null,
    neighbor_key integer not null,
    weight double not null,
    support bigint not null
);
