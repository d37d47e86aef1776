//! The real-chart corpus (tests/corpus/corpus.toml): public charts at pinned releases, discovered, exported,
//! imported and rendered with the air-gap values file, each one against real registries and the real helm.
//!
//! The packaged charts are not in this repository (they are other projects' releases): the tests read them
//! from `BUNDLE_CHART_CORPUS`, else `../shared/chart-corpus`. Without a corpus they say so and check nothing;
//! `BUNDLE_CHART_CORPUS_REQUIRED=1` turns that into a failure, for runs that must not pass without it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::harness::*;

#[derive(Deserialize)]
struct Manifest {
    chart: Vec<CorpusChart>,
}

#[derive(Deserialize, Clone)]
pub(crate) struct CorpusChart {
    pub(crate) id: String,
    publisher: String,
    #[serde(default)]
    pub(crate) set: Vec<String>,
    #[serde(default)]
    pub(crate) passes: Vec<String>,
    #[serde(default)]
    kube_version: Option<String>,
    /// Values only the closed loop adds: dropping digest pins, which fake images cannot match.
    #[serde(default)]
    pub(crate) test_set: Vec<String>,
}

impl CorpusChart {
    pub(crate) fn package(&self, corpus: &Path) -> PathBuf {
        corpus.join(&self.publisher).join(format!("{}.tgz", self.id))
    }

    /// The flags every `bundle images/export` of this chart takes.
    pub(crate) fn bundle_args(&self, corpus: &Path, with_test_set: bool) -> Vec<String> {
        let mut a = vec!["-c".to_string(), self.package(corpus).display().to_string()];
        for s in self.set.iter().chain(if with_test_set { &self.test_set[..] } else { &[] }) {
            a.extend(["--set".to_string(), s.clone()]);
        }
        for p in &self.passes {
            a.extend(["--pass".to_string(), p.clone()]);
        }
        if let Some(k) = &self.kube_version {
            a.extend(["--kube-version".to_string(), k.clone()]);
        }
        a
    }

    /// `helm template` of one pass (None: the common values only), with extra values files.
    fn render(&self, corpus: &Path, pass: Option<&str>, with_test_set: bool, values: &[&Path]) -> String {
        let mut cmd = Command::new(helm());
        cmd.args(["template", "bundle"]).arg(self.package(corpus)).args(["--namespace", "default"]);
        for v in values {
            cmd.arg("-f").arg(v);
        }
        for s in self.set.iter().chain(if with_test_set { &self.test_set[..] } else { &[] }) {
            cmd.args(["--set", s]);
        }
        if let Some(p) = pass.filter(|p| !p.is_empty()) {
            cmd.args(["--set", p]);
        }
        if let Some(k) = &self.kube_version {
            cmd.args(["--kube-version", k]);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}: helm template: {}", self.id, String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn passes(&self) -> Vec<Option<&str>> {
        if self.passes.is_empty() { vec![None] } else { self.passes.iter().map(|p| Some(p.as_str())).collect() }
    }
}

/// The corpus directory and the charts of corpus.toml whose package is in it. Charts added to corpus.toml
/// reach the shared corpus when it is next rebuilt: until then they are named, not failed.
pub(crate) fn corpus() -> Option<(PathBuf, Vec<CorpusChart>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("BUNDLE_CHART_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/chart-corpus"));
    let manifest: Manifest =
        toml::from_str(&std::fs::read_to_string(root.join("tests/corpus/corpus.toml")).unwrap()).unwrap();
    if !dir.is_dir() {
        assert!(std::env::var_os("BUNDLE_CHART_CORPUS_REQUIRED").is_none(), "no chart corpus at {}", dir.display());
        say(&format!("SKIPPED: no chart corpus at {} (set BUNDLE_CHART_CORPUS)", dir.display()));
        return None;
    }
    let only = std::env::var("BUNDLE_CHART_CORPUS_ONLY").ok();
    let (present, absent): (Vec<CorpusChart>, Vec<CorpusChart>) = manifest
        .chart
        .into_iter()
        .filter(|c| only.as_deref().is_none_or(|o| o.split(',').any(|id| id == c.id)))
        .partition(|c| c.package(&dir).is_file());
    if !absent.is_empty() {
        let ids: Vec<&str> = absent.iter().map(|c| c.id.as_str()).collect();
        say(&format!(
            "NOT TESTED: {} charts of corpus.toml have no package in {} yet (they arrive when it is rebuilt): {}",
            ids.len(),
            dir.display(),
            ids.join(", ")
        ));
    }
    assert!(!present.is_empty(), "no package of corpus.toml is in {}", dir.display());
    Some((dir, present))
}

