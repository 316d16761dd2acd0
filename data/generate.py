"""Generate a deterministic, synthetic watch log for a streaming platform.

Writes users.csv, items.csv and events.csv (one row per viewing session) with
the standard library only; the same arguments always give byte-identical files.

The model behind the numbers:
* Users (u1..uN) have an age skewed to 18-40, a gender, an Indonesian city and
  a taste: 1-3 preferred genres and 1-2 preferred content types, nudged by age
  and gender (younger viewers lean to microdrama, women to romance and drama).
* Items (i1..iM) have a content type, a type-dependent genre, a unique title,
  a hidden length (microdrama episode 1-5 min, tv episode 20-60 min, series
  episode 35-65 min, movie 90-150 min) and a Zipf popularity over a random
  permutation, so popularity has a long tail overall and inside every genre.
* Each user gets a heavy-tailed (lognormal) number of sessions, adding up to
  exactly --events. About 75% of the items a user starts come from their
  genres (preferred content types first), the rest from global popularity. A
  user starts an item once; a favourite (genre and type both match) may be
  rewatched, 2-4 sessions in all. u1 likes drama series, has watched i1
  ("Drama Series A") and at least 15 items in all.
* A session watches length x completion seconds. Completion comes from a
  mixture: abandoned (2-30%), partial (30-85%) or finished (90-100%); the
  better the item matches the user's taste, the likelier finished. event_type
  is "complete" when the session reached 95% of the length, else "play".
* Timestamps are UTC with a Z, spread over 2026-08-01..2026-10-31, busier at
  weekends, with an evening peak in that UTC clock.

Row order: runs of up to SORT_LIMIT events (the bundled preset) write
events.csv sorted by timestamp. Larger runs stream one user at a time to keep
memory flat: users in id order, each user's events in time order.

Rated presets (sparse, longtail) model a ratings log instead, for look-alikes
of real datasets (benchmarks/lookalikes.py): all items are movies with one
genre, users have no age, gender or region, a user rates an item once
(event_type "play", watch_seconds = rating x a constant), items have release
dates and popularity that decays after release (a few evergreen items), users
are active over a lognormal span of days, and a rating is a mean plus the
item's quality, the user's bias, a bonus when the genre is one of the user's
and noise. See RATED for each preset's settings.
* sparse: 16,554 users, 10,506 items, 100,000 ratings 0-10 (x 600 s) over a
  year; a few ratings per user; new releases drive popularity.
* longtail: 610 users, 9,742 items, 100,836 ratings 0.5-5 (x 1200 s) over six
  years; at least 20 ratings per user, heavy-tailed; a long tail of items.

Usage: python data/generate.py [--out DIR] [--users N] [--items M]
       [--events E] [--seed S] [--preset bundled|1m|10m|sparse|longtail]
"""

import argparse
import bisect
import csv
import datetime
import heapq
import itertools
import math
import sys
import time
from collections import Counter
from pathlib import Path
from random import Random

PRESETS = {  # name: (users, items, events)
    "bundled": (1_500, 400, 45_000),
    "1m": (20_000, 5_000, 1_000_000),
    "10m": (200_000, 20_000, 10_000_000),
    "sparse": (16_554, 10_506, 100_000),
    "longtail": (610, 9_742, 100_836),
}
DEFAULT_SEED = 2026
SORT_LIMIT = 500_000  # up to this many events, events.csv is sorted by time
FLUSH_LINES = 200_000  # events buffered before each write

WINDOW_START = datetime.date(2026, 8, 1)
WINDOW_DAYS = 92  # 2026-08-01 .. 2026-10-31
WEEKEND_WEIGHT = 1.25  # Friday to Sunday, relative to other days
CLOCK_POOL = 1 << 17  # size of the lookup pool that draws a session's hour slot
HOUR_WEIGHTS = [  # share of sessions starting in each hour, 00..23
    3, 2, 1.5, 1, 1, 1, 1.5, 2, 2.5, 3, 3, 3.5,
    4, 4, 4, 4, 4.5, 5, 6.5, 8.5, 10, 10, 8, 5,
]

AGE_BANDS = [(16, 17, 4), (18, 24, 28), (25, 34, 33), (35, 44, 18), (45, 54, 10), (55, 70, 7)]
FEMALE_SHARE = 0.52
REGIONS = {
    "Jakarta": 26, "Surabaya": 10, "Bandung": 9, "Bekasi": 8, "Medan": 7,
    "Tangerang": 6, "Depok": 5, "Semarang": 5, "Makassar": 4, "Palembang": 4,
    "Yogyakarta": 4, "Malang": 3, "Denpasar": 3, "Balikpapan": 2, "Manado": 2,
}

