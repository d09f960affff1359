-- Throttling rules and scraper tokens (issue 18, parts 2 and 5; SPEC §7, §8).
-- throttle_rules: rules the admin set over REST, as `PATTERN=RATE:BURST,...`; scope
-- `instance` for the instance's rules (absent: the config's PU_THROTTLE_RULES), a user's uuid
-- for that user's own rules (tried before the instance's).
CREATE TABLE throttle_rules (
    scope TEXT PRIMARY KEY,
    rules TEXT NOT NULL,
    update_datetime TEXT NOT NULL
);
-- scraper_tokens: bearer tokens an admin generates for Prometheus and monitoring; they read
-- only metrics, load and load_limit. Only the SHA-256 of a token is kept (shown once).
CREATE TABLE scraper_tokens (
    uuid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE,
    creator_uuid TEXT,
    create_datetime TEXT NOT NULL,
    last_used_datetime TEXT
);
