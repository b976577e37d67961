//! Unit tests of loading and validation: defaults, environment overrides,
//! the rules between keys, and that no secret reaches a message or the
//! effective configuration. Every test goes through [`check`], which writes
//! the TOML to a temporary file and loads it with an explicit environment.
//! (The error messages of the most common mistakes, and the example files,
//! are pinned by the integration tests in tests/it/config.rs.)

use std::path::PathBuf;
use std::time::Duration;

use super::*;
use crate::applier::{ApplierSettings, CommandSettings, RedisRefreshAll};
use crate::{CheckpointSettings, HttpSettings, LoggingSettings};
use invalog::connect::{NatsAuth, TlsSettings};
use invalog::model::NodeId;
use invalog::node::NodeSettings;
use invalog::secret::Secret;
use invalog::stream::StreamPolicy;

const CONTENT_ID: &str = "91104242-7ad8-41d5-9b2a-7eea69f52bb7";

/// Loads `toml` with `env`; errors are returned as their message, with the
/// temporary path shown as `c.toml`.
fn check(toml: &str, env: &[(&str, &str)]) -> Result<Config, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, toml).unwrap();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    load_with_env(&path, &env)
        .map_err(|e| e.to_string().replace(&path.display().to_string(), "c.toml"))
}

fn error(toml: &str, env: &[(&str, &str)]) -> String {
    check(toml, env).expect_err("the configuration is refused")
}

/// A file with one refresher applied by a command.
fn agent_toml(extra: &str) -> String {
    format!(
        "{extra}\n[[refreshers]]\nname = \"content\"\nid = \"{CONTENT_ID}\"\n\
         [refreshers.applier]\nkind = \"command\"\nprogram = \"/bin/true\"\n"
    )
}

#[test]
fn an_empty_file_is_a_client_with_every_default() {
    let config = check("", &[]).unwrap();
    let client = config.client().unwrap();
    assert_eq!(client.nats, NatsSettings::default());
    assert_eq!(client.log, LogSettings::default());
    assert_eq!(client.publisher, PublisherSettings::new("invalog-cli"));
    assert!(client.refreshers.is_empty());
    let refused = config.agent().unwrap_err();
    assert_eq!(refused.kind(), ConfigErrorKind::MissingKey);
    assert_eq!(refused.key(), Some("node.id"));
}

#[test]
fn the_agent_gets_defaults_derived_from_its_node_id() {
    let config = check(&agent_toml("[node]\nid = \"web-1\""), &[]).unwrap();
    let agent = config.agent().unwrap();
    let node_id = NodeId::new("web-1").unwrap();
    let node = NodeSettings {
        fill_guard_window: Some(4096),
        ..NodeSettings::new(node_id)
    };
    assert_eq!(agent.node, node, "the agent keeps the stale-fill guard");
    assert_eq!(
        agent.checkpoint,
        CheckpointSettings::File {
            path: PathBuf::from("./invalog-web-1.checkpoint.json")
        }
    );
    assert_eq!(agent.provision, StreamPolicy::Create);
    assert_eq!(agent.http, HttpSettings::default());
    assert_eq!(agent.logging, LoggingSettings::default());
    assert_eq!(
        agent.refreshers[0].1,
        ApplierSettings::Command(CommandSettings {
            program: "/bin/true".into(),
            args: vec![],
            timeout: Duration::from_secs(10),
            max_batches_per_request: 1,
        })
    );
    assert_eq!(config.client().unwrap().publisher.origin, "web-1");
}

#[test]
fn environment_variables_override_the_file_and_others_are_ignored() {
    let env = [
        ("INVALOG_NODE__ID", "web-2"),
        ("INVALOG_NATS__URLS", "nats://a:4222, nats://b:4222"),
        ("INVALOG_STREAM__REPLICAS", "3"),
        ("INVALOG_STREAM__PROVISION", "false"),
        ("INVALOG_NODE__RETRY__ATTEMPTS", "7"),
        ("invalog_logging__level", "debug"),
        ("INVALOG_CONFIG", "not a key: no double underscore"),
        ("OTHER__THING", "ignored"),
    ];
    let config = check(
        &agent_toml("[node]\nid = \"web-1\"\n[stream]\nreplicas = 1"),
        &env,
    );
    let agent = config.unwrap().agent().unwrap();
    assert_eq!(agent.node.node_id.as_str(), "web-2");
    assert_eq!(agent.nats.urls, ["nats://a:4222", "nats://b:4222"]);
    assert_eq!(agent.log.replicas, 3);
    assert_eq!(agent.provision, StreamPolicy::Off);
    assert_eq!(agent.node.retry.attempts, 7);
    assert_eq!(agent.logging.level, "debug");
}