CONTENT_TYPES = ["tv", "movie", "series", "microdrama"]
CONTENT_MIX = [20, 25, 30, 25]  # share of the catalogue per content type
LENGTH_SECONDS = {  # hidden length of an episode or feature: (min, max)
    "tv": (20 * 60, 60 * 60),
    "movie": (90 * 60, 150 * 60),
    "series": (35 * 60, 65 * 60),
    "microdrama": (60, 300),
}
GENRES = [
    "drama", "comedy", "romance", "action", "thriller", "horror",
    "family", "documentary", "animation", "reality", "crime", "sports",
]
GENRE_MIX = {  # genre weights of the catalogue per content type
    "tv": {"reality": 25, "family": 20, "comedy": 15, "sports": 15, "documentary": 10,
           "drama": 10, "animation": 5},
    "movie": {"action": 18, "drama": 15, "horror": 14, "comedy": 14, "thriller": 10,
              "romance": 10, "animation": 7, "family": 6, "documentary": 4, "crime": 2},
    "series": {"drama": 25, "romance": 15, "crime": 12, "thriller": 12, "comedy": 10,
               "action": 8, "horror": 8, "family": 5, "animation": 5},
    "microdrama": {"romance": 40, "drama": 35, "comedy": 10, "thriller": 5, "family": 5,
                   "horror": 5},
}
GENRE_APPEAL = {  # how often a genre is among a user's preferred genres
    "drama": 16, "romance": 14, "comedy": 12, "action": 10, "horror": 9, "thriller": 8,
    "family": 7, "reality": 6, "crime": 5, "animation": 5, "sports": 4, "documentary": 4,
}
GENDER_TILT = {"F": {"romance": 1.6, "drama": 1.6}, "M": {"action": 1.6, "sports": 1.6, "crime": 1.6}}
TYPE_APPEAL = {"tv": 15, "movie": 30, "series": 30, "microdrama": 25}
YOUNG_BELOW = 30  # younger users like microdrama 1.5x more
SENIOR_FROM = 45  # older users like tv 2x more, microdrama 0.6x
FIXED_ITEMS = [  # (title, content_type, genre) of i1, i2, ...
    ("Drama Series A", "series", "drama"),
    ("Family Show B", "tv", "family"),
]

GENRE_COUNT_WEIGHTS = [30, 45, 25]  # a user prefers 1, 2 or 3 genres
TYPE_COUNT_WEIGHTS = [60, 40]  # a user prefers 1 or 2 content types
GENRE_RANK_WEIGHTS = [0.6, 0.25, 0.15]  # primary genre is watched most
TASTE_SHARE = 0.75  # share of started items drawn from the user's genres
TYPE_LOYALTY = 0.8  # share of those taste draws in the preferred content types
ZIPF_EXPONENT = 1.0  # item popularity weight = 1 / rank ** ZIPF_EXPONENT
SESSIONS_SIGMA = 1.2  # spread of the lognormal sessions-per-user
MAX_HISTORY_SHARE = 0.5  # no user has more sessions than this share of items
MAX_DRAW_ROUNDS = 4  # popularity draws before topping a history up in rank order
REWATCH_CHANCE = 0.2  # chance that a favourite is rewatched
REWATCH_SESSIONS = (2, 4)  # sessions of a rewatched favourite
U1_MIN_SESSIONS = 60  # with at most 4 sessions per item: >= 15 distinct items
MIN_ITEMS = int(U1_MIN_SESSIONS / MAX_HISTORY_SHARE)  # so every history cap fits u1

COMPLETION_RANGES = [(0.02, 0.30), (0.30, 0.85), (0.90, 1.00)]  # abandoned, partial, finished
COMPLETION_MIX = [  # (abandoned, partial) chances by match level; finished is the rest
    (0.40, 0.40),  # 0: neither genre nor content type matches
    (0.25, 0.40),  # 1: one of them matches
    (0.15, 0.35),  # 2: both match
    (0.05, 0.20),  # 3: favourite being rewatched
]
COMPLETE_AT = 0.95  # completion from which a session counts as "complete"

