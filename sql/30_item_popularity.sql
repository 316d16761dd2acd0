-- item_popularity: one row per catalogue item, watched or not.
-- score = sum of every viewer's base strength: "full views' worth" of engaged
-- watching, comparable across a 3-minute episode and a 2-hour movie (raw
-- seconds would rank every movie above every microdrama). With
-- trending_half_life_days > 0 each viewer's part halves every that many days
-- before the last event in the data, so popularity means "popular lately".
-- Ties go to more viewers, then item_id, so the order is stable. Stored in
-- rank order, so the top of the list is the first rows read.
create or replace table item_popularity as
with per_item as (
    select
        item_key,
        count(*) as viewers,
        sum(count_plays) as count_plays,
        sum(watch_seconds) as watch_seconds,
        sum(
            popularity_part(
                user_item_strength.base_strength, user_item_strength.days_before_end, model_params.trending_half_life_days
            )
        ) as score
    from user_item_strength
    cross join model_params
    group by item_key
),

final as (
    select
        items.item_key,
        items.item_id,
        -- what the serving queries show and filter on, copied so that
        -- popular needs no join
        items.title,
        items.content_type,
        items.genre,
        coalesce(per_item.viewers, 0) as viewers,
        coalesce(per_item.count_plays, 0) as count_plays,
        coalesce(per_item.watch_seconds, 0) as watch_seconds,
        coalesce(per_item.score, 0) as score,
        -- score as a share of the top score, 0..1: what the popularity prior adds
        coalesce(per_item.score / nullif(max(per_item.score) over (), 0), 0) as relative_score,
        row_number() over (
            order by coalesce(per_item.score, 0) desc, coalesce(per_item.viewers, 0) desc, items.item_id
        ) as popularity_rank
    from items
    left join per_item on per_item.item_key = items.item_key
)

select * from final
order by popularity_rank;
