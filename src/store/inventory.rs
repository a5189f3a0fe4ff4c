//! What groups select on, per device, beyond the enrollment record: the facts of the latest
//! DeviceInformation answer (platform, model, OS version, supervision…) and the labels
//! administrators set through the admin API. Both are small JSON documents in one row per
//! device, read in pages at start-up and written when they change. One SQL implementation for
//! every `Backend`.

use super::backend::{Backend, Finish as _, Row};
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

fn inventory_from_row(row: &Row) -> Result<DeviceInventory, sqlx::Error> {
    Ok(inventory_from_parts(
        row.col("device_id")?,
        row.col("facts")?,
        row.col("facts_at")?,
        &row.col::<String>("labels")?,
    ))
}

#[async_trait]
impl<B: Backend> InventoryStore for B {
    async fn inventory_page(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<DeviceInventory>> {
        let rows = Self::sql(
            "SELECT device_id, facts, facts_at, labels FROM device_inventory \
             WHERE device_id > $1 ORDER BY device_id LIMIT $2",
        )
        .arg(after.unwrap_or(""))
        .arg(limit)
        .fetch_all_on(&mut *self.reader().await?)
        .await?;
        rows.iter()
            .map(inventory_from_row)
            .collect::<Result<Vec<_>, _>>()
            .map_err(Into::into)
    }

    async fn device_inventory(&self, device_id: &str) -> StoreResult<Option<DeviceInventory>> {
        let row = Self::sql(
            "SELECT device_id, facts, facts_at, labels FROM device_inventory WHERE device_id = $1",
        )
        .arg(device_id)
        .fetch_optional_on(&mut *self.reader().await?)
        .await?;
        row.as_ref()
            .map(inventory_from_row)
            .transpose()
            .map_err(Into::into)
    }

    async fn set_device_facts(
        &self,
        device_id: &str,
        facts: &ReportedFacts,
        reported_at: i64,
    ) -> StoreResult<()> {
        let json = serde_json::to_string(facts).unwrap_or_else(|_| "{}".into());
        Self::sql(
            "INSERT INTO device_inventory (device_id, facts, facts_at, labels, updated_at) \
             VALUES ($1, $2, $3, '{}', $3) \
             ON CONFLICT (device_id) DO UPDATE SET facts = $2, facts_at = $3, updated_at = $3",
        )
        .arg(device_id)
        .arg(json)
        .arg(reported_at)
        .write_alone(self)
        .await?;
        Ok(())
    }

    async fn set_device_labels(
        &self,
        device_id: &str,
        labels: &BTreeMap<String, String>,
        now: i64,
    ) -> StoreResult<bool> {
        let json = serde_json::to_string(labels).unwrap_or_else(|_| "{}".into());
        // The JSON is what start-up reads; the rows are what device search reads.
        let mut tx = self.begin_write().await?;
        let written = Self::sql(
            "INSERT INTO device_inventory (device_id, facts, facts_at, labels, updated_at) \
             SELECT id, NULL, NULL, $2, $3 FROM enrollments WHERE id = $1 \
             ON CONFLICT (device_id) DO UPDATE SET labels = $2, updated_at = $3",
        )
        .arg(device_id)
        .arg(json)
        .arg(now)
        .execute_on(&mut *tx)
        .await?;
        if written == 0 {
            return Ok(false);
        }
        Self::sql("DELETE FROM device_labels WHERE device_id = $1")
            .arg(device_id)
            .execute_on(&mut *tx)
            .await?;
        for (key, value) in labels {
            Self::sql("INSERT INTO device_labels (device_id, key, value) VALUES ($1, $2, $3)")
                .arg(device_id)
                .arg(key.as_str())
                .arg(value.as_str())
                .execute_on(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}

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
