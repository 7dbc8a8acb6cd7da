//! docs/configuration.md is the reference for every key of the `signet:` section. This test
//! reads its tables and holds them to the parser: every documented key is one the parser
//! knows, and every documented default is the real one (a file that spells the default out
//! loads to exactly the settings of a file that leaves it out).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_yaml::{Mapping, Value};
use std::path::Path;

const BASE: &str = "
version: 1
signet:
  upstream: http://127.0.0.1:8001
  attestation:
    mode: dev
    gpu: none
";

struct Row {
    key: String,
    /// The documented default as YAML, or `None` for `required` / `none`.
    default: Option<String>,
}

fn rows() -> Vec<Row> {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md"),
    )
    .unwrap();
    doc.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let key = cells.get(1)?.strip_prefix("`signet.")?.strip_suffix('`')?;
            let default = cells.get(2)?;
            let default = default
                .strip_prefix('`')
                .and_then(|d| d.strip_suffix('`'))
                .map(str::to_owned);
            Some(Row {
                key: format!("signet.{key}"),
                default,
            })
        })
        .collect()
}

fn set(root: &mut Value, path: &[&str], value: Value) {
    let Value::Mapping(map) = root else {
        panic!("not a mapping at {path:?}")
    };
    let key = Value::String(path[0].to_owned());
    if path.len() == 1 {
        map.insert(key, value);
        return;
    }
    let child = map
        .entry(key)
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    set(child, &path[1..], value);
}

/// The smallest valid content of the section that holds `key`, for sections with required
/// keys of their own.
fn fixture(key: &str, dir: &Path) -> Vec<(&'static str, Value)> {
    let secret = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        Value::String(path.display().to_string())
    };
    let section = key.split('.').nth(1).unwrap_or_default();
    match section {
        "tls" => vec![
            ("signet.tls.cert", secret("cert.pem", "x")),
            ("signet.tls.key", secret("key.pem", "x")),
        ],
        "auth" if key == "signet.auth.tokens" => vec![(
            "signet.auth.token_files",
            Value::Sequence(vec![secret("tokens", "0123456789abcdef\n")]),
        )],
        "auth" => vec![(
            "signet.auth.tokens",
            Value::Sequence(vec![Value::String("0123456789abcdef".to_owned())]),
        )],
        "admin" => vec![(
            "signet.admin.listen",
            Value::String("127.0.0.1:9100".to_owned()),
        )],
        "health_check" => vec![("signet.health_check", Value::Mapping(Mapping::new()))],
        "signatures" if key.starts_with("signet.signatures.redis") => vec![
            (
                "signet.signatures.backend",
                Value::String("redis".to_owned()),
            ),
            (
                "signet.signatures.redis.url",
                Value::String("redis://127.0.0.1:6379".to_owned()),
            ),
        ],
        _ => Vec::new(),
    }
}

fn load(config: &Value) -> Result<signet::config::LoadedConfig, signet::config::ConfigError> {
    signet::config::parse(&serde_yaml::to_string(config).unwrap())
}

#[test]
fn every_documented_key_parses_and_every_documented_default_is_the_real_one() {
    let rows = rows();
    assert!(
        rows.len() >= 45,
        "the tables were not found: {} rows",
        rows.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut defaults_checked = 0;
    for row in &rows {
        let path: Vec<&str> = row.key.split('.').collect();
        let mut without: Value = serde_yaml::from_str(BASE).unwrap();
        for (key, value) in fixture(&row.key, dir.path()) {
            if key != row.key {
                let fixture_path: Vec<&str> = key.split('.').collect();
                set(&mut without, &fixture_path, value);
            }
        }
        // A key the parser knows is never an "unknown field", whatever its value.
        let mut probe = without.clone();
        set(&mut probe, &path, Value::String("probe".to_owned()));
        if let Err(e) = load(&probe) {
            assert!(
                !e.message.contains("unknown field"),
                "{}: documented but unknown to the parser: {e}",
                row.key
            );
        }
        let Some(default) = &row.default else {
            continue;
        };
        let value: Value = serde_yaml::from_str(default)
            .unwrap_or_else(|e| panic!("{}: default `{default}` is not YAML: {e}", row.key));
        let mut with = without.clone();
        set(&mut with, &path, value);
        let spelled_out =
            load(&with).unwrap_or_else(|e| panic!("{} = {default} does not load: {e}", row.key));
        let left_out = load(&without)
            .unwrap_or_else(|e| panic!("without {} the file does not load: {e}", row.key));
        assert_eq!(
            spelled_out.settings, left_out.settings,
            "{}: the documented default `{default}` is not the real default",
            row.key
        );
        defaults_checked += 1;
    }
    assert!(
        defaults_checked >= 35,
        "only {defaults_checked} defaults checked"
    );
}

#[test]
fn a_wrong_default_in_the_docs_would_be_caught() {
    // The check above must be able to fail: a value other than the default changes the
    // settings.
    let base: Value = serde_yaml::from_str(BASE).unwrap();
    let mut other = base.clone();
    set(
        &mut other,
        &["signet", "signatures", "ttl"],
        Value::String("6m".to_owned()),
    );
    assert_ne!(
        load(&other).unwrap().settings,
        load(&base).unwrap().settings
    );
}
