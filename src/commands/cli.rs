//! The command line, parsed once into validated settings (clap derive). Help texts are the man pages.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::support::env_vars;

/// `bundle 0.1.0 (abc1234, x86_64-linux-gnu, glibc>=2.17)`: the commit, the target and, for release builds, the
/// oldest glibc the binary runs on (build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("BUNDLE_BUILD_INFO"), ")");

const ABOUT: &str = "Move the container images of a Helm chart into an air-gapped network as one verified archive";

const LONG_ABOUT: &str = "\
Move container images into an air-gapped network as one verified archive.

On a connected host, `bundle export` resolves every image (all platforms of multi-arch images, exact digests), \
downloads each distinct blob once, and writes ONE zstd-compressed OCI image layout with a sha256sum sidecar. \
Carry the two files across the air gap. `bundle verify` proves, offline, that the archive is complete and \
unaltered; `bundle import` verifies again and pushes every image into the local registry, uploading only what \
is missing, so re-runs are safe and fast.";

const AFTER_HELP: &str = "\
Examples:
  bundle export --images-file images.txt -o images.tar.zst
  sha256sum -c images.tar.zst.sha256         # on a machine without bundle
  bundle verify images.tar.zst
  bundle import -d registry.internal:5000/mirror images.tar.zst

Registries on loopback addresses are spoken to over plain HTTP; every other registry over HTTPS with the system's \
roots, unless the registry config (--registry-config) says otherwise. Credentials come from the registry config, \
STS_REGISTRY_USERNAME/PASSWORD (source quay.io), DST_REGISTRY_USERNAME/PASSWORD (import destination), podman's \
REGISTRY_AUTH_FILE and docker's config.json (DOCKER_CONFIG), including credential helpers.

Exit status: 0 on success, 1 when the operation failed (or verify found problems), 2 for invalid usage, \
130 when interrupted.";

#[derive(Debug, Parser)]
#[command(name = "bundle", version = VERSION, about = ABOUT, long_about = LONG_ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes, shown under their own heading in each one's help.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Registry config file (TOML): endpoints, mirrors, CAs, client certificates and credentials per registry.
    #[arg(long, global = true, value_name = "FILE", env = env_vars::BUNDLE_REGISTRY_CONFIG)]
    pub registry_config: Option<PathBuf>,

    /// Print more detail about each step (repeat for no more: one level is all there is).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Print nothing but errors (and the results a command exists to print).
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// How many blobs or manifests to transfer at once.
    #[arg(long, global = true, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,

    /// Directory for temporary files (export's staged downloads with --no-cache). Defaults to $TMPDIR or /tmp.
    #[arg(long, global = true, value_name = "DIR")]
    pub tmp_dir: Option<PathBuf>,

    /// Retries of a failed request (connection errors, 408, 429, 5xx) before giving up.
    #[arg(long, global = true, value_name = "N", default_value_t = 5)]
    pub retries: u32,

    /// Seconds to wait for a connection to a registry.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 30)]
    pub connect_timeout: u64,

    /// Seconds to wait for the next bytes of a response before the attempt counts as failed.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 60)]
    pub read_timeout: u64,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pull images into one compressed, checksummed archive.
    #[command(
        long_about = "\
Pull images into one compressed, checksummed archive.

Every reference is resolved to its exact digest; multi-arch indexes are kept whole (all platforms) and Docker \
media types are kept as they are, so digests never change. Each distinct blob is downloaded once, verified \
against its digest, kept in the blob cache (--cache-dir), and written into OUT as a tar of an OCI image layout, compressed \
with seekable zstd. OUT.sha256 is written next to it in sha256sum format. OUT appears only when complete; an \
existing OUT is never overwritten unless --force is given. The same images always give a byte-identical \
archive.",
        after_help = "\
Examples:
  bundle export --image nginx:1.25 --image quay.io/stackstate/wait:1.0.0 -o images.tar.zst
  bundle export --images-file o11y-agent-images.txt -o agent.tar.zst
  bundle export --images-file images.txt -t          # show digests and sizes, write nothing
  bundle export -c ./my-chart --pass '' --pass 'mode=ha' -o chart.tar.zst
  bundle export --spec bundles/stackstate.yaml"
    )]
    Export(ExportArgs),

    /// Check, offline, that an archive is complete and unaltered.
    #[command(long_about = "\
