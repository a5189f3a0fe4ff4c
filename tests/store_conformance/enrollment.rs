//! Enrollment cases: Authenticate and TokenUpdate, CheckOut, finding and listing devices,
//! last-seen batches, bootstrap tokens and migrations.

use crate::support::*;
use pomona::protocol::ReportStatus;
use pomona::store::*;
use std::sync::Arc;

pub(crate) async fn authenticate_then_token_update_enrolls_the_device(
    s: Arc<dyn Store>,
) -> CaseResult {
    let out = ok(s.authenticate(&facts("D1"), 1000).await, "authenticate")?;
    check!(
        !out.re_enrollment,
        "a first Authenticate is not a re-enrollment"
    );
    let e =
        ok(s.enrollment("D1").await, "enrollment")?.ok_or("device missing after Authenticate")?;
    check!(
        e.state == EnrollmentState::Authenticated,
        "state after Authenticate: {:?}",
        e.state
    );
    check!(
        e.serial_number.as_deref() == Some("SER-D1"),
        "serial not recorded"
    );
    check!(
        ok(s.push_credentials("D1").await, "push")?.is_none(),
        "pushable before TokenUpdate"
    );
    ok(
        s.token_update(&token("D1", Some(b"unlock")), 1001).await,
        "token_update",
    )?;
    let e = ok(s.enrollment("D1").await, "enrollment")?.ok_or("device missing")?;
    check!(
        e.state == EnrollmentState::Enrolled,
        "state after TokenUpdate: {:?}",
        e.state
    );
    check!(
        e.has_push_token && e.has_unlock_token,
        "token flags not set"
    );
    let p = ok(s.push_credentials("D1").await, "push")?.ok_or("no push credentials")?;
    check!(
        p.token == vec![1, 2, 3, 4] && p.push_magic == "magic-D1",
        "push credentials differ"
    );
    Ok(())
}

pub(crate) async fn missing_unlock_token_keeps_the_stored_one(s: Arc<dyn Store>) -> CaseResult {
    ok(s.authenticate(&facts("D1"), 1000).await, "authenticate")?;
    ok(
        s.token_update(&token("D1", Some(b"unlock")), 1001).await,
        "first token_update",
    )?;
    let mut later = token("D1", None);
    later.push_magic = "magic-2".into();
    ok(s.token_update(&later, 1002).await, "second token_update")?;
    let e = ok(s.enrollment("D1").await, "enrollment")?.ok_or("missing")?;
    check!(
        e.has_unlock_token,
        "the unlock token was dropped by a TokenUpdate without one"
    );
    let p = ok(s.push_credentials("D1").await, "push")?.ok_or("no push credentials")?;
    check!(
        p.push_magic == "magic-2",
        "later TokenUpdate did not replace PushMagic"
    );
    Ok(())
}

pub(crate) async fn reauthenticate_cancels_the_previous_queue(s: Arc<dyn Store>) -> CaseResult {
    enrolled(&*s, "D1").await?;
    ok(s.enqueue("D1", &command("A"), 2000).await, "enqueue")?;
    let out = ok(s.authenticate(&facts("D1"), 3000).await, "authenticate")?;
    check!(
        out.re_enrollment && out.cancelled_commands == 1,
        "outcome {out:?}"
    );
    check!(
        ok(s.next_command("D1", &[], 3001).await, "next")?.is_none(),
        "old queue survived re-enrollment"
    );
    check!(
        ok(s.push_credentials("D1").await, "push")?.is_none(),
        "pushable before the new TokenUpdate"
    );
    // The device may still report a result for a command it ran before re-enrolling.
    let late = ok(
        s.record_report(
            "D1",
            &report("A", ReportStatus::Acknowledged, b"late"),
            3002,
        )
        .await,
        "report",
    )?;
    check!(
        late == ReportOutcome::Dequeued,
        "late result outcome {late:?}"
    );
    Ok(())
}

