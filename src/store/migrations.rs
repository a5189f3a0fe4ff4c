//! Schema versions for both backends. The tables are the same; only the column types that the
//! two databases spell differently (auto-increment keys, byte strings) differ.

/// Versioned migrations: (version, SQLite text, PostgreSQL text). Append only; never edit one
/// that has shipped.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, V1_SQLITE, V1_POSTGRES),
    (2, V2_IDENTITY, V2_IDENTITY),
    (3, V3_PUSH, V3_PUSH),
    (4, super::reconcile::SCHEMA, super::reconcile::SCHEMA),
    (5, super::inventory::SCHEMA, super::inventory::SCHEMA),
    (6, V6_LAST_SEEN_INDEX, V6_LAST_SEEN_INDEX),
    (7, super::actions::SCHEMA, super::actions::SCHEMA),
    (8, V8_PROFILE_COUNTS_INDEX, V8_PROFILE_COUNTS_INDEX),
    (9, V9_DEVICE_SEARCH_SQLITE, V9_DEVICE_SEARCH_POSTGRES),
    (
        10,
        super::command_parts::SCHEMA_SQLITE,
        super::command_parts::SCHEMA_POSTGRES,
    ),
    (11, super::retention::SCHEMA, super::retention::SCHEMA),
    (
        12,
        super::command_parts::SCHEMA_PRUNE,
        super::command_parts::SCHEMA_PRUNE,
    ),
];

/// Device search (`EnrollmentStore::search_enrollments`, the web console): indexes of the
/// lower-cased UDID, serial number and device name, searched by prefix as index ranges; of the
/// state with the id, so that a page of the devices in one state is a range too; and the
/// labels set through the API as rows (`device_labels`, kept with `device_inventory.labels` by
/// `set_device_labels`), filled here from the labels stored so far. PostgreSQL's indexes order
/// bytes (`COLLATE "C"`), as the search's ranges do; SQLite's do by default.
const V9_DEVICE_SEARCH_SQLITE: &str =
    "CREATE INDEX enrollments_by_lower_id ON enrollments (lower(id)); \
     CREATE INDEX enrollments_by_state ON enrollments (state, id); \
     CREATE INDEX enrollments_by_lower_serial ON enrollments (lower(serial_number)); \
     CREATE INDEX enrollments_by_lower_name ON enrollments (lower(device_name)); \
     CREATE TABLE device_labels (device_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, \
       PRIMARY KEY (device_id, key)); \
     CREATE INDEX device_labels_by_value ON device_labels (lower(value)); \
     CREATE INDEX device_labels_by_key_value ON device_labels (key, lower(value)); \
     INSERT INTO device_labels (device_id, key, value) \
       SELECT i.device_id, l.key, l.value FROM device_inventory i, json_each(i.labels) l";

const V9_DEVICE_SEARCH_POSTGRES: &str = "CREATE INDEX enrollments_by_lower_id ON enrollments ((lower(id)) COLLATE \"C\"); \
     CREATE INDEX enrollments_by_state ON enrollments (state, id); \
     CREATE INDEX enrollments_by_lower_serial ON enrollments ((lower(serial_number)) COLLATE \"C\"); \
     CREATE INDEX enrollments_by_lower_name ON enrollments ((lower(device_name)) COLLATE \"C\"); \
     CREATE TABLE device_labels (device_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, \
       PRIMARY KEY (device_id, key)); \
     CREATE INDEX device_labels_by_value ON device_labels ((lower(value)) COLLATE \"C\"); \
     CREATE INDEX device_labels_by_key_value ON device_labels (key, (lower(value)) COLLATE \"C\"); \
     INSERT INTO device_labels (device_id, key, value) \
       SELECT i.device_id, l.key, l.value FROM device_inventory i, jsonb_each_text(i.labels::jsonb) l";

/// Status counts (`ReconcileStore::profile_counts`, read by every status request and CR status
/// pass) from the index alone: with the content hash in it, counting 100,000 devices' profiles
/// reads no table row (SQLite: ~11 ms instead of ~80 ms). Its prefix serves what the index it
/// replaces served.
const V8_PROFILE_COUNTS_INDEX: &str = "DROP INDEX managed_profiles_by_profile; \
     CREATE INDEX managed_profiles_by_profile_state_hash ON managed_profiles (profile_key, state, hash)";

/// Finding the devices seen lately (the Kubernetes leader's sweep) without a fleet scan.
const V6_LAST_SEEN_INDEX: &str =
    "CREATE INDEX enrollments_by_last_seen ON enrollments (last_seen_at)";

