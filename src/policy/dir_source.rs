//! The policy directory as a running source: reads the directory now and whenever its content
//! changes (polled; a hash of paths and contents is the revision) and publishes each new valid
//! snapshot, or each new set of problems, on a `PolicyFeed`. Keeping the last good snapshot in
//! force when a change is refused is the consumer's job; this task only reports.

use super::feed::{PolicyFeed, PolicyUpdate};
use std::path::PathBuf;
use std::time::Duration;

/// Watches `dir` (checked every `every`) until aborted.
pub async fn watch_dir(dir: PathBuf, every: Duration, feed: PolicyFeed) {
    feed.send(PolicyUpdate::Started {
        description: format!("dir {}", dir.display()),
    });
    // What was published last (a revision, or the problems' text), so that an unchanged
    // directory publishes nothing.
    let mut last_seen: Option<String> = None;
    loop {
        if !dir.is_dir() {
            if last_seen.as_deref() != Some("") {
                // A directory that is not there (a volume not mounted, a server started from
                // another directory) says nothing about what is declared: plan nothing rather
                // than remove what the last policy installed.
                let problem = format!(
                    "the policy directory {} does not exist: nothing is planned until it does \
                     (create it, even empty, to declare nothing)",
                    dir.display()
                );
                tracing::error!(dir = %dir.display(), "{problem}");
                feed.send(PolicyUpdate::Refused {
                    problems: vec![problem],
                    commit: None,
                });
                last_seen = Some(String::new());
            }
        } else {
            let dir_for_load = dir.clone();
            let loaded =
                tokio::task::spawn_blocking(move || super::source::load_dir(&dir_for_load)).await;
            match loaded {
                Ok(Ok(snapshot)) => {
                    if last_seen.as_deref() != Some(snapshot.revision.as_str()) {
                        last_seen = Some(snapshot.revision.clone());
                        for warning in &snapshot.warnings {
                            tracing::warn!(%warning, "policy warning");
                        }
                        tracing::info!(
                            dir = %dir.display(),
                            revision = %snapshot.revision,
                            groups = snapshot.groups.len(),
                            profiles = snapshot.profiles.len(),
                            "policy loaded"
                        );
                        feed.send(PolicyUpdate::Applied {
                            snapshot: Box::new(snapshot),
                            commit: None,
                        });
                    }
                }
                Ok(Err(problems)) => {
                    let texts: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
                    let fingerprint = texts.join("\n");
                    if last_seen.as_deref() != Some(fingerprint.as_str()) {
                        for problem in &texts {
                            tracing::error!(%problem, "invalid policy; the previous revision keeps serving");
                        }
                        last_seen = Some(fingerprint);
                        feed.send(PolicyUpdate::Refused {
                            problems: texts,
                            commit: None,
                        });
                    }
                }
                Err(e) => tracing::error!(error = %e, "policy loader crashed"),
            }
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUP: &str = "apiVersion: mdm.pomona.dev/v1alpha1\nkind: DeviceGroup\nmetadata:\n  name: everyone\nspec:\n  selector:\n    matchLabels: {pomona.dev/platform: macOS}\n";

    async fn next(
        updates: &mut tokio::sync::mpsc::UnboundedReceiver<PolicyUpdate>,
    ) -> PolicyUpdate {
        tokio::time::timeout(Duration::from_secs(10), updates.recv())
            .await
            .expect("an update within 10 s")
            .expect("the feed is open")
    }

    #[tokio::test]
    async fn a_directory_publishes_its_snapshot_then_only_changes_and_refusals() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("policies");
        let (feed, mut updates) = PolicyFeed::channel();
        let task = tokio::spawn(watch_dir(dir.clone(), Duration::from_millis(20), feed));

        assert!(
            matches!(next(&mut updates).await, PolicyUpdate::Started { description } if description.starts_with("dir "))
        );
        // Missing: refused once (not once per poll), nothing applied.
        match next(&mut updates).await {
            PolicyUpdate::Refused { problems, commit } => {
                assert!(problems[0].contains("does not exist"), "{problems:?}");
                assert_eq!(commit, None);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("groups.yaml"), GROUP).unwrap();
        let first = match next(&mut updates).await {
            PolicyUpdate::Applied { snapshot, .. } => {
                assert!(snapshot.groups.contains_key("everyone"));
                snapshot.revision
            }
            other => panic!("expected a snapshot, got {other:?}"),
        };
        std::fs::write(dir.join("broken.yaml"), "kind: [").unwrap();
        assert!(matches!(
            next(&mut updates).await,
            PolicyUpdate::Refused { .. }
        ));
        std::fs::remove_file(dir.join("broken.yaml")).unwrap();
        // Back to the same content: the same revision is published again, since the consumer
        // last heard of a refusal.
        match next(&mut updates).await {
            PolicyUpdate::Applied { snapshot, .. } => assert_eq!(snapshot.revision, first),
            other => panic!("expected the snapshot again, got {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            updates.try_recv().is_err(),
            "an unchanged directory publishes nothing"
        );
        task.abort();
    }
}
