//! Stamps the binary with what support needs to tell builds apart (`bundle --version`): the git commit it was
//! built from and the target, plus the glibc floor when the release build sets one. Nothing here reads the clock,
//! so two builds of the same commit stay byte-identical.

use std::process::Command;

fn main() {
    // Set by scripts/release, which knows both; a plain build asks git (a source tarball without .git: "unknown").
    println!("cargo:rerun-if-env-changed=BUNDLE_BUILD_COMMIT");
    println!("cargo:rerun-if-env-changed=BUNDLE_GLIBC_FLOOR");
    let commit = std::env::var("BUNDLE_BUILD_COMMIT").ok().filter(|c| !c.is_empty()).or_else(git_commit);
    if std::path::Path::new(".git/HEAD").exists() {
        println!("cargo:rerun-if-changed=.git/HEAD");
        println!("cargo:rerun-if-changed=.git/refs/heads");
    }
    let target = std::env::var("TARGET").unwrap_or_default();
    // x86_64-unknown-linux-gnu -> x86_64-linux-gnu, as the target is named in distributions.
    let target = target.replace("-unknown-", "-");
    let mut parts = vec![commit.unwrap_or_else(|| "unknown".into()), target];
    if let Some(floor) = std::env::var("BUNDLE_GLIBC_FLOOR").ok().filter(|f| !f.is_empty()) {
        parts.push(format!("glibc>={floor}"));
    }
    println!("cargo:rustc-env=BUNDLE_BUILD_INFO={}", parts.join(", "));
}

fn git_commit() -> Option<String> {
    let out = Command::new("git").args(["rev-parse", "--short=7", "HEAD"]).output().ok()?;
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !commit.is_empty()).then_some(commit)
}
