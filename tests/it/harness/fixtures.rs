//! Test images built in code and pushed with a minimal, independent distribution client (so a bug in
//! `bundle`'s own client cannot hide itself), plus helpers that pull content back for assertions.

use std::io::Write;

use sha2::{Digest as _, Sha256};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A blob: content and digest.
#[derive(Clone, Debug)]
pub struct Blob {
    pub bytes: Vec<u8>,
    pub digest: String,
}

impl Blob {
    pub fn new(bytes: Vec<u8>) -> Blob {
        let digest = sha256(&bytes);
        Blob { bytes, digest }
    }
}

/// A gzip'd tar holding one file of `size` random (incompressible) bytes: a realistic layer.
pub fn random_layer(size: usize, seed: u64) -> (Blob, String) {
    random_layer_with(size, seed, flate2::Compression::fast())
}

/// `random_layer` with a chosen gzip level (`none()` stores the random bytes, as fast as memory allows).
pub fn random_layer_with(size: usize, seed: u64, level: flate2::Compression) -> (Blob, String) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let data: Vec<u8> = (0..size).map(|_| rng.u8(..)).collect();
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path(format!("data-{seed}.bin")).unwrap();
    h.set_size(size as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append(&h, &data[..]).unwrap();
    let tar = tar.into_inner().unwrap();
    let diff_id = sha256(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(size + size / 100 + 1024), level);
    gz.write_all(&tar).unwrap();
    (Blob::new(gz.finish().unwrap()), diff_id)
}

/// A layer too big to hold in memory (the multi-GiB tests): made 64 KiB block by block, each block one fixed
/// random block stamped with its index, so that no two blocks are alike (a byte sent from the wrong offset changes
/// the digest) while the whole compresses about 16x (the archive stays small).
pub struct BigLayer {
    pub size: u64,
    pub digest: String,
    block: std::sync::Arc<Vec<u8>>,
}

const BIG_BLOCK: u64 = 64 << 10;

impl BigLayer {
    pub fn new(size: u64, seed: u64) -> BigLayer {
        let mut rng = fastrand::Rng::with_seed(seed);
        let block = std::sync::Arc::new((0..BIG_BLOCK).map(|_| rng.u8(..)).collect::<Vec<u8>>());
        let mut layer = BigLayer { size, digest: String::new(), block };
        let mut hasher = Sha256::new();
        copy_big(&mut layer.reader(), &mut hasher);
        layer.digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        layer
    }

    /// The layer's bytes, from the first.
    pub fn reader(&self) -> impl std::io::Read + Send + 'static {
        BigLayerReader { block: self.block.clone(), pos: 0, size: self.size }
    }
}

struct BigLayerReader {
    block: std::sync::Arc<Vec<u8>>,
    pos: u64,
    size: u64,
}

impl std::io::Read for BigLayerReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let (index, within) = (self.pos / BIG_BLOCK, (self.pos % BIG_BLOCK) as usize);
        let n = buf.len().min(BIG_BLOCK as usize - within).min((self.size - self.pos) as usize);
        buf[..n].copy_from_slice(&self.block[within..within + n]);
        // The block's first 8 bytes are its index.
        let stamp = index.to_le_bytes();
        for (i, b) in buf[..n].iter_mut().enumerate().take(8usize.saturating_sub(within)) {
            *b = stamp[within + i];
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// The sha256 of a blob streamed from a registry (one too big to hold), and its length.
pub fn stream_digest(base: &str, repo: &str, digest: &str) -> (String, u64) {
    let (status, mut body) = raw_get(base, &format!("/v2/{repo}/blobs/{digest}"));
    assert_eq!(status, 200, "blob {digest} of {repo}");
    let mut hasher = Sha256::new();
    let n = copy_big(&mut body, &mut hasher);
    (format!("sha256:{}", hex::encode(hasher.finalize())), n)
}

/// A GET on a connection of its own (`Connection: close`): the status and the body, to read to its end. For the
/// multi-GiB blobs, which the blocking client reads in 8 KiB steps (unoptimised, seconds per GiB); loopback
/// registries only.
pub fn raw_get(base: &str, path: &str) -> (u16, impl std::io::Read + use<>) {
    use std::io::BufRead as _;
    let host = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(600))).unwrap();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let mut response = std::io::BufReader::with_capacity(1 << 20, stream);
    let mut line = String::new();
    response.read_line(&mut line).unwrap();
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    loop {
        line.clear();
        if response.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
            break;
        }
    }
    (status, response)
}