TITLE_PLACES = [
    "Jakarta", "Bandung", "Surabaya", "Medan", "Semarang", "Makassar", "Yogyakarta",
    "Denpasar", "Palembang", "Bekasi", "Bogor", "Malang", "Solo", "Bali", "Lombok",
    "Batavia", "Bukittinggi", "Manado", "Ambon", "Pontianak", "Balikpapan", "Padang",
    "Toba", "Cirebon", "Kupang",
]
TITLE_EN_ADJ = [
    "Midnight", "Silent", "Broken", "Golden", "Hidden", "Last", "Crimson", "Endless",
    "Secret", "Wild", "Distant", "Burning", "Frozen", "Lost", "Restless", "Quiet",
    "Velvet", "Hollow", "Bright", "Savage", "Little", "Second", "Fading", "Rising",
    "Northern", "Electric", "Paper", "Iron", "Sweet", "Bitter", "Stolen", "Falling",
    "Rainy", "Neon", "Morning", "Final", "Brave", "Sleepless", "Wandering", "Scarlet",
]
TITLE_EN_NOUN = [
    "Harbour", "Promise", "Season", "Kingdom", "Garden", "Road", "Letters", "Witness",
    "Island", "Heart", "Empire", "Summer", "Shadows", "River", "Station", "Verdict",
    "Symphony", "Frontier", "Horizon", "Alley", "Market", "Dynasty", "Tide", "Lantern",
    "Bridge", "Storm", "Orchard", "Signal", "Mirror", "Highway", "Monsoon", "Kitchen",
    "Hotel", "Academy", "Detective", "Wedding", "Village", "Lighthouse", "Dance", "Ghost",
]
TITLE_ID_NOUN = [
    "Cinta", "Rahasia", "Janji", "Kisah", "Hantu", "Rindu", "Mimpi", "Bayang", "Jodoh",
    "Takdir", "Dendam", "Surat", "Pelangi", "Senja", "Sahabat", "Keluarga", "Istri",
    "Suami", "Menantu", "Warisan", "Pengantin", "Lentera", "Langit", "Ombak", "Rumah",
    "Bunga", "Malam", "Kembang", "Anak", "Cahaya",
]
TITLE_ID_ADJ = [
    "Terlarang", "Pertama", "Terakhir", "Kelam", "Abadi", "Tersembunyi", "Sejati",
    "yang Hilang", "Tanpa Nama", "Sang Pewaris", "Kedua", "Merah", "Biru", "Putih",
    "Sunyi", "Manis", "Pahit", "Jingga", "Lama", "Kecil", "Impian", "Berdarah",
    "Tengah Malam", "Dalam Diam", "Untukmu",
]


def parse_args(argv=None):
    """Read the command line and fill in preset defaults."""
    parser = argparse.ArgumentParser(description="Generate users.csv, items.csv and events.csv.")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="bundled",
                        help="sizes to start from (default: bundled, written next to this script)")
    parser.add_argument("--out", type=Path, help="output folder (required for the 1m and 10m presets)")
    parser.add_argument("--users", type=int, help="number of users")
    parser.add_argument("--items", type=int, help="number of items")
    parser.add_argument("--events", type=int, help="number of events, exactly")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed")
    args = parser.parse_args(argv)
    users, items, events = PRESETS[args.preset]
    args.users = users if args.users is None else args.users
    args.items = items if args.items is None else args.items
    args.events = events if args.events is None else args.events
    if args.out is None:
        if args.preset != "bundled":
            parser.error(f"--out is required for --preset {args.preset}")
        args.out = Path(__file__).resolve().parent
    if args.items < MIN_ITEMS:
        parser.error(f"--items must be at least {MIN_ITEMS}")
    if args.users < 1:
        parser.error("--users must be at least 1")
    cap = int(args.items * MAX_HISTORY_SHARE)
    if not args.users - 1 + U1_MIN_SESSIONS <= args.events <= args.users * cap:
        parser.error(f"--events must be between {args.users - 1 + U1_MIN_SESSIONS} and {args.users * cap}")
    return args


def cumulative(weights):
    """Running totals of weights, for choices(cum_weights=...)."""
    return list(itertools.accumulate(weights))


def weighted_distinct(rng, population, cum, k):
    """Draw k distinct members of population, weighted by the running totals cum."""
    picked = []
    while len(picked) < k:
        choice = rng.choices(population, cum_weights=cum)[0]
        if choice not in picked:
            picked.append(choice)
    return picked


def taste_weights(gender, young, senior):
    """Cumulative genre and content-type appeal for a gender and age group."""
    genre_weights = [GENRE_APPEAL[g] * GENDER_TILT[gender].get(g, 1.0) for g in GENRES]
    type_weights = [TYPE_APPEAL[t] for t in CONTENT_TYPES]
    if young:
        type_weights[CONTENT_TYPES.index("microdrama")] *= 1.5
    if senior:
        type_weights[CONTENT_TYPES.index("tv")] *= 2.0
        type_weights[CONTENT_TYPES.index("microdrama")] *= 0.6
    return cumulative(genre_weights), cumulative(type_weights)


