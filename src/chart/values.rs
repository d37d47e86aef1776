//! Values as helm computes them: `-f` files and `--set`/`--set-string` over the chart's defaults, subchart
//! values under their key, `global` propagated down, and `condition`/`tags` deciding which subcharts render.
//!
//! The static scan needs this; with a helm binary, the same flags are handed to helm itself.

use serde_yaml_ng::{Mapping, Value};

use super::{Chart, ChartError};
use crate::oci::layout::ValuesKey;

pub use crate::oci::layout::UserValues;

/// Everything the user gave, plus one pass's `--set` expressions, as one values tree.
pub fn overrides(user: &UserValues, pass: &[String]) -> Result<Value, ChartError> {
    let mut v = Value::Mapping(Mapping::new());
    for f in &user.files {
        v = merge(v, f.clone());
    }
    for s in &user.set {
        apply_set(&mut v, s, false)?;
    }
    for s in &user.set_string {
        apply_set(&mut v, s, true)?;
    }
    for s in pass {
        apply_set(&mut v, s, false)?;
    }
    Ok(v)
}

/// Deep merge: maps merge key by key, anything else in `over` replaces `base`; a null in `over` deletes.
pub fn merge(base: Value, over: Value) -> Value {
    match (base, over) {
        (Value::Mapping(mut b), Value::Mapping(o)) => {
            for (k, v) in o {
                if v.is_null() {
                    b.remove(&k);
                    continue;
                }
                let merged = match b.remove(&k) {
                    Some(existing) => merge(existing, v),
                    None => v,
                };
                b.insert(k, merged);
            }
            Value::Mapping(b)
        }
        (_, o) => o,
    }
}

/// Apply one `--set` expression (`a.b=c,d[0]=e,f={x,y}`) to `values`.
pub fn apply_set(values: &mut Value, expr: &str, as_string: bool) -> Result<(), ChartError> {
    for assignment in split_unescaped(expr, ',', true) {
        if assignment.trim().is_empty() {
            continue;
        }
        let (key, raw) = split_once_unescaped(&assignment, '=')
            .ok_or_else(|| ChartError::Other(format!("`{assignment}` in --set `{expr}` is not key=value")))?;
        let value = if as_string {
            Value::String(unescape(&raw))
        } else if raw.starts_with('{') && raw.ends_with('}') {
            Value::Sequence(
                split_unescaped(&raw[1..raw.len() - 1], ',', false).iter().map(|s| typed(&unescape(s))).collect(),
            )
        } else {
            typed(&unescape(&raw))
        };
        let path = parse_key(&key).map_err(|m| ChartError::Other(format!("--set `{expr}`: {m}")))?;
        set_at(values, &path, value);
    }
    Ok(())
}

/// The keys one `--set` expression (`a.b=c,d[0]=e`) assigns; assignments that do not parse are left out (they
/// were refused when the expression was first given).
pub fn set_keys(expr: &str) -> Vec<Vec<ValuesKey>> {
    split_unescaped(expr, ',', true)
        .iter()
        .filter_map(|a| split_once_unescaped(a, '=').and_then(|(k, _)| parse_key(&k).ok()))
        .collect()
}

/// A --set key (`a.b[0].c`, `\.` for a dot inside a key) as keys.
pub fn parse_key(key: &str) -> Result<Vec<ValuesKey>, String> {
    let mut out = Vec::new();
    for part in split_unescaped(key, '.', false) {
        let mut rest = part.as_str();
        let name_end = rest.find('[').unwrap_or(rest.len());
        let name = unescape(&rest[..name_end]);
        if name.is_empty() {
            return Err(format!("`{key}` has an empty key"));
        }
        out.push(ValuesKey::Key(name));
        rest = &rest[name_end..];
        while let Some(r) = rest.strip_prefix('[') {
            let (n, tail) = r.split_once(']').ok_or_else(|| format!("`{key}` has an unclosed `[`"))?;
            out.push(ValuesKey::Index(n.parse().map_err(|_| format!("`{key}`: `[{n}]` is not a list index"))?));
            rest = tail;
        }
    }
    Ok(out)
}

/// Set `path` in `v`, making maps and lists on the way (a list is padded with nulls up to the index).
pub fn set_at(v: &mut Value, path: &[ValuesKey], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        *v = value;
        return;
    };
    match first {
        ValuesKey::Key(k) => {
            if !v.is_mapping() {
                *v = Value::Mapping(Mapping::new());
            }
            let slot = v.as_mapping_mut().expect("mapping").entry(Value::String(k.clone())).or_insert(Value::Null);
            set_at(slot, rest, value);
        }
        ValuesKey::Index(i) => {
            if !v.is_sequence() {
                *v = Value::Sequence(Vec::new());
            }
            let s = v.as_sequence_mut().expect("sequence");
            if s.len() <= *i {
                s.resize(*i + 1, Value::Null);
            }
            set_at(&mut s[*i], rest, value);
        }
    }
}

/// The value at `path`, if there is one.
pub fn get_at<'v>(v: &'v Value, path: &[ValuesKey]) -> Option<&'v Value> {
    path.iter().try_fold(v, |cur, k| match k {
        ValuesKey::Key(k) => cur.get(k.as_str()),
        ValuesKey::Index(i) => cur.as_sequence().and_then(|s| s.get(*i)),
    })
}

