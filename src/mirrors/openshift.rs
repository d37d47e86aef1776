//! `idms.yaml` and `itms.yaml`: OpenShift's `config.openshift.io/v1` ImageDigestMirrorSet (pulls by digest)
//! and ImageTagMirrorSet (pulls by tag), one entry per rule, applied with `oc apply -f`.
//!
//! The Machine Config Operator turns them into every node's registries.conf. A plain-HTTP or privately
//! signed destination is made known cluster-wide instead (`image.config.openshift.io/cluster`:
//! `registrySources.insecureRegistries`, `additionalTrustedCA`), so these files carry no TLS settings.

use serde::Serialize;

use super::MirrorSet;

pub const IDMS_FILE: &str = "idms.yaml";
pub const ITMS_FILE: &str = "itms.yaml";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MirrorSetObject {
    api_version: &'static str,
    kind: &'static str,
    metadata: Metadata,
    spec: serde_yaml_ng::Mapping,
}

#[derive(Serialize)]
struct Metadata {
    name: String,
}

#[derive(Serialize)]
struct Entry {
    source: String,
    mirrors: Vec<String>,
}

pub fn idms(set: &MirrorSet) -> String {
    object(set, "ImageDigestMirrorSet", "imageDigestMirrors", "by digest")
}

pub fn itms(set: &MirrorSet) -> String {
    object(set, "ImageTagMirrorSet", "imageTagMirrors", "by tag")
}

fn object(set: &MirrorSet, kind: &'static str, list: &str, how: &str) -> String {
    let entries: Vec<Entry> =
        set.routes.iter().map(|r| Entry { source: r.source(), mirrors: vec![r.mirror(&set.host.registry)] }).collect();
    let mut spec = serde_yaml_ng::Mapping::new();
    spec.insert(list.into(), serde_yaml_ng::to_value(entries).expect("plain entries serialise"));
    let object = MirrorSetObject {
        api_version: "config.openshift.io/v1",
        kind,
        metadata: Metadata { name: object_name(&set.host) },
        spec,
    };
    format!(
        "# Written by bundle: OpenShift nodes pull these images {how} from {} first; `oc apply -f` it\n\
         # (see docs/mirrors.md).\n{}",
        set.host.registry,
        serde_yaml_ng::to_string(&object).expect("plain object serialises")
    )
}

/// `bundle-reg-internal-5000-mirror`: a DNS label from the destination (`-d`), so imports into different places
/// make different objects and a re-run replaces its own.
fn object_name(host: &super::MirrorHost) -> String {
    let raw = match &host.prefix {
        Some(p) => format!("bundle-{}-{p}", host.registry),
        None => format!("bundle-{}", host.registry),
    };
    let mut name = String::new();
    for c in raw.to_ascii_lowercase().chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if !(c == '-' && name.ends_with('-')) {
            name.push(c);
        }
    }
    name.truncate(63);
    name.trim_end_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(registry: &str, prefix: Option<&str>) -> super::super::MirrorHost {
        super::super::MirrorHost {
            registry: registry.into(),
            prefix: prefix.map(Into::into),
            plain_http: false,
            skip_verify: false,
            ca: None,
            client: None,
        }
    }

    #[test]
    fn object_names_are_dns_labels_of_the_destination() {
        assert_eq!(object_name(&host("Reg.Internal:5000", Some("a/b"))), "bundle-reg-internal-5000-a-b");
        assert_eq!(object_name(&host("r.local", None)), "bundle-r-local");
        let long = object_name(&host("r.local", Some(&"x-".repeat(60))));
        assert!(long.len() <= 63 && !long.ends_with('-'), "{long}");
    }
}
