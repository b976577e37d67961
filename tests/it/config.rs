//! Configuration at the boundary: every example in config/ loads for its
//! use, environment variables override the file, the most common mistakes
//! get exactly the message docs/configuration.md promises, and the real
//! `invalog config check` exits 0 or 2 without ever printing a secret.
//! No NATS server is needed.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use invalog::connect::NatsAuth;
use invalog::secret::Secret;
use invalog_agent::applier::ApplierSettings;
use invalog_agent::config::{self, Config, ConfigErrorKind, Origin};
use invalog_agent::CheckpointSettings;

const CONTENT_ID: &str = "91104242-7ad8-41d5-9b2a-7eea69f52bb7";
const MEDIA_ID: &str = "ea09a239-dbca-4b4e-af30-b000d8c399fc";

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A configuration file in a temporary directory, named `invalog.toml`.
struct TempConfig {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn temp_config(toml: &str) -> TempConfig {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("invalog.toml");
    std::fs::write(&path, toml).unwrap();
    TempConfig { _dir: dir, path }
}

/// The message of loading `toml` with `env`, the temporary path shown as
/// `invalog.toml`.
fn error_of(toml: &str, env_pairs: &[(&str, &str)]) -> String {
    let file = temp_config(toml);
    let error = config::load_with_env(&file.path, &env(env_pairs))
        .expect_err("the configuration is refused");
    error
        .to_string()
        .replace(&file.path.display().to_string(), "invalog.toml")
}

fn refresher(name: &str, id: &str) -> String {
    format!("[[refreshers]]\nname = \"{name}\"\nid = \"{id}\"\n")
}

fn is_loopback(host_port: &str) -> bool {
    let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host and port of a `scheme://host:port/...` URL.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").expect("a URL").1;
    rest.split('/').next().unwrap()
}

#[test]
fn every_example_loads_for_its_use() {
    let mut examples: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    examples.sort();
    assert!(examples.len() >= 4, "examples: {examples:?}");
    for path in &examples {
        let loaded: Config = config::load_with_env(path, &[])
            .unwrap_or_else(|e| panic!("{} does not load: {e}", path.display()));
        let client = loaded.client().unwrap();
        assert!(!client.refreshers.is_empty(), "{}", path.display());
        let name = path.file_stem().unwrap().to_str().unwrap();
        if name == "publisher" {
            assert!(loaded.agent().is_err(), "the publisher has no node");
            continue;
        }
        let agent = loaded
            .agent()
            .unwrap_or_else(|e| panic!("{} is not an agent: {e}", path.display()));
        if name == "demo" || name == "agent" {
            for url in &agent.nats.urls {
                assert!(is_loopback(authority(url)), "{name}: {url}");
            }
            assert!(agent.http.listen.ip().is_loopback(), "{name}");
            for (_, applier) in &agent.refreshers {
                match applier {
                    ApplierSettings::Webhook(w) => assert!(is_loopback(authority(&w.url))),
                    ApplierSettings::Redis(r) => assert!(is_loopback(authority(r.url.expose()))),
                    ApplierSettings::Command(_) => {}
                }
            }
        }
    }
}

#[test]
fn the_docker_example_runs_on_a_cluster() {
    let loaded = config::load_with_env(&examples_dir().join("docker.toml"), &[]).unwrap();
    let agent = loaded.agent().unwrap();
    assert_eq!(
        agent.nats.urls,
        [
            "nats://nats-1:4222",
            "nats://nats-2:4222",
            "nats://nats-3:4222"
        ]
    );
    assert_eq!(agent.log.replicas, 3);
    assert!(matches!(
        agent.checkpoint,
        CheckpointSettings::Kv { replicas: 3, .. }
    ));
    let urls: Vec<String> = agent
        .refreshers
        .iter()
        .map(|(_, applier)| match applier {
            ApplierSettings::Webhook(w) => w.url.clone(),
            ApplierSettings::Redis(r) => r.url.expose().to_owned(),
            ApplierSettings::Command(c) => c.program.display().to_string(),
        })
        .collect();
    assert_eq!(urls, ["http://app:8080/invalidate", "redis://redis:6379/0"]);
}

#[test]
fn environment_variables_override_an_example() {
    let overrides = env(&[
        ("INVALOG_NODE__ID", "web-2"),
        (
            "INVALOG_NATS__URLS",
            "nats://10.0.0.1:4222,nats://10.0.0.2:4222",
        ),
        ("INVALOG_NATS__USER", "invalog"),
        ("INVALOG_NATS__PASSWORD", "from-the-environment"),
        ("INVALOG_STREAM__MAX_AGE", "2d"),
        ("INVALOG_HTTP__LISTEN", "127.0.0.1:19464"),
    ]);
    let loaded = config::load_with_env(&examples_dir().join("docker.toml"), &overrides).unwrap();
    let agent = loaded.agent().unwrap();
    assert_eq!(agent.node.node_id.as_str(), "web-2");
    assert_eq!(
        agent.nats.urls,
        ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]
    );
    assert_eq!(
        agent.nats.auth,
        NatsAuth::UserPassword {
            user: "invalog".into(),
            password: Secret::new("from-the-environment"),
        }
    );
    assert_eq!(
        agent.log.max_age,
        Some(std::time::Duration::from_secs(2 * 86400))
    );
    assert_eq!(agent.http.listen.port(), 19464);
}

