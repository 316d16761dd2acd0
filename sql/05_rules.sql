-- The model's rules, each defined once as a scalar macro and used by every
-- later layer. They read no table (a DuckDB macro binds its tables when it
-- is created), so they are stored before any data is loaded. Rules that read
-- a model table (a user's key, the eligible popular list) open
-- sql/50_serving.sql.

-- tie_value: x to 12 significant digits, for ranking: values equal but for
-- the last bits (sums added in another order by parallel threads) tie, and
-- the tie rule decides between them the same way every build.
-- (The scale of round is a constant, as Spark requires: x is scaled to [1, 10) first.)
create or replace macro tie_value(x) as
    case
        when x = 0 or x is null then x
        else round(x / power(10, floor(log10(abs(x)))), 11) * power(10, floor(log10(abs(x))))
    end;

-- half_life_weight: 1 for something days_ago = 0, halving every half_life_days;
-- half_life_days = 0 turns decay off (always 1).
create or replace macro half_life_weight(days_ago, half_life_days) as
    case
        when half_life_days > 0 then power(0.5, days_ago / half_life_days)
        else 1.0
    end;

-- days_between: how many days earlier is before later (fractional).
create or replace macro days_between(later, earlier) as
    (epoch(later) - epoch(earlier)) / 86400.0;

-- quoted: a value inside a problem message, in quotes, cut to 40 characters
-- so that a message never carries a whole hostile input back.
create or replace macro quoted(value) as
    '''' || case when length(value) > 40 then substr(value, 1, 40) || '...' else value end || '''';

-- id_problem: why text cannot be an id (user_id, item_id), or null when it
-- can: at most 256 characters and no control character (Unicode category
-- Cc: NUL, \r, \n, ... U+0080-U+009F), which would split or forge a record
-- or a log line downstream. Every other character is allowed. The loader
-- (sql/10-12) and the live path (engine/live.py runs sql/12) share it.
create or replace macro id_problem(id_text, column_name) as
    case
        when length(id_text) > 256
            then column_name || ' ' || quoted(id_text) || ' is longer than 256 characters (' || length(id_text) || ')'
        when regexp_matches(id_text, '[\x00-\x1f\x7f-\x9f]')
            then column_name || ' ' || quoted(regexp_replace(id_text, '[\x00-\x1f\x7f-\x9f]', '?', 'g'))
                || ' holds a control character'
    end;

-- timestamp_problem: why an event time cannot be used, or null when it can:
-- from 1970-01-01 on (real exports reach back decades), and at most one day
-- after now_at (the present, from the clock view engine/clock.py makes). A
-- future-dated event would move the data's end that trending counts back
-- from, so it is refused, never clamped.
create or replace macro timestamp_problem(watched_at, timestamp_text, now_at) as
    case
        when watched_at < cast('1970-01-01 00:00:00' as timestamp)
            then 'timestamp ' || quoted(timestamp_text) || ' is before 1970-01-01'
        when days_between(watched_at, now_at) > 1
            then 'timestamp ' || quoted(timestamp_text) || ' is in the future (more than a day after now)'
    end;

-- full_views: a user's summed seconds on an item as views of its estimated
-- length; 0 when the item has no estimated length (no play over 0 seconds).
create or replace macro full_views(watch_seconds, length_seconds) as
    coalesce(watch_seconds / length_seconds, 0);

-- completion: how much of the item the user saw, 0..1.
create or replace macro completion(full_views) as
    least(full_views, 1.0);

-- is_heavy: watched heavily enough never to be recommended back.
create or replace macro is_heavy(completion, heavy_threshold) as
    completion >= heavy_threshold;

-- base_strength: how seconds become strength, before any recency weight:
--   log_views: log2(1 + least(full_views, max_full_views)), the default;
--   the alternatives measured against it (docs/evaluation.md) by name.
create or replace macro base_strength(full_views, watch_seconds, strength_formula, max_full_views) as
    case strength_formula
        when 'log_views' then ln(1 + least(full_views, max_full_views)) / ln(2)
        when 'views' then least(full_views, max_full_views)
        when 'binary' then case when watch_seconds > 0 then 1.0 else 0.0 end
        when 'seconds' then watch_seconds
        when 'log_seconds' then ln(1 + watch_seconds)
    end;

-- popularity_part: what one viewer's strength on an item adds to its
-- popularity: base strength, halving every trending_half_life_days before
-- the data's end.
create or replace macro popularity_part(base_strength, days_before_end, trending_half_life_days) as
    base_strength * half_life_weight(days_before_end, trending_half_life_days);

-- is_excluded: whether a watched item is never recommended back to its
-- viewer: watched heavily, or watched at all unless resurface_light is set.
create or replace macro is_excluded(is_heavy, resurface_light) as
    is_heavy or not resurface_light;

-- contribution: what one watched item adds to a candidate's score:
--   strength(u, w) x similarity(w -> i) x recency of w in u's history
create or replace macro contribution(strength, similarity, days_before_user_end, user_half_life_days) as
    strength * similarity * half_life_weight(days_before_user_end, user_half_life_days);

-- pair_similarity: one direction a -> b of a cosine-family similarity (sql/45)
--   shrunk_dot / norm^normalisation / viewers(b)^popularity_beta
create or replace macro pair_similarity(shrunk_dot, norm, neighbor_viewers, normalisation, popularity_beta) as
    shrunk_dot / power(norm, normalisation) / power(neighbor_viewers, popularity_beta);

-- prior_score: what popularity adds to a personal score. score = personal +
-- prior ranks as (1 - l) * personal / top + l * rel (top = user_top_score,
-- the user's best personal score, 1 when they have none: it puts the prior
-- on the scale of their scores; rel = relative_popularity), where l,
-- popularity's weight, counts popularity_prior (c) pseudo-items against the
-- user's count_history (n) own items and never falls below prior_floor (a0),
-- so what is watched now does not fade out of long histories:
--   l = a0 + (1 - a0) * c / (c + n), so prior = l / (1 - l) * top * rel = (c / n + a0) / (1 - a0) * top * rel
-- a0 = 0 is l = c / (c + n): short histories lean on popularity, long ones
-- on similarity. No prior (0) when c = a0 = 0, or n = 0 (l = 1: the popular
-- list itself is the answer, as the fill).
create or replace macro prior_score(relative_popularity, user_top_score, count_history, popularity_prior, prior_floor) as
    case
        when (popularity_prior > 0 or prior_floor > 0) and count_history > 0
            then (popularity_prior / count_history + prior_floor) / (1 - prior_floor)
                * coalesce(nullif(user_top_score, 0), 1.0)
                * relative_popularity
        else 0.0
    end;

-- pick_source: 'personalised' when similarity gave a pick at least as much
-- of its score as popularity did, else 'popular'; the reason follows it.
-- (personal and prior are on one scale: this compares (1 - l) * personal /
-- top with l * rel, the two parts of the blend of prior_score.)
create or replace macro pick_source(personal_score, prior) as
    case when personal_score > 0 and personal_score >= prior then 'personalised' else 'popular' end;

-- filter_values: a filter argument as a list of lower-cased values: null, ''
-- or [] -> null (any), 'Drama' -> ['drama'], ['Drama', 'Romance'] ->
-- ['drama', 'romance']. One value or a list: both call forms work.
create or replace macro filter_values(wanted) as (
    select list(lower(trim(value)))
    from (select unnest([wanted], recursive := true) as value) as given
    where trim(value) <> ''
);

-- matches_filters: whether an item of this genre and content type passes the
-- optional filters: only_genre and only_content_type are each null (any),
-- one value or a list of values (any of them), compared lower-case as the
-- tables store them. An item's genre may hold several genres separated by
-- '|' ('drama|romance'); each of them matches. An item whose item_id is in
-- except_items (a list of ids) never passes.
create or replace macro matches_filters(
    genre, content_type, only_genre, only_content_type, item_id := null, except_items := null
) as
    (filter_values(only_genre) is null or list_has_any(string_split(genre, '|'), filter_values(only_genre)))
    and (filter_values(only_content_type) is null or list_contains(filter_values(only_content_type), content_type))
    and not coalesce(list_contains(except_items, item_id), false);

-- popularity_reason: the reason shown for an item picked for its popularity.
create or replace macro popularity_reason(viewers) as
    case
        when viewers = 0 then 'in the catalogue, not watched yet'
        when viewers = 1 then 'popular on the platform (1 viewer)'
        else 'popular on the platform (' || viewers || ' viewers)'
    end;

-- similarity_reason: the reason shown for a personalised pick.
create or replace macro similarity_reason(because_title, count_because) as
    case
        when count_because = 1 then 'similar to ' || because_title || ', which you watched'
        else 'similar to ' || because_title || ' and ' || (count_because - 1) || ' more you watched'
    end;

-- neighbor_reason: the reason shown for an item similar to another.
create or replace macro neighbor_reason(support, source_title) as
    'watched by ' || support
        || case when support = 1 then ' viewer' else ' viewers' end
        || ' who also watched ' || source_title;
