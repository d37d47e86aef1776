//! The command line itself: help, usage errors, and input errors that point at the offending line.

use crate::harness::*;

#[test]
fn help_reads_like_a_man_page() {
    let ws = Workspace::new();
    let top = ws.bundle(&["--help"]).success();
    for word in ["export", "verify", "import", "inspect", "Examples:", "--registry-config", "Exit status"] {
        assert!(top.stdout.contains(word), "--help lacks {word}:\n{}", top.stdout);
    }
    for (cmd, words) in [
        ("export", &["--images-file", "--dry-run", "byte-identical", "Examples:"][..]),
        ("import", &["--destination", "Copying SRC to DST (dry-run)", "library/"][..]),
        ("verify", &["sidecar", "exits 1"][..]),
        ("inspect", &["--json"][..]),
    ] {
        let h = ws.bundle(&[cmd, "--help"]).success();
        for w in words {
            assert!(h.stdout.contains(w), "`{cmd} --help` lacks {w}:\n{}", h.stdout);
        }
        // The options every command takes are under their own heading, after the command's own.
        let (own, global) = h.stdout.split_once("Global options:").expect("a Global options heading");
        assert!(global.contains("--registry-config") && global.contains("--retries"), "{}", h.stdout);
        assert!(!own.contains("--registry-config"), "{}", h.stdout);
    }
}

/// Paragraphs are written as paragraphs and wrapped by clap at the terminal's width: at 200 columns no line of
/// prose breaks early because of a line end in the source.
#[test]
fn regression_help_paragraphs_are_not_broken_at_the_sources_width() {
    let mut ws = Workspace::new();
    ws.env("COLUMNS", "200");
    for cmd in ["export", "verify", "import", "images", "inspect"] {
        let h = ws.bundle(&[cmd, "--help"]).success();
        let about = h.stdout.split("\nUsage:").next().unwrap();
        for para in about.split("\n\n").skip(1) {
            let lines: Vec<&str> = para.lines().collect();
            // A paragraph under 200 columns is one line; a longer one fills its lines.
            for l in &lines[..lines.len().saturating_sub(1)] {
                assert!(l.len() > 150, "`{cmd} --help` breaks a paragraph early:\n{para}");
            }
        }
    }
}

#[test]
fn completions_and_the_man_page_are_generated_from_the_flags() {
    let ws = Workspace::new();
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let r = ws.bundle(&["completions", shell]).success();
        for word in ["export", "import", "images-file", "values-out"] {
            assert!(r.stdout.contains(word), "{shell} completions lack {word}");
        }
    }
    let man = ws.bundle(&["manpage"]).success();
    assert!(man.stdout.starts_with(".ie") || man.stdout.contains(".TH bundle 1"), "{}", man.stdout);
    for word in ["export", "verify", "import", "registry\\-config"] {
        assert!(man.stdout.contains(word), "the man page lacks {word}");
    }
    assert_eq!(ws.bundle(&["completions", "tcsh"]).code, 2);
}

/// `bundle ... | head -1`: the reader goes away and the rest of the output has nowhere to go. That is the reader's
/// choice, not a failure: exit 0, no panic, nothing on stderr. (Commands that read archives: `roundtrip`.)
#[test]
fn regression_a_closed_stdout_ends_quietly_with_success() {
    let ws = Workspace::new();
    for args in [&["completions", "bash"][..], &["manpage"][..]] {
        let r = ws.bundle_into_closed_pipe(args).success();
        assert!(r.stderr.is_empty(), "{args:?}: {}", r.stderr);
    }
}

/// Support tells builds apart by `--version`: the version, the commit and the target.
#[test]
fn the_version_names_the_commit_and_the_target() {
    let ws = Workspace::new();
    let v = ws.bundle(&["--version"]).success().stdout;
    let inner =
        v.trim().strip_prefix(&format!("bundle {} (", env!("CARGO_PKG_VERSION"))).and_then(|r| r.strip_suffix(')'));
    let parts: Vec<&str> = inner.unwrap_or_else(|| panic!("{v}")).split(", ").collect();
    // Built from a git checkout (this test's own tree is one unless it came as a source tarball): its commit.
    let head = std::process::Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        Some(head) => {
            assert!(parts[0].len() >= 7 && head.starts_with(parts[0]), "{v} is not built from HEAD {head}");
        }
        None => assert_eq!(parts[0], "unknown", "{v}"),
    }
    assert_eq!(parts[1], format!("{}-linux-gnu", std::env::consts::ARCH), "{v}");
}