Check, offline, that an archive is complete and unaltered.

Checks the sidecar checksum (FILE.sha256) when it is present, then reads the archive once: every blob's sha256 \
and size, every manifest reachable from index.json and every blob they reference, bundle.json against both, \
and that nothing else is in it. Writes nothing. Exits 0 only when all of it holds; otherwise lists each \
problem (entry, expected, found) and exits 1.")]
    Verify(VerifyArgs),

    /// Sign archives: FILE.sig over FILE.sha256, which names FILE's sha256.
    #[command(
        long_about = "\
Sign archives: FILE.sig over FILE.sha256, which names FILE's sha256.

Each FILE is read first and must match its sidecar: a signature vouches for the archive, not just the small file. \
A PEM key (EC P-256, Ed25519, or cosign's cosign.key) writes cosign's blob signature, which `cosign verify-blob \
--key PUB --signature FILE.sig FILE.sha256` and `openssl dgst -sha256 -verify PUB -signature <(base64 -d \
FILE.sig) FILE.sha256` accept; an OpenSSH key writes an SSH signature in the `bundle` namespace, which \
`ssh-keygen -Y verify -n bundle` accepts. At the site, `bundle verify --key PUB` and `bundle import \
--require-signature PUB` check it.",
        after_help = "\
Examples:
  bundle sign images.tar.zst --key cosign.key
  bundle sign images.part*.tar.zst images.parity*.bin --key ~/.ssh/id_ed25519"
    )]
    Sign(SignArgs),

    /// Push every image of an archive into a registry.
    #[command(
        long_about = "\
Push every image of an archive into a registry.

The archive is verified first; a damaged archive pushes nothing. Each image goes to the destination with the \
source registry host dropped and the path kept (quay.io/stackstate/wait:1.0.0 -> DEST/stackstate/wait:1.0.0; \
official Docker Hub images keep library/). Blobs are read straight from the archive, never extracted. What the \
destination already has is skipped, so a re-run (after an interruption, or of the same bundle) only checks.

The volumes of a set (export --volume-size, split) are given together, in any order, or as their directory: each \
is verified, every image whose volumes are all there is pushed, and missing volumes are then named with the images \
that need them (exit 1).",
        after_help = "\
Examples:
  bundle import -d registry.internal:5000 images.tar.zst
  bundle import -d registry.internal/mirror images.tar.zst -t     # show the plan, change nothing
  bundle import -d registry.internal:5000 /media/dvd-copies/      # the volumes of a set"
    )]
    Import(ImportArgs),

    /// Serve archives as a read-only registry, straight from the files.
    #[command(
        long_about = "\
Serve archives as a read-only registry, straight from the files.

The archives (a base with its deltas, the volumes of a set, OCI layout directories) are proven at start (their \
sidecars, or in full with --verify-full) and served where they lie: no extraction, no second copy. Images are named \
as import would push them to ADDR[/PREFIX] (the same mapping flags), so the values file and mirror configs written \
here are the ones import writes for that address. Manifests by tag and digest, blobs (with Range), tags/list, \
_catalog and the Referrers API; every write is refused. SIGINT or SIGTERM stops accepting, lets responses in \
flight end, and exits 0.",
        after_help = "\
Examples:
  bundle serve images.tar.zst                                  # http://127.0.0.1:5000
  bundle serve --listen 127.0.0.1:5050 --prefix mirror base.tar.zst week2.tar.zst
  bundle serve --values-out airgap-values.yaml --mirrors-out mirrors/ product.tar.zst"
    )]
    Serve(ServeArgs),

    /// Copy images straight from their registries into another one, without an archive.
    #[command(
        long_about = "\
Copy images straight from their registries into another one, without an archive.

