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
use serde_yaml_ng::Value;

use crate::harness::*;

#[derive(Deserialize)]
struct Manifest {
    chart: Vec<CorpusChart>,
}

#[derive(Deserialize, Clone)]
struct CorpusChart {
    id: String,
    publisher: String,
    #[serde(default)]
    set: Vec<String>,
    #[serde(default)]
    passes: Vec<String>,
    #[serde(default)]
    kube_version: Option<String>,
    /// Values only the closed loop adds: dropping digest pins, which fake images cannot match.
    #[serde(default)]
    test_set: Vec<String>,
}

impl CorpusChart {
    fn package(&self, corpus: &Path) -> PathBuf {
        corpus.join(&self.publisher).join(format!("{}.tgz", self.id))
    }

    /// The flags every `bundle images/export` of this chart takes.
    fn bundle_args(&self, corpus: &Path, with_test_set: bool) -> Vec<String> {
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

fn corpus() -> Option<(PathBuf, Vec<CorpusChart>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("BUNDLE_CHART_CORPUS").map(PathBuf::from).unwrap_or_else(|| root.join("../shared/chart-corpus"));
    let manifest: Manifest = toml::from_str(&std::fs::read_to_string(root.join("tests/corpus/corpus.toml")).unwrap()).unwrap();
    if !dir.is_dir() {
        assert!(std::env::var_os("BUNDLE_CHART_CORPUS_REQUIRED").is_none(), "no chart corpus at {}", dir.display());
        eprintln!("SKIPPED: no chart corpus at {} (set BUNDLE_CHART_CORPUS)", dir.display());
        return None;
    }
    let only = std::env::var("BUNDLE_CHART_CORPUS_ONLY").ok();
    let charts = manifest.chart.into_iter().filter(|c| only.as_deref().is_none_or(|o| o.split(',').any(|id| id == c.id))).collect();
    Some((dir, charts))
}

fn truth(id: &str) -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/truth").join(format!("{id}.txt"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (run scripts/chart-ground-truth)", path.display())).lines().map(str::to_string).collect()
}

/// Every string under a key named `image` in rendered documents: the reviewer's rule, not bundle's code.
fn strict_images(text: &str) -> BTreeSet<String> {
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Mapping(m) => {
                for (k, val) in m {
                    match (k.as_str(), val) {
                        (Some("image"), Value::String(s)) if !s.trim().is_empty() => {
                            out.insert(s.trim().to_string());
                        }
                        _ => walk(val, out),
                    }
                }
            }
            Value::Sequence(s) => s.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let v = Value::deserialize(doc).expect("helm prints YAML");
        walk(&v, &mut out);
    }
    out
}