/// A line on the real stderr, past the test harness's capture: a passing run still says what it did not test.
pub(crate) fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Every chart's failures, named together at the end: one broken chart must not hide the next.
#[track_caller]
fn assert_all_pass(failures: &[String]) {
    assert!(failures.is_empty(), "{} charts failed:\n{}", failures.len(), failures.join("\n\n"));
}

fn truth(id: &str) -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/truth").join(format!("{id}.txt"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/chart-ground-truth)", path.display()))
        .lines()
        .map(str::to_string)
        .collect()
}

fn images_of(ws: &Workspace, args: &[String]) -> (BTreeSet<String>, f64) {
    let mut a: Vec<&str> = vec!["images"];
    a.extend(args.iter().map(String::as_str));
    let t = std::time::Instant::now();
    let r = ws.bundle(&a).success();
    (r.stdout.lines().map(str::to_string).collect(), t.elapsed().as_secs_f64())
}

#[test]
fn corpus_helm_discovery_finds_every_strict_image_and_invents_none() {
    let Some((dir, charts)) = corpus() else { return };
    let ws = Workspace::new();
    let (mut strict_total, mut static_found, mut bundle_secs, mut helm_secs) = (0usize, 0usize, 0f64, 0f64);
    let (mut report, mut failures) = (Vec::new(), Vec::new());
    for chart in &charts {
        let want = truth(&chart.id);
        let (found, secs) = images_of(&ws, &chart.bundle_args(&dir, false));
        bundle_secs += secs;
        let missing: Vec<&String> = want.iter().filter(|w| !found.contains(*w)).collect();
        if !missing.is_empty() {
            failures.push(format!("{}: helm discovery missed {missing:?}", chart.id));
        }
        // Anything beyond the strict list must be in the rendered output (args, env, ConfigMaps), not invented.
        let t = std::time::Instant::now();
        let rendered: String = chart.passes().into_iter().map(|p| chart.render(&dir, p, false, &[])).collect();
        helm_secs += t.elapsed().as_secs_f64();
        let present = words(&rendered);
        let invented: Vec<&String> =
            found.iter().filter(|f| !want.contains(*f) && !present.contains(f.as_str())).collect();
        if !invented.is_empty() {
            failures.push(format!("{}: discovery invented {invented:?}", chart.id));
        }

        let mut args = chart.bundle_args(&dir, false);
        args.push("--no-helm".into());
        let (statically, _) = images_of(&ws, &args);
        let hits = want.iter().filter(|w| statically.contains(*w)).count();
        strict_total += want.len();
        static_found += hits;
        report.push(format!("{:<40} {:>3} strict {:>3} found {:>3} static", chart.id, want.len(), found.len(), hits));
    }
    eprintln!("{}", report.join("\n"));
    eprintln!(
        "corpus: {} charts, helm recall 100%, static recall {static_found}/{strict_total} ({:.0}%); bundle images {bundle_secs:.1} s vs helm template alone {helm_secs:.1} s ({:.2}x)",
        charts.len(),
        100.0 * static_found as f64 / strict_total.max(1) as f64,
        bundle_secs / helm_secs.max(0.001)
    );
    assert_all_pass(&failures);
}

