//! Runs the store conformance suite (`pomona::store::conformance`) on both backends: SQLite in a
//! temporary file, and PostgreSQL at `POMONA_TEST_POSTGRES_URL` (`scripts/test` starts a
//! throwaway server and sets it). Each case gets a fresh database (PostgreSQL: its own schema).

use pomona::store::{conformance, PostgresStore, SqliteStore, Store};
use std::str::FromStr;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_backend_passes_the_conformance_suite() {
    let mut failures = Vec::new();
    for (name, case) in conformance::cases() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.unwrap());
        store.migrate().await.unwrap();
        if let Err(e) = case(store).await {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "SQLite conformance failures:\n{}",
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_backend_passes_the_conformance_suite() {
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
    let mut failures = Vec::new();
    for (name, case) in conformance::cases() {
        let schema = format!("conformance_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&admin)
            .await
            .unwrap();
        let options = sqlx::postgres::PgConnectOptions::from_str(&url)
            .unwrap()
            .options([("search_path", schema.as_str())]);
        let store: Arc<dyn Store> = Arc::new(PostgresStore::open_with(options).await.unwrap());
        store.migrate().await.unwrap();
        if let Err(e) = case(store).await {
            failures.push(format!("{name}: {e}"));
        }
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&admin)
            .await
            .unwrap();
    }
    assert!(
        failures.is_empty(),
        "PostgreSQL conformance failures:\n{}",
        failures.join("\n")
    );
}

/// A status request counts every device's profiles: on SQLite the count must come from the
/// covering index alone (a fleet of 100,000 costs ~11 ms that way, ~80 ms reading the table).
#[tokio::test]
async fn sqlite_counts_status_from_the_covering_index() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let store = SqliteStore::open(&url).await.unwrap();
    store.migrate().await.unwrap();
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query(&format!(
        "EXPLAIN QUERY PLAN {}",
        pomona::store::reconcile::PROFILE_COUNTS_SQL
    ))
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|row| sqlx::Row::get::<String, _>(row, "detail"))
    .collect();
    assert!(
        plan.iter()
            .any(|step| step.contains("COVERING INDEX managed_profiles_by_profile_state_hash")),
        "status counts do not come from the covering index: {plan:?}"
    );
}

/// A state this build does not know (written by a newer replica mid-upgrade, or by hand) fails
/// the read, naming the value, instead of being read as another state.
#[tokio::test]
async fn an_unknown_persisted_state_fails_the_read_and_names_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("test.db").display());
    let store = SqliteStore::open(&url).await.unwrap();
    store.migrate().await.unwrap();
    store
        .authenticate(&conformance::facts("device-1"), 1_000)
        .await
        .unwrap();
    assert!(store.enrollment("device-1").await.unwrap().is_some());

    let raw = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("UPDATE enrollments SET state = 'frozen' WHERE id = 'device-1'")
        .execute(&raw)
        .await
        .unwrap();
    let error = store.enrollment("device-1").await.unwrap_err().to_string();
    assert!(
        error.contains("unknown enrollment state \"frozen\""),
        "the error names what it could not read: {error}"
    );
}
