//! Folding the reconciler's open commands into what the planner takes: commands still queued
//! or sent are in flight; answered ones are finished (acknowledged, or an error with the
//! device's ErrorChain text); a ProfileList answer newer than the stored one becomes the
//! device's report; an acknowledged DeviceInformation answer gives the facts groups select on.
//! Pure: the driver stores the facts and writes the plan.

use super::plan::{CommandResult, Finished, InFlight};
use super::reported;
use crate::store::reconcile::OpenCommand;
use crate::store::CommandStatus;
use crate::vocab::facts::ReportedFacts;
use crate::vocab::profiles::{Intent, ReportedProfiles};
use plist::{Dictionary, Value};

/// What a device's open commands say, ready for the planner.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Folded {
    pub finished: Vec<Finished>,
    pub in_flight: Vec<InFlight>,
    /// Commands now folded (answered or cancelled): marked processed when the plan is written.
    pub processed: Vec<String>,
    /// The newest ProfileList: the stored one, or a newer answer among the open commands.
    pub newest_report: Option<ReportedProfiles>,
    /// Acknowledged DeviceInformation answers, in order, with when they were answered.
    pub facts: Vec<(ReportedFacts, i64)>,
}

/// Folds `open` (oldest first) on top of the stored ProfileList.
pub fn fold_open_commands(open: &[OpenCommand], stored: Option<ReportedProfiles>) -> Folded {
    let mut folded = Folded {
        newest_report: stored,
        ..Folded::default()
    };
    for command in open {
        match command.status {
            CommandStatus::Queued => folded.in_flight.push(InFlight {
                command_uuid: command.uuid.clone(),
                intent: command.intent.clone(),
                queued: !command.sent,
            }),
            CommandStatus::Cancelled => folded.processed.push(command.uuid.clone()),
            status => {
                folded.processed.push(command.uuid.clone());
                let answer: Option<Dictionary> = command
                    .result
                    .as_deref()
                    .and_then(|raw| crate::protocol::bounded::decode_into(raw).ok());
                let result = if status == CommandStatus::Acknowledged {
                    CommandResult::Acknowledged
                } else {
                    CommandResult::Error(error_text(answer.as_ref()))
                };
                if result == CommandResult::Acknowledged {
                    fold_answer(&mut folded, command, answer.as_ref());
                }
                folded.finished.push(Finished {
                    command_uuid: command.uuid.clone(),
                    intent: command.intent.clone(),
                    result,
                    at: command.updated_at,
                });
            }
        }
    }
    folded
}

/// What an acknowledged answer tells beyond its status: facts, or the profiles installed.
fn fold_answer(folded: &mut Folded, command: &OpenCommand, answer: Option<&Dictionary>) {
    match command.intent {
        Intent::DeviceInformation => {
            if let Some(facts) = answer.and_then(reported::device_facts) {
                folded.facts.push((facts, command.updated_at));
            }
        }
        Intent::ProfileList => {
            let Some(list) = answer.and_then(|d| reported::profile_list(d, command.updated_at))
            else {
                return;
            };
            if folded
                .newest_report
                .as_ref()
                .is_none_or(|newest| newest.reported_at <= list.reported_at)
            {
                folded.newest_report = Some(list);
            }
        }
        _ => {}
    }
}