#[test]
fn corpus_closed_loop_every_chart_pulls_only_images_that_exist() {
    let Some((dir, charts)) = corpus() else { return };
    helm();
    let (mut report, mut failures) = (Vec::new(), Vec::new());
    for chart in &charts {
        let ws = Workspace::new();
        let passes: Vec<Vec<String>> =
            chart.passes().into_iter().map(|p| p.map(str::to_string).into_iter().collect()).collect();
        let mut set = chart.set.clone();
        set.extend(chart.test_set.iter().cloned());
        // A chart whose loop panics (an export that fails, an image the values send nowhere) is named with the
        // others; the panic message is on stderr above the summary.
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            closed_loop(&ws, &chart.package(&dir), &set, &passes, chart.kube_version.as_deref())
        }));
        let outcome = match run {
            Ok(o) => o,
            Err(e) => {
                let message = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{}: the closed loop failed: {message}", chart.id));
                continue;
            }
        };
        if outcome.export_stderr.contains("could not be proven") {
            failures.push(format!("{}: {}", chart.id, outcome.export_stderr));
        }
        // The site's check agrees: every image ok but exactly those import named, none missing at the destination.
        let not_ok: BTreeSet<String> =
            outcome.checked.iter().filter(|(_, s)| *s != "ok").map(|(r, _)| r.clone()).collect();
        if not_ok != outcome.warned || outcome.checked.values().any(|s| s == "missing") {
            failures.push(format!(
                "{}: bundle check: {:?}; import named {:?}\n{}",
                chart.id, outcome.checked, outcome.warned, outcome.values
            ));
        }
        if outcome.unmoved != outcome.warned {
            failures.push(format!(
                "{}: images left at their public registry must be exactly those import warned about: left {:?}, warned {:?}\n{}",
                chart.id, outcome.unmoved, outcome.warned, outcome.values
            ));
        }
        report.push(format!(
            "{:<40} {:>3} images moved, {:>2} unmovable {:?}, export {:.1} s",
            chart.id,
            outcome.moved.len(),
            outcome.unmoved.len(),
            outcome.unmoved,
            outcome.export_secs
        ));
    }
    eprintln!("{}", report.join("\n"));
    assert_all_pass(&failures);
}

/// The shipped vendor specs render with exactly the values and passes the corpus proves (split into single
/// assignments, since a spec lists them one per line); so the corpus's closed loop covers what users export.
#[test]
fn the_vendor_specs_carry_the_values_the_corpus_proves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest: Manifest =
        toml::from_str(&std::fs::read_to_string(root.join("tests/corpus/corpus.toml")).unwrap()).unwrap();
    let split = |v: &[String]| -> BTreeSet<String> {
        v.iter().flat_map(|s| s.split(',')).filter(|s| !s.is_empty()).map(str::to_string).collect()
    };
    for (spec, id) in [
        ("bundles/suse-observability.yaml", "suse-observability-2.10.3"),
        ("bundles/suse-observability-agent.yaml", "suse-observability-agent-1.5.44"),
    ] {
        let spec = bundle::commands::spec::BundleSpec::load(&root.join(spec)).unwrap();
        let chart = manifest.chart.iter().find(|c| c.id == id).unwrap();
        assert_eq!(split(&spec.set), split(&chart.set), "{id}");
        assert_eq!(spec.passes, chart.passes, "{id}");
        assert_eq!(Some(id.rsplit_once('-').unwrap().1), spec.version.as_deref(), "{id}");
    }
    // The suite carries both charts with the same values and passes as their own specs.
    let suite = bundle::commands::spec::BundleSpec::load(&root.join("bundles/suse-observability-suite.yaml")).unwrap();
    let ids: Vec<String> = suite.charts.iter().map(|c| format!("{}-{}", c.chart, c.version.clone().unwrap())).collect();
    assert_eq!(ids, ["suse-observability-2.10.3", "suse-observability-agent-1.5.44"]);
    for (entry, id) in suite.charts.iter().zip(&ids) {
        let chart = manifest.chart.iter().find(|c| &c.id == id).unwrap();
        assert_eq!(split(&entry.set), split(&chart.set), "{id} in the suite");
        assert_eq!(entry.passes, chart.passes, "{id} in the suite");
    }
}
