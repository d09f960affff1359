-- Security (issue 14, part 7).
-- token_generation: raised when the unit's owner rotates its token; a unit token carrying an
-- older generation (tokens of generation 0 carry none) is refused everywhere.
ALTER TABLE units ADD COLUMN token_generation BIGINT NOT NULL DEFAULT 0;
-- unit_tombstones: the uuids of deleted units, never given to a unit again (an import gives
-- such a unit a new uuid), so a token still on a device of a deleted unit stays refused.
CREATE TABLE unit_tombstones (
    uuid TEXT PRIMARY KEY,
    delete_datetime TEXT NOT NULL
);
-- first_admin: one row, claimed by the registration that makes the instance's first Admin
-- (the key makes concurrent registrations agree on one). Instances with users have had it.
CREATE TABLE first_admin (
    id INTEGER PRIMARY KEY,
    user_uuid TEXT NOT NULL,
    claim_datetime TEXT NOT NULL
);
INSERT INTO first_admin (id, user_uuid, claim_datetime)
    SELECT 1, uuid, create_datetime FROM users ORDER BY create_datetime, uuid LIMIT 1;
