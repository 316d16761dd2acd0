-- items: one row per item_id in items.csv. The first row of a repeated
-- item_id wins. content_type and genre are lower-cased so filters match any
-- spelling (a genre field may list several, separated by '|'); a blank title shows the item_id, a blank genre becomes 'unknown'.
create temp table items_checked as
with source as (
    select
        file,
        rec_no,
        nullif(trim(item_id), '') as item_id,
        nullif(trim(title), '') as title,
        nullif(lower(trim(content_type)), '') as content_type,
        -- several genres separated by '|' ('Drama | Romance') become
        -- 'drama|romance': trimmed, lower-cased, no empty parts
        nullif(trim(regexp_replace(regexp_replace(lower(genre), '\s*\|\s*', '|', 'g'), '\|+', '|', 'g'), '| '), '')
            as genre
    from raw_items
),

numbered as (
    select
        *,
        row_number() over (partition by item_id order by rec_no) as occurrence
    from source
),

final as (
    select
        *,
        case
            when item_id is null then 'item_id is blank'
            when id_problem(item_id, 'item_id') is not null then id_problem(item_id, 'item_id')
            when occurrence > 1 then 'duplicate item_id ' || quoted(item_id) || ': the first row wins'
        end as row_problem
    from numbered
)

select * from final;

insert into load_issue_records (file, rec_no, column_name, problem, action)
select file, rec_no, 'item_id', row_problem, 'row skipped'
from items_checked
where row_problem is not null
union all
select file, rec_no, 'title', 'title is blank', 'kept, item_id shown as title'
from items_checked
where row_problem is null and title is null
    and 'title' not in (select column_name from absent_columns where table_name = 'items')
union all
select file, rec_no, 'content_type', 'content_type is blank', 'kept, content_type unknown'
from items_checked
where row_problem is null and content_type is null
    and 'content_type' not in (select column_name from absent_columns where table_name = 'items')
union all
select file, rec_no, 'genre', 'genre is blank', 'kept, genre unknown'
from items_checked
where row_problem is null and genre is null
    and 'genre' not in (select column_name from absent_columns where table_name = 'items');

-- item_key: a dense integer standing for item_id inside the model. Integer
-- keys make joins and lookups several times cheaper than text ids.
create table items as
select
    cast(row_number() over (order by item_id) as integer) as item_key,
    item_id,
    coalesce(title, item_id) as title,
    coalesce(content_type, 'unknown') as content_type,
    coalesce(genre, 'unknown') as genre
from items_checked
where row_problem is null
order by item_key;

-- A serving query fetches the few items it shows by key: an index lookup
-- instead of a scan of the catalogue.
create unique index items_by_key on items (item_key);