pub(crate) async fn check_out_keeps_history_and_refuses_new_commands(
    s: Arc<dyn Store>,
) -> CaseResult {
    enrolled(&*s, "D1").await?;
    ok(s.enqueue("D1", &command("A"), 2000).await, "enqueue")?;
    check!(
        ok(s.check_out("D1", 3000).await, "check_out")?,
        "known device not found"
    );
    check!(
        !ok(s.check_out("nobody", 3000).await, "check_out")?,
        "unknown device found"
    );
    let e = ok(s.enrollment("D1").await, "enrollment")?.ok_or("history lost")?;
    check!(
        e.state == EnrollmentState::CheckedOut && e.checked_out_at == Some(3000),
        "state {:?}",
        e.state
    );
    check!(
        ok(s.push_credentials("D1").await, "push")?.is_none(),
        "checked-out device still pushable"
    );
    check!(
        ok(s.commands("D1", 10).await, "commands")?.len() == 1,
        "command history lost"
    );
    match s.enqueue("D1", &command("B"), 3001).await {
        Err(StoreError::Conflict(m)) => check!(m.contains("checked out"), "message {m}"),
        other => return Err(format!("enqueue after CheckOut: {other:?}")),
    }
    Ok(())
}

pub(crate) async fn devices_are_found_by_id_or_serial_and_listed_in_pages(
    s: Arc<dyn Store>,
) -> CaseResult {
    for id in ["D3", "D1", "D2"] {
        enrolled(&*s, id).await?;
    }
    let by_serial = ok(s.find_enrollment("SER-D2").await, "find")?.ok_or("not found by serial")?;
    check!(by_serial.device_id == "D2", "found {}", by_serial.device_id);
    check!(
        ok(s.find_enrollment("D3").await, "find")?.is_some(),
        "not found by id"
    );
    check!(
        ok(s.find_enrollment("zzz").await, "find")?.is_none(),
        "found a ghost"
    );
    let page1 = ok(s.list_enrollments(None, 2).await, "list")?;
    let ids: Vec<_> = page1.iter().map(|e| e.device_id.as_str()).collect();
    check!(ids == ["D1", "D2"], "page 1 {ids:?}");
    let page2 = ok(s.list_enrollments(Some("D2"), 2).await, "list")?;
    let ids: Vec<_> = page2.iter().map(|e| e.device_id.as_str()).collect();
    check!(ids == ["D3"], "page 2 {ids:?}");
    Ok(())
}

pub(crate) async fn last_seen_batches_never_move_backwards(s: Arc<dyn Store>) -> CaseResult {
    enrolled(&*s, "D1").await?;
    enrolled(&*s, "D2").await?;
    ok(
        s.record_last_seen(&[
            ("D1".into(), 5000),
            ("D2".into(), 6000),
            ("ghost".into(), 1),
        ])
        .await,
        "batch",
    )?;
    ok(
        s.record_last_seen(&[("D1".into(), 4000)]).await,
        "older batch",
    )?;
    let d1 = ok(s.enrollment("D1").await, "enrollment")?.ok_or("missing")?;
    let d2 = ok(s.enrollment("D2").await, "enrollment")?.ok_or("missing")?;
    check!(
        d1.last_seen_at == Some(5000),
        "D1 last seen {:?}",
        d1.last_seen_at
    );
    check!(
        d2.last_seen_at == Some(6000),
        "D2 last seen {:?}",
        d2.last_seen_at
    );
    // Devices seen lately, paged through the last-seen index.
    enrolled(&*s, "D3").await?;
    ok(s.record_last_seen(&[("D3".into(), 6000)]).await, "D3 seen")?;
    let recent = ok(s.devices_seen_since(5500, None, 1).await, "seen since")?;
    check!(recent == [(6000, "D2".to_string())], "page 1 {recent:?}");
    let rest = ok(
        s.devices_seen_since(5500, recent.last().cloned(), 10).await,
        "seen since",
    )?;
    check!(rest == [(6000, "D3".to_string())], "page 2 {rest:?}");
    let all = ok(s.devices_seen_since(0, None, 10).await, "seen since")?;
    check!(all.len() == 3, "everyone seen since 0: {all:?}");
    // A device listed twice keeps the later time, in whichever order the two come.
    ok(
        s.record_last_seen(&[
            ("D2".into(), 6500),
            ("D2".into(), 6400),
            ("D1".into(), 5100),
            ("D1".into(), 5200),
        ])
        .await,
        "batch naming devices twice",
    )?;
    let d1 = ok(s.enrollment("D1").await, "enrollment")?.ok_or("missing")?;
    let d2 = ok(s.enrollment("D2").await, "enrollment")?.ok_or("missing")?;
    check!(
        (d1.last_seen_at, d2.last_seen_at) == (Some(5200), Some(6500)),
        "last seen {:?} and {:?}",
        d1.last_seen_at,
        d2.last_seen_at
    );
    // A batch larger than one statement holds (the store writes it in chunks, in id order):
    // the device sorting last is written too.
    enrolled(&*s, "zz-last").await?;
    let many: Vec<(String, i64)> = (0..5_000)
        .map(|i| (format!("ghost-{i}"), 7000))
        .chain([("zz-last".to_string(), 8000)])
        .collect();
    ok(s.record_last_seen(&many).await, "a large batch")?;
    let last = ok(s.enrollment("zz-last").await, "enrollment")?.ok_or("missing")?;
    check!(
        last.last_seen_at == Some(8000),
        "the device sorting last, last seen {:?}",
        last.last_seen_at
    );
    Ok(())
}

