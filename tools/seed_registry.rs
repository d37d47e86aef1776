//! Seed a registry with generated images, offline, for the demo and the benchmark. Layers are gzip'd tars of
//! random (incompressible) bytes from a fixed seed, so every run makes the same images. Prints the image
//! references, one per line, in the images-file format.
//!
//! Usage: cargo run --release --features seed --bin seed-registry -- HOST:PORT [WORKLOAD] [SEED]
//!   WORKLOAD  sample[:LAYER_BYTES]  the demo set: OCI index, Docker list, shared base layer (default 2 MiB)
//!             std     16 images, each a 2-platform OCI index; per platform 4 shared base layers (30, 20, 10,
//!                     5 MiB) and one unique layer of 2.5-7.5 MiB (about 300 MiB of unique blobs)
//!             std-next  std a week later: bench/std-00:1.0 moves to a new index (a new unique layer per
//!                     platform on the same base layers); prints that one reference
//!             many    200 single-platform images of 3 small layers each
//!             big     one image with a single 2 GiB layer
//!
//! A binary behind the `seed` feature, not an example: examples link every dev-dependency, and building those in
//! release was most of the demo's time from a fresh clone. This needs only the library's own dependencies.

// The same fixture code the integration tests use, so the demo shows exactly what is tested.
#[path = "../tests/it/harness/fixtures.rs"]
#[allow(dead_code)]
mod fixtures;

use fixtures::*;

const MIB: usize = 1 << 20;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(host) = args.next() else {
        eprintln!("usage: seed-registry HOST:PORT [sample[:BYTES]|std|many|huge|big|big1g] [SEED]");
        std::process::exit(2);
    };
    let workload = args.next().unwrap_or_else(|| "sample".into());
    let seed: u64 = args.next().map_or(1, |s| s.parse().expect("SEED is a number"));
    let base = format!("http://{host}");
    let p = Pusher::new(&base);
    println!("# {workload} images seeded by tools/seed_registry.rs (seed {seed})");
    match workload.split_once(':').map_or((workload.as_str(), None), |(w, n)| (w, Some(n))) {
        ("sample", size) => {
            // Backwards compatible: a bare number is the layer size.
            let layer = size.map_or(2 * MIB, |n| n.parse().expect("LAYER_BYTES is a number"));
            for img in &seed_sample(&base, seed, layer).images {
                println!("{}", img.reference(&host));
            }
        }
        (w @ ("std" | "std-next"), _) => {
            let next = w == "std-next";
            let mut rng = fastrand::Rng::with_seed(seed);
            let bases: Vec<Vec<(Blob, String)>> = ["amd64", "arm64"]
                .iter()
                .enumerate()
                .map(|(pi, _)| {
                    [30, 20, 10, 5]
                        .iter()
                        .enumerate()
                        .map(|(i, mib)| random_layer(mib * MIB, seed * 100 + pi as u64 * 10 + i as u64))
                        .collect()
                })
                .collect();
            for i in 0..if next { 1 } else { 16u64 } {
                let mut platform_images = Vec::new();
                for (pi, arch) in ["amd64", "arm64"].iter().enumerate() {
                    let unique = rng.usize(5 * MIB / 2..15 * MIB / 2);
                    let mut layers = bases[pi].clone();
                    let layer_seed = seed * 10_000 + i * 10 + pi as u64 + if next { 5 } else { 0 };
                    layers.push(random_layer(unique, layer_seed));
                    platform_images.push((image(&layers, arch, false), *arch));
                }
                let refs: Vec<(&Image, &str)> = platform_images.iter().map(|(img, a)| (img, *a)).collect();
                let idx = index(&refs, false);
                let repo = format!("bench/std-{i:02}");
                p.index(&repo, "1.0", &platform_images.iter().map(|(img, _)| img).collect::<Vec<_>>(), &idx, OCI_INDEX);
                println!("{host}/{repo}:1.0");
            }
        }
        (w @ ("many" | "huge"), _) => {
            // `huge` is `many` ten times over: the cost per image from 200 to 2,000 images.
            let count = if w == "huge" { 2000u64 } else { 200 };
            let shared = random_layer(256 * 1024, seed);
            for i in 0..count {
                let layers = [
                    shared.clone(),
                    random_layer(16 * 1024, seed * 1000 + i * 2),
                    random_layer(64 * 1024, seed * 1000 + i * 2 + 1),
                ];
                let repo = format!("bench/many-{i:04}");
                p.image(&repo, "1.0", &image(&layers, "amd64", false));
                println!("{host}/{repo}:1.0");
            }
        }
        (w @ ("big" | "big1g"), _) => {
            // One layer of 2 GiB (`big`) or 1 GiB (`big1g`): AI and CUDA images carry layers of 3-10 GiB.
            let size = if w == "big" { 2048 * MIB } else { 1024 * MIB };
            let layer = random_layer_with(size, seed, flate2::Compression::none());
            p.image("bench/big", "1.0", &image(&[layer], "amd64", false));
            println!("{host}/bench/big:1.0");
        }
        (other, _) => {
            eprintln!("unknown workload `{other}`: sample, std, std-next, many, huge, big or big1g");
            std::process::exit(2);
        }
    }
}
