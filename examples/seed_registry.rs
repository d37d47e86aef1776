//! Seed a registry with sample images for the demo and the benchmark, offline: a multi-arch OCI index, a
//! Docker manifest list, and single-platform images sharing a base layer, all with random
//! (incompressible) layers. Prints the image references, one per line, in the images-file format.
//!
//! Usage: cargo run --example seed_registry -- HOST:PORT [LAYER_BYTES] [SEED]

// The same fixture code the integration tests use, so the demo shows exactly what is tested.
#[path = "../tests/it/harness/fixtures.rs"]
#[allow(dead_code)]
mod fixtures;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(host) = args.next() else {
        eprintln!("usage: seed_registry HOST:PORT [LAYER_BYTES] [SEED]");
        std::process::exit(2);
    };
    let layer: usize = args.next().map_or(2 << 20, |s| s.parse().expect("LAYER_BYTES is a number"));
    let seed: u64 = args.next().map_or(1, |s| s.parse().expect("SEED is a number"));
    let set = fixtures::seed_sample(&format!("http://{host}"), seed, layer);
    println!("# sample images seeded by examples/seed_registry.rs (seed {seed})");
    for img in &set.images {
        println!("{}", img.reference(&host));
    }
}