/// `std::io::copy` in 1 MiB steps.
fn copy_big(from: &mut impl std::io::Read, to: &mut impl Write) -> u64 {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        let n = from.read(&mut buf).unwrap();
        if n == 0 {
            return total;
        }
        to.write_all(&buf[..n]).unwrap();
        total += n as u64;
    }
}

/// One platform's image: manifest + config + layers.
#[derive(Clone, Debug)]
pub struct Image {
    pub manifest: Blob,
    pub media_type: String,
    pub config: Blob,
    pub layers: Vec<Blob>,
}

/// Build an image from layers (`(blob, diff_id)`), in OCI or Docker media types.
pub fn image(layers: &[(Blob, String)], arch: &str, docker: bool) -> Image {
    let (mt, cfg_mt, layer_mt) =
        if docker { (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER) } else { (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER) };
    let diff_ids: Vec<&String> = layers.iter().map(|(_, d)| d).collect();
    let config = Blob::new(
        serde_json::to_vec(&serde_json::json!({
            "architecture": arch, "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap(),
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": mt,
        "config": {"mediaType": cfg_mt, "digest": config.digest, "size": config.bytes.len()},
        "layers": layers.iter().map(|(b, _)| serde_json::json!({"mediaType": layer_mt, "digest": b.digest, "size": b.bytes.len()})).collect::<Vec<_>>(),
    });
    Image {
        manifest: Blob::new(serde_json::to_vec_pretty(&manifest).unwrap()),
        media_type: mt.to_string(),
        config,
        layers: layers.iter().map(|(b, _)| b.clone()).collect(),
    }
}

/// A multi-platform index (OCI index or Docker manifest list) over `images` with their architectures.
pub fn index(images: &[(&Image, &str)], docker: bool) -> Blob {
    let mt = if docker { DOCKER_LIST } else { OCI_INDEX };
    let manifests: Vec<_> = images
        .iter()
        .map(|(img, arch)| {
            serde_json::json!({
                "mediaType": img.media_type, "digest": img.manifest.digest, "size": img.manifest.bytes.len(),
                "platform": {"architecture": arch, "os": "linux"},
            })
        })
        .collect();
    Blob::new(
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": mt, "manifests": manifests})).unwrap(),
    )
}

/// A minimal pusher: POST + monolithic PUT per blob, PUT per manifest.
pub struct Pusher {
    http: reqwest::blocking::Client,
    base: String,
    auth: Option<(String, String)>,
}

impl Pusher {
    pub fn new(base: &str) -> Pusher {
        Pusher { http: reqwest::blocking::Client::new(), base: base.to_string(), auth: None }
    }

    /// Basic auth over plain HTTP (a loopback registry with htpasswd).
    pub fn with_auth(base: &str, user: &str, password: &str) -> Pusher {
        Pusher {
            http: reqwest::blocking::Client::new(),
            base: base.to_string(),
            auth: Some((user.into(), password.into())),
        }
    }

    pub fn with_tls(base: &str, ca_pem: &[u8], user: &str, password: &str) -> Pusher {
        let cert = reqwest::Certificate::from_pem(ca_pem).unwrap();
        let http = reqwest::blocking::Client::builder().tls_certs_only([cert]).build().unwrap();
        Pusher { http, base: base.to_string(), auth: Some((user.into(), password.into())) }
    }

    fn req(&self, m: reqwest::Method, url: &str) -> reqwest::blocking::RequestBuilder {
        let r = self.http.request(m, url);
        match &self.auth {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    pub fn blob(&self, repo: &str, blob: &Blob) {
        let head =
            self.req(reqwest::Method::HEAD, &format!("{}/v2/{repo}/blobs/{}", self.base, blob.digest)).send().unwrap();
        if head.status().is_success() {
            return;
        }
        let r = self.req(reqwest::Method::POST, &format!("{}/v2/{repo}/blobs/uploads/", self.base)).send().unwrap();
        assert_eq!(r.status().as_u16(), 202, "upload start: {:?}", r.text());
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        let loc = if loc.starts_with('/') { format!("{}{loc}", self.base) } else { loc };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let r = self
            .req(reqwest::Method::PUT, &format!("{loc}{sep}digest={}", blob.digest))
            .header("content-type", "application/octet-stream")
            .body(blob.bytes.clone())
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "blob put: {:?}", r.text());
    }

    /// A layer too big for memory, then an image of it alone as `repo:tag` (an OCI manifest, an uncompressed
    /// layer: the export compresses it). Returns the manifest. The layer is written straight into the registry's
    /// storage (`storage`, docker-registry's filesystem layout): docker-registry spends 5–7 CPU-seconds per GiB
    /// receiving a blob, half a minute for 4 GiB that no test is about.
    pub fn big_image(&self, storage: &std::path::Path, repo: &str, tag: &str, layer: &BigLayer) -> Blob {
        let hex = layer.digest.strip_prefix("sha256:").unwrap();
        let v2 = storage.join("docker/registry/v2");
        let data = v2.join(format!("blobs/sha256/{}/{hex}", &hex[..2]));
        std::fs::create_dir_all(&data).unwrap();
        let mut file = std::fs::File::create(data.join("data")).unwrap();
        assert_eq!(copy_big(&mut layer.reader(), &mut file), layer.size);
        let link = v2.join(format!("repositories/{repo}/_layers/sha256/{hex}"));
        std::fs::create_dir_all(&link).unwrap();
        std::fs::write(link.join("link"), &layer.digest).unwrap();
        let config = Blob::new(
            serde_json::to_vec(&serde_json::json!({
                "architecture": "amd64", "os": "linux", "config": {},
                "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
            }))
            .unwrap(),
        );
        self.blob(repo, &config);
        let manifest = Blob::new(
            serde_json::to_vec_pretty(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config.digest, "size": config.bytes.len()},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.digest, "size": layer.size}],
            }))
            .unwrap(),
        );
        self.manifest(repo, tag, OCI_MANIFEST, &manifest.bytes);
        manifest
    }

    pub fn manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
        let r = self
            .req(reqwest::Method::PUT, &format!("{}/v2/{repo}/manifests/{reference}", self.base))
            .header("content-type", media_type)
            .body(bytes.to_vec())
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "manifest put {repo}:{reference}: {:?}", r.text());
    }

    pub fn image(&self, repo: &str, reference: &str, img: &Image) {
        for b in img.layers.iter().chain([&img.config]) {
            self.blob(repo, b);
        }
        self.manifest(repo, reference, &img.media_type, &img.manifest.bytes);
    }

    /// Push the platform images by digest, then the index under `tag`.
    pub fn index(&self, repo: &str, tag: &str, images: &[&Image], index: &Blob, media_type: &str) {
        for img in images {
            self.image(repo, &img.manifest.digest, img);
        }
        self.manifest(repo, tag, media_type, &index.bytes);
    }
}

