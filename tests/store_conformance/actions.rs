//! Device action cases: an action runs once per device, a waiting row is replaced when it can
//! run, answers finish rows with their result, and an acknowledged erase wipes the enrollment.

use crate::support::*;
use pomona::protocol::ReportStatus;
use pomona::store::actions::{ActionFinish, ActionStart, ActionState};
use pomona::store::*;
use std::sync::Arc;

fn start(id: &str, state: ActionState, command_uuid: Option<&str>) -> ActionStart {
    ActionStart {
        action_id: id.to_string(),
        action: "Lock".into(),
        source: "api".into(),
        state,
        detail: (state == ActionState::Waiting).then(|| "waiting for IsSupervised".into()),
        command: command_uuid.map(command),
    }
}

pub(crate) async fn device_actions_run_once_and_finish_with_their_result(
    s: Arc<dyn Store>,
) -> CaseResult {
    enrolled(&*s, "D1").await?;
    let queued = ok(
        s.start_actions("D1", &[start("A", ActionState::Queued, Some("CA"))], 2000)
            .await,
        "start A",
    )?;
    check!(queued == 1, "A queued {queued} commands, expected 1");
    let again = ok(
        s.start_actions("D1", &[start("A", ActionState::Queued, Some("CA2"))], 2001)
            .await,
        "start A again",
    )?;
    check!(
        again == 0,
        "a started action must not run twice (queued {again})"
    );
    // A waiting row is replaced once the action can run.
    ok(
        s.start_actions("D1", &[start("B", ActionState::Waiting, None)], 2002)
            .await,
        "wait B",
    )?;
    let open = ok(s.devices_with_open_actions().await, "open")?;
    check!(open == ["D1"], "open devices {open:?}");
    let queued = ok(
        s.start_actions("D1", &[start("B", ActionState::Queued, Some("CB"))], 2003)
            .await,
        "start B",
    )?;
    check!(queued == 1, "B queued {queued}");
    let rows = ok(s.device_actions("D1").await, "rows")?;
    check!(rows.len() == 2, "rows {rows:?}");
    check!(
        rows.iter()
            .all(|r| r.state == ActionState::Queued && !r.sent),
        "both queued, not sent: {rows:?}"
    );

    // The device fetches A and acknowledges it; B is fetched, not answered.
    let first = ok(s.next_command("D1", &[], 2100).await, "next")?.ok_or("A not queued")?;
    check!(first.uuid == "CA", "A's command first, got {}", first.uuid);
    ok(
        s.record_report(
            "D1",
            &report("CA", ReportStatus::Acknowledged, b"<ack/>"),
            2101,
        )
        .await,
        "report",
    )?;
    ok(s.next_command("D1", &[], 2102).await, "next B")?;
    let rows = ok(s.device_actions("D1").await, "rows")?;
    let a = rows
        .iter()
        .find(|r| r.action_id == "A")
        .ok_or("A missing")?;
    check!(
        a.command_status == Some(CommandStatus::Acknowledged)
            && a.command_result.as_deref() == Some(&b"<ack/>"[..]),
        "A's answer must be readable: {a:?}"
    );
    ok(
        s.finish_actions(
            "D1",
            &[ActionFinish {
                action_id: "A".into(),
                state: ActionState::Acknowledged,
                detail: None,
                result: Some(r#"{"message_result":"Success"}"#.into()),
                redacted_command: Some(b"<redacted/>".to_vec()),
            }],
            2200,
        )
        .await,
        "finish",
    )?;
    let counts = ok(s.action_counts(&["A".into(), "B".into()]).await, "counts")?;
    let of = |id: &str| counts.iter().find(|c| c.action_id == id).cloned();
    let a = of("A").ok_or("no counts for A")?;
    let b = of("B").ok_or("no counts for B")?;
    check!(a.acknowledged == 1 && a.targeted() == 1, "A counts {a:?}");
    check!(b.sent == 1 && b.targeted() == 1, "B counts {b:?}");
    let records = ok(s.action_records("A", 10).await, "records")?;
    check!(
        records.len() == 1
            && records[0].result.as_deref() == Some(r#"{"message_result":"Success"}"#),
        "A's result {records:?}"
    );
    // Finishing again changes nothing (only queued rows finish).
    ok(
        s.finish_actions(
            "D1",
            &[ActionFinish {
                action_id: "A".into(),
                state: ActionState::Failed,
                detail: Some("late".into()),
                result: None,
                redacted_command: None,
            }],
            2300,
        )
        .await,
        "finish again",
    )?;
    let rows = ok(s.device_actions("D1").await, "rows")?;
    check!(
        rows.iter()
            .any(|r| r.action_id == "A" && r.state == ActionState::Acknowledged),
        "a finished action stays finished: {rows:?}"
    );
    let recent = ok(s.recent_actions(10).await, "recent")?;
    check!(recent.len() == 2, "recent {recent:?}");
    Ok(())
}

pub(crate) async fn device_actions_skip_unknown_and_checked_out_devices(
    s: Arc<dyn Store>,
) -> CaseResult {
    let queued = ok(
        s.start_actions("NOPE", &[start("A", ActionState::Queued, Some("C1"))], 2000)
            .await,
        "unknown device",
    )?;
    check!(queued == 0, "queued {queued} for an unknown device");
    enrolled(&*s, "D2").await?;
    ok(s.check_out("D2", 2100).await, "check out")?;
    let queued = ok(
        s.start_actions("D2", &[start("A", ActionState::Queued, Some("C2"))], 2200)
            .await,
        "checked-out device",
    )?;
    check!(queued == 0, "queued {queued} for a checked-out device");
    check!(
        ok(s.device_actions("D2").await, "rows")?.is_empty(),
        "no rows for a checked-out device"
    );
    Ok(())
}

pub(crate) async fn an_acknowledged_erase_wipes_the_enrollment(s: Arc<dyn Store>) -> CaseResult {
    ok(s.authenticate(&facts("D3"), 1000).await, "authenticate")?;
    ok(
        s.token_update(&token("D3", Some(b"unlock")), 1001).await,
        "token update",
    )?;
    check!(
        ok(s.unlock_token("D3").await, "unlock token")?.as_deref() == Some(&b"unlock"[..]),
        "the unlock token is stored"
    );
    ok(s.enqueue("D3", &command("LATER"), 1100).await, "enqueue")?;
    ok(s.mark_wiped("D3", 1200).await, "wipe")?;
    let e = ok(s.enrollment("D3").await, "enrollment")?.ok_or("enrollment missing")?;
    check!(
        e.state == EnrollmentState::CheckedOut && e.wiped_at == Some(1200),
        "wiped enrollment {e:?}"
    );
    check!(
        ok(s.next_command("D3", &[], 1300).await, "next")?.is_none(),
        "a wiped device's queue is cancelled"
    );
    Ok(())
}