def make_users(rng, n_users):
    """Users as (user_id, age, gender, region, genre indexes, type indexes)."""
    bands = rng.choices(AGE_BANDS, weights=[band[2] for band in AGE_BANDS], k=n_users)
    regions = rng.choices(list(REGIONS), weights=list(REGIONS.values()), k=n_users)
    genre_counts = rng.choices([1, 2, 3], weights=GENRE_COUNT_WEIGHTS, k=n_users)
    type_counts = rng.choices([1, 2], weights=TYPE_COUNT_WEIGHTS, k=n_users)
    tastes = {}
    users = []
    for k in range(n_users):
        low, high, _ = bands[k]
        age = rng.randint(low, high)
        gender = "F" if rng.random() < FEMALE_SHARE else "M"
        group = (gender, age < YOUNG_BELOW, age >= SENIOR_FROM)
        if group not in tastes:
            tastes[group] = taste_weights(*group)
        genre_cum, type_cum = tastes[group]
        genres = weighted_distinct(rng, range(len(GENRES)), genre_cum, genre_counts[k])
        types = weighted_distinct(rng, range(len(CONTENT_TYPES)), type_cum, type_counts[k])
        if k == 0:  # u1 is into drama series, so it has a drama history
            genres = [GENRES.index("drama")] + [g for g in genres if GENRES[g] != "drama"][:1]
            types = [CONTENT_TYPES.index("series")]
        users.append((f"u{k + 1}", age, gender, regions[k], genres, types))
    return users


def make_titles(rng, count):
    """count unique titles: shuffled word-list combinations, numbered as sequels when exhausted."""
    pool = (
        [f"{adj} {noun}" for adj in TITLE_EN_ADJ for noun in TITLE_EN_NOUN]
        + [f"{place} {noun}" for place in TITLE_PLACES for noun in TITLE_EN_NOUN]
        + [f"{noun} di {place}" for noun in TITLE_ID_NOUN for place in TITLE_PLACES]
        + [f"{noun} {adj}" for noun in TITLE_ID_NOUN for adj in TITLE_ID_ADJ]
    )
    rng.shuffle(pool)
    return [pool[k % len(pool)] + (f" {k // len(pool) + 1}" if k >= len(pool) else "")
            for k in range(count)]


def make_items(rng, n_items):
    """Items as parallel lists: titles, type indexes, genre indexes, lengths, popularity weights."""
    type_idx = rng.choices(range(len(CONTENT_TYPES)), weights=CONTENT_MIX, k=n_items)
    genre_idx = []
    for t in type_idx:
        mix = GENRE_MIX[CONTENT_TYPES[t]]
        genre_idx.append(GENRES.index(rng.choices(list(mix), weights=list(mix.values()))[0]))
    titles = make_titles(rng, n_items - len(FIXED_ITEMS))
    for k, (title, content_type, genre) in enumerate(FIXED_ITEMS):
        type_idx[k], genre_idx[k] = CONTENT_TYPES.index(content_type), GENRES.index(genre)
        titles.insert(k, title)
    lengths = [rng.randint(*LENGTH_SECONDS[CONTENT_TYPES[t]]) for t in type_idx]
    ranks = list(range(1, n_items + 1))
    rng.shuffle(ranks)
    popularity = [1.0 / rank ** ZIPF_EXPONENT for rank in ranks]
    return titles, type_idx, genre_idx, lengths, popularity


def draw_tables(type_idx, genre_idx, popularity):
    """Popularity tables (items, cum_weights): [0] global, then per (genre, type) and per genre."""
    tables = [(list(range(len(popularity))), cumulative(popularity))]
    index = {}
    cells = {}
    for item, (g, t) in enumerate(zip(genre_idx, type_idx)):
        cells.setdefault((g, t), []).append(item)
        cells.setdefault((g, None), []).append(item)
    for key, items in cells.items():
        index[key] = len(tables)
        tables.append((items, cumulative(popularity[i] for i in items)))
    return tables, index


def user_cells(genres, types, index):
    """Table indexes and cumulative weights of one user's draws: taste cells plus the global table."""
    cells, weights = [0], [1.0 - TASTE_SHARE]
    genre_weights = GENRE_RANK_WEIGHTS[:len(genres)]
    genre_total = sum(genre_weights)
    for g, g_weight in zip(genres, genre_weights):
        if (g, None) not in index:
            continue  # the catalogue has no item of this genre
        for t in range(len(CONTENT_TYPES)):
            t_weight = (1.0 - TYPE_LOYALTY) / len(CONTENT_TYPES)
            if t in types:
                t_weight += TYPE_LOYALTY / len(types)
            cells.append(index.get((g, t), index[(g, None)]))
            weights.append(TASTE_SHARE * g_weight / genre_total * t_weight)
    return cells, cumulative(weights)