Takes the same sources as export (a chart, --image, --images-file, --spec) and the same destination options as \
import (mapping, ECR, --values-out). Blobs stream from the source registry to the destination, verified against \
their digests on the way; nothing is written to disk. What the destination already has is skipped, so a re-run \
only checks. A chart goes to DEST/charts/NAME:VERSION as an OCI artifact, as import puts it.",
        after_help = "\
Examples:
  bundle copy -d registry.internal:5000 --image quay.io/stackstate/wait:1.0.0
  bundle copy -d 123456789012.dkr.ecr.eu-west-1.amazonaws.com -c suse-observability -r https://charts.rancher.com/server-charts/prime/suse-observability -t
  bundle copy -d registry.internal/mirror -c ./my-chart --values-out airgap-values.yaml --platform linux/amd64"
    )]
    Copy(CopyArgs),

    /// Print the images a chart needs, one per line.
    #[command(
        long_about = "\
Print the images a chart needs, one per line, sorted and de-duplicated, as the chart writes them; nothing else \
goes to stdout, so the list can feed other tools or an images file.

With a helm binary (on PATH, or --helm), the chart is rendered with `helm template` once per pass and every \
rendered document is searched: strings under `image:` keys anywhere (pods, init containers, custom resources, \
hooks, test pods), and fully qualified references in container args, env values and ConfigMap payloads. \
Without helm (or with --no-helm), the values of the chart and every enabled subchart are scanned for image \
maps and `image:` strings, plus Chart.yaml's image annotations; this may miss images that only templates \
compute, so prefer helm.",
        after_help = "\
Examples:
  bundle images -c ./stackstate-k8s --set stackstate.baseUrl=http://x --pass '' --pass 'backup.enabled=true'
  bundle images -c stackstate-k8s -r https://helm.stackstate.io --version 1.12.0 --json
  bundle images -c oci://registry.internal/charts/app --version 2.0.0 --no-helm"
    )]
    Images(ImagesArgs),

    /// Before `helm install`: does every image the chart's pods will pull come from the destination, and is it there?
    #[command(
        long_about = "\
Before `helm install` at the site: render the chart the way it will be installed (every pass, the same -f, --set \
and --pass flags helm gets, the air-gap values file among them) or read rendered manifests (--manifests FILE, or - \
for stdin, e.g. `kubectl get pods -A -o yaml`), find every image a pod will pull (`image:` keys, images in env \
values, args and ConfigMaps, operators' images kept in pieces), and say of each whether it is `ok` (under -d and \
present there: a HEAD of its tag or digest, with the registry config's credentials), `not under DEST` or \
`missing at DEST`. Exits 0 only when every image is ok. The chart can come from the destination itself \
(`-c oci://DEST/charts/NAME --version V`), where import pushed it.",
        after_help = "\
Examples:
  bundle check -d registry.internal:5000/mirror -c oci://registry.internal:5000/mirror/charts/app --version 1.2.0 \\
      -f site-values.yaml -f airgap-values.yaml
  kubectl get pods -A -o yaml | bundle check -d registry.internal:5000/mirror --manifests -
  bundle check -d registry.internal:5000/mirror --manifests rendered.yaml --json --why"
    )]
    Check(CheckArgs),

    /// Cut an archive into volumes of a chosen size.
    #[command(
        long_about = "\
Cut an archive into volumes of a chosen size, without downloading anything: OUT.part001.tar.zst, \
OUT.part002.tar.zst, … (OUT defaults to FILE), each with its .sha256 sidecar and at most SIZE bytes. Each volume \
is an archive of its own: `bundle verify` checks it alone, `bundle inspect` of any one lists the whole set, and \
`bundle import` takes the volumes in any order and imports every image whose volumes are all there. A blob larger \
than what is left of a volume continues on the next in pieces. The volumes are the same bytes `export \
--volume-size` writes for the same images.",
        after_help = "\
Examples:
  bundle split --volume-size dvd images.tar.zst
  bundle split --volume-size 700MiB images.tar.zst -o /media/usb/images.tar.zst
  bundle split --volume-size bd25 --parity 1 images.tar.zst     # one lost disc can be rebuilt"
    )]
    Split(SplitArgs),

    /// List the images of an archive.
    #[command(long_about = "\
