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
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Secret that signs tokens. Default: `LEDGER_JWT_SECRET`, else a random secret kept in
    /// `<data-dir>/jwt-secret` (every process sharing the directory shares it).
    pub jwt_secret: Option<String>,
    /// E-mail of the admin account created on the first start.
    pub admin_email: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            admin_email: "admin@ledger.local".into(),
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
        assert!(Config::load(&dir.join("missing.toml"), false).is_ok());
        assert!(Config::load(&dir.join("missing.toml"), true).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