def allocate_sessions(rng, n_users, n_events, cap):
    """Sessions per user: lognormal, between 1 and cap, u1 at least U1_MIN_SESSIONS, summing to n_events."""
    raw = [rng.lognormvariate(0.0, SESSIONS_SIGMA) for _ in range(n_users)]
    scale = n_events / sum(raw)
    counts = [min(cap, max(1, int(r * scale))) for r in raw]
    counts[0] = max(counts[0], U1_MIN_SESSIONS)
    cum = cumulative(raw)
    diff = n_events - sum(counts)
    while diff:
        step = 1 if diff > 0 else -1
        for user in rng.choices(range(n_users), cum_weights=cum, k=abs(diff)):
            new = counts[user] + step
            if (U1_MIN_SESSIONS if user == 0 else 1) <= new <= cap:
                counts[user] = new
                diff -= step
    return counts


def draw_history(rng, n, cells, cell_cum, tables, by_rank):
    """n distinct items in the order the user starts them (topped up by popularity rank if draws run dry)."""
    seen = {}
    want = n + n // 8 + 4
    for _ in range(MAX_DRAW_ROUNDS):
        sources = rng.choices(cells, cum_weights=cell_cum, k=want)
        draws = {}
        for table, count in Counter(sources).items():
            items, cum = tables[table]
            draws[table] = iter(rng.choices(items, cum_weights=cum, k=count))
        seen.update(dict.fromkeys(map(next, map(draws.__getitem__, sources))))
        if len(seen) >= n:
            return list(seen)[:n]
        want = 2 * (n - len(seen)) + 4
    missing = (item for item in by_rank if item not in seen)
    seen.update(dict.fromkeys(itertools.islice(missing, n - len(seen))))
    return list(seen)


def plan_sessions(rng, history, n, cell_of_item, genres, types):
    """Session items and match levels (0-3) for one user, exactly n sessions."""
    genre_match = [int(g in genres) for g in range(len(GENRES))]
    type_match = [int(t in types) for t in range(len(CONTENT_TYPES))]
    level_of_cell = [g + t for g in genre_match for t in type_match]
    rnd = rng.random
    low, high = REWATCH_SESSIONS
    items, levels = [], []
    for item in history:
        level = level_of_cell[cell_of_item[item]]
        if level == 2 and rnd() < REWATCH_CHANCE:
            repeat = low + int(rnd() * (high - low + 1))
            items += [item] * repeat
            levels += [3] * repeat
        else:
            items.append(item)
            levels.append(level)
        if len(items) >= n:
            break
    return items[:n], levels[:n]


def clock_tables():
    """Hour slots of the window (slot = day * 24 + hour): a lookup pool, "YYYY-MM-DDTHH:" prefixes, "MM:SSZ" suffixes.

    Each slot fills the pool in proportion to its weight, so a uniform position in
    the pool picks a slot in O(1), and the fraction left over picks the second.
    """
    weights, prefixes = [], []
    for offset in range(WINDOW_DAYS):
        day = WINDOW_START + datetime.timedelta(days=offset)
        day_weight = WEEKEND_WEIGHT if day.weekday() >= 4 else 1.0
        for hour, hour_weight in enumerate(HOUR_WEIGHTS):
            weights.append(day_weight * hour_weight)
            prefixes.append(f"{day.isoformat()}T{hour:02d}:")
    total = sum(weights)
    pool = [slot for slot, weight in enumerate(weights) for _ in range(round(weight / total * CLOCK_POOL))]
    suffixes = [f"{s // 60:02d}:{s % 60:02d}Z" for s in range(3600)]
    return pool, prefixes, suffixes


def completion_params():
    """Per match level: (abandon cut, partial cut, and a slope per band) to map one uniform to a completion."""
    (a_lo, a_hi), (p_lo, p_hi), (f_lo, f_hi) = COMPLETION_RANGES
    params = []
    for abandon, partial in COMPLETION_MIX:
        finished = 1.0 - abandon - partial
        params.append((abandon, abandon + partial, (a_hi - a_lo) / abandon,
                       (p_hi - p_lo) / partial, (f_hi - f_lo) / finished))
    return params


