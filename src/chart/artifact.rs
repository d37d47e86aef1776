//! The chart as a Helm OCI artifact, so it travels in the bundle next to its images and `helm install oci://…`
//! works from the destination registry.

use bytes::Bytes;

use crate::oci::digest::Digest;

/// The chart as an image to carry, and the bytes of its two blobs (small: Chart.yaml and the package).
pub struct ChartArtifact {
    pub image: crate::export::resolve::ResolvedImage,
    pub blobs: Vec<(Digest, Bytes)>,
}

/// The chart as a Helm OCI artifact (what `helm push` makes): a config holding Chart.yaml as JSON and one
/// layer holding the package. Built from the package alone, so the same chart gives the same digest.
pub fn oci_artifact(loaded: &super::source::LoadedChart) -> std::io::Result<ChartArtifact> {
    use crate::oci::manifest::{Descriptor, OCI_MANIFEST};
    use crate::oci::manifest::{HELM_CONFIG, HELM_CONTENT};
    let meta = &loaded.chart.meta;
    let config = Bytes::from(serde_json::to_vec(meta).expect("chart metadata serialises"));
    let package = Bytes::from(loaded.package.clone());
    let config_digest = Digest::of(&config);
    let layer_digest = Digest::of(&package);
    let config_desc = Descriptor::of_blob(HELM_CONFIG, config_digest.clone(), config.len() as u64);
    let layer_desc = Descriptor::of_blob(HELM_CONTENT, layer_digest.clone(), loaded.package.len() as u64);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_desc,
        "layers": [layer_desc],
    }))
    .expect("manifest serialises");
    let source =
        crate::oci::reference::ImageRef::parse(&format!("charts/{}:{}", meta.name, meta.version.replace('+', "_")))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("chart name: {e}")))?;
    let image = crate::export::resolve::ResolvedImage::made(
        source,
        crate::export::resolve::Made::Chart,
        manifest,
        vec![config_desc, layer_desc],
    );
    Ok(ChartArtifact { image, blobs: vec![(config_digest, config), (layer_digest, package)] })
}