#[test]
fn invalid_flags_are_usage_errors() {
    let ws = Workspace::new();
    for args in [
        &["export", "--image", "nginx"][..],
        &["import", "x.tar.zst"][..],
        &["verify"][..],
        &["--concurrency", "0", "verify", "x"][..],
        &["import", "-d", "r.internal", "x.tar.zst", "--ecr-encryption", "rot13"][..],
        &["import", "-d", "r.internal", "x.tar.zst", "--ecr-tag-mutability", "sometimes"][..],
        &["frobnicate"][..],
    ] {
        let r = ws.bundle(args);
        assert_eq!(r.code, 2, "{args:?} should be a usage error:\n{}", r.stderr);
        assert!(r.stderr.contains("error:"), "{}", r.stderr);
    }
}

#[test]
fn a_bad_line_in_the_images_file_is_pointed_at() {
    let ws = Workspace::new();
    ws.write("images.txt", "# images\nquay.io/stackstate/wait:1.0.0\n\nquay.io/StackState/agent:7\n");
    let r = ws.bundle(&["export", "--images-file", "images.txt", "-o", "x.tar.zst"]).failure();
    insta::assert_snapshot!("bad_images_file_line", r.stderr);
    assert!(!ws.path("x.tar.zst").exists());
}

#[test]
fn a_bad_destination_is_explained() {
    let ws = Workspace::new();
    let r = ws.bundle(&["import", "-d", "https://reg.local:5000", "x.tar.zst"]).failure();
    assert!(r.stderr.contains("invalid destination"), "{}", r.stderr);
    assert!(r.stderr.contains("hint: write it as host[:port]"), "{}", r.stderr);
}

#[test]
fn a_missing_archive_is_a_clear_error() {
    let ws = Workspace::new();
    let r = ws.bundle(&["verify", "nope.tar.zst"]).failure();
    assert!(r.stderr.contains("cannot open the archive nope.tar.zst"), "{}", r.stderr);
    ws.write("junk.tar.zst", "this is not an archive at all, not even close to 512 bytes");
    let r = ws.bundle(&["verify", "junk.tar.zst"]).failure();
    assert!(r.stderr.contains("is not a tar, or a zstd- or gzip-compressed tar"), "{}", r.stderr);
}

#[test]
fn a_broken_registry_config_names_the_key() {
    let ws = Workspace::new();
    ws.write("r.toml", "[[registry]]\nname = \"quay.io\"\nendpont = \"http://127.0.0.1:1\"\n");
    let r = ws.bundle(&["--registry-config", "r.toml", "verify", "x.tar.zst"]).failure();
    assert!(r.stderr.contains("endpont"), "{}", r.stderr);
    assert!(r.stderr.contains("hint:"), "{}", r.stderr);
}

/// Regression: a mistake in `[registry.ecr]` went unnoticed until an ECR import read the table; any command that
/// reads the config now names it.
#[test]
fn a_broken_ecr_table_in_the_registry_config_is_caught_by_any_command() {
    let ws = Workspace::new();
    ws.write(
        "r.toml",
        "[[registry]]\nname = \"1.dkr.ecr.eu-west-1.amazonaws.com\"\n[registry.ecr]\ntag_mutabilty = \"IMMUTABLE\"\n",
    );
    let r = ws.bundle(&["--registry-config", "r.toml", "verify", "x.tar.zst"]).failure();
    assert!(r.stderr.contains("tag_mutabilty"), "{}", r.stderr);
    assert!(r.stderr.contains("1.dkr.ecr.eu-west-1.amazonaws.com"), "{}", r.stderr);
    assert!(r.stderr.contains("hint: fix the [registry.ecr] table"), "{}", r.stderr);
}

/// A size variable that is not a size stops the run before any request, naming the variable and the value.
#[test]
fn a_size_variable_that_is_not_a_size_is_refused_naming_it() {
    for var in ["BUNDLE_DOWNLOAD_PIECE_SIZE", "BUNDLE_UPLOAD_CHUNK_SIZE"] {
        let mut ws = Workspace::new();
        ws.env(var, "12");
        let r = ws.bundle(&["export", "--image", "127.0.0.1:1/a:b", "-o", "x.tar.zst"]).failure();
        assert!(r.stderr.contains(&format!("{var}=`12` is not a size of at least 1MiB")), "{}", r.stderr);
        assert!(r.stderr.contains("hint: write it with a unit"), "{}", r.stderr);
        assert!(!ws.path("x.tar.zst").exists());
    }
}