def user_events(rng, user_id, items, levels, item_ids, lengths, clock, params):
    """One user's event lines in time order, with their sort keys (seconds since the window start).

    One uniform draw gives the completion (its band, then its place inside the band)
    and one gives the time (its hour slot, then the second inside the hour).
    """
    pool, prefixes, suffixes = clock
    pool_size = len(pool)
    a_lo, p_lo, f_lo = (band[0] for band in COMPLETION_RANGES)
    rnd = rng.random
    keys, lines = [], []
    for item, level in zip(items, levels):
        abandon, partial, a_slope, p_slope, f_slope = params[level]
        u = rnd()
        if u < abandon:
            completion = a_lo + u * a_slope
        elif u < partial:
            completion = p_lo + (u - abandon) * p_slope
        else:
            completion = f_lo + (u - partial) * f_slope
        x = rnd() * pool_size
        position = int(x)
        slot = pool[position]
        second = int((x - position) * 3600)
        keys.append(slot * 3600 + second)
        lines.append(f"{user_id},{item_ids[item]},{'complete' if completion >= COMPLETE_AT else 'play'},"
                     f"{int(lengths[item] * completion)},{prefixes[slot]}{suffixes[second]}\n")
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return [keys[i] for i in order], [lines[i] for i in order]


def write_table(path, header, rows):
    """Write a small CSV with the csv module ('\\n' line endings)."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_events(path, chunks, sort_all):
    """Write events.csv from per-user (keys, lines); sorted by time when sort_all, else streamed."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("user_id,item_id,event_type,watch_seconds,timestamp\n")
        if sort_all:
            rows = [row for keys, lines in chunks for row in zip(keys, lines)]
            rows.sort()
            f.write("".join(line for _, line in rows))
            return
        buffer = []
        for _, lines in chunks:
            buffer += lines
            if len(buffer) >= FLUSH_LINES:
                f.write("".join(buffer))
                buffer.clear()
        f.write("".join(buffer))


def generate(args):
    """Build the catalogue and users, then stream every user's sessions into events.csv."""
    rng = Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    users = make_users(rng, args.users)
    titles, type_idx, genre_idx, lengths, popularity = make_items(rng, args.items)
    item_ids = [f"i{k}" for k in range(1, args.items + 1)]
    write_table(args.out / "users.csv", ["user_id", "age", "gender", "region"],
                [user[:4] for user in users])
    write_table(args.out / "items.csv", ["item_id", "title", "content_type", "genre"],
                [(item_ids[k], titles[k], CONTENT_TYPES[type_idx[k]], GENRES[genre_idx[k]])
                 for k in range(args.items)])
    tables, index = draw_tables(type_idx, genre_idx, popularity)
    by_rank = sorted(range(args.items), key=popularity.__getitem__, reverse=True)
    cap = int(args.items * MAX_HISTORY_SHARE)
    counts = allocate_sessions(rng, args.users, args.events, cap)
    cell_of_item = [g * len(CONTENT_TYPES) + t for g, t in zip(genre_idx, type_idx)]
    clock, params = clock_tables(), completion_params()

    taste_cells = {}  # (genres, types): user_cells(...), shared by users of the same taste

    def chunks():
        for (user_id, _, _, _, genres, types), n in zip(users, counts):
            taste = (tuple(genres), tuple(types))
            if taste not in taste_cells:
                taste_cells[taste] = user_cells(genres, types, index)
            cells, cell_cum = taste_cells[taste]
            history = draw_history(rng, n, cells, cell_cum, tables, by_rank)
            if user_id == "u1":
                history = [0] + [item for item in history if item != 0][:n - 1]  # i1, Drama Series A
            items, levels = plan_sessions(rng, history, n, cell_of_item, genres, types)
            yield user_events(rng, user_id, items, levels, item_ids, lengths, clock, params)

    write_events(args.out / "events.csv", chunks(), args.events <= SORT_LIMIT)


RATED = {  # rated presets: the ratings-log model (generate_rated) and its settings
    "sparse": {
        "start": datetime.date(2025, 11, 1), "days": 365, "bucket_days": 7,
        "back_share": 0.25, "back_days": 1500,  # share of the catalogue released before the window
        "decay_days": 45, "floor": 0.12, "evergreen_share": 0.04,  # appeal = floor + exp(-age / decay)
        "sampler": "draws", "zipf": 0.9, "zipf_offset": 0, "tries": 50,  # draws: one event at a time
        "min_events": 1, "count_sigma": 1.0, "max_events": 1500,
        "span_median_days": 140, "span_sigma": 1.3,  # a user's active span (lognormal)
        "rating": (0, 10, 1), "seconds_per_point": 600,  # (lowest, highest, step)
        "mean": 6.0, "quality_sd": 1.2, "user_sd": 1.0, "match": 1.5, "noise_sd": 1.5,
    },
    "longtail": {
        "start": datetime.date(2013, 1, 1), "days": 6 * 365, "bucket_days": 30,
        "back_share": 1.0, "back_days": 20 * 365,  # the keys sampler has no drift: release dates unused
        "decay_days": 365, "floor": 0.3, "evergreen_share": 0.0,
        "sampler": "keys", "taste_boost": 4.0, "zipf": 1.5, "zipf_offset": 50, "tries": 50,
        "min_events": 20, "count_sigma": 1.4, "max_events": 2700,
        "span_median_days": 60, "span_sigma": 2.0,
        "rating": (0.5, 5.0, 0.5), "seconds_per_point": 1200,
        "mean": 3.5, "quality_sd": 0.45, "user_sd": 0.4, "match": 0.4, "noise_sd": 0.7,
    },
}
MOVIE_GENRES = [GENRES.index(g) for g in GENRE_MIX["movie"]]