/// Pull a manifest's exact bytes and its Docker-Content-Digest from a registry (no auth, plain HTTP).
pub fn get_manifest(base: &str, repo: &str, reference: &str) -> Option<(Vec<u8>, String)> {
    let r = reqwest::blocking::Client::new()
        .get(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("accept", [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST].join(", "))
        .send()
        .unwrap();
    if r.status().as_u16() == 404 {
        return None;
    }
    assert!(r.status().is_success(), "GET manifest {repo}:{reference}: {}", r.status());
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    Some((r.bytes().unwrap().to_vec(), ct))
}

/// A blob's bytes from a registry.
pub fn get_blob(base: &str, repo: &str, digest: &str) -> Option<Vec<u8>> {
    let r = reqwest::blocking::Client::new().get(format!("{base}/v2/{repo}/blobs/{digest}")).send().unwrap();
    if r.status().as_u16() == 404 {
        return None;
    }
    assert!(r.status().is_success());
    Some(r.bytes().unwrap().to_vec())
}

/// The sample set most tests use, pushed to `reg`: a multi-arch OCI index, a Docker manifest list, two
/// single-platform images sharing a base layer (one Docker, one OCI), under realistic paths.
pub struct SampleSet {
    /// (reference as a user writes it, root manifest bytes, every manifest and blob it needs)
    pub images: Vec<SampleImage>,
}

#[derive(Clone, Debug)]
pub struct SampleImage {
    pub repo: String,
    pub tag: String,
    pub root: Blob,
    pub root_media_type: String,
    pub manifests: Vec<Blob>,
    pub blobs: Vec<Blob>,
}

impl SampleImage {
    pub fn reference(&self, registry: &str) -> String {
        format!("{registry}/{}:{}", self.repo, self.tag)
    }
}

pub fn seed_sample(base: &str, seed: u64, layer_size: usize) -> SampleSet {
    let p = Pusher::new(base);
    let shared = random_layer(layer_size, seed);
    let mut images = Vec::new();

    // Multi-arch OCI index.
    let amd = image(&[shared.clone(), random_layer(layer_size / 2, seed + 1)], "amd64", false);
    let arm = image(&[shared.clone(), random_layer(layer_size / 2, seed + 2)], "arm64", false);
    let idx = index(&[(&amd, "amd64"), (&arm, "arm64")], false);
    p.index("stackstate/agent", "7.51.1", &[&amd, &arm], &idx, OCI_INDEX);
    images.push(sample("stackstate/agent", "7.51.1", idx, OCI_INDEX, &[&amd, &arm]));

    // Docker manifest list (schema 2).
    let d_amd = image(&[shared.clone(), random_layer(layer_size / 3, seed + 3)], "amd64", true);
    let d_arm = image(&[random_layer(layer_size / 3, seed + 4)], "arm64", true);
    let list = index(&[(&d_amd, "amd64"), (&d_arm, "arm64")], true);
    p.index("stackstate/wait", "1.0.0", &[&d_amd, &d_arm], &list, DOCKER_LIST);
    images.push(sample("stackstate/wait", "1.0.0", list, DOCKER_LIST, &[&d_amd, &d_arm]));

    // Single-platform images sharing the base layer.
    let single = image(&[shared.clone(), random_layer(1024, seed + 5)], "amd64", true);
    p.image("library/nginx", "1.25", &single);
    images.push(sample_single("library/nginx", "1.25", &single));
    let oci_single = image(&[shared, random_layer(2048, seed + 6)], "amd64", false);
    p.image("prometheus-operator/prometheus-config-reloader", "v0.73.0", &oci_single);
    images.push(sample_single("prometheus-operator/prometheus-config-reloader", "v0.73.0", &oci_single));
    SampleSet { images }
}

fn sample(repo: &str, tag: &str, root: Blob, mt: &str, imgs: &[&Image]) -> SampleImage {
    let mut manifests = vec![root.clone()];
    let mut blobs = Vec::new();
    for i in imgs {
        manifests.push(i.manifest.clone());
        blobs.push(i.config.clone());
        blobs.extend(i.layers.iter().cloned());
    }
    SampleImage { repo: repo.into(), tag: tag.into(), root, root_media_type: mt.into(), manifests, blobs }
}

/// A single-platform image as a `SampleImage` (what tests compare a destination against).
pub fn sample_single(repo: &str, tag: &str, img: &Image) -> SampleImage {
    let mut blobs = vec![img.config.clone()];
    blobs.extend(img.layers.iter().cloned());
    SampleImage {
        repo: repo.into(),
        tag: tag.into(),
        root: img.manifest.clone(),
        root_media_type: img.media_type.clone(),
        manifests: vec![img.manifest.clone()],
        blobs,
    }
}

/// Every manifest and blob of `img` is in `base`/`repo`, byte for byte, and the tag points at the root with
/// the source's media type.
#[track_caller]
pub fn assert_image_at(base: &str, repo: &str, reference: &str, img: &SampleImage) {
    let (bytes, ct) = get_manifest(base, repo, reference).unwrap_or_else(|| panic!("{repo}:{reference} missing"));
    assert_eq!(sha256(&bytes), img.root.digest, "{repo}:{reference} has another digest");
    assert_eq!(bytes, img.root.bytes);
    assert_eq!(ct, img.root_media_type);
    for m in &img.manifests {
        let (b, _) = get_manifest(base, repo, &m.digest).unwrap_or_else(|| panic!("{repo}@{} missing", m.digest));
        assert_eq!(b, m.bytes, "manifest {} differs", m.digest);
    }
    for b in &img.blobs {
        let got = get_blob(base, repo, &b.digest).unwrap_or_else(|| panic!("blob {} missing in {repo}", b.digest));
        assert_eq!(sha256(&got), b.digest);
        assert_eq!(got.len(), b.bytes.len());
    }
}
