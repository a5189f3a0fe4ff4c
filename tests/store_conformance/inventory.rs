//! Inventory cases: reported facts and administrator labels are stored per device, replaced
//! (never merged) when they change, read back singly and in pages, and labels are refused for
//! a device that is not enrolled.

use crate::support::*;
use pomona::store::inventory::DeviceInventory;
use pomona::store::*;
use pomona::vocab::facts::ReportedFacts;
use std::collections::BTreeMap;
use std::sync::Arc;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(crate) async fn facts_and_labels_are_stored_per_device_and_replaced_when_they_change(
    s: Arc<dyn Store>,
) -> CaseResult {
    enrolled(&*s, "D1").await?;
    enrolled(&*s, "D2").await?;
    let none = ok(s.device_inventory("D1").await, "inventory before anything")?;
    check!(none.is_none(), "no row before facts or labels: {none:?}");

    let first = ReportedFacts {
        model: Some("iPhone15,2".into()),
        os_version: Some("17.4".into()),
        supervised: Some(true),
        ..ReportedFacts::default()
    };
    ok(s.set_device_facts("D1", &first, 2000).await, "facts D1")?;
    let later = ReportedFacts {
        os_version: Some("18.1".into()),
        ..ReportedFacts::default()
    };
    ok(
        s.set_device_facts("D1", &later, 3000).await,
        "newer facts D1",
    )?;
    let written = ok(
        s.set_device_labels("D1", &labels(&[("site", "paris"), ("team", "ops")]), 3001)
            .await,
        "labels D1",
    )?;
    check!(written, "labels of an enrolled device are written");
    ok(
        s.set_device_labels("D2", &labels(&[("site", "lyon")]), 3002)
            .await,
        "labels D2",
    )?;
    ok(
        s.set_device_labels("D2", &labels(&[("team", "sales")]), 3003)
            .await,
        "new labels D2",
    )?;

    let d1 = ok(s.device_inventory("D1").await, "inventory D1")?;
    check!(
        d1 == Some(DeviceInventory {
            device_id: "D1".into(),
            facts: Some((later.clone(), 3000)),
            labels: labels(&[("site", "paris"), ("team", "ops")]),
        }),
        "the newest facts replace the older ones, labels keep the facts: {d1:?}"
    );
    let d2 = ok(s.device_inventory("D2").await, "inventory D2")?;
    check!(
        d2 == Some(DeviceInventory {
            device_id: "D2".into(),
            facts: None,
            labels: labels(&[("team", "sales")]),
        }),
        "labels are replaced, not merged, and no facts were reported: {d2:?}"
    );

    let page = ok(s.inventory_page(None, 1).await, "first page")?;
    check!(
        page.len() == 1 && page[0].device_id == "D1",
        "first page {page:?}"
    );
    let rest = ok(s.inventory_page(Some("D1"), 10).await, "next page")?;
    check!(
        rest.len() == 1 && rest[0].device_id == "D2",
        "next page {rest:?}"
    );
    Ok(())
}

pub(crate) async fn labels_for_a_device_that_is_not_enrolled_are_refused(
    s: Arc<dyn Store>,
) -> CaseResult {
    let written = ok(
        s.set_device_labels("nobody", &labels(&[("site", "paris")]), 1000)
            .await,
        "labels for an unknown device",
    )?;
    check!(!written, "labels for an unknown device are not written");
    let row = ok(s.device_inventory("nobody").await, "inventory")?;
    check!(
        row.is_none(),
        "nothing stored for an unknown device: {row:?}"
    );
    Ok(())
}
