//! Resolving a `ServeConfig`: each flag over its config-file key over its default, section by
//! section (addresses, storage, TLS, policy source, limits, device CA, enrollment, identity,
//! planning, push, git, Kubernetes), every problem collected so that one run names them all.

use super::*;

impl ServeArgs {
    fn kube_settings(
        &self,
        file: &FileConfig,
        problems: &mut Vec<String>,
    ) -> crate::controller::KubeSettings {
        let mut secs =
            |name: &str, flag: Option<u64>, key: Option<u64>, default: u64| match flag.or(key) {
                Some(0) => {
                    problems.push(format!("{name}: must be at least 1"));
                    Duration::from_secs(default)
                }
                Some(n) => Duration::from_secs(n),
                None => Duration::from_secs(default),
            };
        let lease_duration = secs(
            "lease_duration_secs",
            self.lease_duration_secs,
            file.lease_duration_secs,
            15,
        );
        let status_interval = secs(
            "status_interval_secs",
            self.status_interval_secs,
            file.status_interval_secs,
            10,
        );
        let removal_timeout = secs(
            "removal_timeout_secs",
            self.removal_timeout_secs,
            file.removal_timeout_secs,
            600,
        );
        let kubeconfig = self.kubeconfig.clone().or(file.kubeconfig.clone());
        if let Some(path) = &kubeconfig {
            if !path.is_file() {
                problems.push(format!("kubeconfig: {} is not a file", path.display()));
            }
        }
        let namespace = self.namespace.clone().or(file.namespace.clone());
        crate::controller::KubeSettings {
            kubeconfig,
            lease_namespace: self
                .lease_namespace
                .clone()
                .or(file.lease_namespace.clone())
                .or(namespace.clone())
                .unwrap_or_else(|| "default".into()),
            namespace,
            identity: self
                .identity
                .clone()
                .or(file.identity.clone())
                .unwrap_or_else(|| {
                    format!("pomona-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
                }),
            lease_duration,
            status_interval,
            removal_timeout,
            sweep_interval: Duration::from_secs(2),
        }
    }

    /// Merges flags over the config file over defaults and validates the result: every
    /// problem is collected, so that one run names them all.
    pub fn resolve(&self) -> Result<ServeConfig, ConfigErrors> {
        let mut problems = Vec::new();
        let file = self.config_file(&mut problems);
        let kube = (self.kube || file.kube == Some(true))
            .then(|| self.kube_settings(&file, &mut problems));
        let push = resolve_push(self, &file, &mut problems);
        let git = resolve_git(self, &file, &mut problems);
        let git_ca_file = self.git_ca(&file, &mut problems);
        let (listen, public_url) = self.addresses(&file, &mut problems);
        let (data_dir, database) = self.storage(&file, &mut problems);
        let database_connections = self.database_connections(&file, &mut problems);
        let tls = self.tls(&file, &mut problems);
        let admin_token_file = self.admin_token(&file, &mut problems);
        let (policy_dir, policy_dir_explicit) =
            self.policy_source(&file, git.is_some(), kube.is_some(), &mut problems);
        let limits = self.limits(&file, &mut problems);
        let (device_ca, device_cert_days) = self.device_ca(&file, &mut problems);
        let enrollment = self.enrollment(&file, &mut problems);
        let identity = self.device_identity(&file, &mut problems);
        let plan = self.plan_settings(&file, &mut problems);
        let command_retention = self.command_retention(&file, &mut problems);
        if !problems.is_empty() {
            return Err(ConfigErrors(problems));
        }
        Ok(ServeConfig {
            kube,
            plan,
            listen,
            data_dir,
            database,
            database_connections,
            tls,
            public_url,
            admin_token_file,
            policy_dir,
            policy_dir_explicit,
            limits,
            device_ca,
            device_cert_days,
            enrollment,
            identity,
            push,
            git,
            git_ca_file,
            command_retention,
        })
    }

    /// `command_retention`: at least an hour, so that a typo (`7` for `7d`, read as seconds)
    /// cannot delete results minutes after they arrive.
    fn command_retention(&self, file: &FileConfig, problems: &mut Vec<String>) -> Duration {
        let Some(text) = self
            .command_retention
            .clone()
            .or(file.command_retention.clone())
        else {
            return crate::retention::DEFAULT_RETENTION;
        };
        match crate::cmdline::parse_duration(&text) {
            Ok(d) if d < Duration::from_secs(3600) => {
                problems.push(format!(
                    "command_retention: {text:?} is less than an hour (write e.g. 7d or 48h)"
                ));
                crate::retention::DEFAULT_RETENTION
            }
            Ok(d) => d,
            Err(reason) => {
                problems.push(format!("command_retention: {reason}"));
                crate::retention::DEFAULT_RETENTION
            }
        }
    }

    /// The config file, if one is named (an unreadable or invalid one is a problem).
    fn config_file(&self, problems: &mut Vec<String>) -> FileConfig {
        match &self.config {
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => toml::from_str::<FileConfig>(&text).unwrap_or_else(|e| {
                    problems.push(format!("config file {}: {}", path.display(), e.message()));
                    FileConfig::default()
                }),
                Err(e) => {
                    problems.push(format!("config file {}: cannot read: {e}", path.display()));
                    FileConfig::default()
                }
            },
            None => FileConfig::default(),
        }
    }

