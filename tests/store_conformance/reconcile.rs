//! Reconcile cases: plans applied atomically and in batches, replays that queue nothing, and
//! reads asked together answering each device its own.

use crate::support::*;
use pomona::protocol::ReportStatus;
use pomona::store::*;
use std::sync::Arc;

pub(crate) async fn plans_of_several_devices_apply_in_one_batch(s: Arc<dyn Store>) -> CaseResult {
    use pomona::vocab::profiles::{Intent, ProfileState, RemovalPolicy};
    use reconcile::{DevicePlan, PlanChange};
    enrolled(&*s, "D1").await?;
    enrolled(&*s, "D2").await?;
    let managed = |device: &str| {
        managed_wifi(
            &format!("U-{device}"),
            ProfileState::Pending,
            RemovalPolicy::Remove,
        )
    };
    let install = Intent::Install {
        identifier: "com.example.wifi".into(),
        hash: "h1".into(),
    };
    let plan = |device: &str, now: i64| DevicePlan {
        device_id: device.into(),
        change: PlanChange {
            managed: vec![managed(device)],
            enqueue: vec![
                (command(&format!("I-{device}")), install.clone()),
                (command(&format!("L-{device}")), Intent::ProfileList),
            ],
            ..PlanChange::default()
        },
        now,
    };
    let plans = vec![plan("D1", 2000), plan("D2", 2001), plan("nobody", 2002)];
    let queued = ok(s.apply_plans(&plans).await, "apply_plans")?;
    check!(
        queued == vec![2, 2, 0],
        "queued {queued:?} (nothing for an unknown device)"
    );
    for device in ["D1", "D2"] {
        let state = ok(s.reconcile_state(device).await, "state")?;
        check!(
            state.managed == vec![managed(device)],
            "{device} managed {:?}",
            state.managed
        );
        check!(
            state.open.len() == 2 && state.open[0].intent == install,
            "{device} open {:?}",
            state.open
        );
        let next = ok(s.next_command(device, &[], 2100).await, "next")?;
        check!(
            next.map(|c| c.uuid) == Some(format!("I-{device}")),
            "{device}: its own install first"
        );
    }
    let replay = ok(s.apply_plans(&plans[..2]).await, "replay")?;
    check!(replay == vec![0, 0], "a replay queued {replay:?}");
    check!(
        ok(s.apply_plans(&[]).await, "empty batch")?.is_empty(),
        "an empty batch"
    );
    Ok(())
}

pub(crate) async fn a_plan_is_applied_atomically_and_a_replay_queues_nothing(
    s: Arc<dyn Store>,
) -> CaseResult {
    use pomona::vocab::profiles::{Intent, ProfileState, RemovalPolicy, ReportedProfiles};
    use reconcile::PlanChange;
    enrolled(&*s, "D1").await?;
    let managed = managed_wifi("U1", ProfileState::Pending, RemovalPolicy::Keep);
    let install = Intent::Install {
        identifier: "com.example.wifi".into(),
        hash: "h1".into(),
    };
    let change = PlanChange {
        managed: vec![managed.clone()],
        enqueue: vec![
            (command("I1"), install.clone()),
            (command("L1"), Intent::ProfileList),
        ],
        ..PlanChange::default()
    };
    let queued = ok(s.apply_plan("D1", change.clone(), 2000).await, "apply")?;
    check!(queued == 2, "queued {queued}");
    let replay = ok(s.apply_plan("D1", change.clone(), 2001).await, "replay")?;
    check!(replay == 0, "a replay queued {replay}");
    let state = ok(s.reconcile_state("D1").await, "state")?;
    check!(
        state.managed == vec![managed.clone()],
        "managed {:?}",
        state.managed
    );
    check!(
        state.open.len() == 2 && state.open[0].intent == install && !state.open[0].sent,
        "open {:?}",
        state.open
    );
    // The device answers the install; the result shows up as an open, finished command.
    ok(s.next_command("D1", &[], 2002).await, "next")?;
    ok(
        s.record_report(
            "D1",
            &report("I1", ReportStatus::Acknowledged, b"ack"),
            2003,
        )
        .await,
        "report",
    )?;
    let state = ok(s.reconcile_state("D1").await, "state")?;
    let i1 = state
        .open
        .iter()
        .find(|c| c.uuid == "I1")
        .ok_or("I1 not open")?;
    check!(
        i1.status == CommandStatus::Acknowledged
            && i1.result.as_deref() == Some(&b"ack"[..])
            && i1.sent,
        "I1 {i1:?}"
    );
    // Fold it in, cancel the queued ProfileList, remember a report; older reports do not win.
    let mut verifying = managed.clone();
    verifying.state = ProfileState::Verifying;
    let fold = PlanChange {
        managed: vec![verifying.clone()],
        processed: vec!["I1".into()],
        cancel: vec!["L1".into()],
        reported: Some(ReportedProfiles {
            reported_at: 3000,
            profiles: [("com.example.wifi".to_string(), "U1".to_string())].into(),
        }),
        ..PlanChange::default()
    };
    ok(s.apply_plan("D1", fold.clone(), 3000).await, "fold")?;
    let older = PlanChange {
        managed: vec![verifying.clone()],
        reported: Some(ReportedProfiles {
            reported_at: 1000,
            profiles: Default::default(),
        }),
        ..PlanChange::default()
    };
    ok(
        s.apply_plan("D1", older.clone(), 3001).await,
        "older report",
    )?;
    let state = ok(s.reconcile_state("D1").await, "state")?;
    check!(state.open.is_empty(), "still open: {:?}", state.open);
    check!(
        state.managed == vec![verifying],
        "managed {:?}",
        state.managed
    );
    let reported = state.reported.ok_or("no report stored")?;
    check!(
        reported.reported_at == 3000 && reported.profiles.len() == 1,
        "report {reported:?}"
    );
    let list = ok(s.commands("D1", 10).await, "commands")?;
    let l1 = list.iter().find(|c| c.uuid == "L1").ok_or("L1 missing")?;
    check!(l1.status == CommandStatus::Cancelled, "L1 {:?}", l1.status);
    let counts = ok(s.profile_counts().await, "counts")?;
    check!(
        counts.len() == 1 && counts[0].verifying == 1 && counts[0].profile_key == "Profile/wifi",
        "counts {counts:?}"
    );
    // Nothing is queued for a device that is not enrolled here.
    let nobody = ok(s.apply_plan("GHOST", change.clone(), 4000).await, "ghost")?;
    check!(nobody == 0, "queued {nobody} for an unknown device");
    Ok(())
}