/// The device's ErrorChain as one line: `domain code: description; …`.
pub(crate) fn error_text(result: Option<&Dictionary>) -> String {
    let Some(chain) = result
        .and_then(|d| d.get("ErrorChain"))
        .and_then(Value::as_array)
    else {
        return "the device reported an error without an ErrorChain".into();
    };
    chain
        .iter()
        .filter_map(Value::as_dictionary)
        .map(|e| {
            let text = |k: &str| e.get(k).and_then(Value::as_string).unwrap_or_default();
            let code = e
                .get("ErrorCode")
                .and_then(Value::as_signed_integer)
                .map(|c| c.to_string())
                .unwrap_or_default();
            let description = match text("USEnglishDescription") {
                "" => text("LocalizedDescription"),
                us => us,
            };
            format!("{} {code}: {description}", text("ErrorDomain"))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xml(value: Value) -> Vec<u8> {
        let mut out = Vec::new();
        plist::to_writer_xml(&mut out, &value).unwrap();
        out
    }

    fn dict(pairs: Vec<(&str, Value)>) -> Value {
        Value::Dictionary(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    fn profile_list_answer(ids: &[(&str, &str)]) -> Vec<u8> {
        let list = ids
            .iter()
            .map(|(id, uuid)| {
                dict(vec![
                    ("PayloadIdentifier", Value::String(id.to_string())),
                    ("PayloadUUID", Value::String(uuid.to_string())),
                ])
            })
            .collect();
        xml(dict(vec![
            ("Status", Value::String("Acknowledged".into())),
            ("ProfileList", Value::Array(list)),
        ]))
    }

    fn open(uuid: &str, intent: Intent, status: CommandStatus, sent: bool) -> OpenCommand {
        OpenCommand {
            uuid: uuid.into(),
            intent,
            status,
            sent,
            result: None,
            updated_at: 1_000,
        }
    }

    fn answered(mut command: OpenCommand, raw: Vec<u8>, at: i64) -> OpenCommand {
        command.result = Some(raw);
        command.updated_at = at;
        command
    }

    fn install() -> Intent {
        Intent::Install {
            identifier: "com.example.wifi".into(),
            hash: "h1".into(),
        }
    }

    fn report(at: i64, ids: &[(&str, &str)]) -> ReportedProfiles {
        ReportedProfiles {
            reported_at: at,
            profiles: ids
                .iter()
                .map(|(id, uuid)| (id.to_string(), uuid.to_string()))
                .collect(),
        }
    }

    #[test]
    fn each_status_folds_to_what_the_planner_expects() {
        let error_answer = xml(dict(vec![
            ("Status", Value::String("Error".into())),
            (
                "ErrorChain",
                Value::Array(vec![dict(vec![
                    ("ErrorDomain", Value::String("MCProfileErrorDomain".into())),
                    ("ErrorCode", Value::Integer(1009.into())),
                    (
                        "USEnglishDescription",
                        Value::String("The profile is not installed.".into()),
                    ),
                ])]),
            ),
        ]));
        // (case, open commands, expected in flight, finished results, processed)
        type Case = (
            &'static str,
            Vec<OpenCommand>,
            Vec<(bool, &'static str)>,
            Vec<CommandResult>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "queued and never sent: in flight, still cancellable",
                vec![open("Q", install(), CommandStatus::Queued, false)],
                vec![(true, "Q")],
                vec![],
                vec![],
            ),
            (
                "sent and not answered: in flight, not cancellable",
                vec![open("S", install(), CommandStatus::Queued, true)],
                vec![(false, "S")],
                vec![],
                vec![],
            ),
            (
                "cancelled: processed, nothing to fold",
                vec![open("C", install(), CommandStatus::Cancelled, false)],
                vec![],
                vec![],
                vec!["C"],
            ),
            (
                "acknowledged: finished and processed",
                vec![open("A", install(), CommandStatus::Acknowledged, true)],
                vec![],
                vec![CommandResult::Acknowledged],
                vec!["A"],
            ),
            (
                "an error keeps the device's ErrorChain",
                vec![answered(
                    open("E", install(), CommandStatus::Error, true),
                    error_answer,
                    1_500,
                )],
                vec![],
                vec![CommandResult::Error(
                    "MCProfileErrorDomain 1009: The profile is not installed.".into(),
                )],
                vec!["E"],
            ),
            (
                "an error without an ErrorChain says so",
                vec![open("F", install(), CommandStatus::Error, true)],
                vec![],
                vec![CommandResult::Error(
                    "the device reported an error without an ErrorChain".into(),
                )],
                vec!["F"],
            ),
        ];
        for (case, commands, in_flight, results, processed) in cases {
            let folded = fold_open_commands(&commands, None);
            let got: Vec<(bool, &str)> = folded
                .in_flight
                .iter()
                .map(|f| (f.queued, f.command_uuid.as_str()))
                .collect();
            assert_eq!(got, in_flight, "{case}: in flight");
            let got: Vec<CommandResult> =
                folded.finished.iter().map(|f| f.result.clone()).collect();
            assert_eq!(got, results, "{case}: finished");
            assert_eq!(folded.processed, processed, "{case}: processed");
            assert_eq!(folded.newest_report, None, "{case}: no report");
        }
    }

    #[test]
    fn the_newest_profile_list_wins_over_older_answers_and_the_stored_one() {
        let stored = report(2_000, &[("com.example.old", "U0")]);
        let older = answered(
            open("L1", Intent::ProfileList, CommandStatus::Acknowledged, true),
            profile_list_answer(&[("com.example.older", "U1")]),
            1_000,
        );
        let folded = fold_open_commands(std::slice::from_ref(&older), Some(stored.clone()));
        assert_eq!(
            folded.newest_report,
            Some(stored.clone()),
            "an older answer is not the device's"
        );

        let newer = answered(
            open("L2", Intent::ProfileList, CommandStatus::Acknowledged, true),
            profile_list_answer(&[("com.example.wifi", "U2")]),
            3_000,
        );
        let folded = fold_open_commands(&[older, newer], Some(stored));
        assert_eq!(
            folded.newest_report,
            Some(report(3_000, &[("com.example.wifi", "U2")]))
        );
        assert_eq!(folded.processed, ["L1", "L2"]);
    }

    #[test]
    fn an_acknowledged_device_information_answer_gives_its_facts_and_an_error_gives_none() {
        let answer = xml(dict(vec![
            ("Status", Value::String("Acknowledged".into())),
            (
                "QueryResponses",
                dict(vec![
                    ("Model", Value::String("iPhone15,2".into())),
                    ("OSVersion", Value::String("18.1".into())),
                    ("IsSupervised", Value::Boolean(true)),
                ]),
            ),
        ]));
        let ok = answered(
            open(
                "I1",
                Intent::DeviceInformation,
                CommandStatus::Acknowledged,
                true,
            ),
            answer.clone(),
            4_000,
        );
        let failed = answered(
            open("I2", Intent::DeviceInformation, CommandStatus::Error, true),
            answer,
            5_000,
        );
        let folded = fold_open_commands(&[ok, failed], None);
        assert_eq!(
            folded.facts,
            vec![(
                ReportedFacts {
                    model: Some("iPhone15,2".into()),
                    os_version: Some("18.1".into()),
                    supervised: Some(true),
                    ..ReportedFacts::default()
                },
                4_000
            )]
        );
        assert_eq!(folded.finished.len(), 2);
    }
}