/// The whitespace-, quote- and `=`-separated words of a text, for "does this reference appear" questions.
fn words(text: &str) -> BTreeSet<&str> {
    text.split(|c: char| c.is_whitespace() || "\"'=,;()[]{}|`".contains(c))
        .map(|w| w.trim_end_matches(['.', ':']))
        .filter(|w| !w.is_empty())
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
    let mut report = Vec::new();
    for chart in &charts {
        let want = truth(&chart.id);
        let (found, secs) = images_of(&ws, &chart.bundle_args(&dir, false));
        bundle_secs += secs;
        let missing: Vec<&String> = want.iter().filter(|w| !found.contains(*w)).collect();
        assert!(missing.is_empty(), "{}: helm discovery missed {missing:?}", chart.id);
        // Anything beyond the strict list must be in the rendered output (args, env, ConfigMaps), not invented.
        let t = std::time::Instant::now();
        let rendered: String = chart.passes().into_iter().map(|p| chart.render(&dir, p, false, &[])).collect();
        helm_secs += t.elapsed().as_secs_f64();
        let present = words(&rendered);
        let invented: Vec<&String> = found.iter().filter(|f| !want.contains(*f) && !present.contains(f.as_str())).collect();
        assert!(invented.is_empty(), "{}: discovery invented {invented:?}", chart.id);

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
}

/// A registry config that sends every registry host in `refs` to `world`, under the host's name.
fn world_config(ws: &Workspace, world: &Registry, refs: &BTreeSet<String>) -> PathBuf {
    let hosts: BTreeSet<String> = refs.iter().map(|r| bundle::reference::ImageRef::parse(r).unwrap().registry().to_string()).collect();
    let mut cfg = String::new();
    for h in hosts {
        cfg.push_str(&format!("[[registry]]\nname = \"{h}\"\nendpoint = \"{}\"\nprefix = \"{h}\"\n\n", world.base_url()));
    }
    ws.write("world.toml", &cfg)
}

/// A small fake image under each reference's real name (host as the first path component).
fn seed(world: &Registry, refs: &BTreeSet<String>) {
    let p = Pusher::new(&world.base_url());
    for (i, r) in refs.iter().enumerate() {
        let parsed = bundle::reference::ImageRef::parse(r).unwrap();
        assert!(parsed.digest().is_none(), "{r}: a digest pin cannot be faked; drop it with test_set");
        let img = image(&[random_layer(256, 9000 + i as u64)], "amd64", false);
        p.image(&format!("{}/{}", parsed.registry(), parsed.repository()), parsed.tag().unwrap_or("latest"), &img);
    }
}

#[test]
fn corpus_closed_loop_every_chart_pulls_only_images_that_exist() {
    let Some((dir, charts)) = corpus() else { return };
    helm();
    let mut report = Vec::new();
    for chart in &charts {
        let ws = Workspace::new();
        let world = Registry::start();
        let dst = Registry::start();
        let (refs, _) = images_of(&ws, &chart.bundle_args(&dir, true));
        seed(&world, &refs);
        let cfg = world_config(&ws, &world, &refs);
        let mut args: Vec<String> = vec!["--registry-config".into(), cfg.display().to_string(), "export".into()];
        args.extend(chart.bundle_args(&dir, true));
        args.extend(["-o".into(), "c.tar.zst".into()]);
        let export = ws.bundle(&args.iter().map(String::as_str).collect::<Vec<_>>()).success();
        assert!(!export.stderr.contains("could not be proven"), "{}: {}", chart.id, export.stderr);
        let dest = format!("{}/mirror", dst.host());
        let import = ws.bundle(&["import", "-d", &dest, "c.tar.zst", "--values-out", "airgap.yaml"]).success();
        let warned: BTreeSet<String> = import
            .stderr
            .lines()
            .filter_map(|l| l.strip_prefix("warning: ")?.strip_suffix(" is computed by the chart's templates and no values key moves it; override it by hand"))
            .map(str::to_string)
            .collect();

        let values = ws.path("airgap.yaml");
        let (mut moved, mut unmoved) = (BTreeSet::new(), BTreeSet::new());
        for pass in chart.passes() {
            let text = chart.render(&dir, pass, true, &[values.as_path()]);
            let present = words(&text);
            for image in strict_images(&text).iter().map(String::as_str).chain(present.iter().copied().filter(|w| refs.contains(*w))) {
                match image.strip_prefix(&format!("{dest}/")) {
                    Some(rest) => {
                        moved.insert(rest.to_string());
                    }
                    None => {
                        unmoved.insert(image.to_string());
                    }
                }
            }
            for w in present.iter().filter(|w| w.starts_with(&format!("{dest}/"))) {
                moved.insert(w[dest.len() + 1..].to_string());
            }
        }
        for rest in &moved {
            let (repo, reference) = match rest.split_once('@') {
                Some((name, digest)) => (name.rsplit_once(':').map_or(name, |(n, _)| n), digest),
                None => rest.rsplit_once(':').unwrap_or((rest.as_str(), "latest")),
            };
            assert!(
                get_manifest(&dst.base_url(), &format!("mirror/{repo}"), reference).is_some(),
                "{}: the values file sends a pod to {dest}/{rest}, which import did not push\n{}",
                chart.id,
                std::fs::read_to_string(&values).unwrap()
            );
        }
        assert_eq!(unmoved, warned, "{}: images left at their public registry must be exactly those import warned about\n{}", chart.id, std::fs::read_to_string(&values).unwrap());
        report.push(format!("{:<40} {:>3} images moved, {:>2} unmovable {:?}", chart.id, moved.len(), unmoved.len(), unmoved));
    }
    eprintln!("{}", report.join("\n"));
}

