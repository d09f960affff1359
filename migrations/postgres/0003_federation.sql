-- Federation (SPEC §11): the instance key, what was published to followers, followers and
-- follows, remote actors and remote Repos/Units (the hub's remote content), incoming activity
-- ids (idempotent redelivery), the durable delivery queue, and the domain lists.
-- Timestamps are RFC 3339 UTC text (sortable); actor and activity ids are full URLs.

CREATE TABLE fed_keys (
    name TEXT PRIMARY KEY,
    private_pem TEXT NOT NULL,
    public_pem TEXT NOT NULL,
    create_datetime TEXT NOT NULL
);

-- mark: digest of the actor document followers were last sent (see core.rs fingerprint)
CREATE TABLE fed_published (
    actor_id TEXT PRIMARY KEY,
    mark TEXT NOT NULL
);

CREATE TABLE fed_followers (
    local_actor TEXT NOT NULL,
    follower TEXT NOT NULL,
    domain TEXT NOT NULL,
    inbox TEXT NOT NULL,
    follow_id TEXT NOT NULL,
    create_datetime TEXT NOT NULL,
    PRIMARY KEY (local_actor, follower)
);
CREATE INDEX fed_followers_domain ON fed_followers (domain);

CREATE TABLE fed_following (
    follower TEXT NOT NULL,
    target TEXT NOT NULL,
    target_domain TEXT NOT NULL,
    inbox TEXT NOT NULL,
    follow_id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    create_datetime TEXT NOT NULL,
    PRIMARY KEY (follower, target)
);

CREATE TABLE fed_remote_actors (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    domain TEXT NOT NULL,
    inbox TEXT NOT NULL,
    shared_inbox TEXT,
    public_key_pem TEXT NOT NULL,
    document TEXT NOT NULL,
    fetched_at TEXT NOT NULL
);

CREATE TABLE fed_remote_objects (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    domain TEXT NOT NULL,
    document TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX fed_remote_objects_domain ON fed_remote_objects (domain);

CREATE TABLE fed_seen (
    activity_id TEXT PRIMARY KEY,
    seen_at TEXT NOT NULL
);
CREATE INDEX fed_seen_at ON fed_seen (seen_at);

CREATE TABLE fed_deliveries (
    id TEXT PRIMARY KEY,
    activity_id TEXT NOT NULL,
    actor TEXT NOT NULL,
    inbox TEXT NOT NULL,
    domain TEXT NOT NULL,
    body TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    state TEXT NOT NULL,
    last_error TEXT,
    create_datetime TEXT NOT NULL
);
CREATE INDEX fed_deliveries_due ON fed_deliveries (state, next_attempt_at);
CREATE INDEX fed_deliveries_domain ON fed_deliveries (domain);

CREATE TABLE domain_list_modes (
    list TEXT PRIMARY KEY,
    mode TEXT NOT NULL
);

CREATE TABLE domain_rules (
    list TEXT NOT NULL,
    domain TEXT NOT NULL,
    create_datetime TEXT NOT NULL,
    PRIMARY KEY (list, domain)
);