    /// `git_ca_file`: extra CA certificates for git over https.
    fn git_ca(&self, file: &FileConfig, problems: &mut Vec<String>) -> Option<PathBuf> {
        let git_ca_file = self.git_ca_file.clone().or(file.git_ca_file.clone());
        if let Some(path) = &git_ca_file {
            if !path.is_file() {
                problems.push(format!(
                    "git_ca_file: {} does not exist or is not a file",
                    path.display()
                ));
            }
        }
        git_ca_file
    }

    /// Where the server listens, and the URL devices reach it at (default: localhost on the listening port).
    fn addresses(&self, file: &FileConfig, problems: &mut Vec<String>) -> (SocketAddr, String) {
        let listen_text = self
            .listen
            .clone()
            .or(file.listen.clone())
            .unwrap_or_else(|| "0.0.0.0:8443".into());
        let listen = listen_text.parse::<SocketAddr>().unwrap_or_else(|_| {
            problems.push(format!(
                "listen: {listen_text:?} is not an address like 0.0.0.0:8443"
            ));
            SocketAddr::from(([0, 0, 0, 0], 8443))
        });

        let public_url = self
            .public_url
            .clone()
            .or(file.public_url.clone())
            .unwrap_or_else(|| format!("https://localhost:{}", listen.port()));
        if let Err(reason) = check_public_url(&public_url) {
            problems.push(format!("public_url: {reason}"));
        }
        (listen, public_url)
    }