#[test]
fn errors_name_the_environment_variable_that_set_the_value() {
    let message = error(
        "[stream]\nreplicas = 1",
        &[("INVALOG_STREAM__REPLICAS", "nine")],
    );
    assert_eq!(
        message,
        "environment variable INVALOG_STREAM__REPLICAS: invalid value for `stream.replicas`: expected a whole number, found a string"
    );
    assert_eq!(
        error("", &[("INVALOG_REFRESHERS__0__NAME", "x")]),
        "environment variable INVALOG_REFRESHERS__0__NAME: refreshers cannot be set from the environment; define them in the file"
    );
}

#[test]
fn nats_authenticates_one_way_only() {
    let config = check("[nats]\nuser = \"app\"\npassword = \"pw\"", &[]).unwrap();
    assert_eq!(
        config.client().unwrap().nats.auth,
        NatsAuth::UserPassword {
            user: "app".into(),
            password: Secret::new("pw")
        }
    );
    assert_eq!(
        error("[nats]\nuser = \"app\"", &[]),
        "c.toml: missing required key `nats.password`; `nats.user` needs a password (`password` or `password_file`)"
    );
    assert_eq!(
        error("[nats]\nuser = \"app\"\npassword = \"pw\"\ntoken = \"t\"", &[]),
        "c.toml: `nats.token` conflicts with `nats.user`; authenticate one way only: user and password, token, nkey seed or creds file"
    );
    assert_eq!(
        error("[nats]\nnkey_seed = \"XX123\"", &[]),
        "c.toml: invalid value for `nats.nkey_seed`: not a user nkey seed (those start with `SU`)"
    );
}

#[test]
fn secrets_are_read_from_files_without_the_final_newline() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let toml = format!("[nats]\ntoken_file = {:?}", token.display().to_string());
    let config = check(&toml, &[]).unwrap();
    assert_eq!(
        config.client().unwrap().nats.auth,
        NatsAuth::Token(Secret::new("s3cret-token"))
    );
    let both = format!("{toml}\ntoken = \"x\"");
    assert_eq!(
        error(&both, &[]),
        "c.toml: both `nats.token` and `nats.token_file` are set; keep one"
    );
    let missing = error("[nats]\ntoken_file = \"/nonexistent/token\"", &[]);
    assert!(
        missing.starts_with(
            "c.toml: cannot read `nats.token_file` (`/nonexistent/token`): No such file"
        ),
        "{missing}"
    );
}

#[test]
fn tls_needs_certificate_and_key_together() {
    let config = check("[nats.tls]\nca_file = \"/etc/ca.pem\"", &[]).unwrap();
    assert_eq!(
        config.client().unwrap().nats.tls,
        Some(TlsSettings {
            ca_file: Some("/etc/ca.pem".into()),
            ..TlsSettings::default()
        })
    );
    assert_eq!(
        error("[nats.tls]\ncert_file = \"/etc/c.pem\"", &[]),
        "c.toml: missing required key `nats.tls.key_file`; a client certificate (`cert_file`) needs its private key"
    );
}

#[test]
fn stream_limits_agree_with_each_other() {
    let config = check("[stream]\nmax_age = \"unlimited\"\nmax_bytes = 4096", &[]).unwrap();
    let log = config.client().unwrap().log;
    assert_eq!((log.max_age, log.max_bytes), (None, Some(4096)));
    assert_eq!(
        error("[stream]\nmax_age = \"1m\"\nduplicate_window = \"2m\"", &[]),
        "c.toml: `stream.duplicate_window` is longer than `stream.max_age`; shorten it or keep messages longer"
    );
    assert_eq!(
        error("[stream]\nstorage = \"fiel\"", &[]),
        "c.toml: invalid value for `stream.storage`: unknown value `fiel`; did you mean `file`?"
    );
    assert_eq!(
        error("[stream]\nreplicas = 9", &[]),
        "c.toml: invalid value for `stream.replicas`: 9 is out of range; use 1 to 5"
    );
}

