//! Reading the two sources and merging them with figment: the TOML file,
//! then the `INVALOG_<TABLE>__<KEY>` environment variables on top. Every
//! merged value keeps a tag of the source it came from, so any error —
//! figment's own (unknown key, wrong type) or one of `validate` — names the
//! file or the exact environment variable.

use std::path::{Path, PathBuf};

use figment::error::{Actual, Kind};
use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::error::{display_key, env_var_for, ConfigError, ConfigErrorKind, Origin};
use super::raw::RawConfig;
use super::ENV_PREFIX;
use invalog::suggest::closest;

/// The name of the environment provider in figment's metadata.
const ENV_PROVIDER: &str = "invalog environment";

/// The file and the environment, merged, with each value's source.
pub(super) struct Sources {
    figment: Figment,
    /// The file alone, read with strict types.
    file_only: Figment,
    root: Value,
    file: PathBuf,
}

impl Sources {
    /// Reads `file` and merges the configuration variables among `env`
    /// (name, value) on top of it.
    pub fn read(
        file: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Sources, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            ConfigError::new(
                ConfigErrorKind::Read,
                Origin::File(file.to_owned()),
                None,
                format!("cannot read the configuration file: {e}"),
            )
        })?;
        let overrides = EnvOverrides::collect(env)?;
        let file_only = Figment::new().merge(Toml::string(&text));
        let figment = file_only.clone().merge(overrides);
        // The environment provider never fails, so an error here is TOML's.
        let root = figment.find_value("").map_err(|e| {
            ConfigError::new(
                ConfigErrorKind::Syntax,
                Origin::File(file.to_owned()),
                None,
                format!("invalid TOML: {}", without_snippet(&e.kind.to_string())),
            )
        })?;
        Ok(Sources {
            figment,
            file_only,
            root,
            file: file.to_owned(),
        })
    }

    /// The merged configuration as written. Strings from the environment
    /// are read as numbers or booleans where the schema wants one; the
    /// file's values must have the schema's types (`replicas = "1"` is
    /// refused, as TOML has integers).
    pub fn raw(&self) -> Result<RawConfig, ConfigError> {
        let first = |errors: figment::Error| errors.into_iter().next().expect("an error holds one");
        if let Err(errors) = self.file_only.extract::<RawConfig>() {
            let error = first(errors);
            let origin = Origin::File(self.file.clone());
            return Err(self.convert_from(error, origin));
        }
        self.figment
            .extract_lossy::<RawConfig>()
            .map_err(|errors| self.convert(first(errors)))
    }

    /// The configuration file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Where the value at a figment path (`nats.urls`,
    /// `refreshers.0.applier.url`) came from: the environment variable that
    /// set it (or set a table or list above it), else the file.
    pub fn origin(&self, path: &str) -> Origin {
        let mut value = &self.root;
        let mut walked = Vec::new();
        for segment in path.split('.').filter(|s| !s.is_empty()) {
            let next = match value {
                Value::Dict(_, dict) => dict.get(segment),
                Value::Array(_, items) => segment.parse().ok().and_then(|i: usize| items.get(i)),
                _ => None,
            };
            let Some(next) = next else { break };
            value = next;
            walked.push(segment);
        }
        let from_env = self
            .figment
            .get_metadata(value.tag())
            .is_some_and(|m| m.name == ENV_PROVIDER);
        if from_env && !walked.is_empty() {
            Origin::Env(env_var_for(&walked.join(".")))
        } else {
            Origin::File(self.file.clone())
        }
    }

    /// Turns figment's error into ours. Values are never echoed: any of
    /// them could be a secret.
    fn convert(&self, error: figment::Error) -> ConfigError {
        let origin = self.origin(&error.path.join("."));
        self.convert_from(error, origin)
    }

    /// [`Self::convert`] for an error whose origin is known.
    fn convert_from(&self, error: figment::Error, origin: Origin) -> ConfigError {
        let path = error.path.join(".");
        let mut key = display_key(&path);
        let (kind, message) = match &error.kind {
            Kind::UnknownField(field, valid) => {
                let table = path
                    .strip_suffix(field.as_str())
                    .unwrap_or("")
                    .trim_end_matches('.');
                let fix = match (closest(field, valid.iter().copied()), &origin) {
                    (Some(best), Origin::Env(_)) => {
                        let full = [table, best].join(".");
                        format!(
                            "did you mean `{}`?",
                            env_var_for(full.trim_start_matches('.'))
                        )
                    }
                    (Some(best), Origin::File(_)) => format!("did you mean `{best}`?"),
                    (None, _) => format!("valid keys here: {}", quoted_list(valid)),
                };
                (
                    ConfigErrorKind::UnknownKey,
                    format!("unknown key `{key}`; {fix}"),
                )
            }
            Kind::MissingField(field) => {
                key = display_key(&format!("{path}.{field}"));
                (
                    ConfigErrorKind::MissingKey,
                    format!("missing required key `{key}`"),
                )
            }
            Kind::InvalidType(actual, expected) => (
                ConfigErrorKind::InvalidValue,
                format!(
                    "invalid value for `{key}`: expected {}, found {}",
                    expected_text(expected),
                    type_of(actual)
                ),
            ),
            Kind::InvalidValue(actual, expected) => {
                let found = match actual {
                    Actual::Signed(n) if *n < 0 => "a negative number",
                    Actual::Signed(_) | Actual::Unsigned(_) => "a number out of range",
                    other => type_of(other),
                };
                (
                    ConfigErrorKind::InvalidValue,
                    format!(
                        "invalid value for `{key}`: expected {}, found {found}",
                        expected_text(expected)
                    ),
                )
            }
            other => (
                ConfigErrorKind::InvalidValue,
                format!("invalid value for `{key}`: {other}"),
            ),
        };
        ConfigError::new(kind, origin, Some(key), message)
    }
}