List the images of an archive: source reference, digest, media type, platforms and size, then totals. \
Reads only the archive's metadata, so it is fast on any size; run `bundle verify` to check the content.")]
    Inspect(InspectArgs),

    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    #[command(after_help = "\
Examples:
  bundle completions bash > /etc/bash_completion.d/bundle
  bundle completions zsh > \"${fpath[1]}/_bundle\"
  bundle completions fish > ~/.config/fish/completions/bundle.fish")]
    Completions(CompletionsArgs),

    /// Print the man page (roff).
    #[command(after_help = "\
Example:
  bundle manpage > /usr/local/share/man/man1/bundle.1 && man bundle")]
    Manpage,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// Where a chart comes from and how to render it: helm's own flags, with helm's meanings.
#[derive(Debug, Args, Default, Clone)]
pub struct ChartArgs {
    /// A chart: a directory, a packaged .tgz, a chart name (with --repo), or oci://REGISTRY/PATH.
    #[arg(short = 'c', long, value_name = "CHART")]
    pub chart: Option<String>,

    /// The chart repository to find CHART in (its index.yaml).
    #[arg(short = 'r', long = "repo", value_name = "URL", requires = "chart")]
    pub repo: Option<String>,

    /// The chart version (default: the newest stable version in the repository).
    #[arg(long = "version", value_name = "VERSION", requires = "chart")]
    pub chart_version: Option<String>,

    /// Values, as helm's --set (repeatable; applies to every pass).
    #[arg(long = "set", value_name = "K=V,…")]
    pub set: Vec<String>,

    /// Values that are always strings, as helm's --set-string (repeatable).
    #[arg(long = "set-string", value_name = "K=V,…")]
    pub set_string: Vec<String>,

    /// A values file (repeatable; later files win).
    #[arg(short = 'f', long = "values", value_name = "FILE")]
    pub values: Vec<PathBuf>,

    /// The Kubernetes version templates see (helm's --kube-version).
    #[arg(long, value_name = "VERSION")]
    pub kube_version: Option<String>,

    /// A render pass with its own --set values (repeatable); the images of all passes are united. `--pass ''`
    /// is a pass with only the common values. No --pass means one pass.
    #[arg(long = "pass", value_name = "K=V,…")]
    pub passes: Vec<String>,

    /// The helm binary to render with (default: helm on PATH).
    #[arg(long, value_name = "PATH", conflicts_with = "no_helm")]
    pub helm: Option<PathBuf>,

    /// Do not render with helm even if it is installed: scan values statically.
    #[arg(long)]
    pub no_helm: bool,

    /// Seconds one `helm` run may take before it is stopped and discovery fails, naming the pass.
    #[arg(long, value_name = "SECS", env = crate::support::env_vars::BUNDLE_HELM_TIMEOUT, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub helm_timeout: u64,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// A bundle spec: its chart, or each chart of a suite (`charts:`), listed with the spec's values and passes.
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,

    #[command(flatten)]
    pub chart: ChartArgs,

    /// Print, for each image, where it was found and how, as JSON.
    #[arg(long)]
    pub json: bool,

    /// Under each image, where it was found: the pass, the document's kind/name and key path (or the env
    /// value, arg or ConfigMap key), and how.
    #[arg(long)]
    pub why: bool,

    /// With --json: resolve each image and show which platforms --platform would keep, and the signatures,
    /// attestations and SBOMs attached to it.
    #[command(flatten)]
    pub platform: PlatformArgs,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The registry (and prefix) every image must come from: `REGISTRY[/PREFIX]`, as given to import.
    #[arg(short = 'd', long = "destination", value_name = "REGISTRY[/PREFIX]")]
    pub destination: String,