#[test]
fn checkpoint_keys_belong_to_their_store() {
    let config = check(
        &agent_toml("[node]\nid = \"web-1\"\n[checkpoint]\nstore = \"kv\""),
        &[],
    );
    assert_eq!(
        config.unwrap().agent().unwrap().checkpoint,
        CheckpointSettings::Kv {
            bucket: "invalog_checkpoints".into(),
            replicas: 1
        }
    );
    assert_eq!(
        error("[checkpoint]\nstore = \"kv\"\npath = \"/x\"", &[]),
        "c.toml: `checkpoint.path` applies to `checkpoint.store = \"file\"` only; remove it or change the store"
    );
}

#[test]
fn appliers_accept_only_their_own_keys() {
    let toml = |applier: &str| {
        format!("[[refreshers]]\nname = \"content\"\nid = \"{CONTENT_ID}\"\napplier = {applier}")
    };
    assert_eq!(
        error(&toml("{ kind = \"command\", program = \"/bin/true\", url = \"http://x\" }"), &[]),
        "c.toml: `refreshers[0].applier.url` does not apply to applier kind `command`, whose keys are: `program`, `args`, `timeout`, `max_batches_per_request`"
    );
    let zero = error(
        &toml("{ kind = \"webhook\", url = \"http://x/h\", max_batches_per_request = 0 }"),
        &[],
    );
    assert!(
        zero.contains("`refreshers[0].applier.max_batches_per_request`"),
        "{zero}"
    );
    assert!(zero.contains("out of range; use 1 to 10000"), "{zero}");
    let grouped = check(
        &toml("{ kind = \"webhook\", url = \"http://x/h\", max_batches_per_request = 50 }"),
        &[],
    );
    let applier = grouped.unwrap().settings.refreshers[0].1.clone();
    let Some(ApplierSettings::Webhook(webhook)) = applier else {
        panic!("a webhook applier")
    };
    assert_eq!(webhook.max_batches_per_request, 50);
    let bad_template = error(
        &toml("{ kind = \"redis\", url = \"redis://h/0\", keys = [\"c:{id}\", \"c:{name}\"] }"),
        &[],
    );
    assert!(
        bad_template.starts_with("c.toml: invalid value for `refreshers[0].applier.keys[1]`: "),
        "{bad_template}"
    );
    let redis = check(
        &toml("{ kind = \"redis\", url = \"redis://h/0\", keys = [\"c:{id}\", \"p:{key}\"] }"),
        &[],
    );
    let applier = redis.unwrap().settings.refreshers[0].1.clone();
    let Some(ApplierSettings::Redis(redis)) = applier else {
        panic!("a redis applier")
    };
    assert_eq!(
        redis.refresh_all,
        RedisRefreshAll::Patterns(vec!["c:*".into(), "p:*".into()]),
        "refresh-all defaults to the templates' patterns"
    );
    assert_eq!(
        error(&toml("{ kind = \"webhook\", url = \"ftp://x/\" }"), &[]),
        "c.toml: invalid value for `refreshers[0].applier.url`: must be an http:// or https:// URL with a host"
    );
    let config = check(&toml("{ kind = \"webhook\", url = \"http://x/\" }"), &[]).unwrap();
    assert_eq!(
        config.agent().unwrap_err().to_string().replace(&*config.file().display().to_string(), "c.toml"),
        "c.toml: missing required key `node.id`; the agent needs a stable node id, like `id = \"web-1\"` in `[node]` (or INVALOG_NODE__ID=web-1)"
    );
}

#[test]
fn messages_never_echo_a_secret() {
    let unterminated = error("[nats]\ntoken = \"hunter2", &[]);
    assert!(unterminated.starts_with("c.toml: invalid TOML: TOML parse error at line 2"));
    assert!(!unterminated.contains("hunter2"), "{unterminated}");
    let mistyped = error("[nats]\ntoken = 987654321", &[]);
    assert_eq!(
        mistyped,
        "c.toml: invalid value for `nats.token`: expected a string, found a whole number"
    );
    let bad_url = error("[nats]\nurls = [\"http://user:hunter2@x:4222\"]", &[]);
    assert!(!bad_url.contains("hunter2"), "{bad_url}");
}

