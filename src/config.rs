//! The configuration file (TOML). Every setting has a documented default, so the file is
//! optional; `ledger.example.toml` lists them all.

use std::path::Path;

use anyhow::Context as _;
use domain::priority::PriorityPolicy;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Priority weights, level thresholds and SLA due times.
    pub priority: PriorityPolicy,
    pub warranty: WarrantyConfig,
    pub auth: AuthConfig,
    /// Per projection (`[projections.service_desk]`): what to do with an event it cannot
    /// apply (`on_poison = "quarantine"` or `"stop"`, `attempts`, `backoff_ms`).
    pub projections: projections::PoisonPolicies,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Secret that signs tokens. Default: `LEDGER_JWT_SECRET`, else a random secret kept in
    /// `<data-dir>/jwt-secret` (every process sharing the directory shares it).
    pub jwt_secret: Option<String>,
    /// E-mail of the admin account created on the first start.
    pub admin_email: String,
    /// Addresses of reverse proxies whose `X-Forwarded-For` names the client (sign-in limits
    /// count per client address); requests from others are counted by their own address.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

/// Refuses a token secret anyone could know or guess: shorter than 32 characters, a
/// placeholder from an example file, or with little entropy (a repeated or ordered run of
/// characters). Whoever knows the secret can sign an admin's token.
pub fn check_secret(secret: &str) -> anyhow::Result<()> {
    if secret.len() < 32 {
        anyhow::bail!("the token secret must be at least 32 characters");
    }
    let lower = secret.to_ascii_lowercase();
    const PLACEHOLDERS: &[&str] = &[
        "change-me",
        "changeme",
        "change_me",
        "placeholder",
        "your-secret",
        "replace-me",
        "example",
    ];
    if let Some(p) = PLACEHOLDERS.iter().find(|p| lower.contains(*p)) {
        anyhow::bail!("the token secret contains the placeholder {p:?}: set a long random secret");
    }
    // Shannon entropy of the characters, times the length: a rough upper bound of the bits a
    // guesser must find, low for repeated or patterned secrets.
    let mut counts = std::collections::HashMap::new();
    for c in secret.chars() {
        *counts.entry(c).or_insert(0usize) += 1;
    }
    let n = secret.chars().count() as f64;
    let per_char: f64 = counts
        .values()
        .map(|&k| {
            let p = k as f64 / n;
            -p * p.log2()
        })
        .sum();
    if per_char * n < 128.0 {
        anyhow::bail!("the token secret has too little entropy (under 128 bits): use a long random secret, e.g. `openssl rand -base64 48`");
    }
    Ok(())
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            admin_email: "admin@ledger.local".into(),
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WarrantyConfig {
    /// A warranty is `EXPIRING_SOON` when it ends within this many days.
    pub expiring_soon_days: u32,
}

impl Default for WarrantyConfig {
    fn default() -> Self {
        Self {
            expiring_soon_days: 30,
        }
    }
}

impl Config {
    /// Reads `path`; a missing file is an error only when `required`.
    pub fn load(path: &Path, required: bool) -> anyhow::Result<Config> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Config::default())
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let config: Config =
            toml::from_str(&text).with_context(|| format!("in {}", path.display()))?;
        config
            .priority
            .validate()
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("in {}", path.display()))?;
        let known: Vec<&str> = projections::all_projectors()
            .iter()
            .map(|p| p.name())
            .collect();
        if let Some(name) = config
            .projections
            .0
            .keys()
            .find(|n| !known.contains(&n.as_str()))
        {
            anyhow::bail!(
                "in {}: unknown projection {name:?} (known: {})",
                path.display(),
                known.join(", ")
            );
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_holds_the_defaults() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("ledger.example.toml");
        let config = Config::load(&example, true).expect("example parses");
        assert_eq!(config.priority, PriorityPolicy::default());
        assert_eq!(config.warranty, WarrantyConfig::default());
        assert_eq!(config.auth, AuthConfig::default());
        assert_eq!(
            config.projections.of("service_desk"),
            projections::PoisonPolicy::default()
        );
    }

    #[test]
    fn guessable_token_secrets_are_refused() {
        for weak in [
            "short",
            "change-me-to-a-long-random-secret-of-32-or-more-characters",
            &"a".repeat(64),
            "abababababababababababababababababababab",
            "0101010101010101010101010101010123456789",
        ] {
            assert!(check_secret(weak).is_err(), "{weak}");
        }
        check_secret("test-secret-test-secret-test-secret-0123456789").unwrap();
        check_secret("q8Zr1vXw5yLd0PbN7tHc3JfKs9GmE2aU").unwrap();
    }

    #[test]
    fn typos_and_bad_thresholds_are_refused() {
        let dir = std::env::temp_dir().join(format!("ledger-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let typo = dir.join("typo.toml");
        std::fs::write(&typo, "[priority]\nseverity_wieght = 2\n").unwrap();
        assert!(Config::load(&typo, true).is_err());
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "[priority]\np0_from = 5\n").unwrap();
        assert!(Config::load(&bad, true).is_err());
        let unknown = dir.join("unknown.toml");
        std::fs::write(
            &unknown,
            "[projections.servicedesk]\non_poison = \"stop\"\n",
        )
        .unwrap();
        assert!(Config::load(&unknown, true).is_err());
        let stop = dir.join("stop.toml");
        std::fs::write(&stop, "[projections.audit_log]\non_poison = \"stop\"\n").unwrap();
        let policy = Config::load(&stop, true)
            .unwrap()
            .projections
            .of("audit_log");
        assert_eq!(policy.on_poison, projections::OnPoison::Stop);
        assert!(Config::load(&dir.join("missing.toml"), false).is_ok());
        assert!(Config::load(&dir.join("missing.toml"), true).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