def rated_counts(rng, n_users, n_events, low, high, sigma):
    """Ratings per user: low + a lognormal share, at most high, summing to n_events."""
    raw = [rng.lognormvariate(0.0, sigma) for _ in range(n_users)]
    scale = (n_events - n_users * low) / sum(raw)
    counts = [min(high, low + int(r * scale)) for r in raw]
    cum = cumulative(raw)
    diff = n_events - sum(counts)
    while diff:
        step = 1 if diff > 0 else -1
        for user in rng.choices(range(n_users), cum_weights=cum, k=abs(diff)):
            if low <= counts[user] + step <= high:
                counts[user] += step
                diff -= step
    return counts


def rated_tables(cfg, genre_idx, base, release, evergreen):
    """Per time bucket: (global table, {genre: table}); a table is (items, cum_weights) of released items."""
    buckets = []
    n_buckets = -(-cfg["days"] // cfg["bucket_days"])
    for b in range(n_buckets):
        end = min(cfg["days"], (b + 1) * cfg["bucket_days"])
        middle = (b + 0.5) * cfg["bucket_days"]
        weights = {}
        for item, released in enumerate(release):
            if released >= end:
                continue
            age = max(0.0, middle - released)
            appeal = 1.0 if evergreen[item] else cfg["floor"] + math.exp(-age / cfg["decay_days"])
            weights[item] = base[item] * appeal
        per_genre = {}
        for item, weight in weights.items():
            per_genre.setdefault(genre_idx[item], ([], []))
            items, w = per_genre[genre_idx[item]]
            items.append(item)
            w.append(weight)
        buckets.append(((list(weights), cumulative(weights.values())),
                        {g: (items, cumulative(w)) for g, (items, w) in per_genre.items()}))
    return buckets


def rating_line(cfg, user, item_id, rating, when, start):
    """One events.csv row and its sort key (seconds since the window start)."""
    seconds = int(when * 86400)
    stamp = (start + datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return seconds, f"u{user},{item_id},play,{round(rating * cfg['seconds_per_point'])},{stamp}\n"


def rate(rng, cfg, quality, bias, matches):
    """A rating: mean + item quality + user bias + genre match bonus + noise, on the preset's scale."""
    low, high, step = cfg["rating"]
    match = cfg["match"] if matches else -cfg["match"] / 2
    raw = cfg["mean"] + quality + bias + match + rng.gauss(0.0, cfg["noise_sd"])
    return min(high, max(low, round(raw / step) * step))


def keyed_user_rows(rng, cfg, user, n, genres, bias, arrival, span, genre_idx, base, quality, item_ids, start):
    """One user's n distinct items drawn at once with weighted keys (Efraimidis-Spirakis), no drift.

    An item's weight is its popularity times TASTE_BOOST when its genre is one of
    the user's, so a heavy user's history reaches deep into the long tail instead
    of piling more draws onto the head.
    """
    rnd = rng.random
    boost = cfg["taste_boost"]
    liked = set(genres)
    keys = [math.log(1.0 - rnd()) / (w * (boost if g in liked else 1.0)) for w, g in zip(base, genre_idx)]
    chosen = heapq.nlargest(n, range(len(base)), key=keys.__getitem__)
    rng.shuffle(chosen)
    times = sorted(arrival + rnd() * span for _ in range(n))
    return [rating_line(cfg, user, item_ids[item], rate(rng, cfg, quality[item], bias, genre_idx[item] in liked),
                        when, start) for item, when in zip(chosen, times)]


def generate_rated(args):
    """A ratings log (preset sparse or longtail): see RATED and the module docstring."""
    cfg = RATED[args.preset]
    rng = Random(args.seed)
    rnd, gauss = rng.random, rng.gauss
    args.out.mkdir(parents=True, exist_ok=True)
    n_users, n_items = args.users, args.items
    mix = GENRE_MIX["movie"]
    genre_idx = [GENRES.index(g) for g in rng.choices(list(mix), weights=list(mix.values()), k=n_items)]
    titles = make_titles(rng, n_items)
    ranks = list(range(1, n_items + 1))
    rng.shuffle(ranks)
    base = [1.0 / (rank + cfg["zipf_offset"]) ** cfg["zipf"] for rank in ranks]  # Zipf-Mandelbrot
    release = [-rnd() * cfg["back_days"] if rnd() < cfg["back_share"] else rnd() * cfg["days"]
               for _ in range(n_items)]
    evergreen = [rnd() < cfg["evergreen_share"] for _ in range(n_items)]
    quality = [gauss(0.0, cfg["quality_sd"]) for _ in range(n_items)]
    item_ids = [f"i{k}" for k in range(1, n_items + 1)]
    write_table(args.out / "users.csv", ["user_id", "age", "gender", "region"],
                [(f"u{u}", "", "", "") for u in range(1, n_users + 1)])
    write_table(args.out / "items.csv", ["item_id", "title", "content_type", "genre"],
                [(item_ids[k], titles[k], "movie", GENRES[genre_idx[k]]) for k in range(n_items)])
    buckets = rated_tables(cfg, genre_idx, base, release, evergreen)
    by_rank = sorted(range(n_items), key=base.__getitem__, reverse=True)
    counts = rated_counts(rng, n_users, args.events, cfg["min_events"], cfg["max_events"], cfg["count_sigma"])
    appeal_cum = cumulative([GENRE_APPEAL[GENRES[g]] for g in MOVIE_GENRES])
    start = datetime.datetime.combine(cfg["start"], datetime.time(), tzinfo=datetime.timezone.utc)
    bucket_days, days = cfg["bucket_days"], cfg["days"]
    rows = []
    for u, n in enumerate(counts, start=1):
        genres = weighted_distinct(rng, MOVIE_GENRES, appeal_cum, rng.choices([1, 2, 3], weights=GENRE_COUNT_WEIGHTS)[0])
        genre_cum = cumulative(GENRE_RANK_WEIGHTS[:len(genres)])
        bias = gauss(0.0, cfg["user_sd"])
        arrival = rnd() * days
        span = min(days - arrival, rng.lognormvariate(math.log(cfg["span_median_days"]), cfg["span_sigma"]))
        if cfg["sampler"] == "keys":
            rows += keyed_user_rows(rng, cfg, u, n, genres, bias, arrival, span, genre_idx, base, quality,
                                    item_ids, start)
            continue
        seen = set()
        for when in sorted(arrival + rnd() * span for _ in range(n)):
            bucket = min(int(when // bucket_days), len(buckets) - 1)
            everything, per_genre = buckets[bucket]
            item = None
            for _ in range(cfg["tries"]):  # distinct items; a table of one genre may run dry
                table = everything
                if rnd() < TASTE_SHARE:
                    table = per_genre.get(genres[bisect.bisect(genre_cum, rnd() * genre_cum[-1])], everything)
                items, cum = table
                pick = items[bisect.bisect(cum, rnd() * cum[-1])]
                if pick not in seen:
                    item = pick
                    break
            if item is None:  # a heavy user who has seen most of the head: a random item of the long tail
                item = next((i for i in (int(rnd() * n_items) for _ in range(1000))
                             if i not in seen and release[i] <= when), None)
                if item is None:
                    item = next(i for i in by_rank if i not in seen)
            seen.add(item)
            if release[item] > when:  # released this bucket: watched after its release
                when = release[item] + rnd() * (min(days, (bucket + 1) * bucket_days) - release[item])
            rows.append(rating_line(cfg, u, item_ids[item], rate(rng, cfg, quality[item], bias,
                                                                 genre_idx[item] in genres), when, start))
    rows.sort()
    with open(args.out / "events.csv", "w", encoding="utf-8", newline="") as f:
        f.write("user_id,item_id,event_type,watch_seconds,timestamp\n")
        f.write("".join(line for _, line in rows))


def main(argv=None):
    """Entry point: generate the files and print a one-line summary to stderr."""
    started = time.perf_counter()
    args = parse_args(argv)
    (generate_rated if args.preset in RATED else generate)(args)
    print(f"generate.py: {args.users} users, {args.items} items, {args.events} events "
          f"(seed {args.seed}) written to {args.out} in {time.perf_counter() - started:.1f} s",
          file=sys.stderr)


if __name__ == "__main__":
    main()