#[test]
fn the_effective_configuration_is_redacted_and_loads_again_unchanged() {
    let toml = agent_toml(
        "[node]\nid = \"web-1\"\n[nats]\nurls = [\"nats://app:urlpass@n1:4222\"]\n\
         user = \"app\"\npassword = \"natspass\"\n\
         [[refreshers]]\nname = \"media\"\nid = \"ea09a239-dbca-4b4e-af30-b000d8c399fc\"\n\
         [refreshers.applier]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:8080/x?token=querypass\"\n\
         bearer_token = \"bearerpass\"\nhmac_secret = \"hmacpass\"\n\
         [[refreshers]]\nname = \"pages\"\nid = \"9fa0cf2c-1a91-426a-829a-d5cf66aa9576\"\n\
         [refreshers.applier]\nkind = \"redis\"\nurl = \"redis://:redispass@r:6379/0\"\n\
         keys = [\"page:{key}\"]\nrefresh_all = \"flushdb\"\n\
         [[refreshers]]\nname = \"purge\"\nid = \"1d7e8a5c-3f0b-4c65-9d4e-6b2a7c8e9f01\"\n\
         [refreshers.applier]\nkind = \"command\"\nprogram = \"/bin/true\"\n\
         args = [\"--token\", \"argpass\"]\n",
    );
    let effective = check(&toml, &[]).unwrap().effective_toml();
    for secret in [
        "urlpass",
        "natspass",
        "bearerpass",
        "hmacpass",
        "redispass",
        "querypass",
        "argpass",
    ] {
        assert!(!effective.contains(secret), "{secret} in:\n{effective}");
    }
    assert!(effective.contains("password = \"[redacted]\""));
    assert!(effective.contains("url = \"redis://[redacted]@r:6379/0\""));
    assert!(effective.contains("url = \"http://127.0.0.1:8080/x?[redacted]\""));
    assert!(effective.contains("args = [\"[redacted]\", \"[redacted]\"]"));
    let again = check(&effective, &[]).unwrap();
    assert_eq!(again.effective_toml(), effective);
}

#[test]
fn presence_has_defaults_and_stale_after_outlasts_the_interval() {
    use invalog::presence::PresenceSettings;
    let client = check("", &[]).unwrap().client().unwrap();
    assert_eq!(client.presence, PresenceSettings::default());
    assert_eq!(client.stale_after, Duration::from_secs(30));
    let config = check(
        &agent_toml("[node]\nid = \"web-1\"\n[presence]\nbucket = \"nodes\"\ninterval = \"2s\"\nreplicas = 3\nstale_after = \"10s\""),
        &[("INVALOG_PRESENCE__INTERVAL", "1s")],
    )
    .unwrap();
    let agent = config.agent().unwrap();
    assert_eq!(
        agent.presence,
        PresenceSettings {
            bucket: "nodes".into(),
            interval: Duration::from_secs(1),
            replicas: 3,
        }
    );
    assert_eq!(
        config.client().unwrap().stale_after,
        Duration::from_secs(10)
    );
    assert!(error("[presence]\nstale_after = \"5s\"", &[])
        .contains("`presence.stale_after` is not longer than `presence.interval`"));
    assert!(error("[presence]\nreplicas = 0", &[]).contains("`presence.replicas`"));
    assert!(error("[presence]\nbucket = \"a.b\"", &[]).contains("`presence.bucket`"));
    assert!(error("[presence]\nintervall = \"1s\"", &[]).contains("did you mean `interval`"));
}

#[test]
fn cold_boot_slots_have_defaults_and_follow_the_presence_replicas() {
    use invalog::node::ColdBootLimit;
    let config = check(&agent_toml("[node]\nid = \"web-1\""), &[]).unwrap();
    assert_eq!(
        config.agent().unwrap().node.cold_boot,
        ColdBootLimit::default()
    );
    let toml = "[node]\nid = \"web-1\"\n[node.cold_boot]\nmax_concurrent = 0\n\
                lease_ttl = \"10s\"\nretry_interval = \"1s\"\nbucket = \"slots\"\n\
                [presence]\nreplicas = 3";
    let config = check(
        &agent_toml(toml),
        &[("INVALOG_NODE__COLD_BOOT__MAX_CONCURRENT", "4")],
    )
    .unwrap();
    assert_eq!(
        config.agent().unwrap().node.cold_boot,
        ColdBootLimit {
            max_concurrent: 4,
            lease_ttl: Duration::from_secs(10),
            retry_interval: Duration::from_secs(1),
            bucket: "slots".into(),
            replicas: 3,
        }
    );
    let short = "[node]\nid = \"w\"\n[node.cold_boot]\nlease_ttl = \"500ms\"";
    assert!(error(&agent_toml(short), &[]).contains("`node.cold_boot.lease_ttl`"));
    let many = "[node]\nid = \"w\"\n[node.cold_boot]\nmax_concurrent = 1001";
    assert!(error(&agent_toml(many), &[]).contains("`node.cold_boot.max_concurrent`"));
}