const V1_SQLITE: &str = r#"
CREATE TABLE enrollments (
    id TEXT PRIMARY KEY,
    enrollment_type TEXT NOT NULL,
    state TEXT NOT NULL,
    topic TEXT NOT NULL,
    serial_number TEXT,
    model TEXT,
    model_name TEXT,
    product_name TEXT,
    os_version TEXT,
    build_version TEXT,
    device_name TEXT,
    imei TEXT,
    meid TEXT,
    push_token BLOB,
    push_magic TEXT,
    unlock_token BLOB,
    bootstrap_token BLOB,
    awaiting_configuration BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    authenticated_at BIGINT NOT NULL,
    token_updated_at BIGINT,
    checked_out_at BIGINT,
    last_seen_at BIGINT
);
CREATE INDEX enrollments_by_serial ON enrollments (serial_number);
CREATE TABLE commands (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid TEXT NOT NULL UNIQUE,
    enrollment_id TEXT NOT NULL REFERENCES enrollments (id),
    request_type TEXT NOT NULL,
    command BLOB NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    sent_count BIGINT NOT NULL DEFAULT 0,
    last_sent_at BIGINT,
    not_now_count BIGINT NOT NULL DEFAULT 0,
    last_not_now_at BIGINT,
    completed_at BIGINT
);
CREATE INDEX commands_queued ON commands (enrollment_id, seq) WHERE status = 'queued';
CREATE INDEX commands_by_device ON commands (enrollment_id, seq);
CREATE TABLE command_results (
    command_uuid TEXT PRIMARY KEY REFERENCES commands (uuid),
    enrollment_id TEXT NOT NULL,
    status TEXT NOT NULL,
    raw BLOB NOT NULL,
    received_at BIGINT NOT NULL
);
"#;

const V1_POSTGRES: &str = r#"
CREATE TABLE enrollments (
    id TEXT PRIMARY KEY,
    enrollment_type TEXT NOT NULL,
    state TEXT NOT NULL,
    topic TEXT NOT NULL,
    serial_number TEXT,
    model TEXT,
    model_name TEXT,
    product_name TEXT,
    os_version TEXT,
    build_version TEXT,
    device_name TEXT,
    imei TEXT,
    meid TEXT,
    push_token BYTEA,
    push_magic TEXT,
    unlock_token BYTEA,
    bootstrap_token BYTEA,
    awaiting_configuration BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL,
    authenticated_at BIGINT NOT NULL,
    token_updated_at BIGINT,
    checked_out_at BIGINT,
    last_seen_at BIGINT
);
CREATE INDEX enrollments_by_serial ON enrollments (serial_number);
CREATE TABLE commands (
    seq BIGSERIAL PRIMARY KEY,
    uuid TEXT NOT NULL UNIQUE,
    enrollment_id TEXT NOT NULL REFERENCES enrollments (id),
    request_type TEXT NOT NULL,
    command BYTEA NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    sent_count BIGINT NOT NULL DEFAULT 0,
    last_sent_at BIGINT,
    not_now_count BIGINT NOT NULL DEFAULT 0,
    last_not_now_at BIGINT,
    completed_at BIGINT
);
CREATE INDEX commands_queued ON commands (enrollment_id, seq) WHERE status = 'queued';
CREATE INDEX commands_by_device ON commands (enrollment_id, seq);
CREATE TABLE command_results (
    command_uuid TEXT PRIMARY KEY REFERENCES commands (uuid),
    enrollment_id TEXT NOT NULL,
    status TEXT NOT NULL,
    raw BYTEA NOT NULL,
    received_at BIGINT NOT NULL
);
"#;

/// Device identity: issued certificates (bound to a device at Authenticate), one-time secrets
/// (SCEP challenges, enrollment tokens; only their SHA-256 is stored), and the certificate each
/// enrollment is bound to. Same text on both backends.
const V2_IDENTITY: &str = r#"
CREATE TABLE device_certificates (
    fingerprint TEXT PRIMARY KEY,
    serial TEXT NOT NULL,
    subject TEXT NOT NULL,
    not_before BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    issued_at BIGINT NOT NULL,
    device_id TEXT,
    bound_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX device_certificates_by_device ON device_certificates (device_id);
CREATE TABLE enrollment_secrets (
    hash TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX enrollment_secrets_by_expiry ON enrollment_secrets (expires_at);
ALTER TABLE enrollments ADD COLUMN cert_fingerprint TEXT
"#;

/// Push scheduling (issue 4): one row per device that was ever asked to be woken. The scheduler
/// reads due rows through the partial index on `next_push_at`, so its cost follows the number of
/// pending pushes, not the fleet. Same text for both databases.
const V3_PUSH: &str = r#"
CREATE TABLE push_state (
    enrollment_id TEXT PRIMARY KEY REFERENCES enrollments (id),
    next_push_at BIGINT,
    attempts BIGINT NOT NULL DEFAULT 0,
    failures BIGINT NOT NULL DEFAULT 0,
    last_push_at BIGINT,
    last_result TEXT,
    last_result_at BIGINT,
    token_invalid_at BIGINT,
    claimed_until BIGINT
);
CREATE INDEX push_state_due ON push_state (next_push_at) WHERE next_push_at IS NOT NULL;
"#;
