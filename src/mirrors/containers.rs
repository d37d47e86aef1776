//! `registries.conf` for podman, CRI-O, buildah and skopeo: containers-registries.conf(5), version 2.
//!
//! One `[[registry]]` per rule, its `location` the source itself, and one `[[registry.mirror]]` at the
//! destination: the mirror is tried first, by digest and by tag (`pull-from-mirror` left at its default,
//! `all`), and the source stays the fallback. A private CA goes where containers/image looks for it,
//! `certs.d/HOST/ca.crt` (written here as `containers-certs.d/HOST/ca.crt`).

use std::path::PathBuf;

use super::{MirrorHost, MirrorSet, covers, toml_string};

pub const FILE: &str = "registries.conf";
pub const CERTS_DIR: &str = "containers-certs.d";

pub fn registries_conf(set: &MirrorSet) -> String {
    let mut out = format!(
        "# Written by bundle: pull these images from {} first, by digest and by tag.\n\
         # containers-registries.conf(5) version 2, for podman, CRI-O, buildah and skopeo: copy it to\n\
         # /etc/containers/registries.conf.d/50-bundle.conf (see docs/mirrors.md).\n",
        set.host.registry
    );
    for route in &set.routes {
        let source = route.source();
        out.push_str(&format!(
            "\n# {}\n[[registry]]\nprefix = {}\nlocation = {}\n\n[[registry.mirror]]\nlocation = {}\n",
            covers(route),
            toml_string(&source),
            toml_string(&source),
            toml_string(&route.mirror(&set.host.registry))
        ));
        if set.host.insecure() {
            out.push_str("insecure = true\n");
        }
    }
    out
}

/// Where containers/image finds the destination's CA: `containers-certs.d/HOST/ca.crt`, for
/// /etc/containers/certs.d.
pub fn ca_path(host: &MirrorHost) -> PathBuf {
    PathBuf::from(CERTS_DIR).join(&host.registry).join("ca.crt")
}
