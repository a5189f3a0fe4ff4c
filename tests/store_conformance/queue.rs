//! Command queue cases: first in first out, reports and their statuses, one device never
//! answering another's command, and exchanges written together or concurrently.

use crate::support::*;
use pomona::protocol::ReportStatus;
use pomona::store::*;
use std::sync::Arc;

pub(crate) async fn an_exchange_records_the_report_and_hands_out_the_next_command(
    s: Arc<dyn Store>,
) -> CaseResult {
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

pub(crate) async fn queue_is_first_in_first_out_and_skips_what_is_asked(
    s: Arc<dyn Store>,
) -> CaseResult {
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

pub(crate) async fn terminal_report_stores_raw_result_and_dequeues(
    s: Arc<dyn Store>,
) -> CaseResult {
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

pub(crate) async fn not_now_keeps_the_command_queued(s: Arc<dyn Store>) -> CaseResult {
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

pub(crate) async fn duplicate_reports_are_harmless(s: Arc<dyn Store>) -> CaseResult {
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

pub(crate) async fn a_device_cannot_answer_another_devices_command(
    s: Arc<dyn Store>,
) -> CaseResult {
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

pub(crate) async fn enqueue_rejects_unknown_devices_and_reused_uuids(
    s: Arc<dyn Store>,
) -> CaseResult {
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

pub(crate) async fn concurrent_reports_from_many_devices_lose_nothing(
    s: Arc<dyn Store>,
) -> CaseResult {
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

/// Exchanges arriving together are written together (group commit); each device still gets
/// exactly its own commands, in order, and every result is kept with its command.
pub(crate) async fn concurrent_exchanges_of_many_devices_each_get_their_own_commands(
    s: Arc<dyn Store>,
) -> CaseResult {
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
pub(crate) async fn exchanges_written_together_keep_each_devices_answers_apart(
    s: Arc<dyn Store>,
) -> CaseResult {
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

/// An envelope whose profile many commands share, as the reconciler queues InstallProfile.
pub(crate) fn sharing(uuid: &str, profile: &str) -> NewCommand {
    let head = format!(
        "<plist><dict><key>CommandUUID</key><string>{uuid}</string><key>Payload</key><data>"
    );
    let command = format!("{head}{profile}</data></dict></plist>").into_bytes();
    NewCommand {
        uuid: uuid.to_string(),
        request_type: "InstallProfile".into(),
        shared: Some(head.len()..head.len() + profile.len()),
        command,
    }
}

pub(crate) async fn a_shared_part_is_handed_out_byte_for_byte_on_every_path(
    s: Arc<dyn Store>,
) -> CaseResult {
    let mut queued = std::collections::HashMap::new();
    for d in ["D1", "D2", "D3"] {
        enrolled(&*s, d).await?;
        for (n, profile) in ["UFJPRklMRS1B", "UFJPRklMRS1C", "UFJPRklMRS1B"]
            .iter()
            .enumerate()
        {
            let c = sharing(&format!("{d}-{n}"), profile);
            ok(s.enqueue(d, &c, 2000).await, "enqueue")?;
            queued.insert(c.uuid.clone(), c.command);
        }
    }
    let mut handed = Vec::new();
    // One by one, through an exchange, and through exchanges written together.
    handed.extend(ok(s.next_command("D1", &[], 2500).await, "next")?);
    let (_, next) = ok(s.exchange("D2", None, &[], 2501).await, "exchange")?;
    handed.extend(next);
    let d1 = report("D1-0", ReportStatus::Acknowledged, b"ok");
    let d2 = report("D2-0", ReportStatus::Acknowledged, b"ok");
    let (a, b, c) = tokio::join!(
        s.exchange("D1", Some(&d1), &[], 3000),
        s.exchange("D3", None, &[], 3000),
        s.exchange("D2", Some(&d2), &[], 3000),
    );
    for r in [a, b, c] {
        handed.extend(ok(r, "together")?.1);
    }
    check!(handed.len() == 5, "five commands handed out: {handed:?}");
    for c in &handed {
        let want = queued.get(&c.uuid).ok_or(format!("unknown {}", c.uuid))?;
        check!(
            &c.command == want,
            "{} handed out as {:?}, queued as {:?}",
            c.uuid,
            String::from_utf8_lossy(&c.command),
            String::from_utf8_lossy(want)
        );
    }
    Ok(())
}

pub(crate) async fn finished_commands_older_than_the_retention_go_and_what_is_read_stays(
    s: Arc<dyn Store>,
) -> CaseResult {
    use pomona::store::actions::{ActionStart, ActionState};
    use pomona::vocab::profiles::Intent;
    use reconcile::{DevicePlan, PlanChange};
    enrolled(&*s, "D1").await?;
    enrolled(&*s, "D2").await?;
    fn ack(uuid: &str) -> ReportRecord<'_> {
        report(uuid, ReportStatus::Acknowledged, b"<plist>done</plist>")
    }
    // Old (created at 1000): done, still queued, a device action's, the reconciler's with its
    // result not read yet, and the reconciler's with its result read.
    ok(s.enqueue("D1", &command("OLD-DONE"), 1000).await, "enqueue")?;
    ok(
        s.enqueue("D2", &command("OLD-QUEUED"), 1000).await,
        "enqueue",
    )?;
    let action = ActionStart {
        action_id: "LOCK".into(),
        action: "Lock".into(),
        source: "api".into(),
        state: ActionState::Queued,
        detail: None,
        command: Some(command("OLD-ACTION")),
    };
    ok(s.start_actions("D1", &[action], 1000).await, "action")?;
    let plan = |uuid: &str, processed: Vec<String>, now: i64| DevicePlan {
        device_id: "D1".into(),
        change: PlanChange {
            processed,
            enqueue: vec![(command(uuid), Intent::ProfileList)],
            ..PlanChange::default()
        },
        now,
    };
    ok(
        s.apply_plans(&[plan("OLD-OPEN", vec![], 1000)]).await,
        "plan",
    )?;
    ok(
        s.apply_plans(&[plan("OLD-FOLDED", vec![], 1000)]).await,
        "plan",
    )?;
    for uuid in ["OLD-DONE", "OLD-ACTION", "OLD-OPEN", "OLD-FOLDED"] {
        ok(s.exchange("D1", Some(&ack(uuid)), &[], 1500).await, "ack")?;
    }
    ok(
        s.apply_plans(&[plan("NEW-PLAN", vec!["OLD-FOLDED".into()], 5000)])
            .await,
        "fold",
    )?;
    ok(s.enqueue("D1", &command("NEW-DONE"), 5000).await, "enqueue")?;
    ok(
        s.exchange("D1", Some(&ack("NEW-DONE")), &[], 5001).await,
        "ack",
    )?;
    // Walk with a cutoff of 3000, two commands at a time.
    let (mut after, mut deleted, mut windows) = (0, 0, 0);
    loop {
        let step = ok(s.prune_commands(3000, after, 2).await, "prune")?;
        check!(step.after_seq >= after, "the walk went back: {step:?}");
        (after, deleted, windows) = (step.after_seq, deleted + step.deleted, windows + 1);
        if step.done {
            break;
        }
        check!(windows < 20, "the walk does not end");
    }
    check!(
        deleted == 2,
        "deleted {deleted}, want OLD-DONE and OLD-FOLDED"
    );
    let mut left: Vec<String> = ok(s.commands("D1", 20).await, "commands")?
        .into_iter()
        .chain(ok(s.commands("D2", 20).await, "commands")?)
        .map(|c| c.uuid)
        .collect();
    left.sort();
    check!(
        left == [
            "NEW-DONE",
            "NEW-PLAN",
            "OLD-ACTION",
            "OLD-OPEN",
            "OLD-QUEUED"
        ],
        "kept {left:?}"
    );
    let actions = ok(s.device_actions("D1").await, "actions")?;
    check!(
        actions.len() == 1
            && actions[0].command_result.as_deref() == Some(&b"<plist>done</plist>"[..]),
        "the action keeps its command's result: {actions:?}"
    );
    // The reconciler still reads the result it has not folded in.
    let state = ok(s.reconcile_state("D1").await, "state")?;
    check!(
        state
            .open
            .iter()
            .any(|o| o.uuid == "OLD-OPEN" && o.result.is_some()),
        "open {:?}",
        state.open
    );
    // Nothing is left to delete, and a second walk changes nothing.
    let step = ok(s.prune_commands(3000, 0, 100).await, "again")?;
    check!(step.deleted == 0 && step.done, "second walk {step:?}");
    Ok(())
}

/// A stored part goes once no command refers to it and it was not queued within the grace;
/// queuing it again marks it used, and a part queued after it went is stored anew and handed
/// out whole.
pub(crate) async fn a_part_no_command_refers_to_goes_and_one_queued_again_stays(
    s: Arc<dyn Store>,
) -> CaseResult {
    enrolled(&*s, "D1").await?;
    let profile = "UFJPRklMRS1Q";
    let ack = |uuid| report(uuid, ReportStatus::Acknowledged, b"ok");
    async fn prune_all(s: &dyn Store, before: i64) -> Result<u64, String> {
        let (mut after, mut deleted) = (0, 0);
        loop {
            let step = ok(s.prune_commands(before, after, 100).await, "prune")?;
            (after, deleted) = (step.after_seq, deleted + step.deleted);
            if step.done {
                return Ok(deleted);
            }
        }
    }
    ok(
        s.enqueue("D1", &sharing("P-1", profile), 1000).await,
        "enqueue",
    )?;
    check!(
        ok(s.prune_parts(1_000_000).await, "prune parts")? == 0,
        "a part a queued command refers to went"
    );
    ok(s.exchange("D1", None, &[], 1100).await, "fetch")?;
    ok(s.exchange("D1", Some(&ack("P-1")), &[], 1200).await, "ack")?;
    // Queued again at 5000 (the part is marked used then), and answered.
    ok(
        s.enqueue("D1", &sharing("P-2", profile), 5000).await,
        "enqueue",
    )?;
    ok(s.exchange("D1", None, &[], 5100).await, "fetch")?;
    ok(s.exchange("D1", Some(&ack("P-2")), &[], 5200).await, "ack")?;
    check!(prune_all(&*s, 10_000).await? == 2, "both commands deleted");
    check!(
        ok(s.prune_parts(4000).await, "prune parts")? == 0,
        "a part queued again at 5000 went with a grace up to 4000"
    );
    check!(
        ok(s.prune_parts(6000).await, "prune parts")? == 1,
        "the part no command refers to stayed"
    );
    // Queued after it went: stored anew, handed out byte for byte.
    let again = sharing("P-3", profile);
    ok(s.enqueue("D1", &again, 7000).await, "enqueue")?;
    let (_, next) = ok(s.exchange("D1", None, &[], 7100).await, "fetch")?;
    let next = next.ok_or("nothing handed out")?;
    check!(
        next.uuid == "P-3" && next.command == again.command,
        "handed out {} as {:?}",
        next.uuid,
        String::from_utf8_lossy(&next.command)
    );
    Ok(())
}