    /// The data directory and the database (default: SQLite inside the data directory).
    fn storage(&self, file: &FileConfig, problems: &mut Vec<String>) -> (PathBuf, String) {
        let data_dir = self
            .data_dir
            .clone()
            .or(file.data_dir.clone())
            .unwrap_or_else(|| "pomona-data".into());
        if data_dir.exists() && !data_dir.is_dir() {
            problems.push(format!(
                "data_dir: {} exists and is not a directory",
                data_dir.display()
            ));
        }

        let database = self
            .database
            .clone()
            .or(file.database.clone())
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("pomona.db").display()));
        if !(database.starts_with("sqlite:")
            || database.starts_with("postgres:")
            || database.starts_with("postgresql:"))
        {
            problems.push("database: must start with sqlite:// or postgres:// (the value is not shown: it may hold a password)".into());
        }
        (data_dir, database)
    }

    /// `database_connections`: at least 2 (a request may hold one while the planner holds
    /// another), at most 1,000.
    fn database_connections(&self, file: &FileConfig, problems: &mut Vec<String>) -> u32 {
        let given = self.database_connections.or(file.database_connections);
        match given {
            None => crate::store::DEFAULT_POSTGRES_CONNECTIONS,
            Some(n) if (2..=1000).contains(&n) => n,
            Some(n) => {
                problems.push(format!(
                    "database_connections: {n} is out of range (2 to 1000; default {})",
                    crate::store::DEFAULT_POSTGRES_CONNECTIONS
                ));
                crate::store::DEFAULT_POSTGRES_CONNECTIONS
            }
        }
    }

    /// The server's TLS certificate: given as files, or generated at first start.
    fn tls(&self, file: &FileConfig, problems: &mut Vec<String>) -> TlsSource {
        let tls = match (
            self.tls_cert.clone().or(file.tls_cert.clone()),
            self.tls_key.clone().or(file.tls_key.clone()),
        ) {
            (None, None) => TlsSource::Generated,
            (Some(cert), Some(key)) => {
                for (name, path) in [("tls_cert", &cert), ("tls_key", &key)] {
                    if !path.is_file() {
                        problems.push(format!(
                            "{name}: {} does not exist or is not a file",
                            path.display()
                        ));
                    }
                }
                TlsSource::Files { cert, key }
            }
            (Some(_), None) => {
                problems.push("tls_cert is set but tls_key is not: give both or neither".into());
                TlsSource::Generated
            }
            (None, Some(_)) => {
                problems.push("tls_key is set but tls_cert is not: give both or neither".into());
                TlsSource::Generated
            }
        };
        tls
    }

    /// The admin token file, when one is given (at least 16 characters).
    fn admin_token(&self, file: &FileConfig, problems: &mut Vec<String>) -> Option<PathBuf> {
        let admin_token_file = self
            .admin_token_file
            .clone()
            .or(file.admin_token_file.clone());
        if let Some(path) = &admin_token_file {
            match std::fs::read_to_string(path) {
                Ok(text) if text.trim().len() < 16 => problems.push(format!(
                    "admin_token_file: {} holds a token shorter than 16 characters",
                    path.display()
                )),
                Ok(_) => {}
                Err(e) => problems.push(format!(
                    "admin_token_file: cannot read {}: {e}",
                    path.display()
                )),
            }
        }
        admin_token_file
    }

    /// The policy directory and whether it was given: policy comes from one source (a directory, git or custom resources).
    fn policy_source(
        &self,
        file: &FileConfig,
        git: bool,
        kube: bool,
        problems: &mut Vec<String>,
    ) -> (PathBuf, bool) {
        let policy_dir_explicit = self.policy_dir.is_some() || file.policy_dir.is_some();
        let policy_dir = self
            .policy_dir
            .clone()
            .or(file.policy_dir.clone())
            .unwrap_or_else(|| "policies".into());
        if policy_dir_explicit && git {
            problems.push(
                "policy_dir and git are both set: policy comes from one source, choose one".into(),
            );
        } else if policy_dir_explicit && !policy_dir.is_dir() {
            problems.push(format!(
                "policy_dir: {} is not a directory",
                policy_dir.display()
            ));
        }

        if kube && git {
            problems
                .push("git and kube are both set: policy comes from one source, choose one".into());
        }
        if kube && policy_dir_explicit {
            problems.push(
                "policy_dir and kube exclude each other: policies come from a directory or from \
                 custom resources"
                    .into(),
            );
        }
        (policy_dir, policy_dir_explicit)
    }

    /// Request body and read limits.
    fn limits(&self, file: &FileConfig, problems: &mut Vec<String>) -> Limits {
        let mut limits = Limits::default();
        match self.max_body_bytes.or(file.max_body_bytes) {
            Some(0) => problems.push("max_body_bytes: must be greater than 0".into()),
            Some(n) => limits.max_body_bytes = n as usize,
            None => {}
        }
        match self.read_timeout_secs.or(file.read_timeout_secs) {
            Some(0) => problems.push("read_timeout_secs: must be greater than 0".into()),
            Some(n) => limits.read_timeout = Duration::from_secs(n),
            None => {}
        }
        limits
    }

    /// The device CA (files, or generated) and how long device certificates last.
    fn device_ca(&self, file: &FileConfig, problems: &mut Vec<String>) -> (CaSource, u32) {
        let device_ca = match (
            self.ca_cert.clone().or(file.ca_cert.clone()),
            self.ca_key.clone().or(file.ca_key.clone()),
        ) {
            (None, None) => CaSource::Generated,
            (Some(cert), Some(key)) => {
                for (name, path) in [("ca_cert", &cert), ("ca_key", &key)] {
                    if !path.is_file() {
                        problems.push(format!(
                            "{name}: {} does not exist or is not a file",
                            path.display()
                        ));
                    }
                }
                CaSource::Files { cert, key }
            }
            _ => {
                problems.push("ca_cert and ca_key: give both or neither".into());
                CaSource::Generated
            }
        };
        let device_cert_days = match self.device_cert_days.or(file.device_cert_days) {
            Some(0) => {
                problems.push("device_cert_days: must be at least 1".into());
                365
            }
            Some(days) => days,
            None => 365,
        };
        (device_ca, device_cert_days)
    }

    /// How devices enroll: challenges, tokens, who may fetch profiles, signing.
    fn enrollment(&self, file: &FileConfig, problems: &mut Vec<String>) -> EnrollmentSettings {
        let mut enrollment = EnrollmentSettings::default();
        if let Some(path) = self
            .scep_challenge_file
            .clone()
            .or(file.scep_challenge_file.clone())
        {
            match std::fs::read_to_string(&path) {
                Ok(text) if text.trim().len() < 8 => problems.push(format!(
                    "scep_challenge_file: {} holds a challenge shorter than 8 characters",
                    path.display()
                )),
                Ok(text) => enrollment.static_challenge = Some(text.trim().to_string()),
                Err(e) => problems.push(format!(
                    "scep_challenge_file: cannot read {}: {e}",
                    path.display()
                )),
            }
        }
        match self.challenge_ttl_secs.or(file.challenge_ttl_secs) {
            Some(0) => problems.push("challenge_ttl_secs: must be greater than 0".into()),
            Some(n) => enrollment.challenge_ttl = Duration::from_secs(n),
            None => {}
        }
        match self
            .enrollment_token_ttl_secs
            .or(file.enrollment_token_ttl_secs)
        {
            Some(0) => problems.push("enrollment_token_ttl_secs: must be greater than 0".into()),
            Some(n) => enrollment.token_ttl = Duration::from_secs(n),
            None => {}
        }
        match self
            .enroll_access
            .clone()
            .or(file.enroll_access.clone())
            .as_deref()
        {
            None | Some("token") => {}
            Some("admin") => enrollment.access = EnrollAccess::Admin,
            Some(other) => problems.push(format!(
                "enroll_access: {other:?} is not \"token\" or \"admin\""
            )),
        }
        enrollment.sign_message = self.sign_message.or(file.sign_message).unwrap_or(false);
        enrollment.sign_profiles = self.sign_profiles.or(file.sign_profiles).unwrap_or(false);
        if let Some(org) = self.organization.clone().or(file.organization.clone()) {
            enrollment.organization = org;
        }
        enrollment
    }

    /// Whom to trust for device identity besides TLS: proxies that pass the client certificate.
    fn device_identity(
        &self,
        file: &FileConfig,
        problems: &mut Vec<String>,
    ) -> crate::server::identity::IdentityPolicy {
        let proxy_texts = if self.trusted_proxies.is_empty() {
            file.trusted_proxies.clone().unwrap_or_default()
        } else {
            self.trusted_proxies.clone()
        };
        let mut identity = crate::server::identity::IdentityPolicy::default();
        for text in proxy_texts.iter().filter(|t| !t.trim().is_empty()) {
            match text.parse() {
                Ok(range) => identity.trusted_proxies.push(range),
                Err(reason) => problems.push(format!("trusted_proxies: {reason}")),
            }
        }
        identity
    }

    /// The planner's retries, inventory interval and rollout pacing.
    fn plan_settings(
        &self,
        file: &FileConfig,
        problems: &mut Vec<String>,
    ) -> crate::reconcile::plan::PlanSettings {
        let mut plan = crate::reconcile::plan::PlanSettings::default();
        if let Some(ms) = self.retry_backoff_ms.or(file.retry_backoff_ms) {
            plan.backoff_ms = ms as i64;
        }
        match self
            .inventory_interval_secs
            .or(file.inventory_interval_secs)
        {
            Some(0) => problems.push("inventory_interval_secs: must be at least 1".into()),
            Some(n) => plan.inventory_interval_ms = n as i64 * 1000,
            None => {}
        }
        if let Some(n) = self.rollout_max_devices.or(file.rollout_max_devices) {
            plan.rollout_max_devices = n;
        }
        match self.max_attempts.or(file.max_attempts) {
            Some(0) => problems.push("max_attempts: must be at least 1".into()),
            Some(n) => plan.max_attempts = n,
            None => {}
        }
        plan
    }
}

