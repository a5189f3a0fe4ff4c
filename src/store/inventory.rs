//! What groups select on, per device, beyond the enrollment record: the facts of the latest
//! DeviceInformation answer (platform, model, OS version, supervision…) and the labels
//! administrators set through the admin API. Both are small JSON documents in one row per
//! device, read in pages at start-up and written when they change. Implemented for both
//! backends by `impl_inventory_store!`, with the same SQL.

use super::StoreResult;
use crate::vocab::facts::ReportedFacts;
use async_trait::async_trait;
use std::collections::BTreeMap;

/// One device's stored inventory row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceInventory {
    pub device_id: String,
    /// The latest DeviceInformation facts and when they were reported (Unix ms).
    pub facts: Option<(ReportedFacts, i64)>,
    /// Labels set through the admin API.
    pub labels: BTreeMap<String, String>,
}

#[async_trait]
pub trait InventoryStore {
    /// Inventory rows after `after` (by device id), at most `limit`: start-up loading.
    async fn inventory_page(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<DeviceInventory>>;
    async fn device_inventory(&self, device_id: &str) -> StoreResult<Option<DeviceInventory>>;
    /// Records a DeviceInformation answer.
    async fn set_device_facts(
        &self,
        device_id: &str,
        facts: &ReportedFacts,
        reported_at: i64,
    ) -> StoreResult<()>;
    /// Replaces a device's labels. False when no such device is enrolled (nothing written).
    async fn set_device_labels(
        &self,
        device_id: &str,
        labels: &BTreeMap<String, String>,
        now: i64,
    ) -> StoreResult<bool>;
}

pub(crate) fn inventory_from_parts(
    device_id: String,
    facts: Option<String>,
    facts_at: Option<i64>,
    labels: &str,
) -> DeviceInventory {
    DeviceInventory {
        device_id,
        facts: facts
            .and_then(|f| serde_json::from_str(&f).ok())
            .zip(facts_at),
        labels: serde_json::from_str(labels).unwrap_or_default(),
    }
}

macro_rules! impl_inventory_store {
    ($store:ty, $db:ty) => {
        const _: () = {
            use $crate::store::inventory::*;
            use $crate::vocab::facts::ReportedFacts;
            use $crate::store::*;
            use sqlx::Row as _;

            type DbRow = <$db as sqlx::Database>::Row;

            fn from_row(row: &DbRow) -> Result<DeviceInventory, sqlx::Error> {
                Ok(inventory_from_parts(
                    row.try_get("device_id")?,
                    row.try_get("facts")?,
                    row.try_get("facts_at")?,
                    &row.try_get::<String, _>("labels")?,
                ))
            }

            #[async_trait::async_trait]
            impl InventoryStore for $store {
                async fn inventory_page(
                    &self,
                    after: Option<&str>,
                    limit: i64,
                ) -> StoreResult<Vec<DeviceInventory>> {
                    let rows = sqlx::query(
                        "SELECT device_id, facts, facts_at, labels FROM device_inventory \
                         WHERE device_id > $1 ORDER BY device_id LIMIT $2",
                    )
                    .bind(after.unwrap_or(""))
                    .bind(limit)
                    .fetch_all(&mut *self.reader().await?)
                    .await?;
                    rows.iter()
                        .map(from_row)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(Into::into)
                }

                async fn device_inventory(
                    &self,
                    device_id: &str,
                ) -> StoreResult<Option<DeviceInventory>> {
                    let row = sqlx::query(
                        "SELECT device_id, facts, facts_at, labels FROM device_inventory \
                         WHERE device_id = $1",
                    )
                    .bind(device_id)
                    .fetch_optional(&mut *self.reader().await?)
                    .await?;
                    row.as_ref().map(from_row).transpose().map_err(Into::into)
                }

                async fn set_device_facts(
                    &self,
                    device_id: &str,
                    facts: &ReportedFacts,
                    reported_at: i64,
                ) -> StoreResult<()> {
                    let json = serde_json::to_string(facts).unwrap_or_else(|_| "{}".into());
                    sqlx::query(
                        "INSERT INTO device_inventory (device_id, facts, facts_at, labels, updated_at) \
                         VALUES ($1, $2, $3, '{}', $3) \
                         ON CONFLICT (device_id) DO UPDATE SET facts = $2, facts_at = $3, updated_at = $3",
                    )
                    .bind(device_id)
                    .bind(json)
                    .bind(reported_at)
                    .execute(&self.writer)
                    .await?;
                    Ok(())
                }

                async fn set_device_labels(
                    &self,
                    device_id: &str,
                    labels: &std::collections::BTreeMap<String, String>,
                    now: i64,
                ) -> StoreResult<bool> {
                    let json = serde_json::to_string(labels).unwrap_or_else(|_| "{}".into());
                    let written = sqlx::query(
                        "INSERT INTO device_inventory (device_id, facts, facts_at, labels, updated_at) \
                         SELECT id, NULL, NULL, $2, $3 FROM enrollments WHERE id = $1 \
                         ON CONFLICT (device_id) DO UPDATE SET labels = $2, updated_at = $3",
                    )
                    .bind(device_id)
                    .bind(json)
                    .bind(now)
                    .execute(&self.writer)
                    .await?
                    .rows_affected();
                    Ok(written > 0)
                }
            }
        };
    };
}

pub(crate) use impl_inventory_store;

/// Schema for the inventory table (same text on both backends).
pub(crate) const SCHEMA: &str = r#"
CREATE TABLE device_inventory (
    device_id TEXT PRIMARY KEY,
    facts TEXT,
    facts_at BIGINT,
    labels TEXT NOT NULL,
    updated_at BIGINT NOT NULL
)
"#;