    #[command(flatten)]
    pub chart: ChartArgs,

    /// Rendered manifests to read instead of a chart (YAML documents, or a List such as `kubectl get pods -A
    /// -o yaml` prints); `-` reads stdin.
    #[arg(long, value_name = "FILE", conflicts_with = "chart")]
    pub manifests: Option<String>,

    /// Print the result as one JSON document.
    #[arg(long)]
    pub json: bool,

    /// Under each image, where it was found.
    #[arg(long)]
    pub why: bool,
}

/// The images to carry: a spec, a chart, listed images (export and copy take the same).
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// A bundle spec (YAML) with the chart, repository, version, passes, extra and excluded images, platforms
    /// and the output name; command-line flags add to it.
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,

    #[command(flatten)]
    pub chart: ChartArgs,

    /// An image (repeatable), e.g. `nginx:1.25` or `quay.io/org/app:1.0@sha256:…`.
    #[arg(long = "image", value_name = "REF")]
    pub images: Vec<String>,

    /// A file of image references, one per line; blank lines and `#` comments are ignored (repeatable).
    #[arg(long = "images-file", value_name = "FILE")]
    pub images_files: Vec<PathBuf>,

    /// Leave out the signatures, attestations and SBOMs attached to the images (cosign's tags, OCI referrers),
    /// which otherwise travel with them.
    #[arg(long)]
    pub no_referrers: bool,

    /// Before anything is written, require every image to carry a cosign signature by one of these PEM public
    /// keys (ECDSA P-256 or Ed25519; repeatable) over its own digest: the index, or the manifest, and every
    /// platform manifest that is signed. Any image that fails is named with its reason. See docs/supply-chain.md.
    #[arg(long = "verify-signatures", value_name = "PUB", conflicts_with = "no_referrers")]
    pub verify_signatures: Vec<PathBuf>,
}

/// Which platforms of multi-arch images travel.
#[derive(Debug, Args, Default, Clone)]
#[command(next_help_heading = "Platforms")]
pub struct PlatformArgs {
    /// Carry only these platforms of multi-arch images: os/arch[/variant], repeatable or comma-separated
    /// (`--platform linux/amd64,linux/arm64`). A tag's index is replaced by a new one listing only them; an
    /// index pinned by digest travels whole; a single-platform image of another platform is an error.
    /// Default: every platform.
    #[arg(long = "platform", value_name = "OS/ARCH[/VARIANT]", value_delimiter = ',')]
    pub platforms: Vec<crate::oci::platform::PlatformSpec>,

    /// How a tag's index loses the other platforms: `filter` writes a new index (new digest, accepted by every
    /// registry); `sparse` keeps the original index and its digest but carries only the chosen children, which
    /// docker distribution, ECR and Harbor refuse to store.
    #[arg(long, value_name = "MODE", default_value = "filter", ignore_case = true)]
    pub platform_mode: crate::oci::platform::PlatformMode,
}

/// Where images go and what the push may create: import and copy take the same.
#[derive(Debug, Args)]
pub struct DestinationArgs {
    /// Destination registry, optionally with a path prefix: `host[:port][/prefix]`.
    #[arg(short, long, value_name = "REGISTRY[/PREFIX]")]
    pub destination: String,

    /// Write the Helm values that make the chart pull every image from the destination; for a bundle of
    /// several charts (or when FILE is a directory), one FILE/CHART-airgap-values.yaml per chart.
    #[arg(long, value_name = "FILE|DIR")]
    pub values_out: Option<PathBuf>,

    /// Write every container runtime's mirror config into DIR (registries.conf, containerd's certs.d/,
    /// k3s/RKE2 registries.yaml, OpenShift idms.yaml and itms.yaml), so images pulled by their original names
    /// come from the destination; also in a dry run. See docs/mirrors.md.
    #[arg(long, value_name = "DIR")]
    pub mirrors_out: Option<PathBuf>,

