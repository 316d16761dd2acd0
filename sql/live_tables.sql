-- The tables of the live overlay (sql/live_overlay.sql), created empty in the
-- in-memory catalog live each time a process opens a model. The engine fills
-- the first four; live_overlay.sql computes the others from them.

-- live.events: one row per checked event past what the build folded.
create table live.events (
    user_id varchar,
    item_id varchar,
    event_type varchar,
    watch_seconds double,
    watched_at timestamp
);

-- live.changed: one row per user of the latest batch of live events.
create table live.changed (user_id varchar);

-- live.built_keys: one row per user with live events who has built rows: their built key.
create table live.built_keys (user_id varchar, user_key integer);

-- live.built_rows: the built rows of user_item_strength of each user with
-- live events, copied by key (one index lookup per user: a filter on a list
-- of keys would read the whole table).
create table live.built_rows as
select user_key, item_key, count_plays, watch_seconds, last_watched_at, base_strength, days_before_end
from recs.user_item_strength
limit 0;

-- live.users: one row per user with live events: their built key or a new one.
create table live.users (user_id varchar, user_key integer, is_built boolean);

create table live.pairs (
    user_id varchar,
    item_id varchar,
    count_plays bigint,
    watch_seconds double,
    last_watched_at timestamp
);

create table live.user_item_strength as select * from recs.user_item_strength limit 0;

create table live.user_keys as select * from recs.user_keys limit 0;

create table live.item_popularity as select * from recs.item_popularity;