pub(crate) async fn bootstrap_token_round_trips(s: Arc<dyn Store>) -> CaseResult {
    enrolled(&*s, "D1").await?;
    check!(
        ok(s.bootstrap_token("D1").await, "get")?.is_none(),
        "token before set"
    );
    ok(s.set_bootstrap_token("D1", Some(b"bt")).await, "set")?;
    check!(
        ok(s.bootstrap_token("D1").await, "get")?.as_deref() == Some(&b"bt"[..]),
        "token differs"
    );
    ok(s.set_bootstrap_token("D1", None).await, "clear")?;
    check!(
        ok(s.bootstrap_token("D1").await, "get")?.is_none(),
        "token not cleared"
    );
    check!(
        s.set_bootstrap_token("ghost", Some(b"x")).await.is_err(),
        "set for unknown device"
    );
    Ok(())
}

pub(crate) async fn migrations_are_idempotent(s: Arc<dyn Store>) -> CaseResult {
    enrolled(&*s, "D1").await?;
    ok(s.migrate().await, "second migrate")?;
    check!(
        ok(s.enrollment("D1").await, "enrollment")?.is_some(),
        "data lost by migrate"
    );
    Ok(())
}

/// The ids of a search's page.
async fn searched(
    s: &dyn Store,
    query: &DeviceQuery,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<String>, String> {
    let page = ok(s.search_enrollments(query, after, limit).await, "search")?;
    Ok(page.into_iter().map(|e| e.device_id).collect())
}

pub(crate) async fn devices_are_searched_by_text_label_state_platform_and_membership(
    s: Arc<dyn Store>,
) -> CaseResult {
    // Five devices: two iPhones (one named like a Mac), an iPad, a Mac by ProductName, and an
    // iPhone that only authenticated.
    let devices = [
        ("UDID-A1", "C02PHONE1", "Ann's iPhone", "iPhone15,2", None),
        (
            "UDID-B2",
            "C02PHONE2",
            "MacBook-looking phone",
            "iPhone14,7",
            None,
        ),
        ("UDID-C3", "DMPPAD3", "Reception iPad", "iPad13,18", None),
        ("UDID-D4", "FVFMAC4", "Build Mac", "Z15G", Some("Mac14,2")),
        ("UDID-E5", "C02PHONE5", "Spare", "iPhone15,2", None),
    ];
    for (id, serial, name, model, product) in devices {
        let mut f = facts(id);
        f.serial_number = Some(serial.into());
        f.device_name = Some(name.into());
        f.model = Some(model.into());
        f.product_name = product.map(String::from);
        ok(s.authenticate(&f, 1000).await, "authenticate")?;
        if id != "UDID-E5" {
            ok(s.token_update(&token(id, None), 1001).await, "token_update")?;
        }
    }
    let mut labels = std::collections::BTreeMap::new();
    labels.insert("team".to_string(), "Finance".to_string());
    labels.insert("floor".to_string(), "3".to_string());
    ok(
        s.set_device_labels("UDID-C3", &labels, 2000).await,
        "labels",
    )?;
    labels.remove("floor");
    labels.insert("team".to_string(), "Field sales".to_string());
    ok(
        s.set_device_labels("UDID-B2", &labels, 2000).await,
        "labels",
    )?;

    let text = |t: &str| DeviceQuery {
        text: Some(t.to_string()),
        ..DeviceQuery::default()
    };
    let all = searched(&*s, &DeviceQuery::default(), None, 10).await?;
    check!(
        all == ["UDID-A1", "UDID-B2", "UDID-C3", "UDID-D4", "UDID-E5"],
        "no filter lists every device by id: {all:?}"
    );
    let found = searched(&*s, &text("c02phone"), None, 10).await?;
    check!(
        found == ["UDID-A1", "UDID-B2", "UDID-E5"],
        "a serial prefix, any case: {found:?}"
    );
    let found = searched(&*s, &text("C02PHONE2"), None, 10).await?;
    check!(found == ["UDID-B2"], "a whole serial: {found:?}");
    let found = searched(&*s, &text("udid-c"), None, 10).await?;
    check!(found == ["UDID-C3"], "a UDID prefix, any case: {found:?}");
    let found = searched(&*s, &text("mac"), None, 10).await?;
    check!(
        found == ["UDID-B2"],
        "device names by prefix (not the model, not inside a name): {found:?}"
    );
    let found = searched(&*s, &text("fin"), None, 10).await?;
    check!(found == ["UDID-C3"], "a label value by prefix: {found:?}");
    let found = searched(&*s, &text("team=field"), None, 10).await?;
    check!(found == ["UDID-B2"], "key=value prefix: {found:?}");
    let found = searched(&*s, &text("floor=fin"), None, 10).await?;
    check!(found.is_empty(), "key=value is that label only: {found:?}");
    let found = searched(&*s, &text("nothing-like-it"), None, 10).await?;
    check!(found.is_empty(), "no match: {found:?}");
    // Labels replaced: the old value no longer matches.
    labels.insert("team".to_string(), "Support".to_string());
    ok(
        s.set_device_labels("UDID-B2", &labels, 3000).await,
        "labels",
    )?;
    let found = searched(&*s, &text("field"), None, 10).await?;
    check!(found.is_empty(), "a replaced label is not found: {found:?}");

    let phones = DeviceQuery {
        product_prefixes: vec!["iPhone".into(), "iPod".into()],
        ..DeviceQuery::default()
    };
    let found = searched(&*s, &phones, None, 10).await?;
    check!(
        found == ["UDID-A1", "UDID-B2", "UDID-E5"],
        "platform by model: {found:?}"
    );
    let macs = DeviceQuery {
        product_prefixes: vec!["Mac".into()],
        ..DeviceQuery::default()
    };
    let found = searched(&*s, &macs, None, 10).await?;
    check!(
        found == ["UDID-D4"],
        "platform by ProductName first: {found:?}"
    );
    let enrolled_phones = DeviceQuery {
        state: Some(EnrollmentState::Enrolled),
        ..phones.clone()
    };
    let found = searched(&*s, &enrolled_phones, None, 10).await?;
    check!(
        found == ["UDID-A1", "UDID-B2"],
        "state and platform: {found:?}"
    );
    let waiting = DeviceQuery {
        state: Some(EnrollmentState::Authenticated),
        ..DeviceQuery::default()
    };
    let found = searched(&*s, &waiting, None, 10).await?;
    check!(found == ["UDID-E5"], "state: {found:?}");

    let among = DeviceQuery {
        among: Some(vec!["UDID-E5".into(), "UDID-C3".into(), "UDID-A1".into()]),
        text: Some("c02".into()),
        ..DeviceQuery::default()
    };
    let found = searched(&*s, &among, None, 10).await?;
    check!(found == ["UDID-A1", "UDID-E5"], "among and text: {found:?}");
    let nobody = DeviceQuery {
        among: Some(Vec::new()),
        ..DeviceQuery::default()
    };
    let found = searched(&*s, &nobody, None, 10).await?;
    check!(found.is_empty(), "among nobody: {found:?}");

    // Keyset pages of a search.
    let page1 = searched(&*s, &phones, None, 2).await?;
    check!(page1 == ["UDID-A1", "UDID-B2"], "page 1 {page1:?}");
    let page2 = searched(&*s, &phones, Some("UDID-B2"), 2).await?;
    check!(page2 == ["UDID-E5"], "page 2 {page2:?}");
    Ok(())
}