#[test]
fn common_mistakes_get_exact_messages() {
    let content = refresher("content", CONTENT_ID);
    assert_message(
        "[nats]\nulr = \"nats://127.0.0.1:4222\"\n",
        &[],
        "invalog.toml: unknown key `nats.ulr`; did you mean `urls`?",
    );
    assert_message(
        "",
        &[("INVALOG_NATS__ULR", "nats://127.0.0.1:4222")],
        "environment variable INVALOG_NATS__ULR: unknown key `nats.ulr`; did you mean `INVALOG_NATS__URLS`?",
    );
    assert_message(
        "[node]\nid = \"web-1\"\nflush_interval = \"1 sec and a bit\"\n",
        &[],
        "invalog.toml: invalid value for `node.flush_interval`: `1 sec and a bit` is not a duration (expected number at 6); write a number and a unit, like `500ms`, `30s`, `5m` or `7d`",
    );
    assert_message(
        "[stream]\nmax_bytes = \"10 GiBs\"\n",
        &[],
        "invalog.toml: invalid value for `stream.max_bytes`: `10 GiBs` is not a size; write a number of bytes (`1048576`) or a number and a unit (`512KiB`, `1MiB`, `10GiB`)",
    );
    assert_message(
        refresher("home page", CONTENT_ID),
        &[],
        "invalog.toml: invalid value for `refreshers[0].name`: `home page` is not a valid refresher name: use only letters, digits, `_` and `-`",
    );
    assert_message(
        format!("{content}{}", refresher("content", MEDIA_ID)),
        &[],
        "invalog.toml: duplicate refresher name `content` in `refreshers[1].name` (also in `refreshers[0]`); give each refresher its own name",
    );
    assert_message(
        format!("{content}{}", refresher("media", CONTENT_ID)),
        &[],
        "invalog.toml: duplicate refresher id `91104242-7ad8-41d5-9b2a-7eea69f52bb7` in `refreshers[1].id` (also in `refreshers[0]`); give each refresher its own UUID",
    );
    assert_message(
        "[[refreshers]]\nname = \"content\"\n",
        &[],
        "invalog.toml: missing required key `refreshers[0].id`; give every refresher a stable UUID, like `id = \"6902e22c-3a5e-4f7b-9e0f-2d1c4b8a7e55\"` (`uuidgen` makes one), and never change it",
    );
    assert_message(
        format!("{content}[refreshers.applier]\nkind = \"webhok\"\n"),
        &[],
        "invalog.toml: invalid value for `refreshers[0].applier.kind`: unknown applier kind `webhok`; did you mean `webhook`?",
    );
}

/// Loading `toml` with `env_pairs` fails with exactly `expected`.
fn assert_message(toml: impl AsRef<str>, env_pairs: &[(&str, &str)], expected: &str) {
    let toml = toml.as_ref();
    assert_eq!(error_of(toml, env_pairs), expected, "for:\n{toml}");
}

#[test]
fn a_missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.toml");
    let error = config::load_with_env(&path, &[]).unwrap_err();
    assert_eq!(error.kind(), ConfigErrorKind::Read);
    assert_eq!(error.origin(), &Origin::File(path.clone()));
    assert_eq!(
        error.to_string(),
        format!(
            "{}: cannot read the configuration file: No such file or directory (os error 2)",
            path.display()
        )
    );
}

/// A file that holds every kind of secret: NATS password, webhook bearer
/// token and HMAC key, a password in a Redis URL.
fn secret_laden_toml() -> String {
    format!(
        "[node]\nid = \"web-1\"\n[nats]\nuser = \"invalog\"\npassword = \"nats-password-1\"\n\
         {}[refreshers.applier]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:8080/invalidate\"\n\
         bearer_token = \"bearer-token-2\"\nhmac_secret = \"hmac-secret-3\"\n\
         {}[refreshers.applier]\nkind = \"redis\"\nurl = \"redis://:redis-password-4@127.0.0.1:6379/0\"\n\
         keys = [\"media:{{id}}\"]\nrefresh_all = {{ patterns = [\"media:*\"] }}\n",
        refresher("content", CONTENT_ID),
        refresher("media", MEDIA_ID),
    )
}

const SECRETS: [&str; 5] = [
    "nats-password-1",
    "bearer-token-2",
    "hmac-secret-3",
    "redis-password-4",
    "env-password-5",
];

/// Runs `invalog config check` with only the given environment.
fn config_check(args: &[&str], env_pairs: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_invalog"))
        .arg("config")
        .arg("check")
        .args(args)
        .env_clear()
        .envs(env_pairs.iter().copied())
        .output()
        .expect("invalog runs")
}

fn assert_no_secret(output: &Output) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    for secret in SECRETS {
        assert!(!text.contains(secret), "`{secret}` printed:\n{text}");
    }
}

