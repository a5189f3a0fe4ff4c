//! The conformance suite every `Store` backend must pass. Each case gets a fresh, empty store
//! and returns an error describing the first expectation that failed. `tests/store_conformance.rs`
//! runs every case on SQLite and on PostgreSQL.

use super::*;
use crate::protocol::ReportStatus;
use std::future::Future;
use std::pin::Pin;

pub type CaseResult = Result<(), String>;
type CaseFuture = Pin<Box<dyn Future<Output = CaseResult> + Send>>;
pub type Case = (&'static str, fn(Arc<dyn Store>) -> CaseFuture);

macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

fn ok<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

pub fn facts(id: &str) -> DeviceFacts {
    DeviceFacts {
        device_id: id.to_string(),
        topic: "com.apple.mgmt.External.test".into(),
        serial_number: Some(format!("SER-{id}")),
        model: Some("iPhone15,2".into()),
        os_version: Some("17.4".into()),
        ..DeviceFacts::default()
    }
}

pub fn token(id: &str, unlock: Option<&[u8]>) -> TokenUpdateRecord {
    TokenUpdateRecord {
        device_id: id.to_string(),
        enrollment_type: EnrollmentType::Device,
        topic: "com.apple.mgmt.External.test".into(),
        token: vec![1, 2, 3, 4],
        push_magic: format!("magic-{id}"),
        unlock_token: unlock.map(<[u8]>::to_vec),
        awaiting_configuration: false,
    }
}

pub fn command(uuid: &str) -> NewCommand {
    NewCommand {
        uuid: uuid.to_string(),
        request_type: "ProfileList".into(),
        command: b"<plist><dict/></plist>".to_vec(),
    }
}

async fn enrolled(store: &dyn Store, id: &str) -> CaseResult {
    ok(store.authenticate(&facts(id), 1000).await, "authenticate")?;
    ok(
        store.token_update(&token(id, None), 1001).await,
        "token_update",
    )?;
    Ok(())
}

fn report<'a>(uuid: &'a str, status: ReportStatus, raw: &'a [u8]) -> ReportRecord<'a> {
    ReportRecord {
        command_uuid: uuid,
        status,
        raw,
    }
}

#[path = "action_conformance.rs"]
mod action_cases;

pub fn cases() -> Vec<Case> {
    let mut cases = base_cases();
    cases.extend(action_cases::cases());
    cases
}

fn base_cases() -> Vec<Case> {
    vec![
        ("authenticate_then_token_update_enrolls_the_device", |s| {
            Box::pin(authenticate_then_token_update(s))
        }),
        ("missing_unlock_token_keeps_the_stored_one", |s| {
            Box::pin(missing_unlock_token_keeps_stored(s))
        }),
        ("queue_is_first_in_first_out_and_skips_what_is_asked", |s| {
            Box::pin(queue_fifo_and_skip(s))
        }),
        ("terminal_report_stores_raw_result_and_dequeues", |s| {
            Box::pin(terminal_report_dequeues(s))
        }),
        ("not_now_keeps_the_command_queued", |s| {
            Box::pin(not_now_keeps_queued(s))
        }),
        ("duplicate_reports_are_harmless", |s| {
            Box::pin(duplicate_reports_harmless(s))
        }),
        ("a_device_cannot_answer_another_devices_command", |s| {
            Box::pin(cannot_answer_others(s))
        }),
        ("reauthenticate_cancels_the_previous_queue", |s| {
            Box::pin(reauthenticate_cancels_queue(s))
        }),
        ("check_out_keeps_history_and_refuses_new_commands", |s| {
            Box::pin(check_out_keeps_history(s))
        }),
        ("enqueue_rejects_unknown_devices_and_reused_uuids", |s| {
            Box::pin(enqueue_rejects(s))
        }),
        (
            "devices_are_found_by_id_or_serial_and_listed_in_pages",
            |s| Box::pin(find_and_list(s)),
        ),
        ("last_seen_batches_never_move_backwards", |s| {
            Box::pin(last_seen_batches(s))
        }),
        ("bootstrap_token_round_trips", |s| {
            Box::pin(bootstrap_token_round_trips(s))
        }),
        ("migrations_are_idempotent", |s| {
            Box::pin(migrations_idempotent(s))
        }),
        ("concurrent_reports_from_many_devices_lose_nothing", |s| {
            Box::pin(concurrent_reports(s))
        }),
        ("certificates_are_bound_at_authenticate_and_revoked", |s| {
            Box::pin(certificates_bound_and_revoked(s))
        }),
        (
            "scep_challenge_is_used_up_with_the_certificate_it_issues",
            |s| Box::pin(challenge_used_with_certificate(s)),
        ),
        ("one_time_secrets_are_single_use_even_when_raced", |s| {
            Box::pin(secrets_single_use(s))
        }),
        (
            "a_plan_is_applied_atomically_and_a_replay_queues_nothing",
            |s| Box::pin(plan_applied_and_replayed(s)),
        ),
        (
            "push_requests_coalesce_and_a_silent_device_keeps_its_backoff",
            |s| Box::pin(push_requests_coalesce(s)),
        ),
        (
            "due_pushes_are_claimed_once_and_come_back_after_the_lease",
            |s| Box::pin(due_pushes_are_leased(s)),
        ),
        (
            "work_queued_while_an_idle_claim_is_out_still_gets_its_push",
            |s| Box::pin(work_queued_during_an_idle_claim(s)),
        ),
        (
            "an_invalid_token_stops_pushes_until_the_next_token_update",
            |s| Box::pin(invalid_token_until_token_update(s)),
        ),
        (
            "devices_without_token_update_are_claimed_without_credentials",
            |s| Box::pin(unpushable_devices(s)),
        ),
        (
            "a_push_answered_before_apns_acknowledged_it_leaves_no_backoff",
            |s| Box::pin(push_answered_before_acknowledged(s)),
        ),
        ("queued_commands_get_a_push_after_restart", |s| {
            Box::pin(queued_commands_get_push(s))
        }),
        (
            "an_exchange_records_the_report_and_hands_out_the_next_command",
            |s| Box::pin(exchange_records_and_hands_out(s)),
        ),
        (
            "concurrent_exchanges_of_many_devices_each_get_their_own_commands",
            |s| Box::pin(concurrent_exchanges(s)),
        ),
        (
            "exchanges_written_together_keep_each_devices_answers_apart",
            |s| Box::pin(exchanges_written_together(s)),
        ),
        ("plans_of_several_devices_apply_in_one_batch", |s| {
            Box::pin(plans_apply_in_one_batch(s))
        }),
        ("reads_asked_together_answer_each_device_its_own", |s| {
            Box::pin(reads_asked_together(s))
        }),
        ("push_requests_and_outcomes_apply_in_batches", |s| {
            Box::pin(push_writes_apply_in_batches(s))
        }),
    ]
}

async fn plans_apply_in_one_batch(s: Arc<dyn Store>) -> CaseResult {
    use crate::vocab::profiles::{Intent, ManagedProfile, ProfileState, RemovalPolicy};
    use reconcile::{DevicePlan, PlanChange};
    enrolled(&*s, "D1").await?;
    enrolled(&*s, "D2").await?;
    let managed = |device: &str| ManagedProfile {
        identifier: "com.example.wifi".into(),
        profile_key: "Profile/wifi".into(),
        hash: "h1".into(),
        uuid: format!("U-{device}"),
        state: ProfileState::Pending,
        attempts: 0,
        installs: 1,
        last_attempt_at: None,
        acknowledged_at: None,
        last_error: None,
        removal_policy: RemovalPolicy::Remove,
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

async fn push_writes_apply_in_batches(s: Arc<dyn Store>) -> CaseResult {
    enrolled(&*s, "D1").await?;
    enrolled(&*s, "D2").await?;
    ok(s.enqueue("D1", &command("C1"), 2000).await, "enqueue")?;
    ok(s.enqueue("D2", &command("C2"), 2000).await, "enqueue")?;
    let found = ok(
        s.request_pushes(&[
            ("D1".into(), 5000),
            ("nobody".into(), 5000),
            ("D2".into(), 6000),
            ("D1".into(), 4000),
        ])
        .await,
        "request_pushes",
    )?;
    check!(
        found == vec![true, false, true, true],
        "found {found:?} (false for an unknown device)"
    );
    check!(
        push_status_of(&*s, "D1").await?.next_push_at == Some(4000),
        "the earlier of two requests in one batch must win"
    );
    check!(
        push_status_of(&*s, "D2").await?.next_push_at == Some(6000),
        "D2's request"
    );
    check!(
        ok(s.push_status("nobody").await, "push_status")?.is_none(),
        "push state for an unknown device"
    );
    let due = ok(s.claim_due_pushes(6000, 100_000, 10).await, "claim")?;
    check!(due.len() == 2, "expected two due pushes, got {}", due.len());
    ok(
        s.record_pushes(&[
            accepted("D1", 6100, 100_000, 1, 66_100),
            accepted("D2", 6200, 100_000, 1, 66_200),
        ])
        .await,
        "record_pushes",
    )?;
    for (device, at, next) in [("D1", 6100, 66_100), ("D2", 6200, 66_200)] {
        let status = push_status_of(&*s, device).await?;
        check!(
            status.attempts == 1
                && status.last_push_at == Some(at)
                && status.next_push_at == Some(next)
                && status.last_result.as_deref() == Some("accepted"),
            "{device} after a batched outcome: {status:?}"
        );
    }
    ok(s.record_pushes(&[]).await, "empty batch")?;
    Ok(())
}

async fn exchange_records_and_hands_out(s: Arc<dyn Store>) -> CaseResult {
    enrolled(&*s, "D1").await?;
    enrolled(&*s, "D2").await?;
    for uuid in ["A", "B"] {
        ok(s.enqueue("D1", &command(uuid), 2000).await, "enqueue")?;
    }
    // Idle: nothing to record, the first command is handed out and counted as sent.
    let (outcome, next) = ok(s.exchange("D1", None, &[], 2001).await, "idle")?;
    check!(outcome.is_none(), "an Idle exchange recorded {outcome:?}");
    check!(
        next.as_ref().map(|c| c.uuid.as_str()) == Some("A"),
        "first command {next:?}"
    );
    // A result, then the next command, in the same exchange.
    let ack = report("A", ReportStatus::Acknowledged, b"<plist>ack</plist>");
    let (outcome, next) = ok(s.exchange("D1", Some(&ack), &[], 2002).await, "ack")?;
    check!(
        outcome == Some(ReportOutcome::Dequeued),
        "outcome {outcome:?}"
    );
    check!(
        next.as_ref().map(|c| c.uuid.as_str()) == Some("B"),
        "after A: {next:?}"
    );
    // Another device's command is unknown to this one, and changes nothing.
    let theirs = report("B", ReportStatus::Acknowledged, b"x");
    let (outcome, next) = ok(s.exchange("D2", Some(&theirs), &[], 2003).await, "D2")?;
    check!(
        outcome == Some(ReportOutcome::Unknown) && next.is_none(),
        "D2 answering D1's command: {outcome:?} {next:?}"
    );
    // NotNow keeps B queued; skipped for this exchange, nothing is handed out.
    let not_now = report("B", ReportStatus::NotNow, b"nn");
    let (outcome, next) = ok(
        s.exchange("D1", Some(&not_now), &["B".to_string()], 2004)
            .await,
        "NotNow",
    )?;
    check!(
        outcome == Some(ReportOutcome::StillQueued) && next.is_none(),
        "NotNow: {outcome:?} {next:?}"
    );
    // A replayed result is harmless.
    let (outcome, _) = ok(s.exchange("D1", Some(&ack), &[], 2005).await, "replay")?;
    check!(
        outcome == Some(ReportOutcome::AlreadyFinished),
        "replay: {outcome:?}"
    );
    // The device was pushed; answering its last command drains the queue, which ends the
    // push backoff in the same exchange.
    ok(s.request_push("D1", 3000).await, "request")?;
    ok(s.claim_due_pushes(3000, 100_000, 10).await, "claim")?;
    ok(
        s.record_push(&accepted("D1", 3100, 100_000, 1, 63_100))
            .await,
        "record",
    )?;
    let done = report("B", ReportStatus::Acknowledged, b"done");
    let (outcome, next) = ok(s.exchange("D1", Some(&done), &[], 4000).await, "last")?;
    check!(
        outcome == Some(ReportOutcome::Dequeued) && next.is_none(),
        "last: {outcome:?} {next:?}"
    );
    check!(
        push_status_of(&*s, "D1").await?.attempts == 0,
        "draining the queue must reset the push attempts"
    );
    let cmds = ok(s.commands("D1", 10).await, "commands")?;
    let a = cmds.iter().find(|c| c.uuid == "A").ok_or("A missing")?;
    let b = cmds.iter().find(|c| c.uuid == "B").ok_or("B missing")?;
    check!(
        a.status == CommandStatus::Acknowledged
            && a.result.as_deref() == Some(&b"<plist>ack</plist>"[..])
            && a.sent_count == 1,
        "A {a:?}"
    );
    check!(
        b.status == CommandStatus::Acknowledged && b.sent_count == 2 && b.not_now_count == 1,
        "B {b:?} (handed out after A, and again after the replay)"
    );
    Ok(())
}

async fn plan_applied_and_replayed(s: Arc<dyn Store>) -> CaseResult {
    use crate::vocab::profiles::{
        Intent, ManagedProfile, ProfileState, RemovalPolicy, ReportedProfiles,
    };
    use reconcile::PlanChange;
    enrolled(&*s, "D1").await?;
    let managed = ManagedProfile {
        identifier: "com.example.wifi".into(),
        profile_key: "Profile/wifi".into(),
        hash: "h1".into(),
        uuid: "U1".into(),
        state: ProfileState::Pending,
        attempts: 0,
        installs: 1,
        last_attempt_at: None,
        acknowledged_at: None,
        last_error: None,
        removal_policy: RemovalPolicy::Keep,
    };
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

fn certificate(fingerprint: &str) -> CertificateRecord {
    CertificateRecord {
        fingerprint: fingerprint.to_string(),
        serial: format!("serial-{fingerprint}"),
        subject: "CN=device".into(),
        not_before: 0,
        not_after: 9_999_999_999,
        issued_at: 500,
        device_id: None,
        bound_at: None,
        revoked_at: None,
    }
}

/// Many devices' standings and reconcile views asked at once (the read queues answer them in
/// batches): each answer is the asking device's own, as if asked alone.
async fn reads_asked_together(s: Arc<dyn Store>) -> CaseResult {
    use crate::vocab::profiles::Intent;
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

async fn certificates_bound_and_revoked(s: Arc<dyn Store>) -> CaseResult {
    let used = ok(
        s.record_certificate(&certificate("fp1"), None, 500).await,
        "record",
    )?;
    check!(
        used == SecretUse::Accepted,
        "recording without a challenge: {used:?}"
    );
    let before = ok(s.certificate_standing("fp1").await, "standing")?
        .ok_or("recorded certificate not found")?;
    check!(
        before.certificate.device_id.is_none() && before.enrollment_state.is_none(),
        "fresh certificate standing {before:?}"
    );
    check!(
        ok(s.certificate_standing("nope").await, "standing")?.is_none(),
        "an unknown fingerprint has a standing"
    );
    let mut f = facts("D1");
    f.certificate_fingerprint = Some("fp1".into());
    ok(s.authenticate(&f, 1000).await, "authenticate")?;
    let bound = ok(s.certificate_standing("fp1").await, "standing")?.unwrap();
    check!(
        bound.certificate.device_id.as_deref() == Some("D1")
            && bound.enrollment_fingerprint.as_deref() == Some("fp1")
            && bound.enrollment_state == Some(EnrollmentState::Authenticated),
        "after Authenticate: {bound:?}"
    );
    // A certificate recorded but never bound has no enrollment, though D1 is enrolled.
    ok(
        s.record_certificate(&certificate("fp-unbound"), None, 1100)
            .await,
        "record",
    )?;
    let unbound = ok(s.certificate_standing("fp-unbound").await, "standing")?.unwrap();
    check!(
        unbound.certificate.device_id.is_none() && unbound.enrollment_state.is_none(),
        "another device's enrollment leaked into the standing: {unbound:?}"
    );
    let e = ok(s.enrollment("D1").await, "enrollment")?.unwrap();
    check!(
        e.certificate_fingerprint.as_deref() == Some("fp1"),
        "enrollment fingerprint {:?}",
        e.certificate_fingerprint
    );
    // Re-enrollment with a new certificate moves the binding.
    ok(
        s.record_certificate(&certificate("fp2"), None, 600).await,
        "record",
    )?;
    f.certificate_fingerprint = Some("fp2".into());
    ok(s.authenticate(&f, 2000).await, "authenticate")?;
    let moved = ok(s.certificate_standing("fp1").await, "standing")?.unwrap();
    check!(
        moved.enrollment_fingerprint.as_deref() == Some("fp2"),
        "binding did not move: {moved:?}"
    );
    let listed = ok(s.device_certificates("D1").await, "list")?;
    check!(listed.len() == 2, "device certificates {listed:?}");
    let revoked = ok(s.revoke_device_certificates("D1", 3000).await, "revoke")?;
    check!(revoked == 2, "revoked {revoked}");
    let again = ok(s.revoke_device_certificates("D1", 3001).await, "revoke")?;
    check!(again == 0, "revoking twice counted {again}");
    let after = ok(s.certificate_standing("fp2").await, "standing")?.unwrap();
    check!(
        after.certificate.revoked_at == Some(3000),
        "revoked_at {:?}",
        after.certificate.revoked_at
    );
    Ok(())
}

async fn challenge_used_with_certificate(s: Arc<dyn Store>) -> CaseResult {
    ok(
        s.create_secret(SecretKind::ScepChallenge, "h1", 10_000, 1000)
            .await,
        "create",
    )?;
    let first = ok(
        s.record_certificate(&certificate("fpA"), Some("h1"), 2000)
            .await,
        "record",
    )?;
    check!(first == SecretUse::Accepted, "first use {first:?}");
    let second = ok(
        s.record_certificate(&certificate("fpB"), Some("h1"), 2001)
            .await,
        "record",
    )?;
    check!(second == SecretUse::AlreadyUsed, "second use {second:?}");
    check!(
        ok(s.certificate_standing("fpB").await, "standing")?.is_none(),
        "a certificate was recorded for a used challenge"
    );
    let unknown = ok(
        s.record_certificate(&certificate("fpC"), Some("nope"), 2002)
            .await,
        "record",
    )?;
    check!(
        unknown == SecretUse::Unknown,
        "unknown challenge {unknown:?}"
    );
    ok(
        s.create_secret(SecretKind::ScepChallenge, "h2", 3000, 1000)
            .await,
        "create",
    )?;
    let late = ok(
        s.record_certificate(&certificate("fpD"), Some("h2"), 3000)
            .await,
        "record",
    )?;
    check!(late == SecretUse::Expired, "expired challenge {late:?}");
    // An enrollment token is not a SCEP challenge.
    ok(
        s.create_secret(SecretKind::EnrollmentToken, "t1", 10_000, 1000)
            .await,
        "create",
    )?;
    let wrong_kind = ok(
        s.record_certificate(&certificate("fpE"), Some("t1"), 2000)
            .await,
        "record",
    )?;
    check!(
        wrong_kind == SecretUse::Unknown,
        "token used as challenge: {wrong_kind:?}"
    );
    Ok(())
}

async fn secrets_single_use(s: Arc<dyn Store>) -> CaseResult {
    ok(
        s.create_secret(SecretKind::EnrollmentToken, "tok", 10_000, 1000)
            .await,
        "create",
    )?;
    let attempts: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.consume_secret(SecretKind::EnrollmentToken, "tok", 2000 + i)
                    .await
            })
        })
        .collect();
    let mut accepted = 0;
    for attempt in attempts {
        let outcome = ok(attempt.await.map_err(|e| e.to_string()), "join")?;
        match outcome {
            Ok(SecretUse::Accepted) => accepted += 1,
            Ok(SecretUse::AlreadyUsed) => {}
            Ok(other) => return Err(format!("unexpected outcome {other:?}")),
            // SQLite may report a busy writer; that attempt simply failed.
            Err(StoreError::Unavailable(_)) => {}
            Err(e) => return Err(format!("consume: {e}")),
        }
    }
    check!(accepted == 1, "{accepted} concurrent uses were accepted");
    let expired = {
        ok(
            s.create_secret(SecretKind::EnrollmentToken, "old", 1500, 1000)
                .await,
            "create",
        )?;
        ok(
            s.consume_secret(SecretKind::EnrollmentToken, "old", 1500)
                .await,
            "consume",
        )?
    };
    check!(expired == SecretUse::Expired, "expired token {expired:?}");
    Ok(())
}

async fn authenticate_then_token_update(s: Arc<dyn Store>) -> CaseResult {
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

async fn missing_unlock_token_keeps_stored(s: Arc<dyn Store>) -> CaseResult {
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

async fn queue_fifo_and_skip(s: Arc<dyn Store>) -> CaseResult {
    enrolled(&*s, "D1").await?;
    for uuid in ["A", "B", "C"] {
        ok(s.enqueue("D1", &command(uuid), 2000).await, "enqueue")?;
    }
    let first = ok(s.next_command("D1", &[], 2001).await, "next")?.ok_or("empty queue")?;
    check!(first.uuid == "A", "first command is {}", first.uuid);
    let again = ok(s.next_command("D1", &[], 2002).await, "next")?.ok_or("empty queue")?;
    check!(
        again.uuid == "A",
        "an unanswered command must be offered again, got {}",
        again.uuid
    );
    let skipped = ok(
        s.next_command("D1", &["A".into(), "B".into()], 2003).await,
        "next",
    )?
    .ok_or("empty")?;
    check!(
        skipped.uuid == "C",
        "skip list ignored: got {}",
        skipped.uuid
    );
    let none = ok(
        s.next_command("D1", &["A".into(), "B".into(), "C".into()], 2004)
            .await,
        "next",
    )?;
    check!(none.is_none(), "all skipped yet something was returned");
    let cmds = ok(s.commands("D1", 10).await, "commands")?;
    let a = cmds.iter().find(|c| c.uuid == "A").ok_or("A missing")?;
    check!(
        a.sent_count == 2 && a.last_sent_at == Some(2002),
        "A sent_count {} last_sent {:?}",
        a.sent_count,
        a.last_sent_at
    );
    Ok(())
}

async fn terminal_report_dequeues(s: Arc<dyn Store>) -> CaseResult {
    enrolled(&*s, "D1").await?;
    ok(s.enqueue("D1", &command("A"), 2000).await, "enqueue")?;
    ok(s.enqueue("D1", &command("B"), 2000).await, "enqueue")?;
    let raw = b"<plist>ack</plist>";
    let out = ok(
        s.record_report("D1", &report("A", ReportStatus::Acknowledged, raw), 2100)
            .await,
        "report",
    )?;
    check!(out == ReportOutcome::Dequeued, "outcome {out:?}");
    let out = ok(
        s.record_report("D1", &report("B", ReportStatus::Error, b"err"), 2101)
            .await,
        "report",
    )?;
    check!(
        out == ReportOutcome::Dequeued,
        "Error must dequeue, got {out:?}"
    );
    check!(
        ok(s.next_command("D1", &[], 2200).await, "next")?.is_none(),
        "queue not empty"
    );
    let cmds = ok(s.commands("D1", 10).await, "commands")?;
    let a = cmds.iter().find(|c| c.uuid == "A").ok_or("A missing")?;
    check!(
        a.status == CommandStatus::Acknowledged,
        "A status {:?}",
        a.status
    );
    check!(
        a.result.as_deref() == Some(&raw[..]),
        "raw result not stored exactly"
    );
    check!(
        a.completed_at == Some(2100),
        "completed_at {:?}",
        a.completed_at
    );
    check!(cmds[0].uuid == "B", "commands must be newest first");
    check!(
        ok(s.queue_depth().await, "depth")? == 0,
        "queue depth not zero"
    );
    Ok(())
}

async fn not_now_keeps_queued(s: Arc<dyn Store>) -> CaseResult {
    enrolled(&*s, "D1").await?;
    ok(s.enqueue("D1", &command("A"), 2000).await, "enqueue")?;
    let out = ok(
        s.record_report("D1", &report("A", ReportStatus::NotNow, b"nn"), 2100)
            .await,
        "report",
    )?;
    check!(out == ReportOutcome::StillQueued, "outcome {out:?}");
    let next =
        ok(s.next_command("D1", &[], 2200).await, "next")?.ok_or("NotNow dequeued the command")?;
    check!(next.uuid == "A", "wrong command");
    let cmds = ok(s.commands("D1", 10).await, "commands")?;
    check!(
        cmds[0].not_now_count == 1 && cmds[0].status == CommandStatus::Queued,
        "NotNow not counted"
    );
    check!(
        ok(s.queue_depth().await, "depth")? == 1,
        "queue depth not one"
    );
    Ok(())
}

async fn duplicate_reports_harmless(s: Arc<dyn Store>) -> CaseResult {
    enrolled(&*s, "D1").await?;
    ok(s.enqueue("D1", &command("A"), 2000).await, "enqueue")?;
    ok(
        s.record_report(
            "D1",
            &report("A", ReportStatus::Acknowledged, b"first"),
            2100,
        )
        .await,
        "report",
    )?;
    let again = ok(
        s.record_report(
            "D1",
            &report("A", ReportStatus::Acknowledged, b"second"),
            2101,
        )
        .await,
        "report",
    )?;
    check!(
        again == ReportOutcome::AlreadyFinished,
        "duplicate outcome {again:?}"
    );
    let late_not_now = ok(
        s.record_report("D1", &report("A", ReportStatus::NotNow, b"nn"), 2102)
            .await,
        "report",
    )?;
    check!(
        late_not_now == ReportOutcome::AlreadyFinished,
        "late NotNow outcome {late_not_now:?}"
    );
    let cmds = ok(s.commands("D1", 10).await, "commands")?;
    check!(
        cmds[0].result.as_deref() == Some(&b"first"[..]),
        "duplicate overwrote the first result"
    );
    check!(
        cmds[0].status == CommandStatus::Acknowledged,
        "status changed by a duplicate"
    );
    let unknown = ok(
        s.record_report(
            "D1",
            &report("nope", ReportStatus::Acknowledged, b"x"),
            2103,
        )
        .await,
        "report",
    )?;
    check!(
        unknown == ReportOutcome::Unknown,
        "unknown UUID outcome {unknown:?}"
    );
    Ok(())
}

async fn cannot_answer_others(s: Arc<dyn Store>) -> CaseResult {
    enrolled(&*s, "D1").await?;
    enrolled(&*s, "D2").await?;
    ok(s.enqueue("D1", &command("A"), 2000).await, "enqueue")?;
    check!(
        ok(s.next_command("D2", &[], 2001).await, "next")?.is_none(),
        "D2 received D1's command"
    );
    let out = ok(
        s.record_report("D2", &report("A", ReportStatus::Acknowledged, b"x"), 2002)
            .await,
        "report",
    )?;
    check!(
        out == ReportOutcome::Unknown,
        "D2 answered D1's command: {out:?}"
    );
    let cmds = ok(s.commands("D1", 10).await, "commands")?;
    check!(
        cmds[0].status == CommandStatus::Queued,
        "D1's command changed by D2"
    );
    check!(
        ok(s.commands("D2", 10).await, "commands")?.is_empty(),
        "D2 lists D1's command"
    );
    Ok(())
}

async fn reauthenticate_cancels_queue(s: Arc<dyn Store>) -> CaseResult {
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

async fn check_out_keeps_history(s: Arc<dyn Store>) -> CaseResult {
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

async fn enqueue_rejects(s: Arc<dyn Store>) -> CaseResult {
    match s.enqueue("ghost", &command("A"), 1).await {
        Err(StoreError::NotFound(m)) => check!(m.contains("ghost"), "message {m}"),
        other => return Err(format!("enqueue for unknown device: {other:?}")),
    }
    enrolled(&*s, "D1").await?;
    ok(s.enqueue("D1", &command("A"), 2).await, "enqueue")?;
    match s.enqueue("D1", &command("A"), 3).await {
        Err(StoreError::Conflict(m)) => check!(m.contains("already in use"), "message {m}"),
        other => return Err(format!("reused UUID: {other:?}")),
    }
    Ok(())
}

async fn find_and_list(s: Arc<dyn Store>) -> CaseResult {
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

async fn last_seen_batches(s: Arc<dyn Store>) -> CaseResult {
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
    Ok(())
}

async fn bootstrap_token_round_trips(s: Arc<dyn Store>) -> CaseResult {
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

async fn migrations_idempotent(s: Arc<dyn Store>) -> CaseResult {
    enrolled(&*s, "D1").await?;
    ok(s.migrate().await, "second migrate")?;
    check!(
        ok(s.enrollment("D1").await, "enrollment")?.is_some(),
        "data lost by migrate"
    );
    Ok(())
}

async fn concurrent_reports(s: Arc<dyn Store>) -> CaseResult {
    const DEVICES: usize = 20;
    const COMMANDS: usize = 5;
    for d in 0..DEVICES {
        enrolled(&*s, &format!("D{d}")).await?;
        for c in 0..COMMANDS {
            ok(
                s.enqueue(&format!("D{d}"), &command(&format!("D{d}-C{c}")), 2000)
                    .await,
                "enqueue",
            )?;
        }
    }
    let mut tasks = Vec::new();
    for d in 0..DEVICES {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("D{d}");
            let mut answered = 0;
            while let Some(c) = s
                .next_command(&id, &[], 3000)
                .await
                .map_err(|e| e.to_string())?
            {
                let out = s
                    .record_report(
                        &id,
                        &report(&c.uuid, ReportStatus::Acknowledged, c.uuid.as_bytes()),
                        3001,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                if out != ReportOutcome::Dequeued {
                    return Err(format!("{} outcome {out:?}", c.uuid));
                }
                answered += 1;
            }
            Ok::<usize, String>(answered)
        }));
    }
    for t in tasks {
        let answered = t.await.map_err(|e| e.to_string())??;
        check!(
            answered == COMMANDS,
            "a device answered {answered} of {COMMANDS}"
        );
    }
    check!(
        ok(s.queue_depth().await, "depth")? == 0,
        "commands left in the queue"
    );
    Ok(())
}

fn accepted(device: &str, at: i64, claimed_until: i64, attempts: i64, next: i64) -> PushOutcome {
    PushOutcome {
        device_id: device.into(),
        at,
        accepted: true,
        result: Some("accepted".into()),
        token_invalid: false,
        schedule: Some(PushSchedule {
            claimed_until,
            next_push_at: Some(next),
            attempts,
            failures: 0,
            push_if_queued: false,
        }),
    }
}

async fn push_status_of(s: &dyn Store, id: &str) -> Result<PushStatus, String> {
    ok(s.push_status(id).await, "push_status")?.ok_or_else(|| format!("no push state for {id}"))
}

async fn push_requests_coalesce(s: Arc<dyn Store>) -> CaseResult {
    enrolled(&*s, "D1").await?;
    ok(s.enqueue("D1", &command("C1"), 2000).await, "enqueue")?;
    check!(
        matches!(
            s.request_push("nobody", 1).await,
            Err(StoreError::NotFound(_))
        ),
        "request_push for an unknown device must be NotFound"
    );
    ok(s.request_push("D1", 5000).await, "request")?;
    ok(s.request_push("D1", 6000).await, "request")?;
    check!(
        push_status_of(&*s, "D1").await?.next_push_at == Some(5000),
        "a later request moved the pending push"
    );
    ok(s.request_push("D1", 4000).await, "request")?;
    check!(
        push_status_of(&*s, "D1").await?.next_push_at == Some(4000),
        "an earlier request must win while not in backoff"
    );

    let due = ok(s.claim_due_pushes(4000, 100_000, 10).await, "claim")?;
    check!(due.len() == 1, "expected one due push, got {}", due.len());
    check!(
        due[0].has_queued_commands,
        "the device has a queued command"
    );
    check!(
        due[0].has_commands_queued_since_seen,
        "the command is newer than the device's last contact"
    );
    let creds = due[0]
        .credentials
        .clone()
        .ok_or("an enrolled device has credentials")?;
    check!(
        creds.token == vec![1, 2, 3, 4] && creds.push_magic == "magic-D1",
        "credentials {creds:?}"
    );
    ok(
        s.record_push(&accepted("D1", 4100, 100_000, 1, 64_100))
            .await,
        "record",
    )?;
    let status = push_status_of(&*s, "D1").await?;
    check!(
        status.attempts == 1 && status.last_push_at == Some(4100),
        "after a push: {status:?}"
    );
    check!(
        status.next_push_at == Some(64_100) && status.last_result.as_deref() == Some("accepted"),
        "{status:?}"
    );

    // Silent since the push: new commands do not pull the backoff forward.
    ok(s.request_push("D1", 5000).await, "request")?;
    check!(
        push_status_of(&*s, "D1").await?.next_push_at == Some(64_100),
        "backoff must be kept for a silent device"
    );

    // The device connects but defers its command (NotNow): the backoff goes on.
    let c1 =
        ok(s.next_command("D1", &[], 7000).await, "next_command")?.ok_or("C1 not handed out")?;
    ok(
        s.record_report("D1", &report(&c1.uuid, ReportStatus::NotNow, b"x"), 7001)
            .await,
        "report",
    )?;
    ok(
        s.next_command("D1", std::slice::from_ref(&c1.uuid), 7002)
            .await,
        "next_command",
    )?;
    check!(
        push_status_of(&*s, "D1").await?.attempts == 1,
        "a device that only deferred its commands must keep its backoff"
    );
    // The device drains its queue: its backoff starts over and a new request is honoured.
    ok(s.next_command("D1", &[], 7100).await, "next_command")?;
    ok(
        s.record_report(
            "D1",
            &report(&c1.uuid, ReportStatus::Acknowledged, b"x"),
            7101,
        )
        .await,
        "report",
    )?;
    check!(
        ok(s.next_command("D1", &[], 7102).await, "next_command")?.is_none(),
        "queue should be empty"
    );
    check!(
        push_status_of(&*s, "D1").await?.attempts == 0,
        "draining the queue must reset attempts"
    );
    ok(s.request_push("D1", 8000).await, "request")?;
    check!(
        push_status_of(&*s, "D1").await?.next_push_at == Some(8000),
        "a device that answered gets the new push"
    );
    Ok(())
}

async fn due_pushes_are_leased(s: Arc<dyn Store>) -> CaseResult {
    enrolled(&*s, "D1").await?;
    enrolled(&*s, "D2").await?;
    ok(s.request_push("D1", 1000).await, "request")?;
    ok(s.request_push("D2", 9000).await, "request")?;
    let first = ok(s.claim_due_pushes(2000, 50_000, 10).await, "claim")?;
    check!(
        first.len() == 1 && first[0].device_id == "D1",
        "only D1 is due: {first:?}"
    );
    check!(first[0].claimed_until == 50_000, "lease not reported");
    let again = ok(s.claim_due_pushes(2000, 50_000, 10).await, "claim")?;
    check!(
        again.is_empty(),
        "a claimed push must not be claimed twice: {again:?}"
    );
    // Nothing recorded (a crash): due again when the lease ends, together with D2.
    let after = ok(s.claim_due_pushes(50_000, 90_000, 10).await, "claim")?;
    check!(after.len() == 2, "after the lease both are due: {after:?}");
    // A wake requested while a push is out is covered by it: one push, then the backoff.
    ok(s.request_push("D2", 60_000).await, "request")?;
    check!(
        push_status_of(&*s, "D2").await?.next_push_at == Some(90_000),
        "a push being sent must not be repeated for a request it covers"
    );
    ok(
        s.record_push(&accepted("D2", 55_000, 90_000, 1, 3_655_000))
            .await,
        "record",
    )?;
    check!(
        push_status_of(&*s, "D2").await?.next_push_at == Some(3_655_000),
        "backoff not set after the push"
    );
    // Batches respect the limit.
    ok(s.request_push("D1", 1).await, "request")?;
    ok(s.request_push("D2", 1).await, "request")?;
    let limited = ok(s.claim_due_pushes(100_000, 200_000, 1).await, "claim")?;
    check!(limited.len() == 1, "limit ignored: {}", limited.len());
    Ok(())
}

/// A retry claimed just before new work is queued finds nothing to push; the new work's wake
/// was covered by that claim, so recording the empty claim must not drop it.
async fn work_queued_during_an_idle_claim(s: Arc<dyn Store>) -> CaseResult {
    enrolled(&*s, "D1").await?;
    ok(s.request_push("D1", 1000).await, "request")?;
    let due = ok(s.claim_due_pushes(2000, 60_000, 10).await, "claim")?;
    check!(
        due.len() == 1 && !due[0].has_queued_commands,
        "claimed with nothing queued: {due:?}"
    );
    // New work arrives while the claim is out; its wake is covered by the claim.
    ok(s.enqueue("D1", &command("C1"), 2100).await, "enqueue")?;
    ok(s.request_push("D1", 3100).await, "request")?;
    let idle = PushSchedule {
        claimed_until: 60_000,
        next_push_at: None,
        attempts: 0,
        failures: 0,
        push_if_queued: true,
    };
    let nothing_sent = PushOutcome {
        device_id: "D1".into(),
        at: 2200,
        accepted: false,
        result: None,
        token_invalid: false,
        schedule: Some(idle),
    };
    ok(s.record_push(&nothing_sent).await, "record")?;
    let status = push_status_of(&*s, "D1").await?;
    check!(
        status.next_push_at == Some(2200),
        "the queued command lost its push: {status:?}"
    );
    let again = ok(s.claim_due_pushes(2300, 90_000, 10).await, "claim")?;
    check!(
        again.len() == 1 && again[0].has_queued_commands,
        "the device must be claimed again with its work: {again:?}"
    );
    Ok(())
}

async fn invalid_token_until_token_update(s: Arc<dyn Store>) -> CaseResult {
    enrolled(&*s, "D1").await?;
    ok(s.enqueue("D1", &command("C1"), 2000).await, "enqueue")?;
    ok(s.request_push("D1", 2000).await, "request")?;
    let due = ok(s.claim_due_pushes(2000, 9000, 10).await, "claim")?;
    check!(due.len() == 1, "due");
    ok(
        s.record_push(&PushOutcome {
            device_id: "D1".into(),
            at: 2100,
            accepted: false,
            result: Some("410 Unregistered".into()),
            token_invalid: true,
            schedule: Some(PushSchedule {
                claimed_until: 9000,
                next_push_at: None,
                attempts: 0,
                failures: 0,
                push_if_queued: false,
            }),
        })
        .await,
        "record",
    )?;
    let status = push_status_of(&*s, "D1").await?;
    check!(
        status.token_invalid_at == Some(2100) && status.next_push_at.is_none(),
        "{status:?}"
    );
    ok(s.request_push("D1", 3000).await, "request")?;
    let due = ok(s.claim_due_pushes(3000, 9000, 10).await, "claim")?;
    check!(
        due.len() == 1 && due[0].credentials.is_none(),
        "an invalid token must not be handed out: {due:?}"
    );
    ok(
        s.token_update(&token("D1", None), 4000).await,
        "token_update",
    )?;
    let status = push_status_of(&*s, "D1").await?;
    check!(
        status.token_invalid_at.is_none(),
        "TokenUpdate must clear the invalid mark"
    );
    check!(
        status.next_push_at == Some(4000) || status.next_push_at == Some(9000),
        "queued commands need a push after TokenUpdate: {status:?}"
    );
    Ok(())
}

async fn unpushable_devices(s: Arc<dyn Store>) -> CaseResult {
    ok(s.authenticate(&facts("D1"), 1000).await, "authenticate")?;
    ok(s.enqueue("D1", &command("C1"), 1100).await, "enqueue")?;
    ok(s.request_push("D1", 1200).await, "request")?;
    let due = ok(s.claim_due_pushes(1200, 5000, 10).await, "claim")?;
    check!(
        due.len() == 1 && due[0].credentials.is_none(),
        "no push before TokenUpdate: {due:?}"
    );
    check!(due[0].has_queued_commands, "queued command not seen");
    Ok(())
}

async fn queued_commands_get_push(s: Arc<dyn Store>) -> CaseResult {
    enrolled(&*s, "D1").await?;
    enrolled(&*s, "D2").await?;
    ok(s.enqueue("D1", &command("C1"), 2000).await, "enqueue")?;
    let scheduled = ok(s.request_pushes_for_queued(3000).await, "recover")?;
    check!(
        scheduled == 1,
        "expected 1 device scheduled, got {scheduled}"
    );
    check!(
        push_status_of(&*s, "D1").await?.next_push_at == Some(3000),
        "D1 not scheduled"
    );
    check!(
        ok(s.push_status("D2").await, "status")?.is_none(),
        "D2 has nothing queued"
    );
    let topics = ok(s.enrolled_topics().await, "topics")?;
    check!(
        topics == vec![("com.apple.mgmt.External.test".to_string(), 2)],
        "topics {topics:?}"
    );
    Ok(())
}

/// The device answers a push (and drains its queue) before APNs' acknowledgement is recorded:
/// no backoff may be left behind, and work queued meanwhile gets its own push promptly.
async fn push_answered_before_acknowledged(s: Arc<dyn Store>) -> CaseResult {
    enrolled(&*s, "D1").await?;
    ok(s.enqueue("D1", &command("A"), 1000).await, "enqueue")?;
    ok(s.request_push("D1", 1000).await, "request")?;
    let claimed = ok(s.claim_due_pushes(1000, 61_000, 10).await, "claim")?;
    check!(claimed.len() == 1, "claimed {}", claimed.len());
    // The device wakes, answers A and drains its queue while the push is still "out".
    let a = ok(s.next_command("D1", &[], 1100).await, "next")?;
    check!(a.is_some(), "A not delivered");
    ok(
        s.record_report("D1", &report("A", ReportStatus::Acknowledged, b"ok"), 1200)
            .await,
        "report",
    )?;
    check!(
        ok(s.next_command("D1", &[], 1300).await, "next")?.is_none(),
        "queue not drained"
    );
    // Then APNs' acknowledgement is recorded with the usual backoff.
    ok(
        s.record_push(&accepted("D1", 1400, 61_000, 1, 61_400))
            .await,
        "record",
    )?;
    let status = push_status_of(&*s, "D1").await?;
    check!(
        status.attempts == 0 && status.next_push_at.is_none(),
        "an answered push left a backoff: {status:?}"
    );
    // New work is pushed after the coalescing delay, not after a backoff.
    ok(s.enqueue("D1", &command("B"), 2000).await, "enqueue")?;
    ok(s.request_push("D1", 3000).await, "request")?;
    let status = push_status_of(&*s, "D1").await?;
    check!(
        status.next_push_at == Some(3000),
        "new work waits for {:?}",
        status.next_push_at
    );
    Ok(())
}

/// Exchanges arriving together are written together (group commit); each device still gets
/// exactly its own commands, in order, and every result is kept with its command.
async fn concurrent_exchanges(s: Arc<dyn Store>) -> CaseResult {
    const DEVICES: usize = 40;
    const COMMANDS: usize = 3;
    for d in 0..DEVICES {
        enrolled(&*s, &format!("D{d}")).await?;
        for c in 0..COMMANDS {
            ok(
                s.enqueue(&format!("D{d}"), &command(&format!("D{d}-C{c}")), 2000)
                    .await,
                "enqueue",
            )?;
        }
    }
    let mut tasks = Vec::new();
    for d in 0..DEVICES {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let id = format!("D{d}");
            let mut handed = Vec::new();
            let (_, mut next) = s
                .exchange(&id, None, &[], 3000)
                .await
                .map_err(|e| e.to_string())?;
            while let Some(c) = next {
                handed.push(c.uuid.clone());
                let r = report(&c.uuid, ReportStatus::Acknowledged, c.uuid.as_bytes());
                let (outcome, following) = s
                    .exchange(&id, Some(&r), &[], 3001)
                    .await
                    .map_err(|e| e.to_string())?;
                if outcome != Some(ReportOutcome::Dequeued) {
                    return Err(format!("{} outcome {outcome:?}", c.uuid));
                }
                next = following;
            }
            Ok::<(String, Vec<String>), String>((id, handed))
        }));
    }
    for t in tasks {
        let (id, handed) = t.await.map_err(|e| e.to_string())??;
        let expected: Vec<String> = (0..COMMANDS).map(|c| format!("{id}-C{c}")).collect();
        check!(handed == expected, "{id} was handed {handed:?}");
        for c in ok(s.commands(&id, 10).await, "commands")? {
            check!(
                c.status == CommandStatus::Acknowledged
                    && c.result.as_deref() == Some(c.uuid.as_bytes()),
                "{id}: {c:?}"
            );
        }
    }
    check!(
        ok(s.queue_depth().await, "depth")? == 0,
        "commands left in the queue"
    );
    Ok(())
}

/// Exchanges arriving together are written together (multi-row statements): each still gets
/// its own outcome and its own next command, a device cannot finish another's command in the
/// same batch, and a device's two exchanges in one batch apply in order.
async fn exchanges_written_together(s: Arc<dyn Store>) -> CaseResult {
    for d in ["D1", "D2", "D3"] {
        enrolled(&*s, d).await?;
        for c in ["A", "B"] {
            ok(
                s.enqueue(d, &command(&format!("{d}-{c}")), 2000).await,
                "enqueue",
            )?;
        }
    }
    ok(s.next_command("D1", &[], 2500).await, "D1 fetches")?;
    ok(s.next_command("D2", &[], 2500).await, "D2 fetches")?;
    let d1 = report("D1-A", ReportStatus::Acknowledged, b"d1");
    let forged = report("D1-B", ReportStatus::Acknowledged, b"d2 forged");
    let d2 = report("D2-A", ReportStatus::Error, b"d2 error");
    let d3 = report("nope", ReportStatus::Acknowledged, b"d3");
    let (a, b, c, d, e) = tokio::join!(
        s.exchange("D1", Some(&d1), &[], 3000),
        s.exchange("D2", Some(&forged), &[], 3000),
        s.exchange("D2", Some(&d2), &[], 3001),
        s.exchange("D3", Some(&d3), &[], 3000),
        s.exchange("D3", None, &[], 3002),
    );
    let outcome = |r: StoreResult<(Option<ReportOutcome>, Option<QueuedCommand>)>| {
        r.map(|(o, n)| (o, n.map(|c| c.uuid)))
            .map_err(|e| e.to_string())
    };
    let a = outcome(a)?;
    check!(
        a == (Some(ReportOutcome::Dequeued), Some("D1-B".into())),
        "D1: {a:?}"
    );
    let b = outcome(b)?;
    check!(
        b.0 == Some(ReportOutcome::Unknown),
        "D2 answering D1's command: {b:?}"
    );
    let c = outcome(c)?;
    check!(
        c == (Some(ReportOutcome::Dequeued), Some("D2-B".into())),
        "D2: {c:?}"
    );
    let d = outcome(d)?;
    check!(d.0 == Some(ReportOutcome::Unknown), "D3 unknown: {d:?}");
    let e = outcome(e)?;
    check!(e.1.is_some(), "D3 idle gets a command: {e:?}");
    let d1_commands = ok(s.commands("D1", 10).await, "D1 commands")?;
    let b_cmd = d1_commands.iter().find(|c| c.uuid == "D1-B");
    check!(
        b_cmd.is_some_and(|c| c.status == CommandStatus::Queued && c.result.is_none()),
        "D1-B must stay D1's and queued: {b_cmd:?}"
    );
    let d2_commands = ok(s.commands("D2", 10).await, "D2 commands")?;
    let a_cmd = d2_commands.iter().find(|c| c.uuid == "D2-A");
    check!(
        a_cmd.is_some_and(|c| c.status == CommandStatus::Error
            && c.result.as_deref() == Some(b"d2 error".as_slice())),
        "D2-A: {a_cmd:?}"
    );
    Ok(())
}