/// Reads a secret file: trimmed, non-empty. Problems name the key and the path, never the value.
fn read_secret(name: &str, path: &Path, problems: &mut Vec<String>) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => {
            problems.push(format!("{name}: {} is empty", path.display()));
            None
        }
        Ok(text) => Some(text.trim().to_string()),
        Err(e) => {
            problems.push(format!("{name}: cannot read {}: {e}", path.display()));
            None
        }
    }
}

/// Git source settings from flags over the file (`None` without `git`).
fn resolve_git(
    args: &ServeArgs,
    file: &FileConfig,
    problems: &mut Vec<String>,
) -> Option<crate::policy::git::GitSettings> {
    use crate::policy::git;
    let pick = |flag: &Option<PathBuf>, key: &Option<PathBuf>| flag.clone().or(key.clone());
    let token_file = pick(&args.git_token_file, &file.git_token_file);
    let ssh_key = pick(&args.git_ssh_key_file, &file.git_ssh_key_file);
    let known_hosts = pick(&args.git_known_hosts, &file.git_known_hosts);
    let secret_file = pick(&args.git_webhook_secret_file, &file.git_webhook_secret_file);
    let signers_file = pick(&args.git_allowed_signers, &file.git_allowed_signers);
    let Some(url) = args.git.clone().or(file.git.clone()) else {
        let stray = [
            (
                "git_branch",
                args.git_branch.is_some() || file.git_branch.is_some(),
            ),
            (
                "git_path",
                args.git_path.is_some() || file.git_path.is_some(),
            ),
            (
                "git_interval",
                args.git_interval.is_some() || file.git_interval.is_some(),
            ),
            ("git_token_file", token_file.is_some()),
            ("git_ssh_key_file", ssh_key.is_some()),
            ("git_known_hosts", known_hosts.is_some()),
            ("git_webhook_secret_file", secret_file.is_some()),
            ("git_allowed_signers", signers_file.is_some()),
        ];
        for (name, set) in stray {
            if set {
                problems.push(format!("{name} is set but git (the repository URL) is not"));
            }
        }
        return None;
    };
    let transport = git::transport(&url);
    if transport.is_none() {
        problems.push(format!(
            "git: {:?} is not an https://, ssh://, git@host:path or file:// URL",
            git::redact_url(&url)
        ));
    }
    let branch = args
        .git_branch
        .clone()
        .or(file.git_branch.clone())
        .unwrap_or_else(|| "main".into());
    if branch.trim().is_empty() || branch.starts_with("refs/") || branch.contains("..") {
        problems.push(format!(
            "git_branch: {branch:?} must be a branch name like main (not a ref path)"
        ));
    }
    let path = match git::normalise_path(
        &args
            .git_path
            .clone()
            .or(file.git_path.clone())
            .unwrap_or_default(),
    ) {
        Ok(p) => p,
        Err(reason) => {
            problems.push(format!("git_path: {reason}"));
            String::new()
        }
    };
    let mut interval = Duration::from_secs(60);
    if let Some(text) = args.git_interval.clone().or(file.git_interval.clone()) {
        match crate::cmdline::parse_duration(&text) {
            Ok(d) if d.is_zero() => problems.push("git_interval: must be greater than 0".into()),
            Ok(d) => interval = d,
            Err(reason) => problems.push(format!("git_interval: {reason}")),
        }
    }
    let mut auth = git::GitAuth::default();
    if let Some(path) = &token_file {
        if transport.is_some_and(|t| t != "https") {
            problems.push("git_token_file is only used with https:// remotes".into());
        }
        auth.token = read_secret("git_token_file", path, problems);
    }
    for (name, path) in [
        ("git_ssh_key_file", &ssh_key),
        ("git_known_hosts", &known_hosts),
    ] {
        if let Some(path) = path {
            if transport.is_some_and(|t| t != "ssh") {
                problems.push(format!("{name} is only used with ssh remotes"));
            }
            if !path.is_file() {
                problems.push(format!(
                    "{name}: {} does not exist or is not a file",
                    path.display()
                ));
            }
        }
    }
    if transport == Some("ssh") && known_hosts.is_none() {
        problems.push(
            "git: ssh remotes need git_known_hosts (the server's host key is checked, never \
             accepted blindly)"
                .into(),
        );
    }
    auth.ssh_key = ssh_key;
    auth.known_hosts = known_hosts;
    let webhook_secret = secret_file
        .as_ref()
        .and_then(|path| read_secret("git_webhook_secret_file", path, problems));
    let allowed_signers = signers_file.as_ref().and_then(|path| {
        let text = read_secret("git_allowed_signers", path, problems)?;
        match crate::policy::git_signature::parse_allowed_signers(&text) {
            Ok(signers) => Some(signers),
            Err(list) => {
                for p in list {
                    problems.push(format!("git_allowed_signers: {}: {p}", path.display()));
                }
                None
            }
        }
    });
    Some(git::GitSettings {
        url,
        branch,
        path,
        interval,
        auth,
        webhook_secret,
        allowed_signers,
    })
}

