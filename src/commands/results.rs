//! `--json` on export, verify, import and copy: one JSON document on stdout per run, for the pipelines that
//! drive bundle. The commands note, as they go, each image and what happened to it and the run's totals; `run`
//! prints the document once the command has ended, with the error and its hint when it failed. The schema is in
//! docs/usage.md ("Results for machines"); `formatVersion` goes up when a key changes meaning or goes away.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

use crate::import::delivery::{Ended, Observer, Prepared};

/// The version of the document's schema.
pub const RESULTS_FORMAT_VERSION: u32 = 1;

/// What happened to one image.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ImageOutcome {
    /// Written into the archive.
    Exported,
    /// Export's dry run: would be written.
    WouldExport,
    /// Found whole and unaltered in the archive.
    Verified,
    /// Pushed to the destination (blobs uploaded or mounted, then its manifests).
    Pushed,
    /// Already complete at the destination, with its tag current: nothing was sent.
    Present,
    /// A dry run: would be pushed.
    WouldPush,
    /// Not at the destination after a failed run (the error says why).
    Failed,
}

/// One image of the document.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageResult {
    pub source: String,
    pub digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    pub outcome: ImageOutcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ImageResult {
    pub fn new(source: impl ToString, digest: impl ToString, outcome: ImageOutcome) -> ImageResult {
        ImageResult { source: source.to_string(), digest: digest.to_string(), destination: None, outcome, error: None }
    }
}

/// What the commands note during a `--json` run.
#[derive(Debug, Default)]
pub struct Results {
    noted: Mutex<Noted>,
}

#[derive(Debug, Default)]
struct Noted {
    images: Vec<ImageResult>,
    totals: BTreeMap<&'static str, serde_json::Value>,
}

/// The error a failed run ends with, as the printer shows it on stderr.
#[derive(Debug, Serialize)]
pub struct RunError<'a> {
    pub message: &'a str,
    pub causes: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document<'a> {
    format_version: u32,
    command: &'a str,
    ok: bool,
    images: &'a [ImageResult],
    totals: &'a BTreeMap<&'static str, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<RunError<'a>>,
}

impl Results {
    /// The images of the run, replacing any noted before (a later, more exact account wins).
    pub fn images(&self, images: Vec<ImageResult>) {
        self.lock().images = images;
    }

    pub fn total(&self, key: &'static str, value: impl Serialize) {
        let value = serde_json::to_value(value).expect("totals serialise");
        self.lock().totals.insert(key, value);
    }

    /// The document for a run of `command` that ended with `error` (none: it succeeded).
    pub fn document(&self, command: &str, error: Option<RunError<'_>>) -> serde_json::Value {
        let noted = self.lock();
        let doc = Document {
            format_version: RESULTS_FORMAT_VERSION,
            command,
            ok: error.is_none(),
            images: &noted.images,
            totals: &noted.totals,
            error,
        };
        serde_json::to_value(doc).expect("the document serialises")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Noted> {
        self.noted.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The `--json` document watches import and copy: each push's end is noted (nothing without `--json`).
impl Observer for Option<std::sync::Arc<Results>> {
    fn watching(&self) -> bool {
        self.is_some()
    }

    fn ended(&self, prepared: &Prepared, contents: &crate::archive::BundleContents, ended: Ended<'_>) {
        if let Some(results) = self {
            note_delivery(results, prepared, contents, ended);
        }
    }
}

/// Note each image of an import or copy and the totals (nothing without `--json`).
fn note_delivery(
    results: &Results,
    prepared: &crate::import::delivery::Prepared,
    contents: &crate::archive::BundleContents,
    ended: Ended<'_>,
) {
    let plan = &prepared.plan;
    let images = plan.images.iter().enumerate().map(|(i, p)| {
        let outcome = match &ended {
            _ if prepared.was_complete(i, contents) => ImageOutcome::Present,
            Ended::DryRun => ImageOutcome::WouldPush,
            Ended::NothingToDo => ImageOutcome::Present,
            Ended::Pushed(_) => ImageOutcome::Pushed,
            Ended::Failed(_, found) if found.contains(&i) => ImageOutcome::Pushed,
            Ended::Failed(..) => ImageOutcome::Failed,
        };
        let error = match (&ended, outcome) {
            (Ended::Failed(e, _), ImageOutcome::Failed) => Some(e.clone()),
            _ => None,
        };
        let img = &contents.images[p.image];
        ImageResult {
            destination: Some(p.target.to_string()),
            error,
            ..ImageResult::new(&p.source, &img.digest, outcome)
        }
    });
    results.images(images.collect());
    let presence = &prepared.presence;
    results.total("images", plan.images.len());
    results.total("alreadyComplete", presence.images_complete(plan, contents));
    results.total("destination", prepared.registry_name());
    match ended {
        Ended::DryRun => {
            results.total("dryRun", true);
            results.total("blobsPresent", presence.blobs_present);
            results.total("blobsToUpload", presence.blobs_to_upload());
            results.total("bytesToUpload", presence.bytes_to_upload(contents));
            results.total("blobsToMount", presence.blobs_to_mount());
        }
        Ended::Pushed(stats) => {
            results.total("blobsUploaded", stats.uploaded);
            results.total("bytesUploaded", stats.uploaded_bytes);
            results.total("blobsMounted", stats.mounted);
            results.total("blobsPresent", presence.blobs_present + stats.present);
            results.total("manifestsPushed", stats.manifests);
        }
        Ended::NothingToDo | Ended::Failed(..) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_run_says_so_with_its_error_and_keeps_what_was_noted() {
        let r = Results::default();
        r.images(vec![ImageResult {
            source: "quay.io/a/b:1".into(),
            digest: "sha256:00".into(),
            destination: Some("reg/a/b:1".into()),
            outcome: ImageOutcome::Failed,
            error: Some("boom".into()),
        }]);
        r.total("uploaded", 3);
        let causes = vec!["the cause".to_string()];
        let doc = r.document("import", Some(RunError { message: "it failed", causes: &causes, hint: Some("retry") }));
        assert_eq!(doc["formatVersion"], 1);
        assert_eq!(doc["ok"], false);
        assert_eq!(doc["images"][0]["outcome"], "failed");
        assert_eq!(doc["totals"]["uploaded"], 3);
        assert_eq!(doc["error"]["hint"], "retry");
        let ok = r.document("import", None);
        assert_eq!(ok["ok"], true);
        assert!(ok.get("error").is_none());
    }
}
