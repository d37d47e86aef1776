//! Values that must not travel: whatever a user put under a secret-looking key is written as `<redacted>` in
//! bundle.json, and a values tree holding such a value is never copied into it.

use serde_yaml_ng::Value;

use super::values::UserValues;

/// Key names whose values are secrets in practice; their values never go into bundle.json.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", "token", "apikey", "api_key", "license", "credential", "auth", "key"]
        .iter()
        .any(|w| k.contains(w))
        && !matches!(k.as_str(), "keys" | "keyboard")
}

pub fn redact_set(expr: &str) -> String {
    expr.split(',')
        .map(|a| match a.split_once('=') {
            Some((k, _)) if is_secret_key(k.rsplit('.').next().unwrap_or(k)) => format!("{k}=<redacted>"),
            _ => a.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether a values tree has a value under a secret-looking key (such a tree is never copied into bundle.json).
pub fn holds_secret(v: &Value) -> bool {
    redact_value(v) != *v
}

fn redact_value(v: &Value) -> Value {
    match v {
        Value::Mapping(m) => Value::Mapping(
            m.iter()
                .map(|(k, val)| {
                    let secret = k.as_str().is_some_and(is_secret_key) && !val.is_mapping() && !val.is_sequence();
                    (k.clone(), if secret { Value::String("<redacted>".into()) } else { redact_value(val) })
                })
                .collect(),
        ),
        Value::Sequence(s) => Value::Sequence(s.iter().map(redact_value).collect()),
        other => other.clone(),
    }
}

pub fn redact_user_values(u: &UserValues) -> UserValues {
    UserValues {
        files: u.files.iter().map(redact_value).collect(),
        set: u.set.iter().map(|s| redact_set(s)).collect(),
        set_string: u.set_string.iter().map(|s| redact_set(s)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_from_the_record() {
        assert_eq!(
            redact_set("stackstate.license.key=abc,stackstate.baseUrl=http://x,minio.secretKey=s"),
            "stackstate.license.key=<redacted>,stackstate.baseUrl=http://x,minio.secretKey=<redacted>"
        );
        let v: Value = serde_yaml_ng::from_str("a: {password: p, user: u}\nimage: {tag: '1'}\n").unwrap();
        let r = serde_yaml_ng::to_string(&redact_value(&v)).unwrap();
        assert!(!r.contains(" p\n") && r.contains("<redacted>") && r.contains("user: u"), "{r}");
    }
}
