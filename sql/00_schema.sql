-- Tables every build starts with. load_issue_records collects problems found
-- while validating the CSVs, by record number; engine/load.py turns them into
-- load_issues with file line numbers once all files are checked.

-- load_issue_records: one row per problem found in one CSV record.
create table load_issue_records (
    file varchar not null,
    rec_no bigint,          -- 0-based position among the records DuckDB accepted
    csv_line bigint,        -- DuckDB's line number, for records its reader rejected
    column_name varchar,
    problem varchar not null,
    action varchar not null -- 'row skipped' or what was kept
);

-- absent_columns: the optional columns an input file does not have (filled
-- while staging; engine/load.py absent_columns). Each is blank on every row of
-- that file: reported once, on its header line, not on each row.
create table absent_columns (
    table_name varchar not null,
    column_name varchar not null
);

-- event_types: the accepted values of events.event_type. Each is a viewing
-- session whose watch_seconds count as watching; anything else is reported.
create table event_types (
    event_type varchar primary key,
    meaning varchar not null
);

insert into event_types values
    ('play', 'a viewing session'),
    ('view', 'a viewing session (synonym of play)'),
    ('watch', 'a viewing session (synonym of play)'),
    ('resume', 'a viewing session continuing an earlier one'),
    ('complete', 'a viewing session that reached the end');