/// Many devices' standings and reconcile views asked at once (the read queues answer them in
/// batches): each answer is the asking device's own, as if asked alone.
pub(crate) async fn reads_asked_together_answer_each_device_its_own(
    s: Arc<dyn Store>,
) -> CaseResult {
    use pomona::vocab::profiles::Intent;
    use reconcile::{DevicePlan, PlanChange};
    const DEVICES: usize = 40;
    let device = |i: usize| format!("D{i}");
    let fingerprint = |i: usize| format!("fp{i}");
    let mut plans = Vec::new();
    for i in 0..DEVICES {
        ok(
            s.record_certificate(&certificate(&fingerprint(i)), None, 500)
                .await,
            "record",
        )?;
        let mut f = facts(&device(i));
        f.certificate_fingerprint = Some(fingerprint(i));
        ok(s.authenticate(&f, 1000).await, "authenticate")?;
        ok(
            s.token_update(&token(&device(i), None), 1001).await,
            "token",
        )?;
        // Every other device gets a plan: an open ProfileList of its own.
        if i % 2 == 0 {
            plans.push(DevicePlan {
                device_id: device(i),
                change: PlanChange {
                    enqueue: vec![(command(&format!("L-{i}")), Intent::ProfileList)],
                    ..PlanChange::default()
                },
                now: 2000,
            });
        }
    }
    ok(s.apply_plans(&plans).await, "apply_plans")?;
    let standings = (0..DEVICES).map(|i| {
        let s = s.clone();
        // Every third device presents its neighbour's certificate.
        let presented = if i % 3 == 0 { (i + 1) % DEVICES } else { i };
        async move {
            let standing = s.certificate_standing(&fingerprint(presented)).await;
            (i, presented, standing)
        }
    });
    let views = (0..=DEVICES).map(|i| {
        let s = s.clone();
        async move { (i, s.reconcile_view(&device(i)).await) }
    });
    let (standings, views) = futures::future::join(
        futures::future::join_all(standings),
        futures::future::join_all(views),
    )
    .await;
    for (i, presented, standing) in standings {
        let standing = ok(standing, "standing")?.ok_or(format!("no standing for fp{presented}"))?;
        check!(
            standing.certificate.fingerprint == fingerprint(presented)
                && standing.certificate.device_id == Some(device(presented))
                // The enrollment is the certificate's own, whoever presents it.
                && standing.enrollment_fingerprint == Some(fingerprint(presented))
                && standing.enrollment_state == Some(EnrollmentState::Enrolled),
            "D{i} presenting fp{presented} got {standing:?}"
        );
    }
    for (i, view) in views {
        let view = ok(view, "reconcile_view")?;
        if i == DEVICES {
            check!(
                view == reconcile::ReconcileView::default(),
                "an unknown device has a view: {view:?}"
            );
            continue;
        }
        check!(
            view.enrollment.as_ref().map(|e| e.device_id.as_str()) == Some(device(i).as_str()),
            "D{i} got the enrollment {:?}",
            view.enrollment
        );
        let open: Vec<&str> = view.state.open.iter().map(|o| o.uuid.as_str()).collect();
        let expected = if i % 2 == 0 {
            vec![format!("L-{i}")]
        } else {
            Vec::new()
        };
        check!(open == expected, "D{i} has open commands {open:?}");
    }
    Ok(())
}
