//! What the command-line tools share — the `pomona` subcommands that talk to a running server
//! (`status`, `push`, `lock`…) and the device simulator (`pomona sim`): the duration syntax of
//! flags and configuration values, and the HTTPS client that reaches a server.
//!
//! It lives apart from `sim` so that production code never imports the simulator, and apart
//! from `vocab` so that the simulator, which may see only `protocol` and `pki` of the server's
//! side, does not see the server's vocabulary either. It must not import any other module of
//! this crate, and holds no state.

use anyhow::Context as _;
use std::time::Duration;

/// Parses `500ms`, `30s`, `5m`, `2h` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 5m, 500ms or 7d"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        _ => return Err(format!("{text:?}: unit must be ms, s, m, h or d")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// An HTTPS client trusting the given CA (and nothing else).
pub fn client(server_ca: Option<&std::path::Path>) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(256);
    if let Some(path) = server_ca {
        let pem =
            std::fs::read(path).with_context(|| format!("reading server CA {}", path.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .with_context(|| format!("{} is not a PEM certificate", path.display()))?;
        builder = builder
            .tls_built_in_root_certs(false)
            .add_root_certificate(cert);
    }
    Ok(builder.build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("soon").is_err());
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert!(parse_duration("5w").is_err());
    }
}
