-- users: one row per user_id in users.csv. The first row of a repeated
-- user_id wins; the others are reported. A bad age is kept as unknown.
create temp table users_checked as
with source as (
    select
        file,
        rec_no,
        nullif(trim(user_id), '') as user_id,
        nullif(trim(age), '') as age_text,
        nullif(trim(gender), '') as gender,
        nullif(trim(region), '') as region
    from raw_users
),

numbered as (
    select
        *,
        row_number() over (partition by user_id order by rec_no) as occurrence
    from source
),

final as (
    select
        *,
        case
            when user_id is null then 'user_id is blank'
            when id_problem(user_id, 'user_id') is not null then id_problem(user_id, 'user_id')
            when occurrence > 1 then 'duplicate user_id ' || quoted(user_id) || ': the first row wins'
        end as row_problem,
        case
            when regexp_full_match(age_text, '[0-9]{1,3}') and cast(age_text as integer) <= 120
                then cast(age_text as integer)
        end as age
    from numbered
)

select * from final;

insert into load_issue_records (file, rec_no, column_name, problem, action)
select file, rec_no, 'user_id', row_problem, 'row skipped'
from users_checked
where row_problem is not null
union all
select file, rec_no, 'age', 'age is blank', 'kept, age unknown'
from users_checked
where row_problem is null and age_text is null
    and 'age' not in (select column_name from absent_columns where table_name = 'users')
union all
select file, rec_no, 'age', 'age ' || quoted(age_text) || ' is not a whole number from 0 to 120', 'kept, age unknown'
from users_checked
where row_problem is null and age_text is not null and age is null;

create table users as
select
    user_id,
    age,
    gender,
    region
from users_checked
where row_problem is null
order by user_id;

-- "is this user known?" is asked on every recommendation: an index lookup.
create unique index users_by_id on users (user_id);