/// helm's type inference for --set: booleans, null, and integers (not floats, not leading zeros).
fn typed(s: &str) -> Value {
    match s {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        "null" => Value::Null,
        "0" => Value::Number(0.into()),
        _ if s.len() > 1 && s.starts_with('0') => Value::String(s.into()),
        _ => match s.parse::<i64>() {
            Ok(n) => Value::Number(n.into()),
            Err(_) => Value::String(s.into()),
        },
    }
}

fn split_unescaped(s: &str, sep: char, respect_braces: bool) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut depth = 0;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                out.last_mut().unwrap().push(c);
                out.last_mut().unwrap().extend(chars.next());
            }
            '{' if respect_braces => {
                depth += 1;
                out.last_mut().unwrap().push(c);
            }
            '}' if respect_braces => {
                depth -= 1;
                out.last_mut().unwrap().push(c);
            }
            c if c == sep && depth == 0 => out.push(String::new()),
            c => out.last_mut().unwrap().push(c),
        }
    }
    out
}

fn split_once_unescaped(s: &str, sep: char) -> Option<(String, String)> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            return Some((s[..i].to_string(), s[i + 1..].to_string()));
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.extend(chars.next());
        } else {
            out.push(c);
        }
    }
    out
}

/// One chart's place in the tree with the values it renders with.
#[derive(Debug, Clone)]
pub struct ScopedValues<'a> {
    pub chart: &'a Chart,
    /// Keys from the top-level values to this chart's values (empty for the parent).
    pub path: Vec<String>,
    pub values: Value,
}

/// The effective values of the chart and every enabled subchart.
pub fn effective<'a>(chart: &'a Chart, overrides: &Value) -> Vec<ScopedValues<'a>> {
    let top = merge(chart.values.clone(), overrides.clone());
    let mut out = Vec::new();
    visit(chart, top.clone(), Vec::new(), &top, &mut out);
    out
}

fn visit<'a>(chart: &'a Chart, values: Value, path: Vec<String>, top: &Value, out: &mut Vec<ScopedValues<'a>>) {
    out.push(ScopedValues { chart, path: path.clone(), values: values.clone() });
    for sub in &chart.subcharts {
        if !enabled(sub, &values, top) {
            continue;
        }
        let supplied = values.get(sub.key.as_str()).cloned().unwrap_or(Value::Mapping(Mapping::new()));
        let mut child = merge(sub.chart.values.clone(), supplied);
        if let Some(global) = values.get("global").cloned() {
            let own = child.get("global").cloned().unwrap_or(Value::Mapping(Mapping::new()));
            if let Some(m) = child.as_mapping_mut() {
                m.insert(Value::String("global".into()), merge(own, global));
            }
        }
        let mut sub_path = path.clone();
        sub_path.push(sub.key.clone());
        visit(&sub.chart, child, sub_path, top, out);
    }
}

/// helm's rule: the first `condition` path that resolves to a boolean decides; otherwise any true tag
/// enables; no condition and no tags means enabled.
fn enabled(sub: &super::Subchart, parent: &Value, top: &Value) -> bool {
    let Some(dep) = &sub.dependency else { return true };
    if let Some(cond) = &dep.condition {
        for c in cond.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            if let Some(Value::Bool(b)) = lookup(parent, c) {
                return *b;
            }
        }
    }
    if dep.tags.is_empty() {
        return true;
    }
    let tags = top.get("tags");
    let mut any_set = false;
    for t in &dep.tags {
        match tags.and_then(|v| v.get(t.as_str())) {
            Some(Value::Bool(true)) => return true,
            Some(Value::Bool(false)) => any_set = true,
            _ => {}
        }
    }
    !any_set
}

/// A dotted path in a values tree.
pub fn lookup<'v>(v: &'v Value, dotted: &str) -> Option<&'v Value> {
    dotted.split('.').try_fold(v, |cur, k| cur.get(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Value {
        serde_yaml_ng::from_str(s).unwrap()
    }

    #[test]
    fn set_expressions_like_helm() {
        let mut v = Value::Mapping(Mapping::new());
        apply_set(&mut v, "a.b=1,c=true,d=007,e={x,y},f[1].g=h,dotted\\.key=v,comma=a\\,b", false).unwrap();
        assert_eq!(
            v,
            yaml("a: {b: 1}\nc: true\nd: '007'\ne: [x, y]\nf: [null, {g: h}]\ndotted.key: v\ncomma: 'a,b'\n")
        );
        let mut s = Value::Mapping(Mapping::new());
        apply_set(&mut s, "a=1,b=true", true).unwrap();
        assert_eq!(s, yaml("a: '1'\nb: 'true'\n"));
        assert!(apply_set(&mut s, "novalue", false).is_err());
    }

    #[test]
    fn set_keys_are_the_assigned_paths() {
        let keys: Vec<String> =
            set_keys("a.b=1,c[0].d=x\\,y,e\\.f=2").iter().map(|k| crate::chart::values_out::dotted(k)).collect();
        assert_eq!(keys, ["a.b", "c[0].d", "e\\.f"]);
    }

    #[test]
    fn merge_later_wins_and_null_deletes() {
        let m = merge(yaml("a: {b: 1, c: 2}\nd: 3\n"), yaml("a: {b: 9}\nd: null\n"));
        assert_eq!(m, yaml("a: {b: 9, c: 2}\n"));
    }
}