#[test]
fn stream_provision_is_create_update_or_off_and_accepts_the_old_booleans() {
    let policy = |value: &str| {
        let text = agent_toml(&format!(
            "[node]\nid = \"web-1\"\n[stream]\nprovision = {value}"
        ));
        check(&text, &[]).map(|c| c.agent().unwrap().provision)
    };
    assert_eq!(policy("\"create\"").unwrap(), StreamPolicy::Create);
    assert_eq!(policy("\"update\"").unwrap(), StreamPolicy::Update);
    assert_eq!(policy("\"off\"").unwrap(), StreamPolicy::Off);
    assert_eq!(policy("true").unwrap(), StreamPolicy::Update);
    assert_eq!(policy("false").unwrap(), StreamPolicy::Off);
    let err = policy("\"updte\"").unwrap_err().to_string();
    assert!(
        err.contains("stream.provision") && err.contains("update"),
        "{err}"
    );
    let env = [("INVALOG_STREAM__PROVISION", "update")];
    let config = check(&agent_toml("[node]\nid = \"web-1\""), &env).unwrap();
    assert_eq!(config.agent().unwrap().provision, StreamPolicy::Update);
    assert!(config.effective_toml().contains("provision = \"update\""));
}

#[test]
fn the_fill_guard_window_is_configurable_and_0_turns_it_off() {
    let window = |value: &str| {
        let toml = agent_toml(&format!(
            "[node]\nid = \"web-1\"\nfill_guard_window = {value}"
        ));
        check(&toml, &[]).map(|c| c.agent().unwrap().node.fill_guard_window)
    };
    assert_eq!(window("10"), Ok(Some(10)));
    assert_eq!(window("0"), Ok(None));
    let err = window("2000000").unwrap_err();
    assert!(err.contains("node.fill_guard_window"), "{err}");
}

#[test]
fn the_catch_up_lookahead_is_configurable_and_0_turns_it_off() {
    let lookahead = |node: &str| {
        let toml = agent_toml(&format!("[node]\n{node}"));
        check(&toml, &[]).map(|c| {
            let client = c.client().unwrap().catch_up_lookahead;
            let agent = c.agent().map(|a| a.node.catch_up_lookahead).ok();
            (client, agent, c.effective_toml())
        })
    };
    let (client, agent, toml) = lookahead("id = \"web-1\"").unwrap();
    assert_eq!((client, agent), (1000, Some(1000)), "the core default");
    assert!(toml.contains("catch_up_lookahead = 1000"), "{toml}");
    let (client, agent, _) = lookahead("id = \"web-1\"\ncatch_up_lookahead = 50").unwrap();
    assert_eq!((client, agent), (50, Some(50)));
    let (client, agent, _) = lookahead("id = \"web-1\"\ncatch_up_lookahead = 0").unwrap();
    assert_eq!((client, agent), (0, Some(0)));
    // Without a node id (a client, `replay --dry-run`) it is still read.
    let (client, agent, _) = lookahead("catch_up_lookahead = 7").unwrap();
    assert_eq!((client, agent), (7, None));
    let err = lookahead("id = \"web-1\"\ncatch_up_lookahead = 1000001").unwrap_err();
    assert!(
        err.contains("node.catch_up_lookahead") && err.contains("0 to 1000000"),
        "{err}"
    );
    let env = [("INVALOG_NODE__CATCH_UP_LOOKAHEAD", "3")];
    let config = check(&agent_toml("[node]\nid = \"web-1\""), &env).unwrap();
    assert_eq!(config.agent().unwrap().node.catch_up_lookahead, 3);
}

