-- Moving a Unit between instances (SPEC §11). One table on both sides of a move:
-- role 'Outgoing' on the instance the Unit leaves (A), 'Incoming' on the one it moves to (B).
CREATE TABLE unit_moves (
    uuid TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    -- A: the unit that moves; B: the unit created from A's data
    unit_uuid TEXT NOT NULL,
    -- A: B's unit uuid; B: A's unit uuid
    remote_unit_uuid TEXT NOT NULL,
    peer_domain TEXT NOT NULL,
    user_uuid TEXT NOT NULL,
    -- A: Requested, CommandsSent, Done, Cancelled; B: Imported, Arrived, Cancelled
    state TEXT NOT NULL,
    -- A: the env B made for the device (encrypted), served to the device while moving
    cipher_env TEXT,
    -- the unit's actor on the other side (A: B's, for movedTo), and B's REST base on A
    remote_actor TEXT,
    remote_api TEXT,
    last_error TEXT,
    commands_sent_datetime TEXT,
    create_datetime TEXT NOT NULL,
    last_update_datetime TEXT NOT NULL
);
CREATE INDEX unit_moves_unit ON unit_moves (unit_uuid);
CREATE INDEX unit_moves_remote ON unit_moves (peer_domain, remote_unit_uuid);

-- One-time codes a user makes on B so that A may create a Unit in their account.
CREATE TABLE move_tickets (
    ticket_hash TEXT PRIMARY KEY,
    user_uuid TEXT NOT NULL,
    expires_datetime TEXT NOT NULL
);