#[test]
fn config_check_prints_the_effective_configuration_redacted() {
    let file = temp_config(&secret_laden_toml());
    let path = file.path.to_str().unwrap();
    let output = config_check(&[path], &[("INVALOG_NATS__PASSWORD", "env-password-5")]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_no_secret(&output);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("password = \"[redacted]\""), "{stdout}");
    assert!(stdout.contains("bearer_token = \"[redacted]\""), "{stdout}");
    assert!(stdout.contains("hmac_secret = \"[redacted]\""), "{stdout}");
    assert!(
        stdout.contains("url = \"redis://[redacted]@127.0.0.1:6379/0\""),
        "{stdout}"
    );
    // What it prints is itself a valid configuration.
    let printed = temp_config(&stdout);
    let reloaded = config::load_with_env(&printed.path, &[]).unwrap();
    assert_eq!(reloaded.effective_toml(), stdout);

    let publisher = examples_dir().join("publisher.toml");
    let publisher = publisher.to_str().unwrap();
    let as_client = config_check(&[publisher, "--as", "client"], &[]);
    assert_eq!(as_client.status.code(), Some(0), "{as_client:?}");
}

#[test]
fn config_check_exits_2_on_an_invalid_file_and_names_the_key() {
    let toml = format!("{}\n[stream]\nreplicas = 7\n", secret_laden_toml());
    let file = temp_config(&toml);
    let path = file.path.to_str().unwrap();
    let output = config_check(&[path], &[("INVALOG_NATS__PASSWORD", "env-password-5")]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(output.stdout.is_empty());
    assert_no_secret(&output);
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim_end(),
        format!(
            "invalog: {path}: invalid value for `stream.replicas`: 7 is out of range; use 1 to 5"
        )
    );

    let publisher = examples_dir().join("publisher.toml");
    let as_agent = config_check(&[publisher.to_str().unwrap()], &[]);
    assert_eq!(as_agent.status.code(), Some(2), "{as_agent:?}");
    let stderr = String::from_utf8_lossy(&as_agent.stderr);
    assert!(
        stderr.contains("missing required key `node.id`"),
        "{stderr}"
    );
}

/// What the appliers treat as secret is hidden by `config check` too, and
/// a URL that every parser would misread (a password with an unencoded
/// `/`) is refused without being shown.
#[test]
fn config_check_hides_queries_and_arguments_and_refuses_misread_urls() {
    let toml = format!(
        "[node]\nid = \"web-1\"\n{}[refreshers.applier]\nkind = \"webhook\"\n\
         url = \"http://127.0.0.1:8080/hook?token=query-secret-6\"\n\
         {}[refreshers.applier]\nkind = \"command\"\nprogram = \"/bin/true\"\n\
         args = [\"--token\", \"argument-secret-7\"]\n",
        refresher("content", CONTENT_ID),
        refresher("media", MEDIA_ID),
    );
    let file = temp_config(&toml);
    let output = config_check(&[file.path.to_str().unwrap()], &[]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    for secret in ["query-secret-6", "argument-secret-7"] {
        assert!(!stdout.contains(secret), "`{secret}` printed:\n{stdout}");
    }
    assert!(
        stdout.contains("url = \"http://127.0.0.1:8080/hook?[redacted]\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("args = [\"[redacted]\", \"[redacted]\"]"),
        "{stdout}"
    );

    let misread =
        temp_config("[nats]\nurls = [\"nats://alice:4222/nats-secret-8@127.0.0.1:4222\"]\n");
    let path = misread.path.to_str().unwrap();
    let output = config_check(&[path, "--as", "client"], &[]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("nats-secret-8"), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "invalog: {path}: invalid value for `nats.urls[0]`: the URL has an `@` after its host"
        )),
        "{stderr}"
    );
}

/// A Redis key template that starts with a placeholder would make every
/// refresh-all (which any publisher can ask for) delete the whole database:
/// `config check` refuses it until `refresh_all` says what to delete.
#[test]
fn config_check_refuses_a_redis_template_that_would_scan_everything() {
    let toml = |refresh_all: &str| {
        format!(
            "[node]\nid = \"web-1\"\n{}[refreshers.applier]\nkind = \"redis\"\n\
             url = \"redis://127.0.0.1:6379/0\"\nkeys = [\"{{key}}\"]\n{refresh_all}",
            refresher("content", CONTENT_ID),
        )
    };
    let file = temp_config(&toml(""));
    let path = file.path.to_str().unwrap();
    let output = config_check(&[path], &[]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).trim_end(),
        format!(
            "invalog: {path}: invalid value for `refreshers[0].applier.keys[0]`: the template \
             `{{key}}` starts with a placeholder, so the refresh-all derived from it would delete \
             every key of the database (any publisher can ask for a refresh-all); give it a \
             literal prefix, like `page:{{key}}`, or say what refresh-all deletes: \
             `refresh_all = {{ patterns = [\"page:*\"] }}`, or `refresh_all = \"flushdb\"` to \
             empty the database on purpose"
        )
    );
    let explicit = temp_config(&toml("refresh_all = { patterns = [\"page:*\"] }\n"));
    let output = config_check(&[explicit.path.to_str().unwrap()], &[]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
}