/// The `INVALOG_<TABLE>__<KEY>` variables as a figment provider. Variables
/// without `__` (such as `INVALOG_TEST_LOG`, or the `INVALOG_REFRESHER` a
/// command applier sets for its program) are not configuration keys and
/// are left to whoever reads them.
struct EnvOverrides(Dict);

impl EnvOverrides {
    fn collect(env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut dict = Dict::new();
        for (name, value) in env {
            let Some(path) = config_path(&name) else {
                continue;
            };
            let refuse = |why: &str| {
                ConfigError::new(
                    ConfigErrorKind::InvalidValue,
                    Origin::Env(name.clone()),
                    None,
                    why.to_owned(),
                )
            };
            if path.iter().any(String::is_empty) {
                return Err(refuse(
                    "not a configuration key; write INVALOG_<TABLE>__<KEY>, like INVALOG_NATS__URLS",
                ));
            }
            if path[0] == "refreshers" {
                return Err(refuse(
                    "refreshers cannot be set from the environment; define them in the file",
                ));
            }
            insert(&mut dict, &path, Value::from(value));
        }
        Ok(EnvOverrides(dict))
    }
}

impl Provider for EnvOverrides {
    fn metadata(&self) -> Metadata {
        Metadata::named(ENV_PROVIDER)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.0.clone()))
    }
}

/// Whether the variable `name` overrides a configuration key.
pub(super) fn is_override(name: &str) -> bool {
    config_path(name).is_some()
}

/// `INVALOG_NATS__CONNECT_TIMEOUT` → `["nats", "connect_timeout"]`; `None`
/// for variables that are not configuration overrides.
fn config_path(name: &str) -> Option<Vec<String>> {
    let prefix = name.get(..ENV_PREFIX.len())?;
    if !prefix.eq_ignore_ascii_case(ENV_PREFIX) {
        return None;
    }
    let rest = &name[ENV_PREFIX.len()..];
    rest.contains("__")
        .then(|| rest.split("__").map(str::to_ascii_lowercase).collect())
}

fn insert(dict: &mut Dict, path: &[String], value: Value) {
    let (first, rest) = path.split_first().expect("paths are not empty");
    if rest.is_empty() {
        dict.insert(first.clone(), value);
        return;
    }
    let entry = dict
        .entry(first.clone())
        .or_insert_with(|| Value::from(Dict::new()));
    if entry.as_dict().is_none() {
        *entry = Value::from(Dict::new());
    }
    if let Value::Dict(_, inner) = entry {
        insert(inner, rest, value);
    }
}

/// TOML's message without the quoted source line, which could hold a
/// secret: "TOML parse error at line 3, column 12: invalid basic string".
fn without_snippet(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.contains('|'))
        .collect::<Vec<_>>()
        .join(": ")
}

fn quoted_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Serde's "expected" in the words of the docs.
fn expected_text(expected: &str) -> String {
    match expected {
        "u64" | "usize" => "a whole number".into(),
        "u8" | "u16" | "u32" => format!(
            "a whole number up to {}",
            match expected {
                "u8" => u32::from(u8::MAX),
                "u16" => u32::from(u16::MAX),
                _ => u32::MAX,
            }
        ),
        "a sequence" => "an array".into(),
        "a map" => "a table".into(),
        e if e.starts_with("struct ") => "a table".into(),
        e => e.into(),
    }
}

/// What was found, by type only.
fn type_of(actual: &Actual) -> &'static str {
    match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "a whole number",
        Actual::Float(_) => "a decimal number",
        Actual::Char(_) | Actual::Str(_) => "a string",
        Actual::Seq => "an array",
        Actual::Map => "a table",
        _ => "a value of another type",
    }
}
