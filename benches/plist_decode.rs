//! Cost of decoding what devices send, with the bounded decoder every input goes through
//! (`protocol::bounded`) against the plist crate's own unbounded `Value::from_reader`, on
//! bodies shaped like real ones: an Idle report, a DeviceInformation answer, a ProfileList of
//! 20 profiles, an InstalledApplicationList of 500 apps (XML), and the same list as a binary
//! plist.
//!   cargo bench --bench plist_decode
use pomona::protocol::bounded;
use std::time::Instant;

fn dict(entries: &[(&str, plist::Value)]) -> plist::Value {
    plist::Value::Dictionary(
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}

fn report(result: Option<(&str, plist::Value)>) -> plist::Value {
    let mut entries = vec![
        ("Status", plist::Value::from("Acknowledged")),
        ("UDID", "0000-1111-2222-3333".into()),
        ("CommandUUID", "6F1D5B7A-0000-4000-8000-1234567890AB".into()),
    ];
    entries.extend(result);
    dict(&entries)
}

fn xml(value: &plist::Value) -> Vec<u8> {
    let mut out = Vec::new();
    value.to_writer_xml(&mut out).unwrap();
    out
}

fn main() {
    let idle = dict(&[("Status", "Idle".into()), ("UDID", "0000-1111".into())]);
    let info = report(Some((
        "QueryResponses",
        dict(&[
            ("OSVersion", "26.1".into()),
            ("BuildVersion", "23B85".into()),
            ("Model", "iPhone17,1".into()),
            ("SerialNumber", "F2LXK1234567".into()),
            ("DeviceName", "Ada's iPhone".into()),
            ("IsSupervised", true.into()),
            ("BatteryLevel", 0.82.into()),
        ]),
    )));
    let profile = |i: usize| {
        dict(&[
            (
                "PayloadIdentifier",
                format!("dev.pomona.profile-{i}").into(),
            ),
            (
                "PayloadUUID",
                format!("00000000-0000-4000-8000-{i:012}").into(),
            ),
            ("PayloadDisplayName", format!("Profile {i}").into()),
            ("PayloadVersion", 1.into()),
            ("IsManaged", true.into()),
            (
                "PayloadContent",
                plist::Value::Array(vec![dict(&[
                    ("PayloadType", "com.apple.wifi.managed".into()),
                    (
                        "PayloadIdentifier",
                        format!("dev.pomona.profile-{i}.0").into(),
                    ),
                ])]),
            ),
        ])
    };
    let profiles = report(Some((
        "ProfileList",
        plist::Value::Array((0..20).map(profile).collect()),
    )));
    let app = |i: usize| {
        dict(&[
            ("Identifier", format!("com.example.app{i}").into()),
            ("Name", format!("App {i}").into()),
            ("ShortVersion", "1.2.3".into()),
            ("Version", "123".into()),
            ("BundleSize", (1_000_000 + i as i64).into()),
            ("IsValidated", true.into()),
        ])
    };
    let apps = report(Some((
        "InstalledApplicationList",
        plist::Value::Array((0..500).map(app).collect()),
    )));
    let mut apps_binary = Vec::new();
    apps.to_writer_binary(&mut apps_binary).unwrap();
    let bodies = [
        ("Idle report", xml(&idle)),
        ("DeviceInformation", xml(&info)),
        ("ProfileList, 20 profiles", xml(&profiles)),
        ("InstalledApplicationList, 500 apps", xml(&apps)),
        ("the same, binary", apps_binary),
    ];
    println!("| body | bytes | plist crate (unbounded) | bounded | difference |");
    println!("|---|---|---|---|---|");
    for (name, body) in &bodies {
        assert_eq!(
            bounded::decode(body).unwrap(),
            plist::Value::from_reader(std::io::Cursor::new(body)).unwrap()
        );
        // Enough rounds for ~0.3 s per decoder; the better of 5 runs of each, interleaved.
        // Under `cargo test --all-targets` (no `--bench` argument) one round is a smoke test.
        let rounds = if std::env::args().any(|a| a == "--bench") {
            (30_000_000 / body.len()).clamp(50, 200_000)
        } else {
            1
        };
        let time = |bounded_decoder: bool| {
            let started = Instant::now();
            for _ in 0..rounds {
                let value = if bounded_decoder {
                    bounded::decode(std::hint::black_box(body)).unwrap()
                } else {
                    plist::Value::from_reader(std::io::Cursor::new(std::hint::black_box(body)))
                        .unwrap()
                };
                std::hint::black_box(value);
            }
            started.elapsed().as_secs_f64() / rounds as f64 * 1e6
        };
        let (mut unbounded, mut ours) = (f64::MAX, f64::MAX);
        for _ in 0..5 {
            unbounded = unbounded.min(time(false));
            ours = ours.min(time(true));
        }
        println!(
            "| {name} | {} | {unbounded:.2} µs | {ours:.2} µs | {:+.1} % |",
            body.len(),
            (ours / unbounded - 1.0) * 100.0
        );
    }
}
