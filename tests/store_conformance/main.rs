//! The store conformance suite: every case runs on both backends as a test of its own,
//! `on_sqlite::<case>` (a temporary file) and `on_postgresql::<case>` (its own schema in the
//! database at `POMONA_TEST_POSTGRES_URL`, which `scripts/test` starts and sets). Filter by
//! backend or case name as with any test: `cargo test --test store_conformance on_sqlite`.
//!
//! Cases live in one file per area of the store, return the first expectation that failed
//! (with its line), and get a fresh, empty, migrated store.

use pomona::store::{EnrollmentStore, PostgresStore, SqliteStore, Store};
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;

/// Fails the case with the message, and the file and line of the expectation.
macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!("{}:{}: {}", file!(), line!(), format!($($msg)+)));
        }
    };
}

mod actions;
mod enrollment;
mod identity;
mod inventory;
mod push;
mod queue;
mod reconcile;
mod support;

use support::CaseResult;

/// Runs one case on a fresh SQLite database in a temporary directory.
async fn on_sqlite_store<F, Fut>(case: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = CaseResult>,
{
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("conformance.db").display());
    let store = SqliteStore::open(&url).await.unwrap();
    store.migrate().await.unwrap();
    if let Err(failure) = case(Arc::new(store)).await {
        panic!("on SQLite: {failure}");
    }
}

/// A new empty schema in the database of POMONA_TEST_POSTGRES_URL: an administrative pool,
/// the schema's name (to drop it afterwards) and connection options that work in it.
async fn fresh_schema() -> (sqlx::PgPool, String, sqlx::postgres::PgConnectOptions) {
    let url = std::env::var("POMONA_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "POMONA_TEST_POSTGRES_URL is not set. Run the tests with scripts/test, which starts a throwaway \
             PostgreSQL (install it with: apt-get install postgresql), or point the variable at a database \
             where this user may create schemas."
        )
    });
    let admin = sqlx::PgPool::connect(&url)
        .await
        .expect("connect to POMONA_TEST_POSTGRES_URL");
    let schema = format!("conformance_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .unwrap();
    let options = sqlx::postgres::PgConnectOptions::from_str(&url)
        .unwrap()
        .options([("search_path", schema.as_str())]);
    (admin, schema, options)
}

/// Runs one case in a schema of its own on the PostgreSQL server the tests were given, and
/// drops the schema afterwards (also when the case failed).
async fn on_postgresql_store<F, Fut>(case: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = CaseResult>,
{
    let (admin, schema, options) = fresh_schema().await;
    let store = PostgresStore::open_with(options).await.unwrap();
    store.migrate().await.unwrap();
    let result = case(Arc::new(store)).await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&admin)
        .await
        .unwrap();
    if let Err(failure) = result {
        panic!("on PostgreSQL: {failure}");
    }
}

/// One test per case and backend, named after the case.
macro_rules! on_both_backends {
    ($($area:ident :: $case:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    crate::on_sqlite_store(crate::$area::$case).await;
                }
            )*
        }
        mod on_postgresql {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    crate::on_postgresql_store(crate::$area::$case).await;
                }
            )*
        }
    };
}

on_both_backends! {
    enrollment::authenticate_then_token_update_enrolls_the_device,
    enrollment::missing_unlock_token_keeps_the_stored_one,
    enrollment::reauthenticate_cancels_the_previous_queue,
    enrollment::check_out_keeps_history_and_refuses_new_commands,
    enrollment::devices_are_found_by_id_or_serial_and_listed_in_pages,
    enrollment::devices_are_searched_by_text_label_state_platform_and_membership,
    enrollment::last_seen_batches_never_move_backwards,
    enrollment::bootstrap_token_round_trips,
    enrollment::migrations_are_idempotent,
    queue::an_exchange_records_the_report_and_hands_out_the_next_command,
    queue::queue_is_first_in_first_out_and_skips_what_is_asked,
    queue::terminal_report_stores_raw_result_and_dequeues,
    queue::not_now_keeps_the_command_queued,
    queue::duplicate_reports_are_harmless,
    queue::a_device_cannot_answer_another_devices_command,
    queue::enqueue_rejects_unknown_devices_and_reused_uuids,
    queue::concurrent_reports_from_many_devices_lose_nothing,
    queue::concurrent_exchanges_of_many_devices_each_get_their_own_commands,
    queue::exchanges_written_together_keep_each_devices_answers_apart,
    queue::a_shared_part_is_handed_out_byte_for_byte_on_every_path,
    queue::finished_commands_older_than_the_retention_go_and_what_is_read_stays,
    queue::a_part_no_command_refers_to_goes_and_one_queued_again_stays,
    identity::certificates_are_bound_at_authenticate_and_revoked,
    identity::scep_challenge_is_used_up_with_the_certificate_it_issues,
    identity::one_time_secrets_are_single_use_even_when_raced,
    push::push_requests_and_outcomes_apply_in_batches,
    push::push_requests_coalesce_and_a_silent_device_keeps_its_backoff,
    push::due_pushes_are_claimed_once_and_come_back_after_the_lease,
    push::work_queued_while_an_idle_claim_is_out_still_gets_its_push,
    push::an_invalid_token_stops_pushes_until_the_next_token_update,
    push::devices_without_token_update_are_claimed_without_credentials,
    push::queued_commands_get_a_push_after_restart,
    push::a_push_answered_before_apns_acknowledged_it_leaves_no_backoff,
    reconcile::plans_of_several_devices_apply_in_one_batch,
    reconcile::a_plan_is_applied_atomically_and_a_replay_queues_nothing,
    reconcile::reads_asked_together_answer_each_device_its_own,
    inventory::facts_and_labels_are_stored_per_device_and_replaced_when_they_change,
    inventory::labels_for_a_device_that_is_not_enrolled_are_refused,
    actions::device_actions_run_once_and_finish_with_their_result,
    actions::device_actions_skip_unknown_and_checked_out_devices,
    actions::an_acknowledged_erase_wipes_the_enrollment,
}