    /// Keep only the last path component of each image (`quay.io/a/b:1` -> `DEST/b:1`), for registries that
    /// limit path depth. Images that would collide stop before anything is pushed.
    #[arg(long, conflicts_with = "keep_host")]
    pub flatten: bool,

    /// Put the source registry host first in each destination path (`quay.io/a/b:1` -> `DEST/quay.io/a/b:1`).
    #[arg(long)]
    pub keep_host: bool,

    #[command(flatten)]
    pub ecr: EcrArgs,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub sources: SourceArgs,

    /// The archive to write (conventionally NAME.tar.zst); a spec may name it instead.
    #[arg(short, long, value_name = "OUT", required_unless_present_any = ["dry_run", "spec"])]
    pub output: Option<PathBuf>,

    /// Resolve every image and print digests, sizes and what would be written; download and write nothing.
    #[arg(short = 't', long)]
    pub dry_run: bool,

    /// Replace OUT if it exists.
    #[arg(long)]
    pub force: bool,

    /// Write a delta: leave out every blob OLD holds (OLD is an earlier archive, of which only bundle.json is
    /// read, or its `bundle inspect --json` output). Manifests always travel; import checks the destination has
    /// the rest before it pushes anything.
    #[arg(long, value_name = "OLD")]
    pub since: Option<PathBuf>,

    /// Write volumes of at most SIZE bytes instead of one archive: OUT.part001.tar.zst, OUT.part002.tar.zst, …,
    /// each with its .sha256, each verifiable alone, imported together in any order. SIZE is bytes with a unit
    /// (700MiB, 4.7GB, 2GiB) or a medium: cd, dvd, dvd-dl, bd25, bd50.
    #[arg(long, value_name = "SIZE")]
    pub volume_size: Option<crate::volumes::VolumeSize>,

    /// With --volume-size: also write N parity volumes (OUT.parity01.bin, …, no larger than a volume), from which
    /// import rebuilds up to N lost or damaged volumes of the set.
    #[arg(long, value_name = "N", requires = "volume_size", value_parser = clap::value_parser!(u32).range(1..=255))]
    pub parity: Option<u32>,

    /// Where downloaded blobs are kept, by digest, so an interrupted or repeated export downloads only what
    /// is missing (cached blobs are verified before use). Default: $XDG_CACHE_HOME/bundle or ~/.cache/bundle.
    #[arg(long, value_name = "DIR", env = env_vars::BUNDLE_CACHE_DIR)]
    pub cache_dir: Option<PathBuf>,

    /// Stage downloads in a temporary directory under --tmp-dir, removed afterwards, instead of the cache.
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,

    /// After a successful export, remove the cached blobs it did not use, least recently used first, until the
    /// cache is at most SIZE (like 20GiB or 500MiB; 0 keeps only this export's blobs; `unlimited`). Skipped while
    /// another export uses the same cache. Default: 20GiB.
    #[arg(long, value_name = "SIZE", env = env_vars::BUNDLE_CACHE_MAX_SIZE, conflicts_with = "no_cache")]
    pub cache_max_size: Option<crate::export::blob_store::prune::CacheLimit>,

    #[command(flatten)]
    pub platform: PlatformArgs,

    /// Sign the archive (each volume, with --volume-size): OUT.sig over OUT.sha256. KEY is a PEM EC P-256 or
    /// Ed25519 key, cosign's cosign.key, or an OpenSSH ed25519/ecdsa key; an encrypted key's password comes from
    /// BUNDLE_SIGN_PASSWORD or the terminal. The key is read before anything is downloaded.
    #[arg(long, value_name = "KEY")]
    pub sign_key: Option<PathBuf>,

    /// Print the result as one JSON document on stdout (docs/usage.md, "Results for machines"); messages,
    /// progress and warnings stay on stderr, and the exit status is the same.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    #[command(flatten)]
    pub sources: SourceArgs,

    #[command(flatten)]
    pub target: DestinationArgs,

