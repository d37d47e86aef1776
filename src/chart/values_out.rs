//! The values file for the air gap: what makes the chart pull every image from the destination registry.
//!
//! `global.imageRegistry` covers the images whose templates honour it (learnt at export by rendering with a
//! sentinel registry); every other image found in values gets an explicit override at its own values path,
//! so that it renders as exactly the reference `bundle import` pushed it to.

use std::collections::BTreeSet;

use serde_yaml_ng::{Mapping, Value};

use super::discover::ImageShape;
use super::values::apply_set;
use crate::layout::ChartRecord;
use crate::push::Destination;
use crate::reference::ImageRef;

/// Values that point the chart at `dest`, and the images they cannot redirect (computed only in templates).
pub fn air_gap_values(record: &ChartRecord, dest: &Destination) -> (Value, Vec<String>) {
    let mut v = Value::Mapping(Mapping::new());
    let dest_text = match &dest.prefix {
        Some(p) => format!("{}/{p}", dest.registry),
        None => dest.registry.clone(),
    };
    let mut set = |path: &str, value: String| {
        // Paths come from our own scan; a failure here would be a bug, so it is reported in the file instead.
        let escaped = value.replace('\\', "\\\\").replace(',', "\\,");
        if apply_set(&mut v, &format!("{path}={escaped}"), true).is_err() {
            eprintln!("warning: cannot express values path `{path}`");
        }
    };
    if record.global_image_registry {
        set("global.imageRegistry", dest_text.clone());
    }
    let mut done = BTreeSet::new();
    for iv in record.image_values.iter().filter(|iv| !iv.covered_by_global) {
        let Ok(source) = ImageRef::parse(&iv.value.reference) else { continue };
        if !done.insert(iv.value.path.clone()) {
            continue;
        }
        let target = dest.map(&source);
        let path = &iv.value.path;
        match &iv.value.shape {
            ImageShape::Map { registry_key: true, repository_key, .. } => {
                set(&format!("{path}.registry"), target.registry().to_string());
                set(&format!("{path}.{repository_key}"), target.repository().to_string());
            }
            ImageShape::Map { registry_key: false, repository_key, .. } => {
                set(&format!("{path}.{repository_key}"), target.name());
            }
            ImageShape::String => set(path, target.to_string().replace(":latest@", "@")),
        }
    }
    let mut unmapped = record.unmapped.clone();
    unmapped.sort();
    unmapped.dedup();
    (v, unmapped)
}