/// A status request counts every device's profiles: on SQLite the count must come from the
/// covering index alone (a fleet of 100,000 costs ~11 ms that way, ~80 ms reading the table).
#[tokio::test]
async fn sqlite_counts_status_from_the_covering_index() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let store = SqliteStore::open(&url).await.unwrap();
    store.migrate().await.unwrap();
    let raw = raw_sqlite(dir.path());
    let mut explain = raw
        .prepare(&format!(
            "EXPLAIN QUERY PLAN {}",
            pomona::store::reconcile::PROFILE_COUNTS_SQL
        ))
        .unwrap();
    let plan: Vec<String> = explain
        .query_map([], |row| row.get::<_, String>("detail"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        plan.iter()
            .any(|step| step.contains("COVERING INDEX managed_profiles_by_profile_state_hash")),
        "status counts do not come from the covering index: {plan:?}"
    );
}

#[tokio::test]
async fn sqlite_stores_a_shared_part_once() {
    use pomona::store::QueueStore as _;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let store = SqliteStore::open(&url).await.unwrap();
    store.migrate().await.unwrap();
    let profile = "UFJPRklMRQ==".repeat(100);
    for d in ["D1", "D2", "D3"] {
        support::enrolled(&store, d).await.unwrap();
        let c = queue::sharing(&format!("{d}-1"), &profile);
        store.enqueue(d, &c, 2000).await.unwrap();
    }
    let raw = raw_sqlite(dir.path());
    let (parts, part_bytes): (i64, i64) = raw
        .query_row(
            "SELECT COUNT(*), SUM(length(body)) FROM command_parts",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((parts, part_bytes), (1, profile.len() as i64));
    let longest: i64 = raw
        .query_row("SELECT MAX(length(command)) FROM commands", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(
        longest < 200,
        "each command row keeps only its envelope ({longest} bytes)"
    );
}

/// The sweep resumes where the previous one stopped (it does not walk the kept commands again)
/// and starts from the oldest command again once a day, reaching those that finished since.
#[tokio::test]
async fn retention_sweeps_resume_where_they_stopped_and_start_again_each_day() {
    use pomona::protocol::ReportStatus;
    use pomona::retention::{sweep, Walk};
    use pomona::store::QueueStore as _;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let store = SqliteStore::open(&url).await.unwrap();
    store.migrate().await.unwrap();
    support::enrolled(&store, "D1").await.unwrap();
    let (hour, day) = (3_600_000, 86_400_000);
    let ack = |uuid| support::report(uuid, ReportStatus::Acknowledged, b"ok");
    // Q is queued first, so it stays ahead of A in the queue.
    store
        .enqueue("D1", &support::command("Q"), 1000)
        .await
        .unwrap();
    store
        .enqueue("D1", &support::command("A"), 1000)
        .await
        .unwrap();
    store
        .exchange("D1", Some(&ack("A")), &[], 1500)
        .await
        .unwrap();
    let mut walk = Walk::default();
    let retention = Duration::from_secs(3600);
    let now = 2 * hour;
    async fn left(store: &SqliteStore) -> Vec<String> {
        let mut uuids: Vec<_> = store
            .commands("D1", 10)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.uuid)
            .collect();
        uuids.sort();
        uuids
    }
    let deleted = sweep(&store, retention, now, &mut walk, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!((deleted, left(&store).await), (1, vec!["Q".to_string()]));
    // Q finishes; the next sweep starts past it.
    store
        .exchange("D1", Some(&ack("Q")), &[], now)
        .await
        .unwrap();
    let deleted = sweep(&store, retention, now + 600_000, &mut walk, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(deleted, 0, "the walk resumed past Q");
    // A day on, the walk starts from the oldest command again.
    let deleted = sweep(&store, retention, now + day, &mut walk, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!((deleted, left(&store).await), (1, Vec::<String>::new()));
}

/// Of two servers on one PostgreSQL database, one sweeps at a time: the other's sweep does
/// nothing until the first one's ends. On SQLite (one server) the sweep always runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_one_database_take_turns_to_sweep() {
    use pomona::retention::{sweep_if_alone, Walk};
    use std::time::{Duration, Instant};
    let (admin, schema, options) = fresh_schema().await;
    let a = PostgresStore::open_with(options.clone()).await.unwrap();
    a.migrate().await.unwrap();
    let b = PostgresStore::open_with(options).await.unwrap();
    let held = a.sweep_lock().await.unwrap().expect("A sweeps first");
    assert!(
        b.sweep_lock().await.unwrap().is_none(),
        "B swept while A did"
    );
    let sweep_b = || async {
        let hour = Duration::from_secs(3600);
        sweep_if_alone(&b, hour, 0, &mut Walk::default(), Duration::ZERO)
            .await
            .unwrap()
    };
    assert_eq!(sweep_b().await, None, "B's sweep ran while A's did");
    drop(held);
    // The lock goes with A's connection, which closes in the background.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if sweep_b().await == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B never swept after A's sweep ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&admin)
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let sqlite = SqliteStore::open(&url).await.unwrap();
    sqlite.migrate().await.unwrap();
    let _held = sqlite.sweep_lock().await.unwrap().expect("SQLite sweeps");
    assert!(
        sqlite.sweep_lock().await.unwrap().is_some(),
        "one server per SQLite file: always granted"
    );
}

/// PostgreSQL: a prune that meets a part a plan is queuing again (its row locked by the plan's
/// transaction, not committed yet) waits for that plan, then keeps the part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_being_queued_again_is_not_pruned_under_the_plan() {
    use pomona::protocol::ReportStatus;
    use pomona::store::QueueStore as _;
    use sqlx::Connection as _;
    use std::time::Duration;
    let (admin, schema, options) = fresh_schema().await;
    let store = PostgresStore::open_with(options.clone()).await.unwrap();
    store.migrate().await.unwrap();
    support::enrolled(&store, "D1").await.unwrap();
    let queued = queue::sharing("P-1", "UFJPRklMRS1Q");
    store.enqueue("D1", &queued, 1000).await.unwrap();
    store.exchange("D1", None, &[], 1100).await.unwrap();
    let ack = support::report("P-1", ReportStatus::Acknowledged, b"ok");
    store.exchange("D1", Some(&ack), &[], 1200).await.unwrap();
    let step = store.prune_commands(10_000, 0, 100).await.unwrap();
    assert_eq!(step.deleted, 1, "the command went");
    // A plan's transaction marks the part used at 9000 (as `insert_parts_in` does) and holds it.
    let mut plan = sqlx::PgConnection::connect_with(&options).await.unwrap();
    let mut tx = plan.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO command_parts (digest, body, used_at) SELECT digest, body, 9000 FROM command_parts \
         ON CONFLICT (digest) DO UPDATE SET used_at = excluded.used_at",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    let store = Arc::new(store);
    let pruning = tokio::spawn({
        let store = store.clone();
        async move { store.prune_parts(5000).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !pruning.is_finished(),
        "the prune did not wait for the plan"
    );
    tx.commit().await.unwrap();
    let pruned = pruning.await.unwrap().unwrap();
    assert_eq!(
        pruned, 0,
        "the part went under the plan that queued it again"
    );
    let parts: i64 = sqlx::query_scalar("SELECT count(*) FROM command_parts")
        .fetch_one(&mut plan)
        .await
        .unwrap();
    assert_eq!(parts, 1);
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&admin)
        .await
        .unwrap();
}

/// A connection of its own to the test database in `dir`, for what the store would not do.
fn raw_sqlite(dir: &std::path::Path) -> rusqlite::Connection {
    let raw = rusqlite::Connection::open(dir.join("test.db")).unwrap();
    raw.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    raw
}

/// A SQLite store in `dir` with `device-1` authenticated, and a second connection to the same
/// file for writing what this build would not (a newer replica's values, or a hand edit).
async fn sqlite_with_a_device(dir: &std::path::Path) -> (SqliteStore, rusqlite::Connection) {
    let url = format!("sqlite://{}", dir.join("test.db").display());
    let store = SqliteStore::open(&url).await.unwrap();
    store.migrate().await.unwrap();
    store
        .authenticate(&support::facts("device-1"), 1_000)
        .await
        .unwrap();
    (store, raw_sqlite(dir))
}

/// A state this build does not know (written by a newer replica mid-upgrade, or by hand) fails
/// the read, naming the value, instead of being read as another state.
#[tokio::test]
async fn an_unknown_persisted_state_fails_the_read_and_names_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let (store, raw) = sqlite_with_a_device(dir.path()).await;
    assert!(store.enrollment("device-1").await.unwrap().is_some());

    raw.execute(
        "UPDATE enrollments SET state = 'frozen' WHERE id = 'device-1'",
        [],
    )
    .unwrap();
    let error = store.enrollment("device-1").await.unwrap_err().to_string();
    assert!(
        error.contains("unknown enrollment state \"frozen\""),
        "the error names what it could not read: {error}"
    );
}

/// A removal policy this build does not know fails the read: read as `Remove` it would uninstall
/// what a newer replica was told to keep.
#[tokio::test]
async fn an_unknown_persisted_removal_policy_fails_the_read_and_names_the_value() {
    use pomona::store::reconcile::{PlanChange, ReconcileStore};
    use pomona::vocab::profiles::{ProfileState, RemovalPolicy};
    let dir = tempfile::tempdir().unwrap();
    let (store, raw) = sqlite_with_a_device(dir.path()).await;
    let kept = support::managed_wifi("U1", ProfileState::Verified, RemovalPolicy::Keep);
    let change = PlanChange {
        managed: vec![kept.clone()],
        ..PlanChange::default()
    };
    store.apply_plan("device-1", change, 2_000).await.unwrap();
    let state = store.reconcile_state("device-1").await.unwrap();
    assert_eq!(state.managed, vec![kept], "Keep reads back as Keep");

    raw.execute("UPDATE managed_profiles SET removal_policy = 'Retain'", [])
        .unwrap();
    let error = store
        .reconcile_state("device-1")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("unknown removal policy \"Retain\""),
        "the error names what it could not read: {error}"
    );
}

/// What migration 9 creates, undone, as on a database from before it.
const BEFORE_DEVICE_SEARCH: [&str; 6] = [
    "DROP TABLE device_labels",
    "DROP INDEX enrollments_by_lower_id",
    "DROP INDEX enrollments_by_state",
    "DROP INDEX enrollments_by_lower_serial",
    "DROP INDEX enrollments_by_lower_name",
    "DELETE FROM pomona_schema_migrations WHERE version = 9",
];

/// A device labelled before migration 9 is found by its label after it: the migration fills
/// `device_labels` from the labels stored so far.
async fn labels_from_before_the_search_migration_are_searchable(
    store: &dyn Store,
    undo: impl AsyncFn(&str),
) {
    use pomona::store::DeviceQuery;
    store
        .authenticate(&support::facts("device-1"), 1_000)
        .await
        .unwrap();
    let labels = [("team".to_string(), "Finance".to_string())].into();
    assert!(store
        .set_device_labels("device-1", &labels, 2_000)
        .await
        .unwrap());
    for statement in BEFORE_DEVICE_SEARCH {
        undo(statement).await;
    }
    store.migrate().await.unwrap();
    let query = DeviceQuery {
        text: Some("team=fin".into()),
        ..DeviceQuery::default()
    };
    let found = store.search_enrollments(&query, None, 10).await.unwrap();
    assert_eq!(
        found.len(),
        1,
        "the label stored before migration 9 is found"
    );
    assert_eq!(found[0].device_id, "device-1");
}

#[tokio::test]
async fn on_sqlite_migration_9_makes_earlier_labels_searchable() {
    let dir = tempfile::tempdir().unwrap();
    let (store, raw) = sqlite_with_a_device(dir.path()).await;
    labels_from_before_the_search_migration_are_searchable(&store, async |statement: &str| {
        raw.execute(statement, []).unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_migration_9_makes_earlier_labels_searchable() {
    let (admin, schema, options) = fresh_schema().await;
    let store = PostgresStore::open_with(options.clone()).await.unwrap();
    store.migrate().await.unwrap();
    let raw = sqlx::PgPool::connect_with(options).await.unwrap();
    labels_from_before_the_search_migration_are_searchable(&store, async |statement: &str| {
        sqlx::query(statement).execute(&raw).await.unwrap();
    })
    .await;
    raw.close().await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&admin)
        .await
        .unwrap();
}