#[test]
fn a_password_with_an_unencoded_slash_is_refused_without_being_shown() {
    let misread = "nats://alice:4222/s3cret@127.0.0.1:4222";
    let message = error(&format!("[nats]\nurls = [\"{misread}\"]"), &[]);
    assert!(
        message.starts_with(
            "c.toml: invalid value for `nats.urls[0]`: the URL has an `@` after its host"
        ),
        "{message}"
    );
    assert!(message.contains("percent-encode"), "{message}");
    let from_env = error("", &[("INVALOG_NATS__URLS", misread)]);
    assert!(
        from_env.starts_with("environment variable INVALOG_NATS__URLS: "),
        "{from_env}"
    );
    let redis = agent_toml(
        "[node]\nid = \"web-1\"\n[[refreshers]]\nname = \"pages\"\n\
         id = \"9fa0cf2c-1a91-426a-829a-d5cf66aa9576\"\n[refreshers.applier]\nkind = \"redis\"\n\
         url = \"redis://:pw/s3cret@r:6379/0\"\nkeys = [\"page:{key}\"]\n",
    );
    let redis = check(&redis, &[]).and_then(|c| c.agent().map_err(|e| e.to_string()));
    let redis = redis.expect_err("refused");
    assert!(redis.contains("percent-encode"), "{redis}");
    for text in [&message, &from_env, &redis] {
        assert!(!text.contains("s3cret"), "{text}");
    }
    let encoded = check(
        "[nats]\nurls = [\"nats://alice:4222%2Fs3cret@127.0.0.1:4222\"]",
        &[],
    );
    assert!(encoded.is_ok());
}

#[test]
fn a_bearer_token_must_be_printable_ascii() {
    let toml = agent_toml(
        "[node]\nid = \"web-1\"\n[[refreshers]]\nname = \"media\"\n\
         id = \"ea09a239-dbca-4b4e-af30-b000d8c399fc\"\n[refreshers.applier]\nkind = \"webhook\"\n\
         url = \"http://127.0.0.1:8080/\"\nbearer_token = \"caf\u{e9}-token\"\n",
    );
    let message = check(&toml, &[])
        .and_then(|c| c.agent().map_err(|e| e.to_string()))
        .expect_err("refused");
    assert!(
        message.ends_with(
            "invalid value for `refreshers[0].applier.bearer_token`: must be non-empty printable ASCII (the value is not shown)"
        ),
        "{message}"
    );
    assert!(!message.contains("caf"), "{message}");
}

#[test]
fn the_file_must_use_the_schema_types() {
    assert_eq!(
        error("[stream]\nreplicas = \"1\"", &[]),
        "c.toml: invalid value for `stream.replicas`: expected a whole number, found a string"
    );
    assert_eq!(
        error("[nats.tls]\nrequired = \"true\"", &[]),
        "c.toml: invalid value for `nats.tls.required`: expected a boolean, found a string"
    );
    // The environment has only strings; they are still read as numbers.
    let config = check(
        "[stream]\nreplicas = 1",
        &[("INVALOG_STREAM__REPLICAS", "3")],
    );
    assert_eq!(config.unwrap().client().unwrap().log.replicas, 3);
}

#[test]
fn a_redis_template_starting_with_a_placeholder_needs_an_explicit_refresh_all() {
    let redis = |keys: &str, refresh_all: &str| {
        agent_toml(&format!(
            "[node]\nid = \"web-1\"\n[[refreshers]]\nname = \"pages\"\n\
             id = \"9fa0cf2c-1a91-426a-829a-d5cf66aa9576\"\n[refreshers.applier]\nkind = \"redis\"\n\
             url = \"redis://127.0.0.1:6379/0\"\nkeys = {keys}\n{refresh_all}"
        ))
    };
    let agent = |toml: String| check(&toml, &[]).and_then(|c| c.agent().map_err(|e| e.to_string()));
    for keys in [r#"["{key}"]"#, r#"["page:{id}", "{id}:html"]"#] {
        let message = agent(redis(keys, "")).expect_err("refused");
        assert!(
            message.contains("starts with a placeholder, so the refresh-all derived from it would delete every key of the database"),
            "{message}"
        );
        assert!(message.contains("refresh_all = { patterns"), "{message}");
    }
    let message = agent(redis(r#"["page:{id}", "{id}:html"]"#, "")).unwrap_err();
    assert!(
        message.starts_with(
            "c.toml: invalid value for `refreshers[0].applier.keys[1]`: the template `{id}:html`"
        ),
        "{message}"
    );
    for explicit in [
        "refresh_all = { patterns = [\"page:*\"] }",
        "refresh_all = \"flushdb\"",
    ] {
        assert!(agent(redis(r#"["{key}"]"#, explicit)).is_ok(), "{explicit}");
    }
    let prefixed = agent(redis(r#"["{{t}}:{key}"]"#, "")).unwrap();
    let (_, ApplierSettings::Redis(settings)) = &prefixed.refreshers[0] else {
        panic!("a redis applier");
    };
    assert_eq!(
        settings.refresh_all,
        RedisRefreshAll::Patterns(vec!["{t}:*".into()])
    );
}