    /// Print one `Copying SRC to DST (dry-run)` line per image and the plan; change nothing.
    #[arg(short = 't', long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub platform: PlatformArgs,

    /// Print the result as one JSON document on stdout (docs/usage.md, "Results for machines"); messages,
    /// progress and warnings stay on stderr, and the exit status is the same.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The archives to sign: an archive, a delta, or every volume of a set (parity volumes too).
    #[arg(value_name = "FILE", required = true, num_args = 1..)]
    pub archives: Vec<PathBuf>,

    /// The signing key: a PEM EC P-256 or Ed25519 key, cosign's cosign.key, or an OpenSSH ed25519/ecdsa key.
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The archive to check.
    #[arg(value_name = "FILE")]
    pub archive: PathBuf,

    /// Also require FILE.sig to be a signature over FILE.sha256 by one of these keys (repeatable): a PEM public
    /// key, an OpenSSH .pub, or an allowed_signers file. Checked before the content.
    #[arg(long = "key", value_name = "PUB")]
    pub keys: Vec<PathBuf>,

    /// Print the result as one JSON document on stdout (docs/usage.md, "Results for machines"); messages,
    /// progress and warnings stay on stderr, and the exit status is the same.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Archives to serve: a base and its deltas, the volumes of a set (or their directory), layout directories.
    #[arg(value_name = "ARCHIVE", required = true, num_args = 1..)]
    pub archives: Vec<PathBuf>,

    /// The address to listen on. Beyond loopback, serve HTTPS (--tls-cert, --tls-key), or add --insecure.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:5000")]
    pub listen: std::net::SocketAddr,

    /// The registry name clients use to reach this server (in the values file and mirror configs); default:
    /// the listen address.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub name: Option<String>,

    /// Serve every image under this path prefix, as import -d ADDR/PREFIX would push it.
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,

    /// Keep only the last path component of each image, as import --flatten.
    #[arg(long, conflicts_with = "keep_host")]
    pub flatten: bool,

    /// Put the source registry host first in each path, as import --keep-host.
    #[arg(long)]
    pub keep_host: bool,

    /// Prove each archive by reading it whole, instead of by its .sha256 sidecar.
    #[arg(long)]
    pub verify_full: bool,

    /// Serve HTTPS with this certificate chain (PEM); with --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Ask every client for a user's password, from an htpasswd file of bcrypt hashes (`htpasswd -B`).
    #[arg(long, value_name = "FILE")]
    pub htpasswd: Option<PathBuf>,

    /// Listen on an address beyond loopback over plain HTTP.
    #[arg(long)]
    pub insecure: bool,

    /// Write the Helm values that make the chart(s) pull every image from this server.
    #[arg(long, value_name = "FILE|DIR")]
    pub values_out: Option<PathBuf>,

    /// Write every container runtime's mirror config for this server into DIR (docs/mirrors.md).
    #[arg(long, value_name = "DIR")]
    pub mirrors_out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The archive to import, or the volumes of a set (in any order; a directory of them, or a quoted pattern).
    #[arg(value_name = "FILE", required = true, num_args = 1..)]
    pub archives: Vec<PathBuf>,

    #[command(flatten)]
    pub target: DestinationArgs,

    /// Write the files the bundle carries (a spec's `files:`) into DIR, each checked against its digest.
    #[arg(long, value_name = "DIR")]
    pub files_out: Option<PathBuf>,

    /// Refuse, before anything is pushed, an archive (or any volume) that is not signed by one of these keys
    /// (repeatable; a PEM public key, an OpenSSH .pub, or an allowed_signers file), or that does not match its
    /// signed sidecar.
    #[arg(long = "require-signature", value_name = "PUB")]
    pub require_signature: Vec<PathBuf>,

    /// Print one `Copying SRC to DST (dry-run)` line per image and the plan; change nothing.
    #[arg(short = 't', long)]
    pub dry_run: bool,

    /// Print the result as one JSON document on stdout (docs/usage.md, "Results for machines"); messages,
    /// progress and warnings stay on stderr, and the exit status is the same.
    #[arg(long)]
    pub json: bool,
}