/// Push settings from flags over the file; problems are appended, never fatal on their own.
fn resolve_push(
    args: &ServeArgs,
    file: &FileConfig,
    problems: &mut Vec<String>,
) -> crate::push::PushSettings {
    use crate::push::CertificateSource;
    let mut push = crate::push::PushSettings::default();
    let pick = |flag: &Option<PathBuf>, key: &Option<PathBuf>| flag.clone().or(key.clone());
    let mut cert = pick(&args.push_cert, &file.push_cert);
    let mut key = pick(&args.push_key, &file.push_key);
    let mut p12 = pick(&args.push_p12, &file.push_p12);
    let mut password_file = pick(&args.push_p12_password_file, &file.push_p12_password_file);
    if args.push_optional || file.push_optional.unwrap_or(false) {
        if let Some(absent) = cert.as_ref().or(p12.as_ref()).filter(|p| !p.exists()) {
            tracing::warn!(
                path = %absent.display(),
                "push certificate not found and push_optional is set: starting without pushes \
                 (devices are not woken) until it is there and the server restarts"
            );
            (cert, key, p12, password_file) = (None, None, None, None);
        }
    }
    let mut must_exist = |name: &str, path: &Option<PathBuf>| {
        if let Some(path) = path {
            if !path.is_file() {
                problems.push(format!(
                    "{name}: {} does not exist or is not a file",
                    path.display()
                ));
            }
        }
    };
    must_exist("push_cert", &cert);
    must_exist("push_key", &key);
    must_exist("push_p12", &p12);
    must_exist("push_p12_password_file", &password_file);
    must_exist("push_ca", &pick(&args.push_ca, &file.push_ca));
    push.certificate = match (cert, key, p12, password_file) {
        (None, None, None, None) => None,
        (Some(cert), key, None, None) => Some(CertificateSource::Pem { cert, key }),
        (None, None, Some(path), Some(password_file)) => Some(CertificateSource::Pkcs12 {
            path,
            password_file,
        }),
        (None, Some(_), None, None) => {
            problems.push("push_key is set but push_cert is not: give the certificate too".into());
            None
        }
        (None, None, Some(_), None) => {
            problems.push(
                "push_p12 needs push_p12_password_file (the PKCS#12 password, in a file)".into(),
            );
            None
        }
        (None, None, None, Some(_)) => {
            problems.push("push_p12_password_file is set but push_p12 is not".into());
            None
        }
        _ => {
            problems.push("give the push certificate either as push_cert (+ push_key) or as push_p12 (+ push_p12_password_file), not both".into());
            None
        }
    };
    if let Some(endpoint) = args.push_endpoint.clone().or(file.push_endpoint.clone()) {
        match crate::push::client::endpoint_url(&endpoint) {
            Ok(_) => push.endpoint = endpoint,
            Err(reason) => problems.push(format!("push_endpoint: {reason}")),
        }
    }
    push.extra_ca = pick(&args.push_ca, &file.push_ca);
    let mut duration = |name: &str,
                        flag: &Option<String>,
                        key: &Option<String>,
                        target: &mut Duration| {
        if let Some(text) = flag.clone().or(key.clone()) {
            match crate::cmdline::parse_duration(&text) {
                Ok(d) if d.is_zero() => problems.push(format!("{name}: must be greater than 0")),
                Ok(d) => *target = d,
                Err(reason) => problems.push(format!("{name}: {reason}")),
            }
        }
    };
    let schedule = &mut push.schedule;
    duration(
        "push_coalesce",
        &args.push_coalesce,
        &file.push_coalesce,
        &mut schedule.coalesce,
    );
    duration(
        "push_retry_base",
        &args.push_retry_base,
        &file.push_retry_base,
        &mut schedule.retry_base,
    );
    duration(
        "push_retry_max",
        &args.push_retry_max,
        &file.push_retry_max,
        &mut schedule.retry_max,
    );
    duration(
        "push_poll_interval",
        &args.push_poll_interval,
        &file.push_poll_interval,
        &mut schedule.poll_interval,
    );
    duration(
        "push_timeout",
        &args.push_timeout,
        &file.push_timeout,
        &mut push.timeout,
    );
    if let Some(text) = args.push_backoff.clone().or(file.push_backoff.clone()) {
        let parsed: Result<Vec<Duration>, String> = text
            .split(',')
            .map(|part| {
                crate::cmdline::parse_duration(part).and_then(|d| {
                    if d.is_zero() {
                        Err(format!("{part:?} must be greater than 0"))
                    } else {
                        Ok(d)
                    }
                })
            })
            .collect();
        match parsed {
            Ok(list) if !list.is_empty() => push.schedule.backoff = list,
            Ok(_) => {
                problems.push("push_backoff: give at least one delay, e.g. 1m,5m,30m,2h,24h".into())
            }
            Err(reason) => problems.push(format!("push_backoff: {reason} (e.g. 1m,5m,30m,2h,24h)")),
        }
    }
    match args.push_concurrency.or(file.push_concurrency) {
        Some(0) => problems.push("push_concurrency: must be greater than 0".into()),
        Some(n) => push.concurrency = n,
        None => {}
    }
    push
}

fn check_public_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("{url:?} must start with https:// (devices only talk HTTPS)"))?;
    if url_host(rest).is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    Ok(())
}
