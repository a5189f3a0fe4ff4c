//! Push scheduling cases: requests coalesce, claims are leased, backoff and invalid tokens,
//! and pushes for work queued before a restart.

use crate::support::*;
use pomona::protocol::ReportStatus;
use pomona::store::*;
use std::sync::Arc;

pub(crate) async fn push_requests_and_outcomes_apply_in_batches(s: Arc<dyn Store>) -> CaseResult {
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

pub(crate) async fn push_requests_coalesce_and_a_silent_device_keeps_its_backoff(
    s: Arc<dyn Store>,
) -> CaseResult {
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

pub(crate) async fn due_pushes_are_claimed_once_and_come_back_after_the_lease(
    s: Arc<dyn Store>,
) -> CaseResult {
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
pub(crate) async fn work_queued_while_an_idle_claim_is_out_still_gets_its_push(
    s: Arc<dyn Store>,
) -> CaseResult {
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

pub(crate) async fn an_invalid_token_stops_pushes_until_the_next_token_update(
    s: Arc<dyn Store>,
) -> CaseResult {
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

pub(crate) async fn devices_without_token_update_are_claimed_without_credentials(
    s: Arc<dyn Store>,
) -> CaseResult {
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

pub(crate) async fn queued_commands_get_a_push_after_restart(s: Arc<dyn Store>) -> CaseResult {
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
pub(crate) async fn a_push_answered_before_apns_acknowledged_it_leaves_no_backoff(
    s: Arc<dyn Store>,
) -> CaseResult {
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