/// Amazon ECR destinations: detected from the hostname (`ACCOUNT.dkr.ecr.REGION.amazonaws.com` and the other
/// partitions), or forced with --ecr. Settings apply to repositories the import creates; the registry config's
/// `[registry.ecr]` table sets the same keys.
#[derive(Debug, Args, Default, Clone)]
#[command(next_help_heading = "Amazon ECR")]
pub struct EcrArgs {
    /// Treat the destination as ECR although its name does not look like one (a VPC endpoint alias, a proxy).
    #[arg(long)]
    pub ecr: bool,
    /// The ECR region (default: from the hostname).
    #[arg(long, value_name = "REGION")]
    pub ecr_region: Option<String>,
    /// The ECR registry id, i.e. the account (default: from the hostname).
    #[arg(long, value_name = "ACCOUNT")]
    pub ecr_registry_id: Option<String>,
    /// Scan images on push in repositories the import creates.
    #[arg(long, value_name = "BOOL")]
    pub ecr_scan_on_push: Option<bool>,
    /// Tag mutability of created repositories.
    #[arg(long, value_name = "MUTABILITY", ignore_case = true)]
    pub ecr_tag_mutability: Option<crate::import::ecr::MutabilityMode>,
    /// A wildcard tag filter excluded from the mutability rule (repeatable; with *_WITH_EXCLUSION).
    #[arg(long, value_name = "FILTER")]
    pub ecr_tag_mutability_exclusion: Vec<String>,
    /// Encryption of created repositories.
    #[arg(long, value_name = "TYPE", ignore_case = true)]
    pub ecr_encryption: Option<crate::import::ecr::Encryption>,
    /// The KMS key (id or ARN) for KMS encryption; default: the AWS managed key.
    #[arg(long, value_name = "KEY")]
    pub ecr_kms_key: Option<String>,
    /// A resource tag for created repositories (repeatable).
    #[arg(long = "ecr-tag", value_name = "KEY=VALUE")]
    pub ecr_tags: Vec<String>,
    /// A lifecycle policy (JSON file) for created repositories.
    #[arg(long, value_name = "FILE")]
    pub ecr_lifecycle_policy: Option<PathBuf>,
    /// A repository policy (JSON file) for created repositories.
    #[arg(long, value_name = "FILE")]
    pub ecr_repository_policy: Option<PathBuf>,
    /// Apply scan, mutability and policy settings to repositories that already exist, too.
    #[arg(long)]
    pub ecr_update_existing: bool,
}

#[derive(Debug, Args)]
pub struct SplitArgs {
    /// The archive to cut.
    #[arg(value_name = "FILE")]
    pub archive: PathBuf,

    /// The largest a volume may be: bytes with a unit (700MiB, 4.7GB, 2GiB) or a medium: cd, dvd, dvd-dl, bd25,
    /// bd50.
    #[arg(long, value_name = "SIZE")]
    pub volume_size: crate::volumes::VolumeSize,

    /// Name the volumes after OUT (OUT.part001.tar.zst, …) instead of FILE.
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,

    /// Also write N parity volumes (OUT.parity01.bin, …, no larger than a volume), from which import rebuilds up
    /// to N lost or damaged volumes of the set.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=255))]
    pub parity: Option<u32>,

    /// Replace volumes of that name that exist.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The archive to inspect.
    #[arg(value_name = "FILE")]
    pub archive: PathBuf,

    /// Print JSON instead of a table (the same as --format json).
    #[arg(long, conflicts_with = "format")]
    pub json: bool,

    /// What to print: `table`, `json`, or `spdx-json`, an SPDX 2.3 document of the archive (one package per
    /// image with its digest and purl, the chart, the attached signatures and SBOMs) for approval boards.
    #[arg(long, value_name = "FORMAT", default_value = "table")]
    pub format: InspectFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InspectFormat {
    Table,
    Json,
    SpdxJson,
}
